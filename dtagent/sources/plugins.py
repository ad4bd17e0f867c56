"""The plugin source: operators' executable plugins (CMON's convention), run off the
scrape path.

A collector declares a directory (:class:`~dtagent.snapshot.PluginRequest`); this
source keeps one runner thread per declared directory, which runs every executable in
it one after another every ``interval`` seconds, and serves the latest run of each
plugin (:class:`~dtagent.snapshot.PluginRun`: what it printed, how the run went) into
the snapshot. The collector parses the output; nothing here waits for a scrape, and no
scrape waits for a plugin.

Each plugin gets an argv of its path alone (never a shell), stdin from /dev/null,
LC_ALL=C, its own session, and the same bounds as every command
(dtagent.sources.commands.execute): one deadline for the run and the reading of its
pipes, its process group killed then, output capped while it is read. A plugin that
fails, hangs or prints too much gets a run with an error; the others are not affected,
and each run is served as soon as it ends (a hanging plugin delays only the plugins
after it in the same pass, which keep their previous runs meanwhile).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from dtagent.snapshot import PluginRequest, PluginRun
from dtagent.sources.commands import DEFAULT_PATH, execute

log = structlog.get_logger("dtagent.plugins")


def executables(directory: Path) -> list[Path] | None:
    """The directory's plugins: regular executable files not starting with '.', by
    name; None when the directory cannot be listed."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return None
    return [p for p in entries if not p.name.startswith(".") and p.is_file()
            and os.access(p, os.X_OK)]


class PluginRunner:
    """Runs the plugins of one directory every ``request.interval`` seconds in a thread.

    ``configure`` changes the interval, timeout and output cap from the next run on
    (a reload), keeping the runs at hand.
    """

    def __init__(self, request: PluginRequest, clock: Callable[[], float] = time.time) -> None:
        self.request = request
        self.directory = Path(request.directory)
        self._clock = clock
        self._runs: dict[str, PluginRun] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listing_error = False
        self.runs = 0  # complete passes over the directory

    def configure(self, request: PluginRequest) -> None:
        with self._lock:
            self.request = request

    def results(self) -> tuple[PluginRun, ...] | None:
        """The latest run of each plugin, by name; None before the first pass ended
        and before any plugin of it finished."""
        with self._lock:
            if not self._runs and self.runs == 0:
                return None
            return tuple(self._runs[name] for name in sorted(self._runs))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dtagent-plugins",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (after the plugin running now, if any); never waits."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_first_pass(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.runs == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return self.runs > 0
                self._lock.wait(min(remaining, 0.1))
            return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # a bug here must not end the plugin thread
                log.error("plugin run failed", error=str(exc))
            self._stop.wait(max(0.0, self.request.interval - (time.monotonic() - started)))

    def run_once(self) -> None:
        """Run every plugin once, serving each run as it ends (plugins gone from the
        directory are forgotten at the start of the pass)."""
        plugins = executables(self.directory)
        if plugins is None:
            if not self._listing_error:
                log.warning("plugin directory cannot be listed", directory=str(self.directory))
            self._listing_error = True
            plugins = []
        elif self._listing_error:
            self._listing_error = False
            log.info("plugin directory can be listed again", directory=str(self.directory))
        names = {p.name for p in plugins}
        with self._lock:
            self._runs = {n: r for n, r in self._runs.items() if n in names}
        for path in plugins:
            if self._stop.is_set():
                return
            run = self._run(path)
            with self._lock:
                self._runs[path.name] = run
                self._lock.notify_all()
        with self._lock:
            self.runs += 1
            self._lock.notify_all()

    def _run(self, path: Path) -> PluginRun:
        request = self.request
        started = time.monotonic()
        # bounded as every command is: one deadline for the run and the reading of its
        # pipes, the process group killed then, output capped while it is read
        env = {k: v for k, v in os.environ.items() if k not in ("PATH", "LC_ALL", "LANG")}
        res = execute((str(path),), timeout=request.timeout, output_cap=request.max_output,
                      path=os.environ.get("PATH", DEFAULT_PATH), extra_env=env,
                      cwd=str(self.directory))
        error = res.error
        if res.truncated:
            error = f"printed more than {request.max_output} bytes"
        elif error is None and res.returncode == 0 and "\ufffd" in res.stdout:
            error = "output is not UTF-8"  # execute() decodes with replacement characters
        run = PluginRun(
            name=path.name,
            returncode=res.returncode,
            stdout=res.stdout if error is None else "",
            stderr=res.stderr.strip()[:200],
            error=error,
            duration=time.monotonic() - started,
            finished=self._clock(),
        )
        if not run.ok:
            log.warning("plugin failed", plugin=path.name, error=run.reason)
        return run


class LivePlugins:
    """The live :class:`~dtagent.snapshot.PluginSource`: a runner per declared directory.

    A directory no request names any more (a reload turned it off or moved it) has its
    runner stopped without waiting for it; :meth:`close` waits for them all.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runners: dict[str, PluginRunner] = {}
        self._stopped: list[PluginRunner] = []
        self._lock = threading.Lock()
        self._closed = False

    def plugin_runs(
        self, requests: Sequence[PluginRequest]
    ) -> Mapping[PluginRequest, tuple[PluginRun, ...]]:
        wanted = {r.directory: r for r in requests if r.directory}
        out: dict[PluginRequest, tuple[PluginRun, ...]] = {}
        with self._lock:
            for directory in [d for d in self._runners if d not in wanted]:
                runner = self._runners.pop(directory)
                runner.stop()
                self._stopped.append(runner)
            self._stopped = [r for r in self._stopped if r.alive]
            for directory, req in wanted.items():
                current = self._runners.get(directory)
                if current is None and not self._closed:
                    started = self._runners[directory] = PluginRunner(req, self._clock)
                    started.start()
                elif current is not None and current.request != req:
                    current.configure(req)
            for req in requests:
                current = self._runners.get(req.directory)
                runs = current.results() if current is not None else None
                if runs is not None:
                    out[req] = runs
        return out

    def settle(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every runner has run its directory once."""
        deadline = time.monotonic() + timeout
        with self._lock:
            runners = list(self._runners.values())
        return all(r.wait_first_pass(max(0.0, deadline - time.monotonic())) for r in runners)

    def close(self) -> None:
        """Stop every runner and wait for each (a plugin running now is killed at its
        deadline)."""
        with self._lock:
            self._closed = True
            runners = [*self._runners.values(), *self._stopped]
            self._runners.clear()
            self._stopped.clear()
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(runner.request.timeout + 5)
