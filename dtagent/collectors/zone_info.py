"""Zone inventory: one ``illumos_zone_info`` series per zone with its metadata, the
number of zones by state, and each running zone's boot time.

Running zones and their ids come from the ``zones:<zoneid>:*`` kstats (class
``zone_misc``), keyed on the ``zonename`` statistic (illumos uts/common/os/zone.c,
``zone_misc_kstat_create``). Metadata (alias, brand, image, and the zones that
are not running) comes from one inventory command, cached: ``vmadm list -p`` on SmartOS,
``zoneadm list -cp`` where vmadm does not exist (formats in dtagent.parsers.zones). The
command source runs it again when the set of running zone ids changes (a boot, halt or
reboot) or after ``metadata_refresh`` seconds, never per zone. When it fails or hangs,
the last good inventory is used for the zones still present, until it is older than two
refresh intervals; the problem is logged once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import uint
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers import ParseMemo
from dtagent.parsers.zones import (
    VMADM_ARGV,
    ZONEADM_ARGV,
    Parsed,
    ZoneEntry,
    parse_vmadm_list,
    parse_zoneadm_list,
)
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, CommandResult, HostSnapshot, KstatSnapshot
from dtagent.zonemap import ZONES, running_zones

MISC = "zones:<zoneid>:<zonename> (zone_misc)"
INVENTORY = "vmadm list -p -o uuid,zonename,zoneid,state,brand,image_uuid,alias | zoneadm list -cp"
# States in which a zone has no kernel instance (vmadm "stopped"; zoneadm/zonecfg
# states below "ready": usr/src/lib/libzonecfg zone_state_str).
DOWN_STATES = frozenset({"stopped", "installed", "configured", "incomplete", "down"})

INFO = MetricSpec(
    "illumos_zone_info",
    "gauge",
    "Zone metadata, always 1: zone id (empty when not running), alias, brand, state "
    "and image. Join it on zonename to label other zone series.",
    ("zonename", "zoneid", "alias", "brand", "state", "image_uuid"),
    "",
    f"{MISC} zonename; {INVENTORY}",
)
BY_STATE = MetricSpec(
    "illumos_zones",
    "gauge",
    "Zones on the host by state (running, stopped, installed, configured, …), the "
    "global zone included.",
    ("state",),
    "",
    f"{MISC}; {INVENTORY}",
)
BOOT = MetricSpec(
    "illumos_zone_boot_time_seconds",
    "gauge",
    "When the zone booted, Unix time.",
    ("zonename",),
    "seconds",
    MISC + " boot_time",
)
AGE = MetricSpec(
    "illumos_zone_metadata_age_seconds",
    "gauge",
    "How old the zone inventory (vmadm or zoneadm output) in use is.",
    (),
    "seconds",
    INVENTORY,
)

_PARSERS: dict[tuple[str, ...], Callable[[str], Parsed[ZoneEntry]]] = {
    VMADM_ARGV: parse_vmadm_list,
    ZONEADM_ARGV: parse_zoneadm_list,
}


def _not_there(res: CommandResult) -> bool:
    """The command does not exist here (or was not recorded in a bundle)."""
    return res.error is not None and res.returncode == 127


class ZoneInfoCollector(Collector):
    name = "zone_info"
    description = (
        "Zone inventory: metadata of every zone, zones by state, boot times "
        "(zone_misc kstats and vmadm or zoneadm)"
    )
    specs = (INFO, BY_STATE, BOOT, AGE)
    kstat_inputs = (ZONES,)
    settings = {
        "metadata_refresh": duration(
            300.0,
            "seconds before vmadm/zoneadm is run again when no zone booted or halted (a "
            "change of running zones always refreshes it)",
        ),
        "command_timeout": timeout(
            5.0,
            "seconds vmadm/zoneadm may take before it is killed (under Prometheus' default "
            "10 s scrape timeout: a hang costs one scrape this long, then the failure is "
            "cached for metadata_refresh)",
            maximum=60.0,
        ),
    }

    def __init__(self, metadata_refresh: float = 300.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.metadata_refresh = float(metadata_refresh)
        self.command_timeout = float(command_timeout)
        self._inventories = {argv: ParseMemo(parse) for argv, parse in _PARSERS.items()}

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        # a boot, halt or reboot changes the running zone ids: the inventory runs at once
        yield CommandRequest(
            VMADM_ARGV,
            refresh=self.metadata_refresh,
            timeout=self.command_timeout,
            generation=tuple(sorted(running_zones(kstats))),
            fallbacks=(ZONEADM_ARGV,),
        )

    def _inventory(self, snap: HostSnapshot) -> tuple[CommandResult, list[ZoneEntry]] | None:
        res = snap.commands.get(VMADM_ARGV)
        if res is None:
            return None  # not run yet: the zones come from the kstats alone
        if _not_there(res):
            self.warn_once(
                "cmd:none",
                "neither vmadm nor zoneadm is available; zone metadata comes from kstats only",
            )
            return None
        if not res.ok:
            self.warn_once(
                f"cmd:{res.argv[0]}:{res.error or res.returncode}",
                "zone inventory command failed; zone metadata comes from kstats only",
                argv=list(res.argv),
                rc=res.returncode,
                error=res.error,
                stderr=res.stderr.strip()[:300],
            )
            return None
        parsed = self._inventories[res.argv](res.stdout)
        if parsed.bad:
            lineno, line, reason = parsed.bad[0]
            self.warn_once(
                f"parse:{res.argv[0]}",
                "zone inventory lines not understood; they are left out",
                argv=list(res.argv),
                count=len(parsed.bad),
                first_line=lineno,
                text=line[:200],
                reason=reason,
            )
        return res, parsed.rows

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        running = running_zones(snap.kstats)
        boot: dict[str, int] = {}
        for ks in snap.kstats.module("zones"):
            name = ks.str_stat("zonename")
            if name and running.get(ks.instance) == name and name not in boot:
                bt = uint(self, ks, "boot_time", required=False)
                if bt:
                    boot[name] = bt
        inventory = self._inventory(snap)
        entries: dict[str, ZoneEntry] = {}
        down_state = "installed"
        if inventory is not None:
            res, rows = inventory
            down_state = "stopped" if res.argv == VMADM_ARGV else "installed"
            for row in rows:
                entries.setdefault(row.zonename, row)
            fams[AGE.name].add((), res.age)
        names_running = {name: zid for zid, name in running.items()}
        for name, entry in list(entries.items()):
            zid = names_running.get(name)
            if zid is not None:
                state = "running" if entry.state in DOWN_STATES else entry.state
                entries[name] = replace(entry, zoneid=zid, state=state)
            else:
                state = down_state if entry.state == "running" else entry.state
                entries[name] = replace(entry, zoneid=None, state=state)
        for zid, name in running.items():
            if name not in entries:
                entries[name] = ZoneEntry(name, zid, "running")
        states: Counter[str] = Counter()
        for name in sorted(entries):
            e = entries[name]
            states[e.state] += 1
            zoneid = "" if e.zoneid is None else str(e.zoneid)
            fams[INFO.name].add((name, zoneid, e.alias, e.brand, e.state, e.image_uuid), 1)
        for state, count in sorted(states.items()):
            fams[BY_STATE.name].add((state,), count)
        for name, bt in sorted(boot.items()):
            fams[BOOT.name].add((name,), bt)
        return fams.all()
