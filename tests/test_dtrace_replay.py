"""Replaying a bundle's DTrace deltas: each frame's deltas go with that frame's zones,
and scripts that are off contribute nothing, as they would not run on a live host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dtagent.bundle import read_bundle
from dtagent.snapshot import Kstat
from tests.helpers import dtagent, per_key_objects


@pytest.fixture(scope="module")
def churned_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated host over ten minutes, long enough for zones to halt and reboot."""
    path = tmp_path_factory.mktemp("replay") / "churn.bundle"
    res = dtagent("simulate", "--zones", "12", "--seed", "3", "--duration", "600",
                  "--out", str(path))  # fmt: skip
    assert res.returncode == 0, res.stderr
    return path


def _zone_ids(frame_kstats: list[Kstat]) -> set[int]:
    return {ks.instance for ks in frame_kstats if ks.module == "zones"}


def _value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"{series} not in the scrape"
    return float(m.group(1))


def test_deltas_of_zones_that_left_are_applied_with_their_own_frame(
    churned_bundle: Path,
) -> None:
    frames = read_bundle(churned_bundle).frames
    gone = _zone_ids(frames[0].kstats) - _zone_ids(frames[-1].kstats)
    assert gone, "the bundle should have zones that halted or rebooted"
    # deltas recorded for a zone id that no longer runs at the last frame
    assert any(
        rec.get("key", [None])[0] in gone
        for f in frames[:10] for r in f.dtrace for rec in per_key_objects(r)
    )
    out = dtagent("scrape", "--replay", str(churned_bundle))
    assert out.returncode == 0, out.stderr
    assert _value(out.stdout, 'dtagent_dtrace_records_rejected_total{reason="unknown_zone"}') == 0
    assert _value(out.stdout, 'dtagent_dtrace_records_rejected_total{reason="invalid"}') == 0
    # and nothing is exported for a zone that is gone
    running = set(re.findall(r'^illumos_zone_info\{[^}]*zonename="([^"]+)"[^}]*state="running"',
                             out.stdout, re.M))
    latency_zones = set(re.findall(r'^illumos_zone_runq_latency_seconds_count\{zonename="([^"]+)"',
                                   out.stdout, re.M))
    assert latency_zones and latency_zones <= running | {"global"}


def test_a_script_that_is_off_contributes_nothing(churned_bundle: Path, tmp_path: Path) -> None:
    frames = read_bundle(churned_bundle).frames
    assert any(rec.get("script") == "syscall_by_name" for f in frames for rec in f.dtrace)
    off = dtagent("scrape", "--replay", str(churned_bundle))
    assert off.returncode == 0, off.stderr
    assert 'dtagent_dtrace_script_enabled{script="syscall_by_name"} 0' in off.stdout
    assert "illumos_zone_syscall_latency_by_name_seconds_count{" not in off.stdout

    config = tmp_path / "on.toml"
    config.write_text("[dtrace]\nscripts = { syscall_by_name = true }\n", encoding="utf-8")
    on = dtagent("scrape", "--config", str(config), "--replay", str(churned_bundle))
    assert on.returncode == 0, on.stderr
    assert 'dtagent_dtrace_script_enabled{script="syscall_by_name"} 1' in on.stdout
    assert "illumos_zone_syscall_latency_by_name_seconds_count{" in on.stdout


def test_a_bundle_of_one_key_records_replays_as_its_batched_twin(tmp_path: Path) -> None:
    """The golden bundle holds the first record format (one key per record); the same
    frames with every aggregation's keys batched (as the worker and the simulator now
    write them) serve the same exposition, byte for byte."""
    from dtagent.bundle import Frame, write_bundle
    from dtagent.dtrace.records import combine, parse, to_json
    from tests.golden import BUNDLE, exposition

    old = read_bundle(BUNDLE)
    records = [r for f in old.frames for r in f.dtrace]
    assert records and all("keys" not in r for r in records)  # the first format
    twin = tmp_path / "batched.bundle"
    write_bundle(twin, [
        Frame(time=f.time, kstats=f.kstats, commands=f.commands,
              dtrace=[to_json(r) for r in combine(parse(o) for o in f.dtrace)])
        for f in old.frames
    ], **{k: v for k, v in old.header.items() if k not in ("format", "version")})
    batched = [r for f in read_bundle(twin).frames for r in f.dtrace]
    assert len(batched) < len(records) / 5 and all("key" not in r for r in batched)
    assert exposition(twin) == exposition(BUNDLE)


def _buckets(text: str) -> dict[tuple[str, str, str], float]:
    """(metric, labels without le, le) -> value of every _bucket sample."""
    out = {}
    for m in re.finditer(r'^(\w+)_bucket\{(.*),le="([^"]+)"\} (\S+)$', text, re.M):
        out[(m[1], m[2], m[3])] = float(m[4])
    return out


def test_coarse_zone_buckets_serve_a_subset_of_the_same_counts(tmp_path: Path) -> None:
    """[dtrace] zone_buckets = "1-10": every per-zone latency histogram has the bounds
    1 us, 10 us ... 10 s, each with exactly the count the 1-2-5 bounds give it; the
    histograms' series, _sum and _count are the same."""
    from tests.golden import BUNDLE

    def scrape(choice: str) -> str:
        cfg = tmp_path / f"{choice}.toml"
        cfg.write_text(f'[sources]\nreplay = "{BUNDLE}"\n[dtrace]\nzone_buckets = "{choice}"\n')
        res = dtagent("scrape", "--config", str(cfg))
        assert res.returncode == 0, res.stderr
        return res.stdout

    fine, coarse = scrape("1-2-5"), scrape("1-10")
    f, c = _buckets(fine), _buckets(coarse)
    zoned = {k[0] for k in f if "zonename=" in k[1]}
    assert len(zoned) >= 8
    coarse_le = {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1.0", "10.0", "+Inf"}
    for key, value in c.items():
        assert f[key] == value, key  # the same count at the same bound
        if key[0] in zoned:
            assert key[2] in coarse_le, key
    assert {k for k in f if k[2] in coarse_le} == set(c)
    for suffix in ("_sum", "_count"):
        lines = {ln for ln in fine.splitlines() if f"_seconds{suffix}{{" in ln}
        assert lines == {ln for ln in coarse.splitlines() if f"_seconds{suffix}{{" in ln}
    assert len(coarse) < 0.75 * len(fine)


def test_a_reload_to_coarse_zone_buckets_keeps_every_count(tmp_path: Path) -> None:
    """SIGHUP with zone_buckets = "1-10": the histograms served go on with the coarse
    bounds, each with the count it had among the fine ones (the fine buckets are added
    up, nothing starts afresh); the reload's log line names the setting."""
    import signal
    import time
    import urllib.request

    from dtagent.config import load
    from dtagent.serve import Serve
    from tests.golden import BUNDLE
    from tests.helpers import free_port

    port = free_port()
    cfg = tmp_path / "dtagent.toml"

    def write(choice: str) -> None:
        cfg.write_text(f'[agent]\nlisten = "127.0.0.1:{port}"\n'
                       f'[sources]\nreplay = "{BUNDLE}"\n'
                       f'[dtrace]\nzone_buckets = "{choice}"\n')

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            return str(r.read().decode())

    write("1-2-5")
    serve = Serve(load(cfg), load=lambda: load(cfg))
    try:
        serve.start()
        fine = _buckets(scrape())
        write("1-10")
        assert serve.handle(signal.SIGHUP) is False
        time.sleep(1.1)  # past the moment whose collection scrapes share
        coarse = _buckets(scrape())
    finally:
        serve.stop()
    zoned = {k[0] for k in fine if "zonename=" in k[1]}
    assert len(zoned) >= 8 and zoned == {k[0] for k in coarse if "zonename=" in k[1]}
    for key, value in coarse.items():
        if key[0] in zoned:
            assert key[2] in {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1.0",
                              "10.0", "+Inf"}, key
        assert fine[key] == value, key
