"""Deltas in, cumulative Prometheus families out.

The worker walks every aggregation with REMOVE semantics, so each record is what
accumulated since the previous walk (docs/bundle-dtrace.md). The accumulator adds the
deltas up per series: counters and histograms only grow, whatever happens to the
worker. Zone ids become zonenames when a delta is applied, with the zone map of that
moment; series of zones that are gone are removed, so a zone id reused by another
zone after a reboot starts new series and never mixes with the old zone's.

Nothing a record contains can raise: invalid records are counted
(``dtagent_dtrace_records_rejected_total``) and logged once per script and aggregation.

Applying is the agent's busiest path on a large host (thousands of keys a second), so
each aggregation keeps, for the zone map of the moment, the series of every raw key it
has seen (``_Agg.cache``): a key seen before costs one dictionary lookup and a few
in-place additions; only a new key (or one whose zone id now names another zone) goes
through the checks, the label mapping and the series cap. Every count stays an exact
integer.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeAlias, cast

import structlog

from dtagent.dtrace.buckets import slot_of
from dtagent.dtrace.libdtrace import DROP_KINDS
from dtagent.dtrace.records import (
    Aggregates,
    Drop,
    Histogram,
    Histograms,
    Invalid,
    KeyValue,
    Record,
    ScriptError,
    Status,
    Tick,
    Value,
    Values,
    batched,
    parse,
    to_json,
)
from dtagent.dtrace.spec import AggregationSpec, ScriptSpec
from dtagent.metrics import MetricFamily, MetricSpec

log = structlog.get_logger("dtagent.dtrace")

DEFAULT_SERIES_CAP = 10000
OTHER = "other"
SRC = "the DTrace engine"

DROPS = MetricSpec(
    "dtagent_dtrace_drops_total",
    "counter",
    "DTrace drops by kind (aggregation buffer full, dynamic variables exhausted, ...); "
    "data was lost, tracing went on.",
    ("kind",),
    "",
    SRC,
)
ERRORS = MetricSpec(
    "dtagent_dtrace_errors_total",
    "counter",
    "D runtime errors (bad address, division by zero, ...) by script.",
    ("script",),
    "",
    SRC,
)
SCRIPT_ENABLED = MetricSpec(
    "dtagent_dtrace_script_enabled",
    "gauge",
    "1 if the D script is running, 0 if it is disabled or failed to compile/enable "
    "(the reason is in the log and in `dtagent dtrace list`).",
    ("script",),
    "",
    SRC,
)
SERIES_DROPPED = MetricSpec(
    "dtagent_dtrace_series_dropped_total",
    "counter",
    "Delta records refused because their metric reached dtrace.series_cap series.",
    ("metric",),
    "",
    SRC,
)
REJECTED = MetricSpec(
    "dtagent_dtrace_records_rejected_total",
    "counter",
    "Delta records not applied: invalid (see the log) or for a zone id that is not "
    "running.",
    ("reason",),
    "",
    SRC,
)
SELF_SPECS = (DROPS, ERRORS, SCRIPT_ENABLED, SERIES_DROPPED, REJECTED)

_UNITS = {"_seconds": "seconds", "_bytes": "bytes", "_ratio": "ratio"}


def unit_of(metric: str) -> str:
    base = metric.removesuffix("_total")
    for suffix, unit in _UNITS.items():
        if base.endswith(suffix):
            return unit
    return ""


def metric_spec(script: ScriptSpec, agg: AggregationSpec) -> MetricSpec:
    """The MetricSpec an aggregation is exported as."""
    params = ", ".join(str(p) for p in agg.params)
    return MetricSpec(
        agg.metric,
        "histogram" if agg.type == "histogram" else agg.type,  # type: ignore[arg-type]
        agg.help,
        agg.labels,
        unit_of(agg.metric),
        f"D script {script.name}.d: @{agg.name} = {agg.function}({params})",
        agg.le,
    )


# A histogram's slot counts: 8 bytes each in an array, not a list of int objects (at
# 1,000 zones, 14,000 series of 29 slots: 12 MiB less). A count that would pass 64 bits
# (never seen: 2^63 events) turns that series' counts into a list of Python ints.
Counts: TypeAlias = "array[int] | list[int]"  # array("q"), or a list after an overflow


def _zeros(n: int) -> Counts:
    return array("q", bytes(8 * n))


def _counts_of(values: Sequence[int]) -> Counts:
    try:
        return array("q", values)
    except OverflowError:
        return list(values)


@dataclass(slots=True)
class _Series:
    counts: Counts = field(default_factory=list)  # histogram slots (+Inf last)
    sum: int = 0  # histogram _sum / counter total, recorded units
    value: float = 0.0  # gauge
    avg: tuple[int, int] = (0, 0)
    batch: int = -1  # last batch that set the gauge
    zone: str | None = None


class _Agg:
    """One aggregation's state and series."""

    def __init__(self, script: ScriptSpec, spec: AggregationSpec) -> None:
        self.script = script
        self.spec = spec
        self.metric = metric_spec(script, spec)
        self.series: dict[tuple[str, ...], _Series] = {}
        self.buckets = spec.buckets() if spec.type == "histogram" else None
        self.le_idx = spec.le_buckets
        self.zone_pos = next((i for i, k in enumerate(spec.keys) if k.kind == "zoneid"), None)
        self.seen: list[set[str]] = [set() for _ in spec.keys]
        # bucket lower bound → le slot (None: not a boundary), filled as records come
        self.slots: dict[int | None, int | None] = {}
        # the same for the lower bounds that are boundaries only: a record's bounds are
        # mapped with it in C; it holds at most the scheme's buckets. (A cache of whole
        # bound lists, as before, held one entry per combination a key happened to
        # fill: 14,000 at 1,000 zones after a minute, growing to its cap.)
        self.valid_slots: dict[int | None, int] = {}
        # raw key → its series, for the accumulator's current zone map (the fast path);
        # entries whose zone id changed meaning are removed when the map changes
        self.cache: dict[tuple[KeyValue, ...], _Series] = {}

    def slot_of_lower(self, lo: int | None) -> int | None:
        try:
            return self.slots[lo]
        except KeyError:
            pass
        assert self.buckets is not None
        index = self.buckets.index_of_lower(lo)
        slot = None if index is None else slot_of(self.le_idx, index)
        if len(self.slots) < 100_000:
            self.slots[lo] = slot
        if slot is not None:
            self.valid_slots[lo] = slot
        return slot

    def new_series(self) -> _Series:
        if self.spec.type == "histogram":
            return _Series(counts=_zeros(len(self.spec.le) + 1))
        return _Series()


class _Invalid(Exception):
    pass


class Accumulator:
    """Cumulative DTrace metrics from delta records."""

    def __init__(
        self,
        specs: Sequence[ScriptSpec],
        series_cap: int = DEFAULT_SERIES_CAP,
        *,
        overrides: Mapping[str, bool] | None = None,
        running: Collection[str] | None = None,
    ) -> None:
        """``running``: scripts to count as running until a status record says
        otherwise (default: enabled by their spec and ``overrides``)."""
        self.series_cap = series_cap
        self.scripts = {s.name: s for s in specs}
        overrides = overrides or {}
        if running is None:
            running = [s.name for s in specs if overrides.get(s.name, s.enabled)]
        self.status: dict[str, tuple[str, str]] = {
            s.name: ("running", "") if s.name in running else ("disabled", "")
            for s in specs
        }
        self._aggs: dict[tuple[str, str], _Agg] = {}
        self._sums: dict[tuple[str, str], _Agg] = {}
        for s in specs:
            for a in s.aggregations:
                agg = _Agg(s, a)
                self._aggs[(s.name, a.name)] = agg
                if a.sum:
                    self._sums[(s.name, a.sum)] = agg
        self.drops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.series_dropped: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._batch = 0
        self._zones: dict[int, str] = {}  # the zone map the caches are valid for
        self._logged: set[tuple[str, str, str]] = set()
        self._last_error: dict[str, str] = {}
        # what a saved state is valid for: the declarations, the cap, the starting status
        self.basis = hashlib.sha256(repr((
            [(s.name, s.aggregations) for s in specs], series_cap, sorted(self.status.items()),
        )).encode()).hexdigest()[:16]

    def reconfigure(
        self,
        specs: Sequence[ScriptSpec],
        series_cap: int,
        *,
        overrides: Mapping[str, bool] | None = None,
        restarted: Collection[str] = (),
    ) -> None:
        """Take a reloaded config's scripts, keeping every counter and histogram whose
        aggregation is declared as before (a script's D text may change: its series go
        on). A changed declaration (buckets, keys, type) starts that metric afresh, a
        script that is gone takes its metrics with it. ``restarted``: scripts the worker
        starts again, whose status is "running" until it says otherwise."""
        overrides = overrides or {}
        old_aggs, old_status = self._aggs, self.status
        self.series_cap = series_cap
        self.scripts = {s.name: s for s in specs}
        self.status = {}
        for s in specs:
            on = overrides.get(s.name, s.enabled)
            if not on:
                self.status[s.name] = ("disabled", "")
            elif s.name in old_status and s.name not in restarted:
                self.status[s.name] = old_status[s.name]
            else:
                self.status[s.name] = ("running", "")
        self._aggs, self._sums = {}, {}
        for s in specs:
            for a in s.aggregations:
                agg = old_aggs.get((s.name, a.name))
                if agg is None:
                    agg = _Agg(s, a)
                elif agg.spec != a:
                    agg = _coarsened(agg, s, a) or _Agg(s, a)
                else:
                    agg.script, agg.metric = s, metric_spec(s, a)
                self._aggs[(s.name, a.name)] = agg
                if a.sum:
                    self._sums[(s.name, a.sum)] = agg

    # ----------------------------------------------------------------- applying

    def apply(self, records: Iterable[Record], zones: Mapping[int, str]) -> None:
        """Add one batch of delta records, mapping zone ids with ``zones``."""
        self._batch += 1
        if zones:
            self._use_zones(zones)
        for rec in records:
            try:
                self._apply_one(rec, zones)
            except _Invalid as exc:
                self._reject("invalid", rec, str(exc))
            except Exception as exc:  # belt and braces: a record never raises
                self._reject("invalid", rec, f"{type(exc).__name__}: {exc}")

    def _use_zones(self, zones: Mapping[int, str]) -> None:
        """Make ``zones`` the current zone map: series of zones that are gone are
        removed, cached keys whose zone id no longer names the same zone forgotten."""
        old = self._zones
        if zones == old:
            return
        changed = {zid for zid, name in old.items() if zones.get(zid) != name}
        self._zones = dict(zones)
        running = set(zones.values())
        for agg in self._aggs.values():
            pos = agg.zone_pos
            if pos is None:
                continue
            if changed:
                stale = [k for k in agg.cache if k[pos] in changed]
                for k in stale:
                    del agg.cache[k]
            gone = [k for k, s in agg.series.items() if s.zone not in running]
            for k in gone:
                del agg.series[k]

    def apply_json(self, objs: Iterable[object], zones: Mapping[int, str]) -> None:
        """:meth:`apply` for records still in their JSON form (docs/bundle-dtrace.md)."""
        self.apply([parse(o) for o in objs], zones)

    def _reject(self, reason: str, rec: Record, why: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count
        if isinstance(rec, Value | Histogram | Values | Histograms):
            ident = (rec.script, rec.agg, why if reason != "invalid" else why.split(":")[0])
        else:
            ident = ("?", "?", why)
        if reason == "invalid" and ident not in self._logged and len(self._logged) < 1000:
            self._logged.add(ident)
            if isinstance(rec, Invalid):
                shown = rec.raw
            elif isinstance(rec, Value | Histogram | Values | Histograms | Drop |
                            ScriptError | Status | Tick):
                shown = _short(to_json(rec))
            else:  # not a record at all (a caller's mistake): say what it is
                shown = _short(rec)
            log.warning("invalid DTrace delta record ignored", record=shown, problem=why)

    def _apply_one(self, rec: Record, zones: Mapping[int, str]) -> None:
        match rec:
            case Values() | Histograms():
                self._aggregate(rec, zones)
            case Value() | Histogram():
                self._aggregate(batched(rec), zones)
            case Drop(kind, count):
                self.drops[kind] = self.drops.get(kind, 0) + count
            case ScriptError():
                self._error(rec)
            case Status():
                self._status(rec)
            case Invalid(problem):
                raise _Invalid(problem)
            case Tick():
                pass
            case _:
                raise _Invalid(f"not a delta record: {type(rec).__name__}")

    def _error(self, rec: ScriptError) -> None:
        script = rec.script if rec.script in self.scripts else "unknown"
        self.errors[script] = self.errors.get(script, 0) + rec.count
        if rec.message and self._last_error.get(script) != rec.message:
            self._last_error[script] = rec.message
            log.warning("D runtime error", script=script, count=rec.count,
                        message=rec.message)

    def _status(self, rec: Status) -> None:
        if rec.script not in self.scripts:
            raise _Invalid(f"status {rec.status!r} of script {rec.script!r}")
        now = (rec.status, rec.message)
        if self.status.get(rec.script) != now and rec.status == "failed":
            log.warning("D script failed", script=rec.script, message=rec.message)
        self.status[rec.script] = now

    def _aggregate(self, rec: Aggregates, zones: Mapping[int, str]) -> None:
        """One aggregation's keys of one walk. Checks that hold for the whole record
        come first; then each key: its series from the cache, else from
        :meth:`_resolve`; a key that is refused is counted alone, the others apply."""
        if rec.script not in self.scripts:
            raise _Invalid(f"unknown script {rec.script!r}")
        key = (rec.script, rec.agg)
        agg = self._aggs.get(key)
        is_sum = agg is None
        if agg is None:
            agg = self._sums.get(key)
            if agg is None:
                raise _Invalid(f"unknown aggregation {rec.agg!r}")
        n = len(rec.keys)
        if not n:
            return
        if len(rec.keys[0]) != len(agg.spec.keys):
            self._reject("invalid", rec, f"key must be a list of {len(agg.spec.keys)}", n)
            return
        if isinstance(rec, Histograms):
            if is_sum or agg.buckets is None:
                what = "sum" if is_sum else agg.spec.function
                self._reject("invalid", rec, f"{what} value must be an integer, not buckets", n)
                return
            self._apply_buckets(agg, rec, zones)
        elif is_sum:
            self._apply_sums(agg, rec, zones)
        elif agg.buckets is not None:
            self._reject("invalid", rec, "a histogram record needs buckets", n)
        else:
            self._apply_values(agg, rec, zones)

    def _resolve(
        self, agg: _Agg, rec: Aggregates, i: int, zones: Mapping[int, str]
    ) -> _Series | None:
        """The series of key ``i`` of ``rec`` (the slow path, once per key and zone
        map): its labels checked and bounded, the zone mapped, the series cap applied.
        None when the key is refused (counted here)."""
        raw = rec.keys[i]
        labels: list[str] = []
        zone: str | None = None
        for pos, (k, v) in enumerate(zip(agg.spec.keys, raw, strict=True)):
            if k.kind == "string":
                if not isinstance(v, str):
                    self._reject_key("invalid", rec, i, f"key {pos} must be a string")
                    return None
                labels.append(self._bounded(agg, pos, v))
            elif not isinstance(v, int):
                self._reject_key("invalid", rec, i, f"key {pos} must be an integer")
                return None
            elif k.kind == "integer":
                labels.append(self._bounded(agg, pos, v))
            else:
                zone = zones.get(v)
                if zone is None:
                    self._reject_key("unknown_zone", rec, i, f"zone id {v} is not running")
                    return None
                labels.append(zone)
        series = self._series(agg, tuple(labels), zone)
        # raw keys map many to one (values bounded to "other"): cap what is remembered,
        # so distinct raw values never grow the cache past a few times the series
        if series is not None and len(agg.cache) < 4 * self.series_cap:
            agg.cache[raw] = series
        return series

    def _reject_key(self, reason: str, rec: Aggregates, i: int, why: str) -> None:
        """Refuse key ``i`` alone (shown as the one-key record it is)."""
        one: Aggregates
        if isinstance(rec, Values):
            one = Values(rec.script, rec.agg, (rec.keys[i],), (rec.values[i],))  # type: ignore[arg-type]
        else:
            one = Histograms(rec.script, rec.agg, (rec.keys[i],), (rec.buckets[i],))
        self._reject(reason, one, why)

    def _bounded(self, agg: _Agg, pos: int, value: str | int) -> str:
        k = agg.spec.keys[pos]
        text = str(value)
        if k.allow is not None and value not in k.allow:
            return OTHER
        if k.max_values is not None:
            seen = agg.seen[pos]
            if text not in seen:
                if len(seen) >= k.max_values:
                    return OTHER
                seen.add(text)
        return text

    def _series(self, agg: _Agg, labels: tuple[str, ...], zone: str | None) -> _Series | None:
        series = agg.series.get(labels)
        if series is None:
            if len(agg.series) >= self.series_cap:
                m = agg.spec.metric
                self.series_dropped[m] = self.series_dropped.get(m, 0) + 1
                return None
            series = agg.new_series()
            series.zone = zone
            agg.series[labels] = series
        return series

    def _apply_buckets(self, agg: _Agg, rec: Histograms, zones: Mapping[int, str]) -> None:
        """The fast path is a key seen before whose bounds are all known boundaries:
        one loop of in-place additions over its ``lo, n`` pairs, without building the
        bounds' or slots' lists first (the agent's busiest loop: half the DTrace path's
        CPU). Anything else (a new key, a bound not seen yet or not a boundary, a count
        past 64 bits) goes through :meth:`_apply_key`, which loses nothing."""
        cache, slots = agg.cache, agg.valid_slots
        for i, (key, b) in enumerate(zip(rec.keys, rec.buckets, strict=True)):
            series = cache.get(key)
            if series is None:
                self._apply_key(agg, rec, i, zones)
                continue
            counts = series.counts
            pairs = iter(b)
            try:
                for lo, n in zip(pairs, pairs, strict=True):
                    counts[slots[lo]] += n  # type: ignore[operator]
            except (KeyError, OverflowError):
                # the pairs before the one that failed are applied: the rest go the slow
                # way (which takes them all back if one bound is no boundary)
                rest = list(pairs)
                done = len(b) - len(rest) - 2
                self._apply_key(agg, rec, i, zones, series, done)

    def _apply_key(self, agg: _Agg, rec: Histograms, i: int, zones: Mapping[int, str],
                   series: _Series | None = None, done: int = 0) -> None:
        """Key ``i``'s buckets from pair offset ``done`` on (those before it are in
        ``series`` already): every bound checked first, the key refused whole if one is
        no boundary."""
        b = rec.buckets[i]
        los = b[done::2]
        found = [agg.slot_of_lower(lo) for lo in los]
        if None in found:
            bad = los[found.index(None)]
            if series is not None:  # take back what the fast path added
                counts = series.counts
                for lo, n in zip(b[0:done:2], cast("tuple[int, ...]", b[1:done:2]), strict=True):
                    counts[agg.valid_slots[lo]] -= n
            self._reject_key("invalid", rec, i, f"lo {bad} is not a bucket boundary "
                             f"of {agg.spec.function}{agg.spec.params}")
            return
        if series is None:
            series = self._resolve(agg, rec, i, zones)
            if series is None:
                return
        counts = series.counts
        # parse() checked that every n is a count
        pairs = zip(cast("list[int]", found), cast("tuple[int, ...]", b[done + 1::2]),
                    strict=True)
        try:
            for slot, n in pairs:
                counts[slot] += n
        except OverflowError:  # past 64 bits: Python ints from here on, nothing lost
            series.counts = counts = list(counts)
            counts[slot] += n
            for slot, n in pairs:
                counts[slot] += n

    def _apply_sums(self, agg: _Agg, rec: Values, zones: Mapping[int, str]) -> None:
        """A histogram's parallel sum() (true values: it may be negative)."""
        values = rec.values
        if values and not isinstance(values[0], int):
            self._reject("invalid", rec, "sum value must be an integer", len(values))
            return
        cache = agg.cache
        for i, (key, value) in enumerate(zip(rec.keys, cast("tuple[int, ...]", values),
                                             strict=True)):
            series = cache.get(key) or self._resolve(agg, rec, i, zones)
            if series is not None:
                series.sum += value

    def _apply_values(self, agg: _Agg, rec: Values, zones: Mapping[int, str]) -> None:
        fn = agg.spec.function
        pairs = bool(rec.values) and not isinstance(rec.values[0], int)
        if fn == "avg" and not pairs and rec.values:
            self._reject("invalid", rec, "avg value must be [count, total]", len(rec.values))
            return
        if fn != "avg" and pairs:
            self._reject("invalid", rec, f"{fn} value must be an integer", len(rec.values))
            return
        cache, batch = agg.cache, self._batch
        if fn == "avg":
            for i, (key, (c, t)) in enumerate(zip(
                    rec.keys, cast("tuple[tuple[int, int], ...]", rec.values), strict=True)):
                if c < 0:
                    self._reject_key("invalid", rec, i, "avg value must be [count, total]")
                    continue
                series = cache.get(key) or self._resolve(agg, rec, i, zones)
                if series is None:
                    continue
                c0, t0 = (0, 0) if series.batch != batch else series.avg
                series.batch = batch
                series.avg = (c0 + c, t0 + t)
            return
        values = cast("tuple[int, ...]", rec.values)
        if fn in ("count", "sum"):
            for i, (key, value) in enumerate(zip(rec.keys, values, strict=True)):
                if value < 0:
                    self._reject_key("invalid", rec, i,
                                     f"{fn} delta {value} is negative: counters only grow")
                    continue
                series = cache.get(key) or self._resolve(agg, rec, i, zones)
                if series is not None:
                    series.sum += value
            return
        lowest = fn == "min"
        for i, (key, value) in enumerate(zip(rec.keys, values, strict=True)):
            series = cache.get(key) or self._resolve(agg, rec, i, zones)
            if series is None:
                continue
            if series.batch != batch:
                series.batch = batch
                series.value = value
            elif lowest:
                series.value = min(series.value, value)
            else:
                series.value = max(series.value, value)

    @property
    def zones(self) -> Mapping[int, str]:
        """The zone map of the last batch applied."""
        return self._zones

    # ------------------------------------------------------------ saved states

    def state(self) -> dict[str, object]:
        """Everything applying has built up, as JSON (a bundle's checkpoint record,
        docs/bundle-dtrace.md): each series (in order: the exposition follows it), the
        labels each bounded key has let through, the engine's counters and script
        status, the zone map of the last batch. The caches are left out: they are
        rebuilt from these as keys come and give the same series."""
        aggs = []
        for (script, name), agg in self._aggs.items():
            aggs.append({
                "script": script, "agg": name,
                "seen": [sorted(s) for s in agg.seen],
                "series": [[list(labels), s.zone, list(s.counts), s.sum, s.value,
                            list(s.avg)]
                           for labels, s in agg.series.items()],
            })
        return {
            "basis": self.basis,
            "zones": [[zid, name] for zid, name in self._zones.items()],
            "drops": dict(self.drops), "errors": dict(self.errors),
            "series_dropped": dict(self.series_dropped), "rejected": dict(self.rejected),
            "status": {k: list(v) for k, v in self.status.items()},
            "aggs": aggs,
        }

    def restore(self, state: Mapping[str, object]) -> None:
        """Take a :meth:`state` of an accumulator with the same :attr:`basis` in place
        of everything applied so far (the caller knows that this accumulator's batches
        are a prefix of those the state was built from: a replay catching up). Raises
        ValueError (one line) on anything that does not fit the declarations, and then
        changes nothing."""
        if state.get("basis") != self.basis:
            raise ValueError("checkpoint made for other D scripts or settings")
        try:
            zones = {_count_of(z): str(n) for z, n in cast("list[list[object]]", state["zones"])}
            counters = [{str(k): _count_of(v) for k, v in
                         cast("dict[str, object]", state[f]).items()}
                        for f in ("drops", "errors", "series_dropped", "rejected")]
            status = {str(k): (str(v[0]), str(v[1])) for k, v in
                      cast("dict[str, list[object]]", state["status"]).items()}
            if set(status) != set(self.status):
                raise ValueError("status of other scripts")
            restored: dict[tuple[str, str], _Restored] = {}
            for a in cast("list[dict[str, object]]", state["aggs"]):
                key = (str(a["script"]), str(a["agg"]))
                agg = self._aggs.get(key)
                if agg is None or key in restored:
                    raise ValueError(f"aggregation {key[0]}.{key[1]} is not declared once")
                restored[key] = _restored_agg(agg, a)
            if set(restored) != set(self._aggs):
                raise ValueError("aggregations missing")
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed checkpoint: {type(exc).__name__}: {exc}") from None
        self._zones = zones
        self.drops, self.errors, self.series_dropped, self.rejected = counters
        self.status = status
        for key, (seen, series) in restored.items():
            agg = self._aggs[key]
            agg.seen, agg.series = seen, series
            agg.cache.clear()

    # ---------------------------------------------------------------- exporting

    def families(self) -> list[MetricFamily]:
        """The aggregations' families and the engine's own counters."""
        return list(self.iter_families())

    def iter_families(self) -> Iterator[MetricFamily]:
        """:meth:`families`, one aggregation's family made at a time as they are drawn
        (a scrape renders each and lets it go before the next is made)."""
        for agg in self._aggs.values():
            if not agg.series and self.status[agg.script.name][0] != "running":
                continue
            fam = agg.metric.family()
            spec = agg.spec
            scale, offset = spec.scale, spec.offset
            for labels, s in agg.series.items():
                if spec.type == "histogram":
                    counts = s.counts
                    cumulative: list[float] = list(accumulate(counts[:-1]))
                    total = (cumulative[-1] if cumulative else 0) + counts[-1]
                    fam.add_histogram(labels, cumulative, s.sum * scale, total)
                elif spec.function in ("count", "sum"):
                    fam.add(labels, s.sum * scale)
                elif spec.function == "avg":
                    c, t = s.avg
                    if c:
                        fam.add(labels, (t / c + offset) * scale)
                else:
                    fam.add(labels, (s.value + offset) * scale)
            yield fam
            del fam
        yield from self.self_families()

    def self_families(self) -> list[MetricFamily]:
        drops = DROPS.family()
        for kind in sorted(set(DROP_KINDS) | set(self.drops)):
            drops.add((kind,), self.drops.get(kind, 0))
        errors = ERRORS.family()
        for script in sorted(set(self.status) | set(self.errors)):
            errors.add((script,), self.errors.get(script, 0))
        enabled = SCRIPT_ENABLED.family()
        for script, (status, _) in sorted(self.status.items()):
            enabled.add((script,), 1 if status == "running" else 0)
        dropped = SERIES_DROPPED.family()
        for agg in self._aggs.values():
            m = agg.spec.metric
            dropped.add((m,), self.series_dropped.get(m, 0))
        rejected = REJECTED.family()
        for reason in sorted({"invalid", "unknown_zone"} | set(self.rejected)):
            rejected.add((reason,), self.rejected.get(reason, 0))
        return [drops, errors, enabled, dropped, rejected]


def _coarsened(old: _Agg, script: ScriptSpec, spec: AggregationSpec) -> _Agg | None:
    """``old``'s series under ``spec`` when ``spec`` declares the same histogram with
    fewer bounds, each one of the old ones (``[dtrace] zone_buckets`` made coarser):
    every new bucket is a sum of old ones, so nothing is lost or guessed. None when the
    declarations differ otherwise (the metric starts afresh)."""
    if old.spec.type != "histogram" or dataclasses.replace(old.spec, le=spec.le) != spec:
        return None
    position = {le: i for i, le in enumerate(old.spec.le)}
    if not all(le in position for le in spec.le):
        return None
    agg = _Agg(script, spec)
    agg.seen = old.seen
    # old slot k (values in (le[k-1], le[k]], +Inf last) goes to the first new le >= it
    target = [bisect.bisect_left(spec.le, le) for le in old.spec.le] + [len(spec.le)]
    for labels, series in old.series.items():
        counts = [0] * (len(spec.le) + 1)
        for k, n in enumerate(series.counts):
            counts[target[k]] += n
        series.counts = _counts_of(counts)
        agg.series[labels] = series
    return agg


def _count_of(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"count {value!r} is not a non-negative integer")
    return value


# an aggregation's bounded labels and series, as restored
_Restored = tuple[list[set[str]], dict[tuple[str, ...], _Series]]


def _restored_agg(agg: _Agg, saved: Mapping[str, object]) -> _Restored:
    """One aggregation's bounded labels and series of a saved state, checked against
    its declaration."""
    name = f"{agg.script.name}.{agg.spec.name}"
    seen = [set(cast("list[str]", s)) for s in cast("list[object]", saved["seen"])]
    if len(seen) != len(agg.spec.keys) or any(
            not all(isinstance(x, str) for x in s) for s in seen):
        raise ValueError(f"{name}: seen: expected a list of labels per key")
    width = len(agg.spec.labels)
    slots = len(agg.spec.le) + 1 if agg.buckets is not None else 0
    series: dict[tuple[str, ...], _Series] = {}
    for row in cast("list[list[object]]", saved["series"]):
        labels_, zone, counts, total, value, avg = row
        labels = tuple(cast("list[object]", labels_))
        if len(labels) != width or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"{name}: series labels {labels_!r}: expected {width} strings")
        counts_ = [_count_of(n) for n in cast("list[object]", counts)]
        if len(counts_) != slots:
            raise ValueError(f"{name}: series {labels!r}: expected {slots} bucket counts")
        c, t = cast("list[object]", avg)
        if (zone is not None and not isinstance(zone, str)) or type(total) is not int \
                or type(value) not in (int, float) or type(c) is not int or type(t) is not int:
            raise ValueError(f"{name}: series {labels!r}: malformed")
        series[cast("tuple[str, ...]", labels)] = _Series(
            counts=_counts_of(counts_), sum=total, value=cast("float", value), avg=(c, t),
            zone=zone)
    return seen, series


def _short(rec: object) -> str:
    text = repr(rec)
    return text if len(text) <= 300 else text[:300] + "…"
