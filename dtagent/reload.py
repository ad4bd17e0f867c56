"""Reloading the config in place: SIGHUP, which ``svcadm refresh dtagent`` sends.

A reload reads the config again (and, under SMF, the service's ``config`` properties),
then asks every :class:`ReloadHook` what it would change. A hook checks everything it
needs in ``prepare`` (binding a new listen address, building collectors, loading D
script specs) and returns a :class:`Change`, or raises :class:`ReloadRefused`. Only
when every hook agreed are the changes applied, so a bad config changes nothing: the
running one stays, and one log line names the problem. Either way one log line says
what the reload did.

Counters survive: kstat counters are the kernel's; the DTrace accumulator keeps its
series across a reload (:meth:`~dtagent.dtrace.accumulator.Accumulator.reconfigure`),
and the running DTrace worker is told the new set of scripts: only those added, changed
or removed start or stop, each on its own libdtrace handle; the others trace on.

Other parts of the agent (the web-config, the control policy) add their own hooks with
:func:`register`: a factory called with the serving state when ``dtagent serve``
starts (the control wing's, ``dtagent.control.serve.PolicyHook``, finds its part in
:attr:`ServeState.parts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from dtagent import log as logsetup
from dtagent.config import Config, ConfigError

log = structlog.get_logger("dtagent")


class ReloadRefused(Exception):
    """A new config that cannot be put in force; the message names the key and why."""


@dataclass
class Change:
    """What one hook will do: ``describe`` for the log, ``apply`` to do it, ``abort`` to
    release what ``prepare`` took (a bound socket) when another hook refuses."""

    describe: str
    apply: Callable[[], None]
    abort: Callable[[], None] = field(default=lambda: None)


class ReloadHook(Protocol):
    name: str

    def prepare(self, old: Config, new: Config) -> Change | None:
        """Check what ``new`` means for this part; None when nothing changes for it."""
        ...


@dataclass
class ServeState:
    """What a running ``dtagent serve`` is: its config, runtime and HTTP server."""

    config: Config
    runtime: Any  # dtagent.runtime.Runtime
    server: Any  # dtagent.server.MetricsServer
    # the optional parts plugged in, by name, for their hook factories: "control" is the
    # control API (dtagent.control.serve.Control) when it is on
    parts: dict[str, Any] = field(default_factory=dict)


HookFactory = Callable[[ServeState], "ReloadHook | None"]
_factories: list[HookFactory] = []


def register(factory: HookFactory) -> HookFactory:
    """Plug a hook into every reload (e.g. web-config, control policy)."""
    _factories.append(factory)
    return factory


def section_changes(old: Config, new: Config, section: str,
                    keys: Sequence[str] | None = None) -> list[str]:
    """``section.key old -> new`` for every key of ``section`` whose value changed."""
    out = []
    for key in keys or sorted(set(old.values[section]) | set(new.values[section])):
        before, after = old.values[section].get(key), new.values[section].get(key)
        if before != after:
            out.append(f"{section}.{key}: {before!r} -> {after!r}")
    return out


class Reloader:
    """Runs the hooks over a freshly loaded config; see the module docstring."""

    def __init__(self, state: ServeState, load: Callable[[], Config],
                 hooks: Sequence[ReloadHook]) -> None:
        self.state = state
        self._load = load
        self.hooks = list(hooks)
        for factory in _factories:
            hook = factory(state)
            if hook is not None:
                self.hooks.append(hook)
        self.reloads = 0
        self.refused = 0

    def reload(self) -> bool:
        """Reload once; True when the new config is in force."""
        try:
            new = self._load()
        except ConfigError as exc:
            return self._refuse(str(exc))
        old = self.state.config
        changes: list[Change] = []
        try:
            for hook in self.hooks:
                change = hook.prepare(old, new)
                if change is not None:
                    changes.append(change)
        except (ReloadRefused, ConfigError, ValueError, OSError) as exc:
            for change in changes:
                change.abort()
            return self._refuse(str(exc))
        for change in changes:
            change.apply()
        self.state.config = new
        self.reloads += 1
        log.info("config reloaded", file=new.path,
                 changed=[c.describe for c in changes] or "nothing")
        return True

    def _refuse(self, problem: str) -> bool:
        self.refused += 1
        log.error("config reload refused; the running config stays", problem=problem)
        return False


# ----------------------------------------------------------------------- hooks


class LoggingHook:
    name = "logging"

    def prepare(self, old: Config, new: Config) -> Change | None:
        changed = section_changes(old, new, "agent", ["log_level", "log_format"])
        if not changed:
            return None
        return Change("; ".join(changed), lambda: logsetup.setup(
            new.get("agent", "log_level"), new.get("agent", "log_format")))


class ServerHook:
    """The listen address: a new server bound there before the old one closes."""

    name = "server"

    def __init__(self, state: ServeState,
                 make_server: Callable[[Config], Any]) -> None:
        self.state = state
        self.make_server = make_server

    def prepare(self, old: Config, new: Config) -> Change | None:
        # deadlines, limits and the web-config change in place (HttpHook)
        changed = section_changes(old, new, "agent", ["listen"])
        if not changed:
            return None
        try:
            server = self.make_server(new)  # binds: a busy address refuses the reload
        except OSError as exc:
            raise ReloadRefused(f"key 'agent.listen': cannot listen on "
                                f"{new.get('agent', 'listen')} ({exc.strerror})") from None

        def apply() -> None:
            old_server, self.state.server = self.state.server, server
            server.start()
            old_server.stop()

        return Change("; ".join(changed), apply, server.close)


HTTP_KEYS = ("web_config", "header_timeout", "idle_timeout", "write_timeout",
             "max_connections")


class HttpHook:
    """A reload (SIGHUP) re-reads the web-config, changed or not, and applies new
    deadlines and limits in place; a web-config that does not check refuses the reload
    (the settings in force stay). A new listen address is the server hook's.

    It lives here, not in dtagent.server: the server only serves, the serving side
    decides what a new config changes in it."""

    name = "http"

    def __init__(self, state: ServeState) -> None:
        self.state = state

    def prepare(self, old: Config, new: Config) -> Change | None:
        from dtagent.server import limits_of
        from dtagent.webconfig import WebConfigError

        changed = section_changes(old, new, "agent", list(HTTP_KEYS))
        later = section_changes(old, new, "agent", ["max_renders"])
        path = new.get("agent", "web_config") or None
        front = self.state.server.front
        if not path and front.path is None and not changed:
            return None if not later else Change("; ".join(
                f"{c} (takes effect at the next restart)" for c in later), lambda: None)
        try:
            prepared = front.prepare(path)  # None: no web-config, plain HTTP
        except WebConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        limits = limits_of(new)

        def apply() -> None:
            server = self.state.server  # the new one when the listen address moved
            server.http.limits = limits
            server.front.install(path, prepared)

        describe = changed + [f"{c} (takes effect at the next restart)" for c in later]
        if path:
            describe.append(f"web-config {path} re-read")
        return Change("; ".join(describe) or "nothing", apply)


class CollectorsHook:
    """Which collectors run and their settings; the command path and environment."""

    name = "collectors"

    def __init__(self, state: ServeState) -> None:
        self.state = state

    def prepare(self, old: Config, new: Config) -> Change | None:
        from dtagent.runtime import select_collectors
        from dtagent.sources.commands import passed_env

        agent = self.state.runtime.agent
        changed = section_changes(old, new, "collectors")
        if old.collector_settings != new.collector_settings:
            changed.append("collector settings")
        path_changed = section_changes(old, new, "sources", ["command_path", "command_env"])
        later = section_changes(old, new, "sources",
                                ["replay", "replay_speed", "platform", "libkstat"])
        if not (changed or path_changed or later):
            return None
        current = {c.name: c for c in agent.collectors}
        wanted = [c for c in select_collectors(new)
                  if c.name not in agent.unavailable and (agent.illumos or not c.illumos_only)]
        # a collector whose settings did not change keeps its instance (its caches)
        kept = [current[c.name] if c.name in current and old.collector_settings.get(c.name)
                == new.collector_settings.get(c.name) else c for c in wanted]

        def apply() -> None:
            agent.set_collectors(kept)
            if path_changed and hasattr(agent.commands, "path"):
                agent.commands.path = new.get("sources", "command_path")
                agent.commands.extra_env = passed_env(new.get("sources", "command_env"))

        describe = "; ".join(changed + path_changed)
        if later:
            describe = "; ".join([*([describe] if describe else []),
                                  *(f"{c} (takes effect at the next restart)" for c in later)])
        return Change(describe, apply)


class DTraceHook:
    """The D scripts: their specs, which run, the worker's settings."""

    name = "dtrace"

    def __init__(self, state: ServeState) -> None:
        self.state = state

    def prepare(self, old: Config, new: Config) -> Change | None:
        from dtagent.dtrace.provider import (
            DTraceMetrics,
            ReplayDeltas,
            worker_argv,
            worker_scripts,
        )
        from dtagent.dtrace.spec import (
            SpecError,
            enabled_scripts,
            load_scripts,
            script_dirs,
            with_zone_buckets,
        )

        provider = self.state.runtime.agent.dtrace
        if not isinstance(provider, DTraceMetrics):
            changed = section_changes(old, new, "dtrace", ["enabled"])
            return Change(changed[0] + " (takes effect at the next restart)",
                          lambda: None) if changed else None
        errors: list[SpecError] = []
        specs = load_scripts(script_dirs(new.get("dtrace", "script_dirs")), errors)
        if errors:
            raise ReloadRefused(str(errors[0]))
        overrides = new.get("dtrace", "scripts")
        running = enabled_scripts(specs, overrides) if new.get("dtrace", "enabled") else []
        before = {s.name: s for s in provider.specs}
        old_running = {s.name for s in enabled_scripts(provider.specs,
                                                       old.get("dtrace", "scripts"))}
        changed_scripts = sorted(
            s.name for s in running if s.name not in old_running or before.get(s.name) != s)
        stopped = sorted(old_running - {s.name for s in running})
        settings = section_changes(old, new, "dtrace", ["series_cap", "zone_buckets",
                                                        "hang_timeout", "max_backoff",
                                                        "libdtrace", "walk_interval"])
        if not (changed_scripts or stopped or settings) and specs == provider.specs:
            return None
        supervisor = provider.supervisor
        argv = worker_argv(new.get("dtrace", "libdtrace"), running,
                           new.get("dtrace", "walk_interval")) \
            if supervisor is not None else []
        # another libdtrace: the worker starts again; otherwise it is told the scripts
        whole = supervisor is not None and bool(section_changes(
            old, new, "dtrace", ["libdtrace", "walk_interval"]))
        touched = bool(changed_scripts or stopped)
        restart = supervisor is not None and (whole or touched)
        scripts = worker_scripts(running) if supervisor is not None else []

        def apply() -> None:
            provider.accumulator.reconfigure(
                with_zone_buckets(specs, new.get("dtrace", "zone_buckets")),
                new.get("dtrace", "series_cap"),
                overrides=overrides if new.get("dtrace", "enabled") else
                {s.name: False for s in specs},
                restarted=changed_scripts if restart else ())
            provider.specs = specs
            if isinstance(provider.source, ReplayDeltas):
                provider.source.set_scripts([s.name for s in running])
                return
            if supervisor is None:
                return
            supervisor.hang_timeout = new.get("dtrace", "hang_timeout")
            supervisor.max_backoff = new.get("dtrace", "max_backoff")
            if not running:
                supervisor.stop()
                from dtagent.dtrace.provider import IdleSource

                provider.source = IdleSource()
            elif not supervisor.running:
                supervisor.argv = argv
                provider.source = supervisor
                supervisor.start()
            elif whole:
                supervisor.restart_with(argv)
            elif touched or argv != supervisor.argv:
                supervisor.update_scripts(argv, scripts)

        parts = [*settings]
        if changed_scripts:
            parts.append("D scripts restarted: " + ", ".join(changed_scripts))
        if stopped:
            parts.append("D scripts stopped: " + ", ".join(stopped))
        unchanged = sorted({s.name for s in running} - set(changed_scripts))
        if unchanged and restart:
            parts.append(("restarted with them (another libdtrace or walk_interval): " if whole else
                          "D scripts kept running: ") + ", ".join(unchanged))
        return Change("; ".join(parts) or "D script specs", apply)
