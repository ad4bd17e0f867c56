"""The DTrace worker: one process, one libdtrace handle, deltas out on stdout.

    python -m dtagent.dtrace.worker --libdtrace libdtrace.so.1 --script scripts/d/runq.d ...

It compiles each script separately (a script that fails to compile or enable is
reported with libdtrace's message and left out; the rest run), starts tracing, then
every ``--interval`` seconds calls ``dtrace_work`` (status, drops, errors: the kernel's
deadman kills an enabling nobody polls; under the default ``switch`` buffer policy it
also snapshots the aggregations, usr/src/lib/libdtrace/common/dt_work.c) and walks
them with REMOVE semantics, so each walk is a delta. Records are JSON lines on stdout
in the format of docs/bundle-dtrace.md, each walk closed by a ``{"tick": N}`` line.
SIGTERM (or SIGINT) stops tracing the way dtrace(1M) does: ``dtrace_stop`` (END
clauses fire), ``dtrace_work`` (which forces a last snapshot once tracing has
stopped), a last walk, ``dtrace_close``.

A script whose enabling fails part way leaves the probes it had enabled running,
with their enabled probe ids (usr/src/uts/common/dtrace/dtrace.c,
``dtrace_enabling_match``). The worker then closes the handle and starts again
without that script, so no live probe of a failed script feeds an aggregation and
every later script's probe ids are what the worker counted.

Exit status: 0 stopped on request, 3 libdtrace failed while tracing (the supervisor
restarts the worker), 4 libdtrace could not be loaded or opened.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from dtagent.dtrace import libdtrace as ld
from dtagent.dtrace.buckets import Buckets
from dtagent.dtrace.records import (
    Drop,
    Histogram,
    KeyValue,
    Record,
    ScriptError,
    Status,
    Tick,
    Value,
    to_json,
)
from dtagent.dtrace.spec import (
    AggregationSpec,
    ScriptSpec,
    SpecError,
    load_script,
    merge_options,
    one_handle,
)

EXIT_STOPPED, EXIT_FAILED, EXIT_NO_LIBRARY = 0, 3, 4


@dataclass(frozen=True)
class _Target:
    script: ScriptSpec
    agg: AggregationSpec
    is_sum: bool
    buckets: Buckets | None


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
    ) -> None:
        self.lib_path = lib_path
        self.specs = list(specs)
        self.out = out
        self.err = err
        self.interval = interval
        self.stopping = False
        self.ticks = 0
        self._pending: list[Record] = []
        self._drops: dict[str, int] = {}
        self._errors: dict[str, tuple[int, str]] = {}
        self._programs: list[ld.Program] = []
        self._logged: set[str] = set()
        self._failed = list(failed)
        self._targets: dict[str, _Target] = {}
        for s in self.specs:
            for a in s.aggregations:
                b = a.buckets() if a.type == "histogram" else None
                self._targets[a.name] = _Target(s, a, False, b)
                if a.sum:
                    self._targets[a.sum] = _Target(s, a, True, None)

    # ------------------------------------------------------------------ output

    def log(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    def log_once(self, key: str, message: str) -> None:
        if key not in self._logged and len(self._logged) < 1000:
            self._logged.add(key)
            self.log(message)

    def emit(self, record: Record) -> None:
        self._pending.append(record)

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

    def _script_of_epid(self, epid: int) -> str:
        for p in self._programs:
            if p.first_epid <= epid < p.first_epid + p.matches:
                return p.name
        return "unknown"

    def _on_error(self, info: ld.RuntimeErrorInfo) -> None:
        script = self._script_of_epid(info.epid)
        count, _ = self._errors.get(script, (0, ""))
        self._errors[script] = (count + 1, info.message)

    def _on_output(self, text: str) -> None:
        self.log_once("output", f"D script output ignored (the agent reads aggregations): "
                      f"{text.strip()[:200]}")

    def _on_entry(self, entry: ld.AggEntry) -> None:
        target = self._targets.get(entry.name)
        if target is None:
            return  # not declared in any spec (a helper aggregation): removed, ignored
        spec, agg = target.script, target.agg
        where = f"{spec.name}: @{entry.name}"
        if len(entry.keys) != len(agg.keys):
            self.log_once(where, f"{where} has {len(entry.keys)} keys, the spec declares "
                          f"{len(agg.keys)}; ignored")
            return
        key: list[KeyValue] = []
        for pos, (field, k) in enumerate(zip(entry.keys, agg.keys, strict=True)):
            try:
                key.append(field.as_str() if k.kind == "string" else field.as_int())
            except ValueError as exc:
                self.log_once(where, f"{where}: key {pos} is declared {k.kind} but the "
                              f"script records {len(field.raw)} bytes ({exc}); ignored")
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
            self.emit(Value(spec.name, entry.name, tuple(key), value))
        else:
            buckets = self._buckets(target, entry, where)
            if buckets is None:
                return
            self.emit(Histogram(spec.name, entry.name, tuple(key), buckets))

    def _buckets(
        self, target: _Target, entry: ld.AggEntry, where: str
    ) -> tuple[tuple[int | None, int], ...] | None:
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
        return tuple((b.lower(i), n) for i, n in enumerate(counts) if n)

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
        excluded: set[str] = set()
        while True:
            try:
                handle = ld.Handle(ld.load_library(self.lib_path))
            except (OSError, ld.DTraceError) as exc:
                self.log(f"cannot use libdtrace {self.lib_path}: {exc}")
                for s in self.specs:
                    if s.name not in excluded:
                        self.emit(Status(s.name, "failed", str(exc)))
                self.flush(tick=False)
                return EXIT_NO_LIBRARY
            mark = len(self._pending)
            try:
                partly = self._enable(handle, excluded)
                if partly is None:
                    return self._trace(handle)
            finally:
                handle.close()
            # Probes of the failed script stay enabled on that handle: start again
            # on a new one without it (and report the others' status once, then).
            failure = self._pending[-1]
            self._pending[mark:] = [failure]
            excluded.add(partly)
            self._programs = []
            self.log(f"script {partly} failed part way through enabling; its probes "
                     f"stay enabled on that handle, so tracing starts again without it")

    def _enable(self, handle: ld.Handle, excluded: set[str]) -> str | None:
        """Compile and enable every script not ``excluded``: None, or the name of a
        script whose enabling failed (its probes may be partly enabled)."""
        for problem in _set_options(handle, self.specs):
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
        handle.handle_drop(self._on_drop)
        handle.handle_err(self._on_error)  # before go: dtrace_go enables the ERROR probe
        handle.handle_buffered(self._on_output)
        next_epid = 1
        for spec in self.specs:
            if spec.name in excluded:
                continue
            try:
                program = handle.compile(spec.name, spec.source, _cflags(handle, spec))
            except ld.DTraceError as exc:  # nothing enabled: the others go on
                self.log(f"script {spec.name} not enabled: {exc}")
                self.emit(Status(spec.name, "failed", str(exc)))
                continue
            try:
                handle.exec(program)
            except ld.DTraceError as exc:
                self.emit(Status(spec.name, "failed", f"enabling failed: {exc}"))
                return spec.name
            # The kernel gives the program's enabled probes consecutive ids
            # (dtrace_ecb_add: epid = state->dts_epid++), one per matched probe.
            program.first_epid = next_epid
            next_epid += program.matches
            self._programs.append(program)
            self.emit(Status(spec.name, "running"))
        return None

    def _trace(self, handle: ld.Handle) -> int:
        if not self._programs:
            self.log("no D script could be enabled; idling")
            self.flush(tick=False)
            while not self.stopping:  # heartbeats only, so the supervisor sees it alive
                time.sleep(self.interval)
                self.ticks += 1
                self.flush()
            return EXIT_STOPPED
        try:
            handle.go()
        except ld.DTraceError as exc:
            self.log(f"dtrace_go failed: {exc}")
            self._pending.clear()
            for p in self._programs:
                self.emit(Status(p.name, "failed", f"dtrace_go: {exc}"))
            self.flush(tick=False)
            return EXIT_FAILED
        self.flush(tick=False)
        deadline = time.monotonic()
        while not self.stopping:
            deadline += self.interval
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.1))
            if self.stopping:
                break
            deadline = max(deadline, time.monotonic() - self.interval)
            code = self._tick(handle)
            if code is not None:
                return code
        # As dtrace(1M) ends (usr/src/cmd/dtrace/dtrace.c): stop first (END clauses
        # fire), then dtrace_work, which forces a last snapshot once tracing has
        # stopped whatever aggrate says (dt_work.c), then the last walk. Nothing that
        # arrived after the previous walk is lost.
        try:
            handle.stop()
            if handle.work() == ld.DTRACE_WORKSTATUS_ERROR:
                raise handle.error()
            handle.walk(self._on_entry)
        except ld.DTraceError as exc:
            self.log(f"stopping: {exc}")
        self.ticks += 1
        self.flush()
        return EXIT_STOPPED

    def _tick(self, handle: ld.Handle) -> int | None:
        self.ticks += 1
        status = handle.work()
        if status == ld.DTRACE_WORKSTATUS_ERROR:
            exc = handle.error()
            self.log(f"dtrace_work failed: {exc}")
            self.flush()
            return EXIT_FAILED
        try:
            # dtrace_work took the snapshot (bufpolicy switch: the worker never sets
            # another, spec.KNOWN_OPTIONS); once tracing has stopped by itself it
            # was the last one, forced
            failures = handle.walk(self._on_entry)
        except ld.DTraceError as exc:
            self.log(f"aggregation walk failed: {exc}")
            self.flush()
            return EXIT_FAILED
        if failures:
            self.log_once("decode", f"{failures} aggregation entries could not be decoded")
        self.flush()
        if status == ld.DTRACE_WORKSTATUS_DONE:
            # dtrace_status saw exit() (DTRACE_STATUS_EXITED) or a filled buffer and
            # stopped tracing itself (dt_work.c); this walk held the last data
            self.log("tracing stopped by itself (exit() or a full buffer)")
            return EXIT_FAILED
        return None


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
    parser.add_argument("--interval", type=float, default=1.0)
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
    worker = Worker(args.libdtrace, specs, sys.stdout, sys.stderr, args.interval, failed)
    try:
        return worker.run()
    except BrokenPipeError:  # the agent is gone
        return EXIT_STOPPED


if __name__ == "__main__":
    raise SystemExit(main())

