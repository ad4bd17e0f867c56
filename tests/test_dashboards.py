"""Structural checks of the Grafana dashboards in dashboards/ (no Grafana needed).

The rules are those of grafana/dashboard-linter and the monitoring mixins: one
datasource variable that every panel and query uses, no hard-coded hosts, units on
every panel, unique ids, no overlapping panels, rates over ``$__rate_interval``, and
only metrics the agent exports (docs/metrics.md) or the rules record.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from tests.promtests import grafana

DASHBOARDS = grafana.dashboard_files()
EXPECTED = {"dtagent-fleet", "dtagent-zones", "dtagent-zone", "dtagent-zfs", "dtagent-health",
            "dtagent-agent"}
DS = {"type": "prometheus", "uid": "${datasource}"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_generated_dashboards_are_current() -> None:
    script = grafana.DASHBOARDS / "generate.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_the_six_dashboards_exist_with_unique_uids() -> None:
    uids = [grafana.load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    assert set(uids) == EXPECTED


@pytest.fixture(params=DASHBOARDS, ids=_ids(DASHBOARDS))
def dash(request: pytest.FixtureRequest) -> dict[str, Any]:
    return grafana.load(request.param)


def test_panel_ids_are_unique(dash: dict[str, Any]) -> None:
    ids = [p["id"] for p in grafana.panels(dash)]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap_and_fit_the_grid(dash: dict[str, Any]) -> None:
    boxes = []
    for p in grafana.panels(dash):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for a, b in combinations(boxes, 2):
        overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
        assert not overlap, f"{a[0]!r} overlaps {b[0]!r}"


def test_every_panel_has_a_unit_title_and_description(dash: dict[str, Any]) -> None:
    for p in grafana.data_panels(dash):
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
        assert p["title"] and p.get("description"), p["title"]
        assert p.get("targets"), p["title"]


def test_datasource_is_the_variable_everywhere(dash: dict[str, Any]) -> None:
    variables = dash["templating"]["list"]
    ds = [v for v in variables if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["name"] == "datasource" and ds[0]["query"] == "prometheus"
    assert ds[0]["label"] == "Data Source"
    for v in variables:
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]
    for p in grafana.data_panels(dash):
        assert p["datasource"] == DS, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
    # No data source uid or host is written into the dashboard.
    text = repr(dash)
    assert "127.0.0.1" not in text and "localhost" not in text
    assert not re.search(r"instance=~?\"[^$]", text)
    assert "__inputs" not in dash


def test_variables_host_and_zone(dash: dict[str, Any]) -> None:
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[:3] == ["datasource", "job", "instance"]
    if dash["uid"] == "dtagent-zone" and "illumos_zone_info" in grafana.exported_metrics():
        zone = dash["templating"]["list"][3]
        assert zone["name"] == "zonename"
        assert "illumos_zone_info" in zone["definition"]
        # alias shown, zonename selected
        assert "(?<text>" in zone["regex"] and "(?<value>" in zone["regex"]


def test_queries_filter_on_the_variables_and_use_rate_interval(dash: dict[str, Any]) -> None:
    for p in grafana.data_panels(dash):
        for t in p["targets"]:
            expr = t["expr"]
            assert 'job="$job"' in expr, (p["title"], expr)
            if dash["uid"] != "dtagent-fleet" and not expr.startswith("up{"):
                assert 'instance="$instance"' in expr, (p["title"], expr)
            for m in re.finditer(r"\b(rate|irate|increase|deriv)\((.*?)\[([^\]]+)\]", expr):
                assert m.group(3) == "$__rate_interval", (p["title"], expr)
            if dash["uid"] == "dtagent-zone" and "illumos_zone" in expr:
                assert 'zonename="$zonename"' in expr, (p["title"], expr)


def test_heatmaps_read_the_histogram_buckets(dash: dict[str, Any]) -> None:
    for p in grafana.data_panels(dash):
        if p["type"] != "heatmap":
            continue
        (t,) = p["targets"]
        assert t["format"] == "heatmap" and t["legendFormat"] == "{{le}}"
        assert re.match(r"sum by \(le\) \(rate\(\w+_bucket\{.*\}\[\$__rate_interval\]\)\)$",
                        t["expr"]), t["expr"]
        assert p["options"]["calculate"] is False


def test_every_queried_metric_is_exported_or_recorded(dash: dict[str, Any]) -> None:
    known = grafana.series_names(grafana.exported_metrics()) | grafana.PROMETHEUS_SERIES
    known |= {r.name for r in grafana.all_rules() if r.kind == "record"}
    for p in grafana.data_panels(dash):
        for t in p["targets"]:
            unknown = grafana.metric_names(t["expr"]) - known
            assert not unknown, f"{p['title']}: {sorted(unknown)} not in docs/metrics.md"
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            expr, _ = grafana.variable_expr(v["definition"])
            assert not grafana.metric_names(expr) - known, v["name"]


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (zonename) (rate(illumos_zone_cpu_seconds_total{job="$job", mode!="x"}'
        '[$__rate_interval])) / on (zonename) group_left (alias) illumos_zone_info'
        ' > bool 0.5e3 and histogram_quantile(0.99, sum by (le) (rate(a_b_bucket[5m])))'
        ' or dtagent:x:rate5m offset 1m'
    )
    assert grafana.metric_names(expr) == {
        "illumos_zone_cpu_seconds_total", "illumos_zone_info", "a_b_bucket", "dtagent:x:rate5m"
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables substituted) as a recording rule."""
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    values = {"datasource": "prometheus", "job": "dtagent", "instance": "cn01",
              "zonename": "f7bd3e0f-2e25-4e19-a8b1-1f0c4b6a5c11"}
    n = 0
    for path in DASHBOARDS:
        for q in grafana.queries(path):
            n += 1
            lines += [f"      - record: q{n}",
                      "        expr: " + json.dumps(grafana.substitute(q.expr, values))]
    rules = tmp_path / "queries.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_omitted_panels_parse_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Panels left out until their metrics are exported are valid PromQL already."""
    gen = grafana.load_generator()
    monkeypatch.setattr(gen, "FILTER", False)
    values = {"datasource": "prometheus", "job": "dtagent", "instance": "cn01",
              "zonename": "f7bd3e0f-2e25-4e19-a8b1-1f0c4b6a5c11"}
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    for n, target in enumerate(
        t for make in gen.DASHBOARDS.values() for p in make()["panels"]
        for t in p.get("targets", [])
    ):
        lines += [f"      - record: q{n}",
                  "        expr: " + json.dumps(grafana.substitute(target["expr"], values))]
    rules = tmp_path / "queries.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(lines) > 200
