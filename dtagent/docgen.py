"""Generate docs/metrics.md and docs/configuration.md from what the code declares.

``python -m dtagent.docgen`` rewrites the file; a test fails when the committed file
differs from what this produces, so the reference cannot go stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from dtagent import selfmon, server
from dtagent.collectors import available
from dtagent.metrics import MetricSpec
from dtagent.settings import Setting

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


def _settings_table(declared: Mapping[str, Setting]) -> list[str]:
    lines = ["| key | default | accepted values | meaning |", "|---|---|---|---|"]
    for key, setting in declared.items():
        default = _toml(setting.default).replace("|", "\\|")
        expected = setting.expected.replace("|", "\\|")
        text = setting.help.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {expected} | {text} |")
    return lines


def _toml(value: object) -> str:
    """A default as it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def render_configuration() -> str:
    """docs/configuration.md: every declared setting, the sections' and the collectors'."""
    from dtagent.config import SCHEMA

    out = [
        "# Configuration reference",
        "",
        "Generated from the settings the code declares (`dtagent/settings.py`) by",
        "`python -m dtagent.docgen`; do not edit by hand (a test fails when this file is out",
        "of date). An annotated example is in [examples/dtagent.toml](../examples/dtagent.toml).",
        "Command-line flags override the file (`--listen`, `--replay`, `--replay-speed`) and are",
        "checked the same way. The whole file is checked before anything starts: every unknown",
        "key, wrong type or value out of range is reported, one line each naming the file, the",
        "key, the value and what was expected, and the agent exits with status 2.",
    ]
    for section, declared in SCHEMA.items():
        out += ["", f"## [{section}]", ""]
        out += _settings_table(declared)
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
        if not cls.settings:
            continue
        out += ["", f"### [collectors.{name}]", ""]
        out += _settings_table(cls.settings)
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
