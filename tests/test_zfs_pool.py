"""ZFS pool I/O from the zfs:0:<pool> io kstats."""

from __future__ import annotations

from pathlib import Path

from dtagent.collectors.zfs_pool import ZfsPoolCollector
from dtagent.kstat_text import parse
from dtagent.simulate import frames, make_host
from dtagent.snapshot import KSTAT_TYPE_IO, Kstat
from tests.helpers import Samples, collected

# `kstat -p zfs:0:` lines for a pool (kstat.c prints an io kstat's kstat_io_t fields by
# name) next to kstats of the same module that are not pools.
KSTAT_P = """\
zfs:0:rpool:class\tdisk
zfs:0:rpool:nread\t8806912
zfs:0:rpool:nwritten\t104857600
zfs:0:rpool:reads\t2150
zfs:0:rpool:writes\t12800
zfs:0:rpool:wtime\t1500000000
zfs:0:rpool:wlentime\t3000000000
zfs:0:rpool:wlastupdate\t99000000000
zfs:0:rpool:rtime\t7250000000
zfs:0:rpool:rlentime\t21000000000
zfs:0:rpool:rlastupdate\t99000000000
zfs:0:rpool:wcnt\t0
zfs:0:rpool:rcnt\t3
zfs:0:arcstats:class\tmisc
zfs:0:arcstats:hits\t100
zfs:0:zfetchstats:class\tmisc
zfs:0:zfetchstats:hits\t5
zfs_import:0:rpool:class\tzfs_misc
"""


def collect(kstats: list[Kstat]) -> Samples:
    return collected(ZfsPoolCollector(), kstats)


def test_pool_io_kstat_in_base_units() -> None:
    got = collect(parse(KSTAT_P.splitlines()).kstats)
    p = ("rpool",)
    assert got == {
        ("illumos_zfs_pool_reads_total", p): 2150,
        ("illumos_zfs_pool_writes_total", p): 12800,
        ("illumos_zfs_pool_read_bytes_total", p): 8806912,
        ("illumos_zfs_pool_written_bytes_total", p): 104857600,
        ("illumos_zfs_pool_wait_seconds_total", p): 1.5,
        ("illumos_zfs_pool_wait_queue_length_seconds_total", p): 3.0,
        ("illumos_zfs_pool_run_seconds_total", p): 7.25,
        ("illumos_zfs_pool_run_queue_length_seconds_total", p): 21.0,
        ("illumos_zfs_pool_wait_queue_ios", p): 0,
        ("illumos_zfs_pool_run_queue_ios", p): 3,
    }


def test_real_pool_headers_without_data_give_no_series(samples_dir: Path) -> None:
    # OmniOS: zfs:0:rpool, zfs:0:big, zfs:0:fast are class disk, type IO (no values).
    kstats = parse((samples_dir / "omnios_ngz_kstat_headers_decoded.txt").read_text().splitlines())
    pools = [k for k in kstats.kstats if k.module == "zfs" and k.ks_type == KSTAT_TYPE_IO]
    assert {k.name for k in pools} == {"rpool", "big", "fast"}
    assert collect(kstats.kstats) == {}
    # one field missing removes only its series
    full = collect(parse(KSTAT_P.splitlines()).kstats)
    kst = parse(KSTAT_P.splitlines()).kstats
    for ks in kst:
        ks.data.pop("rlentime", None)
    assert set(full) - set(collect(kst)) == {
        ("illumos_zfs_pool_run_queue_length_seconds_total", ("rpool",))
    }


def test_simulated_pool_counters_grow() -> None:
    host = make_host(3, seed=4, start=0.0, step=5.0, duration=60)
    seen = [collect(list(f.kstats)) for f in frames(host, 4)]
    key = ("illumos_zfs_pool_read_bytes_total", ("zones",))
    values = [s[key] for s in seen]
    assert values == sorted(values) and values[0] < values[-1]
