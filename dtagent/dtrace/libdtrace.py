"""A thin ctypes binding of libdtrace: the consumer calls dtagent needs, nothing more.

Why not python-dtrace (tmetsch/python-dtrace, dtrace_cython/consumer.pyx): 64-bit values
read through a 32-bit int, no llquantize, no drop or error handler, the GIL held while it sleeps.
ctypes needs no compiler on the host (the global zone has none) and releases the GIL
around every foreign call.

Layouts are the illumos LP64 ones; each Structure names the header it comes from.
libdtrace is MT-Unsafe: one :class:`Handle` is used by one thread (the worker process
has only one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# usr/src/lib/libdtrace/common/dtrace.h
DTRACE_VERSION = 3
DTRACE_C_ZDEFS = 0x0004
DTRACE_PROBESPEC_NAME = 3  # usr/src/uts/common/sys/dtrace.h dtrace_probespec_t
DTRACE_WORKSTATUS_ERROR = -1
DTRACE_WORKSTATUS_OKAY = 0
DTRACE_WORKSTATUS_DONE = 1
DTRACE_STATUS_NONE = 0
DTRACE_STATUS_OKAY = 1
DTRACE_STATUS_EXITED = 2
DTRACE_STATUS_FILLED = 3
DTRACE_STATUS_STOPPED = 4
DTRACE_HANDLE_ABORT = -1
DTRACE_HANDLE_OK = 0
DTRACE_AGGWALK_ERROR = -1
DTRACE_AGGWALK_NEXT = 0
DTRACE_AGGWALK_ABORT = 1
DTRACE_AGGWALK_CLEAR = 2
DTRACE_AGGWALK_REMOVE = 5

# usr/src/uts/common/sys/dtrace.h: DTRACEACT_AGGREGATION (0x0700) + 1 … 9
DTRACEACT_AGGREGATION = 0x0700
DTRACEAGG_COUNT = DTRACEACT_AGGREGATION + 1
DTRACEAGG_MIN = DTRACEACT_AGGREGATION + 2
DTRACEAGG_MAX = DTRACEACT_AGGREGATION + 3
DTRACEAGG_AVG = DTRACEACT_AGGREGATION + 4
DTRACEAGG_SUM = DTRACEACT_AGGREGATION + 5
DTRACEAGG_STDDEV = DTRACEACT_AGGREGATION + 6
DTRACEAGG_QUANTIZE = DTRACEACT_AGGREGATION + 7
DTRACEAGG_LQUANTIZE = DTRACEACT_AGGREGATION + 8
DTRACEAGG_LLQUANTIZE = DTRACEACT_AGGREGATION + 9
FUNCTION_OF_ACTION = {
    DTRACEAGG_COUNT: "count",
    DTRACEAGG_MIN: "min",
    DTRACEAGG_MAX: "max",
    DTRACEAGG_AVG: "avg",
    DTRACEAGG_SUM: "sum",
    DTRACEAGG_STDDEV: "stddev",
    DTRACEAGG_QUANTIZE: "quantize",
    DTRACEAGG_LQUANTIZE: "lquantize",
    DTRACEAGG_LLQUANTIZE: "llquantize",
}
DTRACE_QUANTIZE_NBUCKETS = 127

# usr/src/lib/libdtrace/common/dtrace.h: dtrace_dropkind_t, in order
DROP_KINDS = (
    "principal",  # DTRACEDROP_PRINCIPAL
    "aggregation",  # DTRACEDROP_AGGREGATION
    "dynamic",  # DTRACEDROP_DYNAMIC
    "dynamic_rinse",  # DTRACEDROP_DYNRINSE
    "dynamic_dirty",  # DTRACEDROP_DYNDIRTY
    "speculative",  # DTRACEDROP_SPEC
    "speculative_busy",  # DTRACEDROP_SPECBUSY
    "speculative_unavailable",  # DTRACEDROP_SPECUNAVAIL
    "stack_string_overflow",  # DTRACEDROP_STKSTROVERFLOW
    "error_in_error_probe",  # DTRACEDROP_DBLERROR
)

DTRACE_PROVNAMELEN = 64
DTRACE_MODNAMELEN = 64
DTRACE_FUNCNAMELEN = 128
DTRACE_NAMELEN = 64


class DTraceRecDesc(ctypes.Structure):
    """dtrace_recdesc_t, 32 bytes (illumos-gate usr/src/uts/common/sys/dtrace.h)."""

    _fields_ = [
        ("dtrd_action", ctypes.c_uint16),  # dtrace_actkind_t
        ("dtrd_size", ctypes.c_uint32),
        ("dtrd_offset", ctypes.c_uint32),
        ("dtrd_alignment", ctypes.c_uint16),
        ("dtrd_format", ctypes.c_uint16),
        ("dtrd_arg", ctypes.c_uint64),
        ("dtrd_uarg", ctypes.c_uint64),
    ]


class DTraceProbeDesc(ctypes.Structure):
    """dtrace_probedesc_t, 324 bytes (illumos-gate usr/src/uts/common/sys/dtrace.h)."""

    _fields_ = [
        ("dtpd_id", ctypes.c_uint32),  # dtrace_id_t
        ("dtpd_provider", ctypes.c_char * DTRACE_PROVNAMELEN),
        ("dtpd_mod", ctypes.c_char * DTRACE_MODNAMELEN),
        ("dtpd_func", ctypes.c_char * DTRACE_FUNCNAMELEN),
        ("dtpd_name", ctypes.c_char * DTRACE_NAMELEN),
    ]


class DTraceEprobeDesc(ctypes.Structure):
    """dtrace_eprobedesc_t, records from offset 24
    (illumos-gate usr/src/uts/common/sys/dtrace.h)."""

    _fields_ = [
        ("dtepd_epid", ctypes.c_uint32),  # dtrace_epid_t
        ("dtepd_probeid", ctypes.c_uint32),  # dtrace_id_t
        ("dtepd_uarg", ctypes.c_uint64),
        ("dtepd_size", ctypes.c_uint32),
        ("dtepd_nrecs", ctypes.c_int),
        ("dtepd_rec", DTraceRecDesc * 1),  # variable length
    ]


class DTraceAggDesc(ctypes.Structure):
    """dtrace_aggdesc_t, records from offset 40 (illumos-gate usr/src/uts/common/sys/dtrace.h;
    DTRACE_PTR(char, dtagd_name) is a plain pointer on _LP64)."""

    _fields_ = [
        ("dtagd_name", ctypes.c_char_p),
        ("dtagd_varid", ctypes.c_int64),  # dtrace_aggvarid_t
        ("dtagd_flags", ctypes.c_int),
        ("dtagd_id", ctypes.c_uint32),  # dtrace_aggid_t
        ("dtagd_epid", ctypes.c_uint32),  # dtrace_epid_t
        ("dtagd_size", ctypes.c_uint32),
        ("dtagd_nrecs", ctypes.c_int),
        ("dtagd_pad", ctypes.c_uint32),
        ("dtagd_rec", DTraceRecDesc * 1),  # variable length
    ]


class DTraceAggData(ctypes.Structure):
    """struct dtrace_aggdata, 96 bytes (illumos-gate usr/src/lib/libdtrace/common/dtrace.h)."""

    _fields_ = [
        ("dtada_handle", ctypes.c_void_p),
        ("dtada_desc", ctypes.POINTER(DTraceAggDesc)),
        ("dtada_edesc", ctypes.POINTER(DTraceEprobeDesc)),
        ("dtada_pdesc", ctypes.POINTER(DTraceProbeDesc)),
        ("dtada_data", ctypes.c_void_p),  # caddr_t
        ("dtada_normal", ctypes.c_uint64),
        ("dtada_size", ctypes.c_size_t),
        ("dtada_delta", ctypes.c_void_p),  # caddr_t
        ("dtada_percpu", ctypes.c_void_p),  # caddr_t *
        ("dtada_percpu_delta", ctypes.c_void_p),  # caddr_t *
        ("dtada_total", ctypes.c_int64),
        ("dtada_minbin", ctypes.c_uint16),
        ("dtada_maxbin", ctypes.c_uint16),
        ("dtada_flags", ctypes.c_uint32),
    ]


class DTraceDropData(ctypes.Structure):
    """dtrace_dropdata_t, 40 bytes (illumos-gate usr/src/lib/libdtrace/common/dtrace.h)."""

    _fields_ = [
        ("dtdda_handle", ctypes.c_void_p),
        ("dtdda_cpu", ctypes.c_int),  # processorid_t
        ("dtdda_kind", ctypes.c_int),  # dtrace_dropkind_t (an enum: int)
        ("dtdda_drops", ctypes.c_uint64),
        ("dtdda_total", ctypes.c_uint64),
        ("dtdda_msg", ctypes.c_char_p),
    ]


class DTraceErrData(ctypes.Structure):
    """dtrace_errdata_t, 56 bytes (illumos-gate usr/src/lib/libdtrace/common/dtrace.h)."""

    _fields_ = [
        ("dteda_handle", ctypes.c_void_p),
        ("dteda_edesc", ctypes.POINTER(DTraceEprobeDesc)),
        ("dteda_pdesc", ctypes.POINTER(DTraceProbeDesc)),
        ("dteda_cpu", ctypes.c_int),  # processorid_t
        ("dteda_action", ctypes.c_int),
        ("dteda_offset", ctypes.c_int),
        ("dteda_fault", ctypes.c_int),
        ("dteda_addr", ctypes.c_uint64),
        ("dteda_msg", ctypes.c_char_p),
    ]


class DTraceBufData(ctypes.Structure):
    """dtrace_bufdata_t, 48 bytes (illumos-gate usr/src/lib/libdtrace/common/dtrace.h)."""

    _fields_ = [
        ("dtbda_handle", ctypes.c_void_p),
        ("dtbda_buffered", ctypes.c_char_p),
        ("dtbda_probe", ctypes.c_void_p),
        ("dtbda_recdesc", ctypes.POINTER(DTraceRecDesc)),
        ("dtbda_aggdata", ctypes.POINTER(DTraceAggData)),
        ("dtbda_flags", ctypes.c_uint32),
    ]


class DTraceAttribute(ctypes.Structure):
    """dtrace_attribute_t, three uint8_t (illumos-gate usr/src/uts/common/sys/dtrace.h)."""

    _fields_ = [
        ("dtat_name", ctypes.c_uint8),  # dtrace_stability_t
        ("dtat_data", ctypes.c_uint8),  # dtrace_stability_t
        ("dtat_class", ctypes.c_uint8),  # dtrace_class_t
    ]


class DTraceProgInfo(ctypes.Structure):
    """dtrace_proginfo_t, 24 bytes (illumos-gate usr/src/lib/libdtrace/common/dtrace.h)."""

    _fields_ = [
        ("dpi_descattr", DTraceAttribute),
        ("dpi_stmtattr", DTraceAttribute),
        ("dpi_aggregates", ctypes.c_uint),
        ("dpi_recgens", ctypes.c_uint),
        ("dpi_matches", ctypes.c_uint),
        ("dpi_speculations", ctypes.c_uint),
    ]


# Every Structure, by the C type name the stand-in's layout table uses.
STRUCTURES: dict[str, type[ctypes.Structure]] = {
    "dtrace_recdesc_t": DTraceRecDesc,
    "dtrace_aggdesc_t": DTraceAggDesc,
    "dtrace_eprobedesc_t": DTraceEprobeDesc,
    "dtrace_probedesc_t": DTraceProbeDesc,
    "dtrace_aggdata_t": DTraceAggData,
    "dtrace_dropdata_t": DTraceDropData,
    "dtrace_errdata_t": DTraceErrData,
    "dtrace_bufdata_t": DTraceBufData,
    "dtrace_proginfo_t": DTraceProgInfo,
}

# Callback types (usr/src/lib/libdtrace/common/dtrace.h)
AGGREGATE_F = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DTraceAggData), ctypes.c_void_p)
HANDLE_DROP_F = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(DTraceDropData), ctypes.c_void_p
)
HANDLE_ERR_F = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(DTraceErrData), ctypes.c_void_p)
HANDLE_BUFFERED_F = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(DTraceBufData), ctypes.c_void_p
)


class DTraceError(Exception):
    """A libdtrace call failed; the message is libdtrace's (dtrace_errmsg)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def load_library(path: str) -> ctypes.CDLL:
    """Load libdtrace (a path, or a name such as libdtrace.so.1) and declare its API."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        found = ctypes.util.find_library("dtrace") if path.startswith("libdtrace") else None
        if found is None:
            raise
        lib = ctypes.CDLL(found)
    vp, cp, c_int, c_uint = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint
    protos: dict[str, tuple[list[Any], Any]] = {
        "dtrace_open": ([c_int, c_int, ctypes.POINTER(c_int)], vp),
        "dtrace_close": ([vp], None),
        "dtrace_go": ([vp], c_int),
        "dtrace_stop": ([vp], c_int),
        "dtrace_errno": ([vp], c_int),
        "dtrace_errmsg": ([vp, c_int], cp),
        "dtrace_setopt": ([vp, cp, cp], c_int),
        "dtrace_handle_drop": ([vp, HANDLE_DROP_F, vp], c_int),
        "dtrace_handle_err": ([vp, HANDLE_ERR_F, vp], c_int),
        "dtrace_handle_buffered": ([vp, HANDLE_BUFFERED_F, vp], c_int),
        "dtrace_program_strcompile": ([vp, cp, c_int, c_uint, c_int, vp], vp),
        "dtrace_program_exec": ([vp, vp, ctypes.POINTER(DTraceProgInfo)], c_int),
        "dtrace_status": ([vp], c_int),
        "dtrace_work": ([vp, vp, vp, vp, vp], c_int),
        "dtrace_aggregate_snap": ([vp], c_int),
        "dtrace_aggregate_walk": ([vp, AGGREGATE_F, vp], c_int),
    }
    for name, (argtypes, restype) in protos.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


@dataclass(frozen=True)
class Drop:
    kind: str
    cpu: int
    drops: int
    total: int
    message: str


@dataclass(frozen=True)
class RuntimeErrorInfo:
    epid: int
    probe: str
    cpu: int
    fault: int
    message: str


@dataclass(frozen=True)
class KeyField:
    """One tuple record of an aggregation key: its raw bytes (size = record size)."""

    raw: bytes

    def as_int(self) -> int:
        """A signed integer of the record's size (1, 2, 4 or 8 bytes, native order)."""
        if len(self.raw) not in (1, 2, 4, 8):
            raise ValueError(f"a {len(self.raw)}-byte key is not an integer")
        return int.from_bytes(self.raw, _BYTEORDER, signed=True)

    def as_str(self) -> str:
        return self.raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class AggEntry:
    """One key of one aggregation, as a walk sees it (with REMOVE: this interval's)."""

    name: str
    varid: int
    epid: int
    keys: tuple[KeyField, ...]
    function: str
    arg: int  # the lquantize/llquantize parameter word, 0 otherwise
    value: int | tuple[int, int] | tuple[int, ...]  # scalar, (count, sum), or buckets


_BYTEORDER: Any = sys.byteorder  # keys are in the host's native order


def decode_aggdata(data: DTraceAggData) -> AggEntry:
    """Decode a ``dtrace_aggdata_t``: record 0 is the aggregation id, the last record
    the aggregating action, the ones between the key (dt_cc.c ``dt_compile_agg``)."""
    desc = data.dtada_desc.contents
    nrecs = desc.dtagd_nrecs
    recs = ctypes.cast(
        ctypes.addressof(desc) + DTraceAggDesc.dtagd_rec.offset,
        ctypes.POINTER(DTraceRecDesc * nrecs),
    ).contents
    base = data.dtada_data
    if not base or nrecs < 2:
        raise ValueError("aggregation data without records")
    keys = tuple(
        KeyField(ctypes.string_at(base + recs[i].dtrd_offset, recs[i].dtrd_size))
        for i in range(1, nrecs - 1)
    )
    last = recs[nrecs - 1]
    action = last.dtrd_action
    function = FUNCTION_OF_ACTION.get(action)
    if function is None:
        raise ValueError(f"action {action:#x} is not an aggregating action")
    words = last.dtrd_size // 8
    values = (ctypes.c_int64 * words).from_address(base + last.dtrd_offset)
    arg = 0
    value: int | tuple[int, int] | tuple[int, ...]
    if function in ("count", "sum", "min", "max"):
        value = int(values[0])
    elif function in ("avg", "stddev"):  # [count, sum, ...]
        value = (int(values[0]), int(values[1]))
    elif function == "quantize":
        value = tuple(values[:DTRACE_QUANTIZE_NBUCKETS])
    else:  # lquantize, llquantize: the parameter word, then the buckets
        arg = int(values[0]) & (2**64 - 1)
        value = tuple(values[1:words])
    raw_name = desc.dtagd_name or b""
    name = raw_name.decode("utf-8", "replace").lstrip("@") or "_"
    return AggEntry(name, int(desc.dtagd_varid), int(desc.dtagd_epid), keys, function, arg,
                    value)


def lquantize_params(arg: int) -> tuple[int, int, int]:
    """(base, levels, step) from the parameter word (DTRACE_LQUANTIZE_* macros)."""
    step = (arg >> 48) & 0xFFFF
    levels = (arg >> 32) & 0xFFFF
    base = arg & 0xFFFFFFFF
    if base >= 2**31:
        base -= 2**32
    return base, levels, step


def llquantize_params(arg: int) -> tuple[int, int, int, int]:
    """(factor, low, high, nsteps) from the parameter word (DTRACE_LLQUANTIZE_*)."""
    return (arg >> 48) & 0xFFFF, (arg >> 32) & 0xFFFF, (arg >> 16) & 0xFFFF, arg & 0xFFFF


@dataclass
class Program:
    name: str
    pointer: int
    matches: int = 0
    first_epid: int = 0


class Handle:
    """One libdtrace consumer handle (dtrace_open … dtrace_close)."""

    def __init__(self, lib: ctypes.CDLL, flags: int = 0) -> None:
        self.lib = lib
        err = ctypes.c_int(0)
        handle = lib.dtrace_open(DTRACE_VERSION, flags, ctypes.byref(err))
        if not handle:
            raise DTraceError(
                f"dtrace_open failed: {self._msg(None, err.value)}", err.value
            )
        self.handle: int | None = handle
        self._callbacks: list[Any] = []  # keep ctypes callbacks alive

    def _msg(self, handle: int | None, err: int) -> str:
        raw = self.lib.dtrace_errmsg(handle, err)
        return raw.decode("utf-8", "replace").strip() if raw else f"error {err}"

    def _h(self) -> int:
        if self.handle is None:
            raise DTraceError("the handle is closed")
        return self.handle

    def error(self) -> DTraceError:
        h = self._h()
        err = int(self.lib.dtrace_errno(h))
        return DTraceError(self._msg(h, err), err)

    def setopt(self, name: str, value: str | None = None) -> None:
        arg = value.encode() if value is not None else None
        if self.lib.dtrace_setopt(self._h(), name.encode(), arg) != 0:
            exc = self.error()
            raise DTraceError(f"option {name}={value}: {exc}", exc.errno)

    def handle_drop(self, callback: Callable[[Drop], None]) -> None:
        def trampoline(ptr: Any, _arg: Any) -> int:
            try:
                d = ptr.contents
                kind = DROP_KINDS[d.dtdda_kind] if 0 <= d.dtdda_kind < len(DROP_KINDS) \
                    else f"kind_{d.dtdda_kind}"
                callback(Drop(kind, d.dtdda_cpu, int(d.dtdda_drops), int(d.dtdda_total),
                              (d.dtdda_msg or b"").decode("utf-8", "replace").strip()))
            except Exception:  # a Python error must never abort tracing
                pass
            return DTRACE_HANDLE_OK

        fn = HANDLE_DROP_F(trampoline)
        self._callbacks.append(fn)
        if self.lib.dtrace_handle_drop(self._h(), fn, None) != 0:
            raise self.error()

    def handle_err(self, callback: Callable[[RuntimeErrorInfo], None]) -> None:
        """Register the runtime error handler (must come before :meth:`go`)."""

        def trampoline(ptr: Any, _arg: Any) -> int:
            try:
                e = ptr.contents
                epid = e.dteda_edesc.contents.dtepd_epid if e.dteda_edesc else 0
                probe = ""
                if e.dteda_pdesc:
                    p = e.dteda_pdesc.contents
                    probe = b":".join(
                        (p.dtpd_provider, p.dtpd_mod, p.dtpd_func, p.dtpd_name)
                    ).decode("utf-8", "replace")
                callback(RuntimeErrorInfo(int(epid), probe, e.dteda_cpu, e.dteda_fault,
                                          (e.dteda_msg or b"").decode("utf-8",
                                                                      "replace").strip()))
            except Exception:
                pass
            return DTRACE_HANDLE_OK

        fn = HANDLE_ERR_F(trampoline)
        self._callbacks.append(fn)
        if self.lib.dtrace_handle_err(self._h(), fn, None) != 0:
            raise self.error()

    def handle_buffered(self, callback: Callable[[str], None]) -> None:
        """printf()/trace() output (the agent's scripts print nothing; logged)."""

        def trampoline(ptr: Any, _arg: Any) -> int:
            try:
                raw = ptr.contents.dtbda_buffered
                if raw:
                    callback(raw.decode("utf-8", "replace"))
            except Exception:
                pass
            return DTRACE_HANDLE_OK

        fn = HANDLE_BUFFERED_F(trampoline)
        self._callbacks.append(fn)
        if self.lib.dtrace_handle_buffered(self._h(), fn, None) != 0:
            raise self.error()

    def compile(self, name: str, source: str, cflags: int = 0) -> Program:
        """dtrace_program_strcompile; DTraceError carries the compiler's message."""
        ptr = self.lib.dtrace_program_strcompile(
            self._h(), source.encode(), DTRACE_PROBESPEC_NAME, cflags, 0, None
        )
        if not ptr:
            raise self.error()
        return Program(name, ptr)

    def exec(self, program: Program) -> Program:
        """dtrace_program_exec: enables the program's probes (not yet tracing)."""
        info = DTraceProgInfo()
        if self.lib.dtrace_program_exec(self._h(), program.pointer, ctypes.byref(info)) != 0:
            raise self.error()
        program.matches = int(info.dpi_matches)
        return program

    def go(self) -> None:
        if self.lib.dtrace_go(self._h()) != 0:
            raise self.error()

    def status(self) -> int:
        rc = int(self.lib.dtrace_status(self._h()))
        if rc == -1:
            raise self.error()
        return rc

    def work(self) -> int:
        """dtrace_work with no output file and the default (no-op) consumers."""
        return int(self.lib.dtrace_work(self._h(), None, None, None, None))

    def snapshot(self) -> None:
        if self.lib.dtrace_aggregate_snap(self._h()) != 0:
            raise self.error()

    def walk(self, callback: Callable[[AggEntry], None], remove: bool = True) -> int:
        """Walk every aggregation entry; with ``remove`` each entry is removed after
        the callback (so each walk is a delta). Entries that fail to decode are
        removed too (and counted in the return value), never left to accumulate."""
        failures = 0

        def trampoline(ptr: Any, _arg: Any) -> int:
            nonlocal failures
            try:
                callback(decode_aggdata(ptr.contents))
            except Exception:
                failures += 1
            return DTRACE_AGGWALK_REMOVE if remove else DTRACE_AGGWALK_NEXT

        fn = AGGREGATE_F(trampoline)
        if self.lib.dtrace_aggregate_walk(self._h(), fn, None) != 0:
            raise self.error()
        return failures

    def stop(self) -> None:
        if self.lib.dtrace_stop(self._h()) != 0:
            raise self.error()

    def close(self) -> None:
        if self.handle is not None:
            self.lib.dtrace_close(self.handle)
            self.handle = None
