"""The generated parts of the DTrace docs: the DTrace sections of docs/metrics.md (the
engine's own metrics, then each shipped D script's), and the table of shipped scripts
in docs/dtrace.md. Both come from the specs, so the docs follow the scripts."""

from __future__ import annotations

from dtagent.dtrace.accumulator import SELF_SPECS, metric_spec
from dtagent.dtrace.provider import PROVIDER_SPECS
from dtagent.dtrace.spec import ScriptSpec, SpecError, load_scripts, shipped_dir
from dtagent.metrics import MetricSpec


def metric_sections() -> list[tuple[str, str, list[MetricSpec]]]:
    """(title, description, specs): the engine, then one section per shipped script."""
    sections: list[tuple[str, str, list[MetricSpec]]] = [
        (
            "DTrace engine",
            "Health of the DTrace worker and the D scripts (docs/bundle-dtrace.md)",
            [*PROVIDER_SPECS, *SELF_SPECS],
        )
    ]
    errors: list[SpecError] = []
    for script in load_scripts([shipped_dir()], errors):
        text = script.description.rstrip(".")
        extra = [f"Providers: {', '.join(script.providers) or '–'}"]
        if script.fbt:
            extra.append("relies on fbt")
        if not script.enabled:
            extra.append("off by default")
        if script.overhead:
            extra.append(f"overhead: {script.overhead.rstrip('.')}")
        description = f"{text}. " + "; ".join(extra)
        if script.caveats:
            description += f". Caveats: {script.caveats.rstrip('.')}"
        sections.append(
            (
                f"D script `{script.name}`",
                description,
                [metric_spec(script, a) for a in script.aggregations],
            )
        )
    return sections


TABLE_START = ("<!-- scripts table: generated from scripts/d/*.toml by "
               "`python -m dtagent.docgen` -->")
TABLE_END = "<!-- end of scripts table -->"
# the options the table shows, in this order (the rest are in the .toml)
TABLE_OPTIONS = ("dynvarsize", "aggsize", "bufsize", "strsize")


def _default(script: ScriptSpec) -> str:
    if not script.enabled:
        return "**off**"
    return "on when its probes exist" if script.fbt else "on"


def _table_row(script: ScriptSpec) -> str:
    metrics = ", ".join(f"`{a.metric}`" for a in script.aggregations)
    labels = ", ".join(dict.fromkeys(f"`{label}`" for a in script.aggregations
                                     for label in a.labels)) or "–"
    providers = ", ".join(f"`{p}`" for p in script.providers) or "–"
    if script.variants:
        providers += " (variants: " + ", ".join(script.variants) + ")"
    options = ", ".join(f"{name} {script.options[name]}" for name in TABLE_OPTIONS
                        if name in script.options)
    return (f"| `{script.name}` | {metrics} | {labels} | {providers} | {_default(script)} "
            f"| {options} |")


def scripts_table() -> str:
    """The table of shipped scripts (docs/dtrace.md), from their specs."""
    lines = [
        TABLE_START,
        "| script | metrics | labels | providers | default | kernel buffers |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_table_row(s) for s in load_scripts([shipped_dir()])]
    lines.append(TABLE_END)
    return "\n".join(lines)


def with_scripts_table(text: str) -> str:
    """docs/dtrace.md with its generated table replaced by the current one."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError("docs/dtrace.md has no generated scripts table markers")
    return text[:start] + scripts_table() + text[end + len(TABLE_END):]
