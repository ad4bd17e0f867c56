"""libkstat through ctypes: the live kstat source on illumos.

No Python kstat binding exists and forking ``kstat -p`` per scrape is too slow for a
host with hundreds of zones (docs/architecture.md), so this module binds libkstat.so.1
directly. The global zone has no compiler, hence ctypes rather than an extension.

Layouts and behaviour come from illumos-gate ``usr/src/uts/common/sys/kstat.h`` (kstat_t
and the data records), ``usr/src/lib/libkstat/kstat.h`` (kstat_ctl_t and the prototypes)
and ``usr/src/lib/libkstat/common/kstat.c`` (what the functions do). Everything here is
LP64 (amd64): the agent runs as a 64-bit process in the global zone.

Two layers:

* :class:`Libkstat` — the six libkstat functions, typed, with errno.
* :class:`KstatReader` — keeps one ``kstat_ctl_t`` open and turns the kstats of the
  modules the collectors need into a :class:`~dtagent.snapshot.KstatSnapshot` per
  scrape. Data records are decoded in place, from a view of ``ks_data``, with
  precompiled ``struct`` formats (one per distinct named-record type signature),
  because reading 500 zones × ~10 kstats field by field through ctypes would cost
  most of a scrape (benchmarks/bench_kstat.py measures the read).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import structlog

from dtagent.snapshot import (
    KSTAT_TYPE_INTR,
    KSTAT_TYPE_IO,
    KSTAT_TYPE_NAMED,
    KSTAT_TYPE_RAW,
    KSTAT_TYPE_TIMER,
    Kstat,
    KstatSnapshot,
    StatRow,
    StatValue,
)

log = structlog.get_logger("dtagent.kstat")

DEFAULT_LIBRARY = "libkstat.so.1"
LIBRARY_ENV = "DTAGENT_LIBKSTAT"

# usr/src/uts/common/sys/kstat.h: "30 chars + NULL; must be 16 * n - 1".
KSTAT_STRLEN = 31
# usr/src/uts/common/sys/kstat.h
KSTAT_FLAG_VAR_SIZE = 0x02
KSTAT_FLAG_LONGSTRINGS = 0x40
KSTAT_IOC_READ = (ord("K") << 8) | 0x02  # KSTAT_IOC_BASE | 0x02
# How long a read waits for a kstat in the invalid state (EAGAIN) before skipping it;
# libkstat's own kstat_read polls 100 ms and retries for ever.
INVALID_WAIT = 0.3
INVALID_POLL = 0.1

# Named-statistic data types (usr/src/uts/common/sys/kstat.h). A 64-bit reader only
# sees these: the kernel rewrites KSTAT_DATA_LONG/ULONG (7/8) to INT64/UINT64 before
# copyout (usr/src/uts/common/io/kstat.c).
KSTAT_DATA_CHAR = 0
KSTAT_DATA_INT32 = 1
KSTAT_DATA_UINT32 = 2
KSTAT_DATA_INT64 = 3
KSTAT_DATA_UINT64 = 4
KSTAT_DATA_FLOAT = 5
KSTAT_DATA_DOUBLE = 6
KSTAT_DATA_STRING = 9

# Types whose data the reader decodes; RAW needs a per-kstat struct layout and INTR
# is per-interrupt-source hardware detail: no collector uses either.
DECODED_TYPES = frozenset({KSTAT_TYPE_NAMED, KSTAT_TYPE_IO, KSTAT_TYPE_TIMER})
SKIPPED_TYPES = frozenset({KSTAT_TYPE_RAW, KSTAT_TYPE_INTR})

c_hrtime_t = ctypes.c_longlong  # sys/time.h: typedef longlong_t hrtime_t
c_kid_t = ctypes.c_int  # sys/kstat.h: typedef int kid_t


# ---- struct layouts (LP64) ----------------------------------------------------------


class kstat_t(ctypes.Structure):
    """``kstat_t``: illumos-gate usr/src/uts/common/sys/kstat.h, ``struct kstat``.

    184 bytes. The last four fields are "kernel only" but are part of the struct the
    library hands out, so they are declared (as pointers) to keep the size right.
    """


_ks_update_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(kstat_t), ctypes.c_int)
_ks_snapshot_fn = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(kstat_t), ctypes.c_void_p, ctypes.c_int
)

# illumos-gate usr/src/uts/common/sys/kstat.h, struct kstat (LP64 offsets; checked
# against the C stand-in's offsetof in tests/test_libkstat.py)
kstat_t._fields_ = [
    ("ks_crtime", c_hrtime_t),  # @0
    ("ks_next", ctypes.POINTER(kstat_t)),  # @8
    ("ks_kid", c_kid_t),  # @16
    ("ks_module", ctypes.c_char * KSTAT_STRLEN),  # @20
    ("ks_resv", ctypes.c_ubyte),  # @51
    ("ks_instance", ctypes.c_int),  # @52
    ("ks_name", ctypes.c_char * KSTAT_STRLEN),  # @56
    ("ks_type", ctypes.c_ubyte),  # @87
    ("ks_class", ctypes.c_char * KSTAT_STRLEN),  # @88
    ("ks_flags", ctypes.c_ubyte),  # @119
    ("ks_data", ctypes.c_void_p),  # @120
    ("ks_ndata", ctypes.c_uint),  # @128
    ("ks_data_size", ctypes.c_size_t),  # @136
    ("ks_snaptime", c_hrtime_t),  # @144
    ("ks_update", _ks_update_fn),  # @152
    ("ks_private", ctypes.c_void_p),  # @160
    ("ks_snapshot", _ks_snapshot_fn),  # @168
    ("ks_lock", ctypes.c_void_p),  # @176
]


class kstat_ctl_t(ctypes.Structure):
    """``kstat_ctl_t``: illumos-gate usr/src/lib/libkstat/kstat.h. 24 bytes."""

    # illumos-gate usr/src/lib/libkstat/kstat.h, struct kstat_ctl
    _fields_ = [
        ("kc_chain_id", c_kid_t),  # @0: KCID of the chain as this handle knows it
        ("kc_chain", ctypes.POINTER(kstat_t)),  # @8
        ("kc_kd", ctypes.c_int),  # @16: the /dev/kstat descriptor
    ]


class _kstat_named_str_addr(ctypes.Union):
    # illumos-gate usr/src/uts/common/sys/kstat.h, kstat_named_t value.str.addr (LP64)
    _fields_ = [("ptr", ctypes.c_void_p), ("__pad", ctypes.c_char * 8)]


class _kstat_named_str(ctypes.Structure):
    # illumos-gate usr/src/uts/common/sys/kstat.h, kstat_named_t value.str
    _fields_ = [("addr", _kstat_named_str_addr), ("len", ctypes.c_uint32)]  # @0, @8


class _kstat_named_value(ctypes.Union):
    # illumos-gate usr/src/uts/common/sys/kstat.h, kstat_named_t value (16 bytes)
    _fields_ = [
        ("c", ctypes.c_char * 16),
        ("i32", ctypes.c_int32),
        ("ui32", ctypes.c_uint32),
        ("str", _kstat_named_str),
        ("i64", ctypes.c_int64),
        ("ui64", ctypes.c_uint64),
        ("l", ctypes.c_long),
        ("ul", ctypes.c_ulong),
        ("ll", ctypes.c_longlong),
        ("ull", ctypes.c_ulonglong),
        ("f", ctypes.c_float),
        ("d", ctypes.c_double),
    ]


class kstat_named_t(ctypes.Structure):
    """``kstat_named_t``: illumos-gate usr/src/uts/common/sys/kstat.h. 48 bytes.

    For KSTAT_DATA_STRING, ``value.str.addr.ptr`` points at ``value.str.len`` bytes
    (strlen + 1) that the kernel packs into the same ``ks_data`` buffer after the
    named records (uts/common/os/kstat_fr.c default_kstat_snapshot).
    """

    # illumos-gate usr/src/uts/common/sys/kstat.h, struct kstat_named
    _fields_ = [
        ("name", ctypes.c_char * KSTAT_STRLEN),  # @0
        ("data_type", ctypes.c_ubyte),  # @31
        ("value", _kstat_named_value),  # @32
    ]


class kstat_io_t(ctypes.Structure):
    """``kstat_io_t``: illumos-gate usr/src/uts/common/sys/kstat.h. 80 bytes.

    The default snapshot scales the times to ns and folds in the in-progress interval
    (uts/common/os/kstat_fr.c), so they are directly usable.
    """

    # illumos-gate usr/src/uts/common/sys/kstat.h, struct kstat_io
    _fields_ = [
        ("nread", ctypes.c_ulonglong),  # @0
        ("nwritten", ctypes.c_ulonglong),  # @8
        ("reads", ctypes.c_uint),  # @16
        ("writes", ctypes.c_uint),  # @20
        ("wtime", c_hrtime_t),  # @24
        ("wlentime", c_hrtime_t),  # @32
        ("wlastupdate", c_hrtime_t),  # @40
        ("rtime", c_hrtime_t),  # @48
        ("rlentime", c_hrtime_t),  # @56
        ("rlastupdate", c_hrtime_t),  # @64
        ("wcnt", ctypes.c_uint),  # @72
        ("rcnt", ctypes.c_uint),  # @76
    ]


class kstat_timer_t(ctypes.Structure):
    """``kstat_timer_t``: illumos-gate usr/src/uts/common/sys/kstat.h. 80 bytes."""

    # illumos-gate usr/src/uts/common/sys/kstat.h, struct kstat_timer
    _fields_ = [
        ("name", ctypes.c_char * KSTAT_STRLEN),  # @0
        ("resv", ctypes.c_ubyte),  # @31
        ("num_events", ctypes.c_ulonglong),  # @32
        ("elapsed_time", c_hrtime_t),  # @40
        ("min_time", c_hrtime_t),  # @48
        ("max_time", c_hrtime_t),  # @56
        ("start_time", c_hrtime_t),  # @64
        ("stop_time", c_hrtime_t),  # @72
    ]


kstat_ctl_p = ctypes.POINTER(kstat_ctl_t)
kstat_p = ctypes.POINTER(kstat_t)

# ---- decoding ks_data ---------------------------------------------------------------
#
# ks_data is decoded in place, through a memoryview of the library's buffer that the
# reader keeps per kstat while the buffer stays where it is (no copy per read), with
# struct formats checked against the ctypes layouts above (the import fails if they
# disagree). "=": native byte order, standard sizes, no implicit padding.

_NAMED_SIZE = ctypes.sizeof(kstat_named_t)
_NAMED_TYPE_OFF = kstat_named_t.data_type.offset
_NAMED_VALUE_OFF = kstat_named_t.value.offset
_NAMED_PAD = _NAMED_VALUE_OFF - KSTAT_STRLEN - 1  # 0 on LP64

# One value format per data type, each exactly 16 bytes (the union) and one item, so
# an unpacked record array alternates names and values.
_VALUE_FORMATS: dict[int, str] = {
    KSTAT_DATA_CHAR: "16s",
    KSTAT_DATA_INT32: "i12x",
    KSTAT_DATA_UINT32: "I12x",
    KSTAT_DATA_INT64: "q8x",
    KSTAT_DATA_UINT64: "Q8x",
    KSTAT_DATA_FLOAT: "f12x",
    KSTAT_DATA_DOUBLE: "d8x",
    KSTAT_DATA_STRING: "Q8x",  # value.str.addr.ptr (value.str.len: _STRING_LEN)
}
_UNKNOWN_VALUE = "16s"  # a placeholder, dropped
# value.str.len of a record, read for the STRING records only
_STRING_LEN_OFF = _NAMED_VALUE_OFF + _kstat_named_str.len.offset
_STRING_LEN = struct.Struct("=I")

_IO_FIELDS = tuple(name for name, *_ in kstat_io_t._fields_)
_IO = struct.Struct("=QQIIqqqqqqII")
_TIMER_FIELDS = tuple(name for name, *_ in kstat_timer_t._fields_ if name != "resv")
_TIMER = struct.Struct(f"={KSTAT_STRLEN}sxQqqqqq")

# What a read changes in a kstat_t and the reader looks at after every read: ks_data,
# ks_ndata, ks_data_size and ks_snaptime, consecutive from ks_data (the padding after
# ks_ndata is LP64 alignment), read in one unpack from a view of the header instead of
# four ctypes field reads.
_HEADER_OFF = kstat_t.ks_data.offset
_HEADER_READ = struct.Struct("=QI4xQq")


def _check_layouts() -> None:
    """The struct formats must describe exactly the ctypes layouts."""
    value_size = ctypes.sizeof(_kstat_named_value)
    for fmt in (*_VALUE_FORMATS.values(), _UNKNOWN_VALUE):
        if struct.calcsize("=" + fmt) != value_size:
            raise ImportError(f"kstat value format {fmt!r} is not {value_size} bytes")
    if _NAMED_TYPE_OFF != KSTAT_STRLEN or KSTAT_STRLEN + 1 + _NAMED_PAD + value_size != (
        _NAMED_SIZE
    ):
        raise ImportError("kstat_named_t layout does not add up")
    if _STRING_LEN.size != _kstat_named_str.len.size:
        raise ImportError("value.str.len format does not match the ctypes layout")
    if _IO.size != ctypes.sizeof(kstat_io_t) or _TIMER.size != ctypes.sizeof(kstat_timer_t):
        raise ImportError("kstat_io_t/kstat_timer_t formats do not match the ctypes layout")
    read_fields = [
        (kstat_t.ks_data, 0, 8),
        (kstat_t.ks_ndata, 8, 4),
        (kstat_t.ks_data_size, 16, 8),
        (kstat_t.ks_snaptime, 24, 8),
    ]
    if _HEADER_READ.size != 32 or any(
        f.offset != _HEADER_OFF + at or f.size != size for f, at, size in read_fields
    ):
        raise ImportError("the kstat_t read fields do not match the ctypes layout")


_check_layouts()

# Record kinds in a compiled named-record plan.
_CHAR, _STRING, _UNKNOWN = 1, 2, 3


class _NamedDecoder:
    """A struct format for one sequence of named-record data types.

    kstats of one kind (every zone's ``memory_cap``, every link) share a type
    signature, so a handful of these serve a whole host; the cache is keyed by the
    bytes of the ``data_type`` column, which one slice of the buffer yields. Every
    record unpacks to two items: its head (``name`` and ``data_type``, 32 bytes) and
    its value, so heads and values are two slices of the unpacked tuple. Only CHAR,
    STRING and unknown records need Python-level fix-ups:
    ``(record, kind, position of the value in the unpacked tuple, offset of
    value.str.len)``.
    """

    __slots__ = ("count", "fixups", "struct")

    def __init__(self, types: bytes) -> None:
        parts = ["="]
        fixups: list[tuple[int, int, int, int]] = []
        for record, t in enumerate(types):
            parts.append(f"{KSTAT_STRLEN + 1}s{_NAMED_PAD}x")
            fmt = _VALUE_FORMATS.get(t)
            parts.append(fmt if fmt is not None else _UNKNOWN_VALUE)
            pos = 2 * record + 1
            if fmt is None:
                fixups.append((record, _UNKNOWN, pos, 0))
            elif t == KSTAT_DATA_CHAR:
                fixups.append((record, _CHAR, pos, 0))
            elif t == KSTAT_DATA_STRING:
                fixups.append((record, _STRING, pos, record * _NAMED_SIZE + _STRING_LEN_OFF))
        self.count = len(types)
        self.struct = struct.Struct("".join(parts))
        self.fixups = tuple(fixups)


_decoders: dict[bytes, _NamedDecoder] = {}
_names: dict[bytes, str] = {}
# record heads -> (heads, names, index), shared by every kstat of one layout (every
# zone's memory_cap): one copy of them for the host, not one per kstat
_Layout = tuple[tuple[bytes, ...], tuple[str, ...], "dict[str, int] | None"]
_layouts: dict[tuple[bytes, ...], _Layout] = {}
_MAX_CACHED = 65536  # bounds the caches if a kstat carried ever-changing names
# KSTAT_DATA_STRING values (zone and link names, repeated by every kstat of a zone):
# one str each for the host, about 5,000 at 2,000 zones. Bounded, as values may change:
# 8,192 values of at most 256 bytes (longer ones, a zone path, are not cached), about
# 1.6 MiB for names of 36 bytes (some 200 bytes each here, key and entry counted) and
# 5 MiB at the very most.
_texts: dict[bytes, str] = {}
_MAX_TEXTS = 8192
_MAX_TEXT_BYTES = 256

def _cstr(raw: bytes) -> str:
    """A fixed-size C char array as text: up to the first NUL (it may have none)."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "replace")


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def _cached(
    cache: dict[_K, _V], key: _K, make: Callable[[_K], _V], limit: int = _MAX_CACHED
) -> _V:
    """``cache[key]``, made by ``make`` the first time; a full cache starts afresh."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= limit:
            cache.clear()
        value = cache[key] = make(key)
    return value


def _stat_name(raw: bytes) -> str:
    return _cached(_names, raw, _cstr)


def _decoder(types: bytes) -> _NamedDecoder:
    return _cached(_decoders, types, _NamedDecoder)


def _layout(heads: tuple[bytes, ...]) -> _Layout:
    """The names of a sequence of record heads, and when they are distinct and none
    is blank, each name's position (the index a :class:`StatRow` shares)."""
    names = tuple(_stat_name(head[:KSTAT_STRLEN]) for head in heads)
    simple = "" not in names and len(set(names)) == len(names)
    return heads, names, {name: at for at, name in enumerate(names)} if simple else None


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _text(raw: bytes) -> str:
    if len(raw) > _MAX_TEXT_BYTES:
        return _decoded(raw)
    return _cached(_texts, raw, _decoded, _MAX_TEXTS)


def _string_value(buf: memoryview, base: int, ptr: int, length: int) -> str | None:
    """A KSTAT_DATA_STRING value: bytes inside ks_data that ``ptr`` points at.

    NULL is an unset string (""). A pointer outside the buffer is not followed —
    reading it could crash the agent — and gives None (the statistic is dropped).
    The string ends at its NUL, after ``length`` bytes (strlen + 1) or at the end of
    the buffer, whichever comes first.
    """
    if ptr == 0:
        return ""
    size = len(buf)
    off = ptr - base
    if off < 0 or off >= size:
        return None
    end = min(off + length, size) if length else size
    return _text(buf[off:end].tobytes().partition(b"\0")[0])


class NameMemo:
    """What one kstat's last read decoded that its next read is likely to repeat.

    A kstat's record names and types are fixed when it is created, so a read first
    unpacks with the last read's decoder and checks the records' heads (name and
    data type bytes) against the last read's: one tuple comparison instead of a
    decoder lookup and a name lookup per statistic. Only when they differ (the first
    read, another layout) is the decoder chosen by the types and the buffer unpacked
    again. ``index``: the names are distinct and none is blank, so the values come
    out as a :class:`StatRow` over this index, shared by the layout's kstats (the
    common case); None: the general path makes a dict, keeping the last of duplicate
    names and dropping blank ones.
    """

    __slots__ = ("decoder", "heads", "index", "names")

    def __init__(self) -> None:
        self.decoder: _NamedDecoder | None = None
        self.heads: tuple[bytes, ...] = ()
        self.names: tuple[str, ...] = ()
        self.index: dict[str, int] | None = None

    def learn(self, buf: memoryview, ndata: int) -> tuple[_NamedDecoder, tuple[Any, ...]]:
        """The decoder for the records' types, the unpacked records, and their names."""
        types = buf[_NAMED_TYPE_OFF : ndata * _NAMED_SIZE : _NAMED_SIZE].tobytes()
        dec = self.decoder = _decoder(types)
        unpacked = dec.struct.unpack_from(buf)
        heads: tuple[bytes, ...] = unpacked[0::2]
        self.heads, self.names, self.index = _cached(_layouts, heads, _layout)
        return dec, unpacked



def decode_named(
    buf: memoryview, ndata: int, base: int, memo: NameMemo | None = None
) -> Mapping[str, StatValue]:
    """Decode ``ndata`` kstat_named_t records of ks_data (``buf``, format "B").

    ``base`` is the address ks_data had, so string pointers can be turned into
    offsets in ``buf``. Blank records (name "") are skipped, as kstat(1M) does: some
    drivers leave uninitialised records at the end. Of duplicate names the last
    record wins. ``memo`` carries the decoder and names of the kstat's last read.
    """
    fits = len(buf) // _NAMED_SIZE
    if ndata > fits:
        ndata = fits
    if ndata <= 0:
        return {}
    if memo is None:
        memo = NameMemo()
    dec = memo.decoder
    if dec is not None and dec.count == ndata:
        unpacked = dec.struct.unpack_from(buf)
        if unpacked[0::2] != memo.heads:  # other names or types than the last read
            dec, unpacked = memo.learn(buf, ndata)
    else:
        dec, unpacked = memo.learn(buf, ndata)
    names, index = memo.names, memo.index
    if index is not None:
        # distinct names: the values in record order, over the layout's shared index
        if not dec.fixups:
            return StatRow(index, unpacked[1::2])
        fixed: list[Any] = list(unpacked[1::2])
        for record, kind, pos, len_off in dec.fixups:
            if kind == _STRING:
                length = _STRING_LEN.unpack_from(buf, len_off)[0]
                fixed[record] = _string_value(buf, base, unpacked[pos], length)
            elif kind == _CHAR:
                fixed[record] = _cstr(unpacked[pos])
            else:
                fixed[record] = None
        if None not in fixed:
            return StatRow(index, fixed)
        # a dropped record (a string pointer outside ks_data, an unknown type)
        return {n: v for n, v in zip(names, fixed, strict=True) if v is not None}
    if not dec.fixups:
        # Two slices of one record array, so always the same length.
        data: dict[str, Any] = dict(zip(names, unpacked[1::2]))  # noqa: B905
        data.pop("", None)
        return data
    values: list[Any] = list(unpacked[1::2])
    dropped = False
    for record, kind, pos, len_off in dec.fixups:
        if kind == _CHAR:
            values[record] = _cstr(unpacked[pos])
        elif kind == _STRING:
            length = _STRING_LEN.unpack_from(buf, len_off)[0]
            values[record] = value = _string_value(buf, base, unpacked[pos], length)
            dropped = dropped or value is None
        else:
            values[record] = None
            dropped = True
    data = dict(zip(names, values, strict=True))
    if dropped:
        data = {k: v for k, v in data.items() if v is not None}
    data.pop("", None)
    return data


def decode_named_record(kn: kstat_named_t, buf: memoryview, base: int) -> StatValue | None:
    """One kstat_named_t (as kstat_data_lookup finds it), through the ctypes layout.

    ``buf``/``base`` are the kstat's ks_data copy and address, where strings live.
    """
    t = kn.data_type
    v = kn.value
    if t == KSTAT_DATA_CHAR:
        return _cstr(bytes(v.c))
    if t == KSTAT_DATA_STRING:
        return _string_value(buf, base, v.str.addr.ptr or 0, v.str.len)
    attr = _RECORD_FIELDS.get(t)
    return cast(StatValue, getattr(v, attr)) if attr is not None else None


_RECORD_FIELDS = {
    KSTAT_DATA_INT32: "i32",
    KSTAT_DATA_UINT32: "ui32",
    KSTAT_DATA_INT64: "i64",
    KSTAT_DATA_UINT64: "ui64",
    KSTAT_DATA_FLOAT: "f",
    KSTAT_DATA_DOUBLE: "d",
}


def decode_io(buf: memoryview) -> dict[str, StatValue]:
    """A kstat_io_t as a dict of its twelve fields (named as in the header)."""
    if len(buf) < _IO.size:
        return {}
    return dict(zip(_IO_FIELDS, _IO.unpack_from(buf), strict=True))


def decode_timer(buf: memoryview) -> dict[str, StatValue]:
    """The first kstat_timer_t: ``name`` and its counters.

    kstat(1M) (usr/src/cmd/stat/kstat/kstat.c save_timer) reports only the first
    timer record, and bundles imported from ``kstat -p`` carry the same keys, so the
    live source matches it.
    """
    if len(buf) < _TIMER.size:
        return {}
    raw_name, *rest = _TIMER.unpack_from(buf)
    return dict(zip(_TIMER_FIELDS, (_cstr(raw_name), *rest), strict=True))


def decode_data(
    ks_type: int, buf: memoryview, ndata: int, base: int, memo: NameMemo | None = None
) -> Mapping[str, StatValue] | None:
    """ks_data of a kstat of this type as statistics; None for types not decoded."""
    if ks_type == KSTAT_TYPE_NAMED:
        return decode_named(buf, ndata, base, memo)
    if ks_type == KSTAT_TYPE_IO:
        return decode_io(buf)
    if ks_type == KSTAT_TYPE_TIMER:
        return decode_timer(buf)
    return None


# ---- the library --------------------------------------------------------------------


class KstatError(OSError):
    """libkstat could not be loaded, opened or walked (errno set where there is one)."""


def resolve_library(library: str | None = None) -> str:
    """Which libkstat to load: the argument, else $DTAGENT_LIBKSTAT, else libkstat.so.1."""
    return library or os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY


def _errno_error(call: str) -> KstatError:
    err = ctypes.get_errno()
    return KstatError(err, f"{call} failed: {os.strerror(err) if err else 'unknown error'}")


class Libkstat:
    """The libkstat.so.1 functions dtagent calls, with their C prototypes.

    Prototypes: illumos-gate usr/src/lib/libkstat/kstat.h. Loaded with
    ``use_errno=True``: every failure is reported through errno, which ctypes keeps
    per thread and :func:`ctypes.get_errno` reads right after the call.
    """

    SYMBOLS = (
        "kstat_open",
        "kstat_close",
        "kstat_chain_update",
        "kstat_lookup",
        "kstat_read",
        "kstat_data_lookup",
    )

    def __init__(self, library: str | None = None) -> None:
        self.path = resolve_library(library)
        try:
            lib = ctypes.CDLL(self.path, use_errno=True)
        except OSError as exc:
            raise KstatError(f"cannot load {self.path}: {exc}") from exc
        missing = [s for s in self.SYMBOLS if not hasattr(lib, s)]
        if missing:
            raise KstatError(f"{self.path} does not export {', '.join(missing)}")
        # kstat_ctl_t *kstat_open(void);
        lib.kstat_open.argtypes = []
        lib.kstat_open.restype = kstat_ctl_p
        # int kstat_close(kstat_ctl_t *);
        lib.kstat_close.argtypes = [kstat_ctl_p]
        lib.kstat_close.restype = ctypes.c_int
        # kid_t kstat_chain_update(kstat_ctl_t *);
        lib.kstat_chain_update.argtypes = [kstat_ctl_p]
        lib.kstat_chain_update.restype = c_kid_t
        # kstat_t *kstat_lookup(kstat_ctl_t *, char *ks_module, int ks_instance, char *ks_name);
        lib.kstat_lookup.argtypes = [kstat_ctl_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        lib.kstat_lookup.restype = kstat_p
        # kid_t kstat_read(kstat_ctl_t *, kstat_t *, void *);
        lib.kstat_read.argtypes = [kstat_ctl_p, kstat_p, ctypes.c_void_p]
        lib.kstat_read.restype = c_kid_t
        # void *kstat_data_lookup(kstat_t *, char *);
        lib.kstat_data_lookup.argtypes = [kstat_p, ctypes.c_char_p]
        lib.kstat_data_lookup.restype = ctypes.c_void_p
        # int ioctl(int, int, ...): libkstat's kstat_read is a loop around
        # ioctl(kc_kd, KSTAT_IOC_READ, ksp) that retries EAGAIN for ever
        # (usr/src/lib/libkstat/common/kstat.c), so dtagent drives the ioctl itself to
        # bound that wait. Looked up through libkstat's handle: dlsym(3C) searches its
        # dependencies, libc among them.
        if not hasattr(lib, "ioctl"):
            raise KstatError(f"{self.path}: cannot find ioctl through it")
        # No argtypes: ioctl is variadic, and without them ctypes passes the two ints
        # as C ints and the kstat_t pointer object as the pointer it holds, as a C
        # caller does, without a conversion per argument (half the call's cost in the
        # per-kstat hot loop). Callers pass (int, int, POINTER(kstat_t)) only.
        lib.ioctl.restype = c_kid_t
        self._lib = lib
        # The raw ioctl, for the per-kstat hot loop (no wrapper frame).
        self.ioctl: Callable[[int, int, Any], int] = lib.ioctl
        # ks_data belongs to libkstat, which frees it with free(3C): same allocator
        libc = ctypes.CDLL(None)
        libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        libc.calloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        libc.free.restype = None
        self._calloc: Callable[[int, int], int | None] = libc.calloc
        self._free: Callable[[int | None], None] = libc.free

    def open(self) -> Any:
        """kstat_open(): a ``POINTER(kstat_ctl_t)``; KstatError when NULL."""
        kc = self._lib.kstat_open()
        if not kc:
            raise _errno_error("kstat_open")
        return kc

    def close(self, kc: Any) -> None:
        """kstat_close(): frees the chain; every kstat_t of it becomes invalid."""
        self._lib.kstat_close(kc)

    def chain_update(self, kc: Any) -> int:
        """kstat_chain_update(): 0 if unchanged, else the new KCID; KstatError on -1.

        errno is only meaningful on -1 (go-kstat notes that libkstat does not clear
        it on success), so only the return value is tested.
        """
        kcid = cast(int, self._lib.kstat_chain_update(kc))
        if kcid == -1:
            raise _errno_error("kstat_chain_update")
        return kcid

    def lookup(self, kc: Any, module: str | None, instance: int, name: str | None) -> Any:
        """kstat_lookup(): a ``POINTER(kstat_t)``, NULL (falsy) when there is none.

        None module/name and instance -1 are wildcards.
        """
        return self._lib.kstat_lookup(
            kc,
            module.encode() if module is not None else None,
            instance,
            name.encode() if name is not None else None,
        )

    def read(
        self, kc: Any, header: kstat_t, wait: float = INVALID_WAIT,
        failed_with: int | None = None,
    ) -> int:
        """kstat_read() into ks_data, with the wait for an invalid kstat bounded: the
        KCID, or -1 with errno (ctypes.get_errno()).

        The steps of libkstat's kstat_read (usr/src/lib/libkstat/common/kstat.c):
        allocate ks_data at its header size on the first read, then
        ioctl(KSTAT_IOC_READ); EAGAIN (the kstat is in the invalid state) is retried
        every 100 ms, but only for ``wait`` seconds, then -1/EAGAIN; ENOMEM grows
        ks_data to the size the driver reports and retries, only for kstats flagged
        KSTAT_FLAG_VAR_SIZE or KSTAT_FLAG_LONGSTRINGS (any other is -1/ENOMEM).
        ``failed_with``: the errno of an ioctl the caller already made (its hot path),
        handled as if this loop had made it. ``header`` is the kstat_t in the library's
        memory (``kstat_t.from_address``, or a pointer's ``contents``).
        """
        ksp = ctypes.byref(header)
        if not header.ks_data and header.ks_data_size > 0:
            buf = self._calloc(header.ks_data_size, 1)
            if not buf:
                ctypes.set_errno(errno.ENOMEM)
                return -1
            header.ks_data = buf
        fd = kc.contents.kc_kd
        waited = 0.0
        while True:
            if failed_with is None:
                kcid = self.ioctl(fd, KSTAT_IOC_READ, ksp)
                if kcid != -1:
                    return kcid
                err = ctypes.get_errno()
            else:
                err, failed_with = failed_with, None
            if err == errno.EAGAIN and waited < wait:
                time.sleep(INVALID_POLL)
                waited += INVALID_POLL
                continue
            if err == errno.ENOMEM and header.ks_flags & (
                KSTAT_FLAG_VAR_SIZE | KSTAT_FLAG_LONGSTRINGS
            ):
                self._free(header.ks_data)
                header.ks_data = self._calloc(header.ks_data_size, 1)
                if header.ks_data:
                    continue
            ctypes.set_errno(err)
            return -1

    def data_lookup(self, ksp: Any, name: str) -> int | None:
        """kstat_data_lookup(): the record's address inside ks_data, or None."""
        return cast(int | None, self._lib.kstat_data_lookup(ksp, name.encode()))


def kstat_source_available(library: str | None = None) -> tuple[bool, str]:
    """Whether libkstat can be loaded here, and if not, why (for platform detection)."""
    try:
        lib = Libkstat(library)
    except KstatError as exc:
        return False, str(exc)
    return True, f"{lib.path} loaded"


# ---- the reader ---------------------------------------------------------------------


_POINTER = struct.Struct("@P")


def _pointer_field(instance: Any, field: Any) -> int:
    """The address a pointer field of a ctypes structure holds (0 for NULL), read from
    the structure's own buffer. Reading the field instead makes a pointer object, and
    turning that into an address (ctypes.cast) gives the structure a ``_objects``
    dictionary for good: 64 bytes a kstat header, 1 MiB at 1,000 zones."""
    return int(_POINTER.unpack_from(instance, field.offset)[0])


# ks_data is read through a view made at each read, over a ctypes array made by
# from_address (no copy): the two cost about 0.25 us a kstat, 4 ms a scrape at 1,000
# zones, where a view kept per kstat was 320 bytes each, 4.7 MiB. The array types
# are made once per ks_data_size (a bounded cache: a variable-size kstat may take many).
_BYTE_ARRAYS: dict[int, Any] = {}
_MAX_ARRAY_TYPES = 1024


def _view_at(address: int, size: int) -> memoryview:
    """A view (format "<B") of ``size`` bytes of the library's memory at ``address``."""
    kind = _BYTE_ARRAYS.get(size)
    if kind is None:
        if len(_BYTE_ARRAYS) >= _MAX_ARRAY_TYPES:
            _BYTE_ARRAYS.clear()
        kind = _BYTE_ARRAYS[size] = ctypes.c_ubyte * size
    return memoryview(kind.from_address(address))


class _Entry(NameMemo):
    """One kstat on the chain that the reader reads: header address, identity, and what
    decoding its last read left to reuse (the names and decoder, as a
    :class:`NameMemo`: the entry is its own memo, one object a kstat fewer, 1 MiB at
    1,000 zones)."""

    __slots__ = ("address", "crtime", "instance", "kid", "ks_class", "ks_type", "module",
                 "name")

    def __init__(self, header: kstat_t) -> None:
        # Only the header's address is kept: each read makes a kstat_t over the
        # library's memory again (from_address, no copy, about 0.05 us), where one kept
        # per kstat was 145 bytes, 2 MiB at 1,000 zones. Calls take byref().
        super().__init__()
        self.address = ctypes.addressof(header)
        self.module = sys.intern(_cstr(header.ks_module))  # one string per module
        self.instance: int = header.ks_instance
        self.name = _cstr(header.ks_name)
        self.ks_class = sys.intern(_cstr(header.ks_class))
        self.ks_type: int = header.ks_type
        self.crtime: int = header.ks_crtime
        # a kid on the chain is the same header while it lives: kstat_chain_update
        # keeps the headers of the kstats it finds again (libkstat kstat.c)
        self.kid: int = header.ks_kid

    @property
    def key(self) -> tuple[str, int, str]:
        """Made when asked (a failed or invalid read), not kept: a tuple a kstat."""
        return (self.module, self.instance, self.name)

    def kstat(self, header: kstat_t) -> Kstat:
        """The kstat as the last KSTAT_IOC_READ left it in its header and ks_data.

        ks_data is decoded in place, through a view of the buffer the header names now
        (a grown one is a new allocation, kstat.c kstat_read), made for this read only.
        """
        # the header's own buffer (a ctypes instance is one): no view kept beside it
        base, ndata, size, snaptime = _HEADER_READ.unpack_from(header, _HEADER_OFF)
        data: Mapping[str, StatValue] | None = None
        if base and size:
            view = _view_at(base, size)
            if self.ks_type == KSTAT_TYPE_NAMED:  # most kstats: no dispatch
                data = decode_named(view, ndata, base, self)
            else:
                data = decode_data(self.ks_type, view, ndata, base, self)
        return Kstat(
            self.module,
            self.instance,
            self.name,
            self.ks_class,
            self.ks_type,
            snaptime,
            self.crtime,
            data or {},
        )


class KstatReader:
    """One open kstat_ctl_t, read into a KstatSnapshot per call.

    Each call first runs kstat_chain_update; when it reports a new KCID the reader
    walks the chain again, since libkstat has freed the headers of deleted kstats
    (a halted zone's) and appended new ones. Between chain changes the walk is kept:
    per module, the kstats of a type the reader decodes.

    A kstat_read failing with ENXIO means the kstat vanished after the chain update
    (a zone halted mid-scrape): it is skipped, logged at debug, and the chain is
    walked again on the next call. A kstat in the invalid state (EAGAIN) is waited
    for at most ``invalid_wait`` seconds, then skipped; while it stays invalid later
    reads try it once without waiting. Other read failures skip that kstat only; the
    rest of the snapshot is still returned.

    Only a failed chain update fails the snapshot: the handle is then closed (its
    chain may be half updated) and a new one is opened at the next call, with one log
    line per failure and ``reopens`` counting them.

    Not thread-safe by libkstat's design; calls are serialised with a lock.
    """

    def __init__(
        self,
        library: str | None = None,
        modules: Iterable[str] | None = None,
        *,
        invalid_wait: float = INVALID_WAIT,
    ) -> None:
        self._lib = Libkstat(library)
        self.library_path = self._lib.path
        self.modules: frozenset[str] | None = frozenset(modules) if modules is not None else None
        self.invalid_wait = invalid_wait
        self._kc: Any = self._lib.open()
        self._closed = False
        self._by_module: dict[str, list[_Entry]] = {}
        self._all: list[_Entry] = []
        self._stale = True
        self._lock = threading.Lock()
        self._warned: set[tuple[str, int, str]] = set()
        self._invalid: set[tuple[str, int, str]] = set()  # in EAGAIN at the last read
        # Counters for self-monitoring and tests.
        self.chain_walks = 0
        self.vanished = 0
        self.read_errors = 0
        self.invalid_skips = 0
        self.reopens = 0
        self.chain_id: int = self._kc.contents.kc_chain_id

    def health(self) -> KstatHealth:
        """The reader's counters, for the agent's own metrics."""
        return KstatHealth(self.reopens, self.vanished, self.invalid_skips, self.read_errors)

    # -- lifecycle --

    def close(self) -> None:
        """kstat_close(); idempotent. Every header view is dropped first."""
        with self._lock:
            self._closed = True
            self._drop_handle()

    def _drop_handle(self) -> None:
        kc, self._kc = self._kc, None
        self._by_module = {}
        self._all = []
        self._stale = True
        if kc is not None:
            self._lib.close(kc)

    def __enter__(self) -> KstatReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading --

    def kstats(self) -> KstatSnapshot:
        """A snapshot of the modules given at construction (the agent's KstatProvider)."""
        return self.snapshot(self.modules)

    def snapshot(self, modules: Iterable[str] | None = None) -> KstatSnapshot:
        """The kstats whose module is in ``modules`` (None: every module), read now."""
        with self._lock:
            kc = self._require_open()
            self._update_chain(kc)
            if modules is None:
                entries: Iterable[_Entry] = self._all
            else:
                wanted = {modules} if isinstance(modules, str) else set(modules)
                entries = [e for m in wanted for e in self._by_module.get(m, ())]
            now = time.time()
            kstats: list[Kstat] = []
            ioctl, fd, byref = self._lib.ioctl, kc.contents.kc_kd, ctypes.byref
            at = kstat_t.from_address
            for entry in entries:
                # the hot path: one ioctl into the buffer of the previous read
                header = at(entry.address)
                if not header.ks_data or ioctl(fd, KSTAT_IOC_READ, byref(header)) == -1:
                    failed = ctypes.get_errno() if header.ks_data else None
                    if self._read(kc, entry, header, failed) == -1:
                        continue
                elif self._invalid:
                    self._invalid.discard(entry.key)
                kstats.append(entry.kstat(header))
            return KstatSnapshot.of(kstats, now)

    def read_one(self, module: str, instance: int, name: str) -> Kstat | None:
        """One kstat by kstat_lookup (None when absent, vanished or not decodable)."""
        with self._lock:
            kc = self._require_open()
            self._update_chain(kc)
            ptr = self._lib.lookup(kc, module, instance, name)
            if not ptr:
                return None
            header = ptr.contents
            entry = _Entry(header)
            if entry.ks_type not in DECODED_TYPES:
                return None
            if self._read(kc, entry, header) == -1:
                return None
            return entry.kstat(header)

    def read_stat(self, module: str, instance: int, name: str, stat: str) -> StatValue | None:
        """One named statistic, found with kstat_lookup and kstat_data_lookup."""
        with self._lock:
            kc = self._require_open()
            self._update_chain(kc)
            ptr = self._lib.lookup(kc, module, instance, name)
            if not ptr or ptr.contents.ks_type != KSTAT_TYPE_NAMED:
                return None
            header = ptr.contents
            if self._read(kc, _Entry(header), header) == -1:
                return None
            addr = self._lib.data_lookup(ptr, stat)
            if addr is None:
                return None
            buf = memoryview(ctypes.string_at(header.ks_data, header.ks_data_size))
            return decode_named_record(kstat_named_t.from_address(addr), buf, header.ks_data)

    # -- internals --

    def _require_open(self) -> Any:
        if self._closed:
            raise KstatError("the kstat reader is closed")
        if self._kc is None:  # dropped after a failed chain update: start afresh
            self._kc = self._lib.open()
            log.info("kstat handle reopened", reopens=self.reopens)
        return self._kc

    def _update_chain(self, kc: Any) -> None:
        try:
            kcid = self._lib.chain_update(kc)
        except KstatError as exc:
            # The chain may be half updated (libkstat frees and appends headers as
            # it goes): never walk it again. The next call opens a new handle.
            self.reopens += 1
            self._drop_handle()
            log.warning("kstat_chain_update failed; the kstat handle is closed and "
                        "reopened at the next collection", error=str(exc),
                        reopens=self.reopens)
            raise
        if kcid != 0 or self._stale:
            self._walk(kc)
            self.chain_id = kc.contents.kc_chain_id

    def _walk(self, kc: Any) -> None:
        by_module: dict[str, list[_Entry]] = {}
        every: list[_Entry] = []
        skipped = 0
        # The headers kstat_chain_update kept keep their entries: a walk after zone
        # churn makes entries for the new kstats only, instead of a second set for
        # the whole chain while the first is still held.
        kept = {e.kid: e for e in self._all}
        # Walked by address: a pointer read from a header's ks_next field would keep
        # that header's view alive, one per kstat, for as long as the walk is kept.
        addr = _pointer_field(kc.contents, kstat_ctl_t.kc_chain)
        while addr:
            header = kstat_t.from_address(addr)
            if header.ks_type in DECODED_TYPES:
                entry = kept.get(header.ks_kid) or _Entry(header)
                by_module.setdefault(entry.module, []).append(entry)
                every.append(entry)
            else:
                skipped += 1
            addr = _pointer_field(header, kstat_t.ks_next)
        self._by_module = by_module
        self._all = every
        self._stale = False
        self.chain_walks += 1
        log.debug("kstat chain walked", kstats=len(every), skipped_raw_intr=skipped)

    def _read(
        self, kc: Any, entry: _Entry, header: kstat_t, failed_with: int | None = None
    ) -> int:
        """Read one kstat (``header``, the entry's) with the bounded libkstat steps; -1
        (counted, logged) when it could not be read."""
        key = entry.key
        wait = 0.0 if key in self._invalid else self.invalid_wait
        kcid = self._lib.read(kc, header, wait, failed_with)
        if kcid == -1:
            self._read_failed(entry, ctypes.get_errno())
        elif self._invalid:
            self._invalid.discard(key)
        return kcid

    def _read_failed(self, entry: _Entry, err: int) -> None:
        if err == errno.EAGAIN:
            # Still invalid after the bounded wait (libkstat would wait for ever):
            # skipped; tried once, without waiting, at each later read.
            self.invalid_skips += 1
            if entry.key not in self._invalid:
                self._invalid.add(entry.key)
                log.warning("kstat stays invalid (EAGAIN); skipped until it is valid",
                            kstat=":".join(map(str, entry.key)),
                            waited_seconds=self.invalid_wait)
            return
        if err == errno.ENXIO:
            # Gone since the chain update (a zone halted): not an error. Walk the
            # chain again next time so the freed header is never touched.
            self.vanished += 1
            self._stale = True
            log.debug("kstat vanished", kstat=":".join(map(str, entry.key)))
            return
        self.read_errors += 1
        if entry.key not in self._warned:
            if len(self._warned) >= 10000:  # zones come and go; keep the memory bounded
                self._warned.clear()
            self._warned.add(entry.key)
            log.warning(
                "kstat_read failed; skipping this kstat",
                kstat=":".join(map(str, entry.key)),
                errno=errno.errorcode.get(err, str(err)),
                error=os.strerror(err) if err else "unknown error",
            )


@dataclass(frozen=True)
class KstatHealth:
    """What the live kstat source went through (counters since the agent started)."""

    reopens: int  # handles closed after kstat_chain_update failed (reopened next time)
    vanished: int  # kstats gone between the chain update and their read
    invalid: int  # reads skipped because the kstat stayed invalid (EAGAIN)
    errors: int  # other failed reads


# The name the agent's runtime uses for the live source: LiveKstats(library, modules).
LiveKstats = KstatReader
