"""Per-zone CPU shares, ZFS I/O priority and LWP cap: the settable caps no kstat carries.

``zone.cpu-shares``, ``zone.zfs-io-priority`` and ``zone.max-lwps`` have no kstat
(illumos-joyent uts/common/os/zone.c creates caps kstats only for lockedmem, swapresv,
nprocs, physicalmem and cpucaps), so they come from one cached command, never per zone:

* on SmartOS ``vmadm list -p -o uuid,zonename,cpu_shares,zfs_io_priority,max_lwps``
  (smartos-live src/vm/man/vmadm.8.md: all "listable: yes"; -p joins the fields with ':'
  and prints an unset value as ''): the values vmadm configures;
* elsewhere (no vmadm) ``prctl -P -t privileged -i zone ZONE...`` for every running zone
  in one run (illumos-gate usr/src/cmd/prctl/prctl.c): the live privileged values. prctl
  reads them through a process of each zone, which it grabs for a moment
  (``grab_process_by_id``); a zone without one is left out (prctl says so on stderr).
  illumos-gate has no ``zone.zfs-io-priority`` (its zone.c zone_init registers none;
  the rctl is illumos-joyent's), so there that series is absent.

The command runs again when the set of running zones changes or after ``refresh``
seconds. With these, every property the control wing can set (docs/control.md) is
visible in Prometheus, so a change shows in the next scrape after a refresh.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.zones import (
    PRCTL_SETTINGS_RCTLS,
    VMADM_SETTINGS_ARGV,
    VMADM_SETTINGS_FIELDS,
    parse_prctl_zones,
    prctl_zones_argv,
)
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, CommandResult, HostSnapshot, KstatSnapshot
from dtagent.zonemap import ZONES, running_zones

FIELDS = VMADM_SETTINGS_FIELDS
ARGV = VMADM_SETTINGS_ARGV
SOURCE = (
    "vmadm list -p -o " + ",".join(FIELDS) + "; without vmadm, prctl -P -t privileged -i zone"
)

SHARES = MetricSpec(
    "illumos_zone_cpu_shares",
    "gauge",
    "The zone's fair-share scheduler shares (zone.cpu-shares): as vmadm configures them "
    "on SmartOS, the live value elsewhere.",
    ("zonename",),
    "",
    SOURCE,
)
IO_PRIORITY = MetricSpec(
    "illumos_zone_zfs_io_priority",
    "gauge",
    "The zone's ZFS I/O throttle priority (zone.zfs-io-priority): as vmadm configures it "
    "on SmartOS, the live value elsewhere (illumos-joyent only: illumos-gate has no such "
    "resource control).",
    ("zonename",),
    "",
    SOURCE,
)
LWPS = MetricSpec(
    "illumos_zone_lwps_cap",
    "gauge",
    "The most lightweight processes the zone may have (zone.max-lwps): as vmadm "
    "configures it on SmartOS, the live value elsewhere.",
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
    description = (
        "Per-zone CPU shares, ZFS I/O priority and LWP cap (vmadm, or prctl where "
        "there is no vmadm; cached)"
    )
    specs = (SHARES, IO_PRIORITY, LWPS)
    kstat_inputs = (ZONES,)  # the running zones decide when vmadm runs again
    settings = {
        "refresh": duration(
            60.0,
            "seconds before vmadm (or prctl) is run again when no zone booted or halted",
        ),
        "command_timeout": timeout(
            5.0,
            "seconds vmadm (or prctl) may take before it is killed (it runs in the "
            "background: a hang never delays a scrape)",
            maximum=60.0,
        ),
    }

    def __init__(self, refresh: float = 60.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        # a boot or halt changes the running zone ids: vmadm runs again at once
        running = running_zones(kstats)
        zones = sorted(name for zid, name in running.items() if zid != 0)
        yield CommandRequest(
            ARGV,
            refresh=self.refresh,
            timeout=self.command_timeout,
            generation=tuple(sorted(running)),
            # no vmadm (illumos): the live values of the running zones, one prctl
            fallbacks=(prctl_zones_argv(zones),) if zones else (),
        )

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        res = snap.commands.get(ARGV)
        if res is None:
            return fams.all()  # not run yet
        if res.returncode == 127 and res.error is not None:
            return fams.all()  # no vmadm here (or not recorded in a bundle)
        if res.argv[0] == "prctl":
            return self._from_prctl(fams, res)
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

    def _from_prctl(self, fams: Families, res: CommandResult) -> Iterable[MetricFamily]:
        # prctl goes on past a zone it cannot grab and exits with the last operand's
        # status (prctl.c main): what it printed is read whatever the exit status.
        zones, bad = parse_prctl_zones(res.stdout if res.error is None else "")
        if not zones and not res.ok:
            self.warn_once(
                f"prctl:{res.error or res.returncode}",
                "prctl failed; no cpu_shares, zfs_io_priority or max_lwps this scrape",
                rc=res.returncode,
                error=res.error,
                stderr=res.stderr.strip()[:300],
            )
            return fams.all()
        if bad:
            self.warn_once(
                "prctl-parse", "prctl lines not understood; left out", count=len(bad),
                text=bad[0],
            )  # fmt: skip
        for zonename in sorted(zones):
            for spec, rctl in zip(self.specs, PRCTL_SETTINGS_RCTLS, strict=True):
                value = zones[zonename].get(rctl)
                if value is not None:
                    fams[spec.name].add((zonename,), value)
        return fams.all()
