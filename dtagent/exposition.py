"""Prometheus text exposition format 0.0.4, rendered straight from metric families.

This is the scrape's hot path: chunks family by family (a large one in pieces of
about 200 KB), with no per-sample objects;
``benchmarks/bench_render.py`` measures it per sample (and ``benchmarks/bench_serve.py``
beside prometheus-client's ``generate_latest`` on the same samples). Format:
prometheus/docs ``content/docs/instrumenting/exposition_formats.md``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator

from dtagent.metrics import MetricFamily, MetricSpec

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    """Escape backslash, double quote and newline, as the text format requires."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """Escape backslash and newline in HELP text."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Format a sample value: integers without a fraction, +Inf/-Inf/NaN spelled out."""
    if isinstance(value, int):
        return str(int(value))  # int() so a bool is written 1/0, not True/False
    if value.is_integer():  # finite and whole: counters, bytes
        return str(int(value)) if -1e15 < value < 1e15 else repr(value)
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def format_le(bound: float) -> str:
    """A bucket bound as client_python writes it ("0.001", "1.0", "1e-06")."""
    return repr(float(bound)) if math.isfinite(bound) else "+Inf"


def _label_block(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return (
        "{"
        + ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
        + "}"
    )


def render(families: Iterable[MetricFamily]) -> bytes:
    """Render families (each name once) as text format 0.0.4, UTF-8 encoded."""
    return b"".join(render_chunks(families))


def render_chunks(families: Iterable[MetricFamily]) -> list[bytes]:
    """The exposition as UTF-8 chunks, family by family (see :func:`iter_chunks`)."""
    return list(iter_chunks(families))


def iter_chunks(families: Iterable[MetricFamily]) -> Iterator[bytes]:
    """The exposition as UTF-8 chunks, family by family, made as it is asked for (a
    renderer of its own: nothing is kept for a next render)."""
    return Renderer().chunks(families)


# A family's text is handed on in pieces of about this many lines (or histogram series,
# 20 to 30 lines each): a 1,000-zone file system latency family is 14 MB of text, which
# as a list of lines, their join and its encoding was 40 MB at once.
_PIECE_LINES = 2048
_PIECE_SERIES = 64
_INTS = frozenset((int,))  # a bool is not one of them: it is written 1/0, not True/False
# HELP/TYPE lines, a histogram's series template (UTF-8) and bucket name
_Template = tuple[str, bytes, str]
_MARK = "\0"  # where a histogram series' bucket head goes in its rendered template
_MARK_B = _MARK.encode("ascii")


class Renderer:
    """Renders the 0.0.4 exposition, reusing what has not changed since its last render.

    A server keeps one and renders every scrape with it. Kept from one render to the
    next: each family's HELP/TYPE lines (and a histogram's series template), and each
    series' label block (``{zonename="…",…}``), or a histogram series' bucket head
    (``…_bucket{zonename="…",``, its label block cut from it). Each cache is
    replaced at the end of a render by what that render used, so the series of a
    halted zone are dropped at once and the caches never outgrow one scrape. The
    rendered text of series whose values did not change is not kept: that would hold
    most of the body between scrapes (the bucket lines are three quarters of it).

    A histogram series of whole (``int``) counts, most of the body, is made as bytes by
    one ``%`` of its family's template and one ``replace`` that puts in its bucket
    head, with no per-line Python work and no encoding after; other counts (floats,
    bools) are written line by line with :func:`format_value`, for the same text.
    ``benchmarks/bench_render.py`` measures it.

    A render draws families one at a time: each is encoded as soon as it is rendered,
    so a gzip body can compress it and let it go before the next is rendered, and the
    scrape never holds every line as a separate string (nor the whole text widened by
    one non-ASCII HELP character). Families with no samples are left out entirely, so
    an uncapped zone or an absent kstat produces no HELP/TYPE noise either. One render
    at a time: a second concurrent one gets a renderer of its own.
    """

    def __init__(self) -> None:
        self._templates: dict[MetricSpec, _Template] = {}
        # label block and a space, by label names and then label values
        self._blocks: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        # bucket head (UTF-8), by family name and then label values; the label block
        # is cut from it at each render (two small copies a series; keeping it too
        # was 2.7 MiB at 1,000 zones)
        self._heads: dict[str, dict[tuple[str, ...], bytes]] = {}
        self._busy = threading.Lock()

    def chunks(self, families: Iterable[MetricFamily]) -> Iterator[bytes]:
        """UTF-8 chunks of the families with samples (a large family in pieces),
        drawn as the caller asks."""
        if not self._busy.acquire(blocking=False):
            yield from Renderer()._families(families)
            return
        try:
            yield from self._families(families)
        finally:
            self._busy.release()

    def _template(self, spec: MetricSpec) -> _Template:
        name = spec.name
        header = f"# HELP {name} {escape_help(spec.help)}\n# TYPE {name} {spec.type}\n"
        if spec.type != "histogram":
            return header, b"", ""
        # One % per series writes all its lines: each bucket line starts with the mark
        # (replaced by the series' bucket head after), then the +Inf bucket, sum and
        # count; its arguments are the bucket counts, count, block, sum, block, count.
        series = "".join(
            f'{_MARK}le="{format_le(b)}"}} %d\n' for b in spec.buckets
        ) + f'{_MARK}le="+Inf"}} %d\n{name}_sum%s %s\n{name}_count%s %d\n'
        return header, series.encode("utf-8"), f"{name}_bucket"

    def _families(self, families: Iterable[MetricFamily]) -> Iterator[bytes]:
        fmt = format_value
        old_templates = self._templates
        templates: dict[MetricSpec, _Template] = {}
        old_blocks = self._blocks
        blocks: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        old_heads = self._heads
        heads: dict[str, dict[tuple[str, ...], bytes]] = {}
        no_heads: dict[tuple[str, ...], bytes] = {}
        no_blocks: dict[tuple[str, ...], str] = {}
        for fam in families:
            if not fam.samples and not fam.hist_samples:
                continue
            spec = fam.spec
            name = spec.name
            template = old_templates.get(spec) or self._template(spec)
            templates[spec] = template
            labels = spec.labels
            if spec.type == "histogram":
                yield from self._histograms(fam, template, old_heads.get(name, no_heads),
                                            heads.setdefault(name, {}))
                continue
            elif not labels:
                text = template[0] + "".join(
                    [f"{name} {fmt(value)}\n" for _, value in fam.samples]
                )
            else:
                was_blocks = old_blocks.get(labels, no_blocks)
                now_blocks = blocks.setdefault(labels, {})
                out = [template[0]]
                append = out.append
                samples = fam.samples
                for start in range(0, len(samples), _PIECE_LINES):
                    if start:  # a piece of _PIECE_LINES lines is ready
                        yield "".join(out).encode("utf-8")
                        out.clear()
                    for values, value in samples[start : start + _PIECE_LINES]:
                        cached = now_blocks.get(values)
                        if cached is None:
                            cached = was_blocks.get(values) or _label_block(labels, values)
                            now_blocks[values] = cached
                        append(f"{name}{cached} "
                               f"{fmt(value) if type(value) is not int else value}\n")
                text = "".join(out)
            yield text.encode("utf-8")
        # what this render used, and only that, is kept for the next one
        self._templates, self._blocks, self._heads = templates, blocks, heads

    @staticmethod
    def _histograms(
        fam: MetricFamily,
        template: _Template,
        was: dict[tuple[str, ...], bytes],
        now: dict[tuple[str, ...], bytes],
    ) -> Iterator[bytes]:
        """A histogram family's chunks, made as bytes: a series of whole counts is one
        ``%`` of the family's series template, its bucket head put in by one replace.
        Handed on every ``_PIECE_SERIES`` series."""
        fmt = format_value
        spec = fam.spec
        name = spec.name
        series = template[1]
        out = [template[0].encode("utf-8")]
        append = out.append
        bounds: list[str] = []
        cut = len(template[2]) + 1  # "<name>_bucket{": the label block follows it
        for values, cumulative, total, count in fam.hist_samples:
            head_b = was.get(values)
            if head_b is None:
                block = _label_block(spec.labels, values)
                head_b = (template[2] + (block[:-1] + "," if block else "{")).encode("utf-8")
            now[values] = head_b
            block_b = b"{" + head_b[cut:-1] + b"}" if len(head_b) > cut else b""
            if (
                type(count) is int
                and _INTS.issuperset(map(type, cumulative))  # whole: %d is exact
                and _MARK_B not in block_b  # only the template's marks are replaced
            ):
                total_b = fmt(total).encode("ascii")
                text = series % (*cumulative, count, block_b, total_b, block_b, count)
                append(text.replace(_MARK_B, head_b))
            else:
                # counts that are not all int (or a label value with the mark): by line
                bounds = bounds or [f'le="{format_le(b)}"}} ' for b in spec.buckets]
                head, block = head_b.decode("utf-8"), block_b.decode("utf-8")
                lines = [f"{head}{bound}{fmt(cum)}\n"
                         for bound, cum in zip(bounds, cumulative, strict=True)]
                n = fmt(count)
                lines.append(f'{head}le="+Inf"}} {n}\n{name}_sum{block} {fmt(total)}\n'
                             f"{name}_count{block} {n}\n")
                append("".join(lines).encode("utf-8"))
            if len(out) >= _PIECE_SERIES:
                yield b"".join(out)
                out.clear()
        yield b"".join(out)


# ---- OpenMetrics 1.0 ------------------------------------------------------------------
# Format: the OpenMetrics specification (github.com/OpenObservability/OpenMetrics,
# specification/OpenMetrics.md). What differs from 0.0.4 here: a counter family is named
# without ``_total`` (its sample keeps it) and may carry ``_created`` samples, untyped is
# ``unknown``, ``# UNIT`` names a unit that is the family name's suffix, HELP escapes
# double quotes too, and the exposition ends with ``# EOF``.

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OM_UNITS = ("seconds", "bytes", "ratio")


def wants_openmetrics(accept: str) -> bool:
    """True when the scraper's Accept header asks for OpenMetrics (Prometheus sends
    ``application/openmetrics-text;version=1.0.0,...;q=0.5`` when it may use it)."""
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() != "application/openmetrics-text":
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _om_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _om_unit(name: str, unit: str) -> str:
    return unit if unit in _OM_UNITS and name.endswith("_" + unit) else ""


def render_openmetrics_chunks(families: Iterable[MetricFamily]) -> list[bytes]:
    """The OpenMetrics exposition as a list (see :func:`iter_openmetrics_chunks`)."""
    return list(iter_openmetrics_chunks(families))


def iter_openmetrics_chunks(families: Iterable[MetricFamily]) -> Iterator[bytes]:
    """The exposition in the OpenMetrics text format, one UTF-8 chunk per family and a
    last ``# EOF`` chunk, made as asked for. Counters and histograms get a ``_created``
    sample for each series whose start time is known."""
    fmt = format_value
    for fam in families:
        if not fam.samples and not fam.hist_samples:
            continue
        spec = fam.spec
        name = spec.name
        family = name[: -len("_total")] if spec.type == "counter" else name
        mtype = "unknown" if spec.type == "untyped" else spec.type
        out = [f"# TYPE {family} {mtype}\n"]
        unit = _om_unit(family, spec.unit)
        if unit:
            out.append(f"# UNIT {family} {unit}\n")
        out.append(f"# HELP {family} {_om_help(spec.help)}\n")
        append = out.append
        labels = spec.labels
        created = fam.created
        if spec.type == "histogram":
            bounds = [f'le="{format_le(b)}"}} ' for b in spec.buckets]
            for values, cumulative, total, count in fam.hist_samples:
                block = _label_block(labels, values)
                head = f"{name}_bucket" + (block[:-1] + "," if block else "{")
                for bound, cum in zip(bounds, cumulative, strict=True):
                    append(f"{head}{bound}{fmt(cum)}\n")
                n = fmt(count)
                append(f'{head}le="+Inf"}} {n}\n{name}_count{block} {n}\n'
                       f"{name}_sum{block} {fmt(total)}\n")
                if values in created:
                    append(f"{name}_created{block} {created[values]!r}\n")
        else:
            for values, value in fam.samples:
                block = _label_block(labels, values)
                append(f"{name}{block} {fmt(value)}\n")
                if spec.type == "counter" and values in created:
                    append(f"{family}_created{block} {created[values]!r}\n")
        yield "".join(out).encode("utf-8")
    yield b"# EOF\n"
