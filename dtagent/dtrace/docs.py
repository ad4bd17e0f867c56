"""The DTrace sections of docs/metrics.md: the engine's own metrics, then each shipped
D script's metrics (from its spec, so the reference follows the scripts)."""

from __future__ import annotations

from dtagent.dtrace.accumulator import SELF_SPECS, metric_spec
from dtagent.dtrace.provider import PROVIDER_SPECS
from dtagent.dtrace.spec import SpecError, load_scripts, shipped_dir
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
