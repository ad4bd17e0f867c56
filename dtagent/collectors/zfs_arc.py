"""ZFS ARC and L2ARC from the zfs:0:arcstats kstat.

The field set differs between platform images: illumos-joyent 2019 arc.c has 83
statistics, illumos-gate 2022 has 106, a 2021 OmniOS capture 99, and 2015 illumos had
fields since removed (recycle_miss, duplicate_*, l2_compress_*) (illumos-gate and
illumos-joyent usr/src/uts/common/fs/zfs/arc.c, the ``arc_stats`` initializer). So the
names are read at run time: a curated set gets a proper name, type and unit below, every
other numeric field is still exported as ``illumos_zfs_arcstats_value{field}``, and a
field the kernel does not have removes only its own series. All arcstats are uint64:
sizes in bytes, everything else counts.

There is no ZIL statistic here: illumos has no ZIL kstat (zil.c creates none; the
``zil_stats`` kstat is OpenZFS on Linux/FreeBSD). ZIL commit latency comes from a D
script; nothing in this collector measures or names the ZIL.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.snapshot import HostSnapshot, KstatInput

SRC = "zfs:0:arcstats"


def _spec(
    name: str, mtype: MetricType, help_: str, labels: tuple[str, ...] = (), unit: str = ""
) -> MetricSpec:
    return MetricSpec(name, mtype, help_, labels, unit, SRC)


def _bytes(name: str, help_: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return _spec(f"illumos_zfs_arc_{name}", "gauge", help_, labels, "bytes")


def _count(name: str, help_: str, labels: tuple[str, ...] = (), unit: str = "") -> MetricSpec:
    return _spec(f"illumos_zfs_arc_{name}_total", "counter", help_, labels, unit)


SIZE = _bytes("size_bytes", "Current size of the ARC (field size).")
TARGET = _bytes("target_size_bytes", "Size the ARC is aiming for (field c).")
MIN = _bytes("min_size_bytes", "Lowest target size of the ARC (field c_min).")
MAX = _bytes("max_size_bytes", "Highest target size of the ARC (field c_max).")
MRU_TARGET = _bytes("mru_target_size_bytes", "Target size of the MRU part (field p).")
MRU_SIZE = _bytes("mru_size_bytes", "Data in the most-recently-used list (field mru_size).")
MFU_SIZE = _bytes("mfu_size_bytes", "Data in the most-frequently-used list (field mfu_size).")
ANON_SIZE = _bytes("anon_size_bytes", "Anonymous (dirty, not yet written) buffers in the ARC.")
GHOST_SIZE = _bytes(
    "ghost_size_bytes",
    "Size of data evicted but still tracked by the ghost lists (fields *_ghost_size).",
    ("list",),
)
EVICTABLE = _bytes(
    "evictable_bytes",
    "Evictable bytes by ARC state and content (fields <state>_evictable_<content>).",
    ("state", "content"),
)
CONTENT = _bytes(
    "content_bytes",
    "ARC size by what it holds: data, metadata, buffer headers, L2ARC headers, other "
    "(fields data_size, metadata_size, hdr_size, l2_hdr_size, other_size).",
    ("content",),
)
COMPRESSED = _bytes("compressed_size_bytes", "Compressed size of the data in the ARC.")
UNCOMPRESSED = _bytes("uncompressed_size_bytes", "Uncompressed size of the data in the ARC.")
OVERHEAD = _bytes("overhead_size_bytes", "Temporary buffers of the ARC (field overhead_size).")
META_USED = _bytes("metadata_used_bytes", "Metadata in the ARC (field arc_meta_used).")
META_LIMIT = _bytes("metadata_limit_bytes", "Metadata limit of the ARC (field arc_meta_limit).")
META_MAX = _bytes("metadata_max_bytes", "Highest metadata use seen (field arc_meta_max).")
META_MIN = _bytes("metadata_min_bytes", "Metadata floor of the ARC (field arc_meta_min).")
HASH_ELEMENTS = _spec("illumos_zfs_arc_hash_elements", "gauge", "Buffers in the ARC hash table.")
HASH_ELEMENTS_MAX = _spec(
    "illumos_zfs_arc_hash_elements_max", "gauge", "Most buffers seen in the ARC hash table."
)
HASH_CHAINS = _spec("illumos_zfs_arc_hash_chains", "gauge", "Hash chains in the ARC hash table.")
HASH_CHAIN_MAX = _spec(
    "illumos_zfs_arc_hash_chain_max", "gauge", "Longest hash chain seen in the ARC."
)
HASH_COLLISIONS = _count("hash_collisions", "Collisions in the ARC hash table.")

HITS = _count("hits", "Reads served from the ARC (field hits).")
MISSES = _count("misses", "Reads the ARC could not serve (field misses).")
HITS_BY_TYPE = _count(
    "hits_by_type",
    "ARC hits by access (demand or prefetch) and content (data or metadata).",
    ("access", "content"),
)
MISSES_BY_TYPE = _count(
    "misses_by_type",
    "ARC misses by access (demand or prefetch) and content (data or metadata).",
    ("access", "content"),
)
LIST_HITS = _count(
    "list_hits",
    "ARC hits by list: mru, mfu, and the ghost lists (a ghost hit is a miss that a "
    "larger ARC would have served).",
    ("list",),
)
PREFETCHED_HITS = _count(
    "demand_hits_prefetched",
    "Demand hits on buffers a prefetch had read (fields demand_hit_<kind>_prefetch).",
    ("prefetch",),
)
DELETED = _count("deleted", "Buffers deleted from the ARC.")
MUTEX_MISSES = _count("mutex_misses", "Evictions skipped because a hash lock was busy.")
ACCESS_SKIPS = _count("access_skips", "Accesses skipped because the buffer was being evicted.")
EVICT_SKIPS = _count("evict_skips", "Buffers skipped by eviction (in use or I/O in progress).")
EVICT_NOT_ENOUGH = _count("evict_not_enough", "Eviction passes that could not free enough memory.")
EVICTED_BYTES = _count(
    "evicted_bytes",
    "Bytes evicted from the ARC, by their L2ARC state: cached on the L2ARC, eligible "
    "for it, or not (fields evict_l2_cached, evict_l2_eligible, evict_l2_ineligible).",
    ("l2",),
    "bytes",
)
EVICTED_ELIGIBLE_BY_LIST = _count(
    "evicted_l2_eligible_bytes",
    "L2ARC-eligible bytes evicted, by list (fields evict_l2_eligible_mfu/_mru; newer "
    "platform images only).",
    ("list",),
    "bytes",
)
EVICT_L2_SKIPS = _count("evict_l2_skips", "Evictions skipped while the L2ARC was reading.")
MEMORY_THROTTLES = _count("memory_throttles", "Times the ARC throttled writes for lack of memory.")
ASYNC_UPGRADE_SYNC = _count(
    "async_upgrade_sync", "Asynchronous reads upgraded to synchronous by a demand read."
)

L2_SIZE = _bytes("l2_size_bytes", "Logical (uncompressed) size of the data in the L2ARC.")
L2_ALLOCATED = _bytes(
    "l2_allocated_bytes", "Space the L2ARC data takes on the cache devices (field l2_asize)."
)
L2_ALLOCATED_BY_LIST = _bytes(
    "l2_allocated_by_list_bytes",
    "Space on the cache devices by list (fields l2_prefetch_asize, l2_mru_asize, "
    "l2_mfu_asize; newer platform images only).",
    ("list",),
)
L2_ALLOCATED_BY_CONTENT = _bytes(
    "l2_allocated_by_content_bytes",
    "Space on the cache devices by content (fields l2_bufc_data_asize, "
    "l2_bufc_metadata_asize; newer platform images only).",
    ("content",),
)
L2_HITS = _count("l2_hits", "ARC misses served by the L2ARC (each a read of the cache device).")
L2_MISSES = _count("l2_misses", "ARC misses the L2ARC could not serve.")
L2_READ_BYTES = _count("l2_read_bytes", "Bytes read from the cache devices.", unit="bytes")
L2_WRITTEN_BYTES = _count(
    "l2_written_bytes", "Bytes written to the cache devices (field l2_write_bytes).", unit="bytes"
)
L2_WRITES = _count("l2_writes", "Writes issued to the cache devices (field l2_writes_sent).")
L2_WRITES_DONE = _count("l2_writes_done", "Writes to the cache devices that completed.")
L2_WRITE_ERRORS = _count("l2_write_errors", "Writes to the cache devices that failed.")
L2_CHECKSUM_ERRORS = _count(
    "l2_checksum_errors", "L2ARC reads whose checksum was bad (field l2_cksum_bad)."
)
L2_IO_ERRORS = _count("l2_io_errors", "L2ARC reads that failed with an I/O error.")
L2_FEEDS = _count("l2_feeds", "Runs of the L2ARC feed thread.")
L2_RW_CLASHES = _count(
    "l2_read_write_clashes", "L2ARC reads that met a write in progress (field l2_rw_clash)."
)
L2_WRITE_LOCK_RETRIES = _count(
    "l2_write_lock_retries", "L2ARC writes retried because a lock was busy."
)
L2_EVICT_LOCK_RETRIES = _count(
    "l2_evict_lock_retries", "L2ARC evictions retried because a lock was busy."
)
L2_EVICT_READING = _count(
    "l2_evict_reading", "L2ARC evictions of buffers being read (field l2_evict_reading)."
)
L2_EVICT_L1CACHED = _count(
    "l2_evict_l1cached", "L2ARC evictions of buffers still in the ARC (field l2_evict_l1cached)."
)
L2_FREE_ON_WRITE = _count(
    "l2_free_on_write", "L2ARC buffers freed while being written (field l2_free_on_write)."
)
L2_ABORT_LOWMEM = _count(
    "l2_abort_lowmem", "L2ARC feeds aborted for lack of memory (field l2_abort_lowmem)."
)

GENERIC = MetricSpec(
    "illumos_zfs_arcstats_value",
    "untyped",
    "Any arcstats field without a curated metric above, by its kstat name (fields "
    "differ between platform images; check the field's meaning before using it).",
    ("field",),
    "",
    SRC,
)

# field -> (spec, label values)
CURATED: dict[str, tuple[MetricSpec, tuple[str, ...]]] = {
    "size": (SIZE, ()),
    "c": (TARGET, ()),
    "c_min": (MIN, ()),
    "c_max": (MAX, ()),
    "p": (MRU_TARGET, ()),
    "mru_size": (MRU_SIZE, ()),
    "mfu_size": (MFU_SIZE, ()),
    "anon_size": (ANON_SIZE, ()),
    "mru_ghost_size": (GHOST_SIZE, ("mru",)),
    "mfu_ghost_size": (GHOST_SIZE, ("mfu",)),
    "data_size": (CONTENT, ("data",)),
    "metadata_size": (CONTENT, ("metadata",)),
    "hdr_size": (CONTENT, ("headers",)),
    "l2_hdr_size": (CONTENT, ("l2_headers",)),
    "other_size": (CONTENT, ("other",)),
    "compressed_size": (COMPRESSED, ()),
    "uncompressed_size": (UNCOMPRESSED, ()),
    "overhead_size": (OVERHEAD, ()),
    "arc_meta_used": (META_USED, ()),
    "arc_meta_limit": (META_LIMIT, ()),
    "arc_meta_max": (META_MAX, ()),
    "arc_meta_min": (META_MIN, ()),
    "hash_elements": (HASH_ELEMENTS, ()),
    "hash_elements_max": (HASH_ELEMENTS_MAX, ()),
    "hash_chains": (HASH_CHAINS, ()),
    "hash_chain_max": (HASH_CHAIN_MAX, ()),
    "hash_collisions": (HASH_COLLISIONS, ()),
    "hits": (HITS, ()),
    "misses": (MISSES, ()),
    "mru_hits": (LIST_HITS, ("mru",)),
    "mfu_hits": (LIST_HITS, ("mfu",)),
    "mru_ghost_hits": (LIST_HITS, ("mru_ghost",)),
    "mfu_ghost_hits": (LIST_HITS, ("mfu_ghost",)),
    "demand_hit_predictive_prefetch": (PREFETCHED_HITS, ("predictive",)),
    "demand_hit_prescient_prefetch": (PREFETCHED_HITS, ("prescient",)),
    "deleted": (DELETED, ()),
    "mutex_miss": (MUTEX_MISSES, ()),
    "access_skip": (ACCESS_SKIPS, ()),
    "evict_skip": (EVICT_SKIPS, ()),
    "evict_not_enough": (EVICT_NOT_ENOUGH, ()),
    "evict_l2_cached": (EVICTED_BYTES, ("cached",)),
    "evict_l2_eligible": (EVICTED_BYTES, ("eligible",)),
    "evict_l2_ineligible": (EVICTED_BYTES, ("ineligible",)),
    "evict_l2_eligible_mfu": (EVICTED_ELIGIBLE_BY_LIST, ("mfu",)),
    "evict_l2_eligible_mru": (EVICTED_ELIGIBLE_BY_LIST, ("mru",)),
    "evict_l2_skip": (EVICT_L2_SKIPS, ()),
    "memory_throttle_count": (MEMORY_THROTTLES, ()),
    "async_upgrade_sync": (ASYNC_UPGRADE_SYNC, ()),
    "l2_size": (L2_SIZE, ()),
    "l2_asize": (L2_ALLOCATED, ()),
    "l2_prefetch_asize": (L2_ALLOCATED_BY_LIST, ("prefetch",)),
    "l2_mru_asize": (L2_ALLOCATED_BY_LIST, ("mru",)),
    "l2_mfu_asize": (L2_ALLOCATED_BY_LIST, ("mfu",)),
    "l2_bufc_data_asize": (L2_ALLOCATED_BY_CONTENT, ("data",)),
    "l2_bufc_metadata_asize": (L2_ALLOCATED_BY_CONTENT, ("metadata",)),
    "l2_hits": (L2_HITS, ()),
    "l2_misses": (L2_MISSES, ()),
    "l2_read_bytes": (L2_READ_BYTES, ()),
    "l2_write_bytes": (L2_WRITTEN_BYTES, ()),
    "l2_writes_sent": (L2_WRITES, ()),
    "l2_writes_done": (L2_WRITES_DONE, ()),
    "l2_writes_error": (L2_WRITE_ERRORS, ()),
    "l2_cksum_bad": (L2_CHECKSUM_ERRORS, ()),
    "l2_io_error": (L2_IO_ERRORS, ()),
    "l2_feeds": (L2_FEEDS, ()),
    "l2_rw_clash": (L2_RW_CLASHES, ()),
    "l2_writes_lock_retry": (L2_WRITE_LOCK_RETRIES, ()),
    "l2_evict_lock_retry": (L2_EVICT_LOCK_RETRIES, ()),
    "l2_evict_reading": (L2_EVICT_READING, ()),
    "l2_evict_l1cached": (L2_EVICT_L1CACHED, ()),
    "l2_free_on_write": (L2_FREE_ON_WRITE, ()),
    "l2_abort_lowmem": (L2_ABORT_LOWMEM, ()),
}
for _state in ("anon", "mru", "mfu", "mru_ghost", "mfu_ghost"):
    for _content in ("data", "metadata"):
        CURATED[f"{_state}_evictable_{_content}"] = (EVICTABLE, (_state, _content))
for _access in ("demand", "prefetch"):
    for _content in ("data", "metadata"):
        CURATED[f"{_access}_{_content}_hits"] = (HITS_BY_TYPE, (_access, _content))
        CURATED[f"{_access}_{_content}_misses"] = (MISSES_BY_TYPE, (_access, _content))

SPECS: tuple[MetricSpec, ...] = (*dict.fromkeys(s for s, _ in CURATED.values()), GENERIC)


class ZfsArcCollector(Collector):
    name = "zfs_arc"
    description = (
        "ZFS ARC and L2ARC from zfs:0:arcstats: sizes, targets and limits, hits and misses, "
        "evictions, L2ARC traffic and errors. Fields without a curated metric are exported "
        "as illumos_zfs_arcstats_value{field}. No ZIL figures: illumos has no ZIL kstat"
    )
    specs = SPECS
    kstat_inputs = (KstatInput("zfs", "misc"),)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        ks = snap.kstats.get("zfs", 0, "arcstats")
        if ks is None:
            return []
        fams = Families(self.specs)
        made = snap.kstats.created(ks)
        for field, value in ks.data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # a string statistic has no number to export
            entry = CURATED.get(field)
            if entry is None:
                fams[GENERIC.name].add((field,), value)
            else:
                fams[entry[0].name].add(entry[1], value, made)
        return fams.all()
