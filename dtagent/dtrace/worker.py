"""The DTrace worker: one process, one libdtrace handle per script, deltas on stdout.

    python -m dtagent.dtrace.worker --libdtrace libdtrace.so.1 --script scripts/d/runq.d ...

Each script runs on its own handle: every ``dtrace_open`` is a consumer state of its
own, with its own options, enabled probe ids and aggregations (illumos-gate
usr/src/lib/libdtrace/common/dt_open.c opens /dev/dtrace once per handle, which makes
a new ``dtrace_state_t`` in usr/src/uts/common/dtrace/dtrace.c, ``dtrace_open``;
``dt_aggs`` is per handle). So one script can be stopped, changed and started again
while the others go on tracing. A script that fails to compile or enable is reported
with libdtrace's message and its handle closed; the rest run. Every ``--interval``
seconds each handle in turn gets ``dtrace_work`` (status, drops, errors: the kernel's
deadman kills an enabling nobody polls; under the default ``switch`` buffer policy it
also snapshots the aggregations, usr/src/lib/libdtrace/common/dt_work.c) and a walk
with REMOVE semantics, so each walk is a delta. Records are JSON lines on stdout in the
format of docs/bundle-dtrace.md: one line per aggregation and walk, carrying every key
that changed (:class:`~dtagent.dtrace.records.Values`,
:class:`~dtagent.dtrace.records.Histograms`), each round closed by a ``{"tick": N}``
line.

A script stops the way dtrace(1M) does: ``dtrace_stop`` (END clauses fire),
``dtrace_work`` (which forces a last snapshot once tracing has stopped), a last walk,
``dtrace_close``. All of them stop so on SIGTERM (or SIGINT); one stops so when the
agent's control line (a JSON object on stdin, ``{"scripts": [{"path": P, "digest": D},
...]}``, sent on a config reload) no longer names it or names it with another digest
(:func:`~dtagent.dtrace.spec.spec_digest`); a changed script then starts again on a
new handle, a new one starts, the others are left alone.

A script whose enabling fails part way leaves the probes it had enabled running
(usr/src/uts/common/dtrace/dtrace.c, ``dtrace_enabling_match``); they belong to its
own consumer state, which closing its handle destroys (``dtrace_close`` →
``dtrace_state_destroy``), so they feed nothing and no other script is touched.

A handle that fails while tracing (``dtrace_work`` or the walk returns an error, e.g.
the kernel's deadman aborted an enabling nobody polled) or whose tracing stopped by
itself (the script called ``exit()``, or a buffer filled: ``dtrace_work`` says DONE
after a last, forced snapshot, which is walked) is closed and its script reported
failed, then started again on a new handle after 1, 2, 4 … up to 60 intervals; the
other scripts' handles are not touched, so their aggregations go on accumulating in the
kernel and nothing of theirs is lost.

Exit status: 0 stopped on request, 4 libdtrace could not be loaded or opened. A crash
or a hang (the supervisor's heartbeat) restarts the whole worker.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from dtagent.cliargs import seconds
from dtagent.dtrace import libdtrace as ld
from dtagent.dtrace.buckets import Buckets
from dtagent.dtrace.records import (
    Drop,
    Histograms,
    KeyValue,
    Record,
    ScriptError,
    Status,
    Tick,
    Values,
    to_json,
)
from dtagent.dtrace.spec import (
    AggregationSpec,
    ScriptSpec,
    SpecError,
    load_script,
    merge_options,
    one_handle,
    spec_digest,
)

EXIT_STOPPED, EXIT_NO_LIBRARY = 0, 4


# Keys in one batched record at most: the agent decodes a record's JSON line whole, so
# a line of every key a walk found (thousands at 1,000 zones) is that many Python lists
# at once (2 MiB off the scrape's peak there); 256 keys keep most of what batching
# saves (docs/bundle-dtrace.md, "Why batched").
RECORD_KEYS = 256


@dataclass
class _Target:
    """One declared aggregation (or a histogram's sum) of a script, and what one walk
    has collected of it: keys and values (or flat ``lo, n`` buckets) in parallel."""

    script: ScriptSpec
    agg: AggregationSpec
    is_sum: bool
    buckets: Buckets | None
    lowers: tuple[int | None, ...] = ()  # each bucket's lower bound, by index
    keys: list[tuple[KeyValue, ...]] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def records(self, name: str) -> list[Record]:
        """What was collected, as batched records of at most :data:`RECORD_KEYS` keys
        each (none: nothing), and start afresh."""
        keys, values = self.keys, self.values
        self.keys, self.values = [], []
        make = Values if self.buckets is None else Histograms
        return [
            make(self.script.name, name, tuple(keys[at : at + RECORD_KEYS]),
                 tuple(values[at : at + RECORD_KEYS]))
            for at in range(0, len(keys), RECORD_KEYS)
        ]


def _targets(spec: ScriptSpec) -> dict[str, _Target]:
    out: dict[str, _Target] = {}
    for a in spec.aggregations:
        b = a.buckets() if a.type == "histogram" else None
        lowers = tuple(b.lower(i) for i in range(b.count)) if b is not None else ()
        out[a.name] = _Target(spec, a, False, b, lowers)
        if a.sum:
            out[a.sum] = _Target(spec, a, True, None)
    return out


@dataclass
class _Consumer:
    """One script on its own libdtrace handle."""

    spec: ScriptSpec
    digest: str
    handle: ld.Handle
    targets: dict[str, _Target]
    on_entry: Callable[[ld.AggEntry], None]
    started: float = field(default_factory=time.monotonic)
    next_walk: int = 0  # the worker's tick at which this handle is walked next


@dataclass(frozen=True)
class _Lost:
    """A script whose handle failed or stopped by itself, waiting to start again (or,
    ``due`` infinite, running again but remembered: its failures in a row)."""

    spec: ScriptSpec
    digest: str
    failures: int
    due: float


# A lost script starts again after 1, 2, 4 ... up to RESTART_MAX_BACKOFF intervals; the
# count of failures in a row starts afresh once a run lasted RESTART_HEALTHY intervals.
RESTART_MAX_BACKOFF = 60
RESTART_HEALTHY = 60


class Worker:
    """The consumer loop (one instance per process)."""

    def __init__(
        self,
        lib_path: str,
        specs: Sequence[ScriptSpec],
        out: IO[str],
        err: IO[str],
        interval: float = 1.0,
        failed: Sequence[tuple[str, str]] = (),
        control: int | None = None,
        walk_interval: float | None = None,
    ) -> None:
        self.lib_path = lib_path
        self.specs = list(specs)
        self.out = out
        self.err = err
        self.interval = interval
        # a handle is walked every walk_every ticks (and at its first tick, so a script
        # that starts shows its data at once); its snapshots are taken at every tick
        self.walk_every = max(1, round((walk_interval or interval) / interval))
        self.stopping = False
        self.ticks = 0
        self._pending: list[Record] = []
        self._drops: dict[str, int] = {}
        self._errors: dict[str, tuple[int, str]] = {}
        self._logged: set[str] = set()
        self._failed = list(failed)
        self._consumers: list[_Consumer] = []
        # scripts that failed to start, with the digest they failed with: a reload
        # that names them unchanged leaves them failed
        self._failed_digests: dict[str, str] = {}
        # scripts restarted alone after their handle failed (see _lose)
        self._lost: dict[str, _Lost] = {}
        self._control = control  # fd of the control lines (stdin), None: none
        self._control_buffer = b""
        self._lib: ctypes.CDLL | None = None

    # ------------------------------------------------------------------ output

    def log(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    def log_once(self, key: str, message: str) -> None:
        if key not in self._logged and len(self._logged) < 1000:
            self._logged.add(key)
            self.log(message)

    def emit(self, record: Record) -> None:
        self._pending.append(record)

    def collect(self, c: _Consumer) -> None:
        """The records of each aggregation of ``c`` that its walk found keys of."""
        for name, target in c.targets.items():
            self._pending.extend(target.records(name))

    def flush(self, tick: bool = True) -> None:
        for kind, count in self._drops.items():
            if count:
                self._pending.append(Drop(kind, count))
        self._drops.clear()
        for script, (count, message) in self._errors.items():
            self._pending.append(ScriptError(script, count, message))
        self._errors.clear()
        if tick:
            self._pending.append(Tick(self.ticks, time.time()))
        lines = "".join(json.dumps(to_json(r), separators=(",", ":")) + "\n"
                        for r in self._pending)
        self._pending.clear()
        self.out.write(lines)
        self.out.flush()

    # ---------------------------------------------------------------- handlers

    def _on_drop(self, drop: ld.Drop) -> None:
        self._drops[drop.kind] = self._drops.get(drop.kind, 0) + drop.drops

    def _on_error(self, script: str, info: ld.RuntimeErrorInfo) -> None:
        # each handle runs one script: its errors are that script's
        count, _ = self._errors.get(script, (0, ""))
        self._errors[script] = (count + 1, info.message)

    def _on_output(self, text: str) -> None:
        self.log_once("output", f"D script output ignored (the agent reads aggregations): "
                      f"{text.strip()[:200]}")

    def _on_entry(self, targets: dict[str, _Target], entry: ld.AggEntry) -> None:
        target = targets.get(entry.name)
        if target is None:
            return  # not declared in any spec (a helper aggregation): removed, ignored
        spec, agg = target.script, target.agg
        where = f"{spec.name}: @{entry.name}"
        if len(entry.keys) != len(agg.keys):
            self.log_once(where, f"{where} has {len(entry.keys)} keys, the spec declares "
                          f"{len(agg.keys)}; ignored")
            return
        key: list[KeyValue] = []
        for pos, (kf, k) in enumerate(zip(entry.keys, agg.keys, strict=True)):
            try:
                key.append(kf.as_str() if k.kind == "string" else kf.as_int())
            except ValueError as exc:
                self.log_once(where, f"{where}: key {pos} is declared {k.kind} but the "
                              f"script records {len(kf.raw)} bytes ({exc}); ignored")
                return
        expected = "sum" if target.is_sum else agg.function
        if entry.function != expected:
            self.log_once(where, f"{where} is {entry.function}(), the spec says "
                          f"{expected}(); ignored")
            return
        if target.buckets is None:
            value = entry.value
            if isinstance(value, tuple) and len(value) != 2:
                self.log_once(where, f"{where}: buckets where a value was expected; ignored")
                return
            if isinstance(value, tuple) != (agg.function == "avg" and not target.is_sum):
                self.log_once(where, f"{where}: a value of the wrong shape; ignored")
                return
            target.keys.append(tuple(key))
            target.values.append(value)
        else:
            buckets = self._buckets(target, entry, where)
            if buckets is None:
                return
            target.keys.append(tuple(key))
            target.values.append(buckets)

    def _buckets(
        self, target: _Target, entry: ld.AggEntry, where: str
    ) -> tuple[int | None, ...] | None:
        b = target.buckets
        assert b is not None
        function = target.agg.function
        if function in ("lquantize", "llquantize"):
            decode = ld.lquantize_params if function == "lquantize" else ld.llquantize_params
            got, want = decode(entry.arg), b.arg_params()
            if got != want:
                self.log_once(where, f"{where}: {function} parameters {got} differ from the "
                              f"spec's {want}; ignored")
                return None
        counts = entry.value
        if not isinstance(counts, tuple) or len(counts) != b.count:
            size = len(counts) if isinstance(counts, tuple) else 1
            self.log_once(where, f"{where}: {size} buckets, expected {b.count}; ignored")
            return None
        lowers = target.lowers
        return tuple(x for i, n in enumerate(counts) if n for x in (lowers[i], n))

    # ------------------------------------------------------------------- run

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        # `svcadm refresh` (the manifest's ":kill -HUP") signals every process of the
        # service's contract: the reload is the agent's, tracing goes on untouched
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for name, message in self._failed:
            self.emit(Status(name, "failed", message))
        try:
            self._lib = ld.load_library(self.lib_path)
            for spec in self.specs:
                self._start(spec)
        except (OSError, ld.DTraceError) as exc:
            self.log(f"cannot use libdtrace {self.lib_path}: {exc}")
            self._pending = [r for r in self._pending if not isinstance(r, Status)
                             or r.status == "failed"]
            for c in self._consumers:
                c.handle.close()
            self._consumers = []
            done = {r.script for r in self._pending if isinstance(r, Status)}
            for s in self.specs:
                if s.name not in done:
                    self.emit(Status(s.name, "failed", str(exc)))
            self.flush(tick=False)
            return EXIT_NO_LIBRARY
        if not self._consumers:
            self.log("no D script could be enabled; idling")
        self.flush(tick=False)
        deadline = time.monotonic()
        while not self.stopping:
            deadline += self.interval
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                self._wait_control(min(left, 0.1))
            if self.stopping:
                break
            deadline = max(deadline, time.monotonic() - self.interval)
            self._tick()
        for c in self._consumers:
            self._finish(c)
        self._consumers = []
        self.ticks += 1
        self.flush()
        return EXIT_STOPPED

    def _start(self, spec: ScriptSpec) -> None:
        """Open, compile, enable and start ``spec`` on a handle of its own; a script that
        fails is reported and its handle closed. Raises when dtrace_open fails."""
        assert self._lib is not None
        handle = ld.Handle(self._lib)
        digest = spec_digest(spec)
        try:
            self._enable(handle, spec)
        except ld.DTraceError as exc:
            handle.close()  # destroys its consumer state, probes partly enabled included
            self.emit(Status(spec.name, "failed", str(exc)))
            self._failed_digests[spec.name] = digest
            return
        targets = _targets(spec)
        self._consumers.append(_Consumer(spec, digest, handle, targets,
                                         lambda e: self._on_entry(targets, e),
                                         next_walk=self.ticks + 1))
        self._failed_digests.pop(spec.name, None)
        self.emit(Status(spec.name, "running"))

    def _enable(self, handle: ld.Handle, spec: ScriptSpec) -> None:
        for problem in _set_options(handle, [spec]):
            self.log(f"DTrace option not set: {problem}")
        # The worker's ticks pace the snapshots; aggrate only rate-limits them. libdtrace
        # skips a snapshot that comes sooner than aggrate after a reference that then
        # advances by aggrate (dt_aggregate.c dtrace_aggregate_snap), so with aggrate
        # equal to the interval a tick a little earlier than the first one was (timer
        # jitter) is skipped and its data arrives a tick late; at half the interval the
        # reference never catches up with the ticks and every tick gets its snapshot.
        try:
            handle.setopt("aggrate", f"{max(1, int(self.interval * 1e9 / 2))}ns")
        except ld.DTraceError as exc:
            self.log(f"DTrace option not set: {exc}")
        name = spec.name
        handle.handle_drop(self._on_drop)
        # before go: dtrace_go enables the ERROR probe
        handle.handle_err(lambda info: self._on_error(name, info))
        handle.handle_buffered(self._on_output)
        try:
            program = handle.compile(name, spec.source, _cflags(handle, spec))
        except ld.DTraceError as exc:  # nothing enabled
            self.log(f"script {name} not enabled: {exc}")
            raise
        try:
            handle.exec(program)
        except ld.DTraceError as exc:
            self.log(f"script {name} failed part way through enabling; its handle is "
                     f"closed, which disables the probes it had enabled")
            raise ld.DTraceError(f"enabling failed: {exc}", exc.errno) from None
        try:
            handle.go()
        except ld.DTraceError as exc:
            self.log(f"dtrace_go failed for {name}: {exc}")
            raise ld.DTraceError(f"dtrace_go: {exc}", exc.errno) from None

    def _finish(self, c: _Consumer) -> None:
        """Stop one script as dtrace(1M) ends (usr/src/cmd/dtrace/dtrace.c): stop first
        (END clauses fire), then dtrace_work, which forces a last snapshot once tracing
        has stopped whatever aggrate says (dt_work.c), the last walk, then close.
        Nothing that arrived after the previous walk is lost."""
        try:
            c.handle.stop()
            if c.handle.work() == ld.DTRACE_WORKSTATUS_ERROR:
                raise c.handle.error()
            c.handle.walk(c.on_entry)
        except ld.DTraceError as exc:
            self.log(f"stopping {c.spec.name}: {exc}")
        finally:
            self.collect(c)
            c.handle.close()

    def _tick(self) -> None:
        """One round: every handle's dtrace_work, and the walk of those due. A handle whose
        dtrace_work or walk fails, or whose tracing stopped by itself (exit()), is walked
        for what its snapshots hold, closed and its script started again alone
        (:meth:`_lose`); the other handles go on.

        Every tick snapshots (dtrace_work, at aggrate): the kernel's aggregation buffer
        then needs room for one interval's keys only. A walk comes every ``walk_every``
        ticks: between walks libdtrace adds each snapshot into the entry its key already
        has in the user-space hash (usr/src/lib/libdtrace/common/dt_aggregate.c,
        dt_aggregate_snap_cpu), so a walk yields one entry per key whatever the number
        of snapshots, and a key that fires every second costs one record per walk."""
        self.ticks += 1
        for c in list(self._consumers):
            status = c.handle.work()
            if status == ld.DTRACE_WORKSTATUS_ERROR:
                exc = c.handle.error()
                self.log(f"dtrace_work failed: {exc} (script {c.spec.name})")
                self._walk_what_is_left(c)
                self._lose(c, f"dtrace_work failed: {exc}")
                continue
            if status != ld.DTRACE_WORKSTATUS_DONE and self.ticks < c.next_walk:
                continue
            c.next_walk = self.ticks + self.walk_every
            try:
                # dtrace_work took the snapshot (bufpolicy switch: the worker never sets
                # another, spec.KNOWN_OPTIONS); once tracing has stopped by itself it
                # was the last one, forced
                failures = c.handle.walk(c.on_entry)
            except ld.DTraceError as exc:
                self.log(f"aggregation walk failed: {exc} (script {c.spec.name})")
                self.collect(c)
                self._lose(c, f"aggregation walk failed: {exc}")
                continue
            self.collect(c)
            if failures:
                self.log_once("decode", f"{failures} aggregation entries could not be decoded")
            if status == ld.DTRACE_WORKSTATUS_DONE:
                # dtrace_status saw exit() (DTRACE_STATUS_EXITED) or a filled buffer and
                # stopped tracing itself (dt_work.c); this walk held the last data
                self.log(f"script {c.spec.name}: tracing stopped by itself (exit() or a "
                         f"full buffer)")
                self._lose(c, "tracing stopped by itself (exit() or a full buffer)")
        self._restart_due()
        self.flush()

    def _walk_what_is_left(self, c: _Consumer) -> None:
        """Walk what the handle's snapshots since its last walk hold, before it is closed
        after a failed dtrace_work: the walk reads libdtrace's user-space hash only
        (dt_aggregate.c dtrace_aggregate_walk), not the kernel state that failed, and
        yields nothing when all was walked at the last tick."""
        try:
            c.handle.walk(c.on_entry)
        except ld.DTraceError as exc:
            self.log(f"aggregation walk failed: {exc} (script {c.spec.name})")
        self.collect(c)

    def _lose(self, c: _Consumer, why: str) -> None:
        """Close a script whose handle failed or stopped by itself, report it failed and
        start it again on a new handle after a backoff; the other scripts' handles are
        not touched (each is a consumer state of its own, dt_open.c)."""
        c.handle.close()
        self._consumers.remove(c)
        self.specs = [x.spec for x in self._consumers]
        self.emit(Status(c.spec.name, "failed", why))
        now = time.monotonic()
        before = self._lost.get(c.spec.name)
        # failures in a row (reset once a run lasted RESTART_HEALTHY intervals)
        ran = now - c.started
        failures = 0 if before is None or ran >= RESTART_HEALTHY * self.interval \
            else before.failures + 1
        delay = min(RESTART_MAX_BACKOFF, 2 ** failures) * self.interval
        self._lost[c.spec.name] = _Lost(c.spec, c.digest, failures, now + delay)
        self.log(f"script {c.spec.name} restarts on a new handle in {delay:g} s; the "
                 f"other scripts trace on")

    def _restart_due(self) -> None:
        """Start again the lost scripts whose backoff is over."""
        now = time.monotonic()
        for name, lost in list(self._lost.items()):
            if lost.due > now:
                continue
            try:
                self._start(lost.spec)
            except ld.DTraceError as exc:  # dtrace_open failed: try again later
                self.log(f"script {name} not restarted: {exc}")
                delay = min(RESTART_MAX_BACKOFF, 2 ** (lost.failures + 1)) * self.interval
                self._lost[name] = _Lost(lost.spec, lost.digest, lost.failures + 1,
                                         now + delay)
                continue
            if name in self._failed_digests:  # it no longer compiles: reported, left off
                del self._lost[name]
            else:  # running again; the failure count stays until it runs well
                self._lost[name] = _Lost(lost.spec, lost.digest, lost.failures, float("inf"))
        self.specs = [c.spec for c in self._consumers]

    # --------------------------------------------------------------- control

    def _wait_control(self, timeout: float) -> None:
        """Sleep up to ``timeout``, applying any control line that arrives."""
        if self._control is None:
            time.sleep(timeout)
            return
        try:
            ready, _, _ = select.select([self._control], [], [], timeout)
        except InterruptedError:
            return
        if not ready:
            return
        chunk = os.read(self._control, 65536)
        if not chunk:  # nobody will send more: go on as configured
            self._control = None
            return
        self._control_buffer += chunk
        while b"\n" in self._control_buffer:
            line, self._control_buffer = self._control_buffer.split(b"\n", 1)
            if line.strip():
                self._apply_control(line)

    def _apply_control(self, line: bytes) -> None:
        """Run the scripts the control line names: stop those gone or changed (after
        their last walk), start the new and changed ones, leave the others alone."""
        try:
            msg = json.loads(line)
            wanted = [(str(s["path"]), str(s["digest"])) for s in msg["scripts"]]
        except (ValueError, KeyError, TypeError) as exc:
            self.log(f"control line ignored (expected {{\"scripts\": [{{\"path\", "
                     f"\"digest\"}}]}}): {exc}")
            return
        by_name = {Path(path).stem: (path, digest) for path, digest in wanted}
        for name, lost in list(self._lost.items()):  # gone or changed: not restarted
            if by_name.get(name, ("", ""))[1] != lost.digest:
                del self._lost[name]
        kept: list[_Consumer] = []
        for c in self._consumers:
            if by_name.get(c.spec.name, ("", ""))[1] == c.digest:
                kept.append(c)
            else:
                self._finish(c)  # its last data goes out with the next tick
        self._consumers = kept
        running = {c.spec.name for c in kept}
        fresh: list[ScriptSpec] = []
        for name, (path, digest) in by_name.items():
            waiting = name in self._lost and self._lost[name].due < float("inf")
            if name in running or self._failed_digests.get(name) == digest or waiting:
                continue  # running, failed unchanged, or to be restarted after its backoff
            try:
                fresh.append(load_script(Path(path)))
            except SpecError as exc:
                self.emit(Status(name, "failed", str(exc)))
                self._failed_digests[name] = digest
        for name in list(self._failed_digests):
            if name not in by_name:
                del self._failed_digests[name]
        clashes: list[SpecError] = []
        allowed = one_handle([c.spec for c in kept] + fresh, clashes)
        allowed_names = {s.name for s in allowed}
        refused = [s for s in fresh if s.name not in allowed_names]
        for spec, clash in zip(refused, clashes, strict=True):
            self.emit(Status(spec.name, "failed", str(clash)))
            self._failed_digests[spec.name] = spec_digest(spec)
        self.specs = [c.spec for c in kept]
        for spec in fresh:
            if spec.name in allowed_names:
                try:
                    self._start(spec)
                except ld.DTraceError as exc:  # dtrace_open failed
                    self.emit(Status(spec.name, "failed", str(exc)))
        self.specs = [c.spec for c in self._consumers]

def check_scripts(lib_path: str, specs: Sequence[ScriptSpec]) -> list[tuple[str, str | None]]:
    """Compile each script without enabling it: (name, None if it compiles, else the
    compiler's message). Raises OSError/DTraceError when libdtrace is unusable."""
    handle = ld.Handle(ld.load_library(lib_path))
    try:
        _set_options(handle, specs)
        out: list[tuple[str, str | None]] = []
        for spec in specs:
            try:
                handle.compile(spec.name, spec.source, _cflags(handle, spec))  # as the worker
                out.append((spec.name, None))
            except ld.DTraceError as exc:
                out.append((spec.name, str(exc)))
        return out
    finally:
        handle.close()

def _set_options(handle: ld.Handle, specs: Sequence[ScriptSpec]) -> list[str]:
    """Set the scripts' merged DTrace options; the problems, one per option refused."""
    problems = []
    for name, value in merge_options(specs).items():
        try:
            handle.setopt(name, value)
        except ld.DTraceError as exc:
            problems.append(str(exc))
    return problems


def _cflags(handle: ld.Handle, spec: ScriptSpec) -> int:
    """Compiler flags for ``spec``, after checking that its required probes exist.

    A script that lists its required ``probes`` is compiled with DTRACE_C_ZDEFS, so
    its optional clauses (an fbt function some platform images lack) match nothing
    instead of failing the whole script; the required ones are checked first, with
    a program of just those probe descriptions compiled without it. A script that
    lists none needs every probe it names.
    """
    if not spec.probes:
        return 0
    handle.compile(f"{spec.name} (required probes)", ",\n".join(spec.probes) + "\n{}\n")
    return ld.DTRACE_C_ZDEFS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dtagent.dtrace.worker")
    parser.add_argument("--libdtrace", default="libdtrace.so.1")
    parser.add_argument("--script", action="append", default=[], metavar="NAME.d")
    parser.add_argument("--interval", type=seconds, default=1.0,
                        help="seconds between dtrace_work rounds (status, snapshots, ticks)")
    parser.add_argument("--walk-interval", type=seconds, default=None,
                        help="seconds between aggregation walks (default: --interval)")
    args = parser.parse_args(argv)
    specs: list[ScriptSpec] = []
    failed: list[tuple[str, str]] = []
    for path in args.script:
        try:
            specs.append(load_script(Path(path)))
        except SpecError as exc:
            failed.append((Path(path).stem, str(exc)))
    clashes: list[SpecError] = []
    kept = one_handle(specs, clashes)  # aggregation names are per handle (dt_open.c)
    kept_names = {s.name for s in kept}
    dropped = [s.name for s in specs if s.name not in kept_names]
    failed += [(name, str(e)) for name, e in zip(dropped, clashes, strict=True)]
    specs = kept
    worker = Worker(args.libdtrace, specs, sys.stdout, sys.stderr, args.interval, failed,
                    control=sys.stdin.fileno() if not sys.stdin.closed else None,
                    walk_interval=args.walk_interval)
    try:
        return worker.run()
    except BrokenPipeError:  # the agent is gone
        return EXIT_STOPPED


if __name__ == "__main__":
    raise SystemExit(main())

