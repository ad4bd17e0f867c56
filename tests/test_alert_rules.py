"""The Prometheus rules of dashboards/alerts/: promtool checks and unit tests, conventions.

promtool's unit tests (tests/promtests/*.test.yml) cover every alert with cases where it
fires and where it must not (uncapped zones, a zone that just rebooted, a missing
series); the checks here make sure none is left without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.promtests import grafana

PROMTESTS = Path(grafana.__file__).parent
RULES = EVERY_RULE = grafana.all_rules()  # what Prometheus loads
ALERTS = [r for r in EVERY_RULE if r.kind == "alert"]
RUNBOOKS = "https://runbooks.example.org/dtagent/alerts.md#"
ALERTS_MD = grafana.REPO / "docs" / "alerts.md"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)"
)


def _promtool(*args: str, cwd: Path | None = None) -> str:
    res = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@needs_promtool
def test_promtool_checks_the_rule_files() -> None:
    files = grafana.rule_files()
    out = _promtool("check", "rules", "--lint=all", "--lint-fatal", *map(str, files))
    # our reader of the rule files sees what promtool sees
    counts = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", out)]
    assert sum(counts) == len(EVERY_RULE)


@needs_promtool
@pytest.mark.parametrize("test_file", sorted(p.name for p in PROMTESTS.glob("*.test.yml")))
def test_promtool_unit_tests(test_file: str) -> None:
    _promtool("test", "rules", test_file, cwd=PROMTESTS)


def _cases() -> dict[str, tuple[int, int]]:
    """alertname → (cases expecting it to fire, cases expecting it not to) in the tests."""
    out: dict[str, list[int]] = {}
    for path in PROMTESTS.glob("*.test.yml"):
        blocks = re.split(r"^\s*- eval_time:", path.read_text(encoding="utf-8"), flags=re.M)
        for block in blocks[1:]:
            m = re.search(r"^\s*alertname:\s*(\S+)", block, re.M)
            if m is None:
                continue
            fires = bool(re.search(r"^\s*exp_alerts:\s*\n\s*- ", block, re.M))
            out.setdefault(m.group(1), [0, 0])[0 if fires else 1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_every_alert_has_unit_tests_that_fire_and_that_do_not() -> None:
    cases = _cases()
    for alert in ALERTS:
        fire, quiet = cases.get(alert.name, (0, 0))
        assert fire and quiet, f"{alert.name}: {fire} firing and {quiet} quiet cases"
    assert set(cases) <= {a.name for a in ALERTS}


def test_alert_conventions() -> None:
    names = [a.name for a in ALERTS]
    assert len(names) == len(set(names))
    for a in ALERTS:
        assert re.fullmatch(r"Dtagent[A-Z][A-Za-z0-9]+", a.name), a.name
        assert a.labels.get("severity") in {"critical", "warning", "info"}, a.name
        assert a.annotations.get("summary", "").endswith("."), a.name
        assert "{{" in a.annotations.get("description", ""), a.name
        assert a.annotations.get("runbook_url") == RUNBOOKS + a.name.lower(), a.name
        assert a.for_, f"{a.name} needs a for: so it does not flap"


def test_recording_rules_follow_level_metric_operations() -> None:
    for r in EVERY_RULE:
        if r.kind == "record":
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r.name), r.name


def test_docs_explain_every_alert() -> None:
    text = ALERTS_MD.read_text(encoding="utf-8")
    headings = re.findall(r"^### (\S+)", text, re.M)
    assert sorted(headings) == sorted(a.name for a in ALERTS)


def test_rules_use_only_exported_metrics() -> None:
    known = grafana.series_names(grafana.exported_metrics()) | grafana.PROMETHEUS_SERIES
    known |= {r.name for r in RULES if r.kind == "record"}
    for r in RULES:
        unknown = grafana.metric_names(r.expr) - known
        assert not unknown, f"{r.name}: {sorted(unknown)} not in docs/metrics.md"


@needs_promtool
def test_shortened_copy_keeps_the_rules(tmp_path: Path) -> None:
    """The copy the integration test loads differs only in its for: durations."""
    for path in grafana.rule_files():
        text = path.read_text(encoding="utf-8")
        copy = tmp_path / path.name
        copy.write_text(grafana.shorten_for(text, "3s"), encoding="utf-8")
        rules = grafana.parse_rules(copy)
        assert [r.name for r in rules] == [r.name for r in grafana.parse_rules(path)]
        assert all(r.for_ == "3s" for r in rules if r.kind == "alert")
        _promtool("check", "rules", str(copy))


@needs_promtool
def test_example_configs_are_valid() -> None:
    examples = grafana.REPO / "examples"
    _promtool("check", "config", str(examples / "prometheus.yml"))
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("needs amtool (Debian prometheus-alertmanager)")
    conf = str(examples / "alertmanager.yml")
    subprocess.run([amtool, "check-config", conf], check=True, capture_output=True)
    routes = {
        ("DtagentZoneMemoryCapNear", "warning"): "zone-owners",
        ("DtagentZoneMemoryCapExceeded", "critical"): "zone-owners-page",
        ("DtagentDown", "critical"): "platform",
        ("SomethingElse", "warning"): "platform",
    }
    for (alert, severity), receiver in routes.items():
        res = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={conf}",
             f"alertname={alert}", f"severity={severity}"],
            capture_output=True, text=True, check=True,
        )
        assert res.stdout.strip() == receiver, (alert, res.stdout)
