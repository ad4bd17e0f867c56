"""Generate docs/metrics.md from the metric specs the code declares.

``python -m dtagent.docgen`` rewrites the file; a test fails when the committed file
differs from what this produces, so the reference cannot go stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from dtagent import selfmon, server
from dtagent.collectors import available
from dtagent.metrics import MetricSpec

HEADER = """# Metrics reference

Generated from the code by `python -m dtagent.docgen`; do not edit by hand (a test
fails when this file is out of date). Every platform metric starts with `illumos_`,
the agent's own with `dtagent_`. Zone metadata (alias, brand, zone id, image) is only
on `illumos_zone_info`: join it in queries, e.g.
`illumos_zone_memory_rss_bytes * on (zonename) group_left (alias) illumos_zone_info`.
"""


def _row(spec: MetricSpec) -> str:
    labels = ", ".join(f"`{label}`" for label in spec.labels) or "–"
    if spec.type == "histogram":
        labels += " (+ `le`)"
    unit = spec.unit or "–"
    source = spec.source.replace("|", "\\|") or "–"
    text = spec.help.replace("|", "\\|")
    return f"| `{spec.name}` | {spec.type} | {unit} | {labels} | {source} | {text} |"


def _table(specs: Iterable[MetricSpec]) -> list[str]:
    lines = [
        "| name | type | unit | labels | source | help |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(_row(s) for s in sorted(specs, key=lambda s: s.name))
    return lines


def dtrace_sections() -> list[tuple[str, str, list[MetricSpec]]]:
    """(title, description, specs) for the DTrace engine and each shipped D script."""
    try:
        from dtagent.dtrace.docs import metric_sections
    except ImportError:
        return []
    sections: list[tuple[str, str, list[MetricSpec]]] = metric_sections()
    return sections


def render() -> str:
    out = [HEADER]
    for name, cls in available().items():
        if not cls.specs:
            continue
        out.append(f"\n## Collector `{name}`\n")
        if cls.description:
            out.append(cls.description.rstrip(".") + ".\n")
        out.extend(_table(cls.specs))
    for title, description, specs in dtrace_sections():
        out.append(f"\n## {title}\n")
        if description:
            out.append(description.rstrip(".") + ".\n")
        out.extend(_table(specs))
    out.append("\n## The agent itself\n")
    out.extend(_table(selfmon.SPECS))
    out.append("\n## The HTTP front\n")
    out.append(
        "Requests, refusals and deadlines of the listener; see docs/security.md.\n"
    )
    out.extend(_table(server.SPECS))
    return "\n".join(out) + "\n"


def render_configuration() -> str:
    """docs/configuration.md: every setting, from the schema and the collectors' own."""
    import inspect

    from dtagent.config import SCHEMA

    out = [
        "# Configuration reference",
        "",
        "Generated from the code by `python -m dtagent.docgen`; an annotated example is in",
        "[examples/dtagent.toml](../examples/dtagent.toml). Command-line flags override the",
        "file (`--listen`, `--replay`, `--replay-speed`). Any unknown key, wrong type or bad",
        "value stops the agent with a message naming the file and the key (exit status 2).",
    ]
    for section, settings in SCHEMA.items():
        out += ["", f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for key, setting in settings.items():
            out.append(f"| `{key}` | `{setting.default!r}` | {setting.doc} |")
    out += [
        "",
        "## Per-collector settings",
        "",
        "Each collector may take settings in a `[collectors.NAME]` table, for example:",
        "",
        "```toml",
        "[collectors.zone_dataset]",
        "zfs_list_interval = 600.0",
        "```",
    ]
    for name, cls in available().items():
        params = [
            p for p in inspect.signature(cls).parameters.values()
            if p.default is not inspect.Parameter.empty
        ]
        if not params:
            continue
        helps: dict[str, str] = getattr(cls, "settings_help", {})
        out += ["", f"### [collectors.{name}]", "", "| key | default | meaning |", "|---|---|---|"]
        for p in params:
            out.append(f"| `{p.name}` | `{p.default!r}` | {helps.get(p.name, '')} |")
    return "\n".join(out) + "\n"


DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"


def render_dtrace() -> str:
    """docs/dtrace.md, with the table of shipped D scripts generated from their specs."""
    from dtagent.dtrace.docs import with_scripts_table

    return with_scripts_table((DOCS_DIR / "dtrace.md").read_text(encoding="utf-8"))


DOCS = {"metrics.md": render, "configuration.md": render_configuration,
        "dtrace.md": render_dtrace}


def all_metric_names() -> set[str]:
    """Every metric name the agent can export (histograms as their base name)."""
    names = {s.name for cls in available().values() for s in cls.specs}
    names |= {s.name for s in selfmon.SPECS}
    names |= {s.name for s in server.SPECS}
    for _, _, specs in dtrace_sections():
        names |= {s.name for s in specs}
    return names


def main(argv: list[str] | None = None) -> int:
    """Write docs/metrics.md, docs/configuration.md and the generated table of
    docs/dtrace.md (into the directory given, if any)."""
    args = sys.argv[1:] if argv is None else argv
    docs = Path(args[0]) if args else DOCS_DIR
    for name, make in DOCS.items():
        text = make()  # dtrace.md is read before it is rewritten
        (docs / name).write_text(text, encoding="utf-8")
        print(f"wrote {docs / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
