"""Python side of the libkstat stand-in: its control API, and loading whole snapshots."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

from dtagent.snapshot import KSTAT_TYPE_IO, KSTAT_TYPE_NAMED, Kstat
from tests.native import build_shared

IO_ORDER = [
    "nread",
    "nwritten",
    "reads",
    "writes",
    "wtime",
    "wlentime",
    "wlastupdate",
    "rtime",
    "rlentime",
    "rlastupdate",
    "wcnt",
    "rcnt",
]


def prototypes(lib: ctypes.CDLL) -> ctypes.CDLL:
    c_char_p, c_int, c_size_t = ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    u64, i64 = ctypes.c_uint64, ctypes.c_int64
    protos: dict[str, tuple[list[object], object]] = {
        "stub_layout_count": ([], c_size_t),
        "stub_layout_type": ([c_size_t], c_char_p),
        "stub_layout_field": ([c_size_t], c_char_p),
        "stub_layout_offset": ([c_size_t], c_size_t),
        "stub_layout_size": ([c_size_t], c_size_t),
        "stub_reset": ([], None),
        "stub_add_kstat": ([c_char_p, c_int, c_char_p, c_char_p, c_int], c_int),
        "stub_add_named": ([c_char_p, c_int, c_char_p, c_char_p], c_int),
        "stub_remove": ([c_char_p, c_int, c_char_p], c_int),
        "stub_add_stat_char": ([c_int, c_char_p, c_char_p, c_size_t], None),
        "stub_add_stat_int32": ([c_int, c_char_p, ctypes.c_int32], None),
        "stub_add_stat_uint32": ([c_int, c_char_p, ctypes.c_uint32], None),
        "stub_add_stat_int64": ([c_int, c_char_p, i64], None),
        "stub_add_stat_uint64": ([c_int, c_char_p, u64], None),
        "stub_add_stat_float": ([c_int, c_char_p, ctypes.c_float], None),
        "stub_add_stat_double": ([c_int, c_char_p, ctypes.c_double], None),
        "stub_add_stat_string": ([c_int, c_char_p, c_char_p], None),
        "stub_add_blank": ([c_int], None),
        "stub_set_stat_uint64": ([c_int, c_char_p, u64], None),
        "stub_set_io": ([c_int, ctypes.POINTER(u64)], None),
        "stub_add_timer": ([c_int, c_char_p, u64, ctypes.POINTER(i64)], None),
        "stub_set_raw": ([c_int, ctypes.c_void_p, c_size_t], None),
        "stub_set_hrtime": ([i64], None),
        "stub_set_crtime": ([c_int, i64], None),
        "stub_fail_next_read": ([c_char_p, c_int, c_char_p, c_int], c_int),
        "stub_remove_on_read": ([c_char_p, c_int, c_char_p], c_int),
        "stub_eagain": ([c_char_p, c_int, c_char_p, c_int], c_int),
        "stub_set_flags": ([c_int, c_int], None),
        "stub_fail_open": ([c_int], None),
        "stub_fail_chain_update": ([c_int], None),
        "stub_read_count": ([c_char_p], ctypes.c_ulong),
        "stub_eagain_retries": ([], ctypes.c_ulong),
        "stub_freed_headers": ([], ctypes.c_ulong),
        "stub_slots": ([], ctypes.c_ulong),
        "stub_kernel_bytes": ([], c_size_t),
    }
    for name, (argtypes, restype) in protos.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


def open_stub() -> ctypes.CDLL:
    """The stand-in, built and loaded (one copy per process, shared with the agent)."""
    return prototypes(ctypes.CDLL(str(build_shared("libkstat_stub.c"))))


def load_kstats(lib: ctypes.CDLL, kstats: Iterable[Kstat]) -> None:
    """Put kstats into the stand-in's chain, typed as the kernel would publish them."""
    for ks in kstats:
        module, name, klass = ks.module.encode(), ks.name.encode(), ks.ks_class.encode()
        if ks.ks_type == KSTAT_TYPE_IO:
            h = lib.stub_add_kstat(module, ks.instance, name, klass, KSTAT_TYPE_IO)
            values = (ctypes.c_uint64 * 12)(*(int(ks.data.get(f, 0)) for f in IO_ORDER))
            lib.stub_set_io(h, values)
            if ks.crtime:
                lib.stub_set_crtime(h, ks.crtime)
            continue
        assert ks.ks_type == KSTAT_TYPE_NAMED, ks
        h = lib.stub_add_named(module, ks.instance, name, klass)
        if ks.crtime:
            lib.stub_set_crtime(h, ks.crtime)
        for stat, value in ks.data.items():
            key = stat.encode()
            if isinstance(value, str):
                lib.stub_add_stat_string(h, key, value.encode())
            elif isinstance(value, float):
                lib.stub_add_stat_double(h, key, value)
            elif value < 0:
                lib.stub_add_stat_int64(h, key, value)
            else:
                lib.stub_add_stat_uint64(h, key, value)
