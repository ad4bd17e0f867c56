"""The simulator writes hosts that look like SmartOS: real names, sentinels, churn."""

from __future__ import annotations

import re
from pathlib import Path

from dtagent.bundle import read_bundle
from dtagent.simulate import frames, make_host, simulate
from dtagent.simulate.model import PHYSCAP_UNLIMITED, UINT64_MAX
from dtagent.snapshot import KSTAT_TYPE_IO
from dtagent.zonemap import running_zones

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_bundle_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(a, 6, seed=5, duration=60)
    simulate(b, 6, seed=5, duration=60)
    simulate(c, 6, seed=6, duration=60)
    assert read_bundle(a).frames == read_bundle(b).frames
    assert read_bundle(a).frames != read_bundle(c).frames


def test_kstats_carry_smartos_names_and_classes() -> None:
    host = make_host(12, seed=1, start=0.0, step=5.0, duration=600)
    (frame,) = list(frames(host, 1))
    snap = frame.snapshot()
    zones = running_zones(snap)
    assert zones[0] == "global"
    for zoneid, name in zones.items():
        if zoneid == 0:
            continue
        assert UUID.match(name)
        for module, cls in (
            ("zones", "zone_misc"),
            ("memory_cap", "zone_memory_cap"),
            ("zone_vfs", "zone_vfs"),
            ("zone_zfs", "zone_zfs"),
        ):
            ks = snap.get(module, zoneid, name[:30])  # kstat names are cut to 30 chars
            assert ks is not None and ks.ks_class == cls and ks.data["zonename"] == name
        for rctl in ("lockedmem", "swapresv", "nprocs", "physicalmem"):
            ks = snap.get("caps", zoneid, f"{rctl}_zone_{zoneid}")
            assert ks is not None and ks.ks_class == "zone_caps"
    arc = snap.get("zfs", 0, "arcstats")
    assert arc is not None and {"hits", "misses", "size", "c_max", "l2_size"} <= set(arc.data)
    pool = snap.get("zfs", 0, "zones")
    assert pool is not None and pool.ks_type == KSTAT_TYPE_IO and pool.ks_class == "disk"
    vnics = [k for k in snap.module("link") if k.str_stat("zonename")]
    assert vnics and all(re.match(r"^z\d+_net\d$", k.name) for k in vnics)


def test_capped_and_uncapped_zones_use_the_platform_sentinels() -> None:
    host = make_host(14, seed=2, start=0.0, step=5.0, duration=600)
    snap = next(iter(frames(host, 1))).snapshot()
    physcaps = {k.data["physcap"] for k in snap.module("memory_cap")}
    swapcaps = {k.data["swapcap"] for k in snap.module("memory_cap")}
    assert PHYSCAP_UNLIMITED in physcaps and len(physcaps) > 2
    assert UINT64_MAX in swapcaps and len(swapcaps) > 2
    cpucaps = [k for k in snap.module("caps") if k.name.startswith("cpucaps_zone_")]
    capped = sum(1 for z in host.running() if z.cpu_cap)
    assert 0 < len(cpucaps) == capped < len(host.running())


def test_counters_grow_gauges_move_and_zones_churn() -> None:
    host = make_host(20, seed=3, start=0.0, step=5.0, duration=600)
    seen: list[dict[int, str]] = []
    user: dict[tuple[int, str], list[int]] = {}
    rss: set[int] = set()
    for frame in frames(host, 121):
        snap = frame.snapshot()
        seen.append(running_zones(snap))
        for ks in snap.module("zones"):
            user.setdefault((ks.instance, ks.data["zonename"]), []).append(ks.data["nsec_user"])
        rss |= {k.data["rss"] for k in snap.module("memory_cap") if k.instance != 0}
    for series in user.values():
        assert series == sorted(series)
    assert len(rss) > 100
    names_first, names_last = set(seen[0].values()), set(seen[-1].values())
    assert names_last < names_first  # some zones halted for good
    rebooted = {name for (zid, name) in user if [z for (z, n) in user if n == name] != [zid]}
    assert rebooted  # some zones came back under a new zone id
    ids = [zid for (zid, name) in user if name in rebooted]
    assert len(ids) == len(set(ids))
