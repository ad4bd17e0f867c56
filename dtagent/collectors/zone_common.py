"""What every per-zone collector shares: which zone a kstat belongs to, checked
statistics, and the platform's "no limit" values.

Zone kstats are keyed on their own ``zonename`` statistic, never on the kstat name (cut
to 30 characters; SmartOS zone names are 36-character UUIDs), falling back to the zone
id (the instance) through the ``zones:<id>`` kstat (illumos uts/common/os/kstat_fr.c
``kstat_create_zone`` copies at most KSTAT_STRLEN - 1 characters of the name;
uts/common/os/zone.c creates the zone kstats). No collector class lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dtagent.collectors.base import Collector
from dtagent.snapshot import Kstat, KstatSnapshot
from dtagent.zonemap import GLOBAL_ZONEID, GLOBAL_ZONENAME, running_zones

UINT64_MAX = (1 << 64) - 1
INT_MAX = (1 << 31) - 1
# memory_cap physcap without a cap is ptob(UINT32_MAX) with 4 KiB pages (illumos-joyent
# uts/common/os/zone.c zone_mcap_kstat_update, zpers_pg_limit; seen in the OmniOS capture
# tests/fixtures/samples/omnios_kstat_memory_cap_decoded.txt).
PHYSCAP_UNLIMITED = 17592186040320
# x86 page size (illumos usr/src/uts/i86pc/sys/machparam.h MMU_PAGESHIFT 12); the
# memory_cap page-in counters count pages (uts/common/vm/vm_pvn.c adds btopr(len)).
PAGESIZE = 4096


def limit(value: int | None, *, int_max_unlimited: bool = False) -> int | None:
    """A cap as a number, or None for "no limit".

    0, UINT64_MAX and anything at or above ptob(UINT32_MAX) (17592186040320) mean no
    limit. ``int_max_unlimited``: INT_MAX too, which is what zone.max-processes reads
    when it is not set (uts/common/os/zone.c initialises zone_nprocs_ctl to INT_MAX).
    """
    if value is None or value <= 0 or value >= PHYSCAP_UNLIMITED:
        return None
    if int_max_unlimited and value >= INT_MAX:
        return None
    return value


def ratio(usage: float | None, cap: int | None) -> float | None:
    """usage / cap, or None when either is missing (uncapped: no ratio)."""
    if usage is None or cap is None or cap <= 0:
        return None
    return usage / cap


class ZoneNames:
    """Maps a zone kstat to its full zone name for one snapshot."""

    __slots__ = ("by_id",)

    def __init__(self, kstats: KstatSnapshot) -> None:
        self.by_id = running_zones(kstats)

    def of(self, ks: Kstat) -> str | None:
        name = ks.data.get("zonename")
        if name and isinstance(name, str):
            return name
        name = self.by_id.get(ks.instance)
        if name:
            return name
        if ks.instance == GLOBAL_ZONEID:
            return GLOBAL_ZONENAME
        return None


def uint(coll: Collector, ks: Kstat, stat: str, *, required: bool = True) -> int | None:
    """An unsigned integer statistic, or None (logged once) when it is missing, of
    another type, or out of the uint64 range. Optional statistics (fields only some
    platform builds have) are not logged when absent."""
    value = ks.data.get(stat)
    if type(value) is int and 0 <= value <= UINT64_MAX:
        return value  # the common case, first: one type check (a bool is no int here)
    if value is None:
        if required:
            coll.warn_once(
                f"missing:{ks.module}:{stat}",
                "kstat statistic missing; its series is left out",
                module=ks.module,
                kstat=f"{ks.module}:{ks.instance}:{ks.name}",
                statistic=stat,
            )
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        coll.warn_once(
            f"type:{ks.module}:{stat}",
            "kstat statistic is not an integer; its series is left out",
            kstat=f"{ks.module}:{ks.instance}:{ks.name}",
            statistic=stat,
            value=repr(value)[:80],
        )
        return None
    if value < 0 or value > UINT64_MAX:
        coll.warn_once(
            f"range:{ks.module}:{stat}",
            "kstat statistic out of range for an unsigned counter; its series is left out",
            kstat=f"{ks.module}:{ks.instance}:{ks.name}",
            statistic=stat,
            value=value,
        )
        return None
    return value


def zone_of(coll: Collector, names: ZoneNames, ks: Kstat) -> str | None:
    """The zone name of a kstat, logged once per module when it cannot be told."""
    name = names.of(ks)
    if name is None:
        coll.warn_once(
            f"nozone:{ks.module}",
            "zone kstat without a zonename statistic or a matching zones kstat; skipped",
            kstat=f"{ks.module}:{ks.instance}:{ks.name}",
        )
    return name


def per_zone(
    coll: Collector, names: ZoneNames, kstats: Iterable[Kstat]
) -> Iterator[tuple[str, Kstat]]:
    """(zone name, kstat) for the first of ``kstats`` of each zone; kstats whose zone
    cannot be told are skipped (logged once), a second one of a zone is ignored."""
    seen: set[str] = set()
    for ks in kstats:
        zone = zone_of(coll, names, ks)
        if zone is None or zone in seen:
            continue
        seen.add(zone)
        yield zone, ks


def zone_rctl(ks: Kstat) -> str | None:
    """``lockedmem`` for ``caps:<id>:lockedmem_zone_<id>`` (zone-level rctl kstats
    only: the project and task ones are ``…_project_<id>`` and ``…_task_<id>``)."""
    rctl, sep, rest = ks.name.partition("_zone_")
    if not sep or not rest.isdigit() or ks.ks_class not in ("zone_caps", ""):
        return None
    return rctl


def zone_rctls(kstats: KstatSnapshot) -> dict[str, list[Kstat]]:
    """The zone-level rctl kstats of the ``caps`` module by rctl (:func:`zone_rctl`), in
    snapshot order. Made once per snapshot and shared by the collectors that read caps
    (not to be changed), instead of each of them parsing every caps kstat's name."""
    return kstats.derived(_zone_rctls)


def _zone_rctls(kstats: KstatSnapshot) -> dict[str, list[Kstat]]:
    by_rctl: dict[str, list[Kstat]] = {}
    for ks in kstats.module("caps"):
        rctl = zone_rctl(ks)
        if rctl is not None:
            by_rctl.setdefault(rctl, []).append(ks)
    return by_rctl
