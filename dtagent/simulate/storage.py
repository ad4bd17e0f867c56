"""ZFS kstats: zfs:0:arcstats (named) and zfs:0:<pool> (KSTAT_TYPE_IO, class disk).

Field names are the illumos-joyent 2019 arc.c arc_stats set plus what illumos-gate 2022
adds (persistent L2ARC and per-type L2 accounting), 106 fields in all
(usr/src/uts/common/fs/zfs/arc.c arc_stats); pool I/O kstats follow spa_misc.c
spa_iokstat.
"""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.simulate.model import GiB, SimHost
from dtagent.snapshot import KSTAT_TYPE_IO, Kstat

ARC_COUNTERS = [
    "hits",
    "misses",
    "demand_data_hits",
    "demand_data_misses",
    "demand_metadata_hits",
    "demand_metadata_misses",
    "prefetch_data_hits",
    "prefetch_data_misses",
    "prefetch_metadata_hits",
    "prefetch_metadata_misses",
    "mru_hits",
    "mru_ghost_hits",
    "mfu_hits",
    "mfu_ghost_hits",
    "deleted",
    "mutex_miss",
    "access_skip",
    "evict_skip",
    "evict_not_enough",
    "evict_l2_cached",
    "evict_l2_eligible",
    "evict_l2_ineligible",
    "evict_l2_skip",
    "hash_collisions",
    "l2_hits",
    "l2_misses",
    "l2_feeds",
    "l2_rw_clash",
    "l2_read_bytes",
    "l2_write_bytes",
    "l2_writes_sent",
    "l2_writes_done",
    "l2_writes_error",
    "l2_writes_lock_retry",
    "l2_evict_lock_retry",
    "l2_evict_reading",
    "l2_evict_l1cached",
    "l2_free_on_write",
    "l2_abort_lowmem",
    "l2_cksum_bad",
    "l2_io_error",
    "memory_throttle_count",
    "async_upgrade_sync",
    "demand_hit_predictive_prefetch",
    "demand_hit_prescient_prefetch",
    # illumos-gate 2022 additions
    "evict_l2_eligible_mfu",
    "evict_l2_eligible_mru",
    "l2_log_blk_writes",
    "l2_rebuild_success",
    "l2_rebuild_unsupported",
    "l2_rebuild_io_errors",
    "l2_rebuild_dh_errors",
    "l2_rebuild_cksum_lb_errors",
    "l2_rebuild_lowmem",
    "l2_rebuild_log_blks",
]
ARC_GAUGES = [
    "hash_elements",
    "hash_elements_max",
    "hash_chains",
    "hash_chain_max",
    "p",
    "c",
    "c_min",
    "c_max",
    "size",
    "compressed_size",
    "uncompressed_size",
    "overhead_size",
    "hdr_size",
    "data_size",
    "metadata_size",
    "other_size",
    "anon_size",
    "anon_evictable_data",
    "anon_evictable_metadata",
    "mru_size",
    "mru_evictable_data",
    "mru_evictable_metadata",
    "mru_ghost_size",
    "mru_ghost_evictable_data",
    "mru_ghost_evictable_metadata",
    "mfu_size",
    "mfu_evictable_data",
    "mfu_evictable_metadata",
    "mfu_ghost_size",
    "mfu_ghost_evictable_data",
    "mfu_ghost_evictable_metadata",
    "l2_size",
    "l2_asize",
    "l2_hdr_size",
    "arc_meta_used",
    "arc_meta_limit",
    "arc_meta_max",
    "arc_meta_min",
    # illumos-gate 2022 additions
    "l2_prefetch_asize",
    "l2_mru_asize",
    "l2_mfu_asize",
    "l2_bufc_data_asize",
    "l2_bufc_metadata_asize",
    "l2_log_blk_avg_asize",
    "l2_log_blk_asize",
    "l2_log_blk_count",
    "l2_data_to_meta_ratio",
    "l2_rebuild_size",
    "l2_rebuild_asize",
    "l2_rebuild_bufs",
    "l2_rebuild_bufs_precached",
]


def _grow(host: SimHost, key: str, amount: float) -> int:
    host.acc[key] = host.acc.get(key, 0.0) + max(0.0, amount)
    return int(host.acc[key])


def arcstats(host: SimHost, rng: random.Random) -> Kstat:
    dt = host.step
    c_max = host.physmem * 7 // 8
    c = int(c_max * rng.uniform(0.7, 0.9))
    size = int(c * rng.uniform(0.97, 1.0))
    data: dict[str, int | float | str] = {}
    ops = rng.uniform(20000, 60000) * dt
    miss = rng.uniform(0.02, 0.08)
    rates = {
        "demand_data_hits": ops * 0.6 * (1 - miss),
        "demand_data_misses": ops * 0.6 * miss,
        "demand_metadata_hits": ops * 0.3 * (1 - miss / 2),
        "demand_metadata_misses": ops * 0.3 * miss / 2,
        "prefetch_data_hits": ops * 0.05,
        "prefetch_data_misses": ops * 0.03,
        "prefetch_metadata_hits": ops * 0.01,
        "prefetch_metadata_misses": ops * 0.01,
        "l2_hits": ops * miss * 0.5,
        "l2_misses": ops * miss * 0.5,
        "l2_feeds": dt,
        "l2_read_bytes": ops * miss * 0.5 * 16384,
        "l2_write_bytes": rng.uniform(1e6, 8e6) * dt,
        "l2_log_blk_writes": dt * 0.5,
        "evict_l2_eligible_mfu": ops * 0.004 * 16384,
        "evict_l2_eligible_mru": ops * 0.006 * 16384,
        "l2_writes_sent": dt * 2,
        "l2_writes_done": dt * 2,
        "deleted": ops * 0.01,
        "evict_skip": ops * 0.001,
        "memory_throttle_count": 0,
        "l2_cksum_bad": 0,
        "l2_io_error": 0,
    }
    hits = sum(v for k, v in rates.items() if k.endswith("_hits") and not k.startswith("l2"))
    misses = sum(v for k, v in rates.items() if k.endswith("_misses") and not k.startswith("l2"))
    rates["hits"] = hits
    rates["misses"] = misses
    rates["mru_hits"] = hits * 0.4
    rates["mfu_hits"] = hits * 0.55
    rates["mru_ghost_hits"] = misses * 0.1
    rates["mfu_ghost_hits"] = misses * 0.05
    for name in ARC_COUNTERS:
        data[name] = _grow(host, f"arc_{name}", rates.get(name, 0.0))
    meta = int(size * 0.2)
    gauges = {
        "c": c,
        "c_min": host.physmem // 64,
        "c_max": c_max,
        "p": c // 2,
        "size": size,
        "data_size": size - meta - size // 50,
        "metadata_size": meta,
        "hdr_size": size // 100,
        "other_size": size // 100,
        "mru_size": size // 3,
        "mfu_size": size * 2 // 3,
        "mru_ghost_size": size // 4,
        "mfu_ghost_size": size // 5,
        "compressed_size": int(size * 0.6),
        "uncompressed_size": size,
        "l2_size": 400 * GiB,
        "l2_asize": 250 * GiB,
        "l2_hdr_size": 300 * (1 << 20),
        "l2_prefetch_asize": 10 * GiB,
        "l2_mru_asize": 90 * GiB,
        "l2_mfu_asize": 150 * GiB,
        "l2_bufc_data_asize": 220 * GiB,
        "l2_bufc_metadata_asize": 30 * GiB,
        "l2_log_blk_avg_asize": 14_000,
        "l2_log_blk_asize": 1 << 30,
        "l2_log_blk_count": 75_000,
        "l2_data_to_meta_ratio": 1700,
        "arc_meta_used": meta,
        "arc_meta_limit": c_max // 4,
        "arc_meta_max": meta + GiB,
        "arc_meta_min": c_max // 32,
        "hash_elements": 3_000_000,
        "hash_elements_max": 3_500_000,
        "hash_chains": 200_000,
        "hash_chain_max": 8,
    }
    for name in ARC_GAUGES:
        data[name] = int(gauges.get(name, size // 200))
    return Kstat("zfs", 0, "arcstats", "misc", snaptime=int(host.time * 1e9), data=data)


def pool_io(host: SimHost, pool: str, rng: random.Random) -> Kstat:
    dt = host.step
    reads = rng.uniform(500, 3000) * dt
    writes = rng.uniform(800, 4000) * dt
    data: dict[str, int | float | str] = {
        "nread": _grow(host, f"{pool}_nread", reads * 65536),
        "nwritten": _grow(host, f"{pool}_nwritten", writes * 98304),
        "reads": _grow(host, f"{pool}_reads", reads),
        "writes": _grow(host, f"{pool}_writes", writes),
        "wtime": _grow(host, f"{pool}_wtime", dt * 1e9 * rng.uniform(0.05, 0.3)),
        "wlentime": _grow(host, f"{pool}_wlentime", dt * 1e9 * rng.uniform(0.1, 1.5)),
        "wlastupdate": int(host.time * 1e9),
        "rtime": _grow(host, f"{pool}_rtime", dt * 1e9 * rng.uniform(0.3, 0.9)),
        "rlentime": _grow(host, f"{pool}_rlentime", dt * 1e9 * rng.uniform(1, 8)),
        "rlastupdate": int(host.time * 1e9),
        "wcnt": rng.randint(0, 4),
        "rcnt": rng.randint(0, 16),
    }
    return Kstat(
        "zfs", 0, pool, "disk", ks_type=KSTAT_TYPE_IO, snaptime=int(host.time * 1e9), data=data
    )


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    frame.kstats.append(arcstats(host, rng))
    for pool in host.pools:
        frame.kstats.append(pool_io(host, pool, rng))
