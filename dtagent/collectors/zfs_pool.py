"""ZFS pool I/O from the per-pool zfs:0:<pool> kstats.

Each imported pool has a KSTAT_TYPE_IO kstat of class ``disk`` named after the pool
(illumos-gate usr/src/uts/common/fs/zfs/spa_misc.c ``spa_iokstat``), fed by
vdev_queue.c as leaf-vdev I/O is queued and issued: it counts the physical I/O the
pool does. The fields are the kstat_io_t ones
(sys/kstat.h): nread/nwritten bytes, reads/writes operations, and the wait (queued)
and run (active) queue times in nanoseconds: wtime/rtime is the time with at least one
I/O in the queue, wlentime/rlentime the integral of the queue length over time, and
wcnt/rcnt the I/Os in each queue now.

These figures include log-device (ZIL) writes like any other write and do not separate
them; ZIL statistics come from a D script, not from here. kstat names are cut to 30
characters, so a longer pool name is reported cut.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.snapshot import KSTAT_TYPE_IO, HostSnapshot, KstatInput

SRC = "zfs:0:<pool> (io, class disk)"
NS = 1e9  # kstat_io_t times are hrtime nanoseconds


def _spec(name: str, mtype: MetricType, help_: str, unit: str) -> MetricSpec:
    return MetricSpec(f"illumos_zfs_pool_{name}", mtype, help_, ("pool",), unit, SRC)


READS = _spec("reads_total", "counter", "Read operations the pool issued to its devices.", "")
WRITES = _spec("writes_total", "counter", "Write operations the pool issued to its devices.", "")
READ_BYTES = _spec("read_bytes_total", "counter", "Bytes the pool read from its devices.", "bytes")
WRITTEN_BYTES = _spec(
    "written_bytes_total", "counter", "Bytes the pool wrote to its devices.", "bytes"
)
WAIT_TIME = _spec(
    "wait_seconds_total",
    "counter",
    "Time with at least one I/O waiting in the pool's queue (wtime).",
    "seconds",
)
RUN_TIME = _spec(
    "run_seconds_total",
    "counter",
    "Time with at least one I/O active on the pool's devices (rtime).",
    "seconds",
)
WAIT_LENGTH = _spec(
    "wait_queue_length_seconds_total",
    "counter",
    "Wait-queue length integrated over time (wlentime); its rate is the average number "
    "of waiting I/Os.",
    "seconds",
)
RUN_LENGTH = _spec(
    "run_queue_length_seconds_total",
    "counter",
    "Active-queue length integrated over time (rlentime); its rate is the average number "
    "of active I/Os.",
    "seconds",
)
WAIT_COUNT = _spec("wait_queue_ios", "gauge", "I/Os waiting in the pool's queue now (wcnt).", "")
RUN_COUNT = _spec("run_queue_ios", "gauge", "I/Os active on the pool's devices now (rcnt).", "")

# kstat_io_t field -> (spec, divisor to the base unit)
FIELDS: tuple[tuple[str, MetricSpec, float], ...] = (
    ("reads", READS, 1.0),
    ("writes", WRITES, 1.0),
    ("nread", READ_BYTES, 1.0),
    ("nwritten", WRITTEN_BYTES, 1.0),
    ("wtime", WAIT_TIME, NS),
    ("rtime", RUN_TIME, NS),
    ("wlentime", WAIT_LENGTH, NS),
    ("rlentime", RUN_LENGTH, NS),
    ("wcnt", WAIT_COUNT, 1.0),
    ("rcnt", RUN_COUNT, 1.0),
)


class ZfsPoolCollector(Collector):
    name = "zfs_pool"
    description = (
        "ZFS pool I/O from the zfs:0:<pool> io kstats: operations, bytes, wait and run "
        "queue times and lengths, labelled by pool (physical I/O, ZIL writes included "
        "and not separated)"
    )
    specs = tuple(spec for _, spec, _ in FIELDS)
    kstat_inputs = (KstatInput("zfs", "disk"),)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        for ks in snap.kstats.module("zfs"):
            if ks.ks_class != "disk" or ks.ks_type != KSTAT_TYPE_IO or ks.instance != 0:
                continue
            made = snap.kstats.created(ks)
            for field, spec, scale in FIELDS:
                value = ks.num_stat(field)
                if value is not None:
                    fams[spec.name].add((ks.name,), value / scale, made)
        return fams.all()
