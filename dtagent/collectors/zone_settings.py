"""Per-zone CPU shares, ZFS I/O priority and LWP cap: the settable caps no kstat carries.

``zone.cpu-shares``, ``zone.zfs-io-priority`` and ``zone.max-lwps`` have no kstat
(illumos-joyent uts/common/os/zone.c creates caps kstats only for lockedmem, swapresv,
nprocs, physicalmem and cpucaps), so they come from one cached ``vmadm list -p -o
uuid,zonename,cpu_shares,zfs_io_priority,max_lwps`` on SmartOS (smartos-live
src/vm/man/vmadm.8.md: all "listable: yes"; -p joins the fields with ':' and prints an
unset value as ''). The command runs again when the set of running zones changes or after
``refresh`` seconds, never per zone. Off SmartOS (no vmadm) the collector exports
nothing. With these, every property the control wing can set (docs/control.md) is
visible in Prometheus, so a change shows in the next scrape after a refresh.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.zones import VMADM_SETTINGS_ARGV, VMADM_SETTINGS_FIELDS
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, HostSnapshot, KstatSnapshot
from dtagent.zonemap import ZONES, running_zones

FIELDS = VMADM_SETTINGS_FIELDS
ARGV = VMADM_SETTINGS_ARGV
SOURCE = "vmadm list -p -o " + ",".join(FIELDS)

SHARES = MetricSpec(
    "illumos_zone_cpu_shares",
    "gauge",
    "The zone's fair-share scheduler shares (zone.cpu-shares), as vmadm configures them.",
    ("zonename",),
    "",
    SOURCE,
)
IO_PRIORITY = MetricSpec(
    "illumos_zone_zfs_io_priority",
    "gauge",
    "The zone's ZFS I/O throttle priority (zone.zfs-io-priority), as vmadm configures it.",
    ("zonename",),
    "",
    SOURCE,
)
LWPS = MetricSpec(
    "illumos_zone_lwps_cap",
    "gauge",
    "The most lightweight processes the zone may have (zone.max-lwps), as vmadm "
    "configures it.",
    ("zonename",),
    "",
    SOURCE,
)


Settings = tuple[int | None, ...]  # in FIELDS order after uuid and zonename


def parse(text: str) -> tuple[dict[str, Settings], list[str]]:
    """zonename → (cpu_shares, zfs_io_priority, max_lwps); and the lines not understood."""
    rows: dict[str, Settings] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":")
        if len(parts) != len(FIELDS) or not parts[0]:
            bad.append(line[:200])
            continue
        uuid, zonename, *raw = parts
        values: list[int | None] = []
        for v in raw:
            v = v.strip()
            if v and not v.isdigit():
                bad.append(line[:200])
                break
            values.append(int(v) if v else None)
        else:
            rows[zonename or uuid] = tuple(values)
    return rows, bad


class ZoneSettingsCollector(Collector):
    name = "zone_settings"
    description = "Per-zone CPU shares, ZFS I/O priority and LWP cap (vmadm, cached)"
    specs = (SHARES, IO_PRIORITY, LWPS)
    kstat_inputs = (ZONES,)  # the running zones decide when vmadm runs again
    settings = {
        "refresh": duration(
            60.0, "seconds before vmadm is run again when no zone booted or halted"
        ),
        "command_timeout": timeout(
            5.0,
            "seconds vmadm may take before it is killed (it runs in the background: a "
            "hang never delays a scrape)",
            maximum=60.0,
        ),
    }

    def __init__(self, refresh: float = 60.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        # a boot or halt changes the running zone ids: vmadm runs again at once
        yield CommandRequest(
            ARGV,
            refresh=self.refresh,
            timeout=self.command_timeout,
            generation=tuple(sorted(running_zones(kstats))),
        )

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        res = snap.commands.get(ARGV)
        if res is None:
            return fams.all()  # not run yet
        if res.returncode == 127 and res.error is not None:
            return fams.all()  # no vmadm here (or not recorded in a bundle)
        if not res.ok:
            self.warn_once(
                f"cmd:{res.error or res.returncode}",
                "vmadm failed; no cpu_shares, zfs_io_priority or max_lwps this scrape",
                rc=res.returncode,
                error=res.error,
                reason=res.reason,
                stderr=res.stderr.strip()[:300],
            )
            return fams.all()
        rows, bad = parse(res.stdout)
        if bad:
            self.warn_once(
                "parse", "vmadm lines not understood; left out", count=len(bad), text=bad[0]
            )
        for zonename in sorted(rows):
            for spec, value in zip(self.specs, rows[zonename], strict=True):
                if value is not None:
                    fams[spec.name].add((zonename,), value)
        return fams.all()
