/*
 * A stand-in for illumos libdtrace.so.1, for testing dtagent's ctypes binding, the
 * DTrace worker and its supervisor on a host without illumos.
 *
 * It exports the subset of the libdtrace ABI that dtagent calls (dtrace_open,
 * dtrace_close, dtrace_setopt, dtrace_handle_drop, dtrace_handle_err,
 * dtrace_handle_buffered, dtrace_program_strcompile, dtrace_program_exec, dtrace_go,
 * dtrace_stop, dtrace_status, dtrace_work, dtrace_aggregate_snap,
 * dtrace_aggregate_walk, dtrace_errno, dtrace_errmsg) with the illumos LP64 layouts,
 * and replays a scenario instead of tracing.
 *
 * Layouts: illumos-gate usr/src/uts/common/sys/dtrace.h (dtrace_recdesc_t,
 * dtrace_eprobedesc_t, dtrace_aggdesc_t, dtrace_probedesc_t, dtrace_attribute_t) and
 * usr/src/lib/libdtrace/common/dtrace.h (struct dtrace_aggdata, dtrace_dropdata_t,
 * dtrace_errdata_t, dtrace_bufdata_t, dtrace_proginfo_t, the constants). Sizes and
 * offsets are checked at compile time and exported (stub_layout_*) so the tests can
 * compare them with the ctypes Structures.
 *
 * Behaviour mirrored (illumos-gate usr/src/uts/common/dtrace/dtrace.c,
 * usr/src/lib/libdtrace/common/dt_aggregate.c, dt_consume.c, dt_options.c):
 *  - aggregation data: record 0 is the 4-byte aggregation id, then the keys (int32,
 *    int64, strsize-byte strings), then the value at an 8-byte aligned offset: one
 *    int64 for count/sum/min/max, [count, sum] for avg, 127 int64 for quantize, the
 *    arg word and levels+2 buckets for lquantize, the arg word and the buckets for
 *    llquantize; values are put in buckets by re-implementations of the kernel's
 *    dtrace_aggregate_quantize/_lquantize/_llquantize_bucket;
 *  - a user-space hash keyed by the tuple, merged at each snapshot, walked in
 *    insertion order; a walk callback returning DTRACE_AGGWALK_REMOVE unlinks the
 *    entry, NEXT keeps it (cumulative), CLEAR zeroes it (keeping the arg word);
 *  - drops go to the drop handler (aggregation drops during a snapshot, the other
 *    kinds during dtrace_work); without a handler a drop makes the call fail with
 *    EDT_DROPABORT; a handler returning DTRACE_HANDLE_ABORT aborts the call too;
 *  - runtime errors go to the error handler only if it was registered before
 *    dtrace_go (libdtrace enables its ERROR program in dtrace_go);
 *  - dtrace_program_exec assigns the program's enabled probe ids consecutively, one
 *    per matched probe, and reports the matches in dpi_matches;
 *  - a compile failure sets the handle's error to EDT_COMPILER, whose dtrace_errmsg is
 *    the compiler's message;
 *  - dtrace_errmsg(NULL, err) works (for dtrace_open failures);
 *  - dtrace_aggregate_snap skips a snapshot taken sooner than the aggrate option
 *    (default 1 s) after the previous one, and the reference it compares with
 *    advances by aggrate, not to "now" (dt_aggregate.c dtrace_aggregate_snap);
 *  - dtrace_setopt (dt_options.c): compile-time and dynamic run-time options may be
 *    set at any time, the other run-time options only before dtrace_go (EDT_ACTIVE
 *    after); a value that does not parse is EDT_BADOPTVAL; sizes take k/m/g/t, rates
 *    take ns/us/ms/s/... or hz, and a bare rate number is nanoseconds;
 *  - dtrace_work (dt_work.c) asks dtrace_status first; once tracing has stopped
 *    (dtrace_stop, or an exit() seen by dtrace_status, which then stops tracing
 *    itself and returns DTRACE_STATUS_EXITED) it forces a last snapshot whatever
 *    aggrate says and returns DTRACE_WORKSTATUS_DONE;
 *  - dtrace_stop fires the END probe: records of the scenario's "end" section (END
 *    clauses, and what fired between the consumer's last snapshot and the stop) are
 *    in the aggregation buffers afterwards, for the next snapshot;
 *  - printf()-style output in the principal buffer goes to the buffered handler; with
 *    no FILE and no buffered handler dtrace_work fails with EDT_NOBUFFERED
 *    (dt_printf.c dt_buffered_flush);
 *  - aggregation names belong to the handle (dt_open.c creates one dt_aggs hash per
 *    handle): a program assigning @name a different aggregating function than an
 *    earlier program on the same handle fails to compile with the compiler's
 *    "aggregation redefined" message (dt_parser.c, D_AGG_REDEF); the same function
 *    shares one aggregation silently;
 *  - an enabling that fails part way keeps the probes enabled before the failure,
 *    with their enabled probe ids (dtrace.c dtrace_enabling_match: "we kick out --
 *    perhaps with some number of them enabled"): they go on firing.
 *
 * The scenario is a text file named by $DTRACE_STUB_SCENARIO, read by dtrace_open:
 *
 *   run N | run *                 following lines apply to the handles of the N-th
 *                                 process that opens one (counted in
 *                                 $DTRACE_STUB_RUNS, a file) or to all
 *   open_fail ERRNO               dtrace_open fails with this errno
 *   matches SEL N                 the program whose text contains SEL matches N probes
 *   compile_fail SEL MESSAGE...   compiling a program containing SEL fails
 *   no_probe PROBE                PROBE does not exist on this "platform image": a
 *                                 program naming it fails to compile with the
 *                                 compiler's D_PDESC_ZERO message, unless compiled
 *                                 with DTRACE_C_ZDEFS (then it just matches nothing)
 *   enable_fail SEL N ERRNO       dtrace_program_exec of a program containing SEL
 *                                 enables N probes, then fails with ERRNO
 *   tick N                        following events happen at the N-th dtrace_work
 *   end                           following events happen at dtrace_stop (END)
 *   loop P                        following rec events (P > 0) happen again every P
 *                                 dtrace_work after their tick (a steady record rate
 *                                 for benchmarks); loop 0 ends it
 *   rec SEL AGG FUNC [P...] | KEYS... | VALUES...
 *                                 AGG of program SEL fires once per value; FUNC is
 *                                 count, sum, min, max, avg, quantize,
 *                                 lquantize (P: base limit step) or llquantize
 *                                 (P: factor low high nsteps); keys z:INT (int32),
 *                                 i:INT (int64), s:TEXT (string)
 *   drop KIND COUNT               a drop of dtrace_dropkind_t KIND
 *   error SEL INDEX FAULT MESSAGE...
 *                                 a runtime error in the INDEX-th enabled probe of SEL
 *   output SEL TEXT...            SEL's printf() output, in the principal buffer
 *   crash                         abort() in dtrace_work
 *   hang                          block forever in dtrace_work
 *   exit [SEL]                    the D program calls exit(): dtrace_status sees
 *                                 it, stops tracing and returns EXITED (with SEL:
 *                                 on the handle running that program)
 *   done [SEL]                    the same as exit
 *   bricked SEL                   the kernel's deadman kills the consumer state of the
 *                                 handle running SEL: its dtrace_work fails with
 *                                 EDT_BRICKED (the deadman and dtst_killed are per
 *                                 state: illumos-gate usr/src/uts/common/dtrace/dtrace.c
 *                                 dtrace_state_deadman and DTRACEIOC_STATUS;
 *                                 usr/src/lib/libdtrace/common/dt_handle.c
 *                                 dt_handle_status), the other handles go on
 *
 * Each handle replays the scenario on its own (its own ticks, programs, aggregations);
 * events naming a program (SEL) happen on the handle running it, the others (drop,
 * crash, hang, exit, done without SEL) on the process's oldest active handle.
 *
 * Every call is appended to the file named by $DTRACE_STUB_LOG, one line each:
 * "PID hN CALL", N the handle (the process's N-th dtrace_open, h0 before one). With
 * $DTRACE_STUB_DEADMAN set (seconds), a status request later than that after the
 * previous one fails with EDT_BRICKED, as the kernel's deadman would make it.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif

/* --- illumos-gate usr/src/uts/common/sys/dtrace.h --------------------------------- */

typedef uint32_t dtrace_id_t;
typedef uint32_t dtrace_epid_t;
typedef uint32_t dtrace_aggid_t;
typedef int64_t dtrace_aggvarid_t;
typedef uint16_t dtrace_actkind_t;
typedef int64_t dtrace_optval_t;
typedef uint8_t dtrace_stability_t;
typedef uint8_t dtrace_class_t;
typedef int processorid_t; /* usr/src/uts/common/sys/processor.h */
typedef char *caddr_t;
typedef unsigned int uint_t;

#define DTRACE_PROVNAMELEN 64
#define DTRACE_MODNAMELEN 64
#define DTRACE_FUNCNAMELEN 128
#define DTRACE_NAMELEN 64

#define DTRACEACT_DIFEXPR 1
#define DTRACEACT_AGGREGATION 0x0700
#define DTRACEAGG_COUNT (DTRACEACT_AGGREGATION + 1)
#define DTRACEAGG_MIN (DTRACEACT_AGGREGATION + 2)
#define DTRACEAGG_MAX (DTRACEACT_AGGREGATION + 3)
#define DTRACEAGG_AVG (DTRACEACT_AGGREGATION + 4)
#define DTRACEAGG_SUM (DTRACEACT_AGGREGATION + 5)
#define DTRACEAGG_STDDEV (DTRACEACT_AGGREGATION + 6)
#define DTRACEAGG_QUANTIZE (DTRACEACT_AGGREGATION + 7)
#define DTRACEAGG_LQUANTIZE (DTRACEACT_AGGREGATION + 8)
#define DTRACEAGG_LLQUANTIZE (DTRACEACT_AGGREGATION + 9)

#define DTRACE_QUANTIZE_NBUCKETS (((sizeof (uint64_t) * 8) - 1) * 2 + 1)
#define DTRACE_QUANTIZE_ZEROBUCKET ((sizeof (uint64_t) * 8) - 1)
#define DTRACE_QUANTIZE_BUCKETVAL(buck) \
	(int64_t)((buck) < DTRACE_QUANTIZE_ZEROBUCKET ? \
	-(1LL << (DTRACE_QUANTIZE_ZEROBUCKET - 1 - (buck))) : \
	(buck) == DTRACE_QUANTIZE_ZEROBUCKET ? 0 : \
	1LL << ((buck) - DTRACE_QUANTIZE_ZEROBUCKET - 1))

#define DTRACE_LQUANTIZE_STEPSHIFT 48
#define DTRACE_LQUANTIZE_STEPMASK ((uint64_t)UINT16_MAX << 48)
#define DTRACE_LQUANTIZE_LEVELSHIFT 32
#define DTRACE_LQUANTIZE_LEVELMASK ((uint64_t)UINT16_MAX << 32)
#define DTRACE_LQUANTIZE_BASESHIFT 0
#define DTRACE_LQUANTIZE_BASEMASK UINT32_MAX
#define DTRACE_LQUANTIZE_STEP(x) \
	(uint16_t)(((x) & DTRACE_LQUANTIZE_STEPMASK) >> DTRACE_LQUANTIZE_STEPSHIFT)
#define DTRACE_LQUANTIZE_LEVELS(x) \
	(uint16_t)(((x) & DTRACE_LQUANTIZE_LEVELMASK) >> DTRACE_LQUANTIZE_LEVELSHIFT)
#define DTRACE_LQUANTIZE_BASE(x) \
	(int32_t)(((x) & DTRACE_LQUANTIZE_BASEMASK) >> DTRACE_LQUANTIZE_BASESHIFT)

#define DTRACE_LLQUANTIZE_FACTORSHIFT 48
#define DTRACE_LLQUANTIZE_FACTORMASK ((uint64_t)UINT16_MAX << 48)
#define DTRACE_LLQUANTIZE_LOWSHIFT 32
#define DTRACE_LLQUANTIZE_LOWMASK ((uint64_t)UINT16_MAX << 32)
#define DTRACE_LLQUANTIZE_HIGHSHIFT 16
#define DTRACE_LLQUANTIZE_HIGHMASK ((uint64_t)UINT16_MAX << 16)
#define DTRACE_LLQUANTIZE_NSTEPSHIFT 0
#define DTRACE_LLQUANTIZE_NSTEPMASK UINT16_MAX
#define DTRACE_LLQUANTIZE_FACTOR(x) \
	(uint16_t)(((x) & DTRACE_LLQUANTIZE_FACTORMASK) >> DTRACE_LLQUANTIZE_FACTORSHIFT)
#define DTRACE_LLQUANTIZE_LOW(x) \
	(uint16_t)(((x) & DTRACE_LLQUANTIZE_LOWMASK) >> DTRACE_LLQUANTIZE_LOWSHIFT)
#define DTRACE_LLQUANTIZE_HIGH(x) \
	(uint16_t)(((x) & DTRACE_LLQUANTIZE_HIGHMASK) >> DTRACE_LLQUANTIZE_HIGHSHIFT)
#define DTRACE_LLQUANTIZE_NSTEP(x) \
	(uint16_t)(((x) & DTRACE_LLQUANTIZE_NSTEPMASK) >> DTRACE_LLQUANTIZE_NSTEPSHIFT)

typedef enum dtrace_probespec {
	DTRACE_PROBESPEC_NONE = -1,
	DTRACE_PROBESPEC_PROVIDER = 0,
	DTRACE_PROBESPEC_MOD,
	DTRACE_PROBESPEC_FUNC,
	DTRACE_PROBESPEC_NAME
} dtrace_probespec_t;

typedef struct dtrace_attribute {
	dtrace_stability_t dtat_name;
	dtrace_stability_t dtat_data;
	dtrace_class_t dtat_class;
} dtrace_attribute_t;

typedef struct dtrace_probedesc {
	dtrace_id_t dtpd_id;
	char dtpd_provider[DTRACE_PROVNAMELEN];
	char dtpd_mod[DTRACE_MODNAMELEN];
	char dtpd_func[DTRACE_FUNCNAMELEN];
	char dtpd_name[DTRACE_NAMELEN];
} dtrace_probedesc_t;

typedef struct dtrace_recdesc {
	dtrace_actkind_t dtrd_action;
	uint32_t dtrd_size;
	uint32_t dtrd_offset;
	uint16_t dtrd_alignment;
	uint16_t dtrd_format;
	uint64_t dtrd_arg;
	uint64_t dtrd_uarg;
} dtrace_recdesc_t;

typedef struct dtrace_eprobedesc {
	dtrace_epid_t dtepd_epid;
	dtrace_id_t dtepd_probeid;
	uint64_t dtepd_uarg;
	uint32_t dtepd_size;
	int dtepd_nrecs;
	dtrace_recdesc_t dtepd_rec[1];
} dtrace_eprobedesc_t;

typedef struct dtrace_aggdesc {
	char *dtagd_name; /* DTRACE_PTR(char, dtagd_name): a plain pointer on _LP64 */
	dtrace_aggvarid_t dtagd_varid;
	int dtagd_flags;
	dtrace_aggid_t dtagd_id;
	dtrace_epid_t dtagd_epid;
	uint32_t dtagd_size;
	int dtagd_nrecs;
	uint32_t dtagd_pad;
	dtrace_recdesc_t dtagd_rec[1];
} dtrace_aggdesc_t;

/* --- illumos-gate usr/src/lib/libdtrace/common/dtrace.h --------------------------- */

#define DTRACE_VERSION 3

typedef struct dtrace_hdl dtrace_hdl_t;
typedef struct dtrace_prog dtrace_prog_t;
typedef struct dtrace_aggdata dtrace_aggdata_t;

typedef struct dtrace_proginfo {
	dtrace_attribute_t dpi_descattr;
	dtrace_attribute_t dpi_stmtattr;
	uint_t dpi_aggregates;
	uint_t dpi_recgens;
	uint_t dpi_matches;
	uint_t dpi_speculations;
} dtrace_proginfo_t;

#define DTRACE_STATUS_NONE 0
#define DTRACE_STATUS_OKAY 1
#define DTRACE_STATUS_EXITED 2
#define DTRACE_STATUS_STOPPED 4

typedef enum {
	DTRACE_WORKSTATUS_ERROR = -1,
	DTRACE_WORKSTATUS_OKAY,
	DTRACE_WORKSTATUS_DONE
} dtrace_workstatus_t;

#define DTRACE_HANDLE_ABORT -1
#define DTRACE_HANDLE_OK 0

typedef struct dtrace_errdata {
	dtrace_hdl_t *dteda_handle;
	dtrace_eprobedesc_t *dteda_edesc;
	dtrace_probedesc_t *dteda_pdesc;
	processorid_t dteda_cpu;
	int dteda_action;
	int dteda_offset;
	int dteda_fault;
	uint64_t dteda_addr;
	const char *dteda_msg;
} dtrace_errdata_t;

typedef int dtrace_handle_err_f(const dtrace_errdata_t *, void *);

typedef enum {
	DTRACEDROP_PRINCIPAL,
	DTRACEDROP_AGGREGATION,
	DTRACEDROP_DYNAMIC,
	DTRACEDROP_DYNRINSE,
	DTRACEDROP_DYNDIRTY,
	DTRACEDROP_SPEC,
	DTRACEDROP_SPECBUSY,
	DTRACEDROP_SPECUNAVAIL,
	DTRACEDROP_STKSTROVERFLOW,
	DTRACEDROP_DBLERROR
} dtrace_dropkind_t;

typedef struct dtrace_dropdata {
	dtrace_hdl_t *dtdda_handle;
	processorid_t dtdda_cpu;
	dtrace_dropkind_t dtdda_kind;
	uint64_t dtdda_drops;
	uint64_t dtdda_total;
	const char *dtdda_msg;
} dtrace_dropdata_t;

typedef int dtrace_handle_drop_f(const dtrace_dropdata_t *, void *);

typedef struct dtrace_probedata dtrace_probedata_t;

typedef struct dtrace_bufdata {
	dtrace_hdl_t *dtbda_handle;
	const char *dtbda_buffered;
	dtrace_probedata_t *dtbda_probe;
	const dtrace_recdesc_t *dtbda_recdesc;
	const dtrace_aggdata_t *dtbda_aggdata;
	uint32_t dtbda_flags;
} dtrace_bufdata_t;

typedef int dtrace_handle_buffered_f(const dtrace_bufdata_t *, void *);

#define DTRACE_AGGWALK_ERROR -1
#define DTRACE_AGGWALK_NEXT 0
#define DTRACE_AGGWALK_ABORT 1
#define DTRACE_AGGWALK_CLEAR 2
#define DTRACE_AGGWALK_NORMALIZE 3
#define DTRACE_AGGWALK_DENORMALIZE 4
#define DTRACE_AGGWALK_REMOVE 5

struct dtrace_aggdata {
	dtrace_hdl_t *dtada_handle;
	dtrace_aggdesc_t *dtada_desc;
	dtrace_eprobedesc_t *dtada_edesc;
	dtrace_probedesc_t *dtada_pdesc;
	caddr_t dtada_data;
	uint64_t dtada_normal;
	size_t dtada_size;
	caddr_t dtada_delta;
	caddr_t *dtada_percpu;
	caddr_t *dtada_percpu_delta;
	int64_t dtada_total;
	uint16_t dtada_minbin;
	uint16_t dtada_maxbin;
	uint32_t dtada_flags;
};

typedef int dtrace_aggregate_f(const dtrace_aggdata_t *, void *);
typedef int dtrace_consume_probe_f(const dtrace_probedata_t *, void *);
typedef int dtrace_consume_rec_f(const dtrace_probedata_t *, const dtrace_recdesc_t *,
    void *);

/* LP64 sizes and offsets (sys/dtrace.h, libdtrace dtrace.h field lists), checked here. */
_Static_assert(sizeof (dtrace_recdesc_t) == 32, "recdesc");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_size) == 4, "dtrd_size");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_offset) == 8, "dtrd_offset");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_alignment) == 12, "dtrd_alignment");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_format) == 14, "dtrd_format");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_arg) == 16, "dtrd_arg");
_Static_assert(offsetof(dtrace_recdesc_t, dtrd_uarg) == 24, "dtrd_uarg");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_varid) == 8, "dtagd_varid");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_flags) == 16, "dtagd_flags");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_id) == 20, "dtagd_id");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_epid) == 24, "dtagd_epid");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_size) == 28, "dtagd_size");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_nrecs) == 32, "dtagd_nrecs");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_pad) == 36, "dtagd_pad");
_Static_assert(offsetof(dtrace_aggdesc_t, dtagd_rec) == 40, "dtagd_rec");
_Static_assert(sizeof (dtrace_aggdata_t) == 96, "aggdata");
_Static_assert(offsetof(dtrace_aggdata_t, dtada_data) == 32, "dtada_data");
_Static_assert(offsetof(dtrace_aggdata_t, dtada_size) == 48, "dtada_size");
_Static_assert(offsetof(dtrace_aggdata_t, dtada_minbin) == 88, "dtada_minbin");
_Static_assert(sizeof (dtrace_dropdata_t) == 40, "dropdata");
_Static_assert(offsetof(dtrace_dropdata_t, dtdda_kind) == 12, "dtdda_kind");
_Static_assert(offsetof(dtrace_dropdata_t, dtdda_drops) == 16, "dtdda_drops");
_Static_assert(sizeof (dtrace_errdata_t) == 56, "errdata");
_Static_assert(offsetof(dtrace_errdata_t, dteda_cpu) == 24, "dteda_cpu");
_Static_assert(offsetof(dtrace_errdata_t, dteda_addr) == 40, "dteda_addr");
_Static_assert(offsetof(dtrace_errdata_t, dteda_msg) == 48, "dteda_msg");
_Static_assert(sizeof (dtrace_proginfo_t) == 24, "proginfo");
_Static_assert(offsetof(dtrace_proginfo_t, dpi_matches) == 16, "dpi_matches");
_Static_assert(sizeof (dtrace_probedesc_t) == 324, "probedesc");
_Static_assert(offsetof(dtrace_eprobedesc_t, dtepd_rec) == 24, "dtepd_rec");

/* --- layout table for the tests ---------------------------------------------------- */

#define F(type, field) { #type, #field, offsetof(type, field), \
	sizeof (((type *)0)->field) }
#define S(type) { #type, "", 0, sizeof (type) }

static const struct {
	const char *type;
	const char *field;
	size_t offset;
	size_t size;
} layout[] = {
	S(dtrace_recdesc_t),
	F(dtrace_recdesc_t, dtrd_action), F(dtrace_recdesc_t, dtrd_size),
	F(dtrace_recdesc_t, dtrd_offset), F(dtrace_recdesc_t, dtrd_alignment),
	F(dtrace_recdesc_t, dtrd_format), F(dtrace_recdesc_t, dtrd_arg),
	F(dtrace_recdesc_t, dtrd_uarg),
	S(dtrace_aggdesc_t),
	F(dtrace_aggdesc_t, dtagd_name), F(dtrace_aggdesc_t, dtagd_varid),
	F(dtrace_aggdesc_t, dtagd_flags), F(dtrace_aggdesc_t, dtagd_id),
	F(dtrace_aggdesc_t, dtagd_epid), F(dtrace_aggdesc_t, dtagd_size),
	F(dtrace_aggdesc_t, dtagd_nrecs), F(dtrace_aggdesc_t, dtagd_pad),
	F(dtrace_aggdesc_t, dtagd_rec),
	S(dtrace_eprobedesc_t),
	F(dtrace_eprobedesc_t, dtepd_epid), F(dtrace_eprobedesc_t, dtepd_probeid),
	F(dtrace_eprobedesc_t, dtepd_uarg), F(dtrace_eprobedesc_t, dtepd_size),
	F(dtrace_eprobedesc_t, dtepd_nrecs), F(dtrace_eprobedesc_t, dtepd_rec),
	S(dtrace_probedesc_t),
	F(dtrace_probedesc_t, dtpd_id), F(dtrace_probedesc_t, dtpd_provider),
	F(dtrace_probedesc_t, dtpd_mod), F(dtrace_probedesc_t, dtpd_func),
	F(dtrace_probedesc_t, dtpd_name),
	S(dtrace_aggdata_t),
	F(dtrace_aggdata_t, dtada_handle), F(dtrace_aggdata_t, dtada_desc),
	F(dtrace_aggdata_t, dtada_edesc), F(dtrace_aggdata_t, dtada_pdesc),
	F(dtrace_aggdata_t, dtada_data), F(dtrace_aggdata_t, dtada_normal),
	F(dtrace_aggdata_t, dtada_size), F(dtrace_aggdata_t, dtada_delta),
	F(dtrace_aggdata_t, dtada_percpu), F(dtrace_aggdata_t, dtada_percpu_delta),
	F(dtrace_aggdata_t, dtada_total), F(dtrace_aggdata_t, dtada_minbin),
	F(dtrace_aggdata_t, dtada_maxbin), F(dtrace_aggdata_t, dtada_flags),
	S(dtrace_dropdata_t),
	F(dtrace_dropdata_t, dtdda_handle), F(dtrace_dropdata_t, dtdda_cpu),
	F(dtrace_dropdata_t, dtdda_kind), F(dtrace_dropdata_t, dtdda_drops),
	F(dtrace_dropdata_t, dtdda_total), F(dtrace_dropdata_t, dtdda_msg),
	S(dtrace_errdata_t),
	F(dtrace_errdata_t, dteda_handle), F(dtrace_errdata_t, dteda_edesc),
	F(dtrace_errdata_t, dteda_pdesc), F(dtrace_errdata_t, dteda_cpu),
	F(dtrace_errdata_t, dteda_action), F(dtrace_errdata_t, dteda_offset),
	F(dtrace_errdata_t, dteda_fault), F(dtrace_errdata_t, dteda_addr),
	F(dtrace_errdata_t, dteda_msg),
	S(dtrace_bufdata_t),
	F(dtrace_bufdata_t, dtbda_handle), F(dtrace_bufdata_t, dtbda_buffered),
	F(dtrace_bufdata_t, dtbda_probe), F(dtrace_bufdata_t, dtbda_recdesc),
	F(dtrace_bufdata_t, dtbda_aggdata), F(dtrace_bufdata_t, dtbda_flags),
	S(dtrace_proginfo_t),
	F(dtrace_proginfo_t, dpi_descattr), F(dtrace_proginfo_t, dpi_stmtattr),
	F(dtrace_proginfo_t, dpi_aggregates), F(dtrace_proginfo_t, dpi_recgens),
	F(dtrace_proginfo_t, dpi_matches), F(dtrace_proginfo_t, dpi_speculations),
};

size_t stub_layout_count(void) { return sizeof (layout) / sizeof (layout[0]); }
const char *stub_layout_type(size_t i) { return layout[i].type; }
const char *stub_layout_field(size_t i) { return layout[i].field; }
size_t stub_layout_offset(size_t i) { return layout[i].offset; }
size_t stub_layout_size(size_t i) { return layout[i].size; }

/* --- the kernel's bucket functions (semantics of usr/src/uts/common/dtrace/dtrace.c) */

static int
quantize_bucket(int64_t val)
{
	int i;

	if (val < 0) {
		for (i = 0; i < (int)DTRACE_QUANTIZE_ZEROBUCKET; i++)
			if (val <= DTRACE_QUANTIZE_BUCKETVAL(i))
				return (i);
		abort();
	}
	for (i = DTRACE_QUANTIZE_ZEROBUCKET + 1; i < (int)DTRACE_QUANTIZE_NBUCKETS; i++)
		if (val < DTRACE_QUANTIZE_BUCKETVAL(i))
			return (i - 1);
	return (DTRACE_QUANTIZE_NBUCKETS - 1);
}

static int
lquantize_bucket(uint64_t arg, uint64_t nval)
{
	int32_t base = DTRACE_LQUANTIZE_BASE(arg);
	uint16_t step = DTRACE_LQUANTIZE_STEP(arg);
	uint16_t levels = DTRACE_LQUANTIZE_LEVELS(arg);
	int32_t val = (int32_t)nval, level;

	if (val < base)
		return (0);
	level = (val - base) / step;
	if (level < levels)
		return (level + 1);
	return (levels + 1);
}

static int
llquantize_bucket(uint16_t factor, uint16_t low, uint16_t high, uint16_t nsteps,
    int64_t value)
{
	int64_t this = 1, last, next;
	int base = 1, order;

	for (order = 0; order < low; order++)
		this *= factor;
	if (value < (last = this))
		return (0);
	for (this *= factor; order <= high; order++) {
		int nbuckets = this > nsteps ? nsteps : this;

		if ((next = this * factor) < this)
			value = this - 1;
		if (value < this)
			return (base + (value - last) / (this / nbuckets));
		base += nbuckets - (nbuckets / factor);
		last = this;
		this = next;
	}
	return (base);
}

/* --- the fake library ---------------------------------------------------------------- */

#define EDT_BASE 1000
#define EDT_COMPILER (EDT_BASE + 5)
#define STUB_C_ZDEFS 0x0004 /* usr/src/lib/libdtrace/common/dtrace.h DTRACE_C_ZDEFS */
#define EDT_NOMEM (EDT_BASE + 9)
#define EDT_BADOPTNAME (EDT_BASE + 40)
#define EDT_DROPABORT (EDT_BASE + 51)
#define EDT_ERRABORT (EDT_BASE + 54)
#define EDT_VERSION (EDT_BASE + 0)
#define EDT_NOTACTIVE (EDT_BASE + 70)
#define EDT_BRICKED (EDT_BASE + 60)
#define EDT_ACTIVE (EDT_BASE + 37)
#define EDT_BADOPTVAL (EDT_BASE + 41)
#define EDT_NOBUFFERED (EDT_BASE + 57)
#define END_TICK (-1) /* an event of the scenario's "end" section */
#define MAXAGGNAMES 256

#define MAXKEYS 8

typedef struct event {
	int run; /* 0: every run */
	int tick; /* 0: not tied to a tick (setup lines) */
	char kind[16];
	char sel[128];
	char agg[64];
	char func[16];
	int64_t params[4];
	int nparams;
	int nkeys;
	char keytype[MAXKEYS];
	char *keystr[MAXKEYS]; /* s: keys, strndup'd (the event is per record: small) */
	int64_t keyint[MAXKEYS];
	int nvalues;
	int64_t *values;
	long n1, n2;
	char *message; /* NULL: none */
	int done; /* delivered */
	int loop; /* rec only: fire again every loop ticks (0: once) */
	long fired; /* rec with loop: times applied */
	struct event *next;
} event_t;

struct dtrace_prog {
	char *text;
	int failed;
	int index;
	unsigned matches;
	dtrace_epid_t base_epid;
	struct dtrace_prog *next;
};

typedef struct entry {
	char *data;
	size_t size;
	struct entry *next; /* the aggregation's entries, in insertion order */
	struct entry *hnext; /* the entries of the same hash bucket */
	uint32_t hash;
} entry_t;

/*
 * libdtrace finds a snapped key's entry by hashing it (dt_aggregate.c: dt_ahash_t,
 * DTRACE_AHASHSIZE buckets per handle, and dtahe_hashval); so does the stand-in, per
 * aggregation, so that a walk every N seconds, which leaves up to every key in the
 * hash between walks, costs what it costs libdtrace and not a search of a list.
 */
#define AGG_HASHSIZE 4099

typedef struct agg {
	char name[64];
	dtrace_prog_t *prog;
	dtrace_aggdesc_t *desc;
	dtrace_eprobedesc_t edesc;
	dtrace_probedesc_t pdesc;
	size_t keysize; /* bytes before the value */
	size_t valsize;
	entry_t *entries;
	entry_t **tail; /* the last entry's next (or &entries) */
	entry_t **hash; /* AGG_HASHSIZE buckets, made at the first entry */
	struct agg *next;
} agg_t;

struct dtrace_hdl {
	int id; /* this process's N-th dtrace_open, for the call log */
	struct dtrace_hdl *next_open;
	int err;
	char errmsg[512];
	int run;
	int active;
	int stopped;
	int ticks;
	long strsize;
	dtrace_prog_t *progs;
	int nprogs;
	dtrace_epid_t next_epid;
	agg_t *aggs;
	int naggs;
	event_t *events;
	dtrace_handle_drop_f *drop_f;
	void *drop_arg;
	dtrace_handle_err_f *err_f;
	void *err_arg;
	int err_before_go;
	dtrace_handle_buffered_f *buf_f;
	void *buf_arg;
	uint64_t drop_totals[16];
	double last_poll; /* CLOCK_MONOTONIC seconds of the last status request */
	int64_t aggrate; /* ns; the "aggrate" option (default 1 s, dt_open.c) */
	int64_t last_snap; /* dt_lastagg: CLOCK_MONOTONIC ns, 0 = none yet */
	/* the handle's aggregation names and their functions (dt_open.c dt_aggs) */
	int naggnames;
	char aggname[MAXAGGNAMES][64];
	char aggfunc[MAXAGGNAMES][16];
	int aggprog[MAXAGGNAMES];
};

#include <time.h>

static double
now_seconds(void)
{
	struct timespec ts;

	(void) clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	(void) clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/*
 * The kernel's deadman (dtrace.c dtrace_state_deadman): an enabling whose consumer
 * has not asked for status for too long is killed, and libdtrace then reports
 * EDT_BRICKED. $DTRACE_STUB_DEADMAN (seconds) stands in for dtrace_deadman_user.
 */
static int
bricked(dtrace_hdl_t *dtp)
{
	const char *limit = getenv("DTRACE_STUB_DEADMAN");
	double now = now_seconds(), gap = now - dtp->last_poll;

	dtp->last_poll = now;
	return (limit != NULL && dtp->active && gap > atof(limit));
}

static void
stub_hlog(const dtrace_hdl_t *dtp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* One line per call: "PID hN CALL", N the handle's id (0 before dtrace_open has one). */
static void
stub_hlog(const dtrace_hdl_t *dtp, const char *fmt, ...)
{
	const char *path = getenv("DTRACE_STUB_LOG");
	FILE *fp;
	va_list ap;

	if (path == NULL || (fp = fopen(path, "a")) == NULL)
		return;
	va_start(ap, fmt);
	(void) fprintf(fp, "%d h%d ", (int)getpid(), dtp != NULL ? dtp->id : 0);
	(void) vfprintf(fp, fmt, ap);
	(void) fputc('\n', fp);
	va_end(ap);
	(void) fclose(fp);
}

#define	stub_log(...) stub_hlog(dtp, __VA_ARGS__)

/*
 * The handles open in this process, oldest first. Each handle is a consumer state
 * of its own (dt_open.c: one /dev/dtrace descriptor, one dtrace_state_t each), so
 * everything it has is its own; the scenario's process-wide events (drop, crash,
 * hang, exit/done, which name no program) happen on the oldest active handle.
 */
static dtrace_hdl_t *open_handles;
static int handles_opened;

static int
primary(const dtrace_hdl_t *dtp)
{
	const dtrace_hdl_t *h;

	for (h = open_handles; h != NULL; h = h->next_open)
		if (h->active && !h->stopped)
			return (h == dtp);
	return (1); /* none other active: this one */
}

/*
 * The run: the N-th process to open a handle (counted in $DTRACE_STUB_RUNS); every
 * handle a process opens belongs to its run. A new counter file (a new test) counts
 * afresh.
 */
static int
next_run(void)
{
	static char counted[4096];
	static int this_run;
	const char *path = getenv("DTRACE_STUB_RUNS");
	FILE *fp;
	int n = 0;

	if (path == NULL)
		return (1);
	if (this_run != 0 && strcmp(counted, path) == 0)
		return (this_run);
	if ((fp = fopen(path, "r")) != NULL) {
		if (fscanf(fp, "%d", &n) != 1)
			n = 0;
		(void) fclose(fp);
	}
	n++;
	if ((fp = fopen(path, "w")) != NULL) {
		(void) fprintf(fp, "%d\n", n);
		(void) fclose(fp);
	}
	(void) snprintf(counted, sizeof (counted), "%s", path);
	this_run = n;
	return (n);
}

static char *
rest_of(char *p)
{
	while (*p == ' ')
		p++;
	return (p);
}

/* A copy of at most max bytes of text (what the event's fixed fields used to keep). */
static char *
text_of(const char *text, size_t max)
{
	char *copy = strndup(text, max);

	if (copy == NULL)
		abort();
	return (copy);
}

static const char *
message_of(const event_t *ev)
{
	return (ev->message != NULL ? ev->message : "");
}

static void
free_event(event_t *ev)
{
	int i;

	for (i = 0; i < MAXKEYS; i++)
		free(ev->keystr[i]);
	free(ev->message);
	free(ev->values);
	free(ev);
}

/* Parse one scenario line into an event; returns NULL for blank lines. */
static event_t *
parse_line(char *line, int run, int tick, int loop)
{
	event_t *ev;
	char *save = NULL, *tok;
	int n;

	line[strcspn(line, "\n")] = '\0';
	if ((tok = strtok_r(line, " ", &save)) == NULL || tok[0] == '#')
		return (NULL);
	if ((ev = calloc(1, sizeof (*ev))) == NULL)
		abort();
	ev->run = run;
	ev->tick = tick;
	ev->loop = loop;
	(void) snprintf(ev->kind, sizeof (ev->kind), "%s", tok);
	if (strcmp(tok, "exit") == 0 || strcmp(tok, "done") == 0 ||
	    strcmp(tok, "bricked") == 0) {
		tok = strtok_r(NULL, " ", &save);
		(void) snprintf(ev->sel, sizeof (ev->sel), "%s", tok ? tok : "");
		return (ev);
	}
	if (strcmp(tok, "matches") == 0 || strcmp(tok, "compile_fail") == 0 ||
	    strcmp(tok, "error") == 0 || strcmp(tok, "no_probe") == 0 ||
	    strcmp(tok, "output") == 0 || strcmp(tok, "enable_fail") == 0) {
		tok = strtok_r(NULL, " ", &save);
		(void) snprintf(ev->sel, sizeof (ev->sel), "%s", tok ? tok : "");
		if (strcmp(ev->kind, "matches") == 0) {
			tok = strtok_r(NULL, " ", &save);
			ev->n1 = tok ? atol(tok) : 1;
		} else if (strcmp(ev->kind, "error") == 0 ||
		    strcmp(ev->kind, "enable_fail") == 0) {
			tok = strtok_r(NULL, " ", &save);
			ev->n1 = tok ? atol(tok) : 0;
			tok = strtok_r(NULL, " ", &save);
			ev->n2 = tok ? atol(tok) : 0;
			ev->message = text_of(save ? rest_of(save) : "", 511);
		} else {
			ev->message = text_of(save ? rest_of(save) : "", 511);
		}
		return (ev);
	}
	if (strcmp(tok, "open_fail") == 0 || strcmp(tok, "drop") == 0) {
		tok = strtok_r(NULL, " ", &save);
		ev->n1 = tok ? atol(tok) : 0;
		tok = strtok_r(NULL, " ", &save);
		ev->n2 = tok ? atol(tok) : 0;
		return (ev);
	}
	if (strcmp(tok, "rec") == 0) {
		int part = 0;

		tok = strtok_r(NULL, " ", &save);
		(void) snprintf(ev->sel, sizeof (ev->sel), "%s", tok ? tok : "");
		tok = strtok_r(NULL, " ", &save);
		(void) snprintf(ev->agg, sizeof (ev->agg), "%s", tok ? tok : "");
		tok = strtok_r(NULL, " ", &save);
		(void) snprintf(ev->func, sizeof (ev->func), "%s", tok ? tok : "");
		ev->values = calloc(4096, sizeof (int64_t));
		while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
			if (strcmp(tok, "|") == 0) {
				part++;
				continue;
			}
			if (part == 0 && ev->nparams < 4) {
				ev->params[ev->nparams++] = strtoll(tok, NULL, 0);
			} else if (part == 1 && ev->nkeys < MAXKEYS) {
				n = ev->nkeys++;
				ev->keytype[n] = tok[0];
				if (tok[0] == 's')
					ev->keystr[n] = text_of(tok + 2, 127);
				else
					ev->keyint[n] = strtoll(tok + 2, NULL, 0);
			} else if (part == 2 && ev->nvalues < 4096) {
				ev->values[ev->nvalues++] = strtoll(tok, NULL, 0);
			}
		}
		/* keep only what was read: scenarios may hold many thousands of records */
		ev->values = realloc(ev->values, (ev->nvalues ? ev->nvalues : 1) *
		    sizeof (int64_t));
		if (ev->values == NULL)
			abort();
		return (ev);
	}
	return (ev); /* crash, hang, done */
}

static void
load_scenario(dtrace_hdl_t *dtp)
{
	const char *path = getenv("DTRACE_STUB_SCENARIO");
	char *line = NULL;
	size_t cap = 0;
	FILE *fp;
	int run = 0, tick = 0, loop = 0;
	event_t *last = NULL, *ev;

	if (path == NULL || (fp = fopen(path, "r")) == NULL)
		return;
	while (getline(&line, &cap, fp) != -1) {
		if (strncmp(line, "run ", 4) == 0) {
			run = line[4] == '*' ? 0 : atoi(line + 4);
			tick = 0;
			continue;
		}
		if (strncmp(line, "tick ", 5) == 0) {
			tick = atoi(line + 5);
			continue;
		}
		if (strcmp(line, "end\n") == 0 || strcmp(line, "end") == 0) {
			tick = END_TICK;
			continue;
		}
		if (strncmp(line, "loop ", 5) == 0) {
			loop = atoi(line + 5);
			continue;
		}
		if ((ev = parse_line(line, run, tick, loop)) == NULL)
			continue;
		if (ev->run != 0 && ev->run != dtp->run) {
			free_event(ev);
			continue;
		}
		if (last == NULL)
			dtp->events = ev;
		else
			last->next = ev;
		last = ev;
	}
	free(line);
	(void) fclose(fp);
}

static int
set_err(dtrace_hdl_t *dtp, int err)
{
	dtp->err = err;
	return (-1);
}

dtrace_hdl_t *
dtrace_open(int version, int flags, int *errp)
{
	dtrace_hdl_t *dtp = NULL, **hp;
	event_t *ev;

	stub_log("open version=%d flags=%d", version, flags);
	if (version != DTRACE_VERSION) {
		if (errp != NULL)
			*errp = EDT_VERSION;
		return (NULL);
	}
	if ((dtp = calloc(1, sizeof (*dtp))) == NULL)
		abort();
	dtp->run = next_run();
	dtp->strsize = 256;
	dtp->aggrate = 1000000000LL; /* dt_open.c: aggrate 1 s */
	dtp->next_epid = 1; /* DTRACE_EPIDNONE + 1 */
	load_scenario(dtp);
	for (ev = dtp->events; ev != NULL; ev = ev->next) {
		if (strcmp(ev->kind, "open_fail") == 0) {
			if (errp != NULL)
				*errp = (int)ev->n1;
			stub_log("open failed errno=%ld", ev->n1);
			free(dtp);
			return (NULL);
		}
	}
	dtp->id = ++handles_opened;
	for (hp = &open_handles; *hp != NULL; hp = &(*hp)->next_open)
		continue;
	*hp = dtp;
	stub_log("opened run=%d", dtp->run);
	return (dtp);
}

int
dtrace_errno(dtrace_hdl_t *dtp)
{
	return (dtp->err);
}

const char *
dtrace_errmsg(dtrace_hdl_t *dtp, int error)
{
	if (error == EDT_COMPILER && dtp != NULL && dtp->errmsg[0] != '\0')
		return (dtp->errmsg);
	switch (error) {
	case EDT_VERSION: return ("Client requested version newer than library");
	case EDT_NOMEM: return ("Memory allocation failure");
	case EDT_BADOPTNAME: return ("Invalid option name");
	case EDT_DROPABORT: return ("Abort due to drop");
	case EDT_ERRABORT: return ("Abort due to error");
	case EDT_NOTACTIVE: return ("Tracing is not yet active");
	case EDT_BRICKED: return ("Abort due to systemic unresponsiveness");
	case EDT_ACTIVE: return ("Operation illegal when tracing is active");
	case EDT_BADOPTVAL: return ("Invalid value for specified option");
	case EDT_NOBUFFERED: return ("Attempt to buffer output without handler");
	default: break;
	}
	if (error < EDT_BASE)
		return (strerror(error));
	return ("Unknown libdtrace error");
}

/* dt_options.c: how each option's value is parsed. */
enum { OPT_FLAG, OPT_SIZE, OPT_RATE, OPT_RUNTIME, OPT_POLICY, OPT_RESIZE, OPT_ANY };

typedef struct {
	const char *name;
	int parse;
} opt_t;

/* _dtrace_ctoptions (the ones a consumer might plausibly set; all are accepted) */
static const opt_t ct_options[] = {
	{ "cpp", OPT_FLAG }, { "defaultargs", OPT_FLAG }, { "define", OPT_ANY },
	{ "empty", OPT_FLAG }, { "errtags", OPT_FLAG }, { "incdir", OPT_ANY },
	{ "knodefs", OPT_FLAG }, { "nolibs", OPT_FLAG }, { "pspec", OPT_FLAG },
	{ "undef", OPT_ANY }, { "unodefs", OPT_FLAG }, { "verbose", OPT_FLAG },
	{ "zdefs", OPT_FLAG }, { NULL, 0 }
};

/* _dtrace_rtoptions: settable only while tracing is not active */
static const opt_t rt_options[] = {
	{ "aggsize", OPT_SIZE }, { "bufsize", OPT_SIZE }, { "bufpolicy", OPT_POLICY },
	{ "bufresize", OPT_RESIZE }, { "cleanrate", OPT_RATE }, { "cpu", OPT_RUNTIME },
	{ "destructive", OPT_RUNTIME }, { "dynvarsize", OPT_SIZE },
	{ "grabanon", OPT_RUNTIME }, { "jstackframes", OPT_RUNTIME },
	{ "jstackstrsize", OPT_SIZE }, { "nspec", OPT_RUNTIME }, { "specsize", OPT_SIZE },
	{ "stackframes", OPT_RUNTIME }, { "statusrate", OPT_RATE },
	{ "strsize", OPT_SIZE }, { "ustackframes", OPT_RUNTIME }, { "zone", OPT_ANY },
	{ "temporal", OPT_RUNTIME }, { NULL, 0 }
};

/* _dtrace_drtoptions: dynamic run-time options, settable at any time */
static const opt_t drt_options[] = {
	{ "agghist", OPT_RUNTIME }, { "aggpack", OPT_RUNTIME }, { "aggrate", OPT_RATE },
	{ "aggsortkey", OPT_RUNTIME }, { "aggsortkeypos", OPT_RUNTIME },
	{ "aggsortpos", OPT_RUNTIME }, { "aggsortrev", OPT_RUNTIME },
	{ "aggzoom", OPT_RUNTIME }, { "flowindent", OPT_RUNTIME }, { "quiet", OPT_RUNTIME },
	{ "rawbytes", OPT_RUNTIME }, { "stackindent", OPT_RUNTIME },
	{ "switchrate", OPT_RATE }, { NULL, 0 }
};

static const opt_t *
find_opt(const opt_t *table, const char *name)
{
	for (; table->name != NULL; table++)
		if (strcmp(table->name, name) == 0)
			return (table);
	return (NULL);
}

/* dt_optval_parse: a number with an optional k/m/g/t suffix (powers of 1024). */
static int
parse_size(const char *val, int64_t *out)
{
	size_t len = strlen(val);
	int64_t mul = 1;
	char *end;
	unsigned long long n;

	if (len == 0)
		return (-1);
	switch (val[len - 1]) {
	case 't': case 'T': mul *= 1024; /* FALLTHROUGH */
	case 'g': case 'G': mul *= 1024; /* FALLTHROUGH */
	case 'm': case 'M': mul *= 1024; /* FALLTHROUGH */
	case 'k': case 'K': mul *= 1024; break;
	default: break;
	}
	errno = 0;
	n = strtoull(val, &end, 0);
	if ((mul > 1 && end != &val[len - 1]) || (mul == 1 && *end != '\0') ||
	    errno != 0 || end == val || (int64_t)(n * mul) < 0)
		return (-1);
	*out = (int64_t)(n * mul);
	return (0);
}

/* dt_opt_rate: a number with a time suffix (ns when there is none) or hz. */
static int
parse_rate(const char *val, int64_t *out)
{
	static const struct { const char *name; int64_t mul; } suffix[] = {
		{ "ns", 1 }, { "nsec", 1 }, { "us", 1000 }, { "usec", 1000 },
		{ "ms", 1000000 }, { "msec", 1000000 }, { "s", 1000000000LL },
		{ "sec", 1000000000LL }, { "m", 60000000000LL }, { "min", 60000000000LL },
		{ "h", 3600000000000LL }, { "hour", 3600000000000LL },
		{ "d", 86400000000000LL }, { "day", 86400000000000LL }, { "hz", 0 },
		{ NULL, 0 }
	};
	char *end;
	int64_t mul = 1, n;
	int i;

	errno = 0;
	n = (int64_t)strtoull(val, &end, 0);
	for (i = 0; suffix[i].name != NULL; i++) {
		if (strcasecmp(suffix[i].name, end) == 0) {
			mul = suffix[i].mul;
			break;
		}
	}
	if ((suffix[i].name == NULL && *end != '\0') || n < 0 || end == val)
		return (-1);
	*out = mul == 0 ? (n != 0 ? 1000000000LL / n : 0) : n * mul;
	return (0);
}

/* dt_opt_runtime: yes/no-style words, or a number. */
static int
parse_runtime(const char *val)
{
	static const char *const words[] = { "yes", "no", "enable", "disable", "enabled",
	    "disabled", "true", "false", "on", "off", "set", "unset", NULL };
	char *end;
	int i;

	if (val[0] == '\0')
		return (0);
	for (i = 0; words[i] != NULL; i++)
		if (strcasecmp(words[i], val) == 0)
			return (0);
	errno = 0;
	(void) strtoull(val, &end, 0);
	return (*end != '\0' || errno != 0 || val[0] == '-' ? -1 : 0);
}

static int
parse_opt(dtrace_hdl_t *dtp, const opt_t *op, const char *val)
{
	int64_t n = 0;

	switch (op->parse) {
	case OPT_SIZE:
		if (val != NULL && parse_size(val, &n) != 0)
			return (set_err(dtp, EDT_BADOPTVAL));
		if (strcmp(op->name, "strsize") == 0 && val != NULL)
			dtp->strsize = (long)n;
		return (0);
	case OPT_RATE:
		if (val != NULL && parse_rate(val, &n) != 0)
			return (set_err(dtp, EDT_BADOPTVAL));
		if (strcmp(op->name, "aggrate") == 0)
			dtp->aggrate = n;
		return (0);
	case OPT_RUNTIME:
		if (val != NULL && parse_runtime(val) != 0)
			return (set_err(dtp, EDT_BADOPTVAL));
		return (0);
	case OPT_POLICY:
		if (val == NULL || (strcmp(val, "ring") != 0 && strcmp(val, "fill") != 0 &&
		    strcmp(val, "switch") != 0))
			return (set_err(dtp, EDT_BADOPTVAL));
		return (0);
	case OPT_RESIZE:
		if (val == NULL || (strcmp(val, "auto") != 0 && strcmp(val, "manual") != 0))
			return (set_err(dtp, EDT_BADOPTVAL));
		return (0);
	default:
		return (0);
	}
}

int
dtrace_setopt(dtrace_hdl_t *dtp, const char *opt, const char *val)
{
	const opt_t *op;

	stub_log("setopt %s=%s", opt, val ? val : "(null)");
	if (opt == NULL)
		return (set_err(dtp, EINVAL));
	if ((op = find_opt(ct_options, opt)) != NULL ||
	    (op = find_opt(drt_options, opt)) != NULL)
		return (parse_opt(dtp, op, val));
	if ((op = find_opt(rt_options, opt)) != NULL) {
		/* "Only dynamic run-time options may be set while tracing is active." */
		if (dtp->active) {
			stub_log("setopt %s refused: tracing is active", opt);
			return (set_err(dtp, EDT_ACTIVE));
		}
		return (parse_opt(dtp, op, val));
	}
	return (set_err(dtp, EDT_BADOPTNAME));
}

int
dtrace_handle_drop(dtrace_hdl_t *dtp, dtrace_handle_drop_f *f, void *arg)
{
	stub_log("handle_drop");
	if (dtp->drop_f != NULL)
		return (set_err(dtp, EALREADY));
	dtp->drop_f = f;
	dtp->drop_arg = arg;
	return (0);
}

int
dtrace_handle_err(dtrace_hdl_t *dtp, dtrace_handle_err_f *f, void *arg)
{
	stub_log("handle_err");
	if (dtp->err_f != NULL)
		return (set_err(dtp, EALREADY));
	dtp->err_f = f;
	dtp->err_arg = arg;
	dtp->err_before_go = !dtp->active;
	return (0);
}

int
dtrace_handle_buffered(dtrace_hdl_t *dtp, dtrace_handle_buffered_f *f, void *arg)
{
	stub_log("handle_buffered");
	if (dtp->buf_f != NULL)
		return (set_err(dtp, EALREADY));
	dtp->buf_f = f;
	dtp->buf_arg = arg;
	return (0);
}

static event_t *
find_rule(dtrace_hdl_t *dtp, const char *kind, const char *text)
{
	event_t *ev;

	for (ev = dtp->events; ev != NULL; ev = ev->next)
		if (strcmp(ev->kind, kind) == 0 && strstr(text, ev->sel) != NULL)
			return (ev);
	return (NULL);
}

static int
ident_char(int c)
{
	return (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'));
}

/*
 * Every "@name[...] = func(" of a program against the handle's aggregation names
 * (comments skipped): a name already bound to another function is the compiler's
 * D_AGG_REDEF error (dt_parser.c); a new one is added to the handle.
 */
static int
check_aggs(dtrace_hdl_t *dtp, const char *text, int prog)
{
	const char *p = text;
	char name[64], func[16];
	int i, depth;
	size_t n;

	while (*p != '\0') {
		if (p[0] == '/' && p[1] == '*') {
			const char *e = strstr(p + 2, "*/");
			p = e != NULL ? e + 2 : p + strlen(p);
			continue;
		}
		if (*p++ != '@')
			continue;
		for (n = 0; ident_char(*p) && n < sizeof (name) - 1; p++)
			name[n++] = *p;
		if (n == 0)
			name[n++] = '_';
		name[n] = '\0';
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (*p == '[') {
			for (depth = 0; *p != '\0'; p++) {
				if (*p == '[')
					depth++;
				else if (*p == ']' && --depth == 0) {
					p++;
					break;
				}
			}
		}
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (p[0] != '=' || p[1] == '=')
			continue;
		for (p++; *p == ' ' || *p == '\t' || *p == '\n'; p++)
			continue;
		for (n = 0; ident_char(*p) && n < sizeof (func) - 1; p++)
			func[n++] = *p;
		func[n] = '\0';
		for (i = 0; i < dtp->naggnames; i++)
			if (strcmp(dtp->aggname[i], name) == 0)
				break;
		if (i < dtp->naggnames) {
			if (strcmp(dtp->aggfunc[i], func) != 0) {
				(void) snprintf(dtp->errmsg, sizeof (dtp->errmsg),
				    "aggregation redefined: @%s\n\t current: @%s = %s( )\n"
				    "\tprevious: @%s = %s( ) : line 1\n", name, name, func, name,
				    dtp->aggfunc[i]);
				stub_log("compile failed: aggregation redefined @%s", name);
				dtp->err = EDT_COMPILER;
				return (-1);
			}
			if (dtp->aggprog[i] != prog)
				stub_log("aggregation @%s shared with program %d", name,
				    dtp->aggprog[i]);
			continue;
		}
		if (dtp->naggnames < MAXAGGNAMES) {
			(void) snprintf(dtp->aggname[dtp->naggnames], 64, "%s", name);
			(void) snprintf(dtp->aggfunc[dtp->naggnames], 16, "%s", func);
			dtp->aggprog[dtp->naggnames++] = prog;
		}
	}
	return (0);
}

dtrace_prog_t *
dtrace_program_strcompile(dtrace_hdl_t *dtp, const char *text, dtrace_probespec_t spec,
    uint_t cflags, int argc, char *const argv[])
{
	dtrace_prog_t *pgp, **pp;
	event_t *ev;

	(void) argc;
	(void) argv;
	stub_log("compile spec=%d cflags=%u len=%zu", (int)spec, cflags, strlen(text));
	if (dtp->active)
		return (set_err(dtp, EINVAL), NULL);
	if ((ev = find_rule(dtp, "compile_fail", text)) != NULL) {
		(void) snprintf(dtp->errmsg, sizeof (dtp->errmsg), "%s", message_of(ev));
		stub_log("compile failed: %s", message_of(ev));
		dtp->err = EDT_COMPILER;
		return (NULL);
	}
	/* dt_cc.c: an unmatched probe description is an error unless DTRACE_C_ZDEFS. */
	if ((ev = find_rule(dtp, "no_probe", text)) != NULL && !(cflags & STUB_C_ZDEFS)) {
		(void) snprintf(dtp->errmsg, sizeof (dtp->errmsg),
		    "probe description %s does not match any probes", ev->sel);
		stub_log("compile failed: no probe %s", ev->sel);
		dtp->err = EDT_COMPILER;
		return (NULL);
	}
	if (check_aggs(dtp, text, dtp->nprogs) != 0)
		return (NULL);
	if ((pgp = calloc(1, sizeof (*pgp))) == NULL || (pgp->text = strdup(text)) == NULL)
		abort();
	pgp->index = dtp->nprogs++;
	ev = find_rule(dtp, "matches", text);
	pgp->matches = ev != NULL ? (unsigned)ev->n1 : 1;
	for (pp = &dtp->progs; *pp != NULL; pp = &(*pp)->next)
		continue;
	*pp = pgp;
	return (pgp);
}

int
dtrace_program_exec(dtrace_hdl_t *dtp, dtrace_prog_t *pgp, dtrace_proginfo_t *pip)
{
	if (pip != NULL) {
		(void) memset(pip, 0, sizeof (*pip));
		pip->dpi_matches = pgp->matches;
	}
	event_t *ev = find_rule(dtp, "enable_fail", pgp->text);

	pgp->base_epid = dtp->next_epid;
	if (ev != NULL) {
		/* dtrace_enabling_match: the probes enabled before the error stay enabled */
		pgp->matches = (unsigned)ev->n1;
		dtp->next_epid += pgp->matches;
		stub_log("exec prog=%d failed after %u probes epids=%u-%u", pgp->index,
		    pgp->matches, pgp->base_epid, dtp->next_epid - 1);
		return (set_err(dtp, (int)ev->n2));
	}
	dtp->next_epid += pgp->matches;
	stub_log("exec prog=%d matches=%u epids=%u-%u", pgp->index, pgp->matches,
	    pgp->base_epid, dtp->next_epid - 1);
	return (0);
}

static dtrace_prog_t *find_prog(dtrace_hdl_t *, const char *);

/*
 * Once tracing, a handle's programs are fixed (nothing compiles on an active handle,
 * see dtrace_program_strcompile), so records of programs it does not run can never
 * fire on it: they go. A real consumer holds nothing of other consumers' probes: its
 * user-space aggregation memory is one snapshot buffer of aggsize bytes
 * (illumos-gate usr/src/lib/libdtrace/common/dt_aggregate.c, dt_aggregate_go) and a
 * hash of the keys snapped since the last walk (dt_aggregate_snap_cpu; a REMOVE walk
 * frees each entry, dt_aggwalk_rval). Without this, every handle kept every script's
 * records of the scenario: at 1,000 zones, 7 handles of 30,000 records each.
 */
static void
prune_events(dtrace_hdl_t *dtp)
{
	event_t **evp = &dtp->events, *ev;
	long kept = 0, dropped = 0;

	while ((ev = *evp) != NULL) {
		if (strcmp(ev->kind, "rec") == 0 && find_prog(dtp, ev->sel) == NULL) {
			*evp = ev->next;
			free_event(ev);
			dropped++;
		} else {
			evp = &ev->next;
			kept++;
		}
	}
	stub_log("events kept=%ld dropped=%ld", kept, dropped);
#ifdef __GLIBC__
	/* hand the dropped records' pages back, so RSS shows what the handles keep */
	(void) malloc_trim(0);
#endif
}

int
dtrace_go(dtrace_hdl_t *dtp)
{
	stub_log("go handlers=%s%s%s", dtp->drop_f ? "drop," : "", dtp->err_f ? "err," : "",
	    dtp->buf_f ? "buffered" : "");
	prune_events(dtp);
	dtp->active = 1;
	dtp->last_poll = now_seconds();
	return (0);
}

int
dtrace_stop(dtrace_hdl_t *dtp)
{
	event_t *ev;

	if (dtp->stopped)
		return (0);
	stub_log("stop");
	dtp->stopped = 1;
	/* the END probe fires: its records are due at the next snapshot */
	for (ev = dtp->events; ev != NULL; ev = ev->next)
		if (ev->tick == END_TICK)
			ev->tick = dtp->ticks > 0 ? dtp->ticks : 1;
	return (0);
}

void
dtrace_close(dtrace_hdl_t *dtp)
{
	event_t *ev, *nev;
	dtrace_prog_t *p, *np;
	agg_t *a, *na;
	entry_t *e, *ne;

	dtrace_hdl_t **hp;

	stub_log("close");
	for (hp = &open_handles; *hp != NULL; hp = &(*hp)->next_open) {
		if (*hp == dtp) {
			*hp = dtp->next_open;
			break;
		}
	}
	for (ev = dtp->events; ev != NULL; ev = nev) {
		nev = ev->next;
		free_event(ev);
	}
	for (p = dtp->progs; p != NULL; p = np) {
		np = p->next;
		free(p->text);
		free(p);
	}
	for (a = dtp->aggs; a != NULL; a = na) {
		na = a->next;
		for (e = a->entries; e != NULL; e = ne) {
			ne = e->next;
			free(e->data);
			free(e);
		}
		free(a->hash);
		free(a->desc);
		free(a);
	}
	free(dtp);
}

/* An event for this handle: the program it names runs here, or a process-wide one. */
static int
for_handle(dtrace_hdl_t *dtp, const event_t *ev)
{
	if (ev->sel[0] != '\0')
		return (find_prog(dtp, ev->sel) != NULL);
	return (primary(dtp));
}

/* dt_work.c dtrace_status: an exit() seen in the status stops tracing. */
static int
status_of(dtrace_hdl_t *dtp)
{
	event_t *ev;

	if (!dtp->active)
		return (DTRACE_STATUS_NONE);
	if (dtp->stopped)
		return (DTRACE_STATUS_STOPPED);
	if (bricked(dtp))
		return (set_err(dtp, EDT_BRICKED));
	for (ev = dtp->events; ev != NULL; ev = ev->next) {
		if (ev->done || ev->tick <= 0 || ev->tick > dtp->ticks ||
		    strcmp(ev->kind, "bricked") != 0 || !for_handle(dtp, ev))
			continue;
		ev->done = 1;
		stub_log("killed by the deadman");
		return (set_err(dtp, EDT_BRICKED));
	}
	for (ev = dtp->events; ev != NULL; ev = ev->next) {
		if (ev->done || ev->tick <= 0 || ev->tick > dtp->ticks ||
		    (strcmp(ev->kind, "exit") != 0 && strcmp(ev->kind, "done") != 0) ||
		    !for_handle(dtp, ev))
			continue;
		ev->done = 1;
		stub_log("exited");
		(void) dtrace_stop(dtp);
		return (DTRACE_STATUS_EXITED);
	}
	return (DTRACE_STATUS_OKAY);
}

int
dtrace_status(dtrace_hdl_t *dtp)
{
	stub_log("status");
	return (status_of(dtp));
}

static dtrace_prog_t *
find_prog(dtrace_hdl_t *dtp, const char *sel)
{
	dtrace_prog_t *p;

	for (p = dtp->progs; p != NULL; p = p->next)
		if (strstr(p->text, sel) != NULL)
			return (p);
	return (NULL);
}

static uint16_t
action_of(const char *func)
{
	static const struct { const char *name; uint16_t act; } acts[] = {
		{ "count", DTRACEAGG_COUNT }, { "min", DTRACEAGG_MIN },
		{ "max", DTRACEAGG_MAX }, { "avg", DTRACEAGG_AVG },
		{ "sum", DTRACEAGG_SUM }, { "quantize", DTRACEAGG_QUANTIZE },
		{ "lquantize", DTRACEAGG_LQUANTIZE }, { "llquantize", DTRACEAGG_LLQUANTIZE },
	};
	size_t i;

	for (i = 0; i < sizeof (acts) / sizeof (acts[0]); i++)
		if (strcmp(acts[i].name, func) == 0)
			return (acts[i].act);
	abort();
}

static uint64_t
arg_of(const event_t *ev)
{
	uint64_t arg = 0;

	if (strcmp(ev->func, "lquantize") == 0) {
		int64_t base = ev->params[0], limit = ev->params[1];
		int64_t step = ev->nparams > 2 ? ev->params[2] : 1;
		uint64_t levels = (uint64_t)((limit - base) / step);

		arg = ((uint64_t)step << DTRACE_LQUANTIZE_STEPSHIFT) |
		    (levels << DTRACE_LQUANTIZE_LEVELSHIFT) |
		    (((uint64_t)base << DTRACE_LQUANTIZE_BASESHIFT) & DTRACE_LQUANTIZE_BASEMASK);
	} else if (strcmp(ev->func, "llquantize") == 0) {
		arg = ((uint64_t)ev->params[0] << DTRACE_LLQUANTIZE_FACTORSHIFT) |
		    ((uint64_t)ev->params[1] << DTRACE_LLQUANTIZE_LOWSHIFT) |
		    ((uint64_t)ev->params[2] << DTRACE_LLQUANTIZE_HIGHSHIFT) |
		    ((uint64_t)ev->params[3] << DTRACE_LLQUANTIZE_NSTEPSHIFT);
	}
	return (arg);
}

static size_t
valsize_of(uint16_t act, uint64_t arg)
{
	switch (act) {
	case DTRACEAGG_AVG: return (2 * sizeof (int64_t));
	case DTRACEAGG_QUANTIZE: return (DTRACE_QUANTIZE_NBUCKETS * sizeof (int64_t));
	case DTRACEAGG_LQUANTIZE:
		return ((DTRACE_LQUANTIZE_LEVELS(arg) + 3) * sizeof (int64_t));
	case DTRACEAGG_LLQUANTIZE:
		return ((llquantize_bucket(DTRACE_LLQUANTIZE_FACTOR(arg),
		    DTRACE_LLQUANTIZE_LOW(arg), DTRACE_LLQUANTIZE_HIGH(arg),
		    DTRACE_LLQUANTIZE_NSTEP(arg), INT64_MAX) + 2) * sizeof (int64_t));
	default: return (sizeof (int64_t));
	}
}

static size_t
align_up(size_t off, size_t a)
{
	return ((off + a - 1) / a * a);
}

/* The aggregation (its description) for a rec event, created on first use. */
static agg_t *
agg_for(dtrace_hdl_t *dtp, dtrace_prog_t *prog, const event_t *ev)
{
	agg_t *a, **ap;
	dtrace_aggdesc_t *d;
	int nrecs = ev->nkeys + 2, i;
	size_t off;
	uint16_t act = action_of(ev->func);
	uint64_t arg = arg_of(ev);

	for (a = dtp->aggs; a != NULL; a = a->next)
		if (strcmp(a->name, ev->agg) == 0)
			return (a);
	if ((a = calloc(1, sizeof (*a))) == NULL)
		abort();
	(void) snprintf(a->name, sizeof (a->name), "%s", ev->agg);
	a->prog = prog;
	d = calloc(1, sizeof (dtrace_aggdesc_t) + (nrecs - 1) * sizeof (dtrace_recdesc_t));
	if (d == NULL)
		abort();
	d->dtagd_name = a->name;
	d->dtagd_varid = 1 + dtp->naggs;
	d->dtagd_id = 1 + dtp->naggs++;
	d->dtagd_epid = prog->base_epid;
	d->dtagd_nrecs = nrecs;
	d->dtagd_rec[0].dtrd_action = DTRACEACT_DIFEXPR;
	d->dtagd_rec[0].dtrd_size = sizeof (dtrace_aggid_t);
	d->dtagd_rec[0].dtrd_offset = 0;
	d->dtagd_rec[0].dtrd_alignment = sizeof (dtrace_aggid_t);
	d->dtagd_rec[0].dtrd_uarg = 1; /* the compiler's statement, as libdtrace has it */
	off = sizeof (dtrace_aggid_t);
	for (i = 0; i < ev->nkeys; i++) {
		dtrace_recdesc_t *r = &d->dtagd_rec[i + 1];
		size_t size = ev->keytype[i] == 'z' ? 4 : ev->keytype[i] == 'i' ? 8 :
		    (size_t)dtp->strsize;
		size_t al = ev->keytype[i] == 's' ? 1 : size;

		off = align_up(off, al);
		r->dtrd_action = DTRACEACT_DIFEXPR;
		r->dtrd_size = (uint32_t)size;
		r->dtrd_offset = (uint32_t)off;
		r->dtrd_alignment = (uint16_t)al;
		off += size;
	}
	off = align_up(off, sizeof (uint64_t));
	a->keysize = off;
	a->valsize = valsize_of(act, arg);
	d->dtagd_rec[nrecs - 1].dtrd_action = act;
	d->dtagd_rec[nrecs - 1].dtrd_size = (uint32_t)a->valsize;
	d->dtagd_rec[nrecs - 1].dtrd_offset = (uint32_t)off;
	d->dtagd_rec[nrecs - 1].dtrd_alignment = sizeof (uint64_t);
	d->dtagd_rec[nrecs - 1].dtrd_arg = arg;
	d->dtagd_size = (uint32_t)(off + a->valsize);
	a->desc = d;
	a->edesc.dtepd_epid = prog->base_epid;
	a->edesc.dtepd_probeid = 100 + prog->base_epid;
	a->edesc.dtepd_nrecs = 1;
	a->pdesc.dtpd_id = a->edesc.dtepd_probeid;
	(void) snprintf(a->pdesc.dtpd_provider, DTRACE_PROVNAMELEN, "stub");
	(void) snprintf(a->pdesc.dtpd_name, DTRACE_NAMELEN, "fire");
	for (ap = &dtp->aggs; *ap != NULL; ap = &(*ap)->next)
		continue;
	*ap = a;
	return (a);
}

static void
init_value(agg_t *a, char *val, uint16_t act, uint64_t arg)
{
	int64_t *v = (int64_t *)val;

	(void) memset(val, 0, a->valsize);
	if (act == DTRACEAGG_MIN)
		v[0] = INT64_MAX;
	else if (act == DTRACEAGG_MAX)
		v[0] = INT64_MIN;
	else if (act == DTRACEAGG_LQUANTIZE || act == DTRACEAGG_LLQUANTIZE)
		v[0] = (int64_t)arg;
}

/* FNV-1a of a key's bytes (aggregation id included). */
static uint32_t
key_hash(const char *key, size_t size)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < size; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	return (h);
}

/* Take an entry out of its hash bucket (a REMOVE walk frees it after). */
static void
unhash(agg_t *a, entry_t *e)
{
	entry_t **hp;

	for (hp = &a->hash[e->hash % AGG_HASHSIZE]; *hp != e; hp = &(*hp)->hnext)
		continue;
	*hp = e->hnext;
}

/* One probe firing: the kernel's aggregating functions on the entry's value. */
static void
fire(agg_t *a, char *val, int64_t x)
{
	const dtrace_recdesc_t *r = &a->desc->dtagd_rec[a->desc->dtagd_nrecs - 1];
	int64_t *v = (int64_t *)val;
	uint64_t arg = r->dtrd_arg;

	switch (r->dtrd_action) {
	case DTRACEAGG_COUNT: v[0]++; break;
	case DTRACEAGG_SUM: v[0] += x; break;
	case DTRACEAGG_MIN: if (x < v[0]) v[0] = x; break;
	case DTRACEAGG_MAX: if (x > v[0]) v[0] = x; break;
	case DTRACEAGG_AVG: v[0]++; v[1] += x; break;
	case DTRACEAGG_QUANTIZE: v[quantize_bucket(x)]++; break;
	case DTRACEAGG_LQUANTIZE: v[1 + lquantize_bucket(arg, (uint64_t)x)]++; break;
	case DTRACEAGG_LLQUANTIZE:
		v[1 + llquantize_bucket(DTRACE_LLQUANTIZE_FACTOR(arg),
		    DTRACE_LLQUANTIZE_LOW(arg), DTRACE_LLQUANTIZE_HIGH(arg),
		    DTRACE_LLQUANTIZE_NSTEP(arg), x)]++;
		break;
	default: abort();
	}
}

static void
apply_rec(dtrace_hdl_t *dtp, event_t *ev)
{
	dtrace_prog_t *prog = find_prog(dtp, ev->sel);
	agg_t *a;
	char *key;
	entry_t *e, **ep;
	int i;
	uint32_t hash;
	const dtrace_recdesc_t *vr;

	if (prog == NULL || prog->failed || prog->matches == 0)
		return; /* not enabled: nothing fires */
	a = agg_for(dtp, prog, ev);
	vr = &a->desc->dtagd_rec[a->desc->dtagd_nrecs - 1];
	if ((key = calloc(1, a->keysize + a->valsize)) == NULL)
		abort();
	*(dtrace_aggid_t *)key = a->desc->dtagd_id;
	for (i = 0; i < ev->nkeys; i++) {
		const dtrace_recdesc_t *r = &a->desc->dtagd_rec[i + 1];

		if (ev->keytype[i] == 'z') {
			int32_t z = (int32_t)ev->keyint[i];
			(void) memcpy(key + r->dtrd_offset, &z, 4);
		} else if (ev->keytype[i] == 'i') {
			(void) memcpy(key + r->dtrd_offset, &ev->keyint[i], 8);
		} else {
			(void) strncpy(key + r->dtrd_offset,
			    ev->keystr[i] != NULL ? ev->keystr[i] : "", r->dtrd_size - 1);
		}
	}
	hash = key_hash(key, a->keysize);
	if (a->hash == NULL && (a->hash = calloc(AGG_HASHSIZE, sizeof (entry_t *))) == NULL)
		abort();
	for (e = a->hash[hash % AGG_HASHSIZE]; e != NULL; e = e->hnext)
		if (e->hash == hash && memcmp(e->data, key, a->keysize) == 0)
			break;
	if (e == NULL) {
		if ((e = calloc(1, sizeof (*e))) == NULL)
			abort();
		e->data = key;
		e->size = a->keysize + a->valsize;
		e->hash = hash;
		init_value(a, key + a->keysize, vr->dtrd_action, vr->dtrd_arg);
		ep = a->tail != NULL ? a->tail : &a->entries;
		*ep = e;
		a->tail = &e->next;
		e->hnext = a->hash[hash % AGG_HASHSIZE];
		a->hash[hash % AGG_HASHSIZE] = e;
	} else {
		free(key);
	}
	for (i = 0; i < ev->nvalues; i++)
		fire(a, e->data + a->keysize, ev->values[i]);
}

static int
deliver_drop(dtrace_hdl_t *dtp, event_t *ev)
{
	dtrace_dropdata_t dd;
	char msg[256];
	int kind = (int)ev->n1;

	dtp->drop_totals[kind & 15] += (uint64_t)ev->n2;
	if (dtp->drop_f == NULL) {
		stub_log("drop without handler kind=%d", kind);
		return (set_err(dtp, EDT_DROPABORT));
	}
	(void) snprintf(msg, sizeof (msg), "%ld drops of kind %d on CPU 0\n", ev->n2, kind);
	(void) memset(&dd, 0, sizeof (dd));
	dd.dtdda_handle = dtp;
	dd.dtdda_cpu = 0;
	dd.dtdda_kind = (dtrace_dropkind_t)kind;
	dd.dtdda_drops = (uint64_t)ev->n2;
	dd.dtdda_total = dtp->drop_totals[kind & 15];
	dd.dtdda_msg = msg;
	if (dtp->drop_f(&dd, dtp->drop_arg) == DTRACE_HANDLE_ABORT)
		return (set_err(dtp, EDT_DROPABORT));
	return (0);
}

static int
deliver_error(dtrace_hdl_t *dtp, event_t *ev)
{
	dtrace_prog_t *prog = find_prog(dtp, ev->sel);
	dtrace_errdata_t ed;
	dtrace_eprobedesc_t edesc;
	dtrace_probedesc_t pdesc;
	char msg[640];

	if (prog == NULL || dtp->err_f == NULL || !dtp->err_before_go)
		return (0); /* no ERROR enabling: the kernel only counts it */
	(void) memset(&edesc, 0, sizeof (edesc));
	(void) memset(&pdesc, 0, sizeof (pdesc));
	edesc.dtepd_epid = prog->base_epid + (dtrace_epid_t)ev->n1;
	edesc.dtepd_probeid = 100 + edesc.dtepd_epid;
	pdesc.dtpd_id = edesc.dtepd_probeid;
	(void) snprintf(pdesc.dtpd_provider, DTRACE_PROVNAMELEN, "stub");
	(void) snprintf(pdesc.dtpd_name, DTRACE_NAMELEN, "fire");
	(void) snprintf(msg, sizeof (msg),
	    "error on enabled probe ID %u (ID %u: stub:::fire): %s\n", edesc.dtepd_epid,
	    pdesc.dtpd_id, message_of(ev));
	(void) memset(&ed, 0, sizeof (ed));
	ed.dteda_handle = dtp;
	ed.dteda_edesc = &edesc;
	ed.dteda_pdesc = &pdesc;
	ed.dteda_cpu = 0;
	ed.dteda_action = 1;
	ed.dteda_offset = 8;
	ed.dteda_fault = (int)ev->n2;
	ed.dteda_addr = 0;
	ed.dteda_msg = msg;
	if (dtp->err_f(&ed, dtp->err_arg) == DTRACE_HANDLE_ABORT)
		return (set_err(dtp, EDT_ERRABORT));
	return (0);
}

static int snap(dtrace_hdl_t *);

/*
 * dt_aggregate.c dtrace_aggregate_snap: a snapshot sooner than aggrate after the
 * reference is skipped; the reference then advances by aggrate (not to now).
 */
static int
snap_at_aggrate(dtrace_hdl_t *dtp, const char *who)
{
	int64_t now = now_ns();

	if (dtp->last_snap != 0) {
		if (now - dtp->last_snap < dtp->aggrate) {
			stub_log("%s skipped (aggrate)", who);
			return (0);
		}
		dtp->last_snap += dtp->aggrate;
	} else {
		dtp->last_snap = now;
	}
	stub_log("%s", who);
	return (snap(dtp));
}

/* Merge what "fired" up to the current tick; aggregation drops are reported here. */
static int
snap(dtrace_hdl_t *dtp)
{
	event_t *ev;

	for (ev = dtp->events; ev != NULL; ev = ev->next) {
		if (ev->done || ev->tick <= 0 || ev->tick > dtp->ticks)
			continue;
		if (strcmp(ev->kind, "rec") == 0 && ev->loop > 0) {
			long due = (dtp->ticks - ev->tick) / ev->loop + 1;
			for (; ev->fired < due; ev->fired++)
				apply_rec(dtp, ev);
		} else if (strcmp(ev->kind, "rec") == 0) {
			ev->done = 1;
			apply_rec(dtp, ev);
		} else if (strcmp(ev->kind, "drop") == 0 && ev->n1 == DTRACEDROP_AGGREGATION &&
		    primary(dtp)) {
			ev->done = 1;
			if (deliver_drop(dtp, ev) != 0)
				return (-1);
		}
	}
	return (0);
}

int
dtrace_aggregate_snap(dtrace_hdl_t *dtp)
{
	if (!dtp->active)
		return (set_err(dtp, EDT_NOTACTIVE));
	return (snap_at_aggrate(dtp, "snap"));
}

/* printf() output of a program: to the buffered handler (dt_printf.c). */
static int
deliver_output(dtrace_hdl_t *dtp, FILE *fp, event_t *ev)
{
	dtrace_bufdata_t bd;
	char text[600];

	if (find_prog(dtp, ev->sel) == NULL)
		return (0);
	(void) snprintf(text, sizeof (text), "%s\n", message_of(ev));
	if (fp != NULL) {
		(void) fputs(text, fp);
		return (0);
	}
	if (dtp->buf_f == NULL) {
		stub_log("output without a buffered handler");
		return (set_err(dtp, EDT_NOBUFFERED));
	}
	(void) memset(&bd, 0, sizeof (bd));
	bd.dtbda_handle = dtp;
	bd.dtbda_buffered = text;
	if (dtp->buf_f(&bd, dtp->buf_arg) == DTRACE_HANDLE_ABORT)
		return (set_err(dtp, EDT_ERRABORT));
	return (0);
}

/*
 * dt_work.c dtrace_work: the status first (an exit() stops tracing there); once
 * tracing has stopped the last snapshot is forced (dt_lastagg = 0) and the answer
 * is DONE; then the aggregation snapshot and the principal buffer (drops, errors,
 * output).
 */
dtrace_workstatus_t
dtrace_work(dtrace_hdl_t *dtp, FILE *fp, dtrace_consume_probe_f *pf,
    dtrace_consume_rec_f *rf, void *arg)
{
	event_t *ev;
	int status;
	dtrace_workstatus_t rval = DTRACE_WORKSTATUS_OKAY;

	(void) pf;
	(void) rf;
	(void) arg;
	dtp->ticks++;
	stub_log("work %d", dtp->ticks);
	if (!dtp->active) {
		set_err(dtp, EDT_NOTACTIVE);
		return (DTRACE_WORKSTATUS_ERROR);
	}
	if ((status = status_of(dtp)) == -1) {
		stub_log("bricked");
		return (DTRACE_WORKSTATUS_ERROR);
	}
	if (status == DTRACE_STATUS_STOPPED || status == DTRACE_STATUS_EXITED) {
		dtp->last_snap = 0;
		rval = DTRACE_WORKSTATUS_DONE;
	}
	for (ev = dtp->events; ev != NULL; ev = ev->next) {
		if (ev->done || ev->tick <= 0 || ev->tick > dtp->ticks)
			continue;
		if (ev->sel[0] == '\0' && !primary(dtp))
			continue; /* a process-wide event: the oldest active handle's */
		if (strcmp(ev->kind, "crash") == 0) {
			stub_log("crash");
			abort();
		}
		if (strcmp(ev->kind, "hang") == 0) {
			stub_log("hang");
			for (;;)
				(void) pause();
		}
		if (strcmp(ev->kind, "drop") == 0 && ev->n1 != DTRACEDROP_AGGREGATION) {
			ev->done = 1;
			if (deliver_drop(dtp, ev) != 0)
				return (DTRACE_WORKSTATUS_ERROR);
		}
		if (strcmp(ev->kind, "error") == 0) {
			ev->done = 1;
			if (deliver_error(dtp, ev) != 0)
				return (DTRACE_WORKSTATUS_ERROR);
		}
		if (strcmp(ev->kind, "output") == 0) {
			ev->done = 1;
			if (deliver_output(dtp, fp, ev) != 0)
				return (DTRACE_WORKSTATUS_ERROR);
		}
	}
	/* dtrace_work snapshots the aggregations itself (bufpolicy switch), at aggrate */
	if (snap_at_aggrate(dtp, "work snap") != 0)
		return (DTRACE_WORKSTATUS_ERROR);
	return (rval);
}

/* The tail after a walk that stopped part way (an entry before it may be gone). */
static void
fix_tail(agg_t *a)
{
	entry_t **ep;

	for (ep = &a->entries; *ep != NULL; ep = &(*ep)->next)
		continue;
	a->tail = ep;
}

int
dtrace_aggregate_walk(dtrace_hdl_t *dtp, dtrace_aggregate_f *func, void *arg)
{
	agg_t *a;
	entry_t *e, **ep;
	int n = 0;

	for (a = dtp->aggs; a != NULL; a = a->next) {
		ep = &a->entries;
		while ((e = *ep) != NULL) {
			dtrace_aggdata_t ad;
			int rv;

			(void) memset(&ad, 0, sizeof (ad));
			ad.dtada_handle = dtp;
			ad.dtada_desc = a->desc;
			ad.dtada_edesc = &a->edesc;
			ad.dtada_pdesc = &a->pdesc;
			ad.dtada_data = e->data;
			ad.dtada_normal = 1;
			ad.dtada_size = e->size;
			n++;
			rv = func(&ad, arg);
			switch (rv) {
			case DTRACE_AGGWALK_NEXT:
				ep = &e->next;
				break;
			case DTRACE_AGGWALK_REMOVE:
				*ep = e->next;
				unhash(a, e);
				free(e->data);
				free(e);
				break;
			case DTRACE_AGGWALK_CLEAR: {
				const dtrace_recdesc_t *r =
				    &a->desc->dtagd_rec[a->desc->dtagd_nrecs - 1];
				init_value(a, e->data + a->keysize, r->dtrd_action, r->dtrd_arg);
				ep = &e->next;
				break;
			}
			case DTRACE_AGGWALK_ABORT:
				stub_log("walk n=%d aborted", n);
				fix_tail(a);
				return (0);
			default:
				stub_log("walk n=%d error rv=%d", n, rv);
				fix_tail(a);
				return (set_err(dtp, EINVAL));
			}
		}
		a->tail = ep; /* the walk ended at the last entry's next */
	}
	stub_log("walk n=%d", n);
	return (0);
}

/* How many entries the user-space hash holds (REMOVE semantics keep it empty). */
int
stub_entries(dtrace_hdl_t *dtp)
{
	agg_t *a;
	entry_t *e;
	int n = 0;

	for (a = dtp->aggs; a != NULL; a = a->next)
		for (e = a->entries; e != NULL; e = e->next)
			n++;
	return (n);
}
