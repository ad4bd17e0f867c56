"""Per-zone kstats: zones (zone_misc), memory_cap, caps (*_zone_N), zone_vfs, zone_zfs.

Names, classes and fields follow illumos-joyent uts/common/os/zone.c, rctl.c and
disp/cpucaps.c. Every kstat of a zone is created
at boot, so its counters start again from zero after a reboot, under a new zone id.
"""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.simulate.model import PHYSCAP_UNLIMITED, UINT64_MAX, GiB, MiB, SimHost, SimZone
from dtagent.snapshot import Kstat, StatValue

INT_MAX = (1 << 31) - 1

FSCALE = 256  # avenrun fixed point (sys/param.h FSHIFT 8)


def _grow(zone: SimZone, key: str, amount: float) -> int:
    zone.acc[key] = zone.acc.get(key, 0.0) + max(0.0, amount)
    return int(zone.acc[key])


def _walk(zone: SimZone, key: str, rng: random.Random, lo: float, hi: float) -> float:
    """A gauge that wanders inside [lo, hi]."""
    cur = zone.acc.get(key)
    if cur is None or not lo <= cur <= hi:
        cur = rng.uniform(lo, hi)
    cur += rng.uniform(-0.03, 0.03) * (hi - lo)
    cur = min(hi, max(lo, cur))
    zone.acc[key] = cur
    return cur


# The burst time (seconds above the baseline) a simulated zone with a baseline may use.
BURST_TIME = 3600


def _cpu_percent(zone: SimZone, rng: random.Random) -> float:
    cap = zone.cpu_cap
    if "cpu_throttled" in zone.profile and cap:
        return _walk(zone, "cpu_pct", rng, cap * 0.97, cap * 1.0)
    if "busy" in zone.profile:
        return _walk(zone, "cpu_pct", rng, 40, (cap or 400) * 0.7)
    return _walk(zone, "cpu_pct", rng, 1, (cap or 200) * 0.25)


def zone_frame(host: SimHost, zone: SimZone, zoneid: int, name: str, frame: Frame) -> None:
    rng = host.rng
    dt = host.step
    snaptime = int(host.time * 1e9)
    kname = name[:30]
    cpu = _cpu_percent(zone, rng)
    cpu_ns = cpu / 100 * dt * 1e9
    throttled = "cpu_throttled" in zone.profile and zone.cpu_cap is not None
    misc: dict[str, StatValue] = {
        "zonename": name,
        "nsec_user": _grow(zone, "nsec_user", cpu_ns * 0.7),
        "nsec_sys": _grow(zone, "nsec_sys", cpu_ns * 0.3),
        "nsec_waitrq": _grow(zone, "nsec_waitrq", cpu_ns * (0.4 if throttled else 0.02)),
        "avenrun_1min": int(cpu / 100 * FSCALE * rng.uniform(0.9, 1.1)),
        "avenrun_5min": int(cpu / 100 * FSCALE),
        "avenrun_15min": int(cpu / 100 * FSCALE * 0.95),
        "forkfail_cap": _grow(zone, "forkfail_cap", 1 if "near_nprocs" in zone.profile else 0),
        "forkfail_noproc": 0,
        "forkfail_nomem": 0,
        "forkfail_misc": 0,
        "mapfail_seglim": 0,
        "nested_interp": 0,
        "init_pid": 1000 + zoneid,
        "init_restarts": 0,
        "boot_time": zone.boot_time,
    }
    add = frame.kstats.append
    add(Kstat("zones", zoneid, kname, "zone_misc", snaptime=snaptime, data=misc))

    # memory_cap (joyent): rss against physcap, swap against swapcap.
    mem_cap = zone.mem_cap
    if mem_cap:
        if "over_mem_cap" in zone.profile:
            frac = _walk(zone, "rss_frac", rng, 1.005, 1.04)
        elif "near_mem_cap" in zone.profile:
            frac = _walk(zone, "rss_frac", rng, 0.92, 0.97)
        else:
            frac = _walk(zone, "rss_frac", rng, 0.2, 0.6)
        rss = int(mem_cap * frac)
    else:
        rss = int(_walk(zone, "rss_abs", rng, 0.5, 3.0) * GiB)
    swap_cap = zone.swap_cap
    if swap_cap and "near_swap_cap" in zone.profile:
        swap = int(swap_cap * _walk(zone, "swap_frac", rng, 0.9, 0.97))
    else:
        swap = int(rss * 1.15)
    over = mem_cap is not None and rss > mem_cap
    pagedout = _grow(zone, "pagedout", (rss - mem_cap) * 0.1 if over and mem_cap else 0)
    # Zone ids 0 is the global zone: its rss reads 0 on SmartOS (illumos-joyent #51).
    memcap: dict[str, StatValue] = {
        "zonename": name,
        "rss": 0 if zoneid == 0 else rss,
        "physcap": mem_cap if mem_cap else PHYSCAP_UNLIMITED,
        "swap": swap,
        "swapcap": swap_cap if swap_cap else UINT64_MAX,
        "nover": _grow(zone, "nover", 1 if over else 0),
        "pagedout": pagedout,
        "pgpgin": _grow(zone, "pgpgin", rng.uniform(0, 200) * dt),
        "anonpgin": _grow(zone, "anonpgin", rng.uniform(0, 50) * dt if over else 0),
        "execpgin": _grow(zone, "execpgin", rng.uniform(0, 5) * dt),
        "fspgin": _grow(zone, "fspgin", rng.uniform(0, 100) * dt),
        "anon_alloc_fail": 0,
        "n_pf_throttle": _grow(zone, "n_pf_throttle", rng.uniform(5, 30) * dt if over else 0),
        "n_pf_throttle_usec": _grow(
            zone, "n_pf_throttle_usec", rng.uniform(5e3, 5e4) * dt if over else 0
        ),
    }
    add(Kstat("memory_cap", zoneid, kname, "zone_memory_cap", snaptime=snaptime, data=memcap))

    # caps: rctl kstats, instance = zone id, class zone_caps (uts/common/os/rctl.c).
    nprocs_cap = zone.nprocs_cap
    if nprocs_cap and "near_nprocs" in zone.profile:
        nprocs = int(nprocs_cap * _walk(zone, "nprocs_frac", rng, 0.9, 0.97))
    else:
        nprocs = int(_walk(zone, "nprocs", rng, 20, 180))
    locked = int(min(rss, 64 * MiB) * rng.uniform(0.5, 1.0))
    rctls = {
        "lockedmem": (locked, zone.locked_cap or UINT64_MAX),
        "swapresv": (swap, swap_cap or UINT64_MAX),
        # unset zone.max-processes reads INT_MAX (uts/common/os/zone.c); an uncapped
        # physicalmem is ptob(UINT32_MAX) like physcap (illumos-joyent
        # usr/src/uts/common/os/zone.c, the physicalmem and memory_cap kstats)
        "nprocs": (nprocs, nprocs_cap or INT_MAX),
        "physicalmem": (rss, mem_cap or PHYSCAP_UNLIMITED),
    }
    for rctl, (usage, value) in rctls.items():
        add(
            Kstat(
                "caps",
                zoneid,
                f"{rctl}_zone_{zoneid}",
                "zone_caps",
                snaptime=snaptime,
                data={"zonename": name, "usage": usage, "value": value},
            )
        )
    if zone.cpu_cap:
        # cpucaps_zone_N exists only while a cap is set (disp/cpucaps.c).
        baseline = zone.cpu_baseline or 0
        above = cpu >= zone.cpu_cap * 0.97
        add(
            Kstat(
                "caps",
                zoneid,
                f"cpucaps_zone_{zoneid}",
                "zone_caps",
                snaptime=snaptime,
                data={
                    "value": zone.cpu_cap,
                    "baseline": baseline,
                    "effective": zone.cpu_cap,
                    # zone.cpu-burst-time of a zone with a baseline; 0 = unlimited
                    "burst_limit_sec": BURST_TIME if baseline else 0,
                    "bursting_sec": 0,
                    "usage": int(cpu),
                    "nwait": rng.randint(2, 12) if above else 0,
                    "below_sec": _grow(zone, "below_sec", 0 if above else dt),
                    "above_sec": _grow(zone, "above_sec", dt if above else 0),
                    "above_base_sec": _grow(zone, "above_base_sec", dt if cpu > baseline else 0),
                    "maxusage": int(max(zone.acc.get("maxusage", 0), cpu)),
                    "zonename": name,
                },
            )
        )
        zone.acc["maxusage"] = max(zone.acc.get("maxusage", 0), cpu)

    # zone_vfs (joyent): VFS read/write accounting and latency threshold counts.
    busy = 4.0 if "busy" in zone.profile else 1.0
    slow = "slow_disk" in zone.profile
    reads = rng.uniform(50, 400) * busy * dt
    writes = rng.uniform(20, 200) * busy * dt
    ops = reads + writes
    vfs: dict[str, StatValue] = {
        "zonename": name,
        "nread": _grow(zone, "vfs_nread", reads * rng.uniform(4096, 65536)),
        "reads": _grow(zone, "vfs_reads", reads),
        "rtime": _grow(zone, "vfs_rtime", reads * (2e6 if slow else 2e4)),
        "rlentime": _grow(zone, "vfs_rlentime", reads * (4e6 if slow else 3e4)),
        "rcnt": rng.randint(0, 3),
        "nwritten": _grow(zone, "vfs_nwritten", writes * rng.uniform(4096, 131072)),
        "writes": _grow(zone, "vfs_writes", writes),
        "wtime": _grow(zone, "vfs_wtime", writes * (5e6 if slow else 5e4)),
        "wlentime": _grow(zone, "vfs_wlentime", writes * (9e6 if slow else 6e4)),
        "wcnt": rng.randint(0, 2),
        "10ms_ops": _grow(zone, "vfs_10ms", ops * (0.2 if slow else 0.002)),
        "100ms_ops": _grow(zone, "vfs_100ms", ops * (0.03 if slow else 0.0002)),
        "1s_ops": _grow(zone, "vfs_1s", ops * (0.002 if slow else 0.0)),
        "10s_ops": _grow(zone, "vfs_10s", ops * (0.0001 if slow else 0.0)),
        "delay_cnt": _grow(zone, "vfs_delay_cnt", writes * (0.3 if slow else 0.0)),
        "delay_time": _grow(zone, "vfs_delay_time", writes * (0.3 * 800 if slow else 0.0)),
    }
    add(Kstat("zone_vfs", zoneid, kname, "zone_vfs", snaptime=snaptime, data=vfs))

    # zone_zfs (joyent): physical ZFS I/O attributed to the zone.
    zfs: dict[str, StatValue] = {
        "zonename": name,
        "nread": _grow(zone, "zfs_nread", reads * 0.3 * 131072),
        "reads": _grow(zone, "zfs_reads", reads * 0.3),
        "rtime": _grow(zone, "zfs_rtime", reads * 0.3 * (8e6 if slow else 4e5)),
        "rlentime": _grow(zone, "zfs_rlentime", reads * 0.3 * (1.6e7 if slow else 6e5)),
        "nwritten": _grow(zone, "zfs_nwritten", writes * 0.5 * 131072),
        "writes": _grow(zone, "zfs_writes", writes * 0.5),
        "waittime": _grow(zone, "zfs_waittime", writes * (2e7 if slow else 1e5)),
    }
    add(Kstat("zone_zfs", zoneid, kname, "zone_zfs", snaptime=snaptime, data=zfs))


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Append every running zone's kstats, the global zone's first."""
    zone_frame(host, host.global_zone, 0, "global", frame)
    for zone in host.running():
        assert zone.zoneid is not None
        zone_frame(host, zone, zone.zoneid, zone.uuid, frame)
