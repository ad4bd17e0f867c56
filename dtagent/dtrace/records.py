"""The DTrace delta records: what the worker sends and the accumulator applies.

The worker writes one JSON object per line (the format of docs/bundle-dtrace.md, which
bundles keep too) and closes each walk with a tick. These types are that protocol:
the worker builds them and writes :func:`to_json`; the agent reads JSON with
:func:`parse`, which checks the shape of every field, so the accumulator gets typed
records and only checks them against the specs. Nothing malformed raises: it becomes
an :class:`Invalid` record carrying the reason, which the accumulator counts.

The worker's health and the batches a delta source hands out are here too, so the
supervisor (the live source) and the provider (which applies batches) share them
without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol, TypeGuard

KeyValue = int | str
STATUSES = ("running", "failed", "disabled")
StatusName = Literal["running", "failed", "disabled"]
_KIND_RE = re.compile(r"^[a-z_]{1,40}$")


@dataclass(frozen=True, slots=True)
class Value:
    """One key of a count/sum/min/max aggregation (an int) or of an avg ([count,
    total]) over one walk, or of a histogram's parallel sum()."""

    script: str
    agg: str
    key: tuple[KeyValue, ...]
    value: int | tuple[int, int]


@dataclass(frozen=True, slots=True)
class Histogram:
    """One key of a quantize/lquantize/llquantize aggregation over one walk: the
    non-empty buckets as (lower bound, count), the lowest bucket's bound None."""

    script: str
    agg: str
    key: tuple[KeyValue, ...]
    buckets: tuple[tuple[int | None, int], ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """Drops of one kind (libdtrace's dtrace_dropkind_t, by name) since the last walk."""

    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class ScriptError:
    """D runtime errors of one script since the last walk, with the last message."""

    script: str
    count: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class Status:
    """A script is running, failed to compile or enable (with why), or is disabled."""

    script: str
    status: StatusName
    message: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """The end of one walk (the worker's heartbeat)."""

    tick: int
    time: float | None = None


@dataclass(frozen=True, slots=True)
class Invalid:
    """Something that is not a record, and why (counted, never applied)."""

    problem: str
    raw: str


Record = Value | Histogram | Drop | ScriptError | Status | Tick | Invalid
Aggregate = Value | Histogram


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 300 else text[:300] + "…"


class _Bad(Exception):
    pass


def _str(obj: dict[str, object], name: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str):
        raise _Bad(f"{name} must be a string")
    return v


def _count(obj: dict[str, object], name: str, default: int | None = None) -> int:
    v = obj.get(name, default)
    if not _is_int(v) or v < 0:
        raise _Bad(f"{name} {v!r} must be a count")
    return v


def _parse(obj: dict[str, object]) -> Record:
    if "tick" in obj:
        tick, at = obj.get("tick"), obj.get("time")
        if not _is_int(tick) or not (at is None or isinstance(at, int | float)):
            raise _Bad("a tick needs an integer tick and a numeric time")
        return Tick(tick, None if at is None else float(at))
    if "drop" in obj:
        kind = obj.get("drop")
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise _Bad(f"drop kind {kind!r}")
        return Drop(kind, _count(obj, "count"))
    if "error" in obj:
        message = obj.get("message", "")
        return ScriptError(_str(obj, "script"), _count(obj, "count", 1), str(message))
    if "status" in obj:
        status = obj.get("status")
        if status not in STATUSES:
            raise _Bad(f"status {status!r}")
        assert isinstance(status, str)
        message = obj.get("message", "")
        return Status(_str(obj, "script"), status, str(message))  # type: ignore[arg-type]
    script, agg = _str(obj, "script"), _str(obj, "agg")
    raw_key = obj.get("key", [])
    if not isinstance(raw_key, list) or not all(
        _is_int(k) or isinstance(k, str) for k in raw_key
    ):
        raise _Bad("key must be a list of integers and strings")
    key = tuple(raw_key)
    if "buckets" in obj:
        raw = obj["buckets"]
        if not isinstance(raw, list):
            raise _Bad("buckets must be a list")
        pairs: list[tuple[int | None, int]] = []
        for pair in raw:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Bad("buckets must be [lo, n] pairs")
            lo, n = pair
            if not (lo is None or _is_int(lo)) or not _is_int(n) or n < 0:
                raise _Bad("bucket lo must be an integer or null, n a count")
            pairs.append((lo, n))
        return Histogram(script, agg, key, tuple(pairs))
    value = obj.get("value")
    if _is_int(value):
        return Value(script, agg, key, value)
    if isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
        return Value(script, agg, key, (value[0], value[1]))
    raise _Bad("value must be an integer or [count, total]")


def parse(obj: object) -> Record:
    """The record a decoded JSON object is; :class:`Invalid` (with why) if none."""
    if isinstance(obj, Value | Histogram | Drop | ScriptError | Status | Tick | Invalid):
        return obj
    if not isinstance(obj, dict):
        return Invalid("not an object", _short(obj))
    try:
        return _parse(obj)
    except _Bad as exc:
        return Invalid(str(exc), _short(obj))


def to_json(rec: Record) -> dict[str, object]:
    """The JSON object of a record (docs/bundle-dtrace.md)."""
    match rec:
        case Value(script, agg, key, value):
            return {"script": script, "agg": agg, "key": list(key),
                    "value": list(value) if isinstance(value, tuple) else value}
        case Histogram(script, agg, key, buckets):
            return {"script": script, "agg": agg, "key": list(key),
                    "buckets": [[lo, n] for lo, n in buckets]}
        case Drop(kind, count):
            return {"drop": kind, "count": count}
        case ScriptError(script, count, message):
            return {"error": "runtime", "script": script, "count": count, "message": message}
        case Status(script, status, message):
            out: dict[str, object] = {"script": script, "status": status}
            if message:
                out["message"] = message
            return out
        case Tick(tick, at):
            return {"tick": tick} if at is None else {"tick": tick, "time": at}
        case Invalid(problem, raw):
            return {"invalid": problem, "raw": raw}


# ------------------------------------------------------------ what sources hand out


@dataclass(frozen=True)
class WorkerHealth:
    up: bool | None  # None: there is no worker (nothing to run, or nothing recorded)
    restarts: int
    last_batch: float | None  # wall-clock time of the last batch (or heartbeat)
    lost: int = 0  # records dropped because nobody took them (queue cap)


# Delta records, and the zone map they belong with ({}: the scrape's own).
Batch = tuple[list[Record], dict[int, str]]


class DeltaSource(Protocol):
    def take(self) -> list[Batch]:
        """Every record that arrived since the last call, in order, in batches."""
        ...

    def health(self) -> WorkerHealth: ...
