"""Assemble an agent from a config: pick the sources for this host, build the collectors.

On illumos the sources are libkstat, the platform commands and the DTrace worker; with
``--replay`` they all come from a bundle; anywhere else (Linux, for development) only
the host and self collectors run, and the log says which collectors are unavailable and
why instead of failing. The operator's plugins and textfiles are sources on every
host: run and read here, or, when a replayed bundle recorded them, replayed from it.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from dtagent.agent import Agent, DTraceProvider, KstatProvider, NoKstats
from dtagent.collectors import available as available_collectors
from dtagent.collectors.base import Collector
from dtagent.config import Config, ConfigError
from dtagent.snapshot import (
    CommandSource,
    HostSnapshot,
    KstatInput,
    PluginSource,
    TextfileSource,
    modules_of,
)
from dtagent.zonemap import ZONES

if TYPE_CHECKING:
    from dtagent.dtrace.provider import DTraceSettings
    from dtagent.sources.commands import CommandRunner

log = structlog.get_logger("dtagent.runtime")


def is_illumos() -> bool:
    return platform.system() == "SunOS"


@dataclass
class Runtime:
    """An assembled agent and what must be closed when it stops."""

    agent: Agent
    mode: str
    closers: list[Callable[[], None]] = field(default_factory=list)
    # the live command source, for the control wing's commands (None when replaying)
    runner: CommandRunner | None = None

    def record(self, observer: Callable[[HostSnapshot, list[Any]], None]) -> None:
        """Call ``observer`` after every collection with its snapshot and the DTrace
        delta records it took (``dtagent capture`` writes them as bundle frames)."""
        from dtagent.dtrace.provider import DTraceMetrics

        taken: list[Any] | None = None
        if isinstance(self.agent.dtrace, DTraceMetrics):
            taken = self.agent.dtrace.recording = []

        def on_collection(snap: HostSnapshot) -> None:
            records = list(taken or ())
            if taken is not None:
                taken.clear()
            observer(snap, records)

        self.agent.observe(on_collection)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception as exc:
                log.warning("error while stopping", error=str(exc))


def select_collectors(
    config: Config, classes: dict[str, type[Collector]] | None = None
) -> list[Collector]:
    classes = classes if classes is not None else available_collectors()
    enabled = config.get("collectors", "enabled")
    disabled = set(config.get("collectors", "disabled"))
    names = list(classes) if "all" in enabled else list(enabled)
    out: list[Collector] = []
    for name in names:
        if name in disabled:
            continue
        try:
            out.append(classes[name](**config.collector_settings.get(name, {})))
        except ValueError as exc:  # a setting out of range: the collector says which
            origin = config.path or "defaults"
            raise ConfigError(f"{origin}: key 'collectors.{name}': {exc}") from None
    return out


def build(config: Config, replay_frame: int | None = None) -> Runtime:
    """Build the agent for this host (or for the bundle the config replays).

    ``replay_frame`` pins a replay to one frame (negative counts from the end), for
    ``dtagent scrape --replay``; otherwise the replay advances with the clock.
    """
    from dtagent.sources.commands import CommandRunner, NoCommands, passed_env
    from dtagent.sources.hoststats import read_host_stats
    from dtagent.sources.plugins import LivePlugins
    from dtagent.sources.textfile import LiveTextfiles

    collectors = select_collectors(config)
    # what the sources read: the union of what the collectors declare (and the zone
    # names the DTrace families are labelled with)
    inputs: set[KstatInput] = {i for c in collectors for i in c.kstat_inputs}
    if config.get("dtrace", "enabled"):
        inputs.add(ZONES)
    replay_path = config.get("sources", "replay")
    unavailable: dict[str, str] = {}
    closers: list[Callable[[], None]] = []
    kstats: KstatProvider
    commands: CommandSource
    dtrace: DTraceProvider | None = None
    plugins: PluginSource | None = None
    textfiles: TextfileSource | None = None
    replayed: list[str] = []  # operator inputs served from the bundle
    host_stats = None
    source_mode = "live"
    live_runner: CommandRunner | None = None
    if replay_path:
        from dtagent.sources.replay import ReplaySource

        replay = ReplaySource.open(
            replay_path,
            speed=config.get("sources", "replay_speed"),
            frame=replay_frame,
            inputs=inputs,
        )
        kstats = replay
        commands = replay
        illumos = True
        mode = "replay"
        source_mode = "simulated" if replay.bundle.header.get("source") == "simulate" else "replay"
        if any(c.name == "host" for c in collectors):
            unavailable["host"] = "replaying a bundle: it holds no host-wide psutil figures"
        dtrace = _replay_dtrace(config, replay)
        # what the bundle recorded of the operator's plugins and textfiles is served as
        # recorded; a bundle without them (a simulated one) gets this host's
        if replay.has_plugins:
            plugins = replay
            replayed.append("plugins")
        if replay.has_textfiles:
            textfiles = replay
            replayed.append("textfiles")
    elif is_illumos() or config.get("sources", "platform") == "illumos":
        from dtagent.sources.libkstat import LiveKstats

        live = LiveKstats(config.get("sources", "libkstat"), modules_of(inputs))
        closers.append(live.close)
        kstats = live
        runner = CommandRunner(
            path=config.get("sources", "command_path"),
            extra_env=passed_env(config.get("sources", "command_env")),
        )
        closers.append(runner.close)
        commands = live_runner = runner
        host_stats = read_host_stats
        illumos = True
        mode = "live"
        dtrace = _live_dtrace(config, closers)
    else:
        kstats = NoKstats()
        commands = NoCommands()
        host_stats = read_host_stats
        illumos = False
        mode = f"live ({platform.system()}, not illumos)"
        kept: list[Collector] = []
        for c in collectors:
            if c.illumos_only:
                unavailable[c.name] = (
                    f"needs illumos kstats and commands; this host runs {platform.system()}"
                )
            else:
                kept.append(c)
        collectors = kept
        if config.get("dtrace", "enabled"):
            unavailable["dtrace"] = f"DTrace needs illumos; this host runs {platform.system()}"
    if plugins is None:
        live_plugins = LivePlugins()
        closers.append(live_plugins.close)
        plugins = live_plugins
    if textfiles is None:
        textfiles = LiveTextfiles()
    for name, reason in sorted(unavailable.items()):
        log.warning("collector unavailable", collector=name, reason=reason)
    agent = Agent(
        [c for c in collectors if c.name not in unavailable],
        kstats,
        commands,
        illumos=illumos,
        host_stats=host_stats,
        dtrace=dtrace,
        unavailable=unavailable,
        source_mode=source_mode,
        plugins=plugins,
        textfiles=textfiles,
    )
    log.info(
        "agent ready",
        mode=mode,
        source=source_mode,
        collectors=[c.name for c in agent.collectors],
        dtrace=dtrace is not None,
        **({"from_bundle": ["kstats", "commands", *replayed]} if replay_path else {}),
    )
    return Runtime(agent=agent, mode=mode, closers=closers, runner=live_runner)


def _replay_dtrace(config: Config, replay: object) -> DTraceProvider | None:
    """DTrace families from the bundle's recorded deltas."""
    if not config.get("dtrace", "enabled"):
        return None
    from dtagent.dtrace.provider import replay_provider

    return replay_provider(dtrace_settings(config), replay)


def _live_dtrace(config: Config, closers: list[Callable[[], None]]) -> DTraceProvider | None:
    """The supervised DTrace worker, stopped (tracing ended cleanly) when the agent stops."""
    if not config.get("dtrace", "enabled"):
        return None
    from dtagent.dtrace.provider import live_provider

    provider = live_provider(dtrace_settings(config))
    if provider.supervisor is not None:
        closers.append(provider.supervisor.stop)
    return provider


def dtrace_settings(config: Config) -> DTraceSettings:
    """The ``[dtrace]`` table as the DTrace provider's plain settings."""
    from dtagent.dtrace.provider import DTraceSettings

    return DTraceSettings(
        script_dirs=tuple(config.get("dtrace", "script_dirs")),
        scripts=dict(config.get("dtrace", "scripts")),
        series_cap=config.get("dtrace", "series_cap"),
        zone_buckets=config.get("dtrace", "zone_buckets"),
        libdtrace=config.get("dtrace", "libdtrace"),
        hang_timeout=config.get("dtrace", "hang_timeout"),
        max_backoff=config.get("dtrace", "max_backoff"),
        walk_interval=config.get("dtrace", "walk_interval"),
    )
