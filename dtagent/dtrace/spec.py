"""D script specs: scripts/d/NAME.d and the NAME.toml that declares what it measures.

A script is data (kernel programs described by config, not code; docs/architecture.md):
its TOML names every aggregation, the metric it becomes, its type, unit scale, keys →
labels, histogram bounds and the providers and DTrace options it needs. Loading checks
all of it, including the parts DTrace's own compiler would check (lquantize/llquantize
parameters), that each histogram ``le`` is exactly a DTrace bucket boundary, and (by a
light parse of the D text) that the script really has each aggregation with the declared
function and number of keys. Every problem is a :class:`SpecError` naming the file, the
key and what was expected.

The format is documented in docs/bundle-dtrace.md ("Script specs").
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dtagent.dtrace import buckets as bk
from dtagent.metrics import LABEL_NAME_RE, METRIC_NAME_RE, suffix_problem

FUNCTIONS = ("count", "sum", "min", "max", "avg", "quantize", "lquantize", "llquantize")
TYPE_OF_FUNCTION = {
    "count": "counter",
    "sum": "counter",
    "min": "gauge",
    "max": "gauge",
    "avg": "gauge",
    "quantize": "histogram",
    "lquantize": "histogram",
    "llquantize": "histogram",
}
KEY_KINDS = ("zoneid", "string", "integer")

# DTrace options a spec may set, by kind of value (dt_options.c _dtrace_rtoptions,
# _dtrace_drtoptions; defaults from dtrace.c dtrace_state_create). Sizes accept k/m/g
# suffixes, rates ns/us/ms/s/m/h/d or hz.
SIZE_OPTIONS = ("bufsize", "aggsize", "dynvarsize", "specsize")
RATE_OPTIONS = ("aggrate", "cleanrate", "switchrate", "statusrate")
COUNT_OPTIONS = ("strsize", "nspec", "stackframes", "ustackframes")
KNOWN_OPTIONS = SIZE_OPTIONS + RATE_OPTIONS + COUNT_OPTIONS
# What a script gets when its spec does not say.
DEFAULT_OPTIONS: dict[str, str] = {
    "bufsize": "64k",
    "aggsize": "512k",
    "dynvarsize": "4m",
    "strsize": "64",
    "aggrate": "1s",
}

_SIZE_RE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_RATE_RE = re.compile(r"^(\d+)(ns|nsec|us|usec|ms|msec|s|sec|m|min|h|hour|d|day|hz)?$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROBE_RE = re.compile(r"^[^:\s]*:[^:\s]*:[^:\s]*:[^:\s]+$")

TOP_KEYS = {
    "description",
    "providers",
    "fbt",
    "probes",
    "enabled",
    "overhead",
    "caveats",
    "options",
    "aggregation",
    "variants",
    "variant",
}
AGG_KEYS = {
    "name",
    "function",
    "params",
    "metric",
    "type",
    "help",
    "scale",
    "offset",
    "sum",
    "le",
    "keys",
}
KEY_KEYS = {"kind", "label", "allow", "max_values"}


# Named le lists a spec can give as ``le = "NAME"``. "latency": 1 us to 10 s in 1-2-5
# steps, the bounds of every shipped latency histogram (exact DTrace bucket edges for
# llquantize(ns - 1, 10, 3, 9, 10) with scale 1e-9 and llquantize(us - 1, 10, 0, 6,
# 10) with scale 1e-6: docs/dtrace.md, "Exact buckets").
LATENCY_LE = (
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
# "latency_coarse": the same span with one bound per decade (1-10). Its bounds are a
# subset of "latency"'s, so each is just as exact, and a histogram kept with the fine
# bounds becomes the coarse one by adding buckets up (Accumulator.reconfigure).
LATENCY_COARSE_LE = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)
LE_PRESETS: dict[str, tuple[float, ...]] = {
    "latency": LATENCY_LE,
    "latency_coarse": LATENCY_COARSE_LE,
}
# [dtrace] zone_buckets: the preset a per-zone histogram declared with le = "latency"
# gets (with_zone_buckets).
ZONE_BUCKETS: dict[str, str] = {"1-2-5": "latency", "1-10": "latency_coarse"}


class SpecError(ValueError):
    """A problem in a script spec; the message names the file and the key."""


@dataclass(frozen=True)
class KeySpec:
    """One key of an aggregation tuple, in order, and the label it becomes."""

    kind: str  # zoneid | string | integer
    label: str  # "zonename" for zoneid keys
    allow: tuple[str | int, ...] | None = None
    max_values: int | None = None


@dataclass(frozen=True)
class AggregationSpec:
    """One D aggregation ``@name`` and the metric it becomes."""

    name: str
    function: str
    params: tuple[int, ...]
    metric: str
    type: str  # histogram | counter | gauge
    help: str
    scale: float = 1.0
    offset: int = 0
    sum: str | None = None
    le: tuple[float, ...] = ()
    keys: tuple[KeySpec, ...] = ()
    # derived: for histograms, the DTrace bucket index of each le
    le_buckets: tuple[int, ...] = field(default=(), compare=False)
    # the LE_PRESETS name the spec gave as le (None: a list of bounds)
    le_preset: str | None = field(default=None, compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(k.label for k in self.keys)

    def buckets(self) -> bk.Buckets:
        """The bucket scheme (histograms only)."""
        return bk.Buckets(self.function, self.params)


@dataclass(frozen=True)
class ScriptSpec:
    """A D script and its declarations."""

    name: str
    path: Path
    source: str
    description: str
    providers: tuple[str, ...]
    fbt: bool
    probes: tuple[str, ...]
    enabled: bool
    overhead: str
    caveats: str
    options: dict[str, str]
    aggregations: tuple[AggregationSpec, ...]
    # Alternative D texts beside the script (NAME.VARIANT.d), each checked against
    # the same aggregations; ``variant`` names the one whose text is ``source``.
    variants: tuple[str, ...] = ()
    variant: str | None = None

    def aggregation(self, name: str) -> AggregationSpec | None:
        for agg in self.aggregations:
            if agg.name == name:
                return agg
        return None

    def sum_aggregations(self) -> dict[str, AggregationSpec]:
        """sum aggregation name → the histogram it gives ``_sum`` to."""
        return {a.sum: a for a in self.aggregations if a.sum}


# ---------------------------------------------------------------------------- checks


class _Ctx:
    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, key: str, expected: str, got: Any = None, *, show: bool = True) -> SpecError:
        tail = f", got {got!r}" if show else ""
        return SpecError(f"{self.where}: key {key!r}: expected {expected}{tail}")

    def string(self, table: Mapping[str, Any], key: str, path: str, default: str | None = None,
               *, nonempty: bool = False) -> str:
        if key not in table:
            if default is None:
                raise self.fail(path, "a string (required)", show=False)
            return default
        value = table[key]
        if not isinstance(value, str) or (nonempty and not value.strip()):
            raise self.fail(path, "a non-empty string" if nonempty else "a string", value)
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(path, "true or false", value)
        return value

    def str_list(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "a list of strings", value)
        return tuple(value)


def _check_option(ctx: _Ctx, name: str, value: Any) -> str:
    key = f"options.{name}"
    if name not in KNOWN_OPTIONS:
        raise ctx.fail(key, "one of the known options " + ", ".join(KNOWN_OPTIONS), name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.fail(key, "a string or an integer", value)
    text = str(value).strip()
    if name in SIZE_OPTIONS and not _SIZE_RE.match(text):
        raise ctx.fail(key, "a size such as 65536, 64k, 16m", value)
    if name in RATE_OPTIONS and not _RATE_RE.match(text):
        raise ctx.fail(key, "a rate such as 1s, 500ms, 10hz", value)
    if name in COUNT_OPTIONS and not (text.isdigit() and int(text) > 0):
        raise ctx.fail(key, "a positive integer", value)
    return text


def _check_key(ctx: _Ctx, raw: Any, path: str) -> KeySpec:
    if not isinstance(raw, dict):
        raise ctx.fail(path, "a table", raw)
    for k in raw:
        if k not in KEY_KEYS:
            raise ctx.fail(f"{path}.{k}", "one of " + ", ".join(sorted(KEY_KEYS)), k)
    kind = raw.get("kind")
    if kind not in KEY_KINDS:
        raise ctx.fail(f"{path}.kind", "one of " + ", ".join(KEY_KINDS), kind)
    if kind == "zoneid":
        label = ctx.string(raw, "label", f"{path}.label", "zonename")
        if label != "zonename":
            raise ctx.fail(f"{path}.label", "'zonename' (zone id keys become zonename)", label)
        for k in ("allow", "max_values"):
            if k in raw:
                raise ctx.fail(f"{path}.{k}", "nothing: zone keys are bounded by the zones",
                               raw[k])
        return KeySpec("zoneid", "zonename")
    label = ctx.string(raw, "label", f"{path}.label")
    if not LABEL_NAME_RE.match(label) or label.startswith("__") or label in ("le", "zonename"):
        raise ctx.fail(f"{path}.label", "a Prometheus label name other than le and zonename",
                       label)
    allow: tuple[str | int, ...] | None = None
    if "allow" in raw:
        value = raw["allow"]
        elem: type = str if kind == "string" else int
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, elem) and not isinstance(v, bool) for v in value)
        ):
            raise ctx.fail(f"{path}.allow", f"a non-empty list of {kind}s", value)
        allow = tuple(value)
    max_values: int | None = None
    if "max_values" in raw:
        value = raw["max_values"]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ctx.fail(f"{path}.max_values", "a positive integer", value)
        max_values = value
    if allow is None and max_values is None:
        raise ctx.fail(path, f"an allow list or max_values for the {kind} key {label!r} "
                       "(labels must be bounded)", show=False)
    return KeySpec(kind, label, allow, max_values)


def _number(ctx: _Ctx, raw: Mapping[str, Any], key: str, path: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.fail(path, "a number", value)
    return float(value)


def _check_aggregation(ctx: _Ctx, raw: Any, i: int) -> AggregationSpec:
    path = f"aggregation[{i}]"
    if not isinstance(raw, dict):
        raise ctx.fail(path, "a table ([[aggregation]])", raw)
    for k in raw:
        if k not in AGG_KEYS:
            raise ctx.fail(f"{path}.{k}", "one of " + ", ".join(sorted(AGG_KEYS)), k)
    name = ctx.string(raw, "name", f"{path}.name")
    if not _IDENT_RE.match(name):
        raise ctx.fail(f"{path}.name", "a D identifier (the aggregation @name)", name)
    path = f"aggregation[{name}]"
    function = raw.get("function")
    if function not in FUNCTIONS:
        raise ctx.fail(f"{path}.function", "one of " + ", ".join(FUNCTIONS), function)
    params_raw = raw.get("params", [])
    if not isinstance(params_raw, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in params_raw
    ):
        raise ctx.fail(f"{path}.params", "a list of integers", params_raw)
    params = tuple(params_raw)
    if function == "lquantize":
        problem = bk.check_lquantize(params)
    elif function == "llquantize":
        problem = bk.check_llquantize(params)
    else:
        problem = None if not params else f"no params for {function}"
    if problem:
        raise ctx.fail(f"{path}.params", problem, list(params))
    metric = ctx.string(raw, "metric", f"{path}.metric")
    if not METRIC_NAME_RE.match(metric):
        raise ctx.fail(f"{path}.metric", "a Prometheus metric name", metric)
    mtype = raw.get("type")
    expected_type = TYPE_OF_FUNCTION[function]
    if mtype != expected_type:
        raise ctx.fail(f"{path}.type", f"{expected_type!r} for {function}()", mtype)
    suffix = suffix_problem(mtype, metric)
    if suffix:
        raise ctx.fail(f"{path}.metric", suffix, metric)
    help_text = ctx.string(raw, "help", f"{path}.help", nonempty=True)
    scale = _number(ctx, raw, "scale", f"{path}.scale", 1.0)
    if scale <= 0:
        raise ctx.fail(f"{path}.scale", "a number greater than 0", scale)
    offset = raw.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ctx.fail(f"{path}.offset", "an integer", offset)
    if offset and function in ("count", "sum"):
        raise ctx.fail(f"{path}.offset", f"0 for {function}() (a total cannot be shifted)",
                       offset)
    keys_raw = raw.get("keys", [])
    if not isinstance(keys_raw, list):
        raise ctx.fail(f"{path}.keys", "a list of tables ([[aggregation.keys]])", keys_raw)
    keys = tuple(_check_key(ctx, k, f"{path}.keys[{j}]") for j, k in enumerate(keys_raw))
    labels = [k.label for k in keys]
    if len(set(labels)) != len(labels):
        raise ctx.fail(f"{path}.keys", "distinct labels", labels)
    sum_name: str | None = None
    le: tuple[float, ...] = ()
    le_buckets: tuple[int, ...] = ()
    le_preset: str | None = None
    if mtype == "histogram":
        sum_name = ctx.string(raw, "sum", f"{path}.sum")
        if not _IDENT_RE.match(sum_name) or sum_name == name:
            raise ctx.fail(f"{path}.sum", "the name of the parallel sum() aggregation", sum_name)
        le_raw = raw.get("le")
        if isinstance(le_raw, str):
            if le_raw not in LE_PRESETS:
                raise ctx.fail(f"{path}.le", "a list of bounds or a preset: "
                               + ", ".join(LE_PRESETS), le_raw)
            le_preset = le_raw
            le_raw = list(LE_PRESETS[le_raw])
        if (
            not isinstance(le_raw, list)
            or not le_raw
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in le_raw)
        ):
            raise ctx.fail(f"{path}.le", "a non-empty list of numbers", le_raw)
        le = tuple(float(v) for v in le_raw)
        try:
            le_buckets = bk.le_indexes(bk.Buckets(function, params), le, scale, offset)
        except ValueError as exc:
            raise ctx.fail(f"{path}.le", f"exact bucket boundaries: {exc}", show=False) from None
    else:
        for k in ("sum", "le"):
            if k in raw:
                raise ctx.fail(f"{path}.{k}", f"nothing: only histograms have {k}", raw[k])
    return AggregationSpec(
        name=name,
        function=function,
        params=params,
        metric=metric,
        type=mtype,
        help=help_text,
        scale=scale,
        offset=offset,
        sum=sum_name,
        le=le,
        keys=keys,
        le_buckets=le_buckets,
        le_preset=le_preset,
    )


def with_zone_buckets(specs: Sequence[ScriptSpec], choice: str) -> list[ScriptSpec]:
    """``specs`` with every per-zone histogram (a ``zoneid`` key) declared with
    ``le = "latency"`` given the preset ``[dtrace] zone_buckets`` names instead
    ("1-10": ``latency_coarse``). Other histograms, and bounds given as lists, are kept:
    the option is about the series every zone multiplies."""
    preset = ZONE_BUCKETS.get(choice, "latency")
    if preset == "latency":
        return list(specs)
    out = []
    for spec in specs:
        aggs = []
        for a in spec.aggregations:
            if a.le_preset == "latency" and any(k.kind == "zoneid" for k in a.keys):
                le = LE_PRESETS[preset]
                try:
                    idx = bk.le_indexes(a.buckets(), le, a.scale, a.offset)
                except ValueError:  # not exact for this scheme: keep the fine bounds
                    aggs.append(a)
                    continue
                a = replace(a, le=le, le_buckets=idx, le_preset=preset)
            aggs.append(a)
        out.append(replace(spec, aggregations=tuple(aggs)))
    return out


# ---------------------------------------------------------------------- light D parse

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)


def strip_comments(source: str) -> str:
    return _COMMENT_RE.sub(" ", source)


def _balanced(text: str, start: int, open_ch: str, close_ch: str) -> int | None:
    """Index just past the bracket closing the one at ``start``."""
    depth = 0
    i = start
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                return i + 1 if c == close_ch else None
        i += 1
    return None


def _split_top(text: str) -> list[str]:
    """Split at top-level commas."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    quote = ""
    for c in text:
        if quote:
            cur.append(c)
            if c == quote:
                quote = ""
            continue
        if c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    tail = "".join(cur).strip()
    if tail or parts:
        parts.append(tail)
    return parts


@dataclass(frozen=True)
class DAggUse:
    """One ``@name[keys] = function(args)`` in D text."""

    name: str
    nkeys: int
    function: str
    args: tuple[str, ...]


def find_aggregations(source: str) -> list[DAggUse]:
    """Every aggregation assignment in D text (comments ignored)."""
    text = strip_comments(source)
    out: list[DAggUse] = []
    for m in re.finditer(r"@([A-Za-z_][A-Za-z0-9_]*)?\s*", text):
        name = m.group(1) or "_"
        pos = m.end()
        nkeys = 0
        if pos < len(text) and text[pos] == "[":
            end = _balanced(text, pos, "[", "]")
            if end is None:
                continue
            nkeys = len(_split_top(text[pos + 1 : end - 1]))
            pos = end
        fm = re.compile(r"\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(").match(text, pos)
        if not fm:
            continue
        open_at = fm.end() - 1
        end = _balanced(text, open_at, "(", ")")
        if end is None:
            continue
        args = tuple(_split_top(text[open_at + 1 : end - 1]))
        out.append(DAggUse(name, nkeys, fm.group(1), args))
    return out


def _int_literal(text: str) -> int | None:
    t = text.strip()
    neg = t.startswith("-")
    t = t.lstrip("-").strip().rstrip("uUlL")
    try:
        v = int(t, 0)
    except ValueError:
        return None
    return -v if neg else v


def _check_source(ctx: _Ctx, source: str, aggs: Sequence[AggregationSpec]) -> None:
    uses = find_aggregations(source)
    by_name: dict[str, list[DAggUse]] = {}
    for use in uses:
        by_name.setdefault(use.name, []).append(use)
    wanted: list[tuple[str, str, int, AggregationSpec]] = []
    for agg in aggs:
        wanted.append((agg.name, agg.function, len(agg.keys), agg))
        if agg.sum:
            wanted.append((agg.sum, "sum", len(agg.keys), agg))
    for name, function, nkeys, agg in wanted:
        path = f"aggregation[{agg.name}]" + (".sum" if name != agg.name else "")
        keys_text = "[" + ", ".join(["…"] * nkeys) + "]" if nkeys else ""
        found = by_name.get(name, [])
        if not found:
            raise ctx.fail(path, f"the script to have @{name}{keys_text} = {function}(…)",
                           show=False)
        for use in found:
            if use.function != function or use.nkeys != nkeys:
                use_keys = f"[{use.nkeys} keys]" if use.nkeys else ""
                raise ctx.fail(
                    path,
                    f"@{name}{keys_text} = {function}(…) as declared, but the script has "
                    f"@{name}{use_keys} = {use.function}(…)",
                    show=False,
                )
            if function in ("lquantize", "llquantize"):
                declared = list(agg.params)
                if function == "lquantize" and len(declared) == 2:
                    declared.append(1)
                lits = [_int_literal(a) for a in use.args[1 : 1 + len(declared)]]
                given = use.args[1 : 1 + len(declared)]
                if function == "lquantize" and len(given) == 2:
                    lits.append(1)
                if len(lits) == len(declared) and all(v is not None for v in lits) and \
                        lits != declared:
                    raise ctx.fail(
                        f"{path}.params",
                        f"the parameters the script passes to {function}: {lits}",
                        declared,
                    )


# ------------------------------------------------------------------------- loading


def load_script(d_path: Path) -> ScriptSpec:
    """Load and check NAME.d and NAME.toml beside it."""
    d_path = Path(d_path)
    toml_path = d_path.with_suffix(".toml")
    ctx = _Ctx(toml_path)
    try:
        source = d_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{d_path}: cannot read the D script ({exc.strerror})") from None
    try:
        with open(toml_path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{toml_path}: missing: every NAME.d needs a NAME.toml beside it") \
            from None
    except OSError as exc:
        raise SpecError(f"{toml_path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{toml_path}: not valid TOML ({exc})") from None
    name = d_path.stem
    if not _IDENT_RE.match(name):
        raise SpecError(f"{d_path}: the script name {name!r} must be a D identifier")
    for k in raw:
        if k not in TOP_KEYS:
            raise ctx.fail(k, "one of " + ", ".join(sorted(TOP_KEYS)), k)
    description = ctx.string(raw, "description", "description", nonempty=True)
    providers = ctx.str_list(raw, "providers", "providers")
    fbt = ctx.boolean(raw, "fbt", "fbt", False)
    probes = ctx.str_list(raw, "probes", "probes")
    for probe in probes:
        if not _PROBE_RE.match(probe):
            raise ctx.fail("probes", "probe names provider:module:function:name", probe)
    enabled = ctx.boolean(raw, "enabled", "enabled", True)
    overhead = ctx.string(raw, "overhead", "overhead", "")
    caveats = ctx.string(raw, "caveats", "caveats", "")
    opts_raw = raw.get("options", {})
    if not isinstance(opts_raw, dict):
        raise ctx.fail("options", "a table", opts_raw)
    options = dict(DEFAULT_OPTIONS)
    for opt, value in opts_raw.items():
        options[opt] = _check_option(ctx, opt, value)
    aggs_raw = raw.get("aggregation")
    if not isinstance(aggs_raw, list) or not aggs_raw:
        raise ctx.fail("aggregation", "at least one [[aggregation]] table", aggs_raw)
    aggs = tuple(_check_aggregation(ctx, a, i) for i, a in enumerate(aggs_raw))
    names = [a.name for a in aggs]
    sums = [a.sum for a in aggs if a.sum]
    for n in names:
        if names.count(n) > 1:
            raise ctx.fail(f"aggregation[{n}].name", "each aggregation declared once", n)
    for s in sums:
        if s in names or sums.count(s) > 1:
            raise ctx.fail("aggregation.sum", "a sum aggregation used by one histogram only "
                           "and not declared as an aggregation itself", s)
    seen_metrics: set[str] = set()
    for a in aggs:
        if a.metric in seen_metrics:
            raise ctx.fail(f"aggregation[{a.name}].metric", "a metric name used once", a.metric)
        seen_metrics.add(a.metric)
    _check_source(ctx, source, aggs)
    variants = ctx.str_list(raw, "variants", "variants")
    for v in variants:
        if not _IDENT_RE.match(v):
            raise ctx.fail("variants", "D identifiers (a variant is NAME.VARIANT.d)", v)
        v_path = d_path.with_name(f"{name}.{v}.d")
        try:
            v_source = v_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"{toml_path}: key 'variants': expected {v_path.name} beside "
                            f"the script ({exc.strerror})") from None
        _check_source(_Ctx(v_path), v_source, aggs)
    variant = ctx.string(raw, "variant", "variant", "") or None
    if variant is not None:
        if variant not in variants:
            raise ctx.fail("variant", "one of the listed variants "
                           + (", ".join(variants) or "(none)"), variant)
        source = d_path.with_name(f"{name}.{variant}.d").read_text(encoding="utf-8")
    return ScriptSpec(
        name=name,
        path=d_path,
        source=source,
        description=description,
        providers=providers,
        fbt=fbt,
        probes=probes,
        enabled=enabled,
        overhead=overhead,
        caveats=caveats,
        options=options,
        aggregations=aggs,
        variants=variants,
        variant=variant,
    )


def shipped_dir() -> Path:
    """scripts/d of this checkout (or dtagent/data/d in an installed package)."""
    here = Path(__file__).resolve().parent
    packaged = here.parent / "data" / "d"
    if packaged.is_dir():
        return packaged
    return here.parent.parent / "scripts" / "d"


def load_scripts(
    dirs: Sequence[Path], errors: list[SpecError] | None = None
) -> list[ScriptSpec]:
    """Every NAME.d (with NAME.toml) in ``dirs``, in order; sorted by name.

    A script in a later directory replaces one of the same name in an earlier one
    (so a config ``script_dirs`` entry can override a shipped script). A missing
    directory is skipped. With ``errors`` given, a script that fails to load is
    appended there and left out; otherwise the first problem raises. A metric name
    declared by two scripts is an error for the later script.
    """
    found: dict[str, ScriptSpec] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.d")):
            if "." in path.stem:
                continue  # NAME.VARIANT.d: a variant, loaded with NAME.toml
            try:
                spec = load_script(path)
            except SpecError as exc:
                if errors is None:
                    raise
                errors.append(exc)
                continue
            found[spec.name] = spec
    return one_handle([found[name] for name in sorted(found)], errors)


def one_handle(
    specs: Sequence[ScriptSpec], errors: list[SpecError] | None = None
) -> list[ScriptSpec]:
    """The scripts whose aggregation and metric names do not clash, in order.

    Aggregation names belong to the handle, not to a program (dt_open.c creates one
    ``dt_aggs`` hash per handle): scripts compiled together on one handle (``dtagent
    check`` does so) using the same aggregation name, declared or a helper, fail to
    compile with "aggregation redefined" (dt_parser.c) or, with the same function,
    silently merge. The worker gives each script its own handle, but the names stay one
    namespace: a script using an aggregation name an earlier one uses, or declaring a
    metric another declares, is an error naming both
    (appended to ``errors`` and left out; raised when ``errors`` is None).
    """
    out: list[ScriptSpec] = []
    metric_owner: dict[str, str] = {}
    agg_owner: dict[str, str] = {}
    for spec in specs:
        toml = spec.path.with_suffix(".toml")
        clash = [a.metric for a in spec.aggregations if a.metric in metric_owner]
        names = aggregation_names(spec)
        agg_clash = [n for n in names if n in agg_owner]
        err: SpecError | None = None
        if clash:
            err = SpecError(
                f"{toml}: key 'aggregation.metric': expected a metric no other script "
                f"declares, got {clash[0]!r} (also in {metric_owner[clash[0]]})"
            )
        elif agg_clash:
            err = SpecError(
                f"{spec.path}: aggregation @{agg_clash[0]} is also used by script "
                f"{agg_owner[agg_clash[0]]}: aggregation names are one namespace across "
                f"the scripts; rename it in one of them"
            )
        if err is not None:
            if errors is None:
                raise err
            errors.append(err)
            continue
        for a in spec.aggregations:
            metric_owner[a.metric] = spec.name
        for n in names:
            agg_owner[n] = spec.name
        out.append(spec)
    return out


def aggregation_names(spec: ScriptSpec) -> list[str]:
    """Every aggregation the script's D text assigns (declared ones and helpers), in
    the order they first appear."""
    return list(dict.fromkeys(u.name for u in find_aggregations(spec.source)))


def script_dirs(extra: Sequence[str] = ()) -> list[Path]:
    """The shipped directory, then the configured ones."""
    return [shipped_dir(), *(Path(p) for p in extra)]


def enabled_scripts(
    specs: Sequence[ScriptSpec], overrides: Mapping[str, bool]
) -> list[ScriptSpec]:
    """Scripts to run: the spec's ``enabled`` unless config ``dtrace.scripts`` says."""
    return [s for s in specs if overrides.get(s.name, s.enabled)]


# ------------------------------------------------------------------- merged options

_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_RATE_NS = {
    None: 1, "ns": 1, "nsec": 1, "us": 1000, "usec": 1000, "ms": 10**6, "msec": 10**6,
    "s": 10**9, "sec": 10**9, "m": 60 * 10**9, "min": 60 * 10**9, "h": 3600 * 10**9,
    "hour": 3600 * 10**9, "d": 86400 * 10**9, "day": 86400 * 10**9,
}


def size_bytes(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _SIZE_MULT[m.group(2).lower()]


def rate_ns(text: str) -> int:
    """Interval in ns (``Nhz`` is a frequency: 1e9/N)."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"not a rate: {text!r}")
    n = int(m.group(1))
    if m.group(2) == "hz":
        return 10**9 // max(n, 1)
    return n * _RATE_NS[m.group(2)]


def merge_options(specs: Sequence[ScriptSpec]) -> dict[str, str]:
    """The options of one handle running all ``specs`` (``dtagent check`` compiles
    them together; the worker gives each script its own handle and options), so:
    buffer sizes (bufsize, aggsize, dynvarsize, specsize) add up; strsize, nspec and
    frame counts take the largest;
    rates take the fastest.
    """
    out: dict[str, str] = {}
    for name in KNOWN_OPTIONS:
        values = [s.options[name] for s in specs if name in s.options]
        if not values:
            continue
        if name in SIZE_OPTIONS:
            total = sum(size_bytes(v) for v in values)
            out[name] = str(total)
        elif name in RATE_OPTIONS:
            out[name] = f"{min(rate_ns(v) for v in values)}ns"
        else:
            out[name] = str(max(int(v) for v in values))
    return out


def spec_digest(spec: ScriptSpec) -> str:
    """A digest of everything that makes ``spec`` run the way it does (its D text and
    every setting of its spec): equal digests, the same script, left running on a
    reload."""
    import hashlib

    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]
