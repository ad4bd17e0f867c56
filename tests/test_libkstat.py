"""The ctypes libkstat binding, driven through a C stand-in built from the illumos layouts.

tests/native/libkstat_stub.c exports the libkstat ABI with the LP64 structs of
illumos-gate usr/src/uts/common/sys/kstat.h and usr/src/lib/libkstat/kstat.h, and a
stub_* control API that plays the kernel: tests add kstats, change values, halt zones
between (or during) reads, and inject read errors. The binding under test loads the
same shared object, so both sides see one fixture.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtagent.snapshot import KSTAT_TYPE_IO, KSTAT_TYPE_NAMED, KSTAT_TYPE_TIMER, StatRow
from dtagent.sources import libkstat
from dtagent.sources.libkstat import (
    KstatError,
    KstatReader,
    LiveKstats,
    kstat_ctl_t,
    kstat_io_t,
    kstat_named_t,
    kstat_source_available,
    kstat_t,
    kstat_timer_t,
)
from tests.native import build_shared
from tests.native.kstat_stub import prototypes

KSTAT_TYPE_RAW = 0
KSTAT_TYPE_INTR = 2

# A SmartOS zone name is a 36-character UUID; kstat names keep 30 characters.
UUID_A = "962bc668-09d5-c087-b16f-d5aa6e2ef7c1"
UUID_B = "4f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
UUID_C = "0a0b0c0d-1111-2222-3333-444455556666"

# sys/kstat.h, libkstat kstat.h: sizes and offsets (LP64).
REFERENCE: dict[str, dict[str | None, int]] = {
    "kstat_ctl_t": {None: 24, "kc_chain_id": 0, "kc_chain": 8, "kc_kd": 16},
    "kstat_t": {
        None: 184, "ks_crtime": 0, "ks_next": 8, "ks_kid": 16, "ks_module": 20,
        "ks_resv": 51, "ks_instance": 52, "ks_name": 56, "ks_type": 87, "ks_class": 88,
        "ks_flags": 119, "ks_data": 120, "ks_ndata": 128, "ks_data_size": 136,
        "ks_snaptime": 144, "ks_update": 152, "ks_private": 160, "ks_snapshot": 168,
        "ks_lock": 176,
    },
    "kstat_named_t": {
        None: 48, "name": 0, "data_type": 31, "value": 32, "value.c": 32,
        "value.i32": 32, "value.ui32": 32, "value.str": 32, "value.str.addr": 32,
        "value.str.addr.ptr": 32, "value.str.addr.__pad": 32, "value.str.len": 40,
        "value.i64": 32, "value.ui64": 32, "value.l": 32, "value.ul": 32,
        "value.ll": 32, "value.ull": 32, "value.f": 32, "value.d": 32,
    },
    "kstat_io_t": {
        None: 80, "nread": 0, "nwritten": 8, "reads": 16, "writes": 20, "wtime": 24,
        "wlentime": 32, "wlastupdate": 40, "rtime": 48, "rlentime": 56,
        "rlastupdate": 64, "wcnt": 72, "rcnt": 76,
    },
    "kstat_timer_t": {
        None: 80, "name": 0, "resv": 31, "num_events": 32, "elapsed_time": 40,
        "min_time": 48, "max_time": 56, "start_time": 64, "stop_time": 72,
    },
}

CTYPES: dict[str, type[ctypes.Structure]] = {
    "kstat_ctl_t": kstat_ctl_t,
    "kstat_t": kstat_t,
    "kstat_named_t": kstat_named_t,
    "kstat_io_t": kstat_io_t,
    "kstat_timer_t": kstat_timer_t,
}


# ---- the stand-in -------------------------------------------------------------------


@pytest.fixture(scope="session")
def stub_path() -> Path:
    return build_shared("libkstat_stub.c")


class Kernel:
    """The stand-in's fixture, in Python terms (strings in, handles out)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def named(self, module: str, instance: int, name: str, klass: str, **stats: object) -> int:
        """A named kstat; int stats are UINT64, str stats STRING, float stats DOUBLE."""
        h: int = self.lib.stub_add_named(module.encode(), instance, name.encode(), klass.encode())
        for stat, value in stats.items():
            if isinstance(value, str):
                self.lib.stub_add_stat_string(h, stat.encode(), value.encode())
            elif isinstance(value, float):
                self.lib.stub_add_stat_double(h, stat.encode(), value)
            else:
                assert isinstance(value, int)
                self.lib.stub_add_stat_uint64(h, stat.encode(), value)
        return h

    def kstat(self, module: str, instance: int, name: str, klass: str, ks_type: int) -> int:
        h: int = self.lib.stub_add_kstat(
            module.encode(), instance, name.encode(), klass.encode(), ks_type
        )
        return h

    def zone(self, zoneid: int, uuid: str, rss: int) -> None:
        """The kstats one SmartOS zone has (illumos-joyent usr/src/uts/common/os/zone.c),
        keyed by a cut name."""
        cut = uuid[:30]
        self.named("memory_cap", zoneid, cut, "zone_memory_cap", rss=rss,
                   physcap=2**30, zonename=uuid)
        self.named("zones", zoneid, cut, "zone_misc", nsec_user=zoneid * 1000,
                   zonename=uuid)
        self.named("caps", zoneid, f"cpucaps_zone_{zoneid}", "zone_caps", usage=zoneid,
                   zonename=uuid)

    def halt(self, zoneid: int, uuid: str) -> None:
        cut = uuid[:30].encode()
        assert self.lib.stub_remove(b"memory_cap", zoneid, cut) == 0
        assert self.lib.stub_remove(b"zones", zoneid, cut) == 0
        assert self.lib.stub_remove(b"caps", zoneid, f"cpucaps_zone_{zoneid}".encode()) == 0

    def reads(self, module: str | None = None) -> int:
        n: int = self.lib.stub_read_count(module.encode() if module is not None else None)
        return n


@pytest.fixture(scope="session")
def stub_lib(stub_path: Path) -> ctypes.CDLL:
    return prototypes(ctypes.CDLL(str(stub_path)))


@pytest.fixture
def kernel(stub_lib: ctypes.CDLL) -> Iterator[Kernel]:
    stub_lib.stub_reset()
    yield Kernel(stub_lib)
    stub_lib.stub_reset()


@pytest.fixture
def reader(stub_path: Path, kernel: Kernel) -> Iterator[KstatReader]:
    with KstatReader(str(stub_path)) as r:
        yield r


# ---- layouts ------------------------------------------------------------------------


def _ctypes_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """(dotted path, offset, size) of every field, nested unions and structs included."""
    for name, ftype, *_ in cls._fields_:  # type: ignore[attr-defined]
        desc = getattr(cls, name)
        path = prefix + name
        yield path, desc.offset, desc.size
        if isinstance(ftype, type) and issubclass(ftype, ctypes.Structure | ctypes.Union):
            for sub, off, size in _ctypes_fields(ftype, path + "."):
                yield sub, desc.offset + off, size


def _c_layout(lib: ctypes.CDLL) -> dict[str, dict[str | None, tuple[int, int]]]:
    out: dict[str, dict[str | None, tuple[int, int]]] = {}
    for i in range(lib.stub_layout_count()):
        typ = lib.stub_layout_type(i).decode()
        raw = lib.stub_layout_field(i)
        field = raw.decode() if raw is not None else None
        out.setdefault(typ, {})[field] = (lib.stub_layout_offset(i), lib.stub_layout_size(i))
    return out


def test_struct_layouts_match_the_c_compiler_and_the_reference(stub_lib: ctypes.CDLL) -> None:
    c_layout = _c_layout(stub_lib)
    for typ, cls in CTYPES.items():
        c_fields = c_layout[typ]
        assert ctypes.sizeof(cls) == c_fields[None][0] == REFERENCE[typ][None], typ
        py_fields = {path: (off, size) for path, off, size in _ctypes_fields(cls)}
        # The same fields on both sides, at the same offsets with the same sizes.
        assert set(py_fields) == {f for f in c_fields if f is not None}, typ
        for path, (off, size) in py_fields.items():
            assert (off, size) == c_fields[path], f"{typ}.{path}"
            assert off == REFERENCE[typ][path], f"{typ}.{path}"
    assert ctypes.alignment(kstat_named_t) == 8
    assert kstat_named_t.value.size == 16


# ---- decoding -----------------------------------------------------------------------


def test_named_kstat_of_every_data_type(reader: KstatReader, kernel: Kernel) -> None:
    lib = kernel.lib
    h = kernel.named("test", 3, "types", "misc")
    lib.stub_add_stat_char(h, b"char_full", b"abcdefghijklmnop", 16)  # no NUL at all
    lib.stub_add_stat_char(h, b"char_short", b"ab", 2)
    lib.stub_add_stat_int32(h, b"int32", -5)
    lib.stub_add_stat_uint32(h, b"uint32", 4_000_000_000)
    lib.stub_add_stat_int64(h, b"int64", -(2**40))
    lib.stub_add_stat_uint64(h, b"uint64", 2**64 - 1)
    lib.stub_add_stat_float(h, b"float", 1.5)
    lib.stub_add_stat_double(h, b"double", 0.1)
    lib.stub_add_stat_string(h, b"string", b"hello, kstat")
    lib.stub_add_stat_string(h, b"unset", None)
    lib.stub_add_stat_uint64(h, b"a_name_of_thirty_characters_xx", 7)
    lib.stub_add_blank(h)
    lib.stub_add_blank(h)
    lib.stub_set_hrtime(123_456_789_000)

    ks = reader.snapshot().get("test", 3, "types")
    assert ks is not None
    assert (ks.module, ks.instance, ks.name, ks.ks_class, ks.ks_type) == (
        "test", 3, "types", "misc", KSTAT_TYPE_NAMED,
    )
    assert ks.snaptime == 123_456_789_000
    assert ks.crtime == 1_000_000_000  # the stub's clock when the kstat was created
    assert ks.data == {
        "char_full": "abcdefghijklmnop",
        "char_short": "ab",
        "int32": -5,
        "uint32": 4_000_000_000,
        "int64": -(2**40),
        "uint64": 2**64 - 1,
        "float": 1.5,
        "double": 0.1,
        "string": "hello, kstat",
        "unset": "",
        "a_name_of_thirty_characters_xx": 7,
    }  # and the two blank records are gone
    assert ks.int_stat("int32") == -5
    assert ks.str_stat("string") == "hello, kstat"


def test_zone_kstats_are_keyed_by_the_zonename_statistic(
    reader: KstatReader, kernel: Kernel
) -> None:
    kernel.zone(28, UUID_A, rss=512 * 2**20)
    snap = reader.snapshot()
    [ks] = snap.module("memory_cap")
    assert ks.name == UUID_A[:30]  # ks_name keeps 30 characters
    assert ks.str_stat("zonename") == UUID_A  # the string statistic keeps all 36
    assert ks.instance == 28
    assert ks.ks_class == "zone_memory_cap"
    assert ks.data == {"rss": 512 * 2**20, "physcap": 2**30, "zonename": UUID_A}
    assert [k.str_stat("zonename") for k in snap.klass("zone_misc")] == [UUID_A]


def test_kstats_of_one_layout_share_their_names_and_string_values(
    reader: KstatReader, kernel: Kernel
) -> None:
    """Every zone's memory_cap has the same records: each read is a StatRow of its
    values over one index for all of them, and a zone's name is one string for all
    its kstats, read after read. A layout with a repeated name stays a dict."""
    kernel.zone(28, UUID_A, rss=4096)
    kernel.zone(29, UUID_B, rss=8192)
    h = kernel.named("test", 0, "twice", "misc")
    kernel.lib.stub_add_stat_uint64(h, b"n", 1)
    kernel.lib.stub_add_stat_uint64(h, b"n", 2)
    first, second = reader.snapshot(), reader.snapshot()
    a, b = first.module("memory_cap")
    assert isinstance(a.data, StatRow) and isinstance(b.data, StatRow)
    assert (a.data, b.data) == (
        {"rss": 4096, "physcap": 2**30, "zonename": UUID_A},
        {"rss": 8192, "physcap": 2**30, "zonename": UUID_B},
    )
    assert a.data._index is b.data._index
    later = second.get("memory_cap", 28, UUID_A[:30])
    misc = second.get("zones", 28, UUID_A[:30])
    assert later is not None and misc is not None
    assert a.data["zonename"] is later.data["zonename"] is misc.data["zonename"]
    twice = second.get("test", 0, "twice")
    assert twice is not None and type(twice.data) is dict and twice.data == {"n": 2}


def test_io_kstat(reader: KstatReader, kernel: Kernel) -> None:
    h = kernel.kstat("zfs", 0, "rpool", "disk", KSTAT_TYPE_IO)
    values = [
        10_000_000_000, 20_000_000_000, 4_000_000_000, 12345,  # nread..writes
        -1, 2, 3, 4, 5, 6,  # the six hrtimes (signed)
        7, 4_294_967_295,  # wcnt, rcnt
    ]
    kernel.lib.stub_set_io(h, (ctypes.c_uint64 * 12)(*[v % 2**64 for v in values]))
    ks = reader.snapshot().get("zfs", 0, "rpool")
    assert ks is not None
    assert ks.ks_type == KSTAT_TYPE_IO and ks.ks_class == "disk"
    assert ks.data == dict(
        zip(
            ("nread", "nwritten", "reads", "writes", "wtime", "wlentime", "wlastupdate",
             "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt"),
            values,
            strict=True,
        )
    )


def test_timer_kstat(reader: KstatReader, kernel: Kernel) -> None:
    h = kernel.kstat("test", 0, "timers", "misc", KSTAT_TYPE_TIMER)
    times = (ctypes.c_int64 * 5)(900, 100, 500, 1_000, 1_900)
    kernel.lib.stub_add_timer(h, b"flush", 3, times)
    kernel.lib.stub_add_timer(h, b"second", 1, times)  # kstat(1M) reports the first only
    ks = reader.snapshot().get("test", 0, "timers")
    assert ks is not None and ks.ks_type == KSTAT_TYPE_TIMER
    assert ks.data == {
        "name": "flush", "num_events": 3, "elapsed_time": 900, "min_time": 100,
        "max_time": 500, "start_time": 1_000, "stop_time": 1_900,
    }


def test_raw_and_intr_kstats_are_skipped_without_being_read(
    reader: KstatReader, kernel: Kernel
) -> None:
    raw = kernel.kstat("unix", 0, "vminfo", "vm", KSTAT_TYPE_RAW)
    blob = struct.pack("<6Q", 1, 2, 3, 4, 5, 6)
    kernel.lib.stub_set_raw(raw, blob, len(blob))
    intr = kernel.kstat("unix", 0, "intr0", "controller", KSTAT_TYPE_INTR)
    intrs = struct.pack("<5I", 1, 2, 3, 4, 5)
    kernel.lib.stub_set_raw(intr, intrs, len(intrs))
    kernel.named("unix", 0, "system_misc", "misc", boot_time=1_700_000_000, ncpus=8)
    snap = reader.snapshot()
    assert [ks.name for ks in snap] == ["system_misc"]
    assert snap.get("unix", 0, "system_misc").data == {  # type: ignore[union-attr]
        "boot_time": 1_700_000_000, "ncpus": 8,
    }
    assert kernel.reads("unix") == 1  # raw and intr were never kstat_read


def test_only_the_requested_modules_are_read(stub_path: Path, kernel: Kernel) -> None:
    kernel.zone(1, UUID_A, rss=100)
    kernel.named("link", 0, "net0", "net", rbytes64=5)
    kernel.named("cpu", 0, "sys", "misc", cpu_ticks_idle=1)
    with LiveKstats(str(stub_path), {"memory_cap", "link"}) as live:  # the runtime's call
        snap = live.kstats()
        assert sorted(ks.module for ks in snap) == ["link", "memory_cap"]
        assert {ks.module for ks in live.snapshot(["zones"])} == {"zones"}
        assert {ks.module for ks in live.snapshot("zones")} == {"zones"}  # not z, o, n…
        assert len(live.snapshot(None)) == 5
    assert kernel.reads("cpu") == 1  # only by the snapshot(None)
    assert kernel.reads("caps") == 1
    assert kernel.reads("zones") == 3


# ---- the chain changing -------------------------------------------------------------


def test_chain_update_follows_zones_booting_and_halting(
    reader: KstatReader, kernel: Kernel
) -> None:
    lib = kernel.lib
    kernel.zone(1, UUID_A, rss=100)
    kernel.zone(2, UUID_B, rss=200)
    first = reader.snapshot({"memory_cap", "zones", "caps"})
    assert sorted(ks.str_stat("zonename") for ks in first.module("memory_cap")) == sorted(
        [UUID_A, UUID_B]
    )
    walks = reader.chain_walks

    # Unchanged chain: no walk, fresh values.
    lib.stub_set_hrtime(5_000_000_000)
    same = reader.snapshot({"memory_cap"})
    assert reader.chain_walks == walks
    assert {ks.snaptime for ks in same} == {5_000_000_000}

    # Zone 2 halts, zone 3 boots: libkstat frees zone 2's headers, appends zone 3's.
    kernel.halt(2, UUID_B)
    kernel.zone(3, UUID_C, rss=300)
    kcid_before = reader.chain_id
    second = reader.snapshot({"memory_cap", "zones", "caps"})
    assert reader.chain_walks == walks + 1
    assert reader.chain_id != kcid_before
    assert lib.stub_freed_headers() == 3  # and none of them was read after being freed
    by_zone = {ks.str_stat("zonename"): ks for ks in second.module("memory_cap")}
    assert sorted(by_zone) == sorted([UUID_A, UUID_C])
    assert by_zone[UUID_C].int_stat("rss") == 300
    assert by_zone[UUID_C].instance == 3
    assert second.get("zones", 2, UUID_B[:30]) is None
    assert len(second) == 6


def test_a_kstat_vanishing_mid_read_is_skipped(reader: KstatReader, kernel: Kernel) -> None:
    kernel.zone(1, UUID_A, rss=100)
    kernel.zone(2, UUID_B, rss=200)
    reader.snapshot()
    walks = reader.chain_walks
    # Zone 2's memory_cap goes away after the chain update: kstat_read gives ENXIO.
    assert kernel.lib.stub_remove_on_read(b"memory_cap", 2, UUID_B[:30].encode()) == 0
    snap = reader.snapshot()
    assert snap.get("memory_cap", 2, UUID_B[:30]) is None
    assert snap.get("memory_cap", 1, UUID_A[:30]) is not None
    assert snap.get("zones", 2, UUID_B[:30]) is not None  # the rest is still there
    assert len(snap) == 5
    assert (reader.vanished, reader.read_errors) == (1, 0)
    # The next call walks the new chain; the vanished header is never touched again.
    again = reader.snapshot()
    assert reader.chain_walks == walks + 1
    assert len(again) == 5
    assert kernel.lib.stub_freed_headers() == 1


def test_other_read_errors_skip_one_kstat(reader: KstatReader, kernel: Kernel) -> None:
    kernel.zone(1, UUID_A, rss=100)
    kernel.zone(2, UUID_B, rss=200)
    lib = kernel.lib
    assert lib.stub_fail_next_read(b"zones", 1, UUID_A[:30].encode(), errno.EIO) == 0
    snap = reader.snapshot()
    assert snap.get("zones", 1, UUID_A[:30]) is None
    assert len(snap) == 5
    assert (reader.read_errors, reader.vanished) == (1, 0)
    assert len(reader.snapshot()) == 6  # transient: back on the next read

    # EAGAIN (KSTAT_FLAG_INVALID) is retried inside libkstat; the caller never sees it.
    assert lib.stub_fail_next_read(b"zones", 2, UUID_B[:30].encode(), errno.EAGAIN) == 0
    snap = reader.snapshot()
    assert snap.get("zones", 2, UUID_B[:30]) is not None
    assert lib.stub_eagain_retries() == 1
    assert reader.read_errors == 1


def test_only_a_variable_size_kstat_may_grow(reader: KstatReader, kernel: Kernel) -> None:
    """libkstat grows ks_data on ENOMEM only for KSTAT_FLAG_VAR_SIZE / LONGSTRINGS
    kstats (kstat.c kstat_read); for any other the read fails with ENOMEM."""
    grows = kernel.named("zone_zfs", 5, "z", "zone_zfs", nread=1, zonename="short")
    kernel.lib.stub_set_flags(grows, libkstat.KSTAT_FLAG_VAR_SIZE)
    fixed = kernel.named("zone_zfs", 6, "y", "zone_zfs", nread=1, zonename="short")
    snap = reader.snapshot()
    assert snap.get("zone_zfs", 5, "z").data == {  # type: ignore[union-attr]
        "nread": 1, "zonename": "short",
    }
    for h in (grows, fixed):
        kernel.lib.stub_add_stat_string(h, b"comment", b"x" * 200)  # ks_data must grow
        kernel.lib.stub_set_stat_uint64(h, b"nread", 99)
    snap = reader.snapshot()
    ks = snap.get("zone_zfs", 5, "z")
    assert ks is not None
    assert ks.data == {"nread": 99, "zonename": "short", "comment": "x" * 200}
    assert snap.get("zone_zfs", 6, "y") is None
    assert reader.read_errors == 1 and reader.health().errors == 1


def test_a_kstat_stuck_invalid_is_skipped_after_a_bounded_wait(
    reader: KstatReader, kernel: Kernel
) -> None:
    """libkstat's kstat_read retries EAGAIN every 100 ms for ever (kstat.c); the
    reader waits invalid_wait, skips the kstat, and later tries it once per read."""
    kernel.zone(1, UUID_A, rss=100)
    kernel.zone(2, UUID_B, rss=200)
    stuck = (b"zones", 2, UUID_B[:30].encode())
    assert kernel.lib.stub_eagain(*stuck, -1) == 0
    snap = reader.snapshot()
    assert snap.get("zones", 2, UUID_B[:30]) is None
    assert len(snap) == 5  # the rest is there
    polls = round(libkstat.INVALID_WAIT / libkstat.INVALID_POLL)
    assert kernel.lib.stub_eagain_retries() == 1 + polls
    assert reader.health().invalid == 1
    reader.snapshot()  # still invalid: one try, no wait
    assert kernel.lib.stub_eagain_retries() == 2 + polls
    assert reader.health().invalid == 2
    assert kernel.lib.stub_eagain(*stuck, 0) == 0  # valid again
    assert reader.snapshot().get("zones", 2, UUID_B[:30]) is not None
    # a short invalid spell is waited out, as libkstat would
    assert kernel.lib.stub_eagain(*stuck, 2) == 0
    assert reader.snapshot().get("zones", 2, UUID_B[:30]) is not None
    assert reader.health().invalid == 2


def test_a_failed_chain_update_closes_the_handle_and_the_next_read_reopens_it(
    reader: KstatReader, kernel: Kernel, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel.zone(1, UUID_A, rss=100)
    assert len(reader.snapshot()) == 3
    kernel.lib.stub_fail_chain_update(errno.EIO)
    with pytest.raises(KstatError, match="kstat_chain_update failed") as info:
        reader.snapshot()
    assert info.value.errno == errno.EIO
    assert reader.health().reopens == 1 and not reader.closed
    assert kernel.lib.stub_freed_headers() == 3  # the old handle is gone
    kernel.lib.stub_fail_chain_update(0)
    assert len(reader.snapshot()) == 3  # a new handle
    assert reader.health().reopens == 1
    assert capsys.readouterr().out.count("the kstat handle is closed and reopened") == 1


def test_the_agent_reports_the_kstat_sources_health(reader: KstatReader, kernel: Kernel) -> None:
    from dtagent.agent import Agent
    from dtagent.sources.commands import NoCommands

    kernel.zone(1, UUID_A, rss=100)
    kernel.lib.stub_fail_chain_update(errno.EIO)
    agent = Agent([], reader, NoCommands(), illumos=True, reuse_within=0)
    agent.collect()
    kernel.lib.stub_fail_chain_update(0)
    fams = {f.name: f for f in agent.collect()}
    assert [v for _labels, v in fams["dtagent_kstat_reopens_total"].samples] == [1]
    skipped = fams["dtagent_kstat_reads_skipped_total"]
    assert dict(skipped.samples) == {("vanished",): 0, ("invalid",): 0, ("error",): 0}


def test_open_failure_is_a_clear_error(stub_path: Path, kernel: Kernel) -> None:
    kernel.lib.stub_fail_open(errno.EACCES)
    with pytest.raises(KstatError, match="kstat_open failed") as info:
        KstatReader(str(stub_path))
    assert info.value.errno == errno.EACCES


# ---- decoding ks_data in place ------------------------------------------------------

NAMED = ctypes.sizeof(kstat_named_t)
BASE = 0x7F00_0000_0000  # the address ks_data "had": string pointers are BASE + offset


def _records(records: list[tuple[bytes, int, object]], tail: bytes = b"") -> bytearray:
    """kstat_named_t records (name, data_type, value) then ``tail`` (string bytes).

    A STRING value is (pointer, len); other values are stored through the ctypes
    union, so the layout is the header's and not the decoder's own idea of it.
    """
    buf = bytearray(len(records) * NAMED) + bytearray(tail)
    for i, (name, data_type, value) in enumerate(records):
        kn = kstat_named_t.from_buffer(buf, i * NAMED)
        kn.name = name
        kn.data_type = data_type
        if data_type == libkstat.KSTAT_DATA_STRING:
            assert isinstance(value, tuple)
            kn.value.str.addr.ptr, kn.value.str.len = value
        elif data_type == libkstat.KSTAT_DATA_CHAR:
            assert isinstance(value, bytes)
            kn.value.c = value
        elif value is not None:
            field = {1: "i32", 2: "ui32", 3: "i64", 4: "ui64", 5: "f", 6: "d"}[data_type]
            setattr(kn.value, field, value)
        del kn  # release the export of ``buf``
    return buf


def _string(buf: bytearray, ptr: int, length: int) -> str | None:
    """A STRING value read by hand: NULL is "", a pointer outside ks_data is not
    followed, else the bytes up to the NUL, at most ``length`` (0: no bound)."""
    if ptr == 0:
        return ""
    off = ptr - BASE
    if not 0 <= off < len(buf):
        return None
    raw = bytes(buf[off : off + length] if length else buf[off:])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _reference(buf: bytearray, ndata: int) -> list[tuple[str, object]]:
    """What kstat(1M) shows: each record through the ctypes layout, blank names and
    unreadable values dropped, of duplicate names the last (at the first's place)."""
    out: dict[str, object] = {}
    view = memoryview(bytes(buf))
    for i in range(min(ndata, len(buf) // NAMED)):
        kn = kstat_named_t.from_buffer_copy(buf, i * NAMED)
        if kn.data_type == libkstat.KSTAT_DATA_STRING:
            value = _string(buf, kn.value.str.addr.ptr or 0, kn.value.str.len)
        else:
            value = libkstat.decode_named_record(kn, view, BASE)
        out[kn.name.decode("utf-8", "replace")] = value
    return [(k, v) for k, v in out.items() if v is not None and k != ""]


def test_named_records_decode_as_the_ctypes_layout_reads_them() -> None:
    """The in-place decoder against the record-by-record ctypes reading, over random
    layouts: every data type and unknown ones, duplicate and blank names, string
    pointers inside, at the edges of and outside ks_data; one memo carried across
    reads that change a name, a type or the number of records, as a fresh one."""
    import random

    rng = random.Random(16)
    pool = [b"rss", b"zonename", b"nsec_user", b"", b"x" * 31, b"link_state", b"caps"]
    types = [0, 1, 2, 3, 4, 5, 6, 9, 9, 9, 7, 42]
    memo = libkstat.NameMemo()
    records: list[tuple[bytes, int, object]] = []
    for _ in range(400):
        if not records or rng.random() < 0.2:
            records = []
            for _ in range(rng.randint(1, 8)):
                records.append((rng.choice(pool), rng.choice(types), None))
        i = rng.randrange(len(records))
        name, data_type, _ = records[i]
        what = rng.random()
        if what < 0.15:
            name = rng.choice(pool)
        elif what < 0.3:
            data_type = rng.choice(types)
        records[i] = (name, data_type, None)
        tail = rng.choice([b"", b"web-1\0", b"no-nul-at-all", b"\xff\xfebad utf-8\0x"])
        strings = len(records) * NAMED
        filled: list[tuple[bytes, int, object]] = []
        for name, data_type, _ in records:
            value: object
            if data_type == libkstat.KSTAT_DATA_STRING:
                off = rng.choice([0, 1, len(tail) - 1, len(tail), -1, -strings, 10**6])
                ptr = 0 if rng.random() < 0.1 else BASE + strings + off
                value = (ptr, rng.choice([0, 1, 3, len(tail), len(tail) + 9]))
            elif data_type == libkstat.KSTAT_DATA_CHAR:
                value = rng.choice([b"abc", b"sixteen-chars-xx", b""])
            elif data_type in (5, 6):
                value = rng.choice([0.5, -2.25, 1e300 if data_type == 6 else 3.0])
            elif data_type in (1, 2, 3, 4):
                bits = 32 if data_type in (1, 2) else 64
                lo = -(2 ** (bits - 1)) if data_type in (1, 3) else 0
                value = rng.randint(lo, lo + 2**bits - 1)
            else:
                value = None
            filled.append((name, data_type, value))
        buf = _records(filled, tail)
        ndata = len(records) + rng.choice([0, 0, 0, 2])  # ks_ndata past the buffer
        expected = _reference(buf, ndata)
        view = memoryview(buf)
        assert list(libkstat.decode_named(view, ndata, BASE, memo).items()) == expected
        assert list(libkstat.decode_named(view, ndata, BASE).items()) == expected


def test_a_string_pointer_outside_ks_data_is_not_followed() -> None:
    tail = b"web-1\0"
    at = 3 * NAMED
    buf = _records(
        [
            (b"inside", libkstat.KSTAT_DATA_STRING, (BASE + at, len(tail))),
            (b"before", libkstat.KSTAT_DATA_STRING, (BASE - 1, 4)),
            (b"after", libkstat.KSTAT_DATA_STRING, (BASE + at + len(tail), 4)),
        ],
        tail,
    )
    memo = libkstat.NameMemo()
    for _ in range(2):  # the first read and one through the memo
        assert libkstat.decode_named(memoryview(buf), 3, BASE, memo) == {"inside": "web-1"}
    # the same layout with an unset string: "" (a NULL pointer is not followed either)
    kn = kstat_named_t.from_buffer(buf, NAMED)
    kn.value.str.addr.ptr = 0
    del kn
    assert libkstat.decode_named(memoryview(buf), 3, BASE, memo) == {
        "inside": "web-1", "before": "",
    }


def test_string_values_are_shared_through_a_bounded_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal string values decode to one str; ever-changing values never hold more
    than the cache's bound, and every read still decodes its own value."""
    monkeypatch.setattr(libkstat, "_texts", {})
    monkeypatch.setattr(libkstat, "_MAX_TEXTS", 8)
    at = NAMED

    def read(text: bytes) -> object:
        buf = _records([(b"zonename", libkstat.KSTAT_DATA_STRING,
                         (BASE + at, len(text) + 1))], text + b"\0")
        return libkstat.decode_named(memoryview(buf), 1, BASE)["zonename"]

    assert read(b"web-1") is read(b"web-1") == "web-1"
    for i in range(50):
        assert read(b"zone-%d" % i) == f"zone-{i}"
        assert len(libkstat._texts) <= 8
    assert read(b"web-1") == "web-1"
    long = b"/zones/" + b"x" * 300
    libkstat._texts.clear()
    assert read(long) == long.decode() and libkstat._texts == {}  # never cached


# ---- lookups, lifecycle, loading ----------------------------------------------------


def test_lookup_and_data_lookup(reader: KstatReader, kernel: Kernel) -> None:
    kernel.zone(28, UUID_A, rss=4096)
    h = kernel.named("test", 0, "mixed", "misc", big=2**63)
    kernel.lib.stub_add_stat_int32(h, b"neg", -1)
    kernel.lib.stub_add_stat_char(h, b"chars", b"SunOS\0\0\0", 8)
    name = UUID_A[:30]
    assert reader.read_stat("memory_cap", 28, name, "zonename") == UUID_A
    assert reader.read_stat("memory_cap", 28, name, "rss") == 4096
    assert reader.read_stat("memory_cap", 28, name, "nosuch") is None
    assert reader.read_stat("memory_cap", 29, name, "rss") is None
    assert reader.read_stat("test", 0, "mixed", "big") == 2**63
    assert reader.read_stat("test", 0, "mixed", "neg") == -1
    assert reader.read_stat("test", 0, "mixed", "chars") == "SunOS"
    ks = reader.read_one("caps", 28, "cpucaps_zone_28")
    assert ks is not None and ks.data == {"usage": 28, "zonename": UUID_A}
    assert reader.read_one("caps", 28, "nosuch") is None


def test_close_and_context_manager(stub_path: Path, kernel: Kernel) -> None:
    kernel.zone(1, UUID_A, rss=1)
    with KstatReader(str(stub_path)) as r:
        assert len(r.snapshot()) == 3
    assert r.closed
    r.close()  # idempotent
    with pytest.raises(KstatError, match="closed"):
        r.snapshot()


def test_library_from_the_environment(
    stub_path: Path, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel.zone(1, UUID_A, rss=1)
    monkeypatch.setenv("DTAGENT_LIBKSTAT", str(stub_path))
    assert kstat_source_available() == (True, f"{stub_path} loaded")
    with KstatReader() as r:
        assert r.library_path == str(stub_path)
        assert len(r.snapshot()) == 3
    monkeypatch.delenv("DTAGENT_LIBKSTAT")
    assert libkstat.resolve_library() == "libkstat.so.1"


def test_unavailable_library_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "libkstat.so.1"
    ok, reason = kstat_source_available(str(missing))
    assert not ok
    assert str(missing) in reason
    libm = ctypes.util.find_library("m")
    assert libm is not None
    ok, reason = kstat_source_available(libm)
    assert not ok
    assert "does not export kstat_open" in reason
    with pytest.raises(KstatError):
        KstatReader(str(missing))


# ---- scale --------------------------------------------------------------------------


def test_five_hundred_zones(reader: KstatReader, kernel: Kernel) -> None:
    uuids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 501)]
    for i, uuid in enumerate(uuids, start=1):
        kernel.zone(i, uuid, rss=i * 4096)
        for n in range(7):
            kernel.named(f"extra{n}", i, uuid[:30], "misc", a=i, b=n, zonename=uuid)
    kernel.named("zfs", 0, "arcstats", "misc", size=2**34, c=2**35)
    modules = {"memory_cap", "zones", "caps", "zfs", *(f"extra{n}" for n in range(7))}
    snap = reader.snapshot(modules)
    assert len(snap) == 500 * 10 + 1
    zones = {ks.str_stat("zonename"): ks.int_stat("rss") for ks in snap.module("memory_cap")}
    assert zones == {uuid: i * 4096 for i, uuid in enumerate(uuids, start=1)}
    # Half the zones halt; the next snapshot holds exactly the other half.
    for i, uuid in enumerate(uuids, start=1):
        if i % 2 == 0:
            kernel.halt(i, uuid)
    snap = reader.snapshot(modules)
    assert len(snap.module("memory_cap")) == 250
    assert all(ks.instance % 2 == 1 for ks in snap.module("zones"))
