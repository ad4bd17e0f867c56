"""Running zones by id, read from the zone_misc kstats.

The kstat name is the zone name cut to 30 characters (SmartOS zone names are
36-character UUIDs), so the full name always comes from the ``zonename`` statistic;
the instance is the zone id (illumos uts/common/os/zone.c).
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.snapshot import Kstat, KstatInput, KstatSnapshot

# illumos usr/src/uts/common/sys/zone.h GLOBAL_ZONEID; the global zone's name.
GLOBAL_ZONEID = 0
GLOBAL_ZONENAME = "global"
# What running_zones reads: every reader of zone names declares it among its inputs.
ZONES = KstatInput("zones")


def running_zones(kstats: KstatSnapshot) -> dict[int, str]:
    """zone id → full zone name for every zone that has a zones:<id> kstat.

    Made once per snapshot (most collectors ask) and shared: not to be changed.
    """
    return kstats.derived(_running_zones)


def _running_zones(kstats: KstatSnapshot) -> dict[int, str]:
    return zones_of(kstats.module("zones"))


def zones_of(kstats: Iterable[Kstat]) -> dict[int, str]:
    """The same, from any list of kstats (those of other modules are passed over)."""
    zones: dict[int, str] = {}
    for ks in kstats:
        if ks.module != "zones":
            continue
        name = ks.str_stat("zonename")
        if name:
            zones[ks.instance] = name
    return zones
