"""``dtagent serve``: the agent and its HTTP server, for as long as the service runs.

Signals (the SMF manifest's methods send them): SIGTERM (stop, ``:kill``) and SIGINT
stop cleanly: the listeners close, the DTrace worker stops with its last walk. SIGHUP
(refresh, ``:kill -HUP``) reloads the config in place (dtagent.reload). Any other signal
that would end the process silently (SIGQUIT, SIGUSR1, SIGUSR2) is logged and ignored.
The main thread learns of each signal from the wakeup fd and does the work.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

from dtagent.config import Config
from dtagent.reload import (
    Change,
    CollectorsHook,
    DTraceHook,
    HttpHook,
    LoggingHook,
    Reloader,
    ReloadHook,
    ReloadRefused,
    ServerHook,
    ServeState,
    section_changes,
)

log = structlog.get_logger("dtagent")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOGGED_SIGNALS = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class ControlOffHook:
    """With the control API off, a reload that turns it on is refused: the API is mounted
    (and its policy checked) when the agent starts. With it on, the control wing's own
    hook refuses turning it off."""

    name = "control-off"

    def prepare(self, old: Config, new: Config) -> Change | None:
        if section_changes(old, new, "control", ["enabled"]):
            raise ReloadRefused("key 'control.enabled': False -> True needs a restart "
                                "(svcadm restart dtagent): the control API is mounted when "
                                "the agent starts")
        return None


class Serve:
    """Build, serve, reload and stop; :meth:`run` is the process's main loop."""

    def __init__(self, config: Config, load: Callable[[], Config] | None = None) -> None:
        from dtagent.runtime import build

        control = None
        if config.get("control", "enabled"):
            from dtagent.control.serve import Control

            # Checked before anything starts: a control API that cannot be secured is a
            # configuration error (exit 2), never a silently open one. A reload re-reads
            # the policy (dtagent.control.serve.PolicyHook, registered on import).
            control = Control(config)
        self.runtime = build(config)
        if control is not None and self.runtime.runner is not None:
            # the control wing's commands run (and are counted, dtagent_command_*) on
            # the agent's own command source
            control.use_runner(self.runtime.runner)
        from dtagent.server import make_server

        agent = self.runtime.agent if control is None else control.wrap(self.runtime.agent)

        def server_for(c: Config) -> Any:
            server = make_server(c, agent)
            if control is not None:
                try:
                    control.attach(server, c)
                except Exception:
                    server.close()
                    raise
            return server

        try:
            server = server_for(config)
        except Exception:  # a busy address, a web-config changed since it was checked
            self.runtime.close()
            raise
        self.state = ServeState(config=config, runtime=self.runtime, server=server,
                                parts={} if control is None else {"control": control})
        hooks: list[ReloadHook] = [LoggingHook(), ServerHook(self.state, server_for),
                                   HttpHook(self.state), CollectorsHook(self.state),
                                   DTraceHook(self.state)]
        if control is None:
            hooks.append(ControlOffHook())
        self.reloader = Reloader(self.state, load or (lambda: config), hooks)
        self.stopped = False

    @property
    def url(self) -> str:
        return str(self.state.server.url)

    def start(self) -> None:
        self.runtime.agent.settle(0)  # the commands start running now, not at a scrape
        self.state.server.start()
        log.info("serving", url=self.url, mode=self.runtime.mode, tls=self.state.server.tls)

    def handle(self, signum: int) -> bool:
        """Act on one signal; True when the agent should stop."""
        name = signal.Signals(signum).name
        if signum in STOP_SIGNALS:
            log.info("stopping", signal=name)
            return True
        if signum == signal.SIGHUP:
            self.reloader.reload()
            return False
        log.warning("signal ignored", signal=name,
                    hint="SIGHUP (svcadm refresh) reloads the config, SIGTERM stops")
        return False

    def stop(self) -> None:
        """Close the listeners, then stop the DTrace worker (its last walk is kept)."""
        if self.stopped:
            return
        self.stopped = True
        started = time.monotonic()
        self.state.server.stop()
        self.runtime.close()
        log.info("stopped", seconds=round(time.monotonic() - started, 2),
                 reloads=self.reloader.reloads, reloads_refused=self.reloader.refused)

    # ---------------------------------------------------------------- main loop

    @staticmethod
    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        """Only replaces the default action; the wakeup fd carries the signal."""

    def run(self, announce: str | None = None) -> None:
        """Serve until SIGTERM/SIGINT; must run in the main thread (signal handlers).

        A signal reaches whichever thread does not block it, often not the main one,
        so the main loop does not wait on a lock (a signal delivered elsewhere would not
        interrupt it): it reads the wakeup fd, to which the interpreter's C-level
        handler writes each signal's number in whatever thread it runs
        (signal.set_wakeup_fd)."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (*STOP_SIGNALS, signal.SIGHUP, *LOGGED_SIGNALS):
            signal.signal(sig, self._on_signal)
        try:
            self.start()
            if announce:
                print(f"{announce} {self.url}", flush=True)
            stop = False
            while not stop:
                for signum in os.read(wake_r, 64):
                    stop = self.handle(signum) or stop
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_r)
            os.close(wake_w)
            self.stop()
