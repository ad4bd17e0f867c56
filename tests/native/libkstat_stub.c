/*
 * A stand-in for illumos libkstat.so.1, for testing dtagent's ctypes binding on a
 * host without illumos.
 *
 * It exports the libkstat ABI that dtagent calls (kstat_open, kstat_close,
 * kstat_chain_update, kstat_lookup, kstat_read, kstat_data_lookup) with the illumos
 * LP64 struct layouts, and serves kstats from an in-memory "kernel" that tests fill
 * and change through the stub_* control functions (zones booting and halting between
 * reads).
 *
 * Layouts: illumos-gate usr/src/uts/common/sys/kstat.h (kstat_t, kstat_named_t,
 * kstat_io_t, kstat_timer_t, kstat_intr_t) and usr/src/lib/libkstat/kstat.h
 * (kstat_ctl_t). The LP64 sizes and offsets worked out from those field lists are
 * checked at compile time below, and
 * exported (stub_layout_*) so the Python tests can compare them with ctypes.
 *
 * Behaviour mirrored (reference section 1.1; illumos-gate
 * usr/src/lib/libkstat/common/kstat.c, usr/src/uts/common/io/kstat.c):
 *  - kstat_chain_update returns 0 when the chain is unchanged, the new KCID when it
 *    changed, -1 on error; unchanged kstat_t headers keep their addresses, deleted
 *    ones are freed with their ks_data, new ones are appended.
 *  - the "kernel" frees a deleted kstat (usr/src/uts/common/os/kstat_fr.c
 *    kstat_delete): kids only grow, but what the stand-in holds follows the live
 *    kstats, so zone churn does not grow the process it is loaded in.
 *  - the /dev/kstat driver's KSTAT_IOC_READ is ioctl(kc_kd, KSTAT_IOC_READ, ksp)
 *    (exported as ioctl, so a caller that drives the ioctl itself, as dtagent does to
 *    bound the wait, sees the same kernel): it fills ks_data, packs
 *    KSTAT_DATA_STRING bytes after the named records with pointers into ks_data,
 *    updates ks_ndata/ks_data_size/ks_snaptime and returns the KCID; a kstat that no
 *    longer exists gives ENXIO; one in the invalid state gives EAGAIN (for as many
 *    reads as the test says, or for ever); a buffer smaller than the data gives
 *    ENOMEM with ks_data_size set to the size needed (usr/src/uts/common/io/kstat.c
 *    read_kstat_data).
 *  - kstat_read (usr/src/lib/libkstat/common/kstat.c) allocates ks_data on the first
 *    read, then loops on that ioctl: EAGAIN is retried after a 100 ms poll with no
 *    limit (here: after 20 polls the process aborts, so a caller stuck there fails
 *    loudly), and ENOMEM makes it grow ks_data and retry only for a kstat flagged
 *    KSTAT_FLAG_VAR_SIZE or KSTAT_FLAG_LONGSTRINGS; for any other kstat it is -1
 *    with errno ENOMEM.
 *
 * A feed (for benchmarks): with $KSTAT_STUB_FEED naming a file, kstat_open and
 * kstat_chain_update first reload the "kernel" from it whenever the file was replaced
 * (a new inode or mtime; writers rename a complete file into place). Lines, fields
 * separated by tabs:
 *   h HRTIME                           the hrtime later reads stamp as ks_snaptime
 *   k MODULE INSTANCE NAME CLASS TYPE  a kstat (TYPE 1 named, 3 io); its data follows
 *   u|i|d|s NAME VALUE                 a named uint64, int64, double or string stat
 *   io V1 ... V12                      the kstat_io_t fields in declaration order
 * A kstat in the file with the same statistics as before is updated in place (its
 * header stays); one with other statistics is replaced; one no longer in the file is
 * deleted, as the kernel deletes a halted zone's kstats. The CPU time spent reloading
 * is written (nanoseconds, cumulative) to $KSTAT_STUB_FEED.cpu, so a benchmark can
 * leave the stand-in's own work out of the consumer's CPU.
 *
 * Misuse is fatal: reading a kstat_t that is not on the caller's chain (for example
 * one freed by kstat_chain_update) aborts the process, so a binding that keeps stale
 * pointers fails its tests loudly instead of reading freed memory.
 */

#define _GNU_SOURCE	/* memfd_create, MAP_NORESERVE */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* usr/src/uts/common/sys/types.h, sys/int_types.h, sys/time.h */
typedef int kid_t;
typedef long long hrtime_t;
typedef unsigned char uchar_t;
typedef unsigned int uint_t;
typedef unsigned long ulong_t;
typedef long long longlong_t;
typedef unsigned long long u_longlong_t;

/* usr/src/uts/common/sys/kstat.h */
#define KSTAT_STRLEN 31

#define KSTAT_TYPE_RAW 0
#define KSTAT_TYPE_NAMED 1
#define KSTAT_TYPE_INTR 2
#define KSTAT_TYPE_IO 3
#define KSTAT_TYPE_TIMER 4

#define KSTAT_DATA_CHAR 0
#define KSTAT_DATA_INT32 1
#define KSTAT_DATA_UINT32 2
#define KSTAT_DATA_INT64 3
#define KSTAT_DATA_UINT64 4
#define KSTAT_DATA_FLOAT 5
#define KSTAT_DATA_DOUBLE 6
#define KSTAT_DATA_STRING 9

#define KSTAT_FLAG_VAR_SIZE 0x02
#define KSTAT_FLAG_LONGSTRINGS 0x40

#define KSTAT_NUM_INTRS 5

/* usr/src/uts/common/sys/kstat.h: struct kstat (the user view; the last four fields
 * are "kernel only" but present). */
typedef struct kstat {
	hrtime_t ks_crtime;
	struct kstat *ks_next;
	kid_t ks_kid;
	char ks_module[KSTAT_STRLEN];
	uchar_t ks_resv;
	int ks_instance;
	char ks_name[KSTAT_STRLEN];
	uchar_t ks_type;
	char ks_class[KSTAT_STRLEN];
	uchar_t ks_flags;
	void *ks_data;
	uint_t ks_ndata;
	size_t ks_data_size;
	hrtime_t ks_snaptime;
	int (*ks_update)(struct kstat *, int);
	void *ks_private;
	int (*ks_snapshot)(struct kstat *, void *, int);
	void *ks_lock;
} kstat_t;

/* usr/src/lib/libkstat/kstat.h: kstat_ctl_t */
typedef struct kstat_ctl {
	kid_t kc_chain_id;
	kstat_t *kc_chain;
	int kc_kd;
} kstat_ctl_t;

/* usr/src/uts/common/sys/kstat.h: kstat_named_t (LP64 user view of value.str.addr) */
typedef struct kstat_named {
	char name[KSTAT_STRLEN];
	uchar_t data_type;
	union {
		char c[16];
		int32_t i32;
		uint32_t ui32;
		struct {
			union {
				char *ptr;
				char __pad[8];
			} addr;
			uint32_t len;
		} str;
		int64_t i64;
		uint64_t ui64;
		long l;
		ulong_t ul;
		longlong_t ll;
		u_longlong_t ull;
		float f;
		double d;
	} value;
} kstat_named_t;

/* usr/src/uts/common/sys/kstat.h: kstat_intr_t */
typedef struct kstat_intr {
	uint_t intrs[KSTAT_NUM_INTRS];
} kstat_intr_t;

/* usr/src/uts/common/sys/kstat.h: kstat_io_t */
typedef struct kstat_io {
	u_longlong_t nread;
	u_longlong_t nwritten;
	uint_t reads;
	uint_t writes;
	hrtime_t wtime;
	hrtime_t wlentime;
	hrtime_t wlastupdate;
	hrtime_t rtime;
	hrtime_t rlentime;
	hrtime_t rlastupdate;
	uint_t wcnt;
	uint_t rcnt;
} kstat_io_t;

/* usr/src/uts/common/sys/kstat.h: kstat_timer_t */
typedef struct kstat_timer {
	char name[KSTAT_STRLEN];
	uchar_t resv;
	u_longlong_t num_events;
	hrtime_t elapsed_time;
	hrtime_t min_time;
	hrtime_t max_time;
	hrtime_t start_time;
	hrtime_t stop_time;
} kstat_timer_t;

/* LP64 sizes and offsets from the sys/kstat.h field lists. */
#define CHECK(type, field, off) \
	_Static_assert(offsetof(type, field) == (off), #type "." #field " offset")

_Static_assert(sizeof (kstat_ctl_t) == 24, "kstat_ctl_t size");
CHECK(kstat_ctl_t, kc_chain_id, 0);
CHECK(kstat_ctl_t, kc_chain, 8);
CHECK(kstat_ctl_t, kc_kd, 16);

_Static_assert(sizeof (kstat_t) == 184, "kstat_t size");
CHECK(kstat_t, ks_crtime, 0);
CHECK(kstat_t, ks_next, 8);
CHECK(kstat_t, ks_kid, 16);
CHECK(kstat_t, ks_module, 20);
CHECK(kstat_t, ks_resv, 51);
CHECK(kstat_t, ks_instance, 52);
CHECK(kstat_t, ks_name, 56);
CHECK(kstat_t, ks_type, 87);
CHECK(kstat_t, ks_class, 88);
CHECK(kstat_t, ks_flags, 119);
CHECK(kstat_t, ks_data, 120);
CHECK(kstat_t, ks_ndata, 128);
CHECK(kstat_t, ks_data_size, 136);
CHECK(kstat_t, ks_snaptime, 144);
CHECK(kstat_t, ks_update, 152);
CHECK(kstat_t, ks_private, 160);
CHECK(kstat_t, ks_snapshot, 168);
CHECK(kstat_t, ks_lock, 176);

_Static_assert(sizeof (kstat_named_t) == 48, "kstat_named_t size");
_Static_assert(_Alignof (kstat_named_t) == 8, "kstat_named_t alignment");
CHECK(kstat_named_t, name, 0);
CHECK(kstat_named_t, data_type, 31);
CHECK(kstat_named_t, value, 32);
CHECK(kstat_named_t, value.c, 32);
CHECK(kstat_named_t, value.i32, 32);
CHECK(kstat_named_t, value.ui32, 32);
CHECK(kstat_named_t, value.str, 32);
CHECK(kstat_named_t, value.str.addr, 32);
CHECK(kstat_named_t, value.str.addr.ptr, 32);
CHECK(kstat_named_t, value.str.addr.__pad, 32);
CHECK(kstat_named_t, value.str.len, 40);
CHECK(kstat_named_t, value.i64, 32);
CHECK(kstat_named_t, value.ui64, 32);
CHECK(kstat_named_t, value.l, 32);
CHECK(kstat_named_t, value.ul, 32);
CHECK(kstat_named_t, value.ll, 32);
CHECK(kstat_named_t, value.ull, 32);
CHECK(kstat_named_t, value.f, 32);
CHECK(kstat_named_t, value.d, 32);
_Static_assert(sizeof (((kstat_named_t *)0)->value) == 16, "kstat_named_t value size");

_Static_assert(sizeof (kstat_io_t) == 80, "kstat_io_t size");
CHECK(kstat_io_t, nread, 0);
CHECK(kstat_io_t, nwritten, 8);
CHECK(kstat_io_t, reads, 16);
CHECK(kstat_io_t, writes, 20);
CHECK(kstat_io_t, wtime, 24);
CHECK(kstat_io_t, wlentime, 32);
CHECK(kstat_io_t, wlastupdate, 40);
CHECK(kstat_io_t, rtime, 48);
CHECK(kstat_io_t, rlentime, 56);
CHECK(kstat_io_t, rlastupdate, 64);
CHECK(kstat_io_t, wcnt, 72);
CHECK(kstat_io_t, rcnt, 76);

_Static_assert(sizeof (kstat_timer_t) == 80, "kstat_timer_t size");
CHECK(kstat_timer_t, name, 0);
CHECK(kstat_timer_t, resv, 31);
CHECK(kstat_timer_t, num_events, 32);
CHECK(kstat_timer_t, elapsed_time, 40);
CHECK(kstat_timer_t, min_time, 48);
CHECK(kstat_timer_t, max_time, 56);
CHECK(kstat_timer_t, start_time, 64);
CHECK(kstat_timer_t, stop_time, 72);

_Static_assert(sizeof (kstat_intr_t) == 20, "kstat_intr_t size");
CHECK(kstat_intr_t, intrs, 0);

/* ---- layout export: what the C compiler made of the structs, for the tests ---- */

struct layout_entry {
	const char *type;
	const char *field;	/* NULL: the row gives the struct's size */
	size_t offset;		/* or the size */
	size_t size;
};

#define FIELD(type, f) { #type, #f, offsetof(type, f), sizeof (((type *)0)->f) }
#define SIZE(type) { #type, NULL, sizeof (type), sizeof (type) }

static const struct layout_entry layout[] = {
	SIZE(kstat_ctl_t),
	FIELD(kstat_ctl_t, kc_chain_id),
	FIELD(kstat_ctl_t, kc_chain),
	FIELD(kstat_ctl_t, kc_kd),
	SIZE(kstat_t),
	FIELD(kstat_t, ks_crtime),
	FIELD(kstat_t, ks_next),
	FIELD(kstat_t, ks_kid),
	FIELD(kstat_t, ks_module),
	FIELD(kstat_t, ks_resv),
	FIELD(kstat_t, ks_instance),
	FIELD(kstat_t, ks_name),
	FIELD(kstat_t, ks_type),
	FIELD(kstat_t, ks_class),
	FIELD(kstat_t, ks_flags),
	FIELD(kstat_t, ks_data),
	FIELD(kstat_t, ks_ndata),
	FIELD(kstat_t, ks_data_size),
	FIELD(kstat_t, ks_snaptime),
	FIELD(kstat_t, ks_update),
	FIELD(kstat_t, ks_private),
	FIELD(kstat_t, ks_snapshot),
	FIELD(kstat_t, ks_lock),
	SIZE(kstat_named_t),
	FIELD(kstat_named_t, name),
	FIELD(kstat_named_t, data_type),
	FIELD(kstat_named_t, value),
	FIELD(kstat_named_t, value.c),
	FIELD(kstat_named_t, value.i32),
	FIELD(kstat_named_t, value.ui32),
	FIELD(kstat_named_t, value.str),
	FIELD(kstat_named_t, value.str.addr),
	FIELD(kstat_named_t, value.str.addr.ptr),
	FIELD(kstat_named_t, value.str.addr.__pad),
	FIELD(kstat_named_t, value.str.len),
	FIELD(kstat_named_t, value.i64),
	FIELD(kstat_named_t, value.ui64),
	FIELD(kstat_named_t, value.l),
	FIELD(kstat_named_t, value.ul),
	FIELD(kstat_named_t, value.ll),
	FIELD(kstat_named_t, value.ull),
	FIELD(kstat_named_t, value.f),
	FIELD(kstat_named_t, value.d),
	SIZE(kstat_io_t),
	FIELD(kstat_io_t, nread),
	FIELD(kstat_io_t, nwritten),
	FIELD(kstat_io_t, reads),
	FIELD(kstat_io_t, writes),
	FIELD(kstat_io_t, wtime),
	FIELD(kstat_io_t, wlentime),
	FIELD(kstat_io_t, wlastupdate),
	FIELD(kstat_io_t, rtime),
	FIELD(kstat_io_t, rlentime),
	FIELD(kstat_io_t, rlastupdate),
	FIELD(kstat_io_t, wcnt),
	FIELD(kstat_io_t, rcnt),
	SIZE(kstat_timer_t),
	FIELD(kstat_timer_t, name),
	FIELD(kstat_timer_t, resv),
	FIELD(kstat_timer_t, num_events),
	FIELD(kstat_timer_t, elapsed_time),
	FIELD(kstat_timer_t, min_time),
	FIELD(kstat_timer_t, max_time),
	FIELD(kstat_timer_t, start_time),
	FIELD(kstat_timer_t, stop_time),
	SIZE(kstat_intr_t),
	FIELD(kstat_intr_t, intrs),
};

size_t
stub_layout_count(void)
{
	return (sizeof (layout) / sizeof (layout[0]));
}

const char *
stub_layout_type(size_t i)
{
	return (i < stub_layout_count() ? layout[i].type : NULL);
}

/* NULL for the row that carries the struct's size. */
const char *
stub_layout_field(size_t i)
{
	return (i < stub_layout_count() ? layout[i].field : NULL);
}

size_t
stub_layout_offset(size_t i)
{
	return (i < stub_layout_count() ? layout[i].offset : 0);
}

size_t
stub_layout_size(size_t i)
{
	return (i < stub_layout_count() ? layout[i].size : 0);
}

/* ---- the fixture "kernel" ---- */

/*
 * The "kernel"'s memory. On illumos the kstats live in the kernel: a libkstat
 * consumer's process holds only the kstat_t headers and ks_data copies the library
 * allocates (those are malloc'd here too, further down, as libkstat does). The
 * simulated kernel shares the consumer's process, so what it allocates is kept out
 * of the process's malloc heaps, in a mapping of its own: a memfd named
 * "libkstat-stub-kernel", which /proc/PID/smaps shows as
 * "/memfd:libkstat-stub-kernel (deleted)". A benchmark reads there exactly what the
 * simulated kernel holds, live, and leaves it out of the consumer's figures; and the
 * kernel's churn (a feed reload rewrites every statistic) never fragments the
 * consumer's heaps. Blocks are powers of two from 32 bytes, a free list per size,
 * reused and never unmapped (the live kstats bound them); the pages of a freed block
 * of 256 KiB or more are given back at once.
 */
#define KMEM_RESERVE ((size_t)16 << 30)	/* address space; pages come as touched */
#define KMEM_MIN_SHIFT 5
#define KMEM_CLASSES 40
#define KMEM_GIVE_BACK ((size_t)256 << 10)

struct kmem_block {		/* before each block's payload; 16 bytes keep it aligned */
	size_t cls;
	size_t magic;
};
#define KMEM_MAGIC ((size_t)0x6b6d656d5374756bULL)

static unsigned char *kmem_base, *kmem_next, *kmem_end;
static struct kmem_block *kmem_freelist[KMEM_CLASSES];
static size_t kmem_in_use;
static pthread_mutex_t kmem_lock = PTHREAD_MUTEX_INITIALIZER;

static void
kmem_map(void)
{
	void *p = MAP_FAILED;
	int fd = memfd_create("libkstat-stub-kernel", MFD_CLOEXEC);
	if (fd >= 0) {
		if (ftruncate(fd, (off_t)KMEM_RESERVE) == 0)
			p = mmap(NULL, KMEM_RESERVE, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_NORESERVE, fd, 0);
		(void) close(fd);
	}
	if (p == MAP_FAILED)	/* no memfd: unnamed, still apart from the heaps */
		p = mmap(NULL, KMEM_RESERVE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "libkstat_stub: cannot map the kernel's memory\n");
		abort();
	}
	kmem_base = kmem_next = p;
	kmem_end = kmem_base + KMEM_RESERVE;
}

static size_t
kmem_size(size_t cls)
{
	return ((size_t)1 << (cls + KMEM_MIN_SHIFT));
}

/* Never NULL: running out of the reservation aborts, as a misuse of the stand-in. */
static void *
kmem_alloc(size_t n)
{
	size_t cls = 0;
	while (cls < KMEM_CLASSES && kmem_size(cls) < n + sizeof (struct kmem_block))
		cls++;
	if (cls == KMEM_CLASSES)
		abort();
	(void) pthread_mutex_lock(&kmem_lock);
	if (kmem_base == NULL)
		kmem_map();
	struct kmem_block *b = kmem_freelist[cls];
	if (b != NULL) {
		kmem_freelist[cls] = *(struct kmem_block **)(b + 1);
	} else {
		if ((size_t)(kmem_end - kmem_next) < kmem_size(cls)) {
			fprintf(stderr, "libkstat_stub: the kernel's memory is exhausted\n");
			abort();
		}
		b = (struct kmem_block *)kmem_next;
		kmem_next += kmem_size(cls);
	}
	b->cls = cls;
	b->magic = KMEM_MAGIC;
	kmem_in_use += kmem_size(cls);
	(void) pthread_mutex_unlock(&kmem_lock);
	return (b + 1);
}

static struct kmem_block *
kmem_block_of(void *p)
{
	struct kmem_block *b = (struct kmem_block *)p - 1;
	if (b->magic != KMEM_MAGIC) {
		fprintf(stderr, "libkstat_stub: not the kernel's memory: %p\n", p);
		abort();
	}
	return (b);
}

static void
kmem_free(void *p)
{
	if (p == NULL)
		return;
	struct kmem_block *b = kmem_block_of(p);
	size_t size = kmem_size(b->cls);
	b->magic = 0;
	(void) pthread_mutex_lock(&kmem_lock);
	if (size >= KMEM_GIVE_BACK) {
		uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
		uintptr_t from = ((uintptr_t)(b + 1) + sizeof (void *) + page - 1) & ~(page - 1);
		uintptr_t to = ((uintptr_t)b + size) & ~(page - 1);
		if (to > from)
			(void) madvise((void *)from, to - from, MADV_REMOVE);
	}
	*(struct kmem_block **)(b + 1) = kmem_freelist[b->cls];
	kmem_freelist[b->cls] = b;
	kmem_in_use -= size;
	(void) pthread_mutex_unlock(&kmem_lock);
}

static void *
kmem_zalloc(size_t n)
{
	void *p = kmem_alloc(n);
	memset(p, 0, n);
	return (p);
}

static void *
kmem_realloc(void *p, size_t n)
{
	if (p == NULL)
		return (kmem_alloc(n));
	struct kmem_block *b = kmem_block_of(p);
	size_t have = kmem_size(b->cls) - sizeof (*b);
	if (n <= have)
		return (p);
	void *q = kmem_alloc(n);
	memcpy(q, p, have);
	kmem_free(p);
	return (q);
}

static char *
kmem_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return (memcpy(kmem_alloc(n), s, n));
}

/* Bytes of the kernel's memory in blocks now in use (for the tests). */
size_t
stub_kernel_bytes(void)
{
	(void) pthread_mutex_lock(&kmem_lock);
	size_t n = kmem_in_use;
	(void) pthread_mutex_unlock(&kmem_lock);
	return (n);
}


struct fstat {			/* one named statistic */
	kstat_named_t kn;	/* name, type and value (value.str unused) */
	char *str;		/* KSTAT_DATA_STRING value; NULL = unset pointer */
};

struct fks {			/* one kernel kstat */
	int live;
	kid_t kid;
	char module[KSTAT_STRLEN];
	int instance;
	char name[KSTAT_STRLEN];
	char class[KSTAT_STRLEN];
	uchar_t type;
	uchar_t flags;
	hrtime_t crtime;
	struct fstat *stats;	/* KSTAT_TYPE_NAMED */
	uint_t nstats;
	unsigned char *blob;	/* IO, TIMER, INTR, RAW: the records as copied out */
	size_t blob_size;
	uint_t blob_ndata;
	int fail_errno;		/* one-shot error for the next read */
	int eagain;		/* reads still in EAGAIN (invalid state); -1: for ever */
	int remove_on_read;	/* vanish when next read (a zone halting mid-scrape) */
	unsigned long reads;
};

#define KSTAT_IOC_BASE ('K' << 8)		/* usr/src/uts/common/sys/kstat.h */
#define KSTAT_IOC_READ (KSTAT_IOC_BASE | 0x02)
#define STUB_KD 1000		/* the first stand-in /dev/kstat descriptor */
#define MAX_HANDLES 64
static kstat_ctl_t *open_handles[MAX_HANDLES];	/* by descriptor - STUB_KD */

/*
 * The kernel's kstats, by slot. A deleted kstat's slot is taken by the next one
 * created, as the kernel frees a deleted kstat (illumos-gate
 * usr/src/uts/common/os/kstat_fr.c kstat_delete) and keeps only its id counter:
 * kids stay monotonic while the memory follows the live kstats, not every kstat
 * ever created (a churning feed would otherwise grow the agent's process).
 */
static struct fks *fixture;
static size_t nfixture, cfixture;	/* slots in use or freed; allocated */
static size_t *free_slots;		/* freed slots, reused first */
static size_t nfree, cfree;
static size_t *kid_table;		/* open addressing by kid: slot + 1, 0 = empty */
static size_t kid_cap, nlive;
static kid_t kernel_kcid = 1;	/* the kernel's kstat_chain_id */
static kid_t next_kid = 1;
struct dead_reads {			/* reads of deleted kstats, per module */
	char module[KSTAT_STRLEN];
	unsigned long reads;
};
static struct dead_reads *dead;		/* one per module: bounded by the modules */
static size_t ndead;
static hrtime_t now_hrtime = 1000000000LL;
static int fail_open_errno, fail_update_errno;
static unsigned long eagain_retries, chain_updates_changed, freed_headers;

static void
copy_name(char *dst, const char *src)
{
	/* kstat_create copies at most KSTAT_STRLEN - 1 characters */
	memset(dst, 0, KSTAT_STRLEN);
	strncpy(dst, src, KSTAT_STRLEN - 1);
}

static struct fks *
find_live(const char *module, int instance, const char *name)
{
	for (size_t i = 0; i < nfixture; i++) {
		struct fks *f = &fixture[i];
		if (f->live && f->instance == instance &&
		    strncmp(f->module, module, KSTAT_STRLEN - 1) == 0 &&
		    strncmp(f->name, name, KSTAT_STRLEN - 1) == 0)
			return (f);
	}
	return (NULL);
}

static size_t
kid_hash(kid_t kid)
{
	return ((size_t)((uint32_t)kid * 2654435761U) & (kid_cap - 1));
}

static void
kid_insert(kid_t kid, size_t slot)
{
	size_t j = kid_hash(kid);
	while (kid_table[j] != 0)
		j = (j + 1) & (kid_cap - 1);
	kid_table[j] = slot + 1;
}

/* The table holds at most half its size, and is rebuilt from the live slots. */
static void
kid_table_fit(void)
{
	if (kid_cap >= 2 * (nlive + 1) && kid_table != NULL)
		return;
	size_t cap = 64;
	while (cap < 2 * (nlive + 1))
		cap *= 2;
	kmem_free(kid_table);
	kid_cap = cap;
	kid_table = kmem_zalloc(kid_cap * sizeof (*kid_table));
	for (size_t i = 0; i < nfixture; i++)
		if (fixture[i].live)
			kid_insert(fixture[i].kid, i);
}

/* The slot of a live kstat by its kid; (size_t)-1 when there is none. */
static size_t
kid_slot(kid_t kid)
{
	if (kid_table == NULL)
		return ((size_t)-1);
	for (size_t j = kid_hash(kid); kid_table[j] != 0; j = (j + 1) & (kid_cap - 1)) {
		size_t i = kid_table[j] - 1;
		if (fixture[i].kid == kid)
			return (fixture[i].live ? i : (size_t)-1);
	}
	return ((size_t)-1);
}

static struct fks *
find_kid(kid_t kid)
{
	size_t i = kid_slot(kid);
	return (i == (size_t)-1 ? NULL : &fixture[i]);
}

static struct fks *
handle(int h)
{
	if (h < 0 || (size_t)h >= nfixture || !fixture[h].live) {
		fprintf(stderr, "libkstat_stub: bad handle %d\n", h);
		abort();
	}
	return (&fixture[h]);
}

static void
free_fks(struct fks *f)
{
	for (uint_t i = 0; i < f->nstats; i++)
		kmem_free(f->stats[i].str);
	kmem_free(f->stats);
	kmem_free(f->blob);
	f->stats = NULL;
	f->blob = NULL;
	f->nstats = 0;
	f->blob_size = 0;
}

static void
count_dead_reads(const struct fks *f)
{
	size_t i = 0;
	while (i < ndead && strcmp(dead[i].module, f->module) != 0)
		i++;
	if (i == ndead) {
		dead = kmem_realloc(dead, (ndead + 1) * sizeof (*dead));
		memcpy(dead[ndead].module, f->module, KSTAT_STRLEN);
		dead[ndead++].reads = 0;
	}
	dead[i].reads += f->reads;
}

/* Delete a live kstat: its memory is freed and its slot and kid entry are released
 * (the kid table is rebuilt without it; kids are never reused). */
static void
delete_fks(struct fks *f)
{
	size_t slot = (size_t)(f - fixture);
	size_t j = kid_hash(f->kid);
	while (kid_table[j] != slot + 1)
		j = (j + 1) & (kid_cap - 1);
	/* linear probing: shift the entries after it back into the hole */
	for (size_t k = (j + 1) & (kid_cap - 1); kid_table[k] != 0; k = (k + 1) & (kid_cap - 1)) {
		size_t home = kid_hash(fixture[kid_table[k] - 1].kid);
		if (((k - home) & (kid_cap - 1)) >= ((k - j) & (kid_cap - 1))) {
			kid_table[j] = kid_table[k];
			kid_table[k] = 0;
			j = k;
		}
	}
	kid_table[j] = 0;
	count_dead_reads(f);
	f->live = 0;
	f->reads = 0;
	free_fks(f);
	nlive--;
	if (nfree == cfree) {
		cfree = cfree ? cfree * 2 : 64;
		free_slots = kmem_realloc(free_slots, cfree * sizeof (*free_slots));
	}
	free_slots[nfree++] = slot;
	kernel_kcid++;
}

/* Forget every kstat (open kstat_ctl_t handles see them all deleted). */
void
stub_reset(void)
{
	for (size_t i = 0; i < nfixture; i++)
		free_fks(&fixture[i]);
	kmem_free(fixture);
	fixture = NULL;
	nfixture = cfixture = 0;
	kmem_free(free_slots);
	free_slots = NULL;
	nfree = cfree = 0;
	kmem_free(kid_table);
	kid_table = NULL;
	kid_cap = nlive = 0;
	kmem_free(dead);
	dead = NULL;
	ndead = 0;
	kernel_kcid++;
	now_hrtime = 1000000000LL;
	fail_open_errno = fail_update_errno = 0;
	eagain_retries = chain_updates_changed = freed_headers = 0;
}

static int
stub_add_kstat_unchecked(const char *module, int instance, const char *name,
    const char *class, int type)
{
	size_t slot;
	if (nfree > 0) {
		slot = free_slots[--nfree];
	} else {
		if (nfixture == cfixture) {
			cfixture = cfixture ? cfixture * 2 : 64;
			fixture = kmem_realloc(fixture, cfixture * sizeof (*fixture));
		}
		slot = nfixture++;
	}
	struct fks *f = &fixture[slot];
	memset(f, 0, sizeof (*f));
	f->live = 1;
	f->kid = next_kid++;
	copy_name(f->module, module);
	copy_name(f->name, name);
	copy_name(f->class, class);
	f->instance = instance;
	f->type = (uchar_t)type;
	f->crtime = now_hrtime;
	nlive++;
	kid_table_fit();
	if (kid_slot(f->kid) == (size_t)-1)	/* a rebuilt table has it already */
		kid_insert(f->kid, slot);
	kernel_kcid++;
	return ((int)slot);
}

/* Create a kstat; returns its handle for the stub_add_* and stub_set_* calls. */
int
stub_add_kstat(const char *module, int instance, const char *name, const char *class,
    int type)
{
	if (find_live(module, instance, name) != NULL) {
		fprintf(stderr, "libkstat_stub: %s:%d:%s exists\n", module, instance, name);
		abort();
	}
	return (stub_add_kstat_unchecked(module, instance, name, class, type));
}

int
stub_add_named(const char *module, int instance, const char *name, const char *class)
{
	return (stub_add_kstat(module, instance, name, class, KSTAT_TYPE_NAMED));
}

/* Delete a kstat (a zone halting); returns 0, or -1 when there is none. */
int
stub_remove(const char *module, int instance, const char *name)
{
	struct fks *f = find_live(module, instance, name);
	if (f == NULL)
		return (-1);
	delete_fks(f);
	return (0);
}

static struct fstat *
add_stat(int h, const char *name, int type)
{
	struct fks *f = handle(h);
	if (f->type != KSTAT_TYPE_NAMED)
		abort();
	f->stats = kmem_realloc(f->stats, (f->nstats + 1) * sizeof (*f->stats));
	struct fstat *s = &f->stats[f->nstats++];
	memset(s, 0, sizeof (*s));
	copy_name(s->kn.name, name);
	s->kn.data_type = (uchar_t)type;
	return (s);
}

static struct fstat *
get_stat(int h, const char *name)
{
	struct fks *f = handle(h);
	for (uint_t i = 0; i < f->nstats; i++)
		if (strncmp(f->stats[i].kn.name, name, KSTAT_STRLEN - 1) == 0)
			return (&f->stats[i]);
	fprintf(stderr, "libkstat_stub: no statistic %s\n", name);
	abort();
}

/* KSTAT_DATA_CHAR: copies len (<= 16) bytes as they are; the rest is NUL. */
void
stub_add_stat_char(int h, const char *name, const char *bytes, size_t len)
{
	struct fstat *s = add_stat(h, name, KSTAT_DATA_CHAR);
	memcpy(s->kn.value.c, bytes, len > 16 ? 16 : len);
}

void
stub_add_stat_int32(int h, const char *name, int32_t v)
{
	add_stat(h, name, KSTAT_DATA_INT32)->kn.value.i32 = v;
}

void
stub_add_stat_uint32(int h, const char *name, uint32_t v)
{
	add_stat(h, name, KSTAT_DATA_UINT32)->kn.value.ui32 = v;
}

void
stub_add_stat_int64(int h, const char *name, int64_t v)
{
	add_stat(h, name, KSTAT_DATA_INT64)->kn.value.i64 = v;
}

void
stub_add_stat_uint64(int h, const char *name, uint64_t v)
{
	add_stat(h, name, KSTAT_DATA_UINT64)->kn.value.ui64 = v;
}

void
stub_add_stat_float(int h, const char *name, float v)
{
	add_stat(h, name, KSTAT_DATA_FLOAT)->kn.value.f = v;
}

void
stub_add_stat_double(int h, const char *name, double v)
{
	add_stat(h, name, KSTAT_DATA_DOUBLE)->kn.value.d = v;
}

/* KSTAT_DATA_STRING; a NULL value leaves value.str.addr.ptr NULL (an unset string). */
void
stub_add_stat_string(int h, const char *name, const char *v)
{
	struct fstat *s = add_stat(h, name, KSTAT_DATA_STRING);
	if (v != NULL) {
		s->str = kmem_alloc(strlen(v) + 1);
		strcpy(s->str, v);
	}
}

/* A blank record (name "", type 0), as some drivers leave at the end. */
void
stub_add_blank(int h)
{
	add_stat(h, "", KSTAT_DATA_CHAR);
}

/* Change an integer statistic's value (any integer type) between reads. */
void
stub_set_stat_uint64(int h, const char *name, uint64_t v)
{
	struct fstat *s = get_stat(h, name);
	switch (s->kn.data_type) {
	case KSTAT_DATA_INT32:
		s->kn.value.i32 = (int32_t)v;
		break;
	case KSTAT_DATA_UINT32:
		s->kn.value.ui32 = (uint32_t)v;
		break;
	default:
		s->kn.value.ui64 = v;
		break;
	}
}

static void
set_blob(int h, const void *data, size_t size, uint_t ndata)
{
	struct fks *f = handle(h);
	kmem_free(f->blob);
	f->blob = kmem_alloc(size ? size : 1);
	memcpy(f->blob, data, size);
	f->blob_size = size;
	f->blob_ndata = ndata;
}

/* KSTAT_TYPE_IO: v holds the twelve kstat_io_t fields in declaration order. */
void
stub_set_io(int h, const uint64_t v[12])
{
	kstat_io_t io = {
		.nread = v[0], .nwritten = v[1],
		.reads = (uint_t)v[2], .writes = (uint_t)v[3],
		.wtime = (hrtime_t)v[4], .wlentime = (hrtime_t)v[5],
		.wlastupdate = (hrtime_t)v[6], .rtime = (hrtime_t)v[7],
		.rlentime = (hrtime_t)v[8], .rlastupdate = (hrtime_t)v[9],
		.wcnt = (uint_t)v[10], .rcnt = (uint_t)v[11],
	};
	set_blob(h, &io, sizeof (io), 1);
}

/* KSTAT_TYPE_TIMER: appends one timer (num_events and the five times in order). */
void
stub_add_timer(int h, const char *name, uint64_t num_events, const int64_t t[5])
{
	struct fks *f = handle(h);
	kstat_timer_t kt;
	memset(&kt, 0, sizeof (kt));
	copy_name(kt.name, name);
	kt.num_events = num_events;
	kt.elapsed_time = t[0];
	kt.min_time = t[1];
	kt.max_time = t[2];
	kt.start_time = t[3];
	kt.stop_time = t[4];
	size_t n = f->blob_size / sizeof (kt);
	unsigned char *b = kmem_alloc((n + 1) * sizeof (kt));
	if (n)
		memcpy(b, f->blob, n * sizeof (kt));
	memcpy(b + n * sizeof (kt), &kt, sizeof (kt));
	set_blob(h, b, (n + 1) * sizeof (kt), (uint_t)(n + 1));
	kmem_free(b);
}

/* KSTAT_TYPE_RAW (or INTR): opaque bytes. */
void
stub_set_raw(int h, const void *data, size_t size)
{
	set_blob(h, data, size, 1);
}

void
stub_set_flags(int h, int flags)
{
	handle(h)->flags = (uchar_t)flags;
}

/* The hrtime the next reads stamp as ks_snaptime. */
/* Set a kstat's creation time (ks_crtime), as the kernel sets it at kstat_create. */
void
stub_set_crtime(int h, int64_t t)
{
	handle(h)->crtime = t;
}

void
stub_set_hrtime(int64_t t)
{
	now_hrtime = t;
}

/* The next kstat_read of this kstat fails with err (EAGAIN is retried as libkstat
 * does, so the caller never sees it). Returns -1 when there is no such kstat. */
int
stub_fail_next_read(const char *module, int instance, const char *name, int err)
{
	struct fks *f = find_live(module, instance, name);
	if (f == NULL)
		return (-1);
	f->fail_errno = err;
	return (0);
}

/* The kstat is in the invalid state (KSTAT_FLAG_INVALID: being created or torn
 * down) for the next reads reads, or for ever when reads is -1: they fail with
 * EAGAIN. Returns -1 when there is no such kstat. */
int
stub_eagain(const char *module, int instance, const char *name, int reads)
{
	struct fks *f = find_live(module, instance, name);
	if (f == NULL)
		return (-1);
	f->eagain = reads;
	return (0);
}

/* The kstat vanishes when it is next read, after the caller's chain update: the read
 * fails with ENXIO, as when a zone halts in the middle of a scrape. */
int
stub_remove_on_read(const char *module, int instance, const char *name)
{
	struct fks *f = find_live(module, instance, name);
	if (f == NULL)
		return (-1);
	f->remove_on_read = 1;
	return (0);
}

void
stub_fail_open(int err)
{
	fail_open_errno = err;
}

void
stub_fail_chain_update(int err)
{
	fail_update_errno = err;
}

/* How often kstats of a module were read (all modules when module is NULL). */
unsigned long
stub_read_count(const char *module)
{
	unsigned long n = 0;
	for (size_t i = 0; i < nfixture; i++)
		if (fixture[i].live && (module == NULL || strcmp(fixture[i].module, module) == 0))
			n += fixture[i].reads;
	for (size_t i = 0; i < ndead; i++)
		if (module == NULL || strcmp(dead[i].module, module) == 0)
			n += dead[i].reads;
	return (n);
}

unsigned long
stub_eagain_retries(void)
{
	return (eagain_retries);
}

unsigned long
stub_freed_headers(void)
{
	return (freed_headers);
}

/* The kernel's kstat slots (live and freed for reuse): follows the peak of live
 * kstats, not how many were ever created. */
unsigned long
stub_slots(void)
{
	return (nfixture);
}

kid_t
stub_kernel_kcid(void)
{
	return (kernel_kcid);
}

/* ---- the feed (benchmarks): reload the "kernel" from a file ---- */

struct pending {		/* one kstat as read from the feed */
	char module[KSTAT_STRLEN], name[KSTAT_STRLEN], class[KSTAT_STRLEN];
	int instance, type, used;
	struct fstat *stats;
	uint_t nstats, cstats;
	uint64_t io[12];
};

static uint64_t
hash_key(const char *module, int instance, const char *name)
{
	uint64_t h = 1469598103934665603ULL;
	for (const char *p = module; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	h = (h ^ (uint64_t)(unsigned)instance) * 1099511628211ULL;
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return (h);
}

static size_t *feed_table;	/* open addressing: fixture index + 1, 0 = empty */
static size_t feed_cap;
static char *feed_seen;	/* by slot: in the file being loaded */
static size_t feed_nseen;

static void
index_live(void)
{
	kmem_free(feed_table);
	feed_cap = 64;
	while (feed_cap < nfixture * 2 + 2)
		feed_cap *= 2;
	feed_table = kmem_zalloc(feed_cap * sizeof (*feed_table));
	for (size_t i = 0; i < nfixture; i++) {
		struct fks *f = &fixture[i];
		if (!f->live)
			continue;
		size_t j = hash_key(f->module, f->instance, f->name) & (feed_cap - 1);
		while (feed_table[j] != 0)
			j = (j + 1) & (feed_cap - 1);
		feed_table[j] = i + 1;
	}
}

static struct fks *
feed_find(const char *module, int instance, const char *name, size_t *index)
{
	size_t j = hash_key(module, instance, name) & (feed_cap - 1);
	for (; feed_table[j] != 0; j = (j + 1) & (feed_cap - 1)) {
		struct fks *f = &fixture[feed_table[j] - 1];
		if (f->live && f->instance == instance && strcmp(f->module, module) == 0 &&
		    strcmp(f->name, name) == 0) {
			*index = feed_table[j] - 1;
			return (f);
		}
	}
	return (NULL);
}

static int
same_layout(const struct fks *f, const struct pending *p)
{
	if (f->type != p->type || (p->type == KSTAT_TYPE_NAMED && f->nstats != p->nstats))
		return (0);
	for (uint_t i = 0; p->type == KSTAT_TYPE_NAMED && i < p->nstats; i++)
		if (f->stats[i].kn.data_type != p->stats[i].kn.data_type ||
		    strcmp(f->stats[i].kn.name, p->stats[i].kn.name) != 0)
			return (0);
	return (1);
}

static void
feed_flush(struct pending *p)
{
	size_t i;
	if (!p->used)
		return;
	p->used = 0;
	struct fks *f = feed_find(p->module, p->instance, p->name, &i);
	if (f != NULL && same_layout(f, p)) {
		for (uint_t s = 0; s < p->nstats; s++) {
			kmem_free(f->stats[s].str);
			f->stats[s] = p->stats[s];
		}
		kmem_free(p->stats);
	} else {
		if (f != NULL)
			delete_fks(f);
		int h = stub_add_kstat_unchecked(p->module, p->instance, p->name, p->class,
		    p->type);
		i = (size_t)h;
		f = &fixture[i];
		f->stats = p->stats;
		f->nstats = p->nstats;
		if (nfixture > feed_nseen) {	/* a new slot, not a freed one */
			feed_seen = kmem_realloc(feed_seen, nfixture);
			memset(feed_seen + feed_nseen, 0, nfixture - feed_nseen);
			feed_nseen = nfixture;
		}
	}
	if (p->type == KSTAT_TYPE_IO)
		stub_set_io((int)i, p->io);
	feed_seen[i] = 1;
	p->stats = NULL;
	p->nstats = p->cstats = 0;
}

static struct fstat *
feed_stat(struct pending *p, const char *name, int type)
{
	if (p->nstats == p->cstats) {
		p->cstats = p->cstats ? p->cstats * 2 : 16;
		p->stats = kmem_realloc(p->stats, p->cstats * sizeof (*p->stats));
	}
	struct fstat *s = &p->stats[p->nstats++];
	memset(s, 0, sizeof (*s));
	copy_name(s->kn.name, name);
	s->kn.data_type = (uchar_t)type;
	return (s);
}

static void
load_feed(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		return;
	char *line = NULL, *fields[16];
	size_t cap = 0;
	struct pending p;
	memset(&p, 0, sizeof (p));
	index_live();
	kmem_free(feed_seen);
	feed_seen = kmem_zalloc(nfixture + 1);
	feed_nseen = nfixture;
	/*
	 * First the kstats no longer in the file are deleted, so their slots are free
	 * before the new ones are created: at no moment does the "kernel" hold the
	 * halted zones' kstats and the booted zones' together, which would grow it to
	 * more than the kstats live at either moment.
	 */
	while (getline(&line, &cap, fp) != -1) {
		if (line[0] != 'k' || line[1] != '\t')
			continue;
		line[strcspn(line, "\n")] = '\0';
		char *module = line + 2, *inst = strchr(module, '\t'), *name, *end;
		if (inst == NULL || (name = strchr(inst + 1, '\t')) == NULL ||
		    (end = strchr(name + 1, '\t')) == NULL)
			continue;	/* the second pass reports the bad line */
		*inst++ = *name++ = *end = '\0';
		char mod[KSTAT_STRLEN], nam[KSTAT_STRLEN];
		size_t i;
		copy_name(mod, module);
		copy_name(nam, name);
		if (feed_find(mod, atoi(inst), nam, &i) != NULL)
			feed_seen[i] = 1;
	}
	for (size_t i = 0; i < nfixture; i++)
		if (fixture[i].live && !feed_seen[i])
			delete_fks(&fixture[i]);
	memset(feed_seen, 0, feed_nseen);
	rewind(fp);
	while (getline(&line, &cap, fp) != -1) {
		int n = 0;
		line[strcspn(line, "\n")] = '\0';
		for (char *tok = line; n < 16; ) {
			fields[n++] = tok;
			char *tab = strchr(tok, '\t');
			if (tab == NULL)
				break;
			*tab = '\0';
			tok = tab + 1;
		}
		if (strcmp(fields[0], "k") == 0 && n == 6) {
			feed_flush(&p);
			copy_name(p.module, fields[1]);
			p.instance = atoi(fields[2]);
			copy_name(p.name, fields[3]);
			copy_name(p.class, fields[4]);
			p.type = atoi(fields[5]);
			p.used = 1;
			memset(p.io, 0, sizeof (p.io));
		} else if (strcmp(fields[0], "h") == 0 && n == 2) {
			now_hrtime = strtoll(fields[1], NULL, 10);
		} else if (strcmp(fields[0], "io") == 0 && n == 13 && p.used) {
			for (int j = 0; j < 12; j++)
				p.io[j] = strtoull(fields[j + 1], NULL, 10);
		} else if (n == 3 && p.used && fields[0][1] == '\0') {
			switch (fields[0][0]) {
			case 'u':
				feed_stat(&p, fields[1], KSTAT_DATA_UINT64)->kn.value.ui64 =
				    strtoull(fields[2], NULL, 10);
				break;
			case 'i':
				feed_stat(&p, fields[1], KSTAT_DATA_INT64)->kn.value.i64 =
				    strtoll(fields[2], NULL, 10);
				break;
			case 'd':
				feed_stat(&p, fields[1], KSTAT_DATA_DOUBLE)->kn.value.d =
				    strtod(fields[2], NULL);
				break;
			case 's': {
				struct fstat *s = feed_stat(&p, fields[1], KSTAT_DATA_STRING);
				s->str = kmem_strdup(fields[2]);
				break;
			}
			default:
				fprintf(stderr, "libkstat_stub: bad feed line %s\n", fields[0]);
				abort();
			}
		} else {
			fprintf(stderr, "libkstat_stub: bad feed line %s\n", fields[0]);
			abort();
		}
	}
	feed_flush(&p);
	free(line);
	(void) fclose(fp);
	for (size_t i = 0; i < nfixture; i++) {
		if (fixture[i].live && !feed_seen[i])
			delete_fks(&fixture[i]);
	}
}

static void
poll_feed(void)
{
	static ino_t last_ino;
	static struct timespec last_mtime;
	static long long cpu_ns;
	const char *path = getenv("KSTAT_STUB_FEED");
	struct stat st;
	struct timespec t0, t1;
	if (path == NULL || stat(path, &st) != 0)
		return;
	if (st.st_ino == last_ino && st.st_mtim.tv_sec == last_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == last_mtime.tv_nsec)
		return;
	last_ino = st.st_ino;
	last_mtime = st.st_mtim;
	(void) clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	load_feed(path);
	(void) clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	cpu_ns += (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	char out[4096];
	(void) snprintf(out, sizeof (out), "%s.cpu", path);
	FILE *fp = fopen(out, "w");
	if (fp != NULL) {
		fprintf(fp, "%lld\n", cpu_ns);
		(void) fclose(fp);
	}
}

/* ---- the libkstat ABI ---- */

static size_t
data_size(const struct fks *f)
{
	if (f->type != KSTAT_TYPE_NAMED)
		return (f->blob_size);
	size_t size = f->nstats * sizeof (kstat_named_t);
	for (uint_t i = 0; i < f->nstats; i++)
		if (f->stats[i].kn.data_type == KSTAT_DATA_STRING && f->stats[i].str != NULL)
			size += strlen(f->stats[i].str) + 1;
	return (size);
}

/*
 * The handle kstat_open returns: a kstat_ctl_t first (so the caller sees exactly the
 * libkstat struct), then a sorted index of the chain's headers, which lets kstat_read
 * check its argument in O(log n) on chains of thousands of kstats.
 */
struct handle {
	kstat_ctl_t kc;
	kstat_t **index;
	size_t nindex;
};

static int
cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(kstat_t *const *)a, y = (uintptr_t)*(kstat_t *const *)b;
	return (x < y ? -1 : x > y);
}

static void
free_header(kstat_t *ksp)
{
	free(ksp->ks_data);
	/* poison, so a caller still holding this header reads garbage, not stale data */
	memset(ksp, 0xa5, sizeof (*ksp));
	free(ksp);
	freed_headers++;
}

static int
on_chain(kstat_ctl_t *kc, kstat_t *ksp)
{
	struct handle *h = (struct handle *)kc;
	return (h->nindex > 0 &&
	    bsearch(&ksp, h->index, h->nindex, sizeof (kstat_t *), cmp_ptr) != NULL);
}

static void
index_chain(kstat_ctl_t *kc)
{
	struct handle *h = (struct handle *)kc;
	size_t n = 0;
	for (kstat_t *k = kc->kc_chain; k != NULL; k = k->ks_next)
		n++;
	free(h->index);
	h->index = malloc((n ? n : 1) * sizeof (kstat_t *));
	if (h->index == NULL)
		abort();
	n = 0;
	for (kstat_t *k = kc->kc_chain; k != NULL; k = k->ks_next)
		h->index[n++] = k;
	qsort(h->index, n, sizeof (kstat_t *), cmp_ptr);
	h->nindex = n;
}

static int
cmp_kid(const void *a, const void *b)
{
	kid_t x = fixture[*(const size_t *)a].kid, y = fixture[*(const size_t *)b].kid;
	return (x < y ? -1 : x > y);
}

/* Bring the caller's chain in line with the kernel: free deleted headers, append
 * new ones in kid order (as the kernel's kstat_headers lists them), keep the others
 * where they are (usr/src/lib/libkstat/common/kstat.c kstat_chain_update). */
static void
sync_chain(kstat_ctl_t *kc)
{
	char *known = calloc(nfixture + 1, 1);	/* by slot */
	size_t *added = malloc((nfixture + 1) * sizeof (size_t));
	size_t nadded = 0;
	if (known == NULL || added == NULL)
		abort();
	kstat_t **pp = &kc->kc_chain;
	while (*pp != NULL) {
		kstat_t *k = *pp;
		size_t slot = kid_slot(k->ks_kid);
		if (slot == (size_t)-1) {
			*pp = k->ks_next;
			free_header(k);
		} else {
			known[slot] = 1;
			pp = &k->ks_next;
		}
	}
	for (size_t i = 0; i < nfixture; i++)
		if (fixture[i].live && !known[i])
			added[nadded++] = i;
	qsort(added, nadded, sizeof (size_t), cmp_kid);
	for (size_t n = 0; n < nadded; n++) {
		struct fks *f = &fixture[added[n]];
		kstat_t *k = calloc(1, sizeof (*k));
		if (k == NULL)
			abort();
		k->ks_crtime = f->crtime;
		k->ks_kid = f->kid;
		memcpy(k->ks_module, f->module, KSTAT_STRLEN);
		k->ks_instance = f->instance;
		memcpy(k->ks_name, f->name, KSTAT_STRLEN);
		k->ks_type = f->type;
		memcpy(k->ks_class, f->class, KSTAT_STRLEN);
		k->ks_flags = f->flags;
		k->ks_ndata = f->type == KSTAT_TYPE_NAMED ? f->nstats : f->blob_ndata;
		k->ks_data_size = data_size(f);
		*pp = k;
		pp = &k->ks_next;
	}
	free(added);
	free(known);
	index_chain(kc);
	kc->kc_chain_id = kernel_kcid;
}

kstat_ctl_t *
kstat_open(void)
{
	if (fail_open_errno) {
		errno = fail_open_errno;
		return (NULL);
	}
	poll_feed();
	struct handle *h = calloc(1, sizeof (*h));
	if (h == NULL)
		return (NULL);
	kstat_ctl_t *kc = &h->kc;
	int slot = 0;
	while (slot < MAX_HANDLES && open_handles[slot] != NULL)
		slot++;
	if (slot == MAX_HANDLES) {
		free(h);
		errno = EMFILE;
		return (NULL);
	}
	open_handles[slot] = kc;
	kc->kc_kd = STUB_KD + slot;	/* stands for the /dev/kstat descriptor */
	sync_chain(kc);
	return (kc);
}

int
kstat_close(kstat_ctl_t *kc)
{
	if (kc == NULL)
		return (0);
	if (kc->kc_kd >= STUB_KD && kc->kc_kd < STUB_KD + MAX_HANDLES)
		open_handles[kc->kc_kd - STUB_KD] = NULL;
	kstat_t *k = kc->kc_chain;
	while (k != NULL) {
		kstat_t *next = k->ks_next;
		free_header(k);
		k = next;
	}
	free(((struct handle *)kc)->index);
	free(kc);
	return (0);
}

kid_t
kstat_chain_update(kstat_ctl_t *kc)
{
	if (fail_update_errno) {
		errno = fail_update_errno;
		return (-1);
	}
	poll_feed();
	if (kc->kc_chain_id == kernel_kcid)
		return (0);
	sync_chain(kc);
	chain_updates_changed++;
	return (kernel_kcid);
}

kstat_t *
kstat_lookup(kstat_ctl_t *kc, char *ks_module, int ks_instance, char *ks_name)
{
	for (kstat_t *k = kc->kc_chain; k != NULL; k = k->ks_next) {
		if ((ks_instance == -1 || k->ks_instance == ks_instance) &&
		    (ks_module == NULL || strcmp(k->ks_module, ks_module) == 0) &&
		    (ks_name == NULL || strcmp(k->ks_name, ks_name) == 0))
			return (k);
	}
	errno = ENOENT;
	return (NULL);
}

/* The kstat driver's KSTAT_IOC_READ (usr/src/uts/common/io/kstat.c read_kstat_data). */
static kid_t
ioc_read(kstat_ctl_t *kc, kstat_t *ksp)
{
	if (!on_chain(kc, ksp)) {
		fprintf(stderr, "libkstat_stub: a read of a kstat_t not on the chain "
		    "(freed by kstat_chain_update?)\n");
		abort();
	}
	struct fks *f = find_kid(ksp->ks_kid);
	if (f != NULL && f->remove_on_read) {
		delete_fks(f);
		f = NULL;
	}
	if (f == NULL) {
		errno = ENXIO;
		return (-1);
	}
	f->reads++;
	if (f->eagain != 0 || f->fail_errno == EAGAIN) {
		if (f->eagain > 0)
			f->eagain--;
		if (f->fail_errno == EAGAIN)
			f->fail_errno = 0;
		eagain_retries++;
		errno = EAGAIN;
		return (-1);
	}
	if (f->fail_errno) {
		errno = f->fail_errno;
		f->fail_errno = 0;
		return (-1);
	}
	size_t need = data_size(f);
	if (ksp->ks_data == NULL && need > 0) {
		errno = EFAULT;	/* copyout to a NULL buffer */
		return (-1);
	}
	if (ksp->ks_data_size < need) {
		ksp->ks_data_size = need;	/* the caller may grow its buffer */
		errno = ENOMEM;
		return (-1);
	}
	if (f->type == KSTAT_TYPE_NAMED) {
		kstat_named_t *kn = ksp->ks_data;
		char *strings = (char *)ksp->ks_data + f->nstats * sizeof (kstat_named_t);
		for (uint_t i = 0; i < f->nstats; i++) {
			kn[i] = f->stats[i].kn;
			if (kn[i].data_type != KSTAT_DATA_STRING)
				continue;
			memset(&kn[i].value, 0, sizeof (kn[i].value));
			if (f->stats[i].str == NULL)
				continue;
			size_t len = strlen(f->stats[i].str) + 1;
			memcpy(strings, f->stats[i].str, len);
			kn[i].value.str.addr.ptr = strings;
			kn[i].value.str.len = (uint32_t)len;
			strings += len;
		}
		ksp->ks_ndata = f->nstats;
	} else {
		if (f->blob_size)
			memcpy(ksp->ks_data, f->blob, f->blob_size);
		ksp->ks_ndata = f->blob_ndata;
	}
	ksp->ks_data_size = need;
	ksp->ks_snaptime = now_hrtime;
	ksp->ks_flags = f->flags;
	return (kernel_kcid);
}

int
ioctl(int fd, int request, ...)
{
	va_list ap;
	kstat_t *ksp;

	va_start(ap, request);
	ksp = va_arg(ap, kstat_t *);
	va_end(ap);
	if (fd < STUB_KD || fd >= STUB_KD + MAX_HANDLES || open_handles[fd - STUB_KD] == NULL ||
	    request != KSTAT_IOC_READ) {
		errno = ENOTTY;
		return (-1);
	}
	return (ioc_read(open_handles[fd - STUB_KD], ksp));
}

kid_t
kstat_read(kstat_ctl_t *kc, kstat_t *ksp, void *buf)
{
	kid_t kcid;
	int polls = 0;

	if (buf != NULL) {
		/* dtagent always reads into ks_data; the copy-out variant is not modelled */
		errno = EINVAL;
		return (-1);
	}
	if (ksp->ks_data == NULL && ksp->ks_data_size > 0) {
		if ((ksp->ks_data = calloc(ksp->ks_data_size, 1)) == NULL)
			return (-1);
	}
	while ((kcid = ioc_read(kc, ksp)) == -1) {
		if (errno == EAGAIN) {
			/* libkstat: poll(NULL, 0, 100) and try again, with no limit */
			if (++polls > 20) {
				fprintf(stderr, "libkstat_stub: kstat_read retried EAGAIN 20 "
				    "times; real libkstat would retry for ever\n");
				abort();
			}
			continue;
		}
		if (errno == ENOMEM &&
		    (ksp->ks_flags & (KSTAT_FLAG_VAR_SIZE | KSTAT_FLAG_LONGSTRINGS))) {
			free(ksp->ks_data);
			if ((ksp->ks_data = calloc(ksp->ks_data_size, 1)) != NULL)
				continue;
		}
		return (-1);
	}
	return (kcid);
}

void *
kstat_data_lookup(kstat_t *ksp, char *name)
{
	size_t size;
	switch (ksp->ks_type) {
	case KSTAT_TYPE_NAMED:
		size = sizeof (kstat_named_t);
		break;
	case KSTAT_TYPE_TIMER:
		size = sizeof (kstat_timer_t);
		break;
	default:
		errno = EINVAL;
		return (NULL);
	}
	char *p = ksp->ks_data;
	/* both records begin with a char name[KSTAT_STRLEN] */
	for (uint_t i = 0; p != NULL && i < ksp->ks_ndata; i++, p += size)
		if (strcmp(p, name) == 0)
			return (p);
	errno = ENOENT;
	return (NULL);
}
