"""Per-zone memory and swap against their caps, locked memory, and memory-cap pressure.

Sources (illumos-joyent uts/common/os/zone.c, rctl.c):

* ``memory_cap:<zoneid>:<zonename≤30>`` class ``zone_memory_cap`` (illumos-joyent
  uts/common/sys/zone.h ``zone_mcap_kstat_t``): ``rss``, ``physcap``, ``swap``,
  ``swapcap`` (bytes), ``nover``, ``pagedout`` (bytes), ``pgpgin``/``anonpgin``/
  ``execpgin``/``fspgin`` (pages), ``anon_alloc_fail``, ``n_pf_throttle`` and
  ``n_pf_throttle_usec`` (µs). Uncapped: physcap 17592186040320, swapcap UINT64_MAX.
* ``caps:<zoneid>:<rctl>_zone_<zoneid>`` class ``zone_caps`` (uts/common/os/zone.c
  ``zone_*_kstat_update``): ``usage`` and ``value`` of ``lockedmem`` (bytes), and of
  ``physicalmem``/``swapresv`` — used for rss/swap only where memory_cap is absent, so
  no series is exported twice.

The global zone's ``rss`` reads 0 on SmartOS (illumos-joyent issue #51, sample
kstat_p_memory_cap_global_rss.txt); that 0 is not exported.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import (
    PAGESIZE,
    UINT64_MAX,
    ZoneNames,
    limit,
    per_zone,
    ratio,
    uint,
    zone_of,
    zone_rctls,
)
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot, KstatInput
from dtagent.zonemap import GLOBAL_ZONENAME, ZONES

MCAP = "memory_cap:<zoneid>:<zonename> (zone_memory_cap)"
CAPS = "caps:<zoneid>:{}_zone_<zoneid> (zone_caps)"
Z = ("zonename",)


def _g(name: str, help_: str, unit: str, source: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_, Z, unit, source)


def _c(name: str, help_: str, unit: str, source: str) -> MetricSpec:
    return MetricSpec(name, "counter", help_, Z, unit, source)


RSS = _g(
    "illumos_zone_memory_rss_bytes",
    "Physical memory charged to the zone (resident set).",
    "bytes",
    MCAP + " rss; else " + CAPS.format("physicalmem") + " usage",
)
MEM_CAP = _g(
    "illumos_zone_memory_cap_bytes",
    "The zone's physical memory cap; no series without a cap.",
    "bytes",
    MCAP + " physcap; else " + CAPS.format("physicalmem") + " value",
)
MEM_RATIO = _g(
    "illumos_zone_memory_cap_ratio",
    "Physical memory against its cap, 0-1 (above 1: over the cap, being paged out).",
    "ratio",
    "rss ÷ physcap",
)
SWAP = _g(
    "illumos_zone_swap_bytes",
    "Swap (virtual memory) reserved by the zone, tmpfs included.",
    "bytes",
    MCAP + " swap; else " + CAPS.format("swapresv") + " usage",
)
SWAP_CAP = _g(
    "illumos_zone_swap_cap_bytes",
    "The zone's swap cap (zone.max-swap); no series without a cap.",
    "bytes",
    MCAP + " swapcap; else " + CAPS.format("swapresv") + " value",
)
SWAP_RATIO = _g(
    "illumos_zone_swap_cap_ratio",
    "Swap reserved against its cap, 0-1 (at 1 the zone's allocations fail).",
    "ratio",
    "swap ÷ swapcap",
)
LOCKED = _g(
    "illumos_zone_locked_memory_bytes",
    "Memory the zone has locked.",
    "bytes",
    CAPS.format("lockedmem") + " usage",
)
LOCKED_CAP = _g(
    "illumos_zone_locked_memory_cap_bytes",
    "The zone's locked memory limit (zone.max-locked-memory); no series without one.",
    "bytes",
    CAPS.format("lockedmem") + " value",
)
LOCKED_RATIO = _g(
    "illumos_zone_locked_memory_cap_ratio",
    "Locked memory against its limit, 0-1.",
    "ratio",
    CAPS.format("lockedmem") + " usage ÷ value",
)
NOVER = _c(
    "illumos_zone_memory_over_cap_total",
    "Times the zone went over its physical memory cap.",
    "",
    MCAP + " nover",
)
PAGEDOUT = _c(
    "illumos_zone_memory_paged_out_bytes_total",
    "Memory paged out of the zone to keep it under its cap.",
    "bytes",
    MCAP + " pagedout",
)
PGIN = _c(
    "illumos_zone_memory_paged_in_bytes_total",
    "Memory paged in by the zone, all kinds (pages × 4096).",
    "bytes",
    MCAP + " pgpgin",
)
ANONPGIN = _c(
    "illumos_zone_memory_anon_paged_in_bytes_total",
    "Anonymous memory paged back in from swap by the zone (pages × 4096).",
    "bytes",
    MCAP + " anonpgin",
)
EXECPGIN = _c(
    "illumos_zone_memory_exec_paged_in_bytes_total",
    "Executable pages paged in by the zone (pages × 4096).",
    "bytes",
    MCAP + " execpgin",
)
FSPGIN = _c(
    "illumos_zone_memory_fs_paged_in_bytes_total",
    "File system pages paged in by the zone (pages × 4096).",
    "bytes",
    MCAP + " fspgin",
)
ANON_FAIL = _c(
    "illumos_zone_memory_anon_alloc_failures_total",
    "Anonymous memory allocations of the zone that failed.",
    "",
    MCAP + " anon_alloc_fail",
)
PF_THROTTLE = _c(
    "illumos_zone_memory_pagefault_throttles_total",
    "Page faults of the zone delayed because it was over its memory cap.",
    "",
    MCAP + " n_pf_throttle",
)
PF_THROTTLE_TIME = _c(
    "illumos_zone_memory_pagefault_throttle_seconds_total",
    "Time the zone's page faults were delayed because it was over its memory cap.",
    "seconds",
    MCAP + " n_pf_throttle_usec ÷ 1e6",
)

SPECS = (
    RSS, MEM_CAP, MEM_RATIO, SWAP, SWAP_CAP, SWAP_RATIO, LOCKED, LOCKED_CAP, LOCKED_RATIO,
    NOVER, PAGEDOUT, PGIN, ANONPGIN, EXECPGIN, FSPGIN, ANON_FAIL, PF_THROTTLE,
    PF_THROTTLE_TIME,
)  # fmt: skip

# memory_cap counters: (spec, statistic, scale, required on every platform build).
# pagedout is bytes already (zone.c: "bytes of mem. paged out"); page-in counts are pages.
COUNTERS = tuple(
    (spec.name, stat, scale, required)
    for spec, stat, scale, required in (
        (NOVER, "nover", 1, True),
        (PAGEDOUT, "pagedout", 1, True),
        (PGIN, "pgpgin", PAGESIZE, True),
        (ANONPGIN, "anonpgin", PAGESIZE, True),
        (EXECPGIN, "execpgin", PAGESIZE, True),
        (FSPGIN, "fspgin", PAGESIZE, True),
        (ANON_FAIL, "anon_alloc_fail", 1, True),
        (PF_THROTTLE, "n_pf_throttle", 1, False),
        (PF_THROTTLE_TIME, "n_pf_throttle_usec", 1e-6, False),
    )
)


class ZoneMemoryCollector(Collector):
    name = "zone_memory"
    description = (
        "Per-zone memory, swap and locked memory against their caps, and memory-cap "
        "pressure (memory_cap and caps kstats)"
    )
    specs = SPECS
    kstat_inputs = (ZONES, KstatInput("memory_cap"), KstatInput("caps"))

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        names = ZoneNames(snap.kstats)
        fams = Families(self.specs)
        # zone -> (usage, cap) for memory and swap, memory_cap first, caps as fallback.
        mem: dict[str, tuple[int | None, int | None]] = {}
        swap: dict[str, tuple[int | None, int | None]] = {}
        for zone, ks in per_zone(self, names, snap.kstats.module("memory_cap")):
            rss = uint(self, ks, "rss")
            if zone == GLOBAL_ZONENAME and rss == 0:
                rss = None  # reads 0 in the SmartOS global zone (illumos-joyent #51)
            mem[zone] = (rss, limit(uint(self, ks, "physcap", required=rss is not None)))
            if "swap" in ks.data or "swapcap" in ks.data:
                swap[zone] = (uint(self, ks, "swap"), limit(uint(self, ks, "swapcap")))
            made = snap.kstats.created(ks)
            z = (zone,)  # one label tuple for the zone's samples
            data = ks.data
            for name, stat, scale, required in COUNTERS:
                v = data.get(stat)
                if type(v) is not int or v < 0 or v > UINT64_MAX:
                    v = uint(self, ks, stat, required=required)  # checked, logged
                if v is not None:
                    fams[name].add(z, v * scale, made)
        locked: dict[str, tuple[int | None, int | None]] = {}
        rctls = zone_rctls(snap.kstats)
        for rctl, target in (("physicalmem", mem), ("swapresv", swap), ("lockedmem", locked)):
            for ks in rctls.get(rctl, ()):
                owner = zone_of(self, names, ks)
                if owner is not None and owner not in target:
                    target[owner] = (uint(self, ks, "usage"), limit(uint(self, ks, "value")))
        for table, usage_spec, cap_spec, ratio_spec in (
            (mem, RSS, MEM_CAP, MEM_RATIO),
            (swap, SWAP, SWAP_CAP, SWAP_RATIO),
            (locked, LOCKED, LOCKED_CAP, LOCKED_RATIO),
        ):
            for zone, (usage, cap) in table.items():
                z = (zone,)
                if usage is not None:
                    fams[usage_spec.name].add(z, usage)
                if cap is not None:
                    fams[cap_spec.name].add(z, cap)
                r = ratio(usage, cap)
                if r is not None:
                    fams[ratio_spec.name].add(z, r)
        return fams.all()


