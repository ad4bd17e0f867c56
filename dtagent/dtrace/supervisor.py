"""Runs the DTrace worker process, restarts it when it dies or hangs, queues its deltas.

The worker writes JSON lines (docs/bundle-dtrace.md) and a ``{"tick": N}`` line after
each walk. The supervisor's reader thread keeps the lines of each walk as they came,
bytes, and only looks into the short ones for the tick: the records are decoded when
the scrape takes them (:meth:`Supervisor.take`), so the lines waiting between scrapes
cost their bytes and no Python objects, and the reader thread little CPU. A worker that
exits is restarted after an exponential backoff (reset once a worker has run well
for a while); one that writes no tick for ``hang_timeout`` seconds (``start_timeout``
before its first tick: compiling takes a while) is killed (SIGTERM, then SIGKILL) and
restarted. A config reload tells the running worker its new set of scripts
(:meth:`Supervisor.update_scripts`, a JSON line on its stdin), so only the scripts that
changed stop and start. Deltas are only ever added by the accumulator,
so counters stay monotonic across restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import structlog

from dtagent.dtrace.records import Batch, Record, Tick, WorkerHealth, parse

log = structlog.get_logger("dtagent.dtrace")

EXIT_NO_LIBRARY = 4  # dtagent.dtrace.worker: libdtrace cannot be loaded or opened
_TICK_MAX = 100  # bytes: a tick line is shorter ({"tick":N,"time":T})


class Supervisor:
    """The worker's lifecycle; a :class:`~dtagent.dtrace.records.DeltaSource`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        hang_timeout: float = 15.0,
        start_timeout: float = 120.0,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        healthy_after: float = 60.0,
        kill_grace: float = 2.0,
        pending_bytes: int = 128 << 20,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.hang_timeout = hang_timeout
        # compiling many scripts (CTF, D libraries) can take a while before the first tick
        self.start_timeout = max(start_timeout, hang_timeout)
        self._beats_this_run = 0
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.kill_grace = kill_grace
        # most bytes of lines waiting for a scrape: at 2,000 zones (about 18,000 keys,
        # 0.7 MB a second) about three minutes without one
        self.pending_bytes = pending_bytes
        self.env = env
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._kick = threading.Event()  # wakes the restart backoff: stopping or new argv
        self._reconfigured = False
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # one list of lines per walk: when nobody takes them, whole walks are dropped,
        # never a histogram's record without its parallel sum
        self._pending: list[list[bytes]] = []
        self._pending_size = 0
        self._batch: list[bytes] = []
        self._last_beat = 0.0
        self._last_batch_wall: float | None = None
        self.restarts = 0
        self.lost = 0
        self._bad_lines = 0
        self._last_exit: int | None = None

    # ------------------------------------------------------------ DeltaSource

    def take(self) -> list[Batch]:
        """The records since the last call, one batch for the scrape's zones.

        The batch's records are decoded as the accumulator draws them, and each line is
        let go once decoded: a scrape never holds every record since the last scrape
        as Python objects at once (at 1,000 zones and 10 s between scrapes that was
        60 to 120 MiB more at every scrape's peak), only the lines not yet applied."""
        with self._lock:
            walks, self._pending, self._pending_size = self._pending, [], 0
        return [(self._decoded(walks), {})] if walks else []

    def _decoded(self, walks: list[list[bytes]]) -> Iterator[Record]:
        walks.reverse()
        while walks:
            lines = walks.pop()
            lines.reverse()
            while lines:
                rec = self._decode(lines.pop())
                if rec is not None:
                    yield rec

    def _decode(self, raw: bytes) -> Record | None:
        """The record of one line; None for a line that is no JSON object (logged)."""
        try:
            obj = json.loads(raw)
        except ValueError:
            self._bad_lines += 1
            if self._bad_lines <= 5:
                log.warning("DTrace worker wrote a line that is not JSON",
                            line=raw[:200].decode("utf-8", "replace"))
            return None
        if not isinstance(obj, dict):
            return None
        return parse(obj)  # an Invalid one is counted when applied

    def health(self) -> WorkerHealth:
        with self._lock:
            proc = self._proc
            alive = proc is not None and proc.poll() is None
            limit = self.hang_timeout if self._beats_this_run else self.start_timeout
            fresh = self._clock() - self._last_beat <= limit
            return WorkerHealth(alive and fresh, self.restarts, self._last_batch_wall, self.lost)

    # --------------------------------------------------------------- control

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()  # a reload may start a supervisor it had stopped
            self._kick.clear()
            self._thread = threading.Thread(target=self._run, name="dtrace-supervisor",
                                            daemon=True)
            self._thread.start()

    def restart_with(self, argv: Sequence[str]) -> None:
        """Run ``argv`` from now on (a config reload changed the scripts): the running
        worker is stopped as at shutdown (its last walk is kept) and the new one starts at
        once, without backoff and without counting as a restart."""
        with self._wake:
            self.argv = list(argv)
            self._reconfigured = True
            proc = self._proc
            self._wake.notify_all()
        self._kick.set()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)

    def update_scripts(self, argv: Sequence[str], scripts: Sequence[tuple[str, str]]) -> bool:
        """Run ``argv`` from now on, telling the running worker the scripts it names
        (path, :func:`~dtagent.dtrace.spec.spec_digest`) on its stdin: it stops and
        starts only the scripts that changed, the others trace on. False when no
        worker could be told (none runs now; the next one starts with ``argv``)."""
        line = json.dumps({"scripts": [{"path": p, "digest": d} for p, d in scripts]})
        with self._lock:
            self.argv = list(argv)
            proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return False
        try:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
        except (OSError, ValueError):  # it is exiting (a broken pipe) or gone
            return False
        return True

    @property
    def running(self) -> bool:
        """Whether the supervisor loop runs (started and not stopped)."""
        return self._thread is not None and not self._stopping.is_set()

    def worker_pid(self) -> int | None:
        """The worker process's pid while it runs."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (SIGTERM: it stops tracing cleanly) and the supervisor."""
        self._stopping.set()
        self._kick.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = self._clock()
            reason = self._run_once()
            if self._stopping.is_set():
                break
            with self._lock:
                reconfigured, self._reconfigured = self._reconfigured, False
            if reconfigured:
                self._kick.clear()
                log.info("DTrace worker restarted for the new config",
                         scripts=[a for a in self.argv if a.endswith(".d")])
                continue
            ran = self._clock() - started
            if ran >= self.healthy_after:
                failures = 0
            delay = min(self.max_backoff, self.min_backoff * (2**failures))
            failures += 1
            if self._last_exit == EXIT_NO_LIBRARY:
                delay = self.max_backoff  # no libdtrace or no privileges: not transient
            with self._lock:
                self.restarts += 1
            log.warning("DTrace worker restarting", reason=reason, ran_seconds=round(ran, 1),
                        backoff_seconds=delay, restarts=self.restarts)
            self._kick.wait(delay)
            self._kick.clear()
            if self._stopping.is_set():
                break

    def _run_once(self) -> str:
        with self._lock:
            argv, self._reconfigured = list(self.argv), False
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,  # control lines (update_scripts)
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot start the worker: {exc}"
        with self._lock:
            self._proc = proc
            self._last_beat = self._clock()
            self._beats_this_run = 0
            stale = self._reconfigured  # restart_with came while this one was starting
        if stale:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True),
        ]
        for t in readers:
            t.start()
        reason = ""
        self._last_exit = None
        with self._wake:
            while not self._stopping.is_set():
                if proc.poll() is not None:
                    reason = f"the worker exited with status {proc.returncode}"
                    self._last_exit = proc.returncode
                    break
                limit = self.hang_timeout if self._beats_this_run else self.start_timeout
                if self._clock() - self._last_beat > limit:
                    reason = f"no report from the worker for {limit:g} s (hung)"
                    break
                self._wake.wait(0.2)
        self._terminate(proc, graceful=self._stopping.is_set())
        for t in readers:
            t.join(5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        with self._lock:
            # deltas of an unfinished walk are still deltas: keep them
            self._queue(self._batch)
            self._batch = []
        return reason

    def _terminate(self, proc: subprocess.Popen[bytes], graceful: bool) -> None:
        if proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(self.kill_grace * (5 if graceful else 1))
        except subprocess.TimeoutExpired:
            log.warning("DTrace worker did not stop on SIGTERM; killing it", pid=proc.pid)
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass

    def _queue(self, lines: list[bytes]) -> None:
        if not lines:
            return
        self._pending.append(lines)
        self._pending_size += sum(map(len, lines))
        while self._pending_size > self.pending_bytes and len(self._pending) > 1:
            oldest = self._pending.pop(0)
            self._pending_size -= sum(map(len, oldest))
            self.lost += len(oldest)

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in stream:
            # a tick is a short line ({"tick":N,"time":T}); anything else is kept as it is
            if len(raw) <= _TICK_MAX and b'"tick"' in raw and \
                    isinstance(self._decode_quietly(raw), Tick):
                with self._wake:
                    self._queue(self._batch)
                    self._batch = []
                    self._last_beat = self._clock()
                    self._beats_this_run += 1
                    self._last_batch_wall = time.time()
                    self._wake.notify_all()
            elif raw.strip():
                with self._lock:
                    self._batch.append(raw)

    @staticmethod
    def _decode_quietly(raw: bytes) -> Record | None:
        try:
            return parse(json.loads(raw))
        except ValueError:
            return None

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                log.warning("DTrace worker", message=line)
