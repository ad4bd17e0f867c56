"""Zone churn, replayed: zones halt, reboot (new zone id) and boot between scrapes, and
after every scrape exactly the series of the zones running then exist, with their
current zone ids, and nothing of a zone's previous incarnation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtagent.bundle import Frame, write_bundle
from dtagent.collectors import available
from dtagent.simulate import PARTS, make_host
from dtagent.simulate.model import SimHost, SimZone
from tests.test_zone_support import ZONE_COLLECTORS, Series, by_metric, replay_scrape


@dataclass(frozen=True)
class ZoneState:
    uuid: str
    zoneid: int | None
    cpu_cap: bool
    baseline: bool
    mem_cap: bool
    swap_cap: bool
    locked_cap: bool
    nprocs_cap: bool
    quota: bool


def _state(z: SimZone) -> ZoneState:
    return ZoneState(
        z.uuid, z.zoneid if z.running else None, bool(z.cpu_cap), bool(z.cpu_baseline),
        bool(z.mem_cap), bool(z.swap_cap), bool(z.locked_cap), bool(z.nprocs_cap),
        bool(z.quota),
    )  # fmt: skip


Churn = tuple[Path, list[list[ZoneState]], dict[str, str]]


def _frame(host: SimHost) -> Frame:
    frame = Frame(time=host.time)
    for part in PARTS:
        part.contribute(host, frame, host.rng)
    return frame


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Churn:
    host = make_host(8, seed=11, start=1_790_000_000.0, step=5.0, duration=60.0)
    host.events.clear()  # this test drives the life cycle itself
    z = {name: host.zones[i] for name, i in
         (("halted", 1), ("rebooted", 2), ("uncapped", 3), ("never", 7))}  # fmt: skip
    assert z["uncapped"].cpu_cap is None and not z["never"].running
    actions: list[Callable[[], None]] = [
        lambda: None,  # 0: all but "never" running
        lambda: host.halt(z["halted"]),  # 1: a zone halts
        lambda: (host.halt(z["rebooted"]), host.boot(z["rebooted"])),  # 2: reboot, new id
        lambda: (host.boot(z["halted"]), host.boot(z["never"])),  # 3: boots, a first boot
        lambda: host.halt(z["uncapped"]),  # 4: an uncapped zone halts
        lambda: None,  # 5: nothing changes
    ]
    frames: list[Frame] = []
    states: list[list[ZoneState]] = []
    for i, act in enumerate(actions):
        if i:
            host.time += host.step
        act()
        frames.append(_frame(host))
        states.append([_state(x) for x in host.zones])
    out = tmp_path_factory.mktemp("churn") / "churn.bundle"
    write_bundle(out, frames, source="test-churn")
    return out, states, {k: v.uuid for k, v in z.items()}


def _expected(metric: str, running: list[ZoneState]) -> set[str]:
    """Zones that must have ``metric``, given the zones running and their caps."""
    ngz = {s.uuid for s in running}
    allz = ngz | {"global"}
    has: dict[str, Callable[[ZoneState], bool]] = {
        "cpu_cap": lambda s: s.cpu_cap,
        "baseline": lambda s: s.baseline,
        "memory_cap": lambda s: s.mem_cap,
        "swap_cap": lambda s: s.swap_cap,
        "locked_memory_cap": lambda s: s.locked_cap,
        "processes_cap": lambda s: s.nprocs_cap,
        "quota": lambda s: s.quota,
    }
    cap_metrics = {
        "cpu_cap": ("cpu_cap_cpus", "cpu_effective_cap_cpus", "cpu_cap_usage_cpus",
                    "cpu_cap_max_usage_cpus", "cpu_cap_ratio", "cpu_cap_waiting_threads",
                    "cpu_below_cap_seconds_total", "cpu_above_cap_seconds_total",
                    "cpu_bursting_seconds"),
        "baseline": ("cpu_baseline_cpus", "cpu_above_baseline_seconds_total",
                     "cpu_burst_limit_seconds"),
        "memory_cap": ("memory_cap_bytes", "memory_cap_ratio"),
        "swap_cap": ("swap_cap_bytes", "swap_cap_ratio"),
        "locked_memory_cap": ("locked_memory_cap_bytes", "locked_memory_cap_ratio"),
        "processes_cap": ("processes_cap", "processes_cap_ratio"),
        "quota": ("dataset_quota_bytes", "quota_ratio"),
    }  # fmt: skip
    short = metric.removeprefix("illumos_zone_")
    for key, names in cap_metrics.items():
        if short in names:
            return {s.uuid for s in running if has[key](s)}
    if short in ("memory_rss_bytes", "boot_time_seconds") or short.startswith("dataset_"):
        return ngz  # the simulated global zone reads rss 0 and boot_time 0; has no dataset
    return allz


PER_ZONE_SKIP = {"illumos_zone_info", "illumos_zones", "illumos_zone_metadata_age_seconds",
                 "illumos_zone_dataset_space_age_seconds"}  # fmt: skip


def _zone_metrics(s: Series) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for (name, labels), _v in s.items():
        if name.startswith("illumos_zone_") and name not in PER_ZONE_SKIP:
            out.setdefault(name, set()).add(dict(labels)["zonename"])
    return out


def test_each_scrape_has_exactly_the_running_zones_series(
    churn: Churn,
) -> None:
    bundle, states, _names = churn
    every_metric = {s.name for c in ZONE_COLLECTORS for s in available()[c].specs}
    for i, zones in enumerate(states):
        s = replay_scrape(bundle, i)
        running = [z for z in zones if z.zoneid is not None]
        got = _zone_metrics(s)
        for metric in every_metric - PER_ZONE_SKIP:
            assert got.get(metric, set()) == _expected(metric, running), (i, metric)
        # one info series per zone, with the zone id of this incarnation
        info = [dict(k) for k in by_metric(s, "illumos_zone_info")]
        assert sorted(x["zonename"] for x in info) == sorted([z.uuid for z in zones] + ["global"])
        for z in zones:
            labels = next(x for x in info if x["zonename"] == z.uuid)
            if z.zoneid is None:
                assert (labels["zoneid"], labels["state"]) == ("", "stopped"), (i, z.uuid)
            else:
                assert (labels["zoneid"], labels["state"]) == (str(z.zoneid), "running")
        counts = {dict(k)["state"]: v for k, v in by_metric(s, "illumos_zones").items()}
        assert counts.get("running") == len(running) + 1
        assert counts.get("stopped", 0) == len(zones) - len(running)


def test_reboot_gets_a_new_zone_id_and_leaves_nothing_of_the_old_one(
    churn: Churn,
) -> None:
    bundle, states, names = churn
    before = {z.uuid: z.zoneid for z in states[1]}
    after = {z.uuid: z.zoneid for z in states[2]}
    old, new = before[names["rebooted"]], after[names["rebooted"]]
    assert old is not None and new is not None and new != old
    collectors = list(ZONE_COLLECTORS) + [c for c in ("link",) if c in available()]
    s = replay_scrape(bundle, 2, collectors)
    for (name, labels), _v in s.items():
        for key, val in labels:
            assert not (key == "zoneid" and val == str(old)), (name, labels)
            # VNICs of zones are named z<zoneid>_<link> in the global zone (cmon-agent
            # collectors-vm/link.js); the old incarnation's links are gone
            assert not val.startswith(f"z{old}_"), (name, labels)
    # the new incarnation's boot time is the reboot's
    prev = replay_scrape(bundle, 1)
    key = ("illumos_zone_boot_time_seconds", (("zonename", names["rebooted"]),))
    assert prev[key] == 1_790_000_000 and s[key] == 1_790_000_010  # booted at frame 2


def test_halted_zone_disappears_at_the_next_scrape(
    churn: Churn,
) -> None:
    bundle, _states, names = churn
    s0, s1 = replay_scrape(bundle, 0), replay_scrape(bundle, 1)
    gone = names["halted"]
    assert any(dict(k).get("zonename") == gone for k in (lbl for _n, lbl in s0))
    left = [n for (n, lbl) in s1 if dict(lbl).get("zonename") == gone]
    assert left == ["illumos_zone_info"]  # only its inventory entry, state=stopped
