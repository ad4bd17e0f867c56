/*
 * disk.d -- ZFS disk I/O latency per zone, and the ZFS I/O throttle's delays per
 * zone, from SmartOS's zone-aware ZFS probes.
 *
 * Probes and arguments (verified in the sources):
 *   sdt:::zfs-zone-latency  DTRACE_PROBE3(zfs__zone__latency, uintptr_t,
 *       zp->io_zoneid, uintptr_t, zp->io_type, uintptr_t, udelta) in
 *       zfs_zone_zio_done(), called from vdev_disk_io_done() when a leaf-vdev I/O
 *       completes (in the zio completion taskq, hence the zone from the zio):
 *       arg0 zone id (io_zoneid = curzone at zio creation, zfs_zone_zio_init()),
 *       arg1 zio type, arg2 latency in microseconds from io_dispatched (set by
 *       zfs_zone_zio_start() as the I/O goes to the disk) to this call, so it
 *       includes the time the completion waited for its taskq thread.  Only
 *       ZIO_TYPE_READ (1) and ZIO_TYPE_WRITE (2) arrive: zfs_zone_zio_done()
 *       returns early for IOCTL zios and for zios never dispatched through
 *       zfs_zone_zio_start() (io_dispatched == 0), which TRIM zios are not
 *       (illumos-joyent usr/src/uts/common/fs/zfs/zfs_zone.c; the zone I/O
 *       throttle is SmartOS's, not in illumos-gate; zio_type_t in
 *       usr/src/uts/common/sys/fs/zfs.h).
 *   sdt:::zfs-zone-wait  DTRACE_PROBE3(zfs__zone__wait, uintptr_t, zone id,
 *       uintptr_t, type, uintptr_t, wait) in zfs_zone_io_throttle(), in the zone's
 *       own thread, just before drv_usecwait(wait) (illumos-joyent, same file):
 *       arg1 ZFS_ZONE_IOP_READ 0,
 *       ZFS_ZONE_IOP_WRITE 1, ZFS_ZONE_IOP_LOGICAL_WRITE 2 (sys/zfs_zone.h), arg2 the
 *       delay in microseconds (steps of zfs_zone_delay_step, 5 us, up to
 *       zfs_zone_delay_ceiling, 100 us, doubled for writes while txgs sync fast).
 *
 * No in-kernel state: both probes carry the finished latency.  Zone ids are
 * cast to int, the width of zoneid_t (as curpsinfo->pr_zoneid in the other
 * scripts), so every script's zone keys look alike.
 * Recorded value: llquantize(latency_us - 1, 10, 0, 6, 10), true value in sum()
 * (docs/dtrace.md, "Exact buckets").
 */

sdt:::zfs-zone-latency
{
	this->disk_op = arg1 == 1 ? "read" : "write";
	@disk[(int)arg0, this->disk_op] = llquantize((int64_t)arg2 - 1, 10, 0, 6, 10);
	@disk_sum[(int)arg0, this->disk_op] = sum((int64_t)arg2);
}

sdt:::zfs-zone-wait
{
	this->disk_wop = arg1 == 0 ? "read" : "write";
	@disk_throttle[(int)arg0, this->disk_wop] = llquantize((int64_t)arg2 - 1, 10, 0, 6, 10);
	@disk_throttle_sum[(int)arg0, this->disk_wop] = sum((int64_t)arg2);
}
