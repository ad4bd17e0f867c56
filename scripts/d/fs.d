/*
 * fs.d -- file system latency per zone on ZFS, as the application sees it: the
 * time of read, write, fsync, open and readdir system calls on ZFS files.
 *
 * Probes and arguments (verified in the sources):
 *   syscall::NAME:entry / syscall::NAME:return  in the calling thread; for entry,
 *       arg0.. are the call's arguments, for return arg0 = arg1 = the return value
 *       (-1 on error) (dtrace_systrace_syscall(), illumos-gate
 *       usr/src/uts/common/os/dtrace_subr.c).  Names from illumos-gate
 *       usr/src/uts/intel/os/name_to_sysnum: read readv pread pread64 preadv write
 *       writev pwrite pwrite64 pwritev fdsync (fsync, fdatasync) getdents
 *       getdents64 open open64 openat openat64.
 *   fds[fd].fi_fs = stringof(file->f_vnode->v_op->vnop_name), "zfs" for ZFS files,
 *       "<none>" for a bad descriptor (illumos-gate
 *       usr/src/lib/libdtrace/common/io.d.in, fileinfo_t and the fds[] inline).
 *   curpsinfo->pr_zoneid: the caller's zone (procfs.d.in).
 *
 * The file system is known from the descriptor at entry for read/write/fsync/
 * readdir, and from the new descriptor at return for open.
 *
 * State: two thread-locals (start time, operation code), zeroed at return.
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10), true value in sum().
 */

syscall::read:entry, syscall::readv:entry, syscall::pread:entry,
syscall::pread64:entry, syscall::preadv:entry
/fds[arg0].fi_fs == "zfs"/
{
	self->fs_ts = timestamp;
	self->fs_op = 1;
}

syscall::write:entry, syscall::writev:entry, syscall::pwrite:entry,
syscall::pwrite64:entry, syscall::pwritev:entry
/fds[arg0].fi_fs == "zfs"/
{
	self->fs_ts = timestamp;
	self->fs_op = 2;
}

syscall::fdsync:entry
/fds[arg0].fi_fs == "zfs"/
{
	self->fs_ts = timestamp;
	self->fs_op = 3;
}

syscall::getdents:entry, syscall::getdents64:entry
/fds[arg0].fi_fs == "zfs"/
{
	self->fs_ts = timestamp;
	self->fs_op = 4;
}

syscall::open:entry, syscall::open64:entry, syscall::openat:entry,
syscall::openat64:entry
{
	self->fs_ts = timestamp;
	self->fs_op = 5;
}

syscall::read:return, syscall::readv:return, syscall::pread:return,
syscall::pread64:return, syscall::preadv:return, syscall::write:return,
syscall::writev:return, syscall::pwrite:return, syscall::pwrite64:return,
syscall::pwritev:return, syscall::fdsync:return,
syscall::getdents:return, syscall::getdents64:return
/self->fs_ts != 0/
{
	this->fs_ns = (int64_t)(timestamp - self->fs_ts);
	this->fs_zone = curpsinfo->pr_zoneid;
	this->fs_name = self->fs_op == 1 ? "read" : self->fs_op == 2 ? "write" :
	    self->fs_op == 3 ? "fsync" : "readdir";
	self->fs_ts = 0;
	self->fs_op = 0;
	@fs[this->fs_zone, this->fs_name] = llquantize(this->fs_ns - 1, 10, 3, 9, 10);
	@fs_sum[this->fs_zone, this->fs_name] = sum(this->fs_ns);
}

/* open: count it only if the new descriptor is a ZFS file. */
syscall::open:return, syscall::open64:return, syscall::openat:return,
syscall::openat64:return
/self->fs_ts != 0 && (int)arg1 >= 0 && fds[(int)arg1].fi_fs == "zfs"/
{
	this->fs_ns = (int64_t)(timestamp - self->fs_ts);
	@fs[curpsinfo->pr_zoneid, "open"] = llquantize(this->fs_ns - 1, 10, 3, 9, 10);
	@fs_sum[curpsinfo->pr_zoneid, "open"] = sum(this->fs_ns);
}

syscall::open:return, syscall::open64:return, syscall::openat:return,
syscall::openat64:return
/self->fs_ts != 0/
{
	self->fs_ts = 0;
	self->fs_op = 0;
}
