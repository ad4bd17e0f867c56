"""Per-zone processes against zone.max-processes, and the zone's fork failures.

Sources (illumos-joyent uts/common/os/zone.c, rctl.c):

* ``caps:<zoneid>:nprocs_zone_<zoneid>`` class ``zone_caps`` (uts/common/os/zone.c
  ``zone_nprocs_kstat_update``): ``usage`` = zone_nprocs, ``value`` = zone_nprocs_ctl,
  which is INT_MAX when zone.max-processes is not set (no limit).
* ``zones:<zoneid>:<zonename≤30>`` class ``zone_misc``: ``forkfail_cap``,
  ``forkfail_noproc``, ``forkfail_nomem``, ``forkfail_misc``, ``mapfail_seglim``
  (illumos-joyent, OmniOS) and ``init_restarts`` (illumos-joyent).
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import (
    ZoneNames,
    limit,
    per_zone,
    ratio,
    uint,
    zone_rctls,
)
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot, KstatInput
from dtagent.zonemap import ZONES

NPROCS = "caps:<zoneid>:nprocs_zone_<zoneid> (zone_caps)"
MISC = "zones:<zoneid>:<zonename> (zone_misc)"
Z = ("zonename",)

PROCS = MetricSpec(
    "illumos_zone_processes", "gauge", "Processes in the zone.", Z, "", NPROCS + " usage"
)
PROCS_CAP = MetricSpec(
    "illumos_zone_processes_cap",
    "gauge",
    "The zone's process limit (zone.max-processes); no series without one.",
    Z,
    "",
    NPROCS + " value",
)
PROCS_RATIO = MetricSpec(
    "illumos_zone_processes_cap_ratio",
    "gauge",
    "Processes against the zone's process limit, 0-1 (at 1 fork() fails).",
    Z,
    "ratio",
    NPROCS + " usage ÷ value",
)
FORKFAIL = MetricSpec(
    "illumos_zone_fork_failures_total",
    "counter",
    "fork() calls in the zone that failed, by reason (cap: a process or LWP limit, "
    "noproc: the process table, nomem: memory, misc: other).",
    ("zonename", "reason"),
    "",
    MISC + " forkfail_cap/noproc/nomem/misc",
)
MAPFAIL = MetricSpec(
    "illumos_zone_mmap_segment_limit_failures_total",
    "counter",
    "Mappings that failed because the zone hit its segment limit.",
    Z,
    "",
    MISC + " mapfail_seglim",
)
INIT_RESTARTS = MetricSpec(
    "illumos_zone_init_restarts_total",
    "counter",
    "Times the zone's init was restarted (illumos-joyent).",
    Z,
    "",
    MISC + " init_restarts",
)

SPECS = (PROCS, PROCS_CAP, PROCS_RATIO, FORKFAIL, MAPFAIL, INIT_RESTARTS)


class ZoneProcessesCollector(Collector):
    name = "zone_processes"
    description = (
        "Per-zone processes against the process limit (nprocs_zone_N kstats) and fork "
        "failures (zone_misc kstats)"
    )
    specs = SPECS
    kstat_inputs = (ZONES, KstatInput("caps"))

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        names = ZoneNames(snap.kstats)
        fams = Families(self.specs)
        for zone, ks in per_zone(self, names, zone_rctls(snap.kstats).get("nprocs", ())):
            usage = uint(self, ks, "usage")
            cap = limit(uint(self, ks, "value"), int_max_unlimited=True)
            if usage is not None:
                fams[PROCS.name].add((zone,), usage)
            if cap is not None:
                fams[PROCS_CAP.name].add((zone,), cap)
            r = ratio(usage, cap)
            if r is not None:
                fams[PROCS_RATIO.name].add((zone,), r)
        for zone, ks in per_zone(self, names, snap.kstats.module("zones")):
            made = snap.kstats.created(ks)
            for reason in ("cap", "noproc", "nomem", "misc"):
                v = uint(self, ks, f"forkfail_{reason}")
                if v is not None:
                    fams[FORKFAIL.name].add((zone, reason), v, made)
            v = uint(self, ks, "mapfail_seglim", required=False)
            if v is not None:
                fams[MAPFAIL.name].add((zone,), v, made)
            v = uint(self, ks, "init_restarts", required=False)
            if v is not None:
                fams[INIT_RESTARTS.name].add((zone,), v, made)
        return fams.all()
