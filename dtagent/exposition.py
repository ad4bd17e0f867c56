"""Prometheus text exposition format 0.0.4, rendered straight from metric families.

This is the scrape's hot path. It builds one list of strings and joins it once, with
no per-sample objects; ``benchmarks/bench_render.py`` compares it with
prometheus-client's ``generate_latest`` on the same samples. Format:
prometheus/docs ``content/docs/instrumenting/exposition_formats.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dtagent.metrics import MetricFamily

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
    """The exposition as one UTF-8 chunk per family, for writing without joining them.

    Families with no samples are left out entirely, so an uncapped zone or an absent
    kstat produces no HELP/TYPE noise either. Label blocks are built once per scrape
    and reused: most families of a host repeat the same ``{zonename="…"}``. Each
    family is encoded as soon as it is rendered, so the scrape never holds every line
    as a separate string (nor the whole text widened by one non-ASCII HELP character).
    """
    chunks: list[bytes] = []
    blocks: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
    fmt = format_value
    for fam in families:
        if not fam.samples and not fam.hist_samples:
            continue
        spec = fam.spec
        name = spec.name
        out = [f"# HELP {name} {escape_help(spec.help)}\n# TYPE {name} {spec.type}\n"]
        append = out.append
        labels = spec.labels
        if spec.type == "histogram":
            bounds = [f'le="{format_le(b)}"}} ' for b in spec.buckets]
            bucket = f"{name}_bucket"
            for values, cumulative, total, count in fam.hist_samples:
                block = _label_block(labels, values)
                head = bucket + (block[:-1] + "," if block else "{")
                for bound, cum in zip(bounds, cumulative, strict=True):
                    append(f"{head}{bound}{fmt(cum)}\n")
                n = fmt(count)
                append(f'{head}le="+Inf"}} {n}\n{name}_sum{block} {fmt(total)}\n'
                       f"{name}_count{block} {n}\n")
        elif not labels:
            for _, value in fam.samples:
                append(f"{name} {fmt(value)}\n")
        else:
            for values, value in fam.samples:
                key = (labels, values)
                cached = blocks.get(key)
                if cached is None:
                    cached = blocks[key] = _label_block(labels, values)
                append(f"{name}{cached} {fmt(value)}\n")
        chunks.append("".join(out).encode("utf-8"))
    return chunks
