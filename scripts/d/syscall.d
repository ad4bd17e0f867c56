/*
 * syscall.d -- system call latency per zone (all system calls together, except
 * those that block by design).
 *
 * Probes and arguments (verified in the sources):
 *   syscall:::entry / syscall:::return  fire in the calling thread, before and after
 *       the system call's implementation (dtrace_systrace_syscall(), illumos-gate
 *       usr/src/uts/common/os/dtrace_subr.c; probes created per sysent entry by
 *       usr/src/uts/common/dtrace/systrace.c).  Function names are the kernel's
 *       system call names (illumos-gate usr/src/uts/intel/os/name_to_sysnum).
 *   curpsinfo->pr_zoneid = curthread->t_procp->p_zone->zone_id
 *       (illumos-gate usr/src/lib/libdtrace/common/procfs.d.in).
 *
 * Left out, because their time is waiting for an event by design and would drown
 * the signal: pollsys, lwp_park, portfs, nanosleep, waitsys, lwp_wait,
 * lwp_cond_wait, lwp_sema_timedwait, lwp_mutex_timedlock, lwp_rwlock_sys,
 * sigsuspend, sigwait (sigtimedwait), pause, doorfs, getmsg, getpmsg, accept;
 * vfork (the parent waits until the child execs or exits); kaio (all of it: its
 * AIOWAIT and aiosuspend() forms wait for asynchronous I/O to finish); semsys for
 * semop and semtimedop (arg0 SEMOP 2, SEMTIMEDOP 4: they wait on the semaphore;
 * semctl, semget and semids are measured); msgsys for msgrcv and msgsnd (arg0
 * MSGRCV 2, MSGSND 3: they wait for a message or for room) (opcodes: illumos-gate
 * usr/src/uts/common/sys/sem_impl.h, usr/src/uts/common/sys/msg_impl.h); ioctl
 * when it is the /dev/poll wait, DP_POLL or DP_PPOLL (arg1 0xD001, 0xD003,
 * illumos-gate usr/src/uts/common/sys/devpoll.h; the epoll emulation uses these
 * too); every other ioctl is measured.
 * rexit and lwp_exit never return, so they are left out too (no state leaks).
 * The later clauses run after the first for those probes and undo its work.
 *
 * State: one thread-local timestamp, zeroed at return.
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10), true value in sum().
 */

syscall:::entry
{
	self->syscall_ts = timestamp;
}

syscall::pollsys:entry, syscall::lwp_park:entry, syscall::portfs:entry,
syscall::nanosleep:entry, syscall::waitsys:entry, syscall::lwp_wait:entry,
syscall::lwp_cond_wait:entry, syscall::lwp_sema_timedwait:entry,
syscall::lwp_mutex_timedlock:entry, syscall::lwp_rwlock_sys:entry,
syscall::sigsuspend:entry, syscall::sigwait:entry, syscall::pause:entry,
syscall::doorfs:entry, syscall::getmsg:entry, syscall::getpmsg:entry,
syscall::accept:entry, syscall::vfork:entry, syscall::kaio:entry,
syscall::rexit:entry, syscall::lwp_exit:entry
{
	self->syscall_ts = 0;
}

syscall::semsys:entry
/arg0 == 2 || arg0 == 4/
{
	self->syscall_ts = 0;
}

syscall::msgsys:entry
/arg0 == 2 || arg0 == 3/
{
	self->syscall_ts = 0;
}

syscall::ioctl:entry
/arg1 == 0xD001 || arg1 == 0xD003/
{
	self->syscall_ts = 0;
}

syscall:::return
/self->syscall_ts != 0/
{
	this->syscall_ns = (int64_t)(timestamp - self->syscall_ts);
	self->syscall_ts = 0;
	@syscall[curpsinfo->pr_zoneid] = llquantize(this->syscall_ns - 1, 10, 3, 9, 10);
	@syscall_sum[curpsinfo->pr_zoneid] = sum(this->syscall_ns);
}
