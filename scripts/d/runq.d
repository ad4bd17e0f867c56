/*
 * runq.d -- run-queue (dispatcher) latency per zone: from the moment a thread
 * is put on a CPU run queue to the moment it runs.
 *
 * Probes and arguments (verified in the sources):
 *   sched:::enqueue  args[0] lwpsinfo_t * and args[1] psinfo_t *, both translated
 *                    from the kthread_t * being enqueued, args[2] cpuinfo_t *
 *                    (illumos-gate usr/src/uts/common/dtrace/sdt_subr.c, sdt_args[]);
 *                    it fires in the context of whoever makes the thread runnable.
 *   sched:::on-cpu   fires in the thread that is starting to run, so curthread is
 *                    the thread that was enqueued (Dynamic Tracing Guide, sched).
 *   sched:::remain-cpu  fires instead of on-cpu when the dispatcher picks the
 *                    thread that was running again: a preempted or yielding thread
 *                    enqueues itself, and if disp() returns that same thread,
 *                    swtch() fires remain-cpu and no on-cpu (illumos-gate
 *                    usr/src/uts/common/disp/disp.c, swtch(); preempt() calls it).
 *   proc:::lwp-exit  fires in the exiting thread (illumos-gate
 *                    usr/src/uts/common/os/lwp.c lwp_exit(), and
 *                    usr/src/uts/common/os/exit.c proc_exit() for the last one).
 *   lwpsinfo_t.pr_addr = (uintptr_t)T, the kthread_t; psinfo_t.pr_zoneid =
 *                    T->t_procp->p_zone->zone_id, psinfo_t.pr_pid
 *                    (illumos-gate usr/src/lib/libdtrace/common/procfs.d.in).
 *
 * State: one global entry per runnable-but-not-running thread, keyed by the
 * kthread_t address (never by pid), deleted when the thread gets a CPU.  The
 * first enqueue wins: a thread that is moved between run queues (dequeue and
 * re-enqueue on a priority change or a migration) keeps its original start.
 * The entry is also deleted, without recording anything, when the thread keeps
 * its CPU (remain-cpu: it never waited) and when it exits, so no stale start
 * time is left for the thread's next real wait, or for a new thread that gets
 * the same kthread_t address.
 * Threads of p0 (pid 0: kernel taskq and pipeline threads) are left out.
 *
 * Recorded value: llquantize(latency_ns - 1, 10, 3, 9, 10); the parallel sum()
 * takes the true latency.  The "- 1" puts every decade boundary (1 us, 2 us, ...
 * 10 s) exactly on a bucket's upper bound: see docs/dtrace.md, "Exact buckets".
 */

/* Declared up front: the first clause reads the array before any assignment. */
uint64_t runq_start[uintptr_t];

sched:::enqueue
/args[1]->pr_pid != 0 && runq_start[args[0]->pr_addr] == 0/
{
	runq_start[args[0]->pr_addr] = timestamp;
}

sched:::on-cpu
/runq_start[(uintptr_t)curthread] != 0/
{
	this->runq_ns = (int64_t)(timestamp - runq_start[(uintptr_t)curthread]);
	this->runq_zone = curpsinfo->pr_zoneid;
	runq_start[(uintptr_t)curthread] = 0;
	@runq[this->runq_zone] = llquantize(this->runq_ns - 1, 10, 3, 9, 10);
	@runq_sum[this->runq_zone] = sum(this->runq_ns);
}

sched:::remain-cpu
/runq_start[(uintptr_t)curthread] != 0/
{
	runq_start[(uintptr_t)curthread] = 0;
}

proc:::lwp-exit
/runq_start[(uintptr_t)curthread] != 0/
{
	runq_start[(uintptr_t)curthread] = 0;
}
