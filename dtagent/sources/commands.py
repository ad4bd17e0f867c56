"""The command source: runs every platform command the agent needs, off the scrape path.

Collectors never run anything. Each declares the commands it reads as
:class:`~dtagent.snapshot.CommandRequest` values (argv, refresh interval, generation,
timeout) from its ``commands()`` method; at every collection the agent hands all of
them to this source, which runs whatever is due on a few background threads and
serves the latest results, with their age, into the snapshot. A scrape never waits
for a child process.

Every run is bounded by one deadline (:func:`execute`): the child runs in its own
session, its process group is killed at the deadline, reading its pipes stops at the
same deadline (a grandchild that escaped the group and still holds the pipes does not
keep us waiting for EOF), and output is capped while it is read (at the cap the group
is killed and the result reports truncation). The child gets a fixed environment
(``PATH`` from the config, ``LC_ALL=C``) and argv is never given to a shell.

Adding a command (for a new collector, say ``zpool list``):

1. Put its argv (a tuple constant or a function of the zone, dataset, ...) and its
   parser in ``dtagent/parsers/``, so the simulator can record the same argv.
2. In the collector, return ``CommandRequest(ARGV, refresh=..., timeout=...)`` from
   ``commands(self, kstats)`` (add ``generation=`` when something in the kstats must
   force a run, such as the set of running zone ids).
3. In ``collect``, read ``snap.commands.get(ARGV)``: None means it has not run yet
   (report nothing, say nothing); ``not res.ok`` means it failed, timed out, was
   truncated or is too old (``res.reason`` says which: log it once with ``warn_once``).
4. Record its output in the simulator part for the area (``dtagent/simulate/``), so
   replay tests and ``dtagent simulate`` bundles carry it.
5. Add a stand-in to ``tests/fakebin`` that prints the documented format.

Nothing else changes: the runtime, the agent and replay serve any request. Code that
must run a command once, now (the control wing's ``vmadm update``), calls
:meth:`CommandRunner.run_now`, which applies the same deadline, cap and environment and
counts into that runner's ``dtagent_command_*`` series. (The control wing builds its own
runner today, so its runs are not among the series the agent serves.)
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from dtagent.snapshot import CommandRequest, CommandResult, CommandResults

log = structlog.get_logger("dtagent.commands")

# A runaway command must not eat the agent's memory: stdout beyond this is not read.
MAX_OUTPUT = 16 * 1024 * 1024
MAX_STDERR = 64 * 1024
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 65536
# After the child exits, output still in the pipes is read only while it is there:
# a grandchild holding the pipes open must not keep the run going.
_POLL = 0.05


def execute(
    argv: Sequence[str],
    *,
    timeout: float,
    path: str = DEFAULT_PATH,
    output_cap: int = MAX_OUTPUT,
    extra_env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run ``argv`` once, bounded by ``timeout`` in everything (see the module doc).

    ``stdin``, when given, is written to the child's standard input (then closed) by
    the same loop that reads its output, with non-blocking writes under the same
    deadline: a child that does not read it cannot stall us, and one that writes a lot
    before reading cannot deadlock against us. Without it stdin is ``/dev/null``.
    ``finished`` of the result is on the monotonic clock."""
    clock = time.monotonic
    key = tuple(argv)
    if not key:
        raise ValueError("empty argv")
    exe = shutil.which(key[0], path=path) if "/" not in key[0] else key[0]
    if exe is None:
        return CommandResult(key, 127, error=f"{key[0]}: not found on {path}", finished=clock())
    env = {"PATH": path, "LC_ALL": "C", "LANG": "C", **(extra_env or {})}
    deadline = clock() + timeout
    try:
        proc = subprocess.Popen(
            [exe, *key[1:]],
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            close_fds=True,
            cwd=cwd,
        )
    except OSError as exc:
        return CommandResult(
            key, 126, error=f"{key[0]}: cannot run ({exc.strerror})", finished=clock()
        )
    out, err = bytearray(), bytearray()
    outcome = _read_until_done(proc, out, err, deadline, output_cap, clock, stdin)
    if outcome != "exited":
        _kill_group(proc)
    _close_pipes(proc)
    returncode = _reap(proc, deadline if outcome == "exited" else clock() + 1.0, clock)
    finished = clock()
    # decoded through a view: a slice and its bytes() were two more copies of the output
    stdout = str(memoryview(out)[:output_cap], "utf-8", "replace")
    stderr = str(memoryview(err)[:MAX_STDERR], "utf-8", "replace")
    if outcome == "timeout":
        return CommandResult(
            key, -9, stdout, stderr, error=f"timed out after {timeout:g}s", finished=finished
        )
    if outcome == "truncated":
        return CommandResult(
            key,
            -9,
            stdout,
            stderr,
            error=f"output passed {output_cap} bytes; the command was killed",
            truncated=True,
            finished=finished,
        )
    if returncode is None:
        return CommandResult(
            key, -9, stdout, stderr, error="did not exit after closing its output",
            finished=finished,
        )  # fmt: skip
    return CommandResult(key, returncode, stdout, stderr, finished=finished)


def _read_until_done(
    proc: subprocess.Popen[bytes],
    out: bytearray,
    err: bytearray,
    deadline: float,
    output_cap: int,
    clock: Callable[[], float],
    stdin: bytes | None = None,
) -> str:
    """Read stdout and stderr until EOF on both, or the child exited and the pipes are
    empty ("exited"), the deadline ("timeout") or the cap ("truncated"); meanwhile
    write ``stdin`` (if any) as the child takes it, closing its stdin when all is in."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin or b"")
    stdin_fd = -1
    if proc.stdin is not None:
        stdin_fd = proc.stdin.fileno()
        if pending:
            os.set_blocking(stdin_fd, False)
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            _close_stdin(proc)
    try:
        exited = False
        while sel.get_map():
            remaining = deadline - clock()
            if remaining <= 0:
                return "timeout"
            events = sel.select(0 if exited else min(remaining, _POLL))
            if not events:
                if exited:
                    return "exited"  # the pipes are empty; whoever holds them is not ours
                exited = proc.poll() is not None
                continue
            for key, _ in events:
                fd = int(key.fd)
                if fd == stdin_fd:
                    try:
                        pending = pending[os.write(fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the child closed it or exited; it is done
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        _close_stdin(proc)
                    continue
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = buffers[fd]
                if buf is err:
                    if len(err) < MAX_STDERR:
                        err.extend(chunk[: MAX_STDERR - len(err)])
                    continue
                buf.extend(chunk)
                if len(buf) > output_cap:
                    return "truncated"
        return "exited"
    finally:
        sel.close()
        _close_stdin(proc)


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and everything in its process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _reap(
    proc: subprocess.Popen[bytes], until: float, clock: Callable[[], float]
) -> int | None:
    """The exit status, waiting no later than ``until``; a child still not gone then is
    killed and left to a daemon thread to reap."""
    try:
        return proc.wait(timeout=max(0.0, until - clock()))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        threading.Thread(target=proc.wait, name="dtagent-reap", daemon=True).start()
        return None


def passed_env(names: Sequence[str]) -> Callable[[], dict[str, str]]:
    """The variables of the agent's environment named in ``sources.command_env``, read
    at each run (the ``extra_env`` of the agent's runner and of the control wing's)."""
    wanted = tuple(names)
    return lambda: {n: os.environ[n] for n in wanted if n in os.environ}


@dataclass(slots=True)
class _Entry:
    request: CommandRequest
    last: CommandResult | None = None
    last_ok: CommandResult | None = None
    generation: object = None  # of the request the last run served
    running: bool = False
    ticket: int = -1  # of its live item in the queue (older items are stale)


class _DueQueue:
    """The entries waiting to run, earliest due first: a heap with lazy deletion.

    Picking the next command used to scan every entry, and a host with one dladm per
    zone has as many entries as zones: each pick and each idle wait cost a pass over
    all of them, at every run, so the source's own CPU grew with the square of the
    zones. An entry is queued again when its due time changes (a run ended, its
    request changed); an item whose ticket is no longer its entry's, or whose entry
    is gone or running, is dropped when it reaches the top.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, tuple[str, ...]]] = []
        self._tickets = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, entry: _Entry) -> None:
        due_at = entry.request.due_at(entry.last, entry.generation)
        entry.ticket = next(self._tickets)
        heapq.heappush(self._heap, (due_at, entry.ticket, entry.request.argv))

    def pop_due(
        self, entries: Mapping[tuple[str, ...], _Entry], now: float
    ) -> tuple[_Entry | None, float]:
        """The earliest entry due by ``now`` (removed), or None and the seconds until
        the next one falls due (at most a minute)."""
        heap = self._heap
        while heap:
            due_at, ticket, argv = heap[0]
            entry = entries.get(argv)
            if entry is None or entry.running or entry.ticket != ticket:
                heapq.heappop(heap)
                continue
            if due_at > now:
                return None, min(60.0, max(0.01, due_at - now))
            heapq.heappop(heap)
            return entry, 0.0
        return None, 60.0

    def compact(self, entries: Mapping[tuple[str, ...], _Entry]) -> None:
        """Drop the stale items once they outnumber the live ones."""
        if len(self._heap) > 2 * len(entries) + 64:
            self._heap = [
                item for item in self._heap
                if (e := entries.get(item[2])) is not None and e.ticket == item[1]
            ]
            heapq.heapify(self._heap)


class CommandRunner:
    """The live :class:`~dtagent.snapshot.CommandSource`: real processes, in the background.

    ``workers`` commands run at once at most, so a host with many zones (one dladm
    per zone) never has more children than that. Requests that are not asked for any
    more (a zone that halted) are forgotten with their results.
    """

    def __init__(
        self,
        path: str = DEFAULT_PATH,
        *,
        workers: int = 2,
        output_cap: int = MAX_OUTPUT,
        extra_env: Callable[[], Mapping[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.path = path
        self.output_cap = output_cap
        self.extra_env = extra_env  # a reload of sources.command_env replaces it
        self._clock = clock
        self._workers = workers
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self._queue = _DueQueue()
        self._counts: dict[str, tuple[int, int]] = {}
        self._failing: dict[tuple[str, ...], str] = {}  # argv -> why its last run failed
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.forks = 0

    # -- the CommandSource interface -------------------------------------------------

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        wanted = {req.argv: req for req in requests}
        with self._cond:
            for argv in [a for a in self._entries if a not in wanted]:
                if not self._entries[argv].running:
                    del self._entries[argv]
            for argv, req in wanted.items():
                entry = self._entries.get(argv)
                if entry is None:
                    entry = self._entries[argv] = _Entry(req)
                    self._queue.push(entry)
                elif entry.request != req:  # another refresh or generation: due anew
                    entry.request = req
                    if not entry.running:  # a running one is queued when it ends
                        self._queue.push(entry)
            self._queue.compact(self._entries)
            self._start_workers()
            self._cond.notify_all()
            view = CommandResults.select(
                wanted.values(),
                lambda req: (self._entries[req.argv].last, self._entries[req.argv].last_ok),
                self._clock(),
                dict(self._counts),
            )
        return view

    def settle(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until no wanted command is due or running.

        For one-shot uses (``dtagent scrape``, the first frame of a capture, tests);
        the agent's scrapes never call it.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = self._clock()
                busy = any(e.running or self._is_due(e, now) for e in self._entries.values())
                if not busy:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))

    def run_now(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        name: str = "",
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run one command now, in the caller's thread, with the same bounds and counts
        (for actions such as the control wing's, not for what collectors read);
        ``stdin`` is fed to it (``vmadm update`` takes its JSON payload there)."""
        result = self._run(tuple(argv), timeout, stdin)
        self._count(name or " ".join(tuple(argv)[:2]), result)
        return result

    def close(self) -> None:
        """Stop the background threads (a run in progress ends at its deadline)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=0.1)

    # -- the background side ---------------------------------------------------------

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers and not self._closed:
            thread = threading.Thread(
                target=self._work, name=f"dtagent-commands-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _is_due(self, entry: _Entry, now: float) -> bool:
        return not entry.running and entry.request.due(entry.last, entry.generation, now)

    def _next(self) -> _Entry | None:
        """The entry due earliest (never run first), marked running; None when closed."""
        with self._cond:
            while not self._closed:
                entry, wait = self._queue.pop_due(self._entries, self._clock())
                if entry is not None:
                    entry.running = True
                    return entry
                self._cond.wait(wait)
            return None

    def _work(self) -> None:
        while (entry := self._next()) is not None:
            req = entry.request
            try:
                result = self._run_request(req)
            except Exception as exc:  # never let one command stop the source
                log.error("running a command failed", argv=list(req.argv), error=str(exc))
                result = CommandResult(req.argv, -1, error=str(exc), finished=self._clock())
            with self._cond:
                entry.running = False
                entry.last = result
                entry.generation = req.generation
                if result.ok:
                    entry.last_ok = result
                self._queue.push(entry)  # its request may have changed while it ran
                self._cond.notify_all()
            self._count(req.command, result)

    def _run_request(self, req: CommandRequest) -> CommandResult:
        result = self._run(req.argv, req.timeout)
        for argv in req.fallbacks:
            if result.returncode != 127:
                break
            result = self._run(argv, req.timeout)
        return result

    def _run(
        self, argv: tuple[str, ...], timeout: float, stdin: bytes | None = None
    ) -> CommandResult:
        started = time.monotonic()
        extra = self.extra_env() if self.extra_env is not None else None
        if "/" in argv[0] or shutil.which(argv[0], path=self.path):
            self.forks += 1
        result = execute(
            argv,
            timeout=timeout,
            path=self.path,
            output_cap=self.output_cap,
            extra_env=extra,
            stdin=stdin,
        )
        result = replace(result, finished=self._clock())
        elapsed = round(time.monotonic() - started, 3)
        if result.ok:
            if self._failing.pop(argv, None) is not None:
                log.info("command recovered", argv=list(argv), duration_s=elapsed)
            else:
                log.debug("command ran", argv=list(argv), duration_s=elapsed)
        elif self._failing.get(argv) != result.reason:
            # logged when it starts failing or fails differently, not at every retry
            self._failing[argv] = result.reason
            log.warning(
                "command failed",
                argv=list(argv),
                rc=result.returncode,
                error=result.error,
                stderr=result.stderr.strip()[:500],
                duration_s=elapsed,
            )
        return result

    def _count(self, name: str, result: CommandResult) -> None:
        with self._cond:
            runs, failures = self._counts.get(name, (0, 0))
            self._counts[name] = (runs + 1, failures + (0 if result.ok else 1))


class NoCommands:
    """The command source of a host where platform commands do not exist (not illumos)."""

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        return CommandResults()

    def settle(self, timeout: float) -> bool:
        return True

    def run_now(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        name: str = "",
        stdin: bytes | None = None,
    ) -> CommandResult:
        return CommandResult(tuple(argv), 127, error="not available on this platform")
