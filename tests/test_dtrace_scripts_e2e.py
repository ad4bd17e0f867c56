"""Each shipped D script's metrics, end to end: delta records as the worker walks them,
through the engine's loader and accumulator, to the exposition text, with exact buckets,
sums and labels; and a simulated bundle scraped with --replay shows every script."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dtagent.dtrace.accumulator import Accumulator
from dtagent.dtrace.spec import load_scripts
from dtagent.exposition import render
from tests.helpers import dtagent

ROOT = Path(__file__).resolve().parent.parent
D_DIR = ROOT / "scripts" / "d"

WEB = "5b0a2a3e-9f1c-4d7e-8a6b-2c4d6e8f0a1b"
DB = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
ZONES = {0: "global", 3: WEB, 7: DB}

LE = (
    "1e-06", "2e-06", "5e-06", "1e-05", "2e-05", "5e-05", "0.0001", "0.0002", "0.0005",
    "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "2.0",
    "5.0", "10.0", "+Inf",
)  # fmt: skip

Sample = tuple[str, frozenset[tuple[str, str]]]
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(records: list[dict[str, Any]], zones: dict[int, str] = ZONES) -> str:
    acc = Accumulator(load_scripts([D_DIR]), overrides={"syscall_by_name": True})
    acc.apply_json(records, zones)
    return render(acc.families()).decode()


def samples(text: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def histogram(
    text: str, metric: str, labels: dict[str, str]
) -> tuple[dict[str, float], float, float]:
    """(cumulative count by le, _sum, _count) of one series."""
    got = samples(text)
    base = frozenset(labels.items())
    buckets = {
        le: got[(f"{metric}_bucket", base | {("le", le)})]
        for le in LE
        if (f"{metric}_bucket", base | {("le", le)}) in got
    }
    assert tuple(buckets) == LE, f"{metric}{labels}: le set {tuple(buckets)}"
    return buckets, got[(f"{metric}_sum", base)], got[(f"{metric}_count", base)]


def cumulative(**counts: float) -> dict[str, float]:
    """The cumulative bucket counts for per-le counts given as e.g. le_2e_06=3."""
    per_le = {le: 0.0 for le in LE}
    for k, v in counts.items():
        per_le[k.removeprefix("le_").replace("_", "-").replace("p", ".")] = v
    out: dict[str, float] = {}
    running = 0.0
    for le in LE:
        running += per_le[le]
        out[le] = running
    return out


def hist(script: str, agg: str, key: list[Any], buckets: list[list[Any]]) -> dict[str, Any]:
    return {"script": script, "agg": agg, "key": key, "buckets": buckets}


def value(script: str, agg: str, key: list[Any], v: int) -> dict[str, Any]:
    return {"script": script, "agg": agg, "key": key, "value": v}


# Recorded nanosecond buckets (llquantize(ns - 1, 10, 3, 9, 10)) and the le each ends at:
#   None            r < 1000        ns <= 1000        le 1e-06
#   1000            [1000, 1999]    (1000, 2000]      le 2e-06
#   4000            [4000, 4999]    (4000, 5000]      le 5e-06
#   9000            [9000, 9999]    (9000, 10000]     le 1e-05
#   90000           [90000, 99999]                    le 0.0001
#   300000          [300000, 399999] (300 us, 400 us] le 0.0005
#   9000000000      [9e9, 1e10 - 1] (9 s, 10 s]      le 10.0
#   10000000000     >= 1e10         > 10 s            +Inf only
NS_RECORDS = [
    [None, 2], [1000, 3], [4000, 1], [9000, 2], [90000, 1], [300000, 4],
    [9000000000, 1], [10000000000, 1],
]  # fmt: skip
NS_EXPECTED = cumulative(
    le_1e_06=2, le_2e_06=3, le_5e_06=1, le_1e_05=2, le_0p0001=1, le_0p0005=4, le_10p0=1,
    **{"le_+Inf": 1},
)  # fmt: skip
NS_SUM = 21_234_567_891  # ns: 21.234567891 s


@pytest.mark.parametrize(
    ("script", "agg", "metric"),
    [
        ("runq", "runq", "illumos_zone_runq_latency_seconds"),
        ("cpucaps", "cpucaps_wait", "illumos_zone_cpucaps_wait_seconds"),
        ("syscall", "syscall", "illumos_zone_syscall_latency_seconds"),
        ("tcpconn", "tcpconn", "illumos_zone_tcp_connect_latency_seconds"),
    ],
)
def test_zone_latency_histograms(script: str, agg: str, metric: str) -> None:
    text = scrape(
        [
            hist(script, agg, [3], NS_RECORDS),
            value(script, f"{agg}_sum", [3], NS_SUM),
            hist(script, agg, [7], [[2000, 5]]),
            value(script, f"{agg}_sum", [7], 5 * 2500),
            hist(script, agg, [99], [[2000, 5]]),  # zone 99 is not running
        ]
    )
    buckets, total, count = histogram(text, metric, {"zonename": WEB})
    assert buckets == NS_EXPECTED
    assert total == pytest.approx(21.234567891, rel=1e-12) and count == 15
    buckets, total, count = histogram(text, metric, {"zonename": DB})
    assert buckets == cumulative(le_5e_06=5)  # [2000, 2999] ends at 3 us, within 5 us
    assert total == pytest.approx(12.5e-6) and count == 5
    assert f"# TYPE {metric} histogram" in text
    assert 'zonename="99"' not in text and "zoneid" not in text
    assert 'dtagent_dtrace_records_rejected_total{reason="unknown_zone"} 1' in text


def test_histograms_accumulate_across_walks() -> None:
    acc = Accumulator(load_scripts([D_DIR]))
    for _ in range(3):
        acc.apply_json(
            [hist("runq", "runq", [3], [[1000, 2]]), value("runq", "runq_sum", [3], 3000)],
            ZONES,
        )
    text = render(acc.families()).decode()
    buckets, total, count = histogram(text, "illumos_zone_runq_latency_seconds", {"zonename": WEB})
    assert buckets == cumulative(le_2e_06=6) and count == 6
    assert total == pytest.approx(9e-6)


def test_cpucaps_throttle_counter() -> None:
    text = scrape([value("cpucaps", "cpucaps_throttles", [3], 7)])
    assert samples(text)[
        ("illumos_zone_cpucaps_throttles_total", frozenset({("zonename", WEB)}))
    ] == 7
    assert "# TYPE illumos_zone_cpucaps_throttles_total counter" in text


def test_fs_latency_by_operation() -> None:
    text = scrape(
        [
            hist("fs", "fs", [3, "read"], [[None, 10], [9000, 5], [20000000, 1]]),
            value("fs", "fs_sum", [3, "read"], 10 * 800 + 5 * 9500 + 25_000_000),
            hist("fs", "fs", [3, "fsync"], [[1000000, 2], [40000000, 1]]),
            value("fs", "fs_sum", [3, "fsync"], 2 * 1_500_000 + 45_000_000),
        ]
    )
    metric = "illumos_zone_fs_latency_seconds"
    buckets, total, count = histogram(text, metric, {"zonename": WEB, "op": "read"})
    # [20000000, 29999999] ns holds (20 ms, 30 ms]: le 0.05
    assert buckets == cumulative(le_1e_06=10, le_1e_05=5, le_0p05=1)
    assert total == pytest.approx(0.0250555) and count == 16
    buckets, total, count = histogram(text, metric, {"zonename": WEB, "op": "fsync"})
    # [1000000, 1999999] ns: (1 ms, 2 ms] -> le 0.002; [40 ms, 50 ms) -> le 0.05
    assert buckets == cumulative(le_0p002=2, le_0p05=1)
    assert total == pytest.approx(0.048) and count == 3


def test_disk_latency_and_throttle_in_microseconds() -> None:
    text = scrape(
        [
            # llquantize(us - 1, 10, 0, 6, 10): None r < 1 (us <= 1); [1,1] us = 2;
            # [9,9] us = 10; [40, 49] us in (40, 50]; [2000, 2999] us in (2 ms, 3 ms]
            hist("disk", "disk", [3, "read"], [[None, 1], [1, 2], [9, 1], [40, 3], [2000, 4]]),
            value("disk", "disk_sum", [3, "read"], 1 + 2 * 2 + 10 + 3 * 45 + 4 * 2500),
            hist("disk", "disk", [0, "write"], [[30000, 6]]),
            value("disk", "disk_sum", [0, "write"], 6 * 35000),
            # throttle delays: 5 us (recorded 4) and 100 us (recorded 99, bucket [90, 99])
            hist("disk", "disk_throttle", [3, "read"], [[4, 5]]),
            value("disk", "disk_throttle_sum", [3, "read"], 25),
            hist("disk", "disk_throttle", [3, "write"], [[90, 2]]),
            value("disk", "disk_throttle_sum", [3, "write"], 200),
        ]
    )
    lat = "illumos_zone_disk_latency_seconds"
    buckets, total, count = histogram(text, lat, {"zonename": WEB, "op": "read"})
    assert buckets == cumulative(le_1e_06=1, le_2e_06=2, le_1e_05=1, le_5e_05=3, le_0p005=4)
    assert total == pytest.approx(10150e-6) and count == 11
    buckets, total, count = histogram(text, lat, {"zonename": "global", "op": "write"})
    assert buckets == cumulative(le_0p05=6)  # (30 ms, 40 ms]
    assert total == pytest.approx(0.21)
    wait = "illumos_zone_zfs_throttle_delay_seconds"
    buckets, total, count = histogram(text, wait, {"zonename": WEB, "op": "read"})
    assert buckets == cumulative(le_5e_06=5) and total == pytest.approx(25e-6)
    buckets, total, count = histogram(text, wait, {"zonename": WEB, "op": "write"})
    assert buckets == cumulative(le_0p0001=2) and total == pytest.approx(200e-6)


def test_syscall_by_name_label_is_bounded() -> None:
    text = scrape(
        [
            hist("syscall_by_name", "syscall_by_name", [3, "read"], [[4000, 3]]),
            value("syscall_by_name", "syscall_by_name_sum", [3, "read"], 3 * 4500),
            # not in the allow list: exported as "other"
            hist("syscall_by_name", "syscall_by_name", [3, "lseek"], [[1000, 1]]),
            value("syscall_by_name", "syscall_by_name_sum", [3, "lseek"], 1500),
        ]
    )
    metric = "illumos_zone_syscall_latency_by_name_seconds"
    buckets, total, count = histogram(text, metric, {"zonename": WEB, "syscall": "read"})
    assert buckets == cumulative(le_5e_06=3) and total == pytest.approx(13.5e-6)
    buckets, total, count = histogram(text, metric, {"zonename": WEB, "syscall": "other"})
    assert buckets == cumulative(le_2e_06=1) and count == 1
    assert 'syscall="lseek"' not in text


def test_zil_commits_and_bytes_by_pool_and_zone() -> None:
    text = scrape(
        [
            hist("zil", "zil_commit", ["zones", 3], [[300000, 4], [5000000, 1]]),
            value("zil", "zil_commit_sum", ["zones", 3], 4 * 350_000 + 5_500_000),
            value("zil", "zil_bytes", ["zones", 3], 3 * 8192),
            value("zil", "zil_bytes", ["zones", 0], 4096),
        ]
    )
    buckets, total, count = histogram(
        text, "illumos_zfs_zil_commit_latency_seconds", {"pool": "zones", "zonename": WEB}
    )
    assert buckets == cumulative(le_0p0005=4, le_0p01=1)  # (5 ms, 6 ms] -> le 0.01
    assert total == pytest.approx(0.0069) and count == 5
    got = samples(text)
    metric = "illumos_zfs_zil_committed_bytes_total"
    assert got[(metric, frozenset({("pool", "zones"), ("zonename", WEB)}))] == 24576
    assert got[(metric, frozenset({("pool", "zones"), ("zonename", "global")}))] == 4096
    assert f"# TYPE {metric} counter" in text


def test_a_rebooted_zone_id_does_not_mix_with_the_old_zone() -> None:
    acc = Accumulator(load_scripts([D_DIR]))
    acc.apply_json([hist("runq", "runq", [3], [[1000, 2]])], ZONES)
    # zone 3 halted; the same id now belongs to another zone
    acc.apply_json([hist("runq", "runq", [3], [[1000, 1]])], {0: "global", 3: DB})
    text = render(acc.families()).decode()
    assert f'zonename="{WEB}"' not in text
    _b, _total, count = histogram(text, "illumos_zone_runq_latency_seconds", {"zonename": DB})
    assert count == 1


# ------------------------------------------------------------ simulated bundle

SCRIPT_METRICS = {
    "illumos_zone_runq_latency_seconds": "histogram",
    "illumos_zone_cpucaps_wait_seconds": "histogram",
    "illumos_zone_cpucaps_throttles_total": "counter",
    "illumos_zone_syscall_latency_seconds": "histogram",
    "illumos_zone_fs_latency_seconds": "histogram",
    "illumos_zone_disk_latency_seconds": "histogram",
    "illumos_zone_zfs_throttle_delay_seconds": "histogram",
    "illumos_zone_tcp_connect_latency_seconds": "histogram",
    "illumos_zfs_zil_commit_latency_seconds": "histogram",
    "illumos_zfs_zil_committed_bytes_total": "counter",
}


def test_simulated_bundle_replays_every_script(tmp_path: Path) -> None:
    bundle = tmp_path / "sim.bundle"
    res = dtagent("simulate", "--zones", "10", "--out", str(bundle), "--seed", "2",
                  "--duration", "60")  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = dtagent("scrape", "--replay", str(bundle))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    got = samples(text)
    for metric, kind in SCRIPT_METRICS.items():
        assert f"# TYPE {metric} {kind}" in text
        name = f"{metric}_count" if kind == "histogram" else metric
        values = [v for (n, _labels), v in got.items() if n == name]
        assert values and max(values) > 0, metric
    for line in text.splitlines():
        if line.startswith("illumos_zone_") and "_seconds_bucket" in line:
            le = re.search(r'le="([^"]+)"', line)
            assert le and le.group(1) in LE
    # every zone's run-queue histogram is there, under its name, not its id
    zones = {
        dict(labels)["zonename"]
        for (n, labels), _v in got.items()
        if n == "illumos_zone_runq_latency_seconds_count"
    }
    running = {
        dict(labels)["zonename"]
        for (n, labels), _v in got.items()
        if n == "illumos_zone_info"
    }
    assert zones and zones <= running | {"global"}
    assert 'dtagent_dtrace_records_rejected_total{reason="invalid"} 0' in text


# ------------------------------------------- the shipped scripts through the worker

# A string each shipped script's text contains, for the stand-in's program selector.
SELECTORS = {
    "cpucaps": "cpucaps_start",
    "disk": "zfs-zone-latency",
    "fs": "self->fs_ts",
    "runq": "runq_start",
    "syscall": "self->syscall_ts",
    "syscall_by_name": "self->syscall_by_name_ts",
    "tcpconn": "tcpconn_start",
    "zil": "zil_lwb_write_issue",
}


def _read_until_tick(proc: subprocess.Popen[str], tick: int) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(json.loads(line))
        if out[-1].get("tick") == tick:
            return out
    raise AssertionError(f"no tick {tick}: {out}")


def test_shipped_scripts_through_the_worker_and_the_libdtrace_stand_in(
    tmp_path: Path,
) -> None:
    """Each shipped script's aggregations, recorded the way the D text records them
    (value - 1 into llquantize, the value into sum) by the stand-in's re-implementation
    of the kernel's bucket function, walked by the real worker and ctypes binding,
    accumulated and rendered: every le counts exactly the values <= le."""
    from tests.native.dtrace_stub import Scenario, library

    specs = load_scripts([D_DIR])
    rng = random.Random(5)
    lines = ["tick 1"]
    expected: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for s in specs:
        sel = SELECTORS[s.name]
        assert sel in s.source
        lines.insert(0, f"matches {sel} 2")
        for agg in s.aggregations:
            if agg.type != "histogram":
                continue
            unit = 1e-6 if agg.scale == 1e-6 else 1e-9
            edges = [round(le / unit) + d for le in agg.le for d in (-1, 0, 1)]
            values = edges + [int(10 ** rng.uniform(0, 10.5) * 1e-9 / unit) for _ in range(200)]
            keys, labels = [], []
            for k in agg.keys:
                if k.kind == "zoneid":
                    keys.append("z:3")
                    labels.append(WEB)
                elif k.allow is not None:
                    keys.append(f"s:{k.allow[0]}")
                    labels.append(str(k.allow[0]))
                else:
                    keys.append("s:zones")
                    labels.append("zones")
            key = " ".join(keys)
            recorded = " ".join(str(v - agg.offset) for v in values)
            params = " ".join(map(str, agg.params))
            lines.append(f"rec {sel} {agg.name} {agg.function} {params} | {key} | {recorded}")
            lines.append(f"rec {sel} {agg.sum} sum | {key} | " + " ".join(map(str, values)))
            expected[(agg.metric, tuple(labels))] = values
    lines.append(f"rec {SELECTORS['cpucaps']} cpucaps_throttles count | z:3 | 0 0 0")
    lines.append(f"rec {SELECTORS['zil']} zil_bytes sum | s:zones z:3 | 8192 4096")
    sc = Scenario(tmp_path).write("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "dtagent.dtrace.worker", "--libdtrace", str(library()),
            "--interval", "0.05"]  # fmt: skip
    for s in specs:
        argv += ["--script", str(s.path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(sc.env(), PYTHONPATH=str(ROOT)))  # fmt: skip
    try:
        records = _read_until_tick(proc, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    statuses = {r["script"]: r["status"] for r in records if "status" in r}
    assert statuses == {s.name: "running" for s in specs}

    acc = Accumulator(specs, overrides={"syscall_by_name": True})
    acc.apply_json(records, ZONES)
    fams = {f.spec.name: f for f in acc.families()}
    assert acc.rejected.get("invalid", 0) == 0
    for (metric, labels), values in expected.items():
        agg = next(a for s in specs for a in s.aggregations if a.metric == metric)
        series = {lab: (cum, total, count) for lab, cum, total, count in
                  fams[metric].hist_samples}  # fmt: skip
        cum, total, count = series[labels]
        bounds = [round(le / agg.scale) for le in agg.le]
        assert list(cum) == [sum(1 for v in values if v <= b) for b in bounds], metric
        assert count == len(values)
        assert total == pytest.approx(sum(values) * agg.scale)
    text = render(acc.families()).decode()
    got = samples(text)
    assert got[("illumos_zone_cpucaps_throttles_total", frozenset({("zonename", WEB)}))] == 3
    bytes_key = frozenset({("pool", "zones"), ("zonename", WEB)})
    assert got[("illumos_zfs_zil_committed_bytes_total", bytes_key)] == 12288
