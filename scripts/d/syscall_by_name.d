/*
 * syscall_by_name.d -- system call latency per zone and system call, for a fixed
 * set of common calls.  Disabled by default; enable with
 *   [dtrace] scripts = { syscall_by_name = true }
 *
 * Only the system calls listed below are instrumented, so the syscall label has a
 * bounded set of values (the same list is the label's allow list in
 * syscall_by_name.toml) and calls outside the list cost nothing.
 *
 * Probes and arguments (verified in the sources):
 *   syscall::NAME:entry / syscall::NAME:return  in the calling thread
 *       (dtrace_systrace_syscall(), illumos-gate usr/src/uts/common/os/dtrace_subr.c);
 *       every NAME below is in illumos-gate usr/src/uts/intel/os/name_to_sysnum.
 *   probefunc is the system call name; curpsinfo->pr_zoneid the caller's zone
 *       (illumos-gate usr/src/lib/libdtrace/common/procfs.d.in).
 *
 * State: one thread-local timestamp, zeroed at return.
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10), true value in sum().
 */

syscall::read:entry, syscall::write:entry, syscall::pread:entry,
syscall::pwrite:entry, syscall::readv:entry, syscall::writev:entry,
syscall::open:entry, syscall::openat:entry, syscall::close:entry,
syscall::stat:entry, syscall::lstat:entry, syscall::fstat:entry,
syscall::fstatat:entry, syscall::getdents:entry, syscall::unlink:entry,
syscall::rename:entry, syscall::mkdir:entry, syscall::fdsync:entry,
syscall::ioctl:entry, syscall::fcntl:entry, syscall::mmap:entry,
syscall::munmap:entry, syscall::brk:entry, syscall::connect:entry,
syscall::send:entry, syscall::recv:entry, syscall::sendto:entry,
syscall::recvfrom:entry, syscall::sendmsg:entry, syscall::recvmsg:entry,
syscall::so_socket:entry, syscall::forksys:entry, syscall::exece:entry
{
	self->syscall_by_name_ts = timestamp;
}

syscall::read:return, syscall::write:return, syscall::pread:return,
syscall::pwrite:return, syscall::readv:return, syscall::writev:return,
syscall::open:return, syscall::openat:return, syscall::close:return,
syscall::stat:return, syscall::lstat:return, syscall::fstat:return,
syscall::fstatat:return, syscall::getdents:return, syscall::unlink:return,
syscall::rename:return, syscall::mkdir:return, syscall::fdsync:return,
syscall::ioctl:return, syscall::fcntl:return, syscall::mmap:return,
syscall::munmap:return, syscall::brk:return, syscall::connect:return,
syscall::send:return, syscall::recv:return, syscall::sendto:return,
syscall::recvfrom:return, syscall::sendmsg:return, syscall::recvmsg:return,
syscall::so_socket:return, syscall::forksys:return, syscall::exece:return
/self->syscall_by_name_ts != 0/
{
	this->sbn_ns = (int64_t)(timestamp - self->syscall_by_name_ts);
	self->syscall_by_name_ts = 0;
	@syscall_by_name[curpsinfo->pr_zoneid, probefunc] =
	    llquantize(this->sbn_ns - 1, 10, 3, 9, 10);
	@syscall_by_name_sum[curpsinfo->pr_zoneid, probefunc] = sum(this->sbn_ns);
}
