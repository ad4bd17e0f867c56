"""The DTrace delta records: what the worker sends and the accumulator applies.

The worker writes one JSON object per line (the format of docs/bundle-dtrace.md, which
bundles keep too) and closes each walk with a tick. These types are that protocol:
the worker builds them and writes :func:`to_json`; the agent reads JSON with
:func:`parse`, which checks the shape of every field, so the accumulator gets typed
records and only checks them against the specs. Nothing malformed raises: it becomes
an :class:`Invalid` record carrying the reason, which the accumulator counts.

An aggregation's deltas of one walk travel as one record, :class:`Values` or
:class:`Histograms`: every key that changed, with its value or buckets in a parallel
list. Decoding one JSON line of a thousand keys costs a fifth of decoding a thousand
lines of one key, and the accumulator applies it with a dictionary lookup and a few
additions per key. The one-key records (:class:`Value`, :class:`Histogram`) are the
format bundles were first written in: they are still read, and :func:`per_key` turns a
batched record into them.

The worker's health and the batches a delta source hands out are here too, so the
supervisor (the live source) and the provider (which applies batches) share them
without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, Protocol, TypeGuard

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
class Values:
    """Every key of one count/sum/min/max/avg aggregation (or of a histogram's parallel
    sum()) that changed in one walk: ``keys[i]`` has ``values[i]``. The values are all
    integers, or all ``(count, total)`` pairs (avg)."""

    script: str
    agg: str
    keys: tuple[tuple[KeyValue, ...], ...]
    values: tuple[int, ...] | tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Histograms:
    """Every key of one quantize/lquantize/llquantize aggregation that changed in one
    walk: ``buckets[i]`` holds key i's non-empty buckets flat, ``lo, n, lo, n, ...``
    (``lo`` the bucket's lower bound, None for the lowest bucket)."""

    script: str
    agg: str
    keys: tuple[tuple[KeyValue, ...], ...]
    buckets: tuple[tuple[int | None, ...], ...]


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


Record = Value | Histogram | Values | Histograms | Drop | ScriptError | Status | Tick | Invalid
Aggregate = Value | Histogram
Aggregates = Values | Histograms
RECORD_TYPES = (Value, Histogram, Values, Histograms, Drop, ScriptError, Status, Tick, Invalid)


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


_INT = {int}
_KEY_TYPES = {int, str}
_LO_TYPES = {int, type(None)}


def _batch(obj: dict[str, object], script: str, agg: str) -> Record:
    """A batched record. The checks run over whole lists at a time (sets of types,
    slices), not element by element in Python: they cost little beside the decoding."""
    raw_keys = obj["keys"]
    if not isinstance(raw_keys, list) or not set(map(type, raw_keys)) <= {list}:
        raise _Bad("keys must be a list of keys (lists)")
    if len(set(map(len, raw_keys))) > 1:
        raise _Bad("keys must all have the same length")
    if not set(map(type, chain.from_iterable(raw_keys))) <= _KEY_TYPES:
        raise _Bad("a key must be a list of integers and strings")
    keys: tuple[tuple[KeyValue, ...], ...] = tuple(map(tuple, raw_keys))
    if "buckets" in obj:
        raw = obj["buckets"]
        if not isinstance(raw, list) or len(raw) != len(keys) or \
                not set(map(type, raw)) <= {list}:
            raise _Bad("buckets must be a list of one bucket list per key")
        if any(n % 2 for n in set(map(len, raw))):
            raise _Bad("a bucket list must be lo, n pairs")
        flat = list(chain.from_iterable(raw))
        counts = flat[1::2]
        try:  # min() of a None and an int raises: a None count is caught here too
            if not set(map(type, flat)) <= _LO_TYPES or (counts and min(counts) < 0):
                raise _Bad("bucket lo must be an integer or null, n a count")
        except TypeError:
            raise _Bad("bucket lo must be an integer or null, n a count") from None
        return Histograms(script, agg, keys, tuple(map(tuple, raw)))
    raw = obj.get("values")
    if not isinstance(raw, list) or len(raw) != len(keys):
        raise _Bad("values must be a list of one value per key")
    types = set(map(type, raw))
    if types <= _INT:
        return Values(script, agg, keys, tuple(raw))
    if types == {list} and set(map(len, raw)) == {2} and \
            set(map(type, chain.from_iterable(raw))) <= _INT:
        return Values(script, agg, keys, tuple(map(tuple, raw)))
    raise _Bad("values must be all integers or all [count, total]")


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
    if "keys" in obj:
        return _batch(obj, script, agg)
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
    if isinstance(obj, RECORD_TYPES):
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
        case Values(script, agg, keys, values):
            return {"script": script, "agg": agg, "keys": [list(k) for k in keys],
                    "values": [v if isinstance(v, int) else list(v) for v in values]}
        case Histograms(script, agg, keys, buckets):
            return {"script": script, "agg": agg, "keys": [list(k) for k in keys],
                    "buckets": [list(b) for b in buckets]}
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


def per_key(rec: Record) -> list[Record]:
    """A batched record as one :class:`Value` or :class:`Histogram` per key (the first
    bundle format; for messages and tests); any other record as itself."""
    if isinstance(rec, Values):
        values: tuple[int | tuple[int, int], ...] = rec.values
        return [Value(rec.script, rec.agg, k, v)
                for k, v in zip(rec.keys, values, strict=True)]
    if isinstance(rec, Histograms):
        return [Histogram(rec.script, rec.agg, k,
                          tuple(zip(b[0::2], b[1::2], strict=True)))  # type: ignore[arg-type]
                for k, b in zip(rec.keys, rec.buckets, strict=True)]
    return [rec]


def batched(rec: Aggregate) -> Aggregates:
    """A one-key record as the batched record of that key."""
    if isinstance(rec, Value):
        if isinstance(rec.value, int):
            return Values(rec.script, rec.agg, (rec.key,), (rec.value,))
        return Values(rec.script, rec.agg, (rec.key,), (rec.value,))
    flat = tuple(x for pair in rec.buckets for x in pair)
    return Histograms(rec.script, rec.agg, (rec.key,), (flat,))


def combine(records: Iterable[Record]) -> list[Record]:
    """The same deltas with each aggregation's keys in one batched record (in the place
    of its first key); the other records kept as they are, in order. Applying the
    result adds exactly what applying ``records`` adds."""
    out: list[Record] = []
    groups: dict[tuple[object, ...], tuple[int, list[tuple[KeyValue, ...]], list[Any]]] = {}
    for rec in records:
        if isinstance(rec, Value | Histogram):
            rec = batched(rec)
        if not isinstance(rec, Values | Histograms):
            out.append(rec)
            continue
        shape: tuple[Any, ...] = rec.buckets if isinstance(rec, Histograms) else rec.values
        kind = (type(rec), rec.script, rec.agg, bool(shape) and isinstance(shape[0], tuple))
        if kind not in groups:
            groups[kind] = (len(out), [], [])
            out.append(rec)  # replaced by the whole group below
        _, keys, values = groups[kind]
        keys.extend(rec.keys)
        values.extend(shape)
    for (cls, script, agg, _), (at, keys, values) in groups.items():
        out[at] = cls(script, agg, tuple(keys), tuple(values))  # type: ignore[operator]
    return out


# ------------------------------------------------------------ what sources hand out


@dataclass(frozen=True)
class WorkerHealth:
    up: bool | None  # None: there is no worker (nothing to run, or nothing recorded)
    restarts: int
    last_batch: float | None  # wall-clock time of the last batch (or heartbeat)
    lost: int = 0  # records (lines) dropped because nobody took them (queue cap)


# Delta records, and the zone map they belong with ({}: the scrape's own). The records
# may be an iterator, drawn once: the live source decodes them as they are applied.
Batch = tuple[Iterable[Record], dict[int, str]]


class DeltaSource(Protocol):
    def take(self) -> list[Batch]:
        """Every record that arrived since the last call, in order, in batches."""
        ...

    def health(self) -> WorkerHealth: ...
