"""Per-zone CPU: time used, run-queue wait, load, and the CPU cap (cpucaps).

Sources (illumos-joyent uts/common/os/zone.c, rctl.c, disp/cpucaps.c):

* ``zones:<zoneid>:<zonename≤30>`` class ``zone_misc`` (illumos uts/common/os/zone.c
  ``zone_misc_kstat_update``): ``nsec_user``, ``nsec_sys``, ``nsec_waitrq`` (ns),
  ``avenrun_1min/5min/15min`` (FSCALE fixed point, divide by 256).
* ``caps:<zoneid>:cpucaps_zone_<zoneid>`` class ``zone_caps`` (uts/common/disp/cpucaps.c
  ``struct cap_kstat``): ``value`` (cap, % of one CPU), ``usage``, ``nwait``,
  ``below_sec``, ``above_sec``, ``maxusage``; illumos-joyent adds ``baseline``,
  ``effective``, ``burst_limit_sec``, ``bursting_sec``, ``above_base_sec``. The kstat
  exists only while the zone has a cap, so an uncapped zone has no cap series at all.
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
from dtagent.snapshot import HostSnapshot, Kstat, KstatInput
from dtagent.zonemap import ZONES

MISC = "zones:<zoneid>:<zonename> (zone_misc)"
CAPS = "caps:<zoneid>:cpucaps_zone_<zoneid> (zone_caps)"
FSCALE = 256  # sys/param.h FSHIFT 8
NANOS = 1e9
Z = ("zonename",)

CPU = MetricSpec(
    "illumos_zone_cpu_seconds_total",
    "counter",
    "CPU time used by the zone's threads, by mode (user, system).",
    ("zonename", "mode"),
    "seconds",
    MISC + " nsec_user, nsec_sys",
)
WAIT = MetricSpec(
    "illumos_zone_cpu_wait_seconds_total",
    "counter",
    "Time the zone's threads were runnable but waiting for a CPU (run queue).",
    Z,
    "seconds",
    MISC + " nsec_waitrq",
)
LOAD = MetricSpec(
    "illumos_zone_load_average",
    "gauge",
    "The zone's run-queue load average over the window (1m, 5m, 15m).",
    ("zonename", "window"),
    "",
    MISC + " avenrun_1min/5min/15min ÷ 256",
)
CAP = MetricSpec(
    "illumos_zone_cpu_cap_cpus",
    "gauge",
    "The zone's CPU cap in CPUs (zone.cpu-cap ÷ 100); no series without a cap.",
    Z,
    "CPUs",
    CAPS + " value",
)
BASELINE = MetricSpec(
    "illumos_zone_cpu_baseline_cpus",
    "gauge",
    "The zone's CPU baseline in CPUs (zone.cpu-baseline ÷ 100; illumos-joyent).",
    Z,
    "CPUs",
    CAPS + " baseline",
)
EFFECTIVE = MetricSpec(
    "illumos_zone_cpu_effective_cap_cpus",
    "gauge",
    "The cap enforced now in CPUs: the baseline while the burst time is used up, "
    "else the cap (illumos-joyent).",
    Z,
    "CPUs",
    CAPS + " effective",
)
USAGE = MetricSpec(
    "illumos_zone_cpu_cap_usage_cpus",
    "gauge",
    "CPU usage as the cap accounting sees it, in CPUs (decays 1% per tick).",
    Z,
    "CPUs",
    CAPS + " usage",
)
MAXUSAGE = MetricSpec(
    "illumos_zone_cpu_cap_max_usage_cpus",
    "gauge",
    "Highest CPU usage the cap accounting has seen, in CPUs.",
    Z,
    "CPUs",
    CAPS + " maxusage",
)
RATIO = MetricSpec(
    "illumos_zone_cpu_cap_ratio",
    "gauge",
    "CPU usage against the cap, 0-1 (1 = at the cap); only for capped zones.",
    Z,
    "ratio",
    CAPS + " usage ÷ value",
)
NWAIT = MetricSpec(
    "illumos_zone_cpu_cap_waiting_threads",
    "gauge",
    "Threads of the zone parked on the CPU cap wait queue now.",
    Z,
    "threads",
    CAPS + " nwait",
)
BELOW = MetricSpec(
    "illumos_zone_cpu_below_cap_seconds_total",
    "counter",
    "Time the zone spent under its CPU cap.",
    Z,
    "seconds",
    CAPS + " below_sec",
)
ABOVE = MetricSpec(
    "illumos_zone_cpu_above_cap_seconds_total",
    "counter",
    "Time the zone spent at or over its CPU cap (throttled).",
    Z,
    "seconds",
    CAPS + " above_sec",
)
ABOVE_BASE = MetricSpec(
    "illumos_zone_cpu_above_baseline_seconds_total",
    "counter",
    "Time the zone spent above its CPU baseline, bursting (illumos-joyent).",
    Z,
    "seconds",
    CAPS + " above_base_sec",
)
BURST_LIMIT = MetricSpec(
    "illumos_zone_cpu_burst_limit_seconds",
    "gauge",
    "How long the zone may burst above its baseline (zone.cpu-burst-time); "
    "no series when unlimited (0).",
    Z,
    "seconds",
    CAPS + " burst_limit_sec",
)
BURSTING = MetricSpec(
    "illumos_zone_cpu_bursting_seconds",
    "gauge",
    "How long the zone has been bursting above its baseline now (illumos-joyent).",
    Z,
    "seconds",
    CAPS + " bursting_sec",
)

SPECS = (
    CPU, WAIT, LOAD, CAP, BASELINE, EFFECTIVE, USAGE, MAXUSAGE, RATIO, NWAIT,
    BELOW, ABOVE, ABOVE_BASE, BURST_LIMIT, BURSTING,
)  # fmt: skip


class ZoneCpuCollector(Collector):
    name = "zone_cpu"
    description = (
        "Per-zone CPU time, run-queue wait and load (zone_misc kstats), and the CPU cap, "
        "its usage and throttling (cpucaps_zone_N kstats)"
    )
    specs = SPECS
    kstat_inputs = (ZONES, KstatInput("caps"))

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        names = ZoneNames(snap.kstats)
        fams = Families(self.specs)
        misc = (ks for ks in snap.kstats.module("zones") if ks.ks_class in ("zone_misc", ""))
        for zone, ks in per_zone(self, names, misc):
            made = snap.kstats.created(ks)
            for mode, stat in (("user", "nsec_user"), ("system", "nsec_sys")):
                v = uint(self, ks, stat)
                if v is not None:
                    fams[CPU.name].add((zone, mode), v / NANOS, made)
            v = uint(self, ks, "nsec_waitrq")
            if v is not None:
                fams[WAIT.name].add((zone,), v / NANOS, made)
            for window, stat in (("1m", "avenrun_1min"), ("5m", "avenrun_5min"),
                                 ("15m", "avenrun_15min")):  # fmt: skip
                v = uint(self, ks, stat)
                if v is not None:
                    fams[LOAD.name].add((zone, window), v / FSCALE)
        cpucaps = zone_rctls(snap.kstats).get("cpucaps", ())
        for zone, ks in per_zone(self, names, cpucaps):
            self._cpucaps(fams, zone, ks, snap.kstats.created(ks))
        return fams.all()

    def _cpucaps(self, fams: Families, zone: str, ks: Kstat, made: float | None) -> None:
        cap = limit(uint(self, ks, "value"))
        if cap is None:
            # cpucaps_zone_N only exists with a cap; a 0 here is a cap being removed.
            return
        z = (zone,)
        fams[CAP.name].add(z, cap / 100)
        usage = uint(self, ks, "usage")
        if usage is not None:
            fams[USAGE.name].add(z, usage / 100)
            r = ratio(usage, cap)
            if r is not None:
                fams[RATIO.name].add(z, r)
        baseline = limit(uint(self, ks, "baseline", required=False))
        if baseline is not None:
            fams[BASELINE.name].add(z, baseline / 100)
            above_base = uint(self, ks, "above_base_sec", required=False)
            if above_base is not None:
                fams[ABOVE_BASE.name].add(z, above_base)
        effective = limit(uint(self, ks, "effective", required=False))
        if effective is not None:
            fams[EFFECTIVE.name].add(z, effective / 100)
        simple = (
            (MAXUSAGE, "maxusage", 100.0, True),
            (NWAIT, "nwait", 1.0, True),
            (BELOW, "below_sec", 1.0, True),
            (ABOVE, "above_sec", 1.0, True),
            (BURSTING, "bursting_sec", 1.0, False),
        )
        for spec, stat, div, required in simple:
            v = uint(self, ks, stat, required=required)
            if v is not None:
                fams[spec.name].add(z, v / div, made)
        burst = limit(uint(self, ks, "burst_limit_sec", required=False))
        if burst is not None:
            fams[BURST_LIMIT.name].add(z, burst)
