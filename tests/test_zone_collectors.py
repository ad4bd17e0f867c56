"""The zone collectors on real kstat samples (imported with ``dtagent import-kstat``) and
on simulated hosts, scraped through the agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dtagent.bundle import write_bundle
from dtagent.collectors.zone_common import PHYSCAP_UNLIMITED
from dtagent.simulate import frames, make_host
from dtagent.simulate.model import SimHost
from tests.helpers import dtagent
from tests.test_zone_support import Series, by_metric, replay_scrape, value, zones_of

SAMPLES = (
    "kstat_p_caps_cpucaps_smartos.txt",
    "kstat_p_caps_cpucaps_smartos_2.txt",
    "kstat_p_memory_cap_smartos_ngz.txt",
    "kstat_p_memory_cap_global_rss.txt",
    "omnios_kstat_memory_cap_decoded.txt",
    "omnios_kstat_zones_zone_misc_decoded.txt",
    "omnios_ngz_kstat_headers_decoded.txt",
)


@pytest.fixture(scope="module")
def samples_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SAMPLES as SAMPLES_DIR

    out = tmp_path_factory.mktemp("samples") / "zones.bundle"
    res = dtagent("import-kstat", *(str(SAMPLES_DIR / f) for f in SAMPLES), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def _frame(bundle: Path, sample: str) -> Series:
    return replay_scrape(bundle, SAMPLES.index(sample))


def test_cpucaps_sample_smartos(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "kstat_p_caps_cpucaps_smartos.txt")
    z1, z2 = "487b08a7-13ae-44be-82f8-2fdf59516a2f", "47b85581-25fd-4464-be95-ff9bfd2321fc"
    assert value(s, "illumos_zone_cpu_cap_cpus", zonename=z1) == 2.0
    assert value(s, "illumos_zone_cpu_cap_cpus", zonename=z2) == 4.0
    assert value(s, "illumos_zone_cpu_baseline_cpus", zonename=z1) == 0.18
    assert value(s, "illumos_zone_cpu_effective_cap_cpus", zonename=z2) == 4.0
    assert value(s, "illumos_zone_cpu_below_cap_seconds_total", zonename=z1) == 51942
    assert value(s, "illumos_zone_cpu_above_cap_seconds_total", zonename=z1) == 0
    assert value(s, "illumos_zone_cpu_above_baseline_seconds_total", zonename=z2) == 174
    assert value(s, "illumos_zone_cpu_cap_max_usage_cpus", zonename=z1) == 1.72
    assert value(s, "illumos_zone_cpu_cap_waiting_threads", zonename=z1) == 0
    assert value(s, "illumos_zone_cpu_cap_ratio", zonename=z1) == 0.0
    # burst_limit_sec 0 is "unlimited": no limit series, never a 0 limit.
    assert not by_metric(s, "illumos_zone_cpu_burst_limit_seconds")
    assert value(s, "illumos_zone_cpu_bursting_seconds", zonename=z1) == 0
    # Without zone_misc kstats (the sample has only caps) there is no CPU time, and the
    # inventory has no running zones; nothing is invented.
    assert not by_metric(s, "illumos_zone_cpu_seconds_total")
    assert not by_metric(s, "illumos_zone_info")


def test_cpucaps_sample_second_zone(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "kstat_p_caps_cpucaps_smartos_2.txt")
    z = "05a23e97-8054-e43e-d165-962fc52b39df"
    assert value(s, "illumos_zone_cpu_cap_cpus", zonename=z) == 4.0
    assert value(s, "illumos_zone_cpu_baseline_cpus", zonename=z) == 1.5
    assert value(s, "illumos_zone_cpu_cap_max_usage_cpus", zonename=z) == 1.39


def test_memory_cap_sample_keys_on_the_full_zonename(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "kstat_p_memory_cap_smartos_ngz.txt")
    # the kstat name is cut to 30 characters; the series carry the full UUID
    z = "962bc668-09d5-c087-b16f-d5aa6e88d042"
    assert zones_of(s, "illumos_zone_memory_rss_bytes") == {z}
    assert value(s, "illumos_zone_memory_rss_bytes", zonename=z) == 63193088
    assert value(s, "illumos_zone_memory_cap_bytes", zonename=z) == 17179869184
    assert value(s, "illumos_zone_memory_cap_ratio", zonename=z) == 63193088 / 17179869184
    assert value(s, "illumos_zone_swap_bytes", zonename=z) == 70828032
    assert value(s, "illumos_zone_swap_cap_ratio", zonename=z) == 70828032 / 68719476736
    assert value(s, "illumos_zone_memory_anon_paged_in_bytes_total", zonename=z) == 4096
    assert value(s, "illumos_zone_memory_exec_paged_in_bytes_total", zonename=z) == 821 * 4096
    assert value(s, "illumos_zone_memory_over_cap_total", zonename=z) == 0
    assert value(s, "illumos_zone_memory_paged_out_bytes_total", zonename=z) == 0


def test_global_zone_rss_zero_is_not_exported(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "kstat_p_memory_cap_global_rss.txt")
    assert not by_metric(s, "illumos_zone_memory_rss_bytes")
    assert value(s, "dtagent_collector_success", collector="zone_memory") == 1


def test_omnios_uncapped_sentinels_give_no_caps(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "omnios_kstat_memory_cap_decoded.txt")
    assert value(s, "illumos_zone_memory_rss_bytes", zonename="serv-wf") == 388493312
    assert value(s, "illumos_zone_swap_bytes", zonename="serv-wf") == 454160384
    for metric in ("memory_cap_bytes", "memory_cap_ratio", "swap_cap_bytes", "swap_cap_ratio"):
        assert not by_metric(s, f"illumos_zone_{metric}"), metric
    assert PHYSCAP_UNLIMITED not in s.values()
    assert float((1 << 64) - 1) not in s.values()


def test_omnios_zone_misc_sample(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "omnios_kstat_zones_zone_misc_decoded.txt")
    z = "cube-ws"
    assert value(s, "illumos_zone_cpu_seconds_total", zonename=z, mode="user") == 227321.585182107
    assert value(s, "illumos_zone_cpu_seconds_total", zonename=z, mode="system") == 1971.77243736
    assert value(s, "illumos_zone_cpu_wait_seconds_total", zonename=z) == 125888.182634147
    assert value(s, "illumos_zone_load_average", zonename=z, window="1m") == 1524 / 256
    assert value(s, "illumos_zone_load_average", zonename=z, window="15m") == 1494 / 256
    assert value(s, "illumos_zone_fork_failures_total", zonename=z, reason="cap") == 0
    assert value(s, "illumos_zone_boot_time_seconds", zonename=z) == 1620126456
    # no vmadm/zoneadm output in an imported dump: the zone is known from its kstat only
    info = by_metric(s, "illumos_zone_info")
    assert list(info) == [
        (("alias", ""), ("brand", ""), ("image_uuid", ""), ("state", "running"),
         ("zoneid", "5"), ("zonename", "cube-ws"))
    ]  # fmt: skip
    assert value(s, "illumos_zones", state="running") == 1
    # OmniOS has no init_restarts (joyent only): absent, not zero
    assert not by_metric(s, "illumos_zone_init_restarts_total")


def test_headers_without_data_give_nothing_and_do_not_fail(samples_bundle: Path) -> None:
    s = _frame(samples_bundle, "omnios_ngz_kstat_headers_decoded.txt")
    assert not [k for k in s if k[0].startswith("illumos_zone")]
    for c in ("zone_info", "zone_cpu", "zone_memory", "zone_processes", "zone_vfs"):
        assert value(s, "dtagent_collector_success", collector=c) == 1


# --- simulated hosts ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimHost, Path, int]:
    host = make_host(20, seed=7, start=1_790_000_000.0, step=5.0, duration=600.0)
    seen = list(frames(host, 30))
    out = tmp_path_factory.mktemp("sim") / "sim.bundle"
    write_bundle(out, seen, source="test")
    return host, out, len(seen) - 1


def test_simulated_host_every_running_zone_and_only_those(
    simulated: tuple[SimHost, Path, int],
) -> None:
    host, bundle, last = simulated
    s = replay_scrape(bundle, last)
    running = {z.uuid for z in host.running()} | {"global"}
    for metric in ("illumos_zone_cpu_seconds_total", "illumos_zone_vfs_reads_total",
                   "illumos_zone_zfs_read_bytes_total", "illumos_zone_swap_bytes",
                   "illumos_zone_processes"):  # fmt: skip
        assert zones_of(s, metric) == running, metric
    # the simulated global zone's boot_time is 0 (unknown): no series rather than 1970
    assert zones_of(s, "illumos_zone_boot_time_seconds") == running - {"global"}
    capped = {z.uuid for z in host.running() if z.cpu_cap}
    assert zones_of(s, "illumos_zone_cpu_cap_cpus") == capped
    assert zones_of(s, "illumos_zone_cpu_cap_ratio") == capped
    memcapped = {z.uuid for z in host.running() if z.mem_cap}
    assert zones_of(s, "illumos_zone_memory_cap_ratio") == memcapped
    assert zones_of(s, "illumos_zone_processes_cap_ratio") == {
        z.uuid for z in host.running() if z.nprocs_cap
    }
    quota = {z.uuid for z in host.running() if z.quota}
    assert zones_of(s, "illumos_zone_quota_ratio") == quota
    # every zone of the host, running or not, has one info series; none has an empty name
    info = by_metric(s, "illumos_zone_info")
    assert {dict(k)["zonename"] for k in info} == {z.uuid for z in host.zones} | {"global"}
    states = {dict(k)["zonename"]: dict(k)["state"] for k in info}
    for z in host.zones:
        assert states[z.uuid] == ("running" if z.running else "stopped")
        labels = dict(next(k for k in info if dict(k)["zonename"] == z.uuid))
        assert labels["alias"] == z.alias and labels["brand"] == z.brand
        assert labels["image_uuid"] == z.image_uuid
        assert labels["zoneid"] == (str(z.zoneid) if z.running else "")
    assert sum(by_metric(s, "illumos_zones").values()) == len(host.zones) + 1


def test_simulated_pressure_profiles_show_in_the_ratios(
    simulated: tuple[SimHost, Path, int],
) -> None:
    host, bundle, last = simulated
    s = replay_scrape(bundle, last)
    checked = 0
    for z in host.running():
        if "near_mem_cap" in z.profile:
            assert 0.9 <= value(s, "illumos_zone_memory_cap_ratio", zonename=z.uuid) < 1
            checked += 1
        if "over_mem_cap" in z.profile:
            assert value(s, "illumos_zone_memory_cap_ratio", zonename=z.uuid) >= 0.99
            assert value(s, "illumos_zone_memory_over_cap_total", zonename=z.uuid) > 0
            checked += 1
        if "near_swap_cap" in z.profile:
            assert value(s, "illumos_zone_swap_cap_ratio", zonename=z.uuid) >= 0.9
            checked += 1
        if "near_nprocs" in z.profile and z.nprocs_cap:
            assert value(s, "illumos_zone_processes_cap_ratio", zonename=z.uuid) >= 0.9
            checked += 1
        if "near_quota" in z.profile and z.quota:
            ratios = by_metric(s, "illumos_zone_quota_ratio")
            mine = [v for k, v in ratios.items() if dict(k)["zonename"] == z.uuid]
            assert mine and max(mine) >= 0.9
            checked += 1
        if "cpu_throttled" in z.profile and z.cpu_cap:
            assert value(s, "illumos_zone_cpu_cap_ratio", zonename=z.uuid) >= 0.9
            assert value(s, "illumos_zone_cpu_above_cap_seconds_total", zonename=z.uuid) > 0
            checked += 1
        if "slow_disk" in z.profile:
            assert value(s, "illumos_zone_vfs_100ms_ops_total", zonename=z.uuid) > 0
            assert value(s, "illumos_zone_vfs_delays_total", zonename=z.uuid) > 0
            checked += 1
    assert checked >= 6
    # latency threshold counts are cumulative: >10ms >= >100ms >= >1s >= >10s
    for z in host.running():
        counts = [value(s, f"illumos_zone_vfs_{t}_ops_total", zonename=z.uuid)
                  for t in ("10ms", "100ms", "1s", "10s")]  # fmt: skip
        assert counts == sorted(counts, reverse=True)


def test_no_zone_series_carries_a_sentinel_or_a_bad_label(
    simulated: tuple[SimHost, Path, int],
) -> None:
    _host, bundle, last = simulated
    for frame in (0, last):
        s = replay_scrape(bundle, frame)
        for (name, labels), v in s.items():
            if not name.startswith("illumos_zone"):
                continue
            keys = dict(labels)
            assert "zone" not in keys
            if name not in ("illumos_zones", "illumos_zone_metadata_age_seconds",
                            "illumos_zone_dataset_space_age_seconds"):  # fmt: skip
                assert keys.get("zonename"), (name, labels)
            if name != "illumos_zone_info":
                assert set(keys) <= {"zonename", "mode", "window", "reason", "dataset", "state"}
            assert v >= 0 and v not in (float(PHYSCAP_UNLIMITED), float((1 << 64) - 1))
            if name.endswith("_ratio"):
                assert v < 1.5, (name, labels, v)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_promtool_is_silent_on_zone_output(
    samples_bundle: Path, simulated: tuple[SimHost, Path, int]
) -> None:
    _host, sim_bundle, last = simulated
    scrapes = [(samples_bundle, i) for i in range(len(SAMPLES))]
    scrapes += [(sim_bundle, 0), (sim_bundle, last)]
    for bundle, frame in scrapes:
        out = dtagent("scrape", "--replay", str(bundle), "--frame", str(frame))
        assert out.returncode == 0, out.stderr
        check = subprocess.run(["promtool", "check", "metrics"], input=out.stdout,
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert check.returncode == 0 and not check.stdout.strip(), (bundle, frame, check.stdout)


def test_simulator_records_commands_on_change_and_when_the_cache_expires() -> None:
    from dtagent.parsers.zones import VMADM_ARGV, parse_vmadm_list, zfs_list_argv

    host = make_host(12, seed=5, start=1_790_000_000.0, step=5.0, duration=900.0)
    seen = list(frames(host, 181))
    vmadm_at = [i for i, f in enumerate(seen) for c in f.commands if c.argv == VMADM_ARGV]
    zfs_at = [i for i, f in enumerate(seen) for c in f.commands if c.argv == zfs_list_argv("zones")]
    assert zfs_at == [0, 60, 120, 180]  # every 300 s of 5 s frames
    assert vmadm_at[0] == 0 and len(vmadm_at) < 20  # not every frame
    # every recorded vmadm output matches the zones running in its frame
    for i in vmadm_at:
        out = next(c.stdout for c in seen[i].commands if c.argv == VMADM_ARGV)
        parsed = parse_vmadm_list(out)
        assert not parsed.bad and len(parsed.rows) == 12
        running = {k.data["zonename"]: k.instance for k in seen[i].kstats if k.module == "zones"}
        for row in parsed.rows:
            assert row.zoneid == running.get(row.zonename)
            assert row.state == ("running" if row.zoneid is not None else "stopped")
    # and between two records nothing changed: a zone boot or halt always records one
    for a, b in zip(vmadm_at, [*vmadm_at[1:], len(seen)], strict=True):
        ids = [sorted(k.instance for k in seen[j].kstats if k.module == "zones")
               for j in range(a, b)]  # fmt: skip
        assert all(x == ids[0] for x in ids)
