"""Bad data: missing statistics, wrong types, negative and absurd values, truncated
vmadm and zfs list output, failing and hanging commands. The collectors report what
they could, log each problem once, and the scrape succeeds.

Commands run for real (CommandRunner) against the stand-ins in tests/fakebin.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import structlog

from dtagent.agent import Agent
from dtagent.collectors.zone_cpu import ZoneCpuCollector
from dtagent.collectors.zone_dataset import ZoneDatasetCollector
from dtagent.collectors.zone_info import ZoneInfoCollector
from dtagent.collectors.zone_memory import ZoneMemoryCollector
from dtagent.collectors.zone_processes import ZoneProcessesCollector
from dtagent.collectors.zone_vfs import ZoneVfsCollector
from dtagent.exposition import render
from dtagent.snapshot import Kstat, KstatSnapshot, StatValue
from tests.helpers import stand_in_runner
from tests.test_zone_support import (
    FAKEBIN,
    by_metric,
    collect,
    fake_env,
    fakebin_path,
    forks,
    parse_text,
    value,
    zones_of,
)

Z1 = "962bc668-09d5-c087-b16f-d5aa6e88d042"
Z2 = "dc5cbce7-798a-4bc8-bdc5-61b4be00a22e"
U64 = (1 << 64) - 1


def misc(zid: int, name: str, **over: StatValue | None) -> Kstat:
    data: dict[str, StatValue] = {
        "zonename": name, "nsec_user": 5_000_000_000, "nsec_sys": 1_000_000_000,
        "nsec_waitrq": 2_000_000_000, "avenrun_1min": 256, "avenrun_5min": 128,
        "avenrun_15min": 64, "forkfail_cap": 0, "forkfail_noproc": 0, "forkfail_nomem": 0,
        "forkfail_misc": 0, "boot_time": 1_789_000_000,
    }  # fmt: skip
    for k, v in over.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return Kstat("zones", zid, name[:30], "zone_misc", data=data)


def memcap(zid: int, name: str, **over: StatValue) -> Kstat:
    data: dict[str, StatValue] = {
        "zonename": name, "rss": 1 << 30, "physcap": 2 << 30, "swap": 1 << 30,
        "swapcap": 4 << 30, "nover": 0, "pagedout": 0, "pgpgin": 10, "anonpgin": 1,
        "execpgin": 2, "fspgin": 3, "anon_alloc_fail": 0,
    }  # fmt: skip
    data.update(over)
    return Kstat("memory_cap", zid, name[:30], "zone_memory_cap", data=data)


def rctl(zid: int, name: str, rctl_name: str, usage: StatValue, value: StatValue) -> Kstat:
    return Kstat("caps", zid, f"{rctl_name}_zone_{zid}", "zone_caps",
                 data={"zonename": name, "usage": usage, "value": value})  # fmt: skip


def test_missing_and_mistyped_statistics_drop_only_their_series() -> None:
    kstats = [
        misc(1, Z1, nsec_sys=None, avenrun_5min=None),  # missing
        misc(2, Z2, nsec_user="fast", nsec_waitrq=1.5),  # a string and a float
    ]
    with structlog.testing.capture_logs() as logs:
        cpu = ZoneCpuCollector()
        for _ in range(3):
            s = collect([cpu], kstats, stand_in_runner(str(FAKEBIN)))
    assert value(s, "illumos_zone_cpu_seconds_total", zonename=Z1, mode="user") == 5.0
    assert ("illumos_zone_cpu_seconds_total", (("mode", "system"), ("zonename", Z1))) not in s
    assert value(s, "illumos_zone_load_average", zonename=Z1, window="1m") == 1.0
    assert ("illumos_zone_load_average", (("window", "5m"), ("zonename", Z1))) not in s
    assert ("illumos_zone_cpu_seconds_total", (("mode", "user"), ("zonename", Z2))) not in s
    assert value(s, "illumos_zone_cpu_seconds_total", zonename=Z2, mode="system") == 1.0
    assert zones_of(s, "illumos_zone_cpu_wait_seconds_total") == {Z1}
    warnings = [e for e in logs if e["log_level"] == "warning"]
    # four problems, each logged once over three scrapes
    assert sorted(e["statistic"] for e in warnings) == ["avenrun_5min", "nsec_sys", "nsec_user",
                                                        "nsec_waitrq"]  # fmt: skip
    assert all(e["collector"] == "zone_cpu" for e in warnings)


def test_negative_absurd_and_sentinel_values() -> None:
    kstats = [
        misc(1, Z1),
        misc(2, Z2),
        memcap(1, Z1, rss=-5, physcap=U64, swapcap=0),
        memcap(2, Z2, rss=1 << 70, swap=3 << 30, physcap=17592186040320, swapcap=U64),
        rctl(1, Z1, "nprocs", 40, 2147483647),  # zone.max-processes not set: INT_MAX
        rctl(2, Z2, "nprocs", 40, 0),
        rctl(1, Z1, "lockedmem", 10, U64),
        Kstat("caps", 2, "cpucaps_zone_2", "zone_caps",
              data={"zonename": Z2, "value": 0, "usage": 50, "nwait": 0, "below_sec": 1,
                    "above_sec": 0, "maxusage": 60}),
    ]
    with structlog.testing.capture_logs() as logs:
        cols = [ZoneMemoryCollector(), ZoneProcessesCollector(), ZoneCpuCollector()]
        s = collect(cols, kstats, stand_in_runner(str(FAKEBIN)))
    for metric in ("memory_rss_bytes", "memory_cap_bytes", "memory_cap_ratio", "swap_cap_bytes",
                   "swap_cap_ratio", "processes_cap", "processes_cap_ratio",
                   "locked_memory_cap_bytes", "locked_memory_cap_ratio", "cpu_cap_cpus",
                   "cpu_cap_ratio"):  # fmt: skip
        assert not by_metric(s, f"illumos_zone_{metric}"), metric
    assert value(s, "illumos_zone_swap_bytes", zonename=Z2) == 3 << 30
    assert value(s, "illumos_zone_processes", zonename=Z1) == 40
    problems = {(e.get("statistic"), e["event"].split(";")[0]) for e in logs}
    assert ("rss", "kstat statistic out of range for an unsigned counter") in problems
    assert len([e for e in logs if e.get("statistic") == "rss"]) == 1  # once, not per zone


def test_zone_kstat_without_a_name_is_skipped_and_duplicates_are_not_doubled() -> None:
    nameless = Kstat("zone_vfs", 9, "cut-to-thirty-characters-xxxxx", "zone_vfs",
                     data={"reads": 1, "writes": 1})  # fmt: skip
    vfs = {"zonename": Z1, "reads": 7, "writes": 1, "nread": 1, "nwritten": 1}
    kstats = [misc(1, Z1), nameless, Kstat("zone_vfs", 1, Z1[:30], "zone_vfs", data=dict(vfs)),
              Kstat("zone_vfs", 3, "other", "zone_vfs", data=dict(vfs))]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        s = collect([ZoneVfsCollector()], kstats, stand_in_runner(str(FAKEBIN)))
    assert value(s, "illumos_zone_vfs_reads_total", zonename=Z1) == 7
    assert zones_of(s, "illumos_zone_vfs_reads_total") == {Z1}
    assert any("without a zonename" in e["event"] for e in logs)


VMS: list[dict[str, object]] = [
    {"uuid": Z1, "zoneid": 1, "state": "running", "brand": "joyent", "alias": "web-01",
     "image_uuid": "1b2c3d4e-0000-4000-8000-000000000001"},
    {"uuid": Z2, "zoneid": 2, "state": "running", "brand": "lx", "alias": "db-01",
     "image_uuid": "1b2c3d4e-0000-4000-8000-000000000002"},
    {"uuid": "7970c690-1738-4e58-a04f-8ce4ea8ebfca", "state": "stopped", "brand": "bhyve",
     "alias": "vm-01"},
]  # fmt: skip
DATASETS: list[dict[str, object]] = [
    {"name": "zones", "used": 10 << 30, "available": 1 << 40, "referenced": 1, "quota": 0},
    {"name": f"zones/{Z1}", "used": 9 << 30, "available": 1 << 30, "referenced": 8 << 30,
     "quota": 10 << 30},
    {"name": f"zones/{Z1}/data", "used": 1 << 30, "available": 1 << 30, "referenced": 1 << 30,
     "quota": 0},
    {"name": f"zones/{Z2}", "used": 1 << 30, "available": 1 << 40, "referenced": 1 << 30,
     "quota": 0},
    {"name": f"zones/{Z2}-disk0", "used": 20 << 30, "available": 1 << 40, "referenced": 1,
     "quota": "-"},
    {"name": "zones/7970c690-1738-4e58-a04f-8ce4ea8ebfca", "used": 1, "available": 1,
     "referenced": 1, "quota": 5},
]  # fmt: skip
RUNNING = [misc(0, "global"), misc(1, Z1), misc(2, Z2)]


def _info(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, dict[str, str]]:
    return {dict(k)["zonename"]: dict(k) for k in by_metric(s, "illumos_zone_info")}


def test_good_commands_give_metadata_and_datasets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = fake_env(monkeypatch, tmp_path, vms=VMS, datasets=DATASETS)
    runner = stand_in_runner(fakebin_path())
    info, ds = ZoneInfoCollector(), ZoneDatasetCollector()
    s = collect([info, ds], RUNNING, runner)
    zones = _info(s)
    assert zones[Z1]["alias"] == "web-01" and zones[Z1]["zoneid"] == "1"
    assert zones["7970c690-1738-4e58-a04f-8ce4ea8ebfca"]["state"] == "stopped"
    assert zones["global"]["zoneid"] == "0"
    assert value(s, "illumos_zone_quota_ratio", zonename=Z1, dataset=f"zones/{Z1}") == 0.9
    # no quota, a volume without one, a stopped zone's dataset: no ratio
    assert len(by_metric(s, "illumos_zone_quota_ratio")) == 1
    assert value(s, "illumos_zone_dataset_used_bytes", zonename=Z2,
                 dataset=f"zones/{Z2}-disk0") == 20 << 30  # fmt: skip
    # each runs once per refresh: a second scrape forks nothing, a zone halting re-runs
    # vmadm only (the two run side by side: their order is not fixed)
    collect([info, ds], RUNNING, runner)
    assert sorted(argv[0] for argv in forks(log)) == ["vmadm", "zfs"]
    collect([info, ds], RUNNING[:2], runner)
    assert [argv[0] for argv in forks(log)][2:] == ["vmadm"]
    # a zone created since the listing: its datasets are listed at once
    z3 = "5e1ea978-70a7-4e49-ba60-dbd625329041"
    (tmp_path / "datasets.json").write_text(json.dumps([*DATASETS, {
        "name": f"zones/{z3}", "used": 1, "available": 1, "referenced": 1, "quota": 0}]))
    s = collect([info, ds], [*RUNNING, misc(3, z3)], runner)
    assert sorted(argv[0] for argv in forks(log)[3:]) == ["vmadm", "zfs"]
    assert value(s, "illumos_zone_dataset_used_bytes", zonename=z3, dataset=f"zones/{z3}") == 1


def test_truncated_vmadm_and_zfs_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_env(monkeypatch, tmp_path, vms=VMS, datasets=DATASETS, vmadm="truncate", zfs="truncate")
    with structlog.testing.capture_logs() as logs:
        info, ds = ZoneInfoCollector(), ZoneDatasetCollector()
        runner = stand_in_runner(fakebin_path())
        for _ in range(2):
            s = collect([info, ds], RUNNING, runner, time=time.time())
    zones = _info(s)
    # the complete first line (sorted by uuid: the stopped zone) made it, and every
    # running zone is still there from its kstats, with its zone id
    assert zones["7970c690-1738-4e58-a04f-8ce4ea8ebfca"]["alias"] == "vm-01"
    assert {zones[z]["zoneid"] for z in (Z1, Z2)} == {"1", "2"}
    assert {zones[z]["state"] for z in (Z1, Z2, "global")} == {"running"}
    assert by_metric(s, "illumos_zone_dataset_used_bytes")  # complete zfs lines kept
    events = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert events.count("zone inventory lines not understood; they are left out") == 1
    assert events.count("zfs list lines not understood; they are left out") == 1


def test_hanging_commands_are_killed_and_the_scrape_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = fake_env(monkeypatch, tmp_path, vms=VMS, datasets=DATASETS, vmadm="hang", zfs="hang")
    monkeypatch.setenv("DTAGENT_FAKE_HANG_SECONDS", "30")
    with structlog.testing.capture_logs() as logs:
        cols = [ZoneInfoCollector(command_timeout=0.5), ZoneCpuCollector(),
                ZoneDatasetCollector(command_timeout=0.5)]  # fmt: skip
        runner = stand_in_runner(fakebin_path())
        agent = Agent(cols, _Static(RUNNING), runner, illumos=True, reuse_within=0)
        started = time.monotonic()
        agent.collect()  # sets vmadm and zfs off, in the background
        first = time.monotonic() - started
        assert runner.settle(5)  # both killed at their 0.5 s deadline
        started = time.monotonic()
        text = render(agent.collect()).decode()
        agent.collect()  # the failures are not retried at once: nothing runs
        elapsed = time.monotonic() - started
    assert first < 0.4 and elapsed < 0.4, (first, elapsed)
    s = parse_text(text)
    for c in ("zone_info", "zone_cpu", "zone_dataset"):
        assert value(s, "dtagent_collector_success", collector=c) == 1
    zones = _info(s)
    assert set(zones) == {"global", Z1, Z2}  # from the kstats
    assert zones[Z1] == {"zonename": Z1, "zoneid": "1", "alias": "", "brand": "",
                         "state": "running", "image_uuid": ""}  # fmt: skip
    assert not by_metric(s, "illumos_zone_dataset_used_bytes")
    assert value(s, "illumos_zone_cpu_seconds_total", zonename=Z1, mode="user") == 5.0
    assert value(s, "dtagent_command_failures_total", command="vmadm list") == 1
    assert value(s, "dtagent_command_failures_total", command="zfs list") == 1
    assert sorted(a[0] for a in forks(log)) == ["vmadm", "zfs"]
    warned = [e for e in logs if e["log_level"] == "warning" and "collector" in e]
    assert sorted(e["collector"] for e in warned) == ["zone_dataset", "zone_info"]
    assert all("timed out" in str(e.get("error")) for e in warned)


def test_failing_vmadm_keeps_the_last_good_inventory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_env(monkeypatch, tmp_path, vms=VMS)
    info = ZoneInfoCollector()
    runner = stand_in_runner(fakebin_path())
    collect([info], RUNNING, runner)
    monkeypatch.setenv("DTAGENT_FAKE_VMADM_MODE", "fail")
    with structlog.testing.capture_logs() as logs:
        s = collect([info], RUNNING[:2], runner)  # Z2 halted: vmadm runs again and fails
        collect([info], RUNNING[:2], runner)
    zones = _info(s)
    assert zones[Z1]["alias"] == "web-01"
    assert (zones[Z2]["zoneid"], zones[Z2]["state"]) == ("", "stopped")  # nothing stale
    # the command source says so once (not at every retry); the collector has data
    failed = [e for e in logs if e["event"] == "command failed"]
    assert [e["argv"][0] for e in failed] == ["vmadm"]


def test_without_vmadm_zoneadm_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for cmd in ("zoneadm", "_fakecmd.py"):
        os.symlink(FAKEBIN / cmd, bindir / cmd)
    vms = [{"uuid": "global", "zonename": "global", "zoneid": 0, "state": "running",
            "brand": "ipkg"}, *VMS]  # fmt: skip
    log = fake_env(monkeypatch, tmp_path, vms=vms)
    s = collect([ZoneInfoCollector()], RUNNING, stand_in_runner(str(bindir)))
    zones = _info(s)
    assert zones["global"]["brand"] == "ipkg" and zones[Z2]["brand"] == "lx"
    assert zones["7970c690-1738-4e58-a04f-8ce4ea8ebfca"]["state"] == "installed"
    assert [a[0] for a in forks(log)] == ["zoneadm"]


class _Static:
    def __init__(self, kstats: list[Kstat]) -> None:
        self._kstats = kstats

    def kstats(self) -> KstatSnapshot:
        return KstatSnapshot(self._kstats, time=time.time())


def test_collector_settings_come_from_the_config(tmp_path: Path) -> None:
    from dtagent.config import ConfigError, load
    from dtagent.runtime import select_collectors

    good = tmp_path / "good.toml"
    good.write_text(
        "[collectors.zone_info]\nmetadata_refresh = 60\ncommand_timeout = 2.5\n"
        '[collectors.zone_dataset]\nzfs_list_interval = 900.0\nroot = "rpool/zones"\n'
    )
    cols = {c.name: c for c in select_collectors(load(good))}
    info, ds = cols["zone_info"], cols["zone_dataset"]
    assert isinstance(info, ZoneInfoCollector) and isinstance(ds, ZoneDatasetCollector)
    assert (info.metadata_refresh, info.command_timeout) == (60.0, 2.5)
    assert ds.zfs_list_interval == 900.0 and ds.argv[-2:] == ("-r", "rpool/zones")
    bad = tmp_path / "bad.toml"
    bad.write_text('[collectors.zone_dataset]\nzfs_list_interval = "5m"\n')
    with pytest.raises(ConfigError, match="zfs_list_interval"):
        load(bad)
    bad.write_text("[collectors.zone_info]\nrefresh = 5\n")
    with pytest.raises(ConfigError, match="expected a known setting"):
        load(bad)
