"""Per-zone CPU shares and ZFS I/O priority: the settable caps no kstat carries.

``zone.cpu-shares`` and ``zone.zfs-io-priority`` have no kstat (illumos-joyent
uts/common/os/zone.c creates caps kstats only for lockedmem, swapresv, nprocs,
physicalmem and cpucaps), so they come from one cached ``vmadm list -p -o
uuid,zonename,cpu_shares,zfs_io_priority`` on SmartOS (smartos-live
src/vm/man/vmadm.8.md: both "listable: yes"; -p joins the fields with ':' and prints an
unset value as ''). The command runs again when the set of running zones changes or after
``refresh`` seconds, never per zone. Off SmartOS (no vmadm) the collector exports
nothing. With these, every property the control wing can set (docs/control.md) is
visible in Prometheus, so a change shows in the next scrape after a refresh.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot
from dtagent.zonemap import running_zones

FIELDS = ("uuid", "zonename", "cpu_shares", "zfs_io_priority")
ARGV = ("vmadm", "list", "-p", "-o", ",".join(FIELDS))
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


def parse(text: str) -> tuple[dict[str, tuple[int | None, int | None]], list[str]]:
    """zonename → (cpu_shares, zfs_io_priority); and the lines not understood."""
    rows: dict[str, tuple[int | None, int | None]] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":")
        if len(parts) != len(FIELDS) or not parts[0]:
            bad.append(line[:200])
            continue
        uuid, zonename, shares, prio = parts
        values = []
        for v in (shares, prio):
            v = v.strip()
            if v and not v.isdigit():
                bad.append(line[:200])
                break
            values.append(int(v) if v else None)
        else:
            rows[zonename or uuid] = (values[0], values[1])
    return rows, bad


class ZoneSettingsCollector(Collector):
    name = "zone_settings"
    description = "Per-zone CPU shares and ZFS I/O priority (vmadm, cached)"
    specs = (SHARES, IO_PRIORITY)
    settings_help = {
        "refresh": "seconds before vmadm is run again when no zone booted or halted",
        "command_timeout": "seconds vmadm may take before it is killed",
    }

    def __init__(self, refresh: float = 60.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        if refresh < 0 or command_timeout <= 0:
            raise ValueError("refresh must be >= 0 and command_timeout > 0")
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        generation = tuple(sorted(running_zones(snap.kstats)))
        res = snap.commands.run(
            ARGV, max_age=self.refresh, timeout=self.command_timeout, generation=generation
        )
        if res.returncode == 127 and res.error is not None:
            return fams.all()  # no vmadm here (or not recorded in a bundle)
        if not res.ok:
            self.warn_once(
                "cmd",
                "vmadm failed; no cpu_shares or zfs_io_priority this scrape",
                rc=res.returncode,
                error=res.error,
                stderr=res.stderr.strip()[:300],
            )
            return fams.all()
        rows, bad = parse(res.stdout)
        if bad:
            self.warn_once(
                "parse", "vmadm lines not understood; left out", count=len(bad), text=bad[0]
            )
        for zonename in sorted(rows):
            shares, prio = rows[zonename]
            if shares is not None:
                fams[SHARES.name].add((zonename,), shares)
            if prio is not None:
                fams[IO_PRIORITY.name].add((zonename,), prio)
        return fams.all()
