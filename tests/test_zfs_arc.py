"""ZFS ARC/L2ARC from real arcstats dumps of several platform images."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dtagent.collectors.zfs_arc import CURATED, GENERIC, ZfsArcCollector
from dtagent.collectors.zfs_pool import ZfsPoolCollector
from dtagent.kstat_text import parse
from dtagent.snapshot import Kstat
from tests.helpers import Samples, collected, dtagent

OMNIOS = "omnios_kstat_zfs_arcstats_decoded.txt"  # 2021, 99 fields
ILLUMOS_2015 = "kstat_p_zfs_arcstats_illumos_partial.txt"  # partial, older field set
# What illumos-gate 2022 has and the 2021 OmniOS capture lacks (arc.c arc_stats):
# 99 + 7 = 106 fields.
GATE_2022_EXTRA = (
    "evict_l2_eligible_mfu",
    "evict_l2_eligible_mru",
    "l2_prefetch_asize",
    "l2_mru_asize",
    "l2_mfu_asize",
    "l2_bufc_data_asize",
    "l2_bufc_metadata_asize",
)
# The persistent-L2ARC fields illumos-joyent 2019 does not have yet: 99 - 16 = 83 fields.
PERSISTENT_L2ARC = (
    "l2_log_blk_writes",
    "l2_log_blk_avg_asize",
    "l2_log_blk_asize",
    "l2_log_blk_count",
    "l2_data_to_meta_ratio",
    "l2_rebuild_success",
    "l2_rebuild_unsupported",
    "l2_rebuild_io_errors",
    "l2_rebuild_dh_errors",
    "l2_rebuild_cksum_lb_errors",
    "l2_rebuild_lowmem",
    "l2_rebuild_size",
    "l2_rebuild_asize",
    "l2_rebuild_bufs",
    "l2_rebuild_bufs_precached",
    "l2_rebuild_log_blks",
)


def arcstats(samples_dir: Path, name: str) -> Kstat:
    result = parse((samples_dir / name).read_text().splitlines())
    (ks,) = [k for k in result.kstats if k.key == ("zfs", 0, "arcstats")]
    return ks


def collect(*kstats: Kstat) -> Samples:
    return collected(ZfsArcCollector(), kstats)


def expected(ks: Kstat) -> Samples:
    """What each field must become: its curated series, or the generic one."""
    out: Samples = {}
    for field, value in ks.data.items():
        assert isinstance(value, int)
        spec, labels = CURATED.get(field, (GENERIC, (field,)))
        out[(spec.name, labels)] = value
    return out


def test_omnios_sample_every_field_exported(samples_dir: Path) -> None:
    ks = arcstats(samples_dir, OMNIOS)
    assert len(ks.data) == 99
    got = collect(ks)
    assert got == expected(ks)
    assert got[("illumos_zfs_arc_hits_total", ())] == 13655303985
    assert got[("illumos_zfs_arc_misses_total", ())] == 1777681565
    assert got[("illumos_zfs_arc_hits_by_type_total", ("demand", "metadata"))] == 13307461843
    assert got[("illumos_zfs_arc_list_hits_total", ("mfu",))] == 13543976970
    for name in (
        "illumos_zfs_arc_size_bytes",
        "illumos_zfs_arc_target_size_bytes",
        "illumos_zfs_arc_min_size_bytes",
        "illumos_zfs_arc_max_size_bytes",
        "illumos_zfs_arc_mru_size_bytes",
        "illumos_zfs_arc_mfu_size_bytes",
        "illumos_zfs_arc_l2_size_bytes",
        "illumos_zfs_arc_l2_allocated_bytes",
        "illumos_zfs_arc_l2_hits_total",
        "illumos_zfs_arc_l2_misses_total",
        "illumos_zfs_arc_l2_read_bytes_total",
        "illumos_zfs_arc_l2_written_bytes_total",
        "illumos_zfs_arc_l2_checksum_errors_total",
        "illumos_zfs_arc_l2_io_errors_total",
    ):
        assert (name, ()) in got, name
    # The persistent-L2ARC fields have no curated metric: exported generically.
    generic = {labels[0] for (name, labels) in got if name == GENERIC.name}
    assert generic == set(PERSISTENT_L2ARC)


def test_older_illumos_fields_appear_generically(samples_dir: Path) -> None:
    ks = arcstats(samples_dir, ILLUMOS_2015)
    got = collect(ks)
    assert got == expected(ks)
    generic = {labels[0] for (name, labels) in got if name == GENERIC.name}
    assert {"duplicate_buffers", "duplicate_buffers_size", "duplicate_reads"} <= generic
    assert got[("illumos_zfs_arc_max_size_bytes", ())] == 10150301696
    # A partial dump: fields it lacks are simply absent (no zero, no error).
    assert ("illumos_zfs_arc_hits_total", ()) not in got


def test_older_and_newer_images_keep_the_curated_metrics(samples_dir: Path) -> None:
    omnios = arcstats(samples_dir, OMNIOS)
    older = Kstat(
        "zfs",
        0,
        "arcstats",
        "misc",
        data={k: v for k, v in omnios.data.items() if k not in PERSISTENT_L2ARC},
    )
    newer = Kstat(
        "zfs",
        0,
        "arcstats",
        "misc",
        data={**omnios.data, **{f: 1000 + i for i, f in enumerate(GATE_2022_EXTRA)}},
    )
    assert len(older.data) == 83 and len(newer.data) == 106
    got_old, got_new = collect(older), collect(newer)
    assert got_old == expected(older) and got_new == expected(newer)
    curated_old = {k for k in got_old if k[0] != GENERIC.name}
    curated_new = {k for k in got_new if k[0] != GENERIC.name}
    assert curated_old < curated_new  # nothing curated is lost on the newer image
    assert curated_new - curated_old == {
        ("illumos_zfs_arc_evicted_l2_eligible_bytes_total", ("mfu",)),
        ("illumos_zfs_arc_evicted_l2_eligible_bytes_total", ("mru",)),
        ("illumos_zfs_arc_l2_allocated_by_list_bytes", ("prefetch",)),
        ("illumos_zfs_arc_l2_allocated_by_list_bytes", ("mru",)),
        ("illumos_zfs_arc_l2_allocated_by_list_bytes", ("mfu",)),
        ("illumos_zfs_arc_l2_allocated_by_content_bytes", ("data",)),
        ("illumos_zfs_arc_l2_allocated_by_content_bytes", ("metadata",)),
    }
    assert not any(k[0] == GENERIC.name for k in got_old)  # 2019: all fields curated


def test_a_missing_field_removes_only_its_own_series(samples_dir: Path) -> None:
    ks = arcstats(samples_dir, OMNIOS)
    full = collect(ks)
    for field in ("c_max", "l2_cksum_bad", "mfu_ghost_hits", "l2_rebuild_bufs"):
        data = dict(ks.data)
        del data[field]
        got = collect(Kstat("zfs", 0, "arcstats", "misc", data=data))
        spec, labels = CURATED.get(field, (GENERIC, (field,)))
        assert set(full) - set(got) == {(spec.name, labels)}
    # a string where a number belongs (a broken capture) is skipped the same way
    data = dict(ks.data, hits="n/a")
    assert set(full) - set(collect(Kstat("zfs", 0, "arcstats", "misc", data=data))) == {
        ("illumos_zfs_arc_hits_total", ())
    }


def test_no_arcstats_no_families() -> None:
    assert collect() == {}


def test_arc_and_pool_metrics_do_not_claim_to_be_zil() -> None:
    # illumos has no ZIL kstat: ZIL figures come from a D script, never from here.
    for collector in (ZfsArcCollector, ZfsPoolCollector):
        for spec in collector.specs:
            assert "zil" not in spec.name
            assert "zil" not in " ".join(spec.labels)
    assert "No ZIL figures" in ZfsArcCollector.description
    assert "ZIL writes included and not separated" in ZfsPoolCollector.description


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_imported_arcstats_scrape_passes_promtool(samples_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "arc.bundle"
    res = dtagent(
        "import-kstat",
        str(samples_dir / ILLUMOS_2015),
        str(samples_dir / OMNIOS),
        "--out",
        str(bundle),
    )
    assert res.returncode == 0, res.stderr
    out = dtagent("scrape", "--replay", str(bundle), "--frame", "1")
    assert out.returncode == 0, out.stderr
    assert "illumos_zfs_arc_hits_total 13655303985" in out.stdout
    assert 'illumos_zfs_arcstats_value{field="l2_rebuild_success"}' in out.stdout
    check = subprocess.run(
        ["promtool", "check", "metrics"],
        input=out.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr
