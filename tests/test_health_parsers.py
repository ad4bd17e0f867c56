"""Parsers of zpool list/status, svcs and fmadm/fmstat: real outputs (tests/fixtures, each
file names its public source), truncated and unseen text, and any-input properties."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.parsers.fma import parse_fmadm_faulty, parse_fmstat
from dtagent.parsers.smf import parse_svcs
from dtagent.parsers.vms import parse_vmadm_lookup
from dtagent.parsers.zpool import (
    human_number,
    parse_zpool_list,
    parse_zpool_status,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> str:
    """A fixture's text without its leading '# source' comment lines."""
    text = (FIXTURES / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("# "))


def test_resilver_in_progress_illumos() -> None:
    parsed = parse_zpool_status(fixture("zpool/status_resilver_illumos.txt"))
    assert not parsed.bad
    (pool,) = parsed.pools
    assert (pool.name, pool.state, pool.data_errors, pool.complete) == ("big", "ONLINE", 0, True)
    assert pool.scan is not None
    assert (pool.scan.function, pool.scan.state, pool.scan.progress) == (
        "resilver",
        "in_progress",
        0.0,
    )
    assert [(v.name, v.parent) for v in pool.vdevs] == [
        ("big", ""),
        ("mirror-0", "big"),
        ("c2t0d0", "mirror-0"),
        ("c2t1d0", "mirror-0"),
    ]


def test_finished_scrub_has_its_end_time_and_errors() -> None:
    (pool,) = parse_zpool_status(fixture("zpool/status_scrubbed_illumos.txt")).pools
    assert pool.scan is not None
    assert (pool.scan.function, pool.scan.state, pool.scan.errors) == ("scrub", "finished", 0)
    assert pool.scan.ended is not None and pool.scan.repaired_bytes == 0


def test_scrub_in_progress_old_format_that_is_repairing() -> None:
    parsed = parse_zpool_status(fixture("zpool/status_scrub_repairing_openzfs.txt"))
    (pool,) = parsed.pools
    assert pool.scan is not None
    assert pool.scan.state == "in_progress" and pool.scan.progress == 0.3593
    assert pool.scan.repaired_bytes == 2.5 * (1 << 20)
    assert sum(v.checksum_errors or 0 for v in pool.vdevs) == 6
    assert not pool.complete  # the published output stops inside the tree


def test_degraded_pool_after_a_scrub_that_found_errors_truncated() -> None:
    # SmartOS: a scrub repaired 90.8M and a disk is DEGRADED with 542 checksum errors;
    # the output is cut in the middle of the next vdev line.
    parsed = parse_zpool_status(fixture("zpool/status_degraded_scrub_errors_smartos.txt"))
    (pool,) = parsed.pools
    assert pool.state == "DEGRADED"
    assert pool.scan is not None and pool.scan.repaired_bytes == 90.8 * (1 << 20)
    assert [(v.name, v.state, v.checksum_errors) for v in pool.vdevs] == [
        ("zones", "DEGRADED", 0),
        ("raidz1-0", "DEGRADED", 0),
        ("c0t0d0", "DEGRADED", 542),
    ]
    assert [reason for _, _, reason in parsed.bad] == [
        "truncated (no newline at the end of the output)"
    ]


def test_faulted_device_in_an_online_pool() -> None:
    (pool,) = parse_zpool_status(fixture("zpool/status_faulted_device_freebsd.txt")).pools
    bad = [v for v in pool.vdevs if v.state != "ONLINE"]
    assert [(v.name, v.read_errors, v.write_errors, v.note) for v in bad] == [
        ("ada0p3", 4, 372, "too many errors")
    ]
    assert pool.scan is None  # this output has no scan line at all


def test_unseen_old_scan_line_keeps_everything_else() -> None:
    parsed = parse_zpool_status(fixture("zpool/status_unavail_solaris_old.txt"))
    (pool,) = parsed.pools
    assert pool.state == "UNAVAIL" and pool.scan is None
    assert pool.data_errors == 3  # three files listed with permanent errors
    assert [v.name for v in pool.vdevs] == ["tank", "c1t0d0", "c1t1d0"]
    assert [ln for ln, _, _ in parsed.bad] == [6]


def test_canceled_scrub_and_resilvered_pool() -> None:
    (pool,) = parse_zpool_status(fixture("zpool/status_scrub_canceled_illumos.txt")).pools
    assert pool.scan is not None and pool.scan.state == "canceled"
    (vz,) = parse_zpool_status(fixture("zpool/status_degraded_resilvered_openzfs.txt")).pools
    assert vz.scan is not None and (vz.scan.function, vz.scan.state) == ("resilver", "finished")
    assert {v.parent for v in vz.vdevs} == {"", "vz", "mirror-0", "mirror-1", "mirror-2"}


def test_unseen_vdev_tree_shapes_are_refused_line_by_line() -> None:
    text = (
        "  pool: tank\n state: ONLINE\nconfig:\n\n"
        "\tNAME        STATE     READ WRITE CKSUM\n"
        "\ttank        ONLINE       0     0     0\n"
        "\t  draid2:11d:15c:2s-0 ONLINE 0 0 0\n"
        "\t   oddindent ONLINE 0 0 0\n"
        "\t    d1      ONLINE       0     0\n"
        "\t    d2      ONLINE    1.2K     0     0\n"
        "\tspecial\n"
        "\t  mirror-1  ONLINE       0     0     0\n"
        "\terrors: ???\n"
        "errors: No known data errors\n"
    )
    parsed = parse_zpool_status(text)
    (pool,) = parsed.pools
    assert [(v.name, v.parent, v.role) for v in pool.vdevs] == [
        ("tank", "", "data"),
        ("draid2:11d:15c:2s-0", "tank", "data"),
        ("d2", "draid2:11d:15c:2s-0", "data"),
        ("mirror-1", "", "special"),
    ]
    assert pool.vdevs[2].read_errors == 1.2 * 1024
    assert len(parsed.bad) == 3 and pool.complete


def test_zpool_list_exact_values() -> None:
    text = (
        "big\t3980232092549\t2957686278717\t1029718409216\t2\t74\t1.00\tONLINE\n"
        "rpool\t213674622976\t61310658150\t152471339008\t-\t28\t1.00\tDEGRADED\n"
        "bad\tx\t1\t1\t1\t1\t1\tONLINE\n"
        "short\t1\t2\n"
    )
    parsed = parse_zpool_list(text)
    assert [(r.name, r.capacity, r.fragmentation, r.health) for r in parsed.rows] == [
        ("big", 0.74, 0.02, "ONLINE"),
        ("rpool", 0.28, None, "DEGRADED"),
    ]
    assert [ln for ln, _, _ in parsed.bad] == [3, 4]


def test_human_numbers() -> None:
    assert human_number("243M") == 243 * (1 << 20)
    assert human_number("0") == 0 and human_number("2.56T") == 2.56 * (1 << 40)
    assert human_number("0B") == 0 and human_number("lots") is None


def test_svcs_real_zones() -> None:
    parsed = parse_svcs(fixture("smf/svcs_zones_illumos.txt"))
    assert not parsed.bad and len(parsed.rows) == 19
    maint = [r for r in parsed.rows if r.state == "maintenance"]
    assert [(r.zonename, r.fmri) for r in maint] == [
        ("cube-pkgsrc", "svc:/system/filesystem/local:default")
    ]
    assert {r.state for r in parsed.rows} == {"maintenance", "online", "disabled", "legacy_run"}


def test_svcs_transition_unknown_state_and_garbage() -> None:
    text = (
        "global  online*  svc:/system/cron:default\n"
        "global  wedged   svc:/system/x:default\n"
        "global  online\n"
        "global  online   /not/an/fmri\n"
        "z1      offline  svc:/a:b"
    )
    parsed = parse_svcs(text)
    assert [(r.state, r.transitioning, r.raw_state) for r in parsed.rows] == [
        ("online", True, "online"),
        ("unknown", False, "wedged"),
    ]
    assert sorted(ln for ln, _, _ in parsed.bad) == [3, 4, 5]


def test_fmadm_faulty_records() -> None:
    parsed = parse_fmadm_faulty(fixture("fma/fmadm_faulty_composed.txt"))
    assert not parsed.bad
    assert [(f.msgid, f.classes, f.resource_kind) for f in parsed.faults] == [
        ("ZFS-8000-GH", ["fault.fs.zfs.vdev.checksum"], "zfs"),
        ("SMF-8000-YX", ["defect.sunos.smf.svc.maintenance"], "svc"),
    ]
    assert parse_fmadm_faulty("").faults == []


def test_fmadm_cut_before_its_class_keeps_the_problem() -> None:
    text = fixture("fma/fmadm_faulty_composed.txt")
    cut = text[: text.index("Fault class")]
    (fault,) = parse_fmadm_faulty(cut).faults
    assert fault.classes == [] and fault.resource_kind == "unknown"


def test_fmstat_real() -> None:
    parsed = parse_fmstat(fixture("fma/fmstat_illumos.txt"))
    assert not parsed.bad and len(parsed.rows) == 22
    sw = next(r for r in parsed.rows if r.module == "software-diagnosis")
    assert (sw.received, sw.accepted, sw.open_cases, sw.solved) == (4, 4, 2, 4)
    assert parse_fmstat("garbage\n").bad


TEXT = st.lists(
    st.sampled_from(["\n", "\t", "  ", ":", "pool: p", " state: ", "  scan: ", "config:",
                     "NAME STATE READ WRITE CKSUM", "ONLINE", "0", "1.5K", "spares", "errors:",
                     "scrub in progress since", "% done", "svc:/a:b", "global", "x", "*",
                     "[", "]", "{", "}", '"brand": "kvm"', ",", '"vcpus": -1']),
    max_size=60,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_any_text_never_raises(text: str) -> None:
    parse_zpool_status(text)
    parse_zpool_list(text)
    parse_svcs(text)
    parse_fmadm_faulty(text)
    parse_fmstat(text)
    parse_vmadm_lookup(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(fixture("zpool/status_resilver_illumos.txt"))))
def test_any_cut_of_a_real_status_reads_a_prefix(cut: int) -> None:
    text = fixture("zpool/status_resilver_illumos.txt")
    full = parse_zpool_status(text).pools[0]
    parsed = parse_zpool_status(text[:cut])
    for pool in parsed.pools:
        assert pool.vdevs == full.vdevs[: len(pool.vdevs)]
        assert pool.state in ("", full.state)
