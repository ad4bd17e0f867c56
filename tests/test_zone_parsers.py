"""Parsers of vmadm list -p, zoneadm list -cp and zfs list -Hp: real lines, the stand-in
commands' output, truncation and garbage, and property tests (hypothesis)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.parsers.zones import (
    VMADM_ARGV,
    ZONEADM_ARGV,
    DatasetEntry,
    ZoneEntry,
    parse_prctl_zones,
    parse_vmadm_list,
    parse_zfs_list,
    parse_zoneadm_list,
    zfs_list_argv,
)
from tests.test_zone_support import FAKEBIN, fake_env


def test_zoneadm_real_smartos_lines(samples_dir: Path) -> None:
    lines = [
        ln
        for ln in (samples_dir / "zoneadm_list_pc_smartos.txt").read_text().splitlines()
        if ln and not ln.startswith("#") and ln != "..."
    ]
    parsed = parse_zoneadm_list("\n".join(lines) + "\n")
    assert not parsed.bad
    by_name = {z.zonename: z for z in parsed.rows}
    assert by_name["global"].zoneid == 0 and by_name["global"].brand == "liveimg"
    z = by_name["dc5cbce7-798a-4bc8-bdc5-61b4be00a22e"]
    assert (z.zoneid, z.state, z.brand) == (21, "running", "joyent-minimal")
    kvm = by_name["7970c690-1738-4e58-a04f-8ce4ea8ebfca"]
    assert (kvm.zoneid, kvm.state, kvm.brand) == (None, "installed", "kvm")
    assert by_name["c0f63bf1-aa36-4c78-8c3c-a9cfe3b0001e"].zoneid == 1


def test_zoneadm_upstream_seven_fields_and_escaped_zonepath() -> None:
    text = "0:global:running:/::ipkg:shared\n-:web:installed:/zones/a\\:b:u-1:lipkg:excl\n"
    parsed = parse_zoneadm_list(text)
    assert not parsed.bad
    assert parsed.rows[1] == ZoneEntry(
        "web", None, "installed", "lipkg", "u-1", zonepath="/zones/a:b"
    )  # the escaped ":" read back


def test_prctl_of_several_zones_by_heading_first_privileged_value_and_no_half_line() -> None:
    """prctl.c print_rctls -P: a heading per operand, raw values; a truncated last line
    is refused, not read as a smaller number."""
    text = (
        "zone: 5: web\n"
        "zone.cpu-shares usage 3 - - -\n"
        "zone.cpu-shares privileged 200 - none -\n"
        "zone.max-lwps usage 120 - - -\n"
        "zone.max-lwps privileged 2000 - deny -\n"
        "zone.max-lwps privileged 3000 - deny -\n"
        "\n"
        "zone: 6: db\n"
        "zone.cpu-shares privileged many - none -\n"
        "zone.max-lwps privileged 40"
    )
    zones, bad = parse_prctl_zones(text)
    assert zones == {"web": {"zone.cpu-shares": 200, "zone.max-lwps": 2000}, "db": {}}
    assert bad == ["zone.max-lwps privileged 40", "zone.cpu-shares privileged many - none -"]
    assert parse_prctl_zones("zone.max-lwps privileged 1 - deny -\n") == (
        {}, ["zone.max-lwps privileged 1 - deny -"]
    )  # fmt: skip  (a value before any heading belongs to no zone)


def test_vmadm_alias_keeps_its_colons_and_empty_fields() -> None:
    text = (
        "962bc668-09d5-c087-b16f-d5aa6e88d042:962bc668-09d5-c087-b16f-d5aa6e88d042:28:"
        "running:joyent:1b2c3d4e-0000-4000-8000-000000000001:web:01 (db: primary)\n"
        "7970c690-1738-4e58-a04f-8ce4ea8ebfca:7970c690-1738-4e58-a04f-8ce4ea8ebfca::"
        "stopped:kvm::\n"
    )
    parsed = parse_vmadm_list(text)
    assert not parsed.bad
    web, kvm = parsed.rows
    assert web.zoneid == 28 and web.alias == "web:01 (db: primary)"
    assert web.image_uuid == "1b2c3d4e-0000-4000-8000-000000000001"
    assert (kvm.zoneid, kvm.state, kvm.alias, kvm.image_uuid) == (None, "stopped", "", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a:a:1:running:joyent\n", "fields"),
        ("a:a:x1:running:joyent::\n", "zone id"),
        ("a:a:1:RUNNING!:joyent::\n", "bad zone name or state"),
        (":bad name:1:running:joyent::\n", "bad zone name or state"),
        ("a:a:1:running:joyent::alias-without-newline", "truncated"),
    ],
)
def test_vmadm_bad_lines_are_refused_not_guessed(text: str, reason: str) -> None:
    parsed = parse_vmadm_list("b:b:2:running:lx::ok\n" + text)
    assert [z.zonename for z in parsed.rows] == ["b"]
    assert len(parsed.bad) == 1 and reason in parsed.bad[0][2]


def test_zfs_list_quota_none_and_not_applicable() -> None:
    text = (
        "zones\t100\t900\t10\t0\n"
        "zones/z1\t50\t50\t40\t107374182400\n"
        "zones/z1-disk0\t10737418240\t900\t100\t-\n"
    )
    parsed = parse_zfs_list(text)
    assert not parsed.bad
    assert parsed.rows == [
        DatasetEntry("zones", 100, 900, 10, None),
        DatasetEntry("zones/z1", 50, 50, 40, 107374182400),
        DatasetEntry("zones/z1-disk0", 10737418240, 900, 100, None),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "zones/z1\t50\t50\t40",  # a field short
        "zones/z1\t5G\t50\t40\t0",  # not -p
        "zones/z1\t-50\t50\t40\t0",  # negative
        "zones/z1\t-\t50\t40\t0",  # used must be there
        "zones/z1\t99999999999999999999999\t50\t40\t0",  # over uint64
    ],
)
def test_zfs_list_bad_lines(line: str) -> None:
    parsed = parse_zfs_list("zones/ok\t1\t2\t3\t0\n" + line + "\n")
    assert [d.name for d in parsed.rows] == ["zones/ok"] and len(parsed.bad) == 1


def test_truncated_zfs_output_keeps_the_complete_lines() -> None:
    parsed = parse_zfs_list("zones/a\t1\t2\t3\t0\nzones/b\t1\t2")
    assert [d.name for d in parsed.rows] == ["zones/a"]
    assert parsed.bad and "truncated" in parsed.bad[0][2]


# --- the stand-in executables print what the parsers read -------------------------------

VMS: list[dict[str, object]] = [
    {"uuid": "global", "zonename": "global", "zoneid": 0, "state": "running", "brand": "liveimg"},
    {"uuid": "962bc668-09d5-c087-b16f-d5aa6e88d042", "zoneid": 28, "state": "running",
     "brand": "joyent", "image_uuid": "1b2c3d4e-0000-4000-8000-000000000001", "alias": "a:b"},
    {"uuid": "7970c690-1738-4e58-a04f-8ce4ea8ebfca", "state": "stopped", "brand": "kvm",
     "zonepath": "/zones/odd:path"},
]  # fmt: skip


def _run(argv: tuple[str, ...]) -> str:
    exe = FAKEBIN / argv[0]
    return subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, check=True).stdout


def test_stand_in_outputs_parse_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_env(
        monkeypatch,
        tmp_path,
        vms=VMS,
        datasets=[
            {"name": "zones", "used": 9, "available": 1, "referenced": 1, "quota": 0},
            {"name": "zones/x", "used": 5, "available": 1, "referenced": 1, "quota": 6},
        ],
    )
    vm = parse_vmadm_list(_run(VMADM_ARGV))
    assert not vm.bad and [z.alias for z in vm.rows] == ["", "a:b"]  # sorted by uuid
    za = parse_zoneadm_list(_run(ZONEADM_ARGV))
    assert not za.bad and za.rows[0].zonename == "global"
    assert {z.zonename: z.state for z in za.rows}["7970c690-1738-4e58-a04f-8ce4ea8ebfca"] == (
        "installed"
    )
    zl = parse_zfs_list(_run(zfs_list_argv("zones")))
    assert not zl.bad and zl.rows[1] == DatasetEntry("zones/x", 5, 1, 1, 6)


# --- property tests ---------------------------------------------------------------------

zonenames = st.from_regex(r"\A[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}\Z", fullmatch=True)
states = st.sampled_from(["running", "stopped", "installed", "configured", "provisioning"])
plain = st.text(st.characters(blacklist_characters=":\n\r", blacklist_categories=("Cs",)),
                max_size=20).map(str.strip)  # fmt: skip
aliases = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
                  max_size=40).map(str.rstrip)  # fmt: skip
zone_rows = st.lists(
    st.tuples(zonenames, st.one_of(st.none(), st.integers(0, 8191)), states, plain, plain, aliases),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(zone_rows)
def test_vmadm_roundtrip(rows: list[tuple[str, int | None, str, str, str, str]]) -> None:
    text = "".join(
        ":".join((name, name, "" if zid is None else str(zid), state, brand, image, alias))
        .rstrip()  # vmadm rtrims the line
        + "\n"
        for name, zid, state, brand, image, alias in rows
    )
    parsed = parse_vmadm_list(text)
    assert not parsed.bad
    got = [(z.zonename, z.zoneid, z.state, z.brand, z.image_uuid, z.alias) for z in parsed.rows]
    assert got == [(n, zid, s, b, i, a.rstrip()) for n, zid, s, b, i, a in rows]


brands = st.from_regex(r"\A[a-z0-9-]{0,16}\Z", fullmatch=True)
paths = st.text(st.characters(blacklist_characters="\n\r\\", blacklist_categories=("Cs",)),
                max_size=30)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(zonenames, st.one_of(st.none(), st.integers(0, 8191)), states, paths,
                          brands, st.booleans()), max_size=10))  # fmt: skip
def test_zoneadm_roundtrip(rows: list[tuple[str, int | None, str, str, str, bool]]) -> None:
    text = "".join(
        f"{'-' if zid is None else zid}:{name}:{state}:{path.replace(':', chr(92) + ':')}:"
        f"uuid:{brand}:excl" + (":7" if joyent else "") + "\n"
        for name, zid, state, path, brand, joyent in rows
    )
    parsed = parse_zoneadm_list(text)
    assert not parsed.bad
    assert [(z.zonename, z.zoneid, z.state, z.brand) for z in parsed.rows] == [
        (n, zid, s, b) for n, zid, s, _p, b, _j in rows
    ]


u64 = st.integers(0, (1 << 64) - 1)
dataset_names = st.from_regex(r"\Azones(/[a-zA-Z0-9][-_.:a-zA-Z0-9]{0,40}){0,3}\Z", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(dataset_names, u64, u64, u64, st.one_of(u64, st.just(-1))),
                max_size=15))  # fmt: skip
def test_zfs_roundtrip(rows: list[tuple[str, int, int, int, int]]) -> None:
    text = "".join(
        f"{n}\t{u}\t{a}\t{r}\t{'-' if q == -1 else q}\n" for n, u, a, r, q in rows
    )
    parsed = parse_zfs_list(text)
    assert not parsed.bad
    assert parsed.rows == [
        DatasetEntry(n, u, a, r, None if q in (-1, 0) else q) for n, u, a, r, q in rows
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise_and_account_for_every_line(text: str) -> None:
    nonblank = [ln for ln in text.split("\n") if ln.strip()]
    for parse in (parse_vmadm_list, parse_zoneadm_list, parse_zfs_list):
        parsed = parse(text)  # type: ignore[operator]
        assert len(parsed.rows) + len(parsed.bad) == len(nonblank)


@settings(max_examples=100, deadline=None)
@given(zone_rows.filter(bool), st.data())
def test_any_truncation_keeps_only_whole_lines(
    rows: list[tuple[str, int | None, str, str, str, str]], data: st.DataObject
) -> None:
    text = "".join(
        ":".join((n, n, "" if z is None else str(z), s, b, i, a)).rstrip() + "\n"
        for n, z, s, b, i, a in rows
    )
    cut = data.draw(st.integers(0, len(text)))
    parsed = parse_vmadm_list(text[:cut])
    whole = text[:cut].count("\n")
    assert len(parsed.rows) == whole
    assert [z.zonename for z in parsed.rows] == [r[0] for r in rows[:whole]]


def test_parse_memo_parses_an_output_again_only_when_its_text_changes() -> None:
    from dtagent.parsers import ParseMemo

    texts: list[str] = []

    def parse(text: str) -> object:
        texts.append(text)
        return object()

    memo = ParseMemo(parse)
    out = "0:global:running:/::joyent:shared:0\n"
    first = memo(out)
    assert memo(out) is first  # the same output string: kept
    copy = (out + " ")[:-1]
    assert copy is not out
    assert memo(copy) is first and len(texts) == 1  # the same text: kept
    changed = out.replace("running", "ready")
    assert memo(changed) is not first and len(texts) == 2
    # keyed (one dladm per zone): a key not asked for during a whole collection goes
    memo.rotate()
    memo(out, key="z1")
    memo(out, key="z2")
    memo.rotate()
    memo(out, key="z1")
    memo.rotate()
    assert len(texts) == 4
    memo(out, key="z1")  # asked for in the collection before: still kept
    memo(out, key="z2")  # not asked for since two rotations: parsed again
    assert len(texts) == 5
