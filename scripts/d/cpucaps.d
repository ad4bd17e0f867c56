/*
 * cpucaps.d -- time threads spend parked by a CPU cap, per zone, and how often
 * the cap parks them.
 *
 * Probes and arguments (verified in the sources):
 *   sched:::cpucaps-sleep   DTRACE_SCHED1(cpucaps__sleep, kthread_t *, t) in
 *                           waitq_enqueue(), when the cap puts thread t on the cap's
 *                           wait queue (illumos-gate usr/src/uts/common/disp/waitq.c;
 *                           caps enforced by usr/src/uts/common/disp/cpucaps.c).
 *   sched:::cpucaps-wakeup  DTRACE_SCHED1(cpucaps__wakeup, kthread_t *, t) in
 *                           waitq_dequeue(), when t is taken off the wait queue; this
 *                           usually runs in another thread (the clock's cap check).
 *   both: args[0] lwpsinfo_t *, args[1] psinfo_t *, translated from t
 *         (illumos-joyent usr/src/uts/common/dtrace/sdt_subr.c, sdt_args[]);
 *         pr_addr = (uintptr_t)t, pr_zoneid = t->t_procp->p_zone->zone_id
 *         (illumos-gate usr/src/lib/libdtrace/common/procfs.d.in).
 *
 * State: one global entry per parked thread, keyed by the kthread_t address,
 * deleted at wakeup.  Latency: llquantize(ns - 1, ...) with the true value in the
 * parallel sum(), as in runq.d (docs/dtrace.md, "Exact buckets").
 */

uint64_t cpucaps_start[uintptr_t];

sched:::cpucaps-sleep
{
	cpucaps_start[args[0]->pr_addr] = timestamp;
	@cpucaps_throttles[args[1]->pr_zoneid] = count();
}

sched:::cpucaps-wakeup
/cpucaps_start[args[0]->pr_addr] != 0/
{
	this->cpucaps_ns = (int64_t)(timestamp - cpucaps_start[args[0]->pr_addr]);
	this->cpucaps_zone = args[1]->pr_zoneid;
	cpucaps_start[args[0]->pr_addr] = 0;
	@cpucaps_wait[this->cpucaps_zone] = llquantize(this->cpucaps_ns - 1, 10, 3, 9, 10);
	@cpucaps_wait_sum[this->cpucaps_zone] = sum(this->cpucaps_ns);
}
