"""The DTrace engine end to end through the libdtrace stand-in (tests/native).

The ctypes binding, the worker process, the supervisor and the accumulator run for
real; only libdtrace is replaced, by a C library built from the illumos LP64 layouts
that replays a scenario (aggregation records of every aggregating action, drops of
each kind, runtime errors, a compile failure, a worker that crashes, one that hangs).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from dtagent.dtrace import libdtrace as ld
from dtagent.dtrace.accumulator import Accumulator
from dtagent.dtrace.provider import DTraceMetrics
from dtagent.dtrace.records import to_json
from dtagent.dtrace.spec import load_script
from dtagent.dtrace.supervisor import Supervisor
from dtagent.metrics import MetricFamily
from dtagent.snapshot import HostSnapshot, Kstat, KstatSnapshot
from dtagent.sources.commands import NoCommands
from tests.helpers import REPO, per_key_objects, worker_records
from tests.native.dtrace_stub import Scenario, layouts, library

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"
SCRIPTS = [FIXTURES / "every.d", FIXTURES / "broken.d", FIXTURES / "other.d"]
SPECS = [load_script(p) for p in SCRIPTS]
EVERY = SPECS[0]

SETUP = """\
matches stub:every 5
matches stub:other 2
compile_fail stub:broken probe description fbt::no_such_function:entry does not match any probes
"""


@pytest.fixture(scope="module")
def lib_path() -> str:
    return str(library())


def test_ctypes_layouts_match_the_illumos_structs() -> None:
    table = layouts()
    assert table  # every struct the stand-in knows is checked
    for ctype, cls in ld.STRUCTURES.items():
        assert ctypes.sizeof(cls) == table[(ctype, "")][1], ctype
        for name, *_ in cls._fields_:
            field = getattr(cls, name)
            if name in ("dtagd_rec", "dtepd_rec"):  # C: recdesc[1]
                assert field.offset == table[(ctype, name)][0], (ctype, name)
                continue
            assert (field.offset, field.size) == table[(ctype, name)], (ctype, name)
    # LP64 layouts from the illumos sys/dtrace.h field lists
    assert ctypes.sizeof(ld.DTraceRecDesc) == 32
    assert ld.DTraceAggDesc.dtagd_rec.offset == 40
    assert ld.DTraceAggData.dtada_flags.offset == 92
    assert ctypes.sizeof(ld.DTraceErrData) == 56 and ctypes.sizeof(ld.DTraceDropData) == 40


def _scenario(tmp_path: Path, text: str) -> Scenario:
    return Scenario(tmp_path).write(text)


def test_binding_decodes_every_action_and_walks_are_deltas(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = _scenario(tmp_path, SETUP + """\
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0
rec stub:every bytes sum | z:-2 i:-9 | 4294967296 4294967296
rec stub:every minlat min | s:read | 7 -3 9
rec stub:every maxlat max | s:read | 7 -3 9
rec stub:every avglat avg | s:read | 10 20 33
rec stub:every qlat quantize | z:3 | 0 1 1000 -3
rec stub:every pct lquantize 0 100 10 | s:read | -5 3 55 200 4294967299
rec stub:every lat llquantize 10 3 9 10 | z:3 | 999 1000 1999 2000 99999999999
""")
    sc.apply(monkeypatch)
    lib = ld.load_library(lib_path)
    h = ld.Handle(lib)
    try:
        h.setopt("strsize", "64")
        with pytest.raises(ld.DTraceError, match="Invalid option name"):
            h.setopt("no_such_option", "1")
        with pytest.raises(ld.DTraceError, match="does not match any probes"):
            h.compile("broken", SPECS[1].source)
        prog = h.exec(h.compile("every", EVERY.source))
        assert prog.matches == 5
        h.go()
        assert h.work() == ld.DTRACE_WORKSTATUS_OKAY
        h.snapshot()
        seen: dict[str, ld.AggEntry] = {}
        h.walk(lambda e: seen.__setitem__(e.name, e))
        assert h.status() == ld.DTRACE_STATUS_OKAY
    finally:
        h.close()
    assert seen["calls"].function == "count" and seen["calls"].value == 3
    assert [k.as_int() for k in seen["calls"].keys[:1]] == [3]
    assert seen["calls"].keys[1].as_str() == "read" and len(seen["calls"].keys[1].raw) == 64
    assert seen["bytes"].value == 2**33  # 64-bit values, not truncated
    assert [k.as_int() for k in seen["bytes"].keys] == [-2, -9]
    assert seen["minlat"].value == -3 and seen["maxlat"].value == 9
    assert seen["avglat"].value == (3, 63)
    q = seen["qlat"]
    assert q.function == "quantize" and len(q.value) == 127
    assert isinstance(q.value, tuple)
    assert {i: n for i, n in enumerate(q.value) if n} == {61: 1, 63: 1, 64: 1, 73: 1}
    lq = seen["pct"]
    assert ld.lquantize_params(lq.arg) == (0, 10, 10)
    # the kernel truncates to int32: 2^32 + 3 lands with 3
    assert isinstance(lq.value, tuple)
    assert {i: n for i, n in enumerate(lq.value) if n} == {0: 1, 1: 2, 6: 1, 11: 1}
    ll = seen["lat"]
    assert ld.llquantize_params(ll.arg) == (10, 3, 9, 10) and len(ll.value) == 65
    assert isinstance(ll.value, tuple)
    assert {i: n for i, n in enumerate(ll.value) if n} == {0: 1, 1: 2, 2: 1, 64: 1}


def test_walk_remove_gives_deltas_next_keeps_totals(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = _scenario(tmp_path, SETUP + """\
tick 1
rec stub:every calls count | z:3 s:read | 0 0
tick 2
rec stub:every calls count | z:3 s:read | 0
""")
    sc.apply(monkeypatch)
    lib = ld.load_library(lib_path)
    lib.stub_entries.argtypes = [ctypes.c_void_p]
    values: list[int] = []
    for remove in (True, False):
        h = ld.Handle(lib)
        h.handle_drop(lambda d: None)
        h.setopt("aggrate", "1ns")  # snapshots closer together than the 1 s default
        h.exec(h.compile("every", EVERY.source))
        h.go()
        for _ in range(3):
            h.work()
            h.snapshot()
            h.walk(lambda e: values.append(int(e.value)), remove=remove)  # type: ignore[arg-type]
        assert lib.stub_entries(h.handle) == (0 if remove else 1)
        h.close()
    assert values == [2, 1, 2, 3, 3]  # REMOVE: deltas 2, 1, none; NEXT: totals 2, 3, 3


def test_drop_without_a_handler_aborts_like_libdtrace(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = _scenario(tmp_path, SETUP + "tick 1\ndrop 2 5\n")
    sc.apply(monkeypatch)
    h = ld.Handle(ld.load_library(lib_path))
    h.exec(h.compile("every", EVERY.source))
    h.go()
    assert h.work() == ld.DTRACE_WORKSTATUS_ERROR
    assert str(h.error()) == "Abort due to drop"
    h.close()


def test_open_failure_is_reported(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scenario(tmp_path, "open_fail 1\n").apply(monkeypatch)
    with pytest.raises(ld.DTraceError, match="dtrace_open failed: Operation not permitted"):
        ld.Handle(ld.load_library(lib_path))


def worker_argv(lib_path: str, scripts: list[Path], interval: float = 0.05) -> list[str]:
    argv = [sys.executable, "-m", "dtagent.dtrace.worker", "--libdtrace", lib_path,
            "--interval", str(interval)]
    for s in scripts:
        argv += ["--script", str(s)]
    return argv


def env_for(sc: Scenario) -> dict[str, str]:
    return dict(sc.env(), PYTHONPATH=str(REPO))


def read_until_tick(proc: subprocess.Popen[str], tick: int, timeout: float = 20) -> list[Any]:
    assert proc.stdout is not None
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        obj = json.loads(line)
        out += per_key_objects(obj)
        if obj.get("tick") == tick:
            return out
    raise AssertionError(f"no tick {tick}: {out}")


def run_worker(
    lib_path: str, scripts: list[Path], env: dict[str, str], tick: int
) -> tuple[list[Any], int, str]:
    """Run the worker until its ``tick``-th report, then SIGTERM it: (records, exit,
    stderr). The records are all it wrote, its last walk after the signal included: a
    tick that comes sooner than aggrate after the previous one (a loaded machine delays
    one tick and the next catches up) has its snapshot skipped, as libdtrace does, and
    those deltas arrive with a later walk, the last one at the latest."""
    proc = subprocess.Popen(worker_argv(lib_path, scripts), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        records = read_until_tick(proc, tick)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    return records + worker_records(rest.splitlines()), proc.returncode, err


def test_walks_every_walk_interval_carry_one_record_per_key_summing_every_snapshot(
    tmp_path: Path, lib_path: str
) -> None:
    """Every tick snapshots; a walk comes at a script's first tick and then every
    walk_interval: between walks libdtrace adds each snapshot into its key's entry, so a
    key that fires at every tick is one record per walk, and none of its fires is lost."""
    sc = _scenario(tmp_path, SETUP + """\
tick 1
loop 1
rec stub:every calls count | z:3 s:read | 0
loop 0
""")
    argv = [*worker_argv(lib_path, SCRIPTS[:1], interval=0.05), "--walk-interval", "0.25"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sc))
    assert proc.stdout is not None
    walks: dict[int, list[Any]] = {}  # tick -> the key's records the round it closes held
    held: list[Any] = []
    try:
        while (line := proc.stdout.readline()):
            obj = json.loads(line)
            if "tick" in obj:
                walks[obj["tick"]] = held
                held = []
                if obj["tick"] == 11:
                    break
            else:
                held += [r for r in per_key_objects(obj) if r.get("agg") == "calls"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    walked = {tick for tick, recs in walks.items() if recs}
    assert walked <= {1, 6, 11} and {6, 11} <= walked, walks
    assert all(len(recs) <= 1 for recs in walks.values()), walks
    last = [r for r in worker_records(rest.splitlines()) if r.get("agg") == "calls"]
    walked_total = sum(r["value"] for recs in [*walks.values(), last] for r in recs)
    # the stand-in's loop has fired the key once per dtrace_work up to the last snapshot
    # taken (the stop's, forced): every fire is in exactly one walk
    (handle,) = _traced_by(sc, "stub:every")
    assert walked_total == max(_snapped_at(_handles(sc)[handle])) >= 12, (walked_total, walks)


def test_a_walk_of_many_keys_comes_in_records_of_at_most_record_keys_keys(
    tmp_path: Path, lib_path: str
) -> None:
    """A walk's keys of one aggregation are split into records of RECORD_KEYS keys at
    most (the agent decodes a line whole), each key in exactly one of them."""
    from dtagent.dtrace.worker import RECORD_KEYS

    keys = 2 * RECORD_KEYS + 3
    recs = "".join(f"rec stub:every calls count | z:{z} s:read | 0\n" for z in range(keys))
    sc = _scenario(tmp_path, SETUP + "tick 1\n" + recs)
    argv = worker_argv(lib_path, SCRIPTS[:1], interval=0.05)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sc))
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        while (line := proc.stdout.readline()):
            obj = json.loads(line)
            if obj.get("tick") == 1:
                break
            if obj.get("agg") == "calls":
                lines.append(obj)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert [len(o["keys"]) for o in lines] == [RECORD_KEYS, RECORD_KEYS, 3]
    walked = [tuple(k) for o in lines for k in o["keys"]]
    assert sorted(walked) == sorted((z, "read") for z in range(keys))
    assert [v for o in lines for v in o["values"]] == [1] * keys


ALL_DROPS = "".join(f"drop {k} {k + 1}\n" for k in range(10))


def test_worker_streams_deltas_and_stops_cleanly(tmp_path: Path, lib_path: str) -> None:
    sc = _scenario(tmp_path, SETUP + f"""\
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0
rec stub:every lat llquantize 10 3 9 10 | z:3 | 999 1499 2999
rec stub:every lat_sum sum | z:3 | 1000 1500 3000
rec stub:every avglat avg | s:read | 10 20
rec stub:other samples count | z:0 | 0 0
{ALL_DROPS}
error stub:other 1 1 invalid address (0x0) in action #1
error stub:every 4 4 divide-by-zero in action #3
tick 2
rec stub:every calls count | z:3 s:read | 0
error stub:other 0 1 invalid address (0x8) in action #1
""")
    records, returncode, err = run_worker(lib_path, SCRIPTS, env_for(sc), 2)
    assert returncode == 0, err
    statuses = {r["script"]: r["status"] for r in records if "status" in r}
    assert statuses == {"every": "running", "broken": "failed", "other": "running"}
    failed = next(r for r in records if r.get("status") == "failed")
    assert "fbt::no_such_function:entry does not match any probes" in failed["message"]
    data = [r for r in records if "agg" in r]
    assert {"script": "every", "agg": "calls", "key": [3, "read"], "value": 3} in data
    assert {"script": "every", "agg": "calls", "key": [3, "read"], "value": 1} in data
    assert {"script": "every", "agg": "lat", "key": [3],
            "buckets": [[None, 1], [1000, 1], [2000, 1]]} in data
    assert {"script": "every", "agg": "avglat", "key": ["read"], "value": [2, 30]} in data
    assert {"script": "other", "agg": "samples", "key": [0], "value": 2} in data
    drops = {r["drop"]: r["count"] for r in records if "drop" in r}
    assert drops == {kind: k + 1 for k, kind in enumerate(ld.DROP_KINDS)}
    errors = [(r["script"], r["count"]) for r in records if "error" in r]
    # each script has its own handle and its own epids: attributed per script
    assert sorted(errors) == [("every", 1), ("other", 1), ("other", 1)]
    calls = sc.calls()
    assert calls.index("handle_err") < calls.index("go handlers=drop,err,buffered")
    assert calls[-1] == "close"
    per_handle: dict[str, list[str]] = {}
    for handle, call in sc.handle_calls():
        per_handle.setdefault(handle, []).append(call)
    traced = [c for c in per_handle.values() if "go handlers=drop,err,buffered" in c]
    assert len(traced) == 2  # every and other, one handle each; broken's was closed
    for own in traced:  # each stopped, then its last work and walk, then closed
        assert own[own.index("stop"):][-1] == "close" and "walk n=0" in own[own.index("stop"):]
    assert "script broken not enabled" in err


def _zones_snapshot(zones: dict[int, str]) -> HostSnapshot:
    kstats = [Kstat("zones", zid, name[:30], "zone_misc", data={"zonename": name})
              for zid, name in zones.items()]
    return HostSnapshot(kstats=KstatSnapshot(kstats), commands=NoCommands(), time=0.0,
                        illumos=True)


def _by_name(fams: list[MetricFamily]) -> dict[str, MetricFamily]:
    return {f.name: f for f in fams}


def _wait(cond: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_supervisor_restarts_crashed_and_hung_workers_counters_stay_monotonic(
    tmp_path: Path, lib_path: str
) -> None:
    # run 1 crashes at its 3rd poll, run 2 hangs at its 3rd, run 3 keeps going
    sc = _scenario(tmp_path, SETUP + """\
run 1
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0 0 0
rec stub:every lat llquantize 10 3 9 10 | z:3 | 1499 1499
rec stub:every lat_sum sum | z:3 | 1500 1500
drop 1 2
tick 3
crash
run 2
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0
rec stub:every lat llquantize 10 3 9 10 | z:3 | 999
rec stub:every lat_sum sum | z:3 | 1000
drop 1 1
error stub:every 0 1 invalid address (0x0) in action #2
tick 3
hang
run 3
tick 1
rec stub:every calls count | z:3 s:read | 0 0
rec stub:every lat llquantize 10 3 9 10 | z:3 | 99999
rec stub:every lat_sum sum | z:3 | 100000
tick 4
rec stub:every calls count | z:5 s:write | 0
""")
    sup = Supervisor(worker_argv(lib_path, SCRIPTS), hang_timeout=1.5, min_backoff=0.05,
                     max_backoff=0.2, kill_grace=0.5, env=env_for(sc))
    provider = DTraceMetrics(Accumulator(SPECS), sup)
    zones = {0: "global", 3: "web"}
    totals: list[float] = []
    restarts_seen: list[float] = []

    def poll() -> dict[str, MetricFamily]:
        fams = _by_name(provider.families(_zones_snapshot(zones)))
        calls = dict(fams["test_syscalls_total"].samples)
        totals.append(calls.get(("web", "read"), 0))
        restarts_seen.append(dict(fams["dtagent_dtrace_worker_restarts_total"].samples)[()])
        return fams

    sup.start()
    try:
        _wait(lambda: poll() and sup.restarts >= 2 and totals[-1] == 10, what="three runs")
        fams = poll()
        # counters only grow, across a crash and a hang
        assert totals == sorted(totals) and totals[-1] == 10
        assert restarts_seen == sorted(restarts_seen) and restarts_seen[-1] == 2
        hist = {k: (list(c), s, n) for k, c, s, n in
                fams["test_syscall_latency_seconds"].hist_samples}
        cum, total, count = hist[("web",)]
        assert count == 4 and cum[0] == 1 and cum[1] == 3  # le 1 us, 2 us
        assert total == pytest.approx((1500 * 2 + 1000 + 100000) * 1e-9)
        drops = dict(fams["dtagent_dtrace_drops_total"].samples)
        assert drops[("aggregation",)] == 3
        assert dict(fams["dtagent_dtrace_errors_total"].samples)[("every",)] == 1
        enabled = dict(fams["dtagent_dtrace_script_enabled"].samples)
        assert enabled == {("every",): 1, ("broken",): 0, ("other",): 1}
        _wait(lambda: dict(_by_name(provider.families(_zones_snapshot(zones)))[
            "dtagent_dtrace_worker_up"].samples)[()] == 1, what="worker up")
        # zone 5 is not running here: its record is refused, not guessed
        _wait(lambda: bool(list(provider.families(_zones_snapshot(zones))))
              and provider.accumulator.rejected.get("unknown_zone", 0) >= 1,
              what="zone 5 record")
        # zone id 3 now belongs to another zone: new series, the old zone's are gone
        zones = {0: "global", 3: "db"}
        fams = _by_name(provider.families(_zones_snapshot(zones)))
        assert ("web", "read") not in dict(fams["test_syscalls_total"].samples)
        assert fams["test_syscall_latency_seconds"].hist_samples == []
    finally:
        sup.stop()
    calls = sc.calls()
    assert calls.count("crash") == 1 and calls.count("hang") == 1
    # three worker processes (runs), each with a handle per script it runs
    assert {c for c in calls if c.startswith("opened run=")} == {f"opened run={n}"
                                                                 for n in (1, 2, 3)}
    assert calls[-1] == "close" and "stop" in calls[-5:]  # the last worker stopped cleanly
    assert sup.health().up is False


def test_worker_without_libdtrace_exits_4(tmp_path: Path) -> None:
    res = subprocess.run(
        worker_argv(str(tmp_path / "nope.so"), SCRIPTS[:1]), capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=30, check=False,
    )
    assert res.returncode == 4
    assert "cannot use libdtrace" in res.stderr
    assert json.loads(res.stdout.splitlines()[0])["status"] == "failed"


@pytest.mark.parametrize("option, value", [
    ("--interval", "0"), ("--interval", "nan"), ("--walk-interval", "-1"),
    ("--walk-interval", "inf"), ("--interval", "soon"),
])
def test_worker_refuses_a_bad_interval_before_loading_anything(
    tmp_path: Path, option: str, value: str
) -> None:
    """A bad interval is a usage error naming the option, not a traceback later (a
    NaN passed the old "<= 0" check)."""
    argv = [*worker_argv(str(tmp_path / "nope.so"), SCRIPTS[:1]), option, value]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 2
    assert f"argument {option}: expected seconds" in res.stderr and repr(value) in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_histograms_exact_through_the_whole_pipe(tmp_path: Path, lib_path: str) -> None:
    """Values recorded by the stand-in's kernel bucket functions come out as exact
    cumulative le counts, _count and _sum."""
    rng = random.Random(4)
    lat = EVERY.aggregation("lat")
    qlat = EVERY.aggregation("qlat")
    pct = EVERY.aggregation("pct")
    assert lat and qlat and pct
    edges = [round(le / lat.scale) + d for le in lat.le for d in (-1, 0, 1)]
    lat_values = edges + [rng.randint(0, 10**7) for _ in range(300)]
    q_values = [round(le / qlat.scale) + d for le in qlat.le for d in (-1, 0, 1)] + [
        rng.randint(-10, 2**21) for _ in range(300)]
    p_values = [rng.randint(-20, 120) for _ in range(300)]

    def rec(agg: str, func: str, params: str, key: str, values: list[int]) -> str:
        return f"rec stub:every {agg} {func} {params} | {key} | " + " ".join(map(str, values))

    sc = _scenario(tmp_path, SETUP + "tick 1\n" + "\n".join([
        rec("lat", "llquantize", "10 3 9 10", "z:3", [v - lat.offset for v in lat_values]),
        rec("lat_sum", "sum", "", "z:3", lat_values),
        rec("qlat", "quantize", "", "z:3", q_values),
        rec("qlat_sum", "sum", "", "z:3", q_values),
        rec("pct", "lquantize", "0 100 10", "s:read", p_values),
        rec("pct_sum", "sum", "", "s:read", p_values),
    ]) + "\n")
    records, _, _ = run_worker(lib_path, SCRIPTS[:1], env_for(sc), 1)
    acc = Accumulator([EVERY])
    acc.apply_json(records, {3: "web"})
    fams = _by_name(acc.families())
    for agg, values in ((lat, lat_values), (qlat, q_values), (pct, p_values)):
        ((_, cum, total, count),) = fams[agg.metric].hist_samples
        bounds = [round(le / agg.scale) for le in agg.le]
        assert list(cum) == [sum(1 for v in values if v <= b) for b in bounds], agg.name
        assert count == len(values)
        assert total == pytest.approx(sum(values) * agg.scale)


def test_live_agent_runs_the_supervised_worker(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime.build on an 'illumos' host (stand-ins for libkstat and libdtrace): the
    agent starts the worker, serves its deltas with zone names, and stops it cleanly."""
    from dtagent.config import load
    from dtagent.exposition import render
    from dtagent.runtime import build
    from tests.native import build_shared
    from tests.native.kstat_stub import load_kstats, open_stub

    sc = _scenario(tmp_path, SETUP + "tick 1\nrec stub:every calls count | z:3 s:read | 0 0 0 0\n")
    sc.apply(monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    klib = open_stub()
    klib.stub_reset()
    load_kstats(klib, [Kstat("zones", zid, name, "zone_misc", data={"zonename": name})
                       for zid, name in {0: "global", 3: "web"}.items()])
    cfg = tmp_path / "live.toml"
    cfg.write_text(
        '[sources]\nplatform = "illumos"\n'
        f"libkstat = {str(build_shared('libkstat_stub.c'))!r}\n"
        f"[dtrace]\nlibdtrace = {lib_path!r}\nscript_dirs = [{str(FIXTURES)!r}]\n"
        "hang_timeout = 5.0\n"
    )
    rt = build(load(cfg))
    try:
        assert rt.agent.dtrace is not None
        rt.agent.reuse_within = 0.0
        want = 'test_syscalls_total{zonename="web",syscall="read"} 4'
        _wait(lambda: want in render(rt.agent.collect()).decode(), what="live deltas")
        text = render(rt.agent.collect()).decode()
        assert "dtagent_dtrace_worker_up 1" in text
        assert 'dtagent_dtrace_script_enabled{script="broken"} 0' in text
    finally:
        rt.close()
        klib.stub_reset()
    assert sc.calls()[-1] == "close"


def test_worker_with_nothing_to_trace_keeps_reporting(tmp_path: Path, lib_path: str) -> None:
    sc = _scenario(tmp_path, "compile_fail stub:every syntax error near line 3\n")
    records, returncode, _ = run_worker(lib_path, SCRIPTS[:1], env_for(sc), 2)
    assert returncode == 0
    assert records[0] == {"script": "every", "status": "failed",
                          "message": "syntax error near line 3"}
    assert "go handlers=drop,err,buffered" not in sc.calls()


def test_supervisor_backs_off_exponentially(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
    sup = Supervisor(argv, min_backoff=0.1, max_backoff=0.4, hang_timeout=5)
    started = time.monotonic()
    sup.start()
    try:
        _wait(lambda: sup.restarts >= 5, what="five restarts")
        elapsed = time.monotonic() - started
    finally:
        sup.stop()
    # waits 0.1, 0.2, 0.4, 0.4 (capped) before the 5th restart is counted
    assert elapsed >= 1.1
    assert sup.health().up is False and sup.health().restarts >= 5


def test_a_worker_that_polls_too_rarely_is_bricked_and_restarts_the_handle(
    tmp_path: Path, lib_path: str
) -> None:
    """The kernel deadman kills an enabling nobody polls; the worker reports it and
    starts the script again on a new handle (polling every second keeps it alive)."""
    sc = _scenario(tmp_path, SETUP)
    env = dict(env_for(sc), DTRACE_STUB_DEADMAN="0.2")
    proc = subprocess.Popen(worker_argv(lib_path, SCRIPTS[:1], interval=0.5),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        records = read_until_tick(proc, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "dtrace_work failed: Abort due to systemic unresponsiveness" in err
    assert ("every", "failed") in [(r["script"], r["status"]) for r in records
                                   if "status" in r]
    assert len(_traced_by(sc, "stub:every")) >= 2
    proc = subprocess.Popen(worker_argv(lib_path, SCRIPTS[:1], interval=0.05),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        records = read_until_tick(proc, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not [r for r in records if r.get("status") == "failed" and r["script"] == "every"]


def test_supervisor_waits_longest_when_libdtrace_is_unusable(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit(4)"]
    sup = Supervisor(argv, min_backoff=0.05, max_backoff=0.6, hang_timeout=5)
    with structlog.testing.capture_logs() as logs:
        sup.start()
        try:
            _wait(lambda: sup.restarts >= 2, what="two restarts")
        finally:
            sup.stop()
    backoffs = [e["backoff_seconds"] for e in logs if e["event"] == "DTrace worker restarting"]
    assert len(backoffs) >= 2 and set(backoffs) == {0.6}  # not 0.05, 0.1, 0.2 ...


def _statuses(tmp_path: Path, lib_path: str, scenario: str) -> dict[str, Any]:
    tmp_path.mkdir()
    sc = _scenario(tmp_path, scenario + "tick 1\n")
    records, _, _ = run_worker(lib_path, [FIXTURES / "optional.d", *SCRIPTS[1:]], env_for(sc), 1)
    return {r["script"]: r for r in records if "status" in r}


def test_required_probes_decide_and_optional_ones_may_be_missing(
    tmp_path: Path, lib_path: str
) -> None:
    """A script's listed probes must exist; its other clauses compile with zdefs."""
    missing_optional = _statuses(tmp_path / "a", lib_path,
                                 SETUP + "no_probe fbt::optional_fn:entry\n")
    assert missing_optional["optional"]["status"] == "running"
    # a script that lists no required probes needs every probe it names
    assert missing_optional["broken"]["status"] == "failed"

    missing_required = _statuses(tmp_path / "b", lib_path,
                                 SETUP + "no_probe fbt::required_fn:entry\n")
    assert missing_required["optional"]["status"] == "failed"
    assert ("probe description fbt::required_fn:entry does not match any probes"
            in missing_required["optional"]["message"])
    assert missing_required["other"]["status"] == "running"


def test_capture_records_the_live_deltas_and_replays_them(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dtagent capture on an 'illumos' host puts each frame's DTrace deltas in the
    bundle; replaying it gives the histograms and counters the live agent showed."""
    from dtagent.bundle import read_bundle
    from dtagent.capture import capture
    from dtagent.config import load
    from dtagent.exposition import render
    from dtagent.runtime import build
    from tests.native import build_shared
    from tests.native.kstat_stub import load_kstats, open_stub

    sc = _scenario(tmp_path, SETUP + """\
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0 0
rec stub:every lat llquantize 10 3 9 10 | z:3 | 999 1499
rec stub:every lat_sum sum | z:3 | 1000 1500
tick 2
rec stub:every calls count | z:3 s:read | 0
""")
    sc.apply(monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    klib = open_stub()
    klib.stub_reset()
    load_kstats(klib, [Kstat("zones", zid, name, "zone_misc", data={"zonename": name})
                       for zid, name in {0: "global", 3: "web"}.items()])
    common = f"[dtrace]\nscript_dirs = [{str(FIXTURES)!r}]\n"
    live_cfg = tmp_path / "live.toml"
    live_cfg.write_text(
        '[sources]\nplatform = "illumos"\n'
        f"libkstat = {str(build_shared('libkstat_stub.c'))!r}\n"
        + common + f"libdtrace = {lib_path!r}\n"
    )
    bundle = tmp_path / "host.bundle"
    rt = build(load(live_cfg))
    try:
        want = 'test_syscalls_total{zonename="web",syscall="read"} 5'
        _wait(lambda: want in render(rt.agent.collect()).decode(), what="both ticks")
        live = render(rt.agent.collect()).decode()
        # a fresh runtime, so the bundle holds every delta from the first frame on
        rt.close()
        sc.apply(monkeypatch)
        rt = build(load(live_cfg))
        # frames until the agent has taken both ticks' deltas (however long the worker
        # takes to start on a loaded machine), not a fixed number of seconds of them
        dtrace = rt.agent.dtrace
        assert isinstance(dtrace, DTraceMetrics)
        both = threading.Event()
        rt.agent.observe(
            lambda snap: both.set() if want in render(dtrace.accumulator.families()).decode()
            else None)
        frames_written = capture(rt, str(bundle), interval=0.2, count=600, stop=both)
        assert both.is_set(), f"{frames_written} frames and the deltas were not all taken"
    finally:
        rt.close()
        klib.stub_reset()
    frames = read_bundle(bundle).frames
    aggs = [r for f in frames for r in f.dtrace if "agg" in r]
    # the bundle keeps the worker's records as they came: one per aggregation and walk
    assert {"script": "every", "agg": "calls", "keys": [[3, "read"]], "values": [4]} in aggs
    replay_cfg = tmp_path / "replay.toml"
    replay_cfg.write_text(f'[sources]\nreplay = {str(bundle)!r}\n' + common)
    replayed = build(load(replay_cfg), replay_frame=-1)
    try:
        text = render(replayed.agent.collect()).decode()
    finally:
        replayed.close()
    for line in live.splitlines():
        if line.startswith(("test_syscalls_total", "test_syscall_latency_seconds")):
            assert line in text, line


def test_sigterm_right_after_a_walk_still_reports_the_last_deltas(
    tmp_path: Path, lib_path: str
) -> None:
    """The last walk on SIGTERM comes sooner than aggrate after the previous one;
    libdtrace (and the stand-in) takes that snapshot anyway because tracing has stopped
    (dt_work.c clears dt_lastagg), so nothing waits for a tick that never comes."""
    sc = _scenario(tmp_path, SETUP + """\
tick 1
rec stub:every calls count | z:3 s:read | 0
tick 2
rec stub:every calls count | z:3 s:read | 0 0
""")
    proc = subprocess.Popen(worker_argv(lib_path, SCRIPTS[:1], interval=2.0),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sc))
    try:
        first = read_until_tick(proc, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    values = [r["value"] for r in first if r.get("agg") == "calls"]
    values += [r["value"] for r in worker_records(rest.splitlines())
               if r.get("agg") == "calls"]
    assert values == [1, 2]
    calls = sc.calls()
    last = calls[calls.index("stop"):]
    assert last[2] == "work snap" and "work snap skipped (aggrate)" not in last


def test_a_full_queue_drops_whole_walks_never_half_of_one() -> None:
    """Deltas nobody takes are capped; what goes is the oldest walks, whole, so a
    histogram's records never lose their parallel sum (or the reverse)."""
    import io

    def walk(n: int) -> list[bytes]:
        recs = [{"script": "every", "agg": "lat", "key": [3], "buckets": [[1000, n]]},
                {"script": "every", "agg": "lat_sum", "key": [3], "value": 1500 * n}]
        return [json.dumps(r).encode() + b"\n" for r in recs] + [b'{"tick": %d}\n' % n]

    # room for two walks' records (the ticks are not queued): the third pushes one out
    size = sum(len(line) for line in walk(2)[:2])
    sup = Supervisor(["unused"], pending_bytes=2 * size + 1)
    sup._read_stdout(io.BytesIO(b"".join(walk(1) + walk(2) + walk(3))))
    [(records, zones)] = sup.take()
    assert zones == {}
    # 6 records over the cap: walk 1 went whole, walks 2 and 3 stay whole
    assert [to_json(r).get("buckets", to_json(r).get("value")) for r in records] == [
        [[1000, 2]], 3000, [[1000, 3]], 4500]
    assert sup.health().lost == 2
    assert list(sup.take()) == []


# --------------------------------------------- libdtrace's rules, and the worker keeping them


def test_stop_then_work_then_walk_keeps_what_came_after_the_last_walk(
    tmp_path: Path, lib_path: str
) -> None:
    """dtrace(1M) stops, then calls dtrace_work (a last, forced snapshot), then walks:
    what END clauses record and what fired since the last walk are not lost."""
    sc = _scenario(tmp_path, SETUP + """\
tick 1
rec stub:every calls count | z:3 s:read | 0
end
rec stub:every calls count | z:3 s:read | 0 0 0 0
""")
    proc = subprocess.Popen(worker_argv(lib_path, SCRIPTS[:1]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(sc))
    try:
        first = read_until_tick(proc, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records = first + worker_records(rest.splitlines())
    assert [r["value"] for r in records if r.get("agg") == "calls"] == [1, 4]
    calls = sc.calls()
    tail = calls[calls.index("stop"):]
    assert tail[1].startswith("work ") and tail[2] == "work snap" and tail[3] == "walk n=1"
    after_go = calls[calls.index("go handlers=drop,err,buffered"):]
    assert not any(c.startswith("setopt") for c in after_go)


def test_a_partly_failed_enable_closes_that_scripts_handle_only(
    tmp_path: Path, lib_path: str
) -> None:
    """An enabling that fails part way keeps its enabled probes and their ids
    (dtrace.c dtrace_enabling_match): they belong to that script's own handle, which the
    worker closes, so its probes feed nothing and the other scripts' handles go on."""
    sc = _scenario(tmp_path, SETUP + """\
enable_fail stub:every 3 28
tick 1
rec stub:every calls count | z:3 s:read | 0 0 0
rec stub:other samples count | z:0 | 0 0
error stub:other 0 1 invalid address (0x0) in action #1
""")
    records, returncode, err = run_worker(lib_path, SCRIPTS, env_for(sc), 1)
    assert returncode == 0, err
    statuses = [(r["script"], r["status"]) for r in records if "status" in r]
    assert sorted(statuses) == [("broken", "failed"), ("every", "failed"), ("other", "running")]
    # none of every's (still enabled) probes feed it; other's error is other's
    assert [r["script"] for r in records if "agg" in r] == ["other"]
    assert [(r["script"], r["count"]) for r in records if "error" in r] == [("other", 1)]
    every = next(r for r in records if r.get("script") == "every" and "status" in r)
    assert every["message"] == "enabling failed: No space left on device"
    per_handle: dict[str, list[str]] = {}
    for handle, call in sc.handle_calls():
        per_handle.setdefault(handle, []).append(call)
    failed = next(c for c in per_handle.values()
                  if any(x.startswith("exec") and "failed after 3 probes" in x for x in c))
    assert failed[-1] == "close" and not any(x.startswith("go") for x in failed)
    other = [c for c in per_handle.values() if any(x.startswith("go") for x in c)]
    assert len(other) == 1 and other[0].count("close") == 1 and other[0][-1] == "close"
    assert "its handle is closed" in err


def _script(
    d: Path, name: str, probe: str = "profile-97", helper: str = "", comment: str = ""
) -> Path:
    """A script (and its spec) counting firings per zone in ``@NAME_n``; ``helper``, when
    given, also goes to an undeclared ``@seen``; ``comment`` changes the text alone."""
    seen = f"\t@seen = {helper};\n" if helper else ""
    (d / f"{name}.d").write_text(
        f"/* stand-in selector: stub:{name} {comment}*/\n{probe}\n{{\n"
        f"\t@{name}_n[curpsinfo->pr_zoneid] = count();\n{seen}}}\n")
    provider = probe.split(":")[0].split("-")[0]  # profile-97 is the profile provider's
    (d / f"{name}.toml").write_text(f"""\
description = "test: {name}"
providers = ["{provider}"]
[[aggregation]]
name = "{name}_n"
function = "count"
metric = "test_{name}_total"
type = "counter"
help = "Firings."
[[aggregation.keys]]
kind = "zoneid"
""")
    return d / f"{name}.d"


def test_aggregation_names_are_per_handle_so_a_clash_is_refused_naming_both(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scripts with the same undeclared helper aggregation: on illumos the second
    fails to compile ("aggregation redefined") or, with the same function, merges
    silently with the first (dt_open.c keeps one dt_aggs per handle)."""
    alpha = _script(tmp_path, "alpha", "syscall:::entry", "count()")
    beta = _script(tmp_path, "beta", "profile-97", "sum(1)")
    sc = _scenario(tmp_path, "")
    sc.apply(monkeypatch)
    h = ld.Handle(ld.load_library(lib_path))
    try:
        h.compile("alpha", alpha.read_text())
        with pytest.raises(ld.DTraceError, match=r"aggregation redefined: @seen"):
            h.compile("beta", beta.read_text())
    finally:
        h.close()
    gamma = _script(tmp_path, "gamma", "profile-97", "count()")  # the same function
    records, returncode, err = run_worker(lib_path, [alpha, gamma], env_for(sc), 1)
    assert returncode == 0, err
    statuses = {r["script"]: (r["status"], r.get("message", "")) for r in records
                if "status" in r}
    assert statuses["alpha"] == ("running", "")
    status, message = statuses["gamma"]
    assert status == "failed"
    assert "@seen is also used by script alpha" in message and "gamma.d" in message


def test_options_follow_dt_options_c(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only dynamic options after dtrace_go; bad values refused; a bare rate is ns."""
    sc = _scenario(tmp_path, SETUP + "tick 1\nrec stub:every calls count | z:3 s:read | 0\n"
                   "tick 2\nrec stub:every calls count | z:3 s:read | 0\n")
    sc.apply(monkeypatch)
    h = ld.Handle(ld.load_library(lib_path))
    try:
        for name, value in (("bufsize", "lots"), ("aggrate", "1 fortnight"),
                            ("bufpolicy", "never"), ("nspec", "-1")):
            with pytest.raises(ld.DTraceError, match="Invalid value for specified option"):
                h.setopt(name, value)
        h.setopt("bufsize", "4m")
        h.setopt("aggrate", "5")  # 5 ns, not 5 s: no snapshot below is skipped
        h.exec(h.compile("every", EVERY.source))
        h.go()
        with pytest.raises(ld.DTraceError, match="Operation illegal when tracing is active"):
            h.setopt("bufsize", "8m")
        with pytest.raises(ld.DTraceError, match="Operation illegal when tracing is active"):
            h.setopt("dynvarsize", "8m")
        h.setopt("switchrate", "10hz")  # dynamic: allowed
        values: list[int] = []
        for _ in range(2):
            time.sleep(0.01)
            h.work()
            h.walk(lambda e: values.append(int(e.value)))  # type: ignore[arg-type]
        assert values == [1, 1]
        h.setopt("aggrate", "1s")
        h.work()
        assert "work snap skipped (aggrate)" in sc.calls()
    finally:
        h.close()


def _run_for(lib_path: str, scripts: list[Path], env: dict[str, str],
             tick: int) -> tuple[list[Any], str]:
    """Run the worker until its ``tick``-th report, then SIGTERM it (it must exit 0):
    the records of every tick, one list per tick, and its stderr."""
    records, returncode, err = run_worker(lib_path, scripts, env, tick)
    assert returncode == 0, err
    ticks: list[list[Any]] = [[]]
    for r in records:
        if "tick" in r:
            ticks.append([])
        else:
            ticks[-1].append(r)
    return ticks[:-1], err  # ticks[i]: walk i + 1 (and, in the first, the statuses)


def _handles(sc: Scenario) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for handle, call in sc.handle_calls():
        out.setdefault(handle, []).append(call)
    return out


MATCHES = {"stub:every": 5, "stub:other": 2}  # SETUP's probe counts tell them apart


def _traced_by(sc: Scenario, selector: str) -> list[str]:
    """The handles, in order, that enabled the program of ``selector`` and went."""
    mark = f" matches={MATCHES[selector]} "
    return [h for h, calls in _handles(sc).items()
            if any(c.startswith("exec") and mark in c for c in calls)
            and "go handlers=drop,err,buffered" in calls]


def _snapped_at(calls: list[str]) -> list[int]:
    """The stand-in's ticks whose dtrace_work took a snapshot (``work N`` then ``work
    snap``, not ``work snap skipped (aggrate)``): a looping record has fired once per
    tick up to the last of them."""
    return [int(c.split()[1]) for c, after in itertools.pairwise(calls)
            if c.startswith("work ") and c[5:].isdigit() and after == "work snap"]


STEADY = """\
matches stub:every 5
matches stub:other 2
loop 1
tick 1
rec stub:every calls count | z:3 s:read | 0
rec stub:other samples count | z:0 | 0
loop 0
"""


def test_an_exit_restarts_that_scripts_handle_only(tmp_path: Path, lib_path: str) -> None:
    """dtrace_status returns EXITED after exit() and stops tracing itself; dtrace_work
    then forces a last snapshot and says DONE (dt_work.c): the worker walks it (END's
    data included), reports the script failed, and starts it again on a new handle;
    the other script's handle is never touched and its counts go on every tick."""
    sc = _scenario(tmp_path, STEADY + """\
tick 3
exit stub:every
end
rec stub:every calls count | z:3 s:read | 0 0 0 0 0 0 0 0 0
""")
    ticks, err = _run_for(lib_path, SCRIPTS[:1] + SCRIPTS[2:], env_for(sc), 30)
    other = [sum(r["value"] for r in t if r.get("agg") == "samples") for t in ticks]
    assert other == [1] * len(other), other  # never a gap, never a double
    # the first walks (the Nth is ticks[N-1]); every's 3rd ends with exit()
    every = [sum(r["value"] for r in t if r.get("agg") == "calls") for t in ticks]
    assert every[:2] == [1, 1] and 10 in every, every  # END's 9 walked with the tick's 1
    restarted = every.index(10) + 1
    assert sum(every[restarted:]) >= 5, every  # the new handle counts on
    statuses = [(r["script"], r["status"]) for t in ticks for r in t if "status" in r]
    # every new handle replays the scenario: exit() again at its 3rd poll, restarted
    assert statuses[statuses.index(("every", "failed")) + 1] == ("every", "running")
    assert [st for st in statuses if st[0] == "other"] == [("other", "running")]
    assert "script every: tracing stopped by itself" in err
    assert len(_traced_by(sc, "stub:other")) == 1
    assert len(_traced_by(sc, "stub:every")) >= 2
    first = _handles(sc)[_traced_by(sc, "stub:every")[0]]
    assert "exited" in first and first[-1] == "close"


def test_a_failing_dtrace_work_restarts_that_scripts_handle_only(
    tmp_path: Path, lib_path: str
) -> None:
    """The kernel's deadman kills one consumer state (dtrace.c dtrace_state_deadman is
    per state; libdtrace's dt_handle_status then fails with EDT_BRICKED): that script's
    handle is closed and opened again after a backoff, the others keep their handles
    and their aggregations; the worker process never exits."""
    sc = _scenario(tmp_path, STEADY + """\
tick 4
bricked stub:every
""")
    ticks, err = _run_for(lib_path, SCRIPTS[:1] + SCRIPTS[2:], env_for(sc), 40)
    other = [sum(r["value"] for r in t if r.get("agg") == "samples") for t in ticks]
    assert other == [1] * len(other), other
    every = [sum(r["value"] for r in t if r.get("agg") == "calls") for t in ticks]
    assert every[:3] == [1, 1, 1] and every[3] == 0, every  # lost with its state
    assert sum(every[4:]) >= 5, every  # restarted, counting again
    failed = [r for t in ticks for r in t if r.get("status") == "failed"]
    assert failed and all(r["script"] == "every" for r in failed)
    assert "Abort due to systemic unresponsiveness" in failed[0]["message"]
    assert "dtrace_work failed: Abort due to systemic unresponsiveness (script every)" in err
    assert "restarts on a new handle" in err
    assert len(_traced_by(sc, "stub:other")) == 1
    # each new handle of every is bricked at its own 4th poll: restarted each time,
    # after 1, 2, 4 ... intervals
    assert len(_traced_by(sc, "stub:every")) >= 3


def test_a_failing_dtrace_work_still_walks_what_its_snapshots_hold(
    tmp_path: Path, lib_path: str
) -> None:
    """With walks every 20 ticks, a handle bricked at its 4th poll has snapshots of
    ticks 2 and 3 not walked yet: they are in libdtrace's user-space hash, which a walk
    reads without the kernel (dt_aggregate.c dtrace_aggregate_walk), so they are walked
    before the handle is closed and nothing that was snapped is lost."""
    sc = _scenario(tmp_path, STEADY + """\
tick 4
bricked stub:every
""")
    argv = [*worker_argv(lib_path, SCRIPTS[:1], interval=0.05), "--walk-interval", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sc))
    assert proc.stdout is not None
    before_failure: list[Any] = []
    try:
        while (line := proc.stdout.readline()):
            records = per_key_objects(json.loads(line))
            if any(r.get("status") == "failed" for r in records):
                break
            before_failure += [r for r in records if r.get("agg") == "calls"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    first = _handles(sc)[_traced_by(sc, "stub:every")[0]]
    snapped = _snapped_at(first)
    # snapshots at ticks 1-3 (one of 2 and 3 may be skipped by aggrate on a busy
    # machine; its fires then come with the other): tick 1's walk, then the rest
    assert "bricked" in first and max(snapped) >= 2, first
    assert len(before_failure) == 2, before_failure
    assert sum(r["value"] for r in before_failure) == max(snapped), before_failure


def test_output_goes_to_the_buffered_handler(
    tmp_path: Path, lib_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """printf() output in the principal buffer needs a buffered handler when
    dtrace_work has no FILE (dt_printf.c); the worker registers one and logs once."""
    text = SETUP + "tick 1\noutput stub:every hello from D\ntick 2\noutput stub:every again\n"
    sc = _scenario(tmp_path, text)
    sc.apply(monkeypatch)
    h = ld.Handle(ld.load_library(lib_path))
    try:
        h.exec(h.compile("every", EVERY.source))
        h.go()
        assert h.work() == ld.DTRACE_WORKSTATUS_ERROR
        assert str(h.error()) == "Attempt to buffer output without handler"
    finally:
        h.close()
    _records, returncode, err = run_worker(lib_path, SCRIPTS[:1], env_for(sc), 2)
    assert returncode == 0, err
    assert err.count("D script output ignored") == 1 and "hello from D" in err


def test_a_reload_restarts_only_the_scripts_that_changed(tmp_path: Path, lib_path: str) -> None:
    """The agent tells the running worker its new scripts (a control line on stdin):
    alpha, unchanged, keeps its handle and its counts go on every tick; beta, changed,
    restarts on a new handle; gamma, removed, is stopped with its last walk (its END
    data kept) and closed; a reload that changes nothing touches no handle."""
    from dtagent.dtrace.provider import worker_scripts

    d = tmp_path / "scripts"
    d.mkdir()
    paths = [_script(d, n) for n in ("alpha", "beta", "gamma")]
    lines = ["run *"]
    for t in range(1, 2000):
        lines += [f"tick {t}"] + [f"rec stub:{n} {n}_n count | z:0 | 0"
                                  for n in ("alpha", "beta", "gamma")]
    lines += ["end", "rec stub:gamma gamma_n count | z:0 | 0 0 0 0 0 0 0"]
    sc = _scenario(tmp_path, "\n".join(lines) + "\n")

    def control(scripts: list[Path]) -> None:
        specs = [load_script(p) for p in scripts]
        line = json.dumps({"scripts": [{"path": p, "digest": g}
                                       for p, g in worker_scripts(specs)]})
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def handles() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for handle, call in sc.handle_calls():
            out.setdefault(handle, []).append(call)
        return out

    proc = subprocess.Popen(worker_argv(lib_path, paths), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sc))
    try:
        records = read_until_tick(proc, 5)
        before = len(sc.calls())
        control(paths)  # nothing changed
        records += read_until_tick(proc, 10)
        assert not [c for c in sc.calls()[before:]
                    if c.startswith(("open", "close", "stop", "compile", "exec", "go"))]
        at_reload = len(records)
        _script(d, "beta", comment="changed ")
        control(paths[:2])  # beta changed, gamma removed
        records += read_until_tick(proc, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    records += worker_records(rest.splitlines())

    # alpha: one count on every tick, before, across and after the reload
    ticks: list[list[Any]] = [[]]
    for r in records:
        if "tick" in r:
            ticks.append([])
        else:
            ticks[-1].append(r)
    alpha = [sum(r["value"] for r in t if r.get("script") == "alpha") for t in ticks[1:-1]]
    assert len(alpha) >= 19 and alpha[1:] == [1] * (len(alpha) - 1), alpha
    after = records[at_reload:]
    gamma_after = [r["value"] for r in after if r.get("script") == "gamma" and "agg" in r]
    assert gamma_after and max(gamma_after) >= 7, "gamma's END data was walked"
    assert ("beta", "running") in [(r["script"], r["status"]) for r in after if "status" in r]
    assert not any(r.get("script") == "gamma" for r in after[len(after) // 2:])

    by_handle = handles()
    opened = [h for h, calls in by_handle.items() if any(c.startswith("go") for c in calls)]
    assert len(opened) == 4  # alpha, beta, gamma, then the new beta
    alpha_h, beta_h, gamma_h, new_beta_h = opened
    # alpha's handle: closed once, at the very end, after its final stop, work, walk
    assert by_handle[alpha_h].count("close") == 1
    alpha_stop = by_handle[alpha_h].index("stop")
    assert by_handle[alpha_h][alpha_stop + 1].startswith("work")
    assert all(c.startswith(("work", "walk")) for c in by_handle[alpha_h][alpha_stop + 1:-1])
    assert by_handle[alpha_h].count("stop") == 1
    full = sc.handle_calls()
    alpha_stopped = full.index((alpha_h, "stop"))  # at SIGTERM, its only stop
    for gone in (beta_h, gamma_h):  # stopped, last work and walk, closed: at the reload
        tail = by_handle[gone][by_handle[gone].index("stop"):]
        assert tail[1].startswith("work") and tail[-2].startswith("walk") and tail[-1] == "close"
        assert full.index((gone, "close")) < full.index((new_beta_h, "opened run=1"))
    assert full.index((new_beta_h, "opened run=1")) < alpha_stopped
    assert by_handle[new_beta_h][-1] == "close"


def test_each_handle_keeps_only_the_records_of_its_own_program(
    tmp_path: Path, lib_path: str
) -> None:
    """A consumer holds nothing of other consumers' probes (its aggregation memory is
    its own snapshot buffer and keys, illumos-gate dt_aggregate.c dt_aggregate_go): so
    once tracing, each stand-in handle keeps only its own program's records of the
    scenario, not every script's (at 1,000 zones that was 7 handles of 30,000 records
    each), and what it traces is unchanged."""
    nobody = "rec stub:nobody calls count | z:3 s:read | 0\n"
    sc = _scenario(tmp_path, STEADY.replace("loop 0\n", "")
                   + "rec stub:every calls count | z:4 s:read | 0 0\n" + nobody + "loop 0\n")
    ticks, _ = _run_for(lib_path, SCRIPTS[:1] + SCRIPTS[2:], env_for(sc), 3)
    every = [dict((r["key"][0], r["value"]) for r in t if r.get("agg") == "calls")
             for t in ticks]
    # each walk: zone 4 fired twice as often as zone 3 (a snapshot skipped for aggrate
    # leaves a walk empty, and the next catches up both)
    assert all(not w or w == {3: w[3], 4: 2 * w[3]} for w in every), every
    assert sum(w.get(3, 0) for w in every) >= 3, every
    assert sum(r["value"] for t in ticks for r in t if r.get("agg") == "samples") >= 3
    kept = {sel: [c for c in _handles(sc)[h] if c.startswith("events ")]
            for sel in MATCHES for h in _traced_by(sc, sel)}
    # the scenario's 4 records: every's 2 stay on its handle, other's 1 on its own;
    # the 3 setup lines (matches, matches; no record) stay on both
    assert kept == {"stub:every": ["events kept=4 dropped=2"],
                    "stub:other": ["events kept=3 dropped=3"]}, kept
