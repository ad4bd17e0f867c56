"""`kstat` text dumps, the real ones in tests/fixtures/samples among them, become kstats."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dtagent.kstat_text import parse
from dtagent.snapshot import KSTAT_TYPE_IO, KstatSnapshot

KSTAT_SAMPLES = {
    # file: (kstats, statistics) found in it
    "kstat_p_caps_cpucaps_smartos.txt": (2, 24),
    "kstat_p_caps_cpucaps_smartos_2.txt": (1, 12),
    "kstat_p_memory_cap_global_rss.txt": (1, 1),
    "kstat_p_memory_cap_smartos_ngz.txt": (1, 12),
    "kstat_p_zfs_arcstats_illumos_partial.txt": (1, 25),
    "kstat_p_manpage_example.txt": (1, 3),
    "kstat_link_net0_smartos_ngz_partial.txt": (1, 19),
    "omnios_kstat_link_vnic_decoded.txt": (1, 21),
    "omnios_kstat_memory_cap_decoded.txt": (1, 12),
    "omnios_kstat_zfs_arcstats_decoded.txt": (1, 99),
    "omnios_kstat_zones_zone_misc_decoded.txt": (1, 15),
    "omnios_ngz_kstat_headers_decoded.txt": (56, 0),
}


def load(samples_dir: Path, name: str) -> KstatSnapshot:
    with open(samples_dir / name, encoding="utf-8") as fh:
        return KstatSnapshot(parse(fh).kstats)


def test_every_kstat_sample_is_read(samples_dir: Path) -> None:
    for name, (kstats, stats) in KSTAT_SAMPLES.items():
        snap = load(samples_dir, name)
        assert (len(snap), sum(len(k.data) for k in snap)) == (kstats, stats), name


def test_memory_cap_p_dump_keeps_full_zonename_and_class(samples_dir: Path) -> None:
    snap = load(samples_dir, "kstat_p_memory_cap_smartos_ngz.txt")
    ks = snap.get("memory_cap", 28, "962bc668-09d5-c087-b16f-d5aa6e")
    assert ks is not None
    assert ks.ks_class == "zone_memory_cap"
    assert ks.data["zonename"] == "962bc668-09d5-c087-b16f-d5aa6e88d042"
    assert ks.data["physcap"] == 17179869184
    assert ks.crtime == 10873164522118092
    assert ks.snaptime == 46219261755143285


def test_decoded_types_and_sentinels(samples_dir: Path) -> None:
    snap = load(samples_dir, "omnios_kstat_memory_cap_decoded.txt")
    ks = snap.get("memory_cap", 7, "serv-wf")
    assert ks is not None
    assert ks.data["swapcap"] == 18446744073709551615
    assert ks.data["physcap"] == 17592186040320
    assert ks.str_stat("zonename") == "serv-wf"


def test_headers_listing_gives_types(samples_dir: Path) -> None:
    snap = load(samples_dir, "omnios_ngz_kstat_headers_decoded.txt")
    rpool = snap.get("zfs", 0, "rpool")
    assert rpool is not None and rpool.ks_type == KSTAT_TYPE_IO and rpool.ks_class == "disk"


def test_human_format_block(samples_dir: Path) -> None:
    snap = load(samples_dir, "kstat_link_net0_smartos_ngz_partial.txt")
    ks = snap.get("link", 0, "net0")
    assert ks is not None and ks.ks_class == "net"
    assert ks.data["obytes64"] == 25407245
    assert "rbytes64" not in ks.data  # the excerpt is cut off there


def test_io_kstat_detected_from_fields() -> None:
    fields = "nread nwritten reads writes wtime wlentime wlastupdate rtime rlentime rlastupdate"
    lines = [f"zfs:0:zones:{f}\t{i}" for i, f in enumerate([*fields.split(), "wcnt", "rcnt"])]
    (ks,) = parse(lines).kstats
    assert ks.ks_type == KSTAT_TYPE_IO and ks.data["rlentime"] == 8


def test_garbage_is_skipped_not_guessed() -> None:
    res = parse(["$ kstat -p", "hello world", "a:b:c:d\t1", "caps:1:x:value\t7"])
    assert [(k.module, k.data) for k in res.kstats] == [("caps", {"value": 7})]
    assert [n for n, _ in res.skipped] == [1, 2, 3]


names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@given(
    st.dictionaries(
        names,
        st.one_of(
            st.integers(min_value=0, max_value=2**64 - 1),
            st.from_regex(r"[a-z][a-z0-9-]{0,35}", fullmatch=True),
        ),
        min_size=1,
    ),
    names,
    st.integers(min_value=0, max_value=9999),
)
def test_p_format_round_trip(stats: dict[str, object], module: str, instance: int) -> None:
    lines = [
        f"{module}:{instance}:ks_{module}:{k}\t{v}"
        for k, v in sorted(stats.items())
        if k not in ("class", "crtime", "snaptime")
    ]
    res = parse(lines)
    expected = {k: v for k, v in stats.items() if k not in ("class", "crtime", "snaptime")}
    if not expected:
        assert res.kstats == []
        return
    (ks,) = res.kstats
    assert ks.data == expected
