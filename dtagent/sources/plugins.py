"""Operators' executable plugins (CMON's convention): every executable in a directory
is run on its own interval, off the scrape path, with a timeout, and its output (the
Prometheus text format) is kept with whether it succeeded, how long it took and when it
last ran.

One thread runs the plugins one after another every ``interval`` seconds. Each gets an
argv of its path alone (never a shell), stdin from /dev/null, LC_ALL=C, its own session
(so a timeout kills it and everything it started), and at most ``max_output`` bytes of
output. A plugin that fails, hangs or prints something that is not the text format
keeps no metrics for that run; the others are not affected.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from dtagent.metrics import MetricFamily
from dtagent.parsers.textformat import TextFormatError, parse_exposition
from dtagent.sources.commands import DEFAULT_PATH, execute

log = structlog.get_logger("dtagent.plugins")


@dataclass(frozen=True, slots=True)
class PluginResult:
    """The last run of one plugin."""

    name: str
    ok: bool
    duration: float
    finished: float  # Unix time
    families: list[MetricFamily] = field(default_factory=list)
    error: str | None = None


def executables(directory: Path) -> list[Path]:
    """The directory's plugins: regular executable files not starting with '.'."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_file()
            and os.access(p, os.X_OK)]


class PluginRunner:
    """Runs the plugins of ``directory`` every ``interval`` seconds in a thread."""

    def __init__(
        self,
        directory: str,
        interval: float = 60.0,
        timeout: float = 10.0,
        max_output: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self.timeout = timeout
        self.max_output = max_output
        self._clock = clock
        self._results: dict[str, PluginResult] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def results(self) -> dict[str, PluginResult]:
        with self._lock:
            return dict(self._results)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dtagent-plugins",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # a bug here must not end the plugin thread
                log.error("plugin run failed", error=str(exc))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def run_once(self) -> None:
        """Run every plugin once and keep the results (plugins gone are forgotten)."""
        plugins = executables(self.directory)
        fresh = {p.name: self._run(p) for p in plugins if not self._stop.is_set()}
        with self._lock:
            self._results = fresh
        self.runs += 1

    def _run(self, path: Path) -> PluginResult:
        started = time.monotonic()

        def done(ok: bool, error: str | None = None,
                 families: list[MetricFamily] | None = None) -> PluginResult:
            if error:
                log.warning("plugin failed", plugin=path.name, error=error)
            return PluginResult(path.name, ok, time.monotonic() - started, self._clock(),
                                families or [], error)

        # bounded as every command is: one deadline for the run and the reading of its
        # pipes, the process group killed then, output capped while it is read
        env = {k: v for k, v in os.environ.items() if k not in ("PATH", "LC_ALL", "LANG")}
        res = execute((str(path),), timeout=self.timeout, output_cap=self.max_output,
                      path=os.environ.get("PATH", DEFAULT_PATH), extra_env=env,
                      cwd=str(self.directory))
        if res.truncated:
            return done(False, f"printed more than {self.max_output} bytes")
        if res.error is not None:
            return done(False, res.error)
        if res.returncode != 0:
            return done(False, f"exit status {res.returncode}: {res.stderr.strip()[:200]}")
        if "\ufffd" in res.stdout:  # execute() decodes with replacement characters
            return done(False, "output is not UTF-8")
        try:
            families = parse_exposition(res.stdout, f"plugin {path.name}")
        except TextFormatError as exc:
            return done(False, str(exc))
        return done(True, families=families)
