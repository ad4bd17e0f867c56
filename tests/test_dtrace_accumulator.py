"""Accumulator: deltas → cumulative families; zones, caps, invalid records; replay."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.agent import Agent
from dtagent.bundle import Frame, write_bundle
from dtagent.config import load
from dtagent.dtrace import buckets as bk
from dtagent.dtrace.accumulator import DEFAULT_SERIES_CAP, Accumulator
from dtagent.dtrace.provider import DTraceMetrics, ReplayDeltas
from dtagent.dtrace.records import Batch, WorkerHealth, combine, parse
from dtagent.dtrace.spec import (
    LATENCY_COARSE_LE,
    AggregationSpec,
    KeySpec,
    ScriptSpec,
    load_script,
    load_scripts,
    shipped_dir,
    with_zone_buckets,
)
from dtagent.exposition import render
from dtagent.metrics import MetricFamily
from dtagent.snapshot import HostSnapshot, Kstat, KstatSnapshot
from dtagent.sources.commands import NoCommands
from dtagent.sources.replay import ReplaySource
from tests.test_dtrace_buckets import schemes

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"
EVERY = load_script(FIXTURES / "every.d")


def fams(acc: Accumulator) -> dict[str, MetricFamily]:
    return {f.name: f for f in acc.families()}


def samples(fam: MetricFamily) -> dict[tuple[str, ...], float]:
    return dict(fam.samples)


def hists(fam: MetricFamily) -> dict[tuple[str, ...], tuple[list[float], float, float]]:
    return {k: (list(c), s, n) for k, c, s, n in fam.hist_samples}


def lat_record(zone: int, values: list[int], script: ScriptSpec = EVERY) -> list[dict[str, Any]]:
    """Records the worker would send for @lat/@lat_sum after these true values (ns)."""
    agg = script.aggregation("lat")
    assert agg is not None
    b = agg.buckets()
    counts: dict[int, int] = {}
    for v in values:
        i = b.index(v - agg.offset)
        counts[i] = counts.get(i, 0) + 1
    return [
        {"script": "every", "agg": "lat", "key": [zone],
         "buckets": [[b.lower(i), n] for i, n in sorted(counts.items())]},
        {"script": "every", "agg": "lat_sum", "key": [zone], "value": sum(values)},
    ]


def test_every_aggregating_action() -> None:
    acc = Accumulator([EVERY])
    zones = {0: "global", 3: "web"}
    acc.apply_json(
        [
            {"script": "every", "agg": "calls", "key": [3, "read"], "value": 5},
            {"script": "every", "agg": "calls", "key": [3, "ioctl"], "value": 2},
            {"script": "every", "agg": "calls", "key": [3, "getpid"], "value": 1},
            {"script": "every", "agg": "bytes", "key": [3, 0], "value": 2**40},
            {"script": "every", "agg": "bytes", "key": [0, 7], "value": 1},
            {"script": "every", "agg": "minlat", "key": ["read"], "value": 100},
            {"script": "every", "agg": "maxlat", "key": ["read"], "value": 9000},
            {"script": "every", "agg": "avglat", "key": ["read"], "value": [4, 1000]},
            {"script": "every", "agg": "qlat", "key": [0], "buckets": [[0, 1], [512, 3],
                                                                      [2**62, 1]]},
            {"script": "every", "agg": "qlat_sum", "key": [0], "value": 3000},
            {"script": "every", "agg": "pct", "key": ["read"],
             "buckets": [[None, 1], [0, 2], [40, 1], [100, 1]]},
            {"script": "every", "agg": "pct_sum", "key": ["read"], "value": 150},
            *lat_record(3, [999, 1000, 1001, 2000, 2001, 10**9]),
        ],
        zones,
    )
    f = fams(acc)
    assert samples(f["test_syscalls_total"]) == {
        ("web", "read"): 5, ("web", "other"): 3
    }
    assert samples(f["test_bytes_total"]) == {("web", "0"): 2**40, ("global", "other"): 1}
    assert samples(f["test_syscall_min_seconds"]) == {("read",): pytest.approx(100e-9)}
    assert samples(f["test_syscall_max_seconds"]) == {("read",): pytest.approx(9000e-9)}
    assert samples(f["test_syscall_avg_seconds"]) == {("read",): pytest.approx(250e-9)}
    # le = [0, 1023 ns, 1048575 ns]
    assert hists(f["test_syscall_latency_log2_seconds"]) == {
        ("global",): ([1, 4, 4], pytest.approx(3000e-9), 5)
    }
    # le = [-0.01, 0.09, 0.49, 0.99] on 10 ms steps: -1, 9, 49, 99 recorded
    assert hists(f["test_syscall_latency_linear_seconds"]) == {
        ("read",): ([1, 3, 4, 4], pytest.approx(1.5), 5)
    }
    # le = 1, 2, 5, 10, 100, 1000 us; values 999, 1000, 1001, 2000, 2001 ns, 1 s
    cum, s, n = hists(f["test_syscall_latency_seconds"])[("web",)]
    assert cum == [2, 4, 5, 5, 5, 5] and n == 6
    assert abs(s - (999 + 1000 + 1001 + 2000 + 2001 + 10**9) * 1e-9) < 1e-12
    assert samples(f["dtagent_dtrace_script_enabled"]) == {("every",): 1}
    assert acc.rejected == {}


def test_counters_accumulate_and_gauges_show_the_last_interval() -> None:
    acc = Accumulator([EVERY])
    zones = {3: "web"}
    for i in range(3):
        acc.apply_json(
            [
                {"script": "every", "agg": "calls", "key": [3, "read"], "value": 2},
                {"script": "every", "agg": "maxlat", "key": ["read"], "value": 10 - i},
                *lat_record(3, [1500]),
            ],
            zones,
        )
    f = fams(acc)
    assert samples(f["test_syscalls_total"]) == {("web", "read"): 6}
    assert samples(f["test_syscall_max_seconds"]) == {("read",): pytest.approx(8e-9)}
    assert hists(f["test_syscall_latency_seconds"])[("web",)][2] == 3


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_histograms_are_exact(data: st.DataObject) -> None:
    """Every value is in exactly the buckets whose le >= it; _count and _sum agree."""
    agg_name = data.draw(st.sampled_from(["lat", "qlat", "pct"]))
    agg = EVERY.aggregation(agg_name)
    assert agg is not None and agg.sum
    b = agg.buckets()
    limit = 2**31 - 1 if agg.function == "lquantize" else 2**50
    # true values, with the le boundaries and their neighbours favoured
    edges = [round(le / agg.scale) + d for le in agg.le for d in (-1, 0, 1)]
    values = data.draw(st.lists(
        st.one_of(st.integers(-1000, limit), st.sampled_from(edges)), min_size=1, max_size=40
    ))
    acc = Accumulator([EVERY])
    key: list[Any] = [3] if agg.keys[0].kind == "zoneid" else ["read"]
    # split into several walks, as the worker would
    cut = data.draw(st.integers(0, len(values)))
    for part in (values[:cut], values[cut:]):
        counts: dict[int, int] = {}
        for v in part:
            i = b.index(v - agg.offset)
            counts[i] = counts.get(i, 0) + 1
        acc.apply_json([
            {"script": "every", "agg": agg_name, "key": key,
             "buckets": [[b.lower(i), n] for i, n in counts.items()]},
            {"script": "every", "agg": agg.sum, "key": key, "value": sum(part)},
        ], {3: "web"})
    fam = fams(acc)[agg.metric]
    ((_, cum, total, count),) = fam.hist_samples
    assert count == len(values)
    # le / scale is the integer upper bound (in true recorded units) of the le bucket
    bounds = [round(le / agg.scale) for le in agg.le]
    assert list(cum) == [sum(1 for v in values if v <= hi) for hi in bounds]
    assert abs(total - sum(values) * agg.scale) <= 1e-9 * max(1.0, abs(sum(values) * agg.scale))


def test_zone_gone_and_zone_id_reused_never_mix() -> None:
    acc = Accumulator([EVERY])
    acc.apply_json([{"script": "every", "agg": "calls", "key": [5, "read"], "value": 7},
               *lat_record(5, [1500, 1500])], {0: "global", 5: "old-zone"})
    f = fams(acc)
    assert samples(f["test_syscalls_total"]) == {("old-zone", "read"): 7}
    # old-zone halts; new-zone boots and gets the same id
    acc.apply_json([{"script": "every", "agg": "calls", "key": [5, "read"], "value": 1},
               *lat_record(5, [1500])], {0: "global", 5: "new-zone"})
    f = fams(acc)
    assert samples(f["test_syscalls_total"]) == {("new-zone", "read"): 1}
    assert list(hists(f["test_syscall_latency_seconds"])) == [("new-zone",)]
    assert hists(f["test_syscall_latency_seconds"])[("new-zone",)][2] == 1
    # old-zone comes back with another id: a fresh series, nothing of new-zone's
    acc.apply_json([{"script": "every", "agg": "calls", "key": [9, "read"], "value": 4}],
              {0: "global", 5: "new-zone", 9: "old-zone"})
    assert samples(fams(acc)["test_syscalls_total"]) == {
        ("new-zone", "read"): 1, ("old-zone", "read"): 4
    }
    # a record for a zone id that is not running is refused, not guessed
    acc.apply_json([{"script": "every", "agg": "calls", "key": [11, "read"], "value": 4}],
              {0: "global", 5: "new-zone", 9: "old-zone"})
    assert acc.rejected == {"unknown_zone": 1}
    # an empty zone map (failed kstat read) does not wipe the series
    acc.apply_json([], {})
    assert len(fams(acc)["test_syscalls_total"].samples) == 2


def test_series_cap() -> None:
    acc = Accumulator([EVERY], series_cap=2)
    zones = {i: f"z{i}" for i in range(5)}
    acc.apply_json([{"script": "every", "agg": "bytes", "key": [i, 0], "value": 1}
                    for i in range(5)], zones)
    f = fams(acc)
    assert len(f["test_bytes_total"].samples) == 2
    assert samples(f["dtagent_dtrace_series_dropped_total"])[("test_bytes_total",)] == 3
    # existing series keep counting
    acc.apply_json([{"script": "every", "agg": "bytes", "key": [0, 0], "value": 1}], zones)
    assert samples(fams(acc)["test_bytes_total"])[("z0", "0")] == 2


INVALID: list[Any] = [
    "not a dict",
    {"script": "nope", "agg": "calls", "key": [3, "read"], "value": 1},
    {"script": "every", "agg": "nope", "key": [3, "read"], "value": 1},
    {"script": "every", "agg": "calls", "key": [3], "value": 1},
    {"script": "every", "agg": "calls", "key": ["3", "read"], "value": 1},
    {"script": "every", "agg": "calls", "key": [3, 4], "value": 1},
    {"script": "every", "agg": "calls", "key": [3, "read"], "value": "1"},
    {"script": "every", "agg": "calls", "key": [3, "read"], "value": -1},
    {"script": "every", "agg": "calls", "key": [3, "read"], "value": True},
    {"script": "every", "agg": "avglat", "key": ["read"], "value": 3},
    {"script": "every", "agg": "lat", "key": [3], "value": 3},
    {"script": "every", "agg": "lat", "key": [3], "buckets": [[1500, 1]]},
    {"script": "every", "agg": "lat", "key": [3], "buckets": [[1000, -1]]},
    {"script": "every", "agg": "lat", "key": [3], "buckets": [[1000]]},
    {"script": "every", "agg": "qlat", "key": [3], "buckets": [[None, 1]]},
    {"script": "every", "agg": "pct", "key": ["read"], "buckets": [[5, 1]]},
    {"script": "every", "agg": "lat_sum", "key": [3], "value": 1.5},
    {"drop": "aggregation", "count": -2},
    {"drop": "Bad Kind", "count": 2},
    {"error": "runtime", "count": 1},
    {"script": "every", "status": "sleeping"},
]


def test_invalid_records_are_counted_never_raised() -> None:
    acc = Accumulator([EVERY])
    acc.apply_json(INVALID, {3: "web"})
    assert acc.rejected == {"invalid": len(INVALID)}
    f = fams(acc)
    assert f["test_syscalls_total"].samples == []
    assert f["test_syscall_latency_seconds"].hist_samples == []
    assert samples(f["dtagent_dtrace_records_rejected_total"])[("invalid",)] == len(INVALID)


def test_drops_errors_and_status() -> None:
    acc = Accumulator([EVERY], overrides={"every": False})
    f = fams(acc)
    assert samples(f["dtagent_dtrace_script_enabled"]) == {("every",): 0}
    assert "test_syscalls_total" not in f
    acc.apply_json([
        {"drop": "aggregation", "count": 5},
        {"drop": "dynamic", "count": 1},
        {"drop": "aggregation", "count": 2},
        {"error": "runtime", "script": "every", "count": 2, "message": "invalid address"},
        {"error": "runtime", "script": "ghost", "count": 1, "message": "?"},
        {"script": "every", "status": "running"},
        {"tick": 4, "time": 1.0},
    ], {0: "global"})
    f = fams(acc)
    drops = samples(f["dtagent_dtrace_drops_total"])
    assert drops[("aggregation",)] == 7 and drops[("dynamic",)] == 1
    assert drops[("principal",)] == 0
    assert samples(f["dtagent_dtrace_errors_total"]) == {("every",): 2, ("unknown",): 1}
    assert samples(f["dtagent_dtrace_script_enabled"]) == {("every",): 1}
    acc.apply_json([{"script": "every", "status": "failed", "message": "no probes"}], {0: "global"})
    assert samples(fams(acc)["dtagent_dtrace_script_enabled"]) == {("every",): 0}


def _zones_kstats(zones: dict[int, str]) -> list[Kstat]:
    return [Kstat("zones", zid, name[:30], "zone_misc", data={"zonename": name})
            for zid, name in zones.items()]


def test_provider_holds_deltas_while_there_is_no_zone_map() -> None:
    class Source:
        def __init__(self) -> None:
            self.batches = [lat_record(3, [1500]), [], []]

        def take(self) -> list[Batch]:
            return [([parse(r) for r in self.batches.pop(0)], {})]

        def health(self) -> WorkerHealth:
            return WorkerHealth(True, 2, 100.0)

    prov = DTraceMetrics(Accumulator([EVERY]), Source(), clock=lambda: 103.0)
    prov.recording = []

    def snap(zones: dict[int, str]) -> HostSnapshot:
        return HostSnapshot(kstats=KstatSnapshot(_zones_kstats(zones)), commands=NoCommands(),
                            time=0.0, illumos=True)

    f = {x.name: x for x in prov.families(snap({}))}
    assert f["test_syscall_latency_seconds"].hist_samples == []
    assert samples(f["dtagent_dtrace_worker_restarts_total"]) == {(): 2}
    assert samples(f["dtagent_dtrace_last_delta_age_seconds"]) == {(): 3.0}
    f = {x.name: x for x in prov.families(snap({3: "web"}))}
    assert list(hists(f["test_syscall_latency_seconds"])) == [("web",)]
    assert prov.recording == lat_record(3, [1500])  # what dtagent capture records
    # zone 0 is the global zone even when no zones:0 kstat is seen
    prov.source.batches = [lat_record(0, [1500])]  # type: ignore[attr-defined]
    f = {x.name: x for x in prov.families(snap({3: "web"}))}
    assert sorted(hists(f["test_syscall_latency_seconds"])) == [("global",), ("web",)]


def test_provider_applies_the_deltas_when_the_first_family_is_drawn() -> None:
    """families() reads the zone map at once and takes the deltas only when drawn (the
    agent lets the kstats go in between); the zone map is the one of the call."""
    taken: list[str] = []

    class Source:
        def take(self) -> list[Batch]:
            taken.append("taken")
            return [([parse(r) for r in lat_record(3, [1500])], {})]

        def health(self) -> WorkerHealth:
            return WorkerHealth(True, 0, 100.0)

    prov = DTraceMetrics(Accumulator([EVERY]), Source(), clock=lambda: 101.0)
    kstats = KstatSnapshot(_zones_kstats({3: "web"}))
    drawn = prov.families(HostSnapshot(kstats=kstats, commands=NoCommands(), time=0.0,
                                       illumos=True))
    assert taken == []
    kstats.add(Kstat("zones", 3, "renamed", "zone_misc", data={"zonename": "renamed"}))
    f = {x.name: x for x in drawn}
    assert taken == ["taken"]
    assert list(hists(f["test_syscall_latency_seconds"])) == [("web",)]


def test_replay_shows_histograms(tmp_path: Path) -> None:
    """A bundle's deltas, replayed through the agent, render as exact histograms."""
    zones = {0: "global", 3: "web-0123456789-abcdef-0123456789-abc"}
    frames = [
        Frame(time=100.0 + 10 * i, kstats=_zones_kstats(zones),
              dtrace=[*lat_record(3, [1500] * (i + 1)),
                      {"script": "every", "agg": "calls", "key": [3, "read"], "value": 1}])
        for i in range(3)
    ]
    path = tmp_path / "b.bundle"
    write_bundle(path, frames, source="test")
    config = load(None)
    replay = ReplaySource.open(str(path), frame=-1)
    acc = Accumulator([EVERY])
    agent = Agent([], replay, replay, illumos=True, dtrace=DTraceMetrics(acc, ReplayDeltas(replay)))
    text = render(agent.collect()).decode()
    name = zones[3]
    assert f'test_syscall_latency_seconds_bucket{{zonename="{name}",le="2e-06"}} 6' in text
    assert f'test_syscall_latency_seconds_count{{zonename="{name}"}} 6' in text
    assert f'test_syscalls_total{{zonename="{name}",syscall="read"}} 3' in text
    assert "dtagent_dtrace_worker_up 1" in text
    assert config.get("dtrace", "series_cap") == 10000


def test_runtime_replay_wiring(tmp_path: Path) -> None:
    from dtagent import runtime

    frames = [Frame(time=1.0, kstats=_zones_kstats({0: "global"}),
                    dtrace=[{"script": "every", "status": "running"},
                            {"drop": "aggregation", "count": 3}])]
    path = tmp_path / "b.bundle"
    write_bundle(path, frames, source="test")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sources]\nreplay = {json.dumps(str(path))}\n'
                   f'[dtrace]\nscript_dirs = [{json.dumps(str(FIXTURES))}]\n')
    rt = runtime.build(load(cfg), replay_frame=-1)
    text = render(rt.agent.collect()).decode()
    assert 'dtagent_dtrace_drops_total{kind="aggregation"} 3' in text
    # what the bundle recorded ran; an enabled script it holds nothing of did not
    assert 'dtagent_dtrace_script_enabled{script="every"} 1' in text
    assert 'dtagent_dtrace_script_enabled{script="other"} 0' in text
    assert "dtagent_dtrace_worker_up 1" in text
    assert 'dtagent_source_info{mode="replay"} 1' in text
    cfg.write_text(f'[sources]\nreplay = {json.dumps(str(path))}\n[dtrace]\nenabled = false\n')
    assert runtime.build(load(cfg), replay_frame=-1).agent.dtrace is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_schemes_are_exact_through_the_accumulator(data: st.DataObject) -> None:
    """Random quantize/lquantize/llquantize parameters, scale, offset and le: every
    value is counted in exactly the buckets whose le >= it; _count and _sum agree."""
    b = data.draw(schemes())
    scale = data.draw(st.sampled_from([1.0, 1e-9, 1e-6, 1e-3, 0.25]))
    offset = data.draw(st.integers(-3, 3))
    picked = sorted(set(data.draw(st.lists(st.integers(0, b.count - 2), min_size=1,
                                           max_size=6))))
    picked = [i for i in picked if abs(b.bounds(i)[1]) < 2**50]
    if not picked:
        return
    le = tuple((b.bounds(i)[1] + offset) * scale for i in picked)
    if any(x >= y for x, y in itertools.pairwise(le)):
        return
    agg = AggregationSpec(
        name="h", function=b.function, params=b.params, metric="t_seconds",
        type="histogram", help="h", scale=scale, offset=offset, sum="h_sum", le=le,
        keys=(KeySpec("zoneid", "zonename"),), le_buckets=bk.le_indexes(b, le, scale, offset),
    )
    script = ScriptSpec(name="s", path=Path("s.d"), source="", description="s", providers=(),
                        fbt=False, probes=(), enabled=True, overhead="", caveats="",
                        options={}, aggregations=(agg,))
    lo_v = bk.INT32_MIN + 3 if b.function == "lquantize" else -(2**50)
    hi_v = bk.INT32_MAX - 3 if b.function == "lquantize" else 2**50
    edges = [b.bounds(i)[1] + offset + d for i in picked for d in (-1, 0, 1)]
    values = data.draw(st.lists(st.one_of(st.integers(lo_v, hi_v), st.sampled_from(edges)),
                                min_size=1, max_size=30))
    acc = Accumulator([script])
    counts: dict[int, int] = {}
    for v in values:
        i = b.index(v - offset)
        counts[i] = counts.get(i, 0) + 1
    acc.apply_json([
        {"script": "s", "agg": "h", "key": [1], "buckets": [[b.lower(i), n] for i, n in
                                                             counts.items()]},
        {"script": "s", "agg": "h_sum", "key": [1], "value": sum(values)},
    ], {1: "z"})
    ((_, cum, total, count),) = fams(acc)["t_seconds"].hist_samples
    assert list(cum) == [sum(1 for v in values if v <= b.bounds(i)[1] + offset)
                         for i in picked]
    assert count == len(values)
    assert total == pytest.approx(sum(values) * scale, rel=1e-9, abs=1e-12)


# ------------------------------------------------ batched records (one per aggregation)

WALK_RECORDS = st.one_of(
    st.builds(lambda z, s, v: {"script": "every", "agg": "calls", "key": [z, s], "value": v},
              st.sampled_from([0, 3, 5, 7]), st.sampled_from(["read", "write", "ioctl"]),
              st.integers(0, 2**40)),
    st.builds(lambda z, vals: lat_record(z, vals),
              st.sampled_from([0, 3, 5, 7]),
              st.lists(st.integers(1, 2 * 10**10), min_size=1, max_size=5)),
    st.builds(lambda s, v: {"script": "every", "agg": "maxlat", "key": [s], "value": v},
              st.sampled_from(["read", "write"]), st.integers(-5, 10**6)),
    st.builds(lambda s, c, t: {"script": "every", "agg": "avglat", "key": [s], "value": [c, t]},
              st.sampled_from(["read", "write"]), st.integers(1, 100), st.integers(0, 10**6)),
)
# zone maps of successive scrapes: zones halting, booting, an id taken by another zone
ZONE_MAPS = st.sampled_from([
    {0: "global", 3: "web", 5: "db"},
    {0: "global", 3: "web", 5: "db", 7: "cache"},
    {0: "global", 3: "web"},
    {0: "global", 3: "other-web", 5: "db"},
])


def _flat(recs: list[Any]) -> list[Any]:
    return [r for rec in recs for r in (rec if isinstance(rec, list) else [rec])]


def _counter_values(acc: Accumulator) -> dict[tuple[str, tuple[str, ...]], float]:
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for f in acc.families():
        if f.spec.type == "counter":
            out.update({(f.name, k): v for k, v in f.samples})
        elif f.spec.type == "histogram":
            for k, cum, _s, n in f.hist_samples:
                out[(f.name + "_count", k)] = n
                out.update({(f"{f.name}_bucket{i}", k): c for i, c in enumerate(cum)})
    return out


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.lists(WALK_RECORDS, max_size=12), ZONE_MAPS), min_size=1,
                max_size=6))
def test_batched_records_add_exactly_what_one_key_records_add(
    walks: list[tuple[list[Any], dict[int, str]]],
) -> None:
    """The same deltas, one record per key (the first format) or one per aggregation
    (the worker's): the same families after every scrape, whatever the zones do; and
    cumulative counters and buckets of a series that stays never go down."""
    one_key, batched = Accumulator([EVERY]), Accumulator([EVERY])
    before: dict[tuple[str, tuple[str, ...]], float] = {}
    for recs, zones in walks:
        objs = _flat(recs)
        one_key.apply_json(objs, zones)
        batched.apply([r for r in combine(parse(o) for o in objs)], zones)
        assert render(one_key.families()) == render(batched.families())
        now = _counter_values(batched)
        for k, v in now.items():
            if k in before:
                assert v >= before[k], k
        before = now
    assert one_key.rejected == batched.rejected


def test_one_bad_key_of_a_batch_is_refused_alone() -> None:
    acc = Accumulator([EVERY])
    acc.apply_json([
        {"script": "every", "agg": "lat", "keys": [[3], [5], [9], [0]],
         "buckets": [[1000, 2], [1500, 1], [1000, 4], [None, 1, 2000, 3]]},
        {"script": "every", "agg": "calls", "keys": [[3, "read"], [3, "write"]],
         "values": [4, -1]},
    ], {0: "global", 3: "web", 5: "db"})
    # key [5]: 1500 is no bucket boundary; key [9]: no such zone; the write delta < 0
    assert acc.rejected == {"invalid": 2, "unknown_zone": 1}
    f = fams(acc)
    assert {k: v[2] for k, v in hists(f["test_syscall_latency_seconds"]).items()} == {
        ("web",): 2, ("global",): 4}
    assert samples(f["test_syscalls_total"]) == {("web", "read"): 4}


def test_a_seen_key_with_a_bound_that_is_no_boundary_adds_nothing() -> None:
    """A key seen before is applied pair by pair; when a later pair's bound is no
    boundary, what its earlier pairs added is taken back: the key is refused whole,
    and a bound seen for the first time is applied as any other."""
    acc = Accumulator([EVERY])
    zones = {0: "global", 3: "web"}

    def lat(buckets: list[object]) -> dict[str, object]:
        return {"script": "every", "agg": "lat", "keys": [[3]], "buckets": [buckets]}

    acc.apply_json([lat([1000, 2])], zones)
    acc.apply_json([lat([1000, 5, None, 7, 1500, 1])], zones)
    assert acc.rejected == {"invalid": 1}
    assert hists(fams(acc)["test_syscall_latency_seconds"])[("web",)][2] == 2
    acc.apply_json([lat([1000, 1, 2000, 3])], zones)  # 2000: a boundary not seen yet
    assert hists(fams(acc)["test_syscall_latency_seconds"])[("web",)][2] == 6


def test_a_whole_batch_of_the_wrong_shape_counts_each_key() -> None:
    acc = Accumulator([EVERY])
    acc.apply_json([
        {"script": "every", "agg": "calls", "keys": [[3], [5]], "values": [1, 1]},  # arity
        {"script": "every", "agg": "lat", "keys": [[3], [5]], "values": [1, 1]},  # no buckets
        {"script": "every", "agg": "avglat", "keys": [["read"]], "values": [3]},  # not pairs
        {"script": "every", "agg": "lat_sum", "keys": [[3]], "values": [[1, 2]]},
    ], {3: "web", 5: "db"})
    assert acc.rejected == {"invalid": 6}


def test_a_cached_key_follows_its_zone_id_to_the_new_zone() -> None:
    """The fast path keeps each raw key's series; when the id names another zone (a
    reboot gave it away) the key gets the new zone's series, never the old one's."""
    acc = Accumulator([EVERY])
    rec = {"script": "every", "agg": "calls", "keys": [[5, "read"], [3, "read"]],
           "values": [1, 1]}
    acc.apply_json([rec], {3: "web", 5: "old"})
    acc.apply_json([rec], {3: "web", 5: "old"})
    acc.apply_json([rec], {3: "web", 5: "new"})
    acc.apply_json([rec], {3: "web", 5: "new", 6: "old"})
    assert samples(fams(acc)["test_syscalls_total"]) == {("web", "read"): 4,
                                                          ("new", "read"): 2}


# ------------------------------------------------------- zone_buckets (coarser bounds)

SHIPPED = load_scripts([shipped_dir()])
RUNQ = next(s for s in SHIPPED if s.name == "runq")


def _runq_records(zone: int, values_ns: list[int]) -> list[Any]:
    agg = RUNQ.aggregation("runq")
    assert agg is not None and agg.sum
    b = agg.buckets()
    counts: dict[int, int] = {}
    for v in values_ns:
        i = b.index(v - agg.offset)
        counts[i] = counts.get(i, 0) + 1
    return [{"script": "runq", "agg": "runq", "keys": [[zone]],
             "buckets": [[x for i, n in sorted(counts.items()) for x in (b.lower(i), n)]]},
            {"script": "runq", "agg": agg.sum, "keys": [[zone]], "values": [sum(values_ns)]}]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 2 * 10**10), min_size=1, max_size=30),
       st.lists(st.integers(1, 2 * 10**10), max_size=30))
def test_coarse_bounds_are_exact_and_a_reload_to_them_keeps_every_count(
    before: list[int], after: list[int],
) -> None:
    """With zone_buckets = "1-10" each bound counts exactly the values <= it; a reload
    from 1-2-5 to 1-10 turns the fine buckets into the coarse ones by adding them up,
    the same as if the coarse bounds had been used from the start."""
    zones = {0: "global", 3: "web"}
    coarse = with_zone_buckets(SHIPPED, "1-10")
    reloaded, always = Accumulator(SHIPPED), Accumulator(coarse)
    for acc in (reloaded, always):
        acc.apply_json(_runq_records(3, before), zones)
    reloaded.reconfigure(coarse, DEFAULT_SERIES_CAP)
    for acc in (reloaded, always):
        acc.apply_json(_runq_records(3, after), zones)
    name = "illumos_zone_runq_latency_seconds"
    got = hists(fams(reloaded)[name])
    assert got == hists(fams(always)[name])
    cum, total, count = got[("web",)]
    values = before + after
    assert cum == [sum(1 for v in values if v * 1e-9 <= le * (1 + 1e-12))
                   for le in LATENCY_COARSE_LE]
    assert count == len(values) and total == pytest.approx(sum(values) * 1e-9)


def test_a_reload_back_to_finer_bounds_starts_the_histograms_afresh() -> None:
    zones = {0: "global", 3: "web"}
    acc = Accumulator(with_zone_buckets(SHIPPED, "1-10"))
    acc.apply_json(_runq_records(3, [1500, 25_000]), zones)
    acc.reconfigure(SHIPPED, DEFAULT_SERIES_CAP)
    assert hists(fams(acc)["illumos_zone_runq_latency_seconds"]) == {}
    acc.apply_json(_runq_records(3, [1500]), zones)
    cum, _, count = hists(fams(acc)["illumos_zone_runq_latency_seconds"])[("web",)]
    assert len(cum) == 22 and count == 1


def test_raw_keys_bounded_to_other_never_grow_the_cache_past_its_cap() -> None:
    """An integer key with an allow list: every other value counts as "other";
    the fast path remembers at most a few times series_cap raw keys, and every value,
    remembered or not, is counted."""
    acc = Accumulator([EVERY], series_cap=5)
    keys = [[0, v] for v in range(100)]
    acc.apply_json([{"script": "every", "agg": "bytes", "keys": keys,
                     "values": [1] * len(keys)}], {0: "global"})
    acc.apply_json([{"script": "every", "agg": "bytes", "keys": keys,
                     "values": [1] * len(keys)}], {0: "global"})
    agg = acc._aggs[("every", "bytes")]
    assert len(agg.cache) <= 4 * 5
    got = samples(fams(acc)["test_bytes_total"])
    assert got == {("global", "0"): 2, ("global", "1"): 2, ("global", "other"): 196}


def test_counts_past_64_bits_stay_exact() -> None:
    """Bucket counts live in 64-bit arrays; a count that would pass 2**63 - 1 turns its
    series into Python ints at that record, with nothing lost or counted twice."""
    acc = Accumulator([EVERY])
    zones = {0: "global", 3: "web"}
    lat = EVERY.aggregation("lat")
    assert lat is not None
    lo = lat.buckets().lower(lat.buckets().index(5000 - lat.offset))
    big = 2**62
    for _ in range(3):  # 3 * 2**62 passes 2**63 - 1 at the second record
        acc.apply_json([{"script": "every", "agg": "lat", "key": [3],
                         "buckets": [[lat.buckets().lower(0), 1], [lo, big]]}], zones)
    cumulative, _, count = hists(fams(acc)["test_syscall_latency_seconds"])[("web",)]
    assert count == 3 * big + 3
    assert max(cumulative) == 3 * big + 3
    assert sorted(set(cumulative)) == [3, 3 * big + 3]
