"""Pool health, SMF and FMA command outputs of the simulated host, as illumos prints them.

* ``zpool list -Hp -o name,size,...,health`` and ``zpool status -p`` (illumos-gate
  usr/src/cmd/zpool/zpool_main.c): the ``zones`` pool, a raidz2 of six disks whose
  last scrub finished 40 days before the run starts. A third of the way through the run
  one disk starts returning checksum errors and is faulted (pool DEGRADED, an FMA
  fault opens), a spare takes over and resilvers until two thirds of the run, when the
  pool is ONLINE again and the fault is repaired. The global zone's ntp service is in
  maintenance all along, an open SMF defect in fmadm faulty.
* ``svcs -Za -H -o zone,state,fmri`` (svcs(1)): the global zone's and every running
  zone's instances; the zone with index 2 has one service in maintenance.
* ``fmadm faulty`` and ``fmstat`` (usr/src/cmd/fm/fmadm/common/faulty.c,
  usr/src/cmd/fm/fmstat/common/fmstat.c).

Outputs are recorded every ``REFRESH`` seconds (the collectors' default refresh).
Nothing here draws from the host's random stream, so other parts of a frame do not
change.
"""

from __future__ import annotations

import random
import time

from dtagent.bundle import Frame
from dtagent.parsers.fma import FMADM_ARGV, FMSTAT_ARGV
from dtagent.parsers.smf import SVCS_ARGV
from dtagent.parsers.zpool import LIST_ARGV, STATUS_ARGV
from dtagent.simulate.model import GiB, SimHost
from dtagent.simulate.zone_commands import POOL, POOL_SIZE

REFRESH = 60.0
DISKS = tuple(f"c0t5000CCA26B{n:02d}D5E0d0" for n in range(6))
SPARE = "c0t5000CCA26B99D5E0d0"
FAULT_UUID = "6f3c1e2a-9b4d-c8e7-a5f1-d2b7c4e9a013"
SMF_UUID = "0b9d4e62-7c1a-4f3e-e2d8-9a5c6b1f7e30"
GLOBAL_SERVICES = (
    ("online", "svc:/system/svc/restarter:default"),
    ("online", "svc:/system/filesystem/local:default"),
    ("online", "svc:/system/fmd:default"),
    ("online", "svc:/system/zones:default"),
    ("online", "svc:/network/ssh:default"),
    ("maintenance", "svc:/network/ntp:default"),
    ("online", "svc:/smartdc/agent/dtagent:default"),
    ("disabled", "svc:/network/nfs/server:default"),
    ("legacy_run", "lrc:/etc/rc2_d/S20sysetup"),
)
ZONE_SERVICES = (
    ("online", "svc:/system/filesystem/local:default"),
    ("online", "svc:/network/ssh:default"),
    ("online", "svc:/system/cron:default"),
    ("disabled", "svc:/network/rpc/bind:default"),
)
FMSTAT_MODULES = ("cpumem-retire", "disk-transport", "eft", "fmd-self-diagnosis",
                  "io-retire", "zfs-diagnosis", "zfs-retire")


def _phase(host: SimHost) -> tuple[str, float]:
    """('healthy'|'degraded'|'resilvered', progress 0-1 of the resilver)."""
    t0 = host.acc.setdefault("health_t0", host.time)
    span = host.acc.setdefault("health_span", host.acc.get("duration", 3600.0))
    f = (host.time - t0) / span
    if f < 1 / 3:
        return "healthy", 0.0
    if f < 2 / 3:
        return "degraded", (f - 1 / 3) * 3
    return "resilvered", 1.0


def _ctime(t: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t))


def zpool_list(host: SimHost) -> str:
    phase, _ = _phase(host)
    hours = (host.time - host.acc["health_t0"]) / 3600
    alloc = int(POOL_SIZE * (0.62 + 0.01 * hours))
    health = "DEGRADED" if phase == "degraded" else "ONLINE"
    return (f"{POOL}\t{POOL_SIZE}\t{alloc}\t{POOL_SIZE - alloc}\t14\t"
            f"{alloc * 100 // POOL_SIZE}\t1.00\t{health}\n")


def zpool_status(host: SimHost) -> str:
    phase, progress = _phase(host)
    t0 = host.acc["health_t0"]
    span = host.acc["health_span"]
    errors = 0 if phase == "healthy" else 23 + int(progress * 40)
    state = "DEGRADED" if phase == "degraded" else "ONLINE"
    out = [f"  pool: {POOL}\n", f" state: {state}\n"]
    if phase == "degraded":
        out += [
            "status: One or more devices is currently being resilvered.  The pool will\n",
            "\tcontinue to function, possibly in a degraded state.\n",
            "action: Wait for the resilver to complete.\n",
            f"  scan: resilver in progress since {_ctime(t0 + span / 3)}\n",
            f"\t{int(progress * 900)}G scanned at 412M/s, {int(progress * 850)}G issued at"
            " 388M/s, 900G total\n",
            f"\t{int(progress * 150)}G resilvered, {progress * 100:.2f}% done, 00:20:00 to go\n",
        ]
    elif phase == "resilvered":
        out.append(f"  scan: resilvered 150G in 0 days 00:20:00 with 0 errors on "
                   f"{_ctime(t0 + 2 * span / 3)}\n")
    else:
        out.append(f"  scan: scrub repaired 0 in 0 days 05:12:44 with 0 errors on "
                   f"{_ctime(t0 - 40 * 86400)}\n")
    out += ["config:\n", "\n", _vdev(0, "NAME", "STATE", "READ", "WRITE", "CKSUM"),
            _vdev(0, POOL, state), _vdev(2, "raidz2-0", state)]
    for i, disk in enumerate(DISKS):
        if i == 3 and phase == "degraded":
            out.append(_vdev(4, "spare-3", "DEGRADED"))
            out.append(_vdev(6, disk, "FAULTED", cksum=errors, note="too many errors"))
            out.append(_vdev(6, SPARE, "ONLINE", note=f"({int(progress * 150)}G resilvered)"))
        elif i == 3 and phase == "resilvered":
            out.append(_vdev(4, SPARE, "ONLINE", cksum=errors))
        else:
            out.append(_vdev(4, disk, "ONLINE"))
    out.append("\tspares\n")
    if phase == "degraded":
        out.append(f"\t  {SPARE:<{NAMEWIDTH - 2}}  INUSE     currently in use\n")
    else:
        out.append(f"\t  {SPARE if phase == 'healthy' else DISKS[3]:<{NAMEWIDTH - 2}}  AVAIL\n")
    out += ["\n", "errors: No known data errors\n"]
    return "".join(out)


NAMEWIDTH = 30


def _vdev(depth: int, name: str, state: str, read: object = 0, write: object = 0,
          cksum: object = 0, note: str = "") -> str:
    """One config line as print_status_config prints it: ``\\t%*s%-*s  %-8s %5s %5s %5s``."""
    line = (f"\t{'':{depth}}{name:<{NAMEWIDTH - depth}}  {state:<8} "
            f"{read!s:>5} {write!s:>5} {cksum!s:>5}")
    return line + (f"  {note}" if note else "") + "\n"


def svcs(host: SimHost) -> str:
    rows = [("global", state, fmri) for state, fmri in GLOBAL_SERVICES]
    for i, zone in enumerate(host.zones):
        if not zone.running or zone.brand in ("bhyve", "kvm"):
            continue  # hardware VMs run no SMF of their own
        for state, fmri in ZONE_SERVICES:
            rows.append((zone.uuid, state, fmri))
        app = "maintenance" if i == 2 else "online"
        rows.append((zone.uuid, app, "svc:/application/nginx:default"))
    return "".join(f"{z:<37}{s:<15}{f}\n" for z, s, f in rows)


_HEADER = (
    "--------------- ------------------------------------  -------------- ---------\n"
    "TIME            EVENT-ID                              MSG-ID         SEVERITY\n"
    "--------------- ------------------------------------  -------------- ---------\n"
)


def _problem(host: SimHost, when: float, uuid: str, msgid: str, severity: str, klass: str,
             fmri: str, description: str) -> str:
    return (
        _HEADER
        + f"{time.strftime('%b %d %H:%M:%S', time.localtime(when)):<15} {uuid:<37} "
        f"{msgid:<14} {severity:<9} \n"
        + f"\nHost        : {host.hostname}\nPlatform    : Joyent-Compute-Platform-3301\t"
        "Chassis_id  : S313579X9A03446\nProduct_sn  : \n\n"
        f"Fault class : {klass}\n"
        f"Affects     : {fmri}\n"
        "                  faulted and taken out of service\n"
        f"Problem in  : {fmri}\n"
        "                  faulted and taken out of service\n\n"
        f"Description : {description}\n\n"
    )


def fmadm_faulty(host: SimHost) -> str:
    """The global zone's ntp service in maintenance is an open SMF defect all along (fmd
    diagnoses the global zone's services); the faulted disk a problem while degraded."""
    phase, _ = _phase(host)
    t0 = host.acc["health_t0"]
    out = _problem(host, t0 - 3 * 86400, SMF_UUID, "SMF-8000-YX", "major",
                   "defect.sunos.smf.svc.maintenance", "svc:///network/ntp:default",
                   "A service failed - a start, stop or refresh method failed.")
    if phase == "degraded":
        out += _problem(host, t0 + host.acc["health_span"] / 3, FAULT_UUID, "ZFS-8000-GH",
                        "Major", "fault.fs.zfs.vdev.checksum",
                        "zfs://pool=zones/vdev=7a0ea1c5d3b2f4e6",
                        "The number of checksum errors associated with a ZFS device\n"
                        "              exceeded acceptable levels.")
    return out


def fmstat(host: SimHost) -> str:
    minutes = int((host.time - host.acc["health_t0"]) // 60)
    phase, _ = _phase(host)
    lines = ["module             ev_recv ev_acpt wait  svc_t  %w  %b  open solve  memsz  bufsz\n"]
    for i, module in enumerate(FMSTAT_MODULES):
        recv = 3 * i + minutes * (i % 3)
        acpt = recv // 2 if module.startswith("zfs") else 0
        opened = 1 if (module == "zfs-diagnosis" and phase == "degraded") else 0
        solved = 1 if (module == "zfs-diagnosis" and phase != "healthy") else 0
        lines.append(f"{module:<18}{recv:>8}{acpt:>8}  0.0    0.3   0   0  {opened:>4}"
                     f"{solved:>6}   1.2K      0\n")
    return "".join(lines)


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Record the five outputs when the collectors' refresh is due."""
    from dtagent.snapshot import CommandResult

    _phase(host)
    last = host.acc.get("health_at")
    if last is not None and host.time - last < REFRESH:
        return
    host.acc["health_at"] = host.time
    for argv, text in (
        (LIST_ARGV, zpool_list(host)),
        (STATUS_ARGV, zpool_status(host)),
        (SVCS_ARGV, svcs(host)),
        (FMADM_ARGV, fmadm_faulty(host)),
        (FMSTAT_ARGV, fmstat(host)),
    ):
        frame.commands.append(CommandResult(argv, 0, text, ""))


__all__ = ["GiB", "contribute"]
