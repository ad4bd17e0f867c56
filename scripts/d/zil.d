/*
 * zil.d -- ZFS intent log (ZIL) commits per pool and zone: how long fsync(),
 * O_DSYNC writes and other synchronous operations wait for the ZIL, and how many
 * bytes of log blocks they write.  illumos has no ZIL kstat; only DTrace sees it.
 *
 * Functions (fbt; illumos-gate usr/src/uts/common/fs/zfs/zil.c since the 2018
 * ZIL commit rework, illumos 8585, checked in an illumos-derived copy of zil.c):
 *   void zil_commit(zilog_t *zilog, uint64_t foid)
 *       entry/return, in the thread that needs its changes on stable storage
 *       (zfs_fsync(), zfs_write() with FSYNC/FDSYNC, sync=always datasets, zvol
 *       and NFS commits); zilog->zl_spa->spa_name is the pool.
 *   static lwb_t *zil_lwb_write_issue(zilog_t *zilog, lwb_t *lwb)
 *       issues one log write block; at entry lwb->lwb_nused is the bytes used in
 *       it (zil_lwb_commit() fills it before the issue): the block's zil_chain_t
 *       header and the log records copied in, not the data of indirect writes
 *       (WR_INDIRECT, written in place by dmu_sync(); only a block pointer is
 *       logged), so the bytes counter is not all synchronously written data.
 *       Called by the committing thread (zil_commit_writer() and the
 *       commit-waiter timeout), so curpsinfo names the zone whose commit wrote
 *       it.
 *       The lwb is read through a cast of arg1, not args[1], so that compiled with
 *       zdefs the script still works on an image where this static function has
 *       no fbt probe (latency only; the bytes counter then stays empty).
 *
 * State: two thread-locals per committing thread, zeroed at return.
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10), true value in sum().
 */

/* Declared up front: the first clause reads self->zil_ts before assigning it. */
self uint64_t zil_ts;
self zilog_t *zil_log;

fbt::zil_commit:entry
/self->zil_ts == 0/
{
	self->zil_ts = timestamp;
	self->zil_log = args[0];
}

fbt::zil_commit:return
/self->zil_ts != 0/
{
	this->zil_ns = (int64_t)(timestamp - self->zil_ts);
	this->zil_pool = stringof(self->zil_log->zl_spa->spa_name);
	self->zil_ts = 0;
	self->zil_log = 0;
	@zil_commit[this->zil_pool, curpsinfo->pr_zoneid] =
	    llquantize(this->zil_ns - 1, 10, 3, 9, 10);
	@zil_commit_sum[this->zil_pool, curpsinfo->pr_zoneid] = sum(this->zil_ns);
}

fbt::zil_lwb_write_issue:entry
{
	@zil_bytes[stringof(((zilog_t *)arg0)->zl_spa->spa_name), curpsinfo->pr_zoneid] =
	    sum(((lwb_t *)arg1)->lwb_nused);
}
