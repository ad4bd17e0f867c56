#!/usr/bin/env python3
"""Generate the Grafana dashboards in this directory (dtagent-*.json).

The JSON files are committed so they can be imported as they are; this script is their
source. Run ``python dashboards/generate.py`` after editing it, and
``python dashboards/generate.py --check`` to see whether the files are current (a test
does). Only the standard library is used.

Conventions (../docs/prometheus.md): the data source is the ``datasource`` variable;
every query filters on ``job`` and ``instance`` (and ``zonename`` in the zone view);
rates use ``$__rate_interval``; every panel sets a unit; zone aliases come from joining
``illumos_zone_info``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METRICS_MD = HERE.parent / "docs" / "metrics.md"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["dtagent", "illumos", "smartos"]

# Selectors used by every query.
HOST = 'job="$job", instance="$instance"'
ZONE = 'job="$job", instance="$instance", zonename="$zonename"'
RI = "$__rate_interval"
ALIAS = f" * on (job, instance, zonename) group_left (alias) illumos_zone_info{{{HOST}}}"


# ---------------------------------------------------------------------------- model


@dataclass
class Q:
    """One query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"  # or "table", "heatmap"


@dataclass
class P:
    """One panel; ``w``/``h`` in grid units, placed left to right, top to bottom."""

    title: str
    queries: list[Q]
    unit: str
    description: str = ""
    kind: str = "timeseries"
    w: int = 12
    h: int = 8
    stack: bool = False
    min: float | None = None
    max: float | None = None
    thresholds: list[tuple[float, str]] | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Row:
    title: str


Item = P | Row


def _target(q: Q, ref: str) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": q.expr,
        "legendFormat": q.legend or "__auto",
        "range": not q.instant,
        "instant": q.instant,
        "format": q.fmt,
        "refId": ref,
    }
    if q.fmt == "heatmap":
        t["legendFormat"] = "{{le}}"
    return t


def _steps(thresholds: list[tuple[float, str]] | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    for value, color in thresholds or []:
        steps.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": steps}


def _panel(p: P, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit, "thresholds": _steps(p.thresholds)}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.links:
        defaults["links"] = p.links
    options: dict[str, Any]
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if p.stack else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
        }
        defaults["color"] = {"mode": "palette-classic"}
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                       "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    elif p.kind == "bargauge":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "minVizHeight": 10,
            "minVizWidth": 0,
            "valueMode": "color",
        }
    elif p.kind == "table":
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"},
                              "filterable": True}
        options = {"showHeader": True, "cellHeight": "sm",
                   "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    elif p.kind == "heatmap":
        defaults["custom"] = {"scaleDistribution": {"type": "linear"},
                              "hideFrom": {"legend": False, "tooltip": False, "viz": False}}
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64, "exponent": 0.5,
                      "fill": "dark-orange", "scale": "exponential", "reverse": False},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "le"},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "unit": p.unit, "reverse": False},
            "cellValues": {"unit": "ops"},
        }
    else:
        raise ValueError(f"unknown panel kind {p.kind}")
    options.update(p.options)
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": p.overrides},
        "options": options,
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(p.queries)],
    }
    if p.kind == "heatmap":
        panel["maxDataPoints"] = 100
    if p.transformations:
        panel["transformations"] = p.transformations
    return panel


# ------------------------------------------------------------- what the agent exports

PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "offset", "bool", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric and recording rule names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {
        m.group(1)
        for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text)
        if not m.group(2) and m.group(1) not in _KEYWORDS
    }


def known_series() -> set[str]:
    """Series the agent exports (docs/metrics.md) or the loaded rules record."""
    text = METRICS_MD.read_text(encoding="utf-8")
    names = set(PROMETHEUS_SERIES)
    for m in re.finditer(r"^\| `([a-z_:][a-z0-9_:]*)` \| (\w+) \|", text, re.M):
        names.add(m.group(1))
        if m.group(2) == "histogram":
            names |= {m.group(1) + s for s in ("_bucket", "_sum", "_count")}
    for path in (HERE / "alerts").glob("*.yml"):
        names |= set(re.findall(r"^\s*- record:\s*(\S+)", path.read_text(encoding="utf-8"),
                                re.M))
    return names


OMITTED: list[str] = []


FILTER = True  # False: every panel, exported or not (for checking the omitted ones)


def _available(items: list[Item], known: set[str], dash: str) -> list[Item]:
    """Panels whose every query reads exported series; the others are listed in OMITTED."""
    if not FILTER:
        return items
    out: list[Item] = []
    for item in items:
        if isinstance(item, P):
            missing = set().union(*(metric_names(q.expr) for q in item.queries)) - known
            if missing:
                OMITTED.append(f"{dash}: {item.title} (needs {', '.join(sorted(missing))})")
                continue
        out.append(item)
    # no empty rows
    return [i for n, i in enumerate(out)
            if not isinstance(i, Row) or (n + 1 < len(out) and isinstance(out[n + 1], P))]


def _layout(items: list[Item]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    x = y = 0
    row_h = 0
    pid = 1
    for item in items:
        if isinstance(item, Row):
            if x:
                y += row_h
            out.append({"id": pid, "type": "row", "title": item.title, "collapsed": False,
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            pid += 1
            x, y, row_h = 0, y + 1, 0
            continue
        if x + item.w > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append(_panel(item, pid, x, y))
        pid += 1
        x += item.w
        row_h = max(row_h, item.h)
    return out


def _var_query(name: str, label: str, query: str, regex: str = "", hide: int = 0,
               include_all: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change
        "regex": regex,
        "sort": 1,
        "multi": False,
        "includeAll": include_all,
        "hide": hide,
        "current": {},
        "options": [],
        "skipUrlSync": False,
    }


def variables(zone: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data Source",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "refresh": 1,
            "hide": 0,
            "current": {},
            "options": [],
            "skipUrlSync": False,
        },
        _var_query("job", "Job", "label_values(dtagent_build_info, job)"),
        _var_query("instance", "Host", 'label_values(dtagent_build_info{job="$job"}, instance)'),
    ]
    if zone and "illumos_zone_info" in known_series():
        # Shows the alias, selects the zonename (labels of query_result come sorted, so
        # alias precedes zonename).
        out.append(
            _var_query(
                "zonename",
                "Zone",
                f"query_result(illumos_zone_info{{{HOST}}})",
                regex='/alias="(?<text>[^"]*)".*zonename="(?<value>[^"]+)"/',
            )
        )
    return out


def dashboard(uid: str, title: str, description: str, items: list[Item],
              zone_var: bool = False) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "weekStart": "",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "links": [{
            "title": "dtagent dashboards",
            "type": "dashboards",
            "tags": ["dtagent"],
            "asDropdown": True,
            "includeVars": True,
            "keepTime": True,
            "targetBlank": False,
            "icon": "external link",
            "tooltip": "",
            "url": "",
        }],
        "templating": {"list": variables(zone_var)},
        "panels": _layout(_available(items, known_series(), uid)),
    }


# ----------------------------------------------------------------------- dashboards


def agent() -> dict[str, Any]:
    items: list[Item] = [
        Row("Agent"),
        P("Agents up", [Q('up{job="$job"}', "{{instance}}", instant=True)], "none",
          "Prometheus's view of every agent of the job: 1 = scraped, 0 = down.",
          kind="stat", w=8, h=5, thresholds=[(0, "red"), (1, "green")]),
        P("Version", [Q(f"dtagent_build_info{{{HOST}}}", "{{version}} (Python {{python}})",
                        instant=True)],
          "none", "Version of the agent on this host.", kind="stat", w=8, h=5,
          options={"textMode": "name", "colorMode": "none"}),
        P("Uptime", [Q(f"time() - dtagent_process_start_time_seconds{{{HOST}}}", "uptime",
                       instant=True)],
          "s", "Time since the agent process started.", kind="stat", w=8, h=5,
          options={"colorMode": "none"}),
        Row("Collectors"),
        P("Collector success", [Q(f"dtagent_collector_success{{{HOST}}}", "{{collector}}")],
          "none", "Last run of each collector: 1 succeeded, 0 failed (the log says why).",
          min=0, max=1),
        P("Collector duration", [Q(f"dtagent_collector_duration_seconds{{{HOST}}}",
                                   "{{collector}}")],
          "s", "How long each collector's last run took.", stack=True),
        P("Collectors available", [Q(f"dtagent_collector_available{{{HOST}}}",
                                     "{{collector}}", instant=True)],
          "none", "1 if the collector can run on this host; 0 if not (the reason is logged "
          "at start).", kind="stat", w=8, thresholds=[(0, "red"), (1, "green")],
          options={"textMode": "value_and_name"}),
        P("Collection time", [Q(f"dtagent_scrape_duration_seconds{{{HOST}}}", "all collectors"),
                              Q(f"scrape_duration_seconds{{{HOST}}}", "scrape (Prometheus)")],
          "s", "The agent's collection of all collectors, and the whole scrape as Prometheus "
          "measured it.", w=8),
        P("Samples per scrape", [Q(f"scrape_samples_scraped{{{HOST}}}", "samples")],
          "short", "Series the agent served per scrape.", w=8),
        Row("Commands"),
        P("Command result age", [
            Q(f"dtagent_command_age_seconds{{{HOST}}}", "{{command}}"),
            Q(f"dtagent_command_max_age_seconds{{{HOST}}}", "{{command}} (limit)")],
          "s", "Age of the oldest result of each platform command the collectors read; past "
          "its limit a result is dropped and the series it feeds are missing."),
        P("Command failures", [
            Q(f"increase(dtagent_command_failures_total{{{HOST}}}[{RI}])", "{{command}}")],
          "short", "Runs that failed: not installed, non-zero exit, timed out or output over "
          "the cap (the agent's log says which)."),
        Row("Operators' metrics"),
        P("Textfiles refused", [Q(f"dtagent_textfile_scrape_error{{{HOST}}}", "refused")],
          "none", "1 while a *.prom file of the textfile directory is refused (the log "
          "says which and why).", w=6, min=0, max=1),
        P("Textfile age", [Q(f"time() - dtagent_textfile_mtime_seconds{{{HOST}}}", "{{file}}")],
          "s", "Time since each *.prom file was last written: a writer that stopped shows "
          "here.", w=6),
        P("Plugin success", [Q(f"dtagent_plugin_success{{{HOST}}}", "{{plugin}}")], "none",
          "Last run of each plugin: 1 succeeded, 0 failed (the log says why).", w=6,
          min=0, max=1),
        P("Plugin duration", [Q(f"dtagent_plugin_duration_seconds{{{HOST}}}", "{{plugin}}")],
          "s", "How long each plugin's last run took.", w=6),
        Row("DTrace"),
        P("DTrace worker", [Q(f"dtagent_dtrace_worker_up{{{HOST}}}", "worker up")],
          "none", "1 while the DTrace worker process runs and reports.", kind="stat", w=6,
          thresholds=[(0, "red"), (1, "green")]),
        P("Scripts enabled", [Q(f"dtagent_dtrace_script_enabled{{{HOST}}}", "{{script}}",
                                instant=True)],
          "none", "Each D script: 1 enabled, 0 disabled (`dtagent dtrace list` says why).",
          kind="stat", w=6, thresholds=[(0, "orange"), (1, "green")],
          options={"textMode": "value_and_name"}),
        P("Worker restarts", [
            Q(f"increase(dtagent_dtrace_worker_restarts_total{{{HOST}}}[{RI}])", "restarts")],
          "short", "Restarts of the DTrace worker (it died or stopped reporting).", w=12),
        P("DTrace drops", [
            Q(f"rate(dtagent_dtrace_drops_total{{{HOST}}}[{RI}])", "{{kind}}")],
          "short", "Data DTrace dropped per second, by kind of buffer; histograms undercount "
          "while it drops."),
        P("DTrace errors", [
            Q(f"rate(dtagent_dtrace_errors_total{{{HOST}}}[{RI}])", "{{script}}")],
          "short", "Runtime errors per second of each D script."),
        Row("Process"),
        P("CPU used", [Q(f"rate(dtagent_process_cpu_seconds_total{{{HOST}}}[{RI}])", "cpu")],
          "percentunit", "CPU time of the agent process, as a fraction of one CPU."),
        P("Resident memory", [Q(f"dtagent_process_resident_memory_bytes{{{HOST}}}", "rss")],
          "bytes", "Resident memory of the agent process (budget: 80 MB at 1,000 zones)."),
    ]
    return dashboard("dtagent-agent", "dtagent / Agent",
                     "The agent itself: collectors, DTrace worker, process.", items)


def latency(title: str, metric: str, description: str, sel: str = ZONE) -> list[Item]:
    """A DTrace latency histogram: heatmap of its buckets, and p50/p99 beside it."""
    rate = f"rate({metric}_bucket{{{sel}}}[{RI}])"
    return [
        P(f"{title}: distribution", [Q(f"sum by (le) ({rate})", fmt="heatmap")], "s",
          description + " Each column is the distribution over the interval (DTrace).",
          kind="heatmap"),
        P(f"{title}: p50 and p99", [
            Q(f"histogram_quantile(0.5, sum by (le) ({rate}))", "p50"),
            Q(f"histogram_quantile(0.99, sum by (le) ({rate}))", "p99"),
        ], "s", description + " Median and 99th percentile, from the same histogram."),
    ]


def _ratio_col(ref: str, name: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "unit", "value": "percentunit"},
            {"id": "min", "value": 0},
            {"id": "max", "value": 1},
            {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
            {"id": "thresholds", "value": _steps([(0.8, "orange"), (0.9, "red")])},
        ],
    }


ZONE_LINK = (
    "/d/dtagent-zone/dtagent-zone?${datasource:queryparam}&${job:queryparam}"
    "&${instance:queryparam}&var-zonename=${__data.fields.zonename}&${__url_time_range}"
)
ZONES_LINK = (
    "/d/dtagent-zones/dtagent-zones?${datasource:queryparam}&${job:queryparam}"
    "&var-instance=${__data.fields.instance}&${__url_time_range}"
)

RATIOS = [
    ("cpu", "illumos_zone_cpu_cap_ratio", "CPU"),
    ("memory", "illumos_zone_memory_cap_ratio", "Memory"),
    ("swap", "illumos_zone_swap_cap_ratio", "Swap"),
    ("locked_memory", "illumos_zone_locked_memory_cap_ratio", "Locked memory"),
    ("processes", "illumos_zone_processes_cap_ratio", "Processes"),
    ("disk_quota", "illumos_zone_quota_ratio", "Disk quota"),
]
CAPS = "instance_zonename_resource:illumos_zone_cap_usage:ratio"
TIGHTEST = "instance_zonename:illumos_zone_cap_usage:max_ratio"
FLEET = 'job="$job", instance=~"$instance"'
FLEET_ALIAS = (' * on (job, instance, zonename) group_left (alias) '
               f"illumos_zone_info{{{FLEET}}}")


def fleet() -> dict[str, Any]:
    near = f"{TIGHTEST}{{{FLEET}}} > 0.9"
    items: list[Item] = [
        Row("Fleet"),
        P("Hosts up", [Q(f"sum(up{{{FLEET}}})", "up", instant=True)], "short",
          "Agents Prometheus scrapes successfully.", kind="stat", w=6, h=4,
          options={"colorMode": "none"}),
        P("Zones running", [Q(f'count(illumos_zone_info{{{FLEET}, state="running"}})',
                              "zones", instant=True)],
          "short", "Running zones on the hosts shown.", kind="stat", w=6, h=4,
          options={"colorMode": "none"}),
        P("Zones above 90% of a cap", [Q(f"count({near}) or vector(0)", "zones", instant=True)],
          "short", "Zones whose tightest cap (CPU, memory, swap, locked memory, processes, "
          "disk quota) is more than 90% used.", kind="stat", w=6, h=4,
          thresholds=[(1, "orange")]),
        P("Alerts firing", [Q(f'count(ALERTS{{{FLEET}, alertstate="firing"}}) or vector(0)',
                              "alerts", instant=True)],
          "short", "dtagent alerts firing now (docs/alerts.md).", kind="stat", w=6, h=4,
          thresholds=[(1, "red")]),
        P("Hosts", [
            Q(f"count by (job, instance) (illumos_zone_info{{{FLEET}}})", instant=True,
              fmt="table"),
            Q(f"max by (job, instance) ({TIGHTEST}{{{FLEET}}})", instant=True, fmt="table"),
            Q(f"count by (job, instance) ({near}) or 0 * count by (job, instance) "
              f"({TIGHTEST}{{{FLEET}}})", instant=True, fmt="table"),
            Q(f"sum by (job, instance) (instance_zonename:illumos_zone_cpu_usage_seconds:rate5m"
              f"{{{FLEET}}})", instant=True, fmt="table"),
            Q(f"instance:illumos_zfs_arc_hit_ratio:rate5m{{{FLEET}}}", instant=True,
              fmt="table"),
        ], "short", "Every host: zones, its tightest zone cap, how many zones are above 90% of "
          "a cap, CPU used by its zones, ARC hit ratio. The host name links to its zones.",
          kind="table", w=24, h=9,
          transformations=[
              {"id": "merge", "options": {}},
              {"id": "organize", "options": {
                  "excludeByName": {"Time": True, "job": True},
                  "renameByName": {"instance": "host", "Value #A": "zones",
                                   "Value #B": "tightest cap", "Value #C": "zones > 90%",
                                   "Value #D": "CPU used by zones",
                                   "Value #E": "ARC hit ratio"},
              }},
          ],
          overrides=[
              _ratio_col("B", "tightest cap"),
              _ratio_col("E", "ARC hit ratio") | {"properties": [
                  {"id": "unit", "value": "percentunit"}]},
              {"matcher": {"id": "byName", "options": "host"}, "properties": [
                  {"id": "links", "value": [{"title": "Zones of ${__value.text}",
                                             "url": ZONES_LINK}]}]},
          ],
          options={"sortBy": [{"displayName": "tightest cap", "desc": True}]}),
        Row("Pressure"),
        P("Tightest cap by host", [Q(f"max by (instance) ({TIGHTEST}{{{FLEET}}})",
                                     "{{instance}}")],
          "percentunit", "For each host, the most-used cap of any of its zones.", min=0),
        P("Most pressed zones", [Q(f"topk(10, {TIGHTEST}{{{FLEET}}}{FLEET_ALIAS})",
                                   "{{instance}} {{alias}}")],
          "percentunit", "The ten zones closest to one of their caps.", min=0),
        P("Zones above 90% by resource", [
            Q(f"count by (resource) ({CAPS}{{{FLEET}}} > 0.9)", "{{resource}}")],
          "short", "How many zones are above 90% of each kind of cap.", stack=True),
        P("CPU used by zones", [
            Q(f"sum by (instance) (instance_zonename:illumos_zone_cpu_usage_seconds:rate5m"
              f"{{{FLEET}}})", "{{instance}}")],
          "short", "CPUs used by all zones of each host.", stack=True),
        P("Memory of zones", [Q(f"sum by (instance) (illumos_zone_memory_rss_bytes{{{FLEET}}})",
                                "{{instance}}")],
          "bytes", "Resident memory of all zones of each host.", stack=True),
        P("ARC hit ratio", [Q(f"instance:illumos_zfs_arc_hit_ratio:rate5m{{{FLEET}}}",
                              "{{instance}}")],
          "percentunit", "ZFS ARC hit ratio of each host.", max=1),
    ]
    dash = dashboard("dtagent-fleet", "dtagent / Fleet",
                     "Every host with its zones' pressure at a glance.", items)
    inst = dash["templating"]["list"][2]
    inst.update({"multi": True, "includeAll": True, "allValue": ".+",
                 "current": {"text": "All", "value": "$__all"}})
    return dash


def zones() -> dict[str, Any]:
    cols = [Q(f"illumos_zone_info{{{HOST}}}", instant=True, fmt="table"),
            Q(f"sum by (job, instance, zonename) (rate(illumos_zone_cpu_seconds_total{{{HOST}}}"
              f"[{RI}]))", instant=True, fmt="table")]
    rename = {"Value #B": "CPU used"}
    overrides: list[dict[str, Any]] = [
        {"matcher": {"id": "byName", "options": "zonename"}, "properties": [
            {"id": "links", "value": [{"title": "Zone ${__value.text}", "url": ZONE_LINK}]}]},
        {"matcher": {"id": "byName", "options": "CPU used"}, "properties": [
            {"id": "unit", "value": "short"}, {"id": "decimals", "value": 2}]},
    ]
    for i, (_, metric, label) in enumerate(RATIOS):
        ref = chr(ord("C") + i)
        cols.append(Q(f"{metric}{{{HOST}}}", instant=True, fmt="table"))
        rename[f"Value #{ref}"] = label
        overrides.append(_ratio_col(ref, label))
    ref = chr(ord("C") + len(RATIOS))
    cols.append(Q(f"rate(illumos_zone_cpu_above_cap_seconds_total{{{HOST}}}[{RI}])",
                  instant=True, fmt="table"))
    rename[f"Value #{ref}"] = "At CPU cap"
    overrides.append(_ratio_col(ref, "At CPU cap"))
    alias = HOST
    items: list[Item] = [
        Row("Zones"),
        P("Zones of the host", cols, "percentunit",
          "Every zone of the host: alias, brand, state, CPU used (in CPUs), usage against "
          "each cap (empty: no cap), and the share of time at its CPU cap. Sort by any "
          "column; the zonename opens the zone's dashboard.",
          kind="table", w=24, h=12,
          transformations=[
              {"id": "merge", "options": {}},
              {"id": "organize", "options": {
                  "excludeByName": {"Time": True, "job": True, "instance": True,
                                    "__name__": True, "Value #A": True},
                  "indexByName": {"alias": 0, "zonename": 1, "brand": 2, "state": 3},
                  "renameByName": rename,
              }},
          ],
          overrides=overrides,
          options={"sortBy": [{"displayName": "Memory", "desc": True}]}),
        Row("Pressure"),
        P("Tightest cap by zone", [Q(f"{TIGHTEST}{{{alias}}}{ALIAS}", "{{alias}}")],
          "percentunit", "Each zone's most-used cap.", min=0),
        P("Time at CPU cap", [
            Q(f"rate(illumos_zone_cpu_above_cap_seconds_total{{{HOST}}}[{RI}]){ALIAS}",
              "{{alias}}")],
          "percentunit", "Share of time each capped zone spent at its CPU cap.", min=0),
        P("CPU used", [Q(f"sum by (job, instance, zonename) (rate(illumos_zone_cpu_seconds_total"
                         f"{{{HOST}}}[{RI}])){ALIAS}", "{{alias}}")],
          "short", "CPUs used by each zone (user + system).", stack=True),
        P("Resident memory", [Q(f"illumos_zone_memory_rss_bytes{{{HOST}}}{ALIAS}",
                                "{{alias}}")],
          "bytes", "Resident memory of each zone.", stack=True),
        P("Network received", [
            Q(f"sum by (job, instance, zonename) (rate(illumos_link_received_bytes_total"
              f"{{{HOST}, zonename!=\"\"}}[{RI}])){ALIAS}", "{{alias}}")],
          "Bps", "Bytes per second received by each zone's VNICs.", stack=True),
        P("Network sent", [
            Q(f"sum by (job, instance, zonename) (rate(illumos_link_transmitted_bytes_total"
              f"{{{HOST}, zonename!=\"\"}}[{RI}])){ALIAS}", "{{alias}}")],
          "Bps", "Bytes per second sent by each zone's VNICs.", stack=True),
        P("VFS operations", [
            Q(f"sum by (job, instance, zonename) (rate(illumos_zone_vfs_reads_total{{{HOST}}}"
              f"[{RI}]) + rate(illumos_zone_vfs_writes_total{{{HOST}}}[{RI}])){ALIAS}",
              "{{alias}}")],
          "ops", "File system reads and writes per second of each zone.", stack=True),
        P("Slow VFS operations", [
            Q(f"rate(illumos_zone_vfs_100ms_ops_total{{{HOST}}}[{RI}]){ALIAS}", "{{alias}}")],
          "ops", "File system operations per second that took over 100 ms, per zone "
          "(the kernel's own count).", stack=True),
    ]
    return dashboard("dtagent-zones", "dtagent / Zones",
                     "All zones of a host against their caps.", items)


def zone() -> dict[str, Any]:
    z = ZONE
    items: list[Item] = [
        Row("Zone"),
        P("Zone", [Q(f"illumos_zone_info{{{z}}}",
                     "{{alias}} · {{brand}} · zone id {{zoneid}} · {{state}}", instant=True)],
          "none", "The zone's alias, brand, zone id and state.", kind="stat", w=10, h=4,
          options={"textMode": "name", "colorMode": "none", "graphMode": "none"}),
        P("Usage against caps", [Q(f"{CAPS}{{{z}}}", "{{resource}}", instant=True)],
          "percentunit", "Each capped resource of the zone, 0-100% of its cap (an uncapped "
          "resource is not shown).", kind="bargauge", w=14, h=8, min=0, max=1,
          thresholds=[(0.8, "orange"), (0.9, "red")]),
        Row("CPU"),
        P("CPU used and cap", [
            Q(f"sum by (zonename) (rate(illumos_zone_cpu_seconds_total{{{z}}}[{RI}]))", "used"),
            Q(f"illumos_zone_cpu_cap_cpus{{{z}}}", "cap"),
            Q(f"illumos_zone_cpu_baseline_cpus{{{z}}}", "baseline"),
        ], "short", "CPUs used by the zone (user + system) against its CPU cap and baseline "
          "(in CPUs)."),
        P("CPU by mode", [
            Q(f"rate(illumos_zone_cpu_seconds_total{{{z}}}[{RI}])", "{{mode}}"),
            Q(f"rate(illumos_zone_cpu_wait_seconds_total{{{z}}}[{RI}])", "waiting to run"),
        ], "short", "CPU time per second by mode, and time threads spent runnable but "
          "waiting for a CPU."),
        P("Time at CPU cap", [
            Q(f"rate(illumos_zone_cpu_above_cap_seconds_total{{{z}}}[{RI}])", "at cap"),
            Q(f"rate(illumos_zone_cpu_above_baseline_seconds_total{{{z}}}[{RI}])",
              "above baseline"),
        ], "percentunit", "Share of time the zone was at its CPU cap, and above its baseline.",
          min=0, max=1),
        P("Threads waiting on the CPU cap", [
            Q(f"illumos_zone_cpu_cap_waiting_threads{{{z}}}", "waiting")],
          "short", "Runnable threads of the zone parked by its CPU cap.", min=0),
        *latency("Run-queue latency", "illumos_zone_runq_latency_seconds",
                 "Time from a thread of the zone becoming runnable to getting a CPU."),
        *latency("CPU cap throttling", "illumos_zone_cpucaps_wait_seconds",
                 "Time threads of the zone spent parked by the CPU cap."),
        *latency("System call latency", "illumos_zone_syscall_latency_seconds",
                 "Time the zone's system calls took, entry to return (calls that wait by "
                 "design, such as poll, are left out)."),
        Row("Memory"),
        P("Memory and cap", [
            Q(f"illumos_zone_memory_rss_bytes{{{z}}}", "resident"),
            Q(f"illumos_zone_memory_cap_bytes{{{z}}}", "cap"),
        ], "bytes", "Resident memory of the zone against its physical memory cap."),
        P("Swap and cap", [
            Q(f"illumos_zone_swap_bytes{{{z}}}", "reserved"),
            Q(f"illumos_zone_swap_cap_bytes{{{z}}}", "cap"),
        ], "bytes", "Swap (virtual memory) reserved by the zone against its swap cap."),
        P("Paging", [
            Q(f"rate(illumos_zone_memory_paged_out_bytes_total{{{z}}}[{RI}])", "paged out"),
            Q(f"rate(illumos_zone_memory_anon_paged_in_bytes_total{{{z}}}[{RI}])",
              "anonymous paged in"),
        ], "Bps", "Memory the kernel paged out to keep the zone under its cap, and anonymous "
          "memory paged back in (thrashing)."),
        P("Over the memory cap", [
            Q(f"rate(illumos_zone_memory_over_cap_total{{{z}}}[{RI}])", "over cap"),
            Q(f"rate(illumos_zone_memory_pagefault_throttle_seconds_total{{{z}}}[{RI}])",
              "page-fault throttle"),
        ], "short", "Times per second the kernel found the zone over its cap, and the "
          "seconds per second its page faults were throttled."),
        P("Processes and locked memory", [
            Q(f"illumos_zone_processes_cap_ratio{{{z}}}", "processes"),
            Q(f"illumos_zone_locked_memory_cap_ratio{{{z}}}", "locked memory"),
        ], "percentunit", "Processes and locked memory against their limits.", min=0, max=1),
        Row("Disk"),
        P("VFS operations", [
            Q(f"rate(illumos_zone_vfs_reads_total{{{z}}}[{RI}])", "reads"),
            Q(f"rate(illumos_zone_vfs_writes_total{{{z}}}[{RI}])", "writes"),
        ], "ops", "File system reads and writes per second."),
        P("VFS bytes", [
            Q(f"rate(illumos_zone_vfs_read_bytes_total{{{z}}}[{RI}])", "read"),
            Q(f"rate(illumos_zone_vfs_written_bytes_total{{{z}}}[{RI}])", "written"),
        ], "Bps", "File system bytes read and written per second."),
        P("Slow VFS operations", [
            Q(f"rate(illumos_zone_vfs_10ms_ops_total{{{z}}}[{RI}])", "> 10 ms"),
            Q(f"rate(illumos_zone_vfs_100ms_ops_total{{{z}}}[{RI}])", "> 100 ms"),
            Q(f"rate(illumos_zone_vfs_1s_ops_total{{{z}}}[{RI}])", "> 1 s"),
            Q(f"rate(illumos_zone_vfs_10s_ops_total{{{z}}}[{RI}])", "> 10 s"),
        ], "ops", "Operations per second slower than each threshold (the kernel's counts)."),
        P("ZFS write throttle", [
            Q(f"rate(illumos_zone_vfs_delays_total{{{z}}}[{RI}])", "delayed writes"),
        ], "ops", "Writes per second delayed by the ZFS I/O throttle."),
        P("ZFS I/O", [
            Q(f"rate(illumos_zone_zfs_read_bytes_total{{{z}}}[{RI}])", "read"),
            Q(f"rate(illumos_zone_zfs_written_bytes_total{{{z}}}[{RI}])", "written"),
        ], "Bps", "Physical ZFS bytes read and written for the zone."),
        P("Disk quota", [
            Q(f"illumos_zone_quota_ratio{{{z}}}", "{{dataset}}"),
        ], "percentunit", "Space used by each dataset of the zone against its quota.",
          min=0, max=1),
        *latency("File system latency", "illumos_zone_fs_latency_seconds",
                 "Latency of file system operations as the zone's applications see it."),
        *latency("Disk I/O latency", "illumos_zone_disk_latency_seconds",
                 "Latency of the zone's ZFS disk I/O."),
        *latency("ZFS I/O throttle delay", "illumos_zone_zfs_throttle_delay_seconds",
                 "Delays the ZFS zone I/O throttle imposed on the zone's reads and writes."),
        Row("Network"),
        P("VNIC traffic", [
            Q(f"rate(illumos_link_received_bytes_total{{{z}}}[{RI}])", "{{link}} in"),
            Q(f"-rate(illumos_link_transmitted_bytes_total{{{z}}}[{RI}])", "{{link}} out"),
            Q(f"illumos_link_maxbw_bytes_per_second{{{z}}}", "{{link}} maxbw"),
        ], "Bps", "Bytes per second received (up) and sent (down) on each VNIC of the zone, "
          "and its bandwidth cap."),
        P("VNIC errors and drops", [
            Q(f"rate(illumos_link_receive_errors_total{{{z}}}[{RI}])", "{{link}} in errors"),
            Q(f"rate(illumos_link_transmit_errors_total{{{z}}}[{RI}])", "{{link}} out errors"),
        ], "pps", "Errors per second on each VNIC of the zone."),
        P("TCP", [
            Q(f"rate(illumos_zone_tcp_active_opens_total{{{z}}}[{RI}])", "connects"),
            Q(f"rate(illumos_zone_tcp_passive_opens_total{{{z}}}[{RI}])", "accepts"),
            Q(f"rate(illumos_zone_tcp_retransmitted_segments_total{{{z}}}[{RI}])",
              "retransmits"),
            Q(f"rate(illumos_zone_tcp_listen_drops_total{{{z}}}[{RI}])", "listen drops"),
        ], "short", "TCP events per second in the zone's IP stack."),
        *latency("TCP connect latency", "illumos_zone_tcp_connect_latency_seconds",
                 "Time from connect() to established for the zone's outgoing connections."),
        Row("Hardware VM (KVM, bhyve)"),
        P("VM", [Q(f"illumos_vm_info{{{z}}}", "{{brand}} · {{vcpus}} vCPUs", instant=True)],
          "none", "The VM's brand and vCPUs (vmadm); empty for a zone that is not a "
          "hardware VM.", kind="stat", w=6, h=8,
          options={"textMode": "name", "colorMode": "none", "graphMode": "none"}),
        P("VM memory and disks", [
            Q(f"illumos_vm_ram_bytes{{{z}}}", "RAM"),
            Q(f"illumos_vm_disk_bytes{{{z}}}", "{{disk}}"),
        ], "bytes", "RAM and disk sizes configured for the VM.", w=6),
        P("bhyve vCPU time by state", [
            Q(f"sum by (state) (rate(illumos_vm_vcpu_time_seconds_total{{{z}}}[{RI}]))",
              "{{state}}"),
        ], "short", "vCPUs' time per second in each state, all vCPUs summed: run (guest), "
          "idle (halted), emulation in the kernel or the bhyve process, and sched (runnable, "
          "waiting for a host CPU).", stack=True),
        P("bhyve vCPUs waiting for a host CPU", [
            Q(f"rate(illumos_vm_vcpu_time_seconds_total{{{z}, state=\"sched\"}}[{RI}])",
              "vCPU {{vcpu}}"),
        ], "percentunit", "Share of time each vCPU was runnable but off CPU: the guest's "
          "steal time.", min=0),
        P("KVM exits by reason", [
            Q(f"sum by (reason) (rate(illumos_vm_vcpu_exits_total{{{z}}}[{RI}]))", "{{reason}}"),
        ], "ops", "Exits of the KVM guest's vCPUs to the hypervisor per second, by reason.",
          stack=True),
        P("KVM guest events", [
            Q(f"sum(rate(illumos_vm_vcpu_halt_wakeups_total{{{z}}}[{RI}]))", "HLT wake-ups"),
            Q(f"sum(rate(illumos_vm_vcpu_hypercalls_total{{{z}}}[{RI}]))", "hypercalls"),
            Q(f"sum(rate(illumos_vm_vcpu_guest_page_faults_total{{{z}}}[{RI}]))",
              "guest page faults"),
        ], "ops", "HLT wake-ups, hypercalls and page faults injected into the guest, per "
          "second, all vCPUs."),
    ]
    return dashboard("dtagent-zone", "dtagent / Zone",
                     "One zone in depth: CPU, memory, disk and network against its caps, "
                     "and its DTrace latency distributions.", items, zone_var=True)


def zfs() -> dict[str, Any]:
    h = HOST
    arc = "illumos_zfs_arc"
    items: list[Item] = [
        Row("ARC"),
        P("ARC size", [
            Q(f"{arc}_size_bytes{{{h}}}", "size"),
            Q(f"{arc}_target_size_bytes{{{h}}}", "target (c)"),
            Q(f"{arc}_max_size_bytes{{{h}}}", "maximum (c_max)"),
            Q(f"{arc}_min_size_bytes{{{h}}}", "minimum (c_min)"),
        ], "bytes", "Size of the ARC against its target and limits."),
        P("ARC hit ratio", [
            Q(f"sum(rate({arc}_hits_total{{{h}}}[{RI}])) / (sum(rate({arc}_hits_total{{{h}}}"
              f"[{RI}])) + sum(rate({arc}_misses_total{{{h}}}[{RI}])))", "hit ratio"),
        ], "percentunit", "Share of ARC reads served from memory.", max=1),
        P("ARC hits and misses", [
            Q(f"rate({arc}_hits_total{{{h}}}[{RI}])", "hits"),
            Q(f"rate({arc}_misses_total{{{h}}}[{RI}])", "misses"),
        ], "ops", "ARC hits and misses per second."),
        P("ARC contents", [
            Q(f"{arc}_mru_size_bytes{{{h}}}", "MRU"),
            Q(f"{arc}_mfu_size_bytes{{{h}}}", "MFU"),
        ], "bytes", "Recently (MRU) and frequently (MFU) used parts of the ARC.", stack=True),
        Row("L2ARC"),
        P("L2ARC size", [
            Q(f"{arc}_l2_size_bytes{{{h}}}", "size"),
            Q(f"{arc}_l2_allocated_bytes{{{h}}}", "allocated on device"),
        ], "bytes", "Data in the L2ARC, and the space it takes on the cache device."),
        P("L2ARC hit ratio", [
            Q(f"rate({arc}_l2_hits_total{{{h}}}[{RI}]) / (rate({arc}_l2_hits_total{{{h}}}[{RI}])"
              f" + rate({arc}_l2_misses_total{{{h}}}[{RI}]))", "hit ratio"),
        ], "percentunit", "Share of ARC misses served from the L2ARC.", max=1),
        P("L2ARC traffic", [
            Q(f"rate({arc}_l2_read_bytes_total{{{h}}}[{RI}])", "read"),
            Q(f"rate({arc}_l2_written_bytes_total{{{h}}}[{RI}])", "written"),
        ], "Bps", "Bytes per second read from and written to the cache device."),
        P("L2ARC errors", [
            Q(f"increase({arc}_l2_checksum_errors_total{{{h}}}[{RI}])", "checksum errors"),
            Q(f"increase({arc}_l2_io_errors_total{{{h}}}[{RI}])", "I/O errors"),
        ], "short", "Errors of the cache device; anything above zero is worth a look."),
        Row("Pools"),
        P("Pool operations", [
            Q(f"rate(illumos_zfs_pool_reads_total{{{h}}}[{RI}])", "{{pool}} reads"),
            Q(f"rate(illumos_zfs_pool_writes_total{{{h}}}[{RI}])", "{{pool}} writes"),
        ], "iops", "Read and write operations per second of each pool."),
        P("Pool bytes", [
            Q(f"rate(illumos_zfs_pool_read_bytes_total{{{h}}}[{RI}])", "{{pool}} read"),
            Q(f"rate(illumos_zfs_pool_written_bytes_total{{{h}}}[{RI}])", "{{pool}} written"),
        ], "Bps", "Bytes per second read and written by each pool."),
        P("Pool queues", [
            Q(f"rate(illumos_zfs_pool_wait_queue_length_seconds_total{{{h}}}[{RI}])",
              "{{pool}} waiting"),
            Q(f"rate(illumos_zfs_pool_run_queue_length_seconds_total{{{h}}}[{RI}])",
              "{{pool}} active"),
        ], "short", "Average number of I/Os waiting and active in each pool (the kstat "
          "queue-length integrals)."),
        *latency("ZIL commit latency", "illumos_zfs_zil_commit_latency_seconds",
                 "Time of ZIL commits (fsync and O_DSYNC writes).", sel=HOST),
        P("ZIL bytes committed", [
            Q(f"sum by (pool) (rate(illumos_zfs_zil_committed_bytes_total{{{h}}}[{RI}]))",
              "{{pool}}"),
        ], "Bps", "Bytes of intent log records written per second, by pool (DTrace)."),
    ]
    return dashboard("dtagent-zfs", "dtagent / ZFS",
                     "ZFS of a host: ARC, L2ARC, pools and the ZIL.", items)


def health() -> dict[str, Any]:
    h = HOST
    items: list[Item] = [
        Row("Pools"),
        P("Pool health", [Q(f"illumos_zpool_health{{{h}}} == 1", "{{pool}}: {{state}}",
                            instant=True)],
          "none", "Each pool's state (zpool list); anything but ONLINE needs attention.",
          kind="stat", w=8, h=4,
          options={"textMode": "name", "colorMode": "none", "graphMode": "none"}),
        P("Pool capacity", [Q(f"illumos_zpool_capacity_ratio{{{h}}}", "{{pool}}")],
          "percentunit", "Allocated share of each pool.", w=8, h=8, min=0, max=1,
          thresholds=[(0.8, "orange"), (0.9, "red")]),
        P("Pool space", [
            Q(f"illumos_zpool_allocated_bytes{{{h}}}", "{{pool}} allocated"),
            Q(f"illumos_zpool_free_bytes{{{h}}}", "{{pool}} free"),
        ], "bytes", "Allocated and free space of each pool.", w=8),
        P("Fragmentation and dedup", [
            Q(f"illumos_zpool_fragmentation_ratio{{{h}}}", "{{pool}} fragmentation"),
            Q(f"illumos_zpool_dedup_ratio{{{h}}} - 1", "{{pool}} dedup savings"),
        ], "percentunit", "Fragmentation of each pool's free space, and the share dedup "
          "saves (dedup ratio - 1)."),
        P("Vdev errors", [
            Q(f"sum by (pool, vdev) (illumos_zpool_vdev_read_errors_total{{{h}}}"
              f" + illumos_zpool_vdev_write_errors_total{{{h}}}"
              f" + illumos_zpool_vdev_checksum_errors_total{{{h}}})", "{{pool}} {{vdev}}"),
        ], "short", "Read, write and checksum errors of each vdev (zpool status; zpool clear "
          "resets them)."),
        P("Vdevs", [Q(f"illumos_zpool_vdev_info{{{h}}}", "", instant=True, fmt="table")],
          "none", "Every vdev of every pool with its parent, role and state.", kind="table",
          w=24, h=8),
        Row("Scrub and resilver"),
        P("Scrub or resilver running", [
            Q(f"illumos_zpool_scan_in_progress{{{h}}}", "{{pool}} {{function}}"),
        ], "short", "1 while a scrub or resilver runs.", w=8, min=0, max=1),
        P("Scan progress", [
            Q(f"illumos_zpool_scan_progress_ratio{{{h}}}", "{{pool}} {{function}}"),
        ], "percentunit", "Share done of the running scrub or resilver (1 once finished).",
          w=8, min=0, max=1),
        P("Time since the last scrub", [
            Q(f"time() - illumos_zpool_scan_last_end_time_seconds{{{h}, function=\"scrub\"}}",
              "{{pool}}"),
        ], "s", "How long ago each pool's last scrub finished.", w=8,
          thresholds=[(35 * 86400, "red")]),
        P("Data errors", [Q(f"illumos_zpool_data_errors{{{h}}}", "{{pool}}")], "short",
          "Files or objects with permanent errors (zpool status errors:)."),
        Row("Services (SMF)"),
        P("Service instances by state", [
            Q(f"sum by (state) (illumos_smf_services{{{h}}})", "{{state}}"),
        ], "short", "SMF service instances of the global zone and every zone, by state.",
          stack=True),
        P("Services in maintenance", [
            Q(f"illumos_smf_service_state{{{h}, state=\"maintenance\"}} == 1", "",
              instant=True, fmt="table"),
        ], "none", "Instances in maintenance, by zone and FMRI: their methods failed and "
          "SMF will not restart them (svcs -xv).", kind="table"),
        Row("Faults (FMA)"),
        P("Open problems", [Q(f"illumos_fma_open_faults{{{h}}}", "open problems")], "short",
          "Problems fmadm faulty lists as open.", w=8, min=0),
        P("Problems", [Q(f"illumos_fma_fault_info{{{h}}}", "", instant=True, fmt="table")],
          "none", "Each open problem: UUID, message id (illumos.org/msg/), severity, class "
          "and affected resource.", kind="table", w=16),
        P("Fault manager events", [
            Q(f"rate(illumos_fma_module_events_received_total{{{h}}}[{RI}])", "{{module}}"),
        ], "ops", "Error reports and events each fault manager module received per second."),
        P("Fault manager open cases", [
            Q(f"illumos_fma_module_open_cases{{{h}}}", "{{module}}"),
        ], "short", "Cases each diagnosis module has open."),
    ]
    return dashboard("dtagent-health", "dtagent / Pools, services and faults",
                     "Pool health, vdev errors, scrubs and resilvers; SMF service states; "
                     "open FMA problems.", items)


DASHBOARDS = {
    "dtagent-fleet.json": fleet,
    "dtagent-zones.json": zones,
    "dtagent-zone.json": zone,
    "dtagent-zfs.json": zfs,
    "dtagent-health.json": health,
    "dtagent-agent.json": agent,
}


def render(make: Any) -> str:
    return json.dumps(make(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, make in DASHBOARDS.items():
        path = HERE / name
        text = render(make)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if "--missing" in argv or not check:
        for line in OMITTED:
            print(f"omitted until exported: {line}")
    if stale:
        print("stale: " + ", ".join(stale) + " (run python dashboards/generate.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
