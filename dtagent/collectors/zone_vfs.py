"""Per-zone VFS and ZFS I/O: operations, bytes, busy and total times, slow-op counts,
and the ZFS I/O throttle.

Sources (illumos-joyent uts/common/sys/zone.h ``zone_vfs_kstat_t``/``zone_zfs_kstat_t``,
uts/common/os/zone.c ``zone_vfs_kstat_update``/``zone_zfs_kstat_update``):

* ``zone_vfs:<zoneid>:<zonename≤30>``: ``nread``, ``reads``, ``rtime``, ``rlentime``,
  ``rcnt``, ``nwritten``, ``writes``, ``wtime``, ``wlentime``, ``wcnt`` (a kstat_io_t
  fed by VFS reads and writes, times in ns); ``10ms_ops`` … ``10s_ops`` (cumulative
  counts of operations slower than the threshold: a 2 s op counts in 10ms, 100ms and
  1s); ``delay_cnt`` and ``delay_time`` (µs) of the ZFS I/O throttle.
* ``zone_zfs:<zoneid>:<zonename≤30>``: ``nread``, ``reads``, ``rtime``, ``rlentime``,
  ``nwritten``, ``writes``, ``waittime`` (ns reads waited before dispatch;
  zfs_zone.c ``zpers_zfs_rd_waittime``).

``*time`` is the time with at least one operation in progress (busy) and ``*lentime``
the queue-length-weighted time, i.e. the sum of the operations' durations: two
different things (cmon-agent exported wlentime as the run length). They are exported
as ``_busy_seconds_total`` and ``_time_seconds_total``.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import (
    UINT64_MAX,
    ZoneNames,
    per_zone,
    uint,
)
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.snapshot import HostSnapshot, KstatInput
from dtagent.zonemap import ZONES

VFS = "zone_vfs:<zoneid>:<zonename> (zone_vfs)"
ZFS = "zone_zfs:<zoneid>:<zonename> (zone_zfs)"
Z = ("zonename",)
NS = 1e-9
US = 1e-6

# (metric name, type, statistic, scale, unit, help)
_VFS: tuple[tuple[str, MetricType, str, float, str, str], ...] = (
    ("illumos_zone_vfs_reads_total", "counter", "reads", 1, "", "VFS read operations."),
    ("illumos_zone_vfs_writes_total", "counter", "writes", 1, "", "VFS write operations."),
    ("illumos_zone_vfs_read_bytes_total", "counter", "nread", 1, "bytes", "Bytes read via VFS."),
    ("illumos_zone_vfs_written_bytes_total", "counter", "nwritten", 1, "bytes",
     "Bytes written via VFS."),
    ("illumos_zone_vfs_read_busy_seconds_total", "counter", "rtime", NS, "seconds",
     "Time with at least one VFS read in progress."),
    ("illumos_zone_vfs_read_time_seconds_total", "counter", "rlentime", NS, "seconds",
     "Sum of the durations of VFS reads (reads in progress × time)."),
    ("illumos_zone_vfs_write_busy_seconds_total", "counter", "wtime", NS, "seconds",
     "Time with at least one VFS write in progress."),
    ("illumos_zone_vfs_write_time_seconds_total", "counter", "wlentime", NS, "seconds",
     "Sum of the durations of VFS writes (writes in progress × time)."),
    ("illumos_zone_vfs_reads_in_progress", "gauge", "rcnt", 1, "",
     "VFS reads in progress now."),
    ("illumos_zone_vfs_writes_in_progress", "gauge", "wcnt", 1, "",
     "VFS writes in progress now."),
    ("illumos_zone_vfs_10ms_ops_total", "counter", "10ms_ops", 1, "",
     "VFS reads and writes that took longer than 10 ms (cumulative thresholds)."),
    ("illumos_zone_vfs_100ms_ops_total", "counter", "100ms_ops", 1, "",
     "VFS reads and writes that took longer than 100 ms (cumulative thresholds)."),
    ("illumos_zone_vfs_1s_ops_total", "counter", "1s_ops", 1, "",
     "VFS reads and writes that took longer than 1 s (cumulative thresholds)."),
    ("illumos_zone_vfs_10s_ops_total", "counter", "10s_ops", 1, "",
     "VFS reads and writes that took longer than 10 s (cumulative thresholds)."),
    ("illumos_zone_vfs_delays_total", "counter", "delay_cnt", 1, "",
     "Writes the ZFS I/O throttle delayed to keep the zone to its fair share."),
    ("illumos_zone_vfs_delay_seconds_total", "counter", "delay_time", US, "seconds",
     "Time the ZFS I/O throttle delayed the zone's writes."),
)  # fmt: skip
_ZFS: tuple[tuple[str, MetricType, str, float, str, str], ...] = (
    ("illumos_zone_zfs_reads_total", "counter", "reads", 1, "",
     "ZFS read I/Os issued for the zone."),
    ("illumos_zone_zfs_writes_total", "counter", "writes", 1, "",
     "ZFS write I/Os issued for the zone."),
    ("illumos_zone_zfs_read_bytes_total", "counter", "nread", 1, "bytes",
     "Bytes of ZFS read I/O issued for the zone."),
    ("illumos_zone_zfs_written_bytes_total", "counter", "nwritten", 1, "bytes",
     "Bytes of ZFS write I/O issued for the zone."),
    ("illumos_zone_zfs_read_busy_seconds_total", "counter", "rtime", NS, "seconds",
     "Time with at least one ZFS read I/O of the zone in progress."),
    ("illumos_zone_zfs_read_time_seconds_total", "counter", "rlentime", NS, "seconds",
     "Sum of the durations of the zone's ZFS read I/Os."),
    ("illumos_zone_zfs_read_wait_seconds_total", "counter", "waittime", NS, "seconds",
     "Time the zone's ZFS reads waited in the zone I/O scheduler before dispatch."),
)  # fmt: skip


def _specs(
    rows: tuple[tuple[str, MetricType, str, float, str, str], ...], source: str
) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(n, t, h, Z, u, f"{source} {stat}") for n, t, stat, _, u, h in rows)


VFS_SPECS = _specs(_VFS, VFS)
ZFS_SPECS = _specs(_ZFS, ZFS)


class ZoneVfsCollector(Collector):
    name = "zone_vfs"
    description = (
        "Per-zone VFS I/O with the kernel's slow-operation counts and the ZFS throttle "
        "(zone_vfs kstats), and ZFS I/O (zone_zfs kstats)"
    )
    specs = VFS_SPECS + ZFS_SPECS
    kstat_inputs = (ZONES, KstatInput("zone_vfs"), KstatInput("zone_zfs"))

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        names = ZoneNames(snap.kstats)
        fams = Families(self.specs)
        for module, rows in (("zone_vfs", _VFS), ("zone_zfs", _ZFS)):
            for zone, ks in per_zone(self, names, snap.kstats.module(module)):
                made = snap.kstats.created(ks)
                z = (zone,)  # one label tuple for the zone's samples
                data = ks.data
                for name, _type, stat, scale, _unit, _help in rows:
                    v = data.get(stat)
                    if type(v) is not int or v < 0 or v > UINT64_MAX:
                        v = uint(self, ks, stat)  # not a plain counter: checked, logged
                    if v is not None:
                        fams[name].add(z, v * scale, made)
        return fams.all()
