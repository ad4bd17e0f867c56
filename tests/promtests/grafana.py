"""Reading the Grafana dashboards and rule files of dashboards/ for the tests.

Stdlib only: dashboards are JSON; rule files are YAML written in a small, regular
subset (``- alert:``/``- record:``, ``expr: |`` blocks, ``for:``) that is parsed here
line by line rather than adding a YAML dependency.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
ALERTS = DASHBOARDS / "alerts"
METRICS_MD = REPO / "docs" / "metrics.md"

# Series that Prometheus itself makes, not the agent.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS",
                     "scrape_series_added", "scrape_samples_post_metric_relabeling"}

# What the tests put in place of Grafana's own variables.
GRAFANA_VARS = {
    "$__rate_interval": "20s",
    "$__interval": "2s",
    "$__range": "1m",
}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def data_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dash) if p.get("type") != "row")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str
    fmt: str


def queries(path: Path) -> list[Query]:
    dash = load(path)
    out = []
    for p in data_panels(dash):
        for t in p.get("targets", []):
            out.append(Query(path.name, p["title"], t["expr"], t.get("format", "time_series")))
    return out


def variable_queries(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, query, regex) of each query variable, in order (later ones use earlier)."""
    out = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((v["name"], q, v.get("regex", "")))
    return out


def variable_expr(query: str) -> tuple[str, str]:
    """(PromQL expression, label) of a ``label_values(expr, label)`` or
    ``query_result(expr)`` variable query (label "" for query_result)."""
    if query.startswith("label_values("):
        expr, _, label = query[len("label_values("):-1].rpartition(",")
        return expr.strip(), label.strip()
    assert query.startswith("query_result("), query
    return query[len("query_result("):-1], ""


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of ``$var``/``${var}`` (its own variables included)."""
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def load_generator() -> Any:
    """dashboards/generate.py as a module (it is a script, not part of the package)."""
    name = "dtagent_dashboards_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DASHBOARDS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names an expression selects: the generator's reading."""
    names: set[str] = load_generator().metric_names(expr)
    return names


def exported_metrics() -> dict[str, str]:
    """name → type of every metric in docs/metrics.md (histograms by base name)."""
    out = {}
    for m in re.finditer(r"^\| `([a-z_:][a-z0-9_:]*)` \| (\w+) \|",
                         METRICS_MD.read_text(encoding="utf-8"), re.M):
        out[m.group(1)] = m.group(2)
    return out


def series_names(exported: dict[str, str]) -> set[str]:
    """Every series name the agent's exposition can contain."""
    names = set(exported)
    for name, kind in exported.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


# ------------------------------------------------------------------------ rule files


@dataclass
class Rule:
    file: str
    group: str
    kind: str  # "alert" | "record"
    name: str
    expr: str
    for_: str
    labels: dict[str, str]
    annotations: dict[str, str]


def rule_files() -> list[Path]:
    """The rule files Prometheus loads (examples/prometheus.yml)."""
    return sorted(ALERTS.glob("*.yml"))


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_rules(path: Path) -> list[Rule]:
    """Rules of a file in the repository's layout (see dashboards/alerts/*.yml)."""
    rules: list[Rule] = []
    group = ""
    cur: Rule | None = None
    section = ""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if m := re.match(r"\s*- name:\s*(\S+)", line):
            group = _unquote(m.group(1))
            continue
        if m := re.match(r"\s*- (alert|record):\s*(\S+)", line):
            cur = Rule(path.name, group, m.group(1), _unquote(m.group(2)), "", "", {}, {})
            rules.append(cur)
            section = ""
            continue
        if cur is None:
            continue
        indent = len(line) - len(line.lstrip())
        if m := re.match(r"\s*(expr|for|labels|annotations):\s*(.*)$", line):
            key, value = m.group(1), m.group(2).strip()
            section = key
            if key == "expr":
                if value in ("|", ">", "|-", ">-"):
                    block = []
                    while i < len(lines) and (
                        not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
                    ):
                        block.append(lines[i].strip())
                        i += 1
                    cur.expr = "\n".join(b for b in block if b)
                else:
                    cur.expr = _unquote(value)
            elif key == "for":
                cur.for_ = value
            continue
        if section in ("labels", "annotations") and (m := re.match(r"\s*(\w+):\s*(.*)$", line)):
            target = cur.labels if section == "labels" else cur.annotations
            target[m.group(1)] = _unquote(m.group(2))
    return rules


def all_rules() -> list[Rule]:
    return [r for f in rule_files() for r in parse_rules(f)]


def shorten_ranges(text: str, duration: str) -> str:
    """The rule file text with every range selector (``[5m]``, ``[6h]``) set to ``duration``.

    A test that runs for a minute must also look back less than ten minutes: over a
    window longer than the data, ``rate()`` divides a minute's increase by the window.
    """
    return re.sub(r"\[\d+[smhd]\]", f"[{duration}]", text)


def shorten_for(text: str, duration: str) -> str:
    """The rule file text with every ``for:`` set to ``duration``."""
    return re.sub(r"^(\s*for:\s*)\S+\s*$", rf"\g<1>{duration}", text, flags=re.M)
