"""Command outputs the zone collectors read (vmadm, zfs), as SmartOS prints them.

* ``vmadm list -p -o uuid,zonename,zoneid,state,brand,image_uuid,alias``: ``:``-joined
  fields, an absent value empty, no header (smartos-live src/vm/sbin/vmadm.js
  ``outputVMListLine``); a zone that is not running is ``stopped`` with no zone id.
* ``zfs list -Hp -t filesystem,volume -o name,used,available,referenced,quota -r zones``:
  tab-separated exact integers, quota ``0`` when none, ``-`` where the property does not
  apply (volumes), as libzfs prints with ``literal`` set.
* ``vmadm list -p -o uuid,zonename,cpu_shares,zfs_io_priority,max_lwps``: the same
  format; every zone's shares and I/O priority (vmadm's default 100 for most, a few
  raised) and its LWP cap (vmadm's default 2000 unless set), fixed per zone.

Outputs are recorded as docs/bundle.md says: when they change (vmadm: a zone boots or
halts) and whenever the agent's cache would have run the command again (every
``REFRESH`` seconds, ``SETTINGS_REFRESH`` for the settings list). Values are derived
from the zone and the clock, not from the host's random stream, so adding these outputs
changes no other part of a frame.
"""

from __future__ import annotations

import random
import zlib

from dtagent.bundle import Frame
from dtagent.parsers.zones import VMADM_ARGV, VMADM_SETTINGS_ARGV, zfs_list_argv
from dtagent.simulate.model import GiB, SimHost, SimZone
from dtagent.snapshot import CommandResult

REFRESH = 300.0  # the zone_info metadata_refresh and zone_dataset zfs_list_interval defaults
SETTINGS_REFRESH = 60.0  # the zone_settings refresh default
POOL = "zones"
POOL_SIZE = 20 * 1024 * GiB
_ZFS_ARGV = zfs_list_argv(POOL)


def vmadm_list(host: SimHost) -> str:
    """vmadm list -p output for the host's zones (vmadm does not list the global zone)."""
    lines = []
    for z in sorted(host.zones, key=lambda z: z.uuid):
        zoneid = str(z.zoneid) if z.running and z.zoneid is not None else ""
        state = "running" if z.running else "stopped"
        fields = (z.uuid, z.uuid, zoneid, state, z.brand, z.image_uuid, z.alias)
        lines.append(":".join(fields) + "\n")
    return "".join(lines)


def vmadm_settings(host: SimHost) -> str:
    """vmadm list -p output of every zone's cpu_shares, zfs_io_priority and max_lwps."""
    lines = []
    for z in sorted(host.zones, key=lambda z: z.uuid):
        rng = random.Random(zlib.crc32(("settings:" + z.uuid).encode()))
        # Mostly vmadm's defaults: cpu_shares 100, zfs_io_priority 100, max_lwps 2000
        # (smartos-live src/vm/node_modules/VM.js applyZoneDefaults; src/vm/man/vmadm.8.md
        # "default: 100" / "default: 100" / "default: 2000"), some zones set otherwise.
        shares = rng.choice((100, 100, 100, 200, 500))
        priority = rng.choice((100, 100, 100, 50, 300))
        lwps = rng.choice((2000, 2000, 4000))
        lines.append(f"{z.uuid}:{z.uuid}:{shares}:{priority}:{lwps}\n")
    return "".join(lines)


def _zone_rng(zone: SimZone) -> random.Random:
    return random.Random(zlib.crc32(zone.uuid.encode()))


def _datasets(host: SimHost, zone: SimZone, hours: float) -> list[tuple[str, int, int, int | None]]:
    """(name, used, referenced, quota or None; -1 quota: not applicable) of one zone."""
    rng = _zone_rng(zone)
    out: list[tuple[str, int, int, int | None]] = []
    quota = zone.quota
    if quota:
        if "near_quota" in zone.profile:
            frac = min(0.99, rng.uniform(0.955, 0.975) + 0.004 * hours)
        else:
            frac = min(0.8, rng.uniform(0.1, 0.5) + 0.002 * hours)
        used = int(quota * frac)
    else:
        used = int((rng.uniform(2, 40) + 0.05 * hours) * GiB)
    delegated = zone.brand in ("joyent", "joyent-minimal") and rng.random() < 0.5
    data_used = int(used * 0.6) if delegated else 0
    out.append((f"{POOL}/{zone.uuid}", used, used - data_used, quota))
    if delegated:
        out.append((f"{POOL}/{zone.uuid}/data", data_used, data_used, 0))
    if zone.brand in ("bhyve", "kvm"):
        size = rng.choice((10, 20, 50)) * GiB
        out.append((f"{POOL}/{zone.uuid}-disk0", size, int(size * rng.uniform(0.2, 0.9)), -1))
    return out


def zfs_list(host: SimHost) -> str:
    """zfs list -Hp output for the zones pool: the pool, images and every zone's datasets."""
    t0 = host.acc.setdefault("cmd_t0", host.time)
    hours = max(0.0, host.time - t0) / 3600
    rows: list[tuple[str, int, int, int | None]] = []
    images = sorted({z.image_uuid for z in host.zones if z.image_uuid})
    for image in images:
        rows.append((f"{POOL}/{image}", 2 * GiB, 2 * GiB, 0))
    for zone in sorted(host.zones, key=lambda z: z.uuid):
        rows.extend(_datasets(host, zone, hours))
    total = sum(used for name, used, _, _ in rows if name.count("/") == 1)
    pool_avail = max(0, POOL_SIZE - total)
    lines = [f"{POOL}\t{total}\t{pool_avail}\t{64 * 1024}\t0\n"]
    parents = {name: (used, quota) for name, used, _, quota in rows}
    for name, used, refer, quota in sorted(rows):
        parent = parents.get(name.rsplit("/", 1)[0]) if name.count("/") > 1 else None
        limit = quota if quota and quota > 0 else (parent[1] if parent and parent[1] else None)
        held = parent[0] if parent and limit == parent[1] else used
        avail = pool_avail if limit is None else max(0, min(pool_avail, limit - held))
        quota_text = "-" if quota == -1 else str(quota or 0)
        lines.append(f"{name}\t{used}\t{avail}\t{refer}\t{quota_text}\n")
    return "".join(lines)


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Record vmadm list when it changes or is due, zfs list when it is due."""
    vmadm = vmadm_list(host)
    crc = float(zlib.crc32(vmadm.encode()))
    last_vmadm = host.acc.get("cmd_vmadm_at")
    if (
        last_vmadm is None
        or host.acc.get("cmd_vmadm_crc") != crc
        or host.time - last_vmadm >= REFRESH
    ):
        frame.commands.append(CommandResult(VMADM_ARGV, 0, vmadm, ""))
        host.acc["cmd_vmadm_crc"] = crc
        host.acc["cmd_vmadm_at"] = host.time
    last_settings = host.acc.get("cmd_settings_at")
    if (
        last_settings is None
        or host.acc.get("cmd_settings_crc") != crc
        or host.time - last_settings >= SETTINGS_REFRESH
    ):
        frame.commands.append(CommandResult(VMADM_SETTINGS_ARGV, 0, vmadm_settings(host), ""))
        host.acc["cmd_settings_crc"] = crc
        host.acc["cmd_settings_at"] = host.time
    last_zfs = host.acc.get("cmd_zfs_at")
    if last_zfs is None or host.time - last_zfs >= REFRESH:
        frame.commands.append(CommandResult(_ZFS_ARGV, 0, zfs_list(host), ""))
        host.acc["cmd_zfs_at"] = host.time
