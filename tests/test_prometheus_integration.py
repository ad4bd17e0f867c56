"""The real Prometheus and Alertmanager against three simulated hosts.

Three agents serve simulated SmartOS hosts on loopback ports; a real Prometheus, set up
from examples/prometheus.yml (file_sd targets, host-name relabelling, the rules of
dashboards/alerts/ with their ``for:`` shortened), scrapes them every second and sends
alerts to a real Alertmanager set up from examples/alertmanager.yml, whose webhooks
point at a receiver run by this test. Then: every target is up, every dashboard query
is valid and returns data, every rule evaluates, the near-exhaustion zones alert, the
healthy ones do not, and the alerts reach the webhook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers import (
    REPO,
    free_port,
    spawn_listening,
    spawn_logged,
    stop_processes,
    wait_http,
    wait_until,
)
from tests.promtests import grafana

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
if PROMETHEUS is None or ALERTMANAGER is None:
    pytest.skip("needs Debian's prometheus and prometheus-alertmanager", allow_module_level=True)

SEEDS = (11, 12, 13)
ZONES = 10
SHORT_FOR = "3s"
# and windows that fit the minute of data the test has (see grafana.shorten_ranges)
SHORT_RANGE = "30s"
# A test-only rule that always fires on every host, so delivery through Alertmanager is
# checked whichever rules the simulated hosts trigger.
PIPELINE = "DtagentTestPipeline"
PIPELINE_RULE = f"""groups:
  - name: test-pipeline
    rules:
      - alert: {PIPELINE}
        expr: dtagent_build_info{{job="dtagent"}}
        labels:
          severity: info
        annotations:
          summary: 'The alerting pipeline works.'
          runbook_url: 'https://runbooks.example.org/dtagent/alerts.md#{PIPELINE.lower()}'
"""


def _hostname(seed: int) -> str:
    return f"sim-{seed:04d}"


def _simulated_zones(seed: int) -> dict[int, str]:
    """Zone index → zonename of a simulated host, from the simulator's own model."""
    from dtagent.simulate.model import make_host

    host = make_host(ZONES, seed, 0.0, 1.0, 10.0)
    return {i: z.uuid for i, z in enumerate(host.zones)}


@dataclass
class Webhook:
    """A loopback HTTP server that keeps what Alertmanager posts to it."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _webhook() -> Webhook:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = Webhook(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    return hook


def _replace(text: str, old: str, new: str) -> str:
    """Replace a piece of an example file that the test relies on being there."""
    assert old in text, f"the example no longer contains {old!r}"
    return text.replace(old, new)


@dataclass
class Stack:
    prom: str
    am: str
    hook: Webhook
    hosts: dict[str, dict[int, str]]  # instance → zone index → zonename
    started: float

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prom}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    wait_until(what, check, timeout, poll=0.5)  # each check queries a server




@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom")
    procs: list[subprocess.Popen[bytes]] = []
    hook = _webhook()
    try:
        # Three simulated hosts, one agent each; frames a second apart, so rates move.
        sims = [
            subprocess.Popen(
                [sys.executable, "-m", "dtagent", "simulate", "--zones", str(ZONES),
                 "--seed", str(seed), "--step", "1", "--duration", "900",
                 "--out", str(tmp / f"host{seed}.bundle")],
                cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for seed in SEEDS
        ]
        assert all(p.wait(timeout=120) == 0 for p in sims)
        # Operators' own metrics: a textfile and a plugin, as a site would add them.
        (tmp / "textfile").mkdir()
        (tmp / "textfile" / "backup.prom").write_text(
            "# HELP site_backup_last_success_seconds When the last backup finished.\n"
            "# TYPE site_backup_last_success_seconds gauge\n"
            "site_backup_last_success_seconds 1790000000\n", encoding="utf-8")
        (tmp / "plugins").mkdir()
        plugin = tmp / "plugins" / "site-check"
        plugin.write_text("#!/bin/sh\necho 'site_check_ok 1'\n", encoding="utf-8")
        plugin.chmod(0o755)
        agent_conf = tmp / "agent.toml"
        agent_conf.write_text(
            f'[collectors.textfile]\ndirectory = "{tmp / "textfile"}"\n'
            f'[collectors.plugins]\ndirectory = "{tmp / "plugins"}"\n'
            "interval = 2.0\ntimeout = 1.0\n", encoding="utf-8")
        targets = []
        for seed in SEEDS:
            port = free_port()
            spawn_logged([sys.executable, "-m", "dtagent", "serve", "--config", str(agent_conf),
                    "--replay", str(tmp / f"host{seed}.bundle"),
                    "--listen", f"127.0.0.1:{port}"],
                   tmp / f"agent{seed}.log", procs)
            targets.append({"targets": [f"127.0.0.1:{port}"],
                            "labels": {"__hostname__": _hostname(seed)}})
        for t in targets:
            wait_http(f"http://{t['targets'][0]}/healthz", timeout=60)

        # Alertmanager from the example, its receivers pointed at our webhook.
        am_conf = (REPO / "examples" / "alertmanager.yml").read_text(encoding="utf-8")
        am_conf = _replace(am_conf, "http://alert-router.example.org", hook.url)
        am_conf = _replace(am_conf, "group_wait: 30s", "group_wait: 1s")
        am_conf = _replace(am_conf, "group_interval: 5m", "group_interval: 1s")
        (tmp / "alertmanager.yml").write_text(am_conf, encoding="utf-8")
        am_port = spawn_listening("alertmanager", lambda port: [
            ALERTMANAGER, f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", "--log.level=warn",
        ], tmp / "alertmanager.log", procs)

        # Prometheus from the example: our targets, shortened rules, our Alertmanager.
        (tmp / "file_sd").mkdir()
        (tmp / "file_sd" / "dtagent-test.yml").write_text(json.dumps(targets), encoding="utf-8")
        (tmp / "rules").mkdir()
        for path in grafana.rule_files():
            text = grafana.shorten_for(path.read_text(encoding="utf-8"), SHORT_FOR)
            text = grafana.shorten_ranges(text, SHORT_RANGE)
            (tmp / "rules" / path.name).write_text(text, encoding="utf-8")
        (tmp / "rules" / "dtagent-test-pipeline.yml").write_text(PIPELINE_RULE, encoding="utf-8")
        conf = (REPO / "examples" / "prometheus.yml").read_text(encoding="utf-8")
        conf = _replace(conf, "scrape_interval: 30s", "scrape_interval: 1s")
        conf = _replace(conf, "evaluation_interval: 30s", "evaluation_interval: 1s")
        conf = _replace(conf, "alertmanager.example.org:9093", f"127.0.0.1:{am_port}")
        (tmp / "prometheus.yml").write_text(conf, encoding="utf-8")
        prom_port = spawn_listening("prometheus", lambda port: [
            PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ], tmp / "prometheus.log", procs)
        yield Stack(
            prom=f"http://127.0.0.1:{prom_port}",
            am=f"http://127.0.0.1:{am_port}",
            hook=hook,
            hosts={_hostname(s): _simulated_zones(s) for s in SEEDS},
            started=time.monotonic(),
        )
    finally:
        stop_processes(procs)
        hook.server.shutdown()
        hook.server.server_close()


def _targets_up(stack: Stack) -> bool:
    active = stack.api("targets", state="active")["activeTargets"]
    return len(active) == len(SEEDS) and all(t["health"] == "up" for t in active)


def test_every_target_is_up_under_its_host_name(stack: Stack) -> None:
    _wait("all targets up", lambda: _targets_up(stack), 60)
    active = stack.api("targets", state="active")["activeTargets"]
    assert sorted(t["labels"]["instance"] for t in active) == sorted(stack.hosts)
    assert all(t["labels"]["job"] == "dtagent" for t in active)
    assert all(not k.startswith("__") for t in active for k in t["labels"])
    # A target's health turns "up" when its scrape ends; the sample is queryable a moment
    # later, so wait for the query too rather than racing it.
    _wait("up samples of every target",
          lambda: len(stack.query('up{job="dtagent"}')) == len(SEEDS), 30)
    up = stack.query('up{job="dtagent"}')
    assert sorted(s["metric"]["instance"] for s in up) == sorted(stack.hosts)
    assert all(s["value"][1] == "1" for s in up)


def test_prometheus_scrapes_openmetrics_with_counter_start_times(stack: Stack) -> None:
    # Prometheus asks for OpenMetrics first (its scrape Accept header), so every target
    # being up means it parsed the agent's OpenMetrics without error. Prometheus 2.42
    # (Debian 12) predates created-timestamp ingestion: it stores each _created sample
    # as a series of its own, which shows the start times arrived.
    _wait("all targets up", lambda: _targets_up(stack), 60)
    _wait("the start times of zone CPU counters",
          lambda: len(stack.query('illumos_zone_cpu_seconds_created{job="dtagent"}')) > 0, 30)
    created = stack.query('illumos_zone_cpu_seconds_created{job="dtagent"}')
    boot = 1_790_000_000 - 12 * 86400  # the simulated hosts' boot (dtagent.simulate)
    assert {s["metric"]["instance"] for s in created} == set(stack.hosts)
    assert all(boot < float(s["value"][1]) <= 1_790_000_000 + 900 for s in created)
    # gauges carry none
    assert not stack.query('{__name__="illumos_zone_info_created", job="dtagent"}')


def _label_values(stack: Stack, query: str, values: dict[str, str]) -> list[str]:
    """What a Grafana query variable offers, evaluated by the real Prometheus."""
    expr, label = grafana.variable_expr(grafana.substitute(query, values))
    if label:
        series = stack.api("series", **{"match[]": expr})
        return sorted({s[label] for s in series if label in s})
    return [
        "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(s["metric"].items())) + "}"
        for s in stack.query(expr)
    ]


def _wait_for_data(stack: Stack) -> None:
    _wait("all targets up", lambda: _targets_up(stack), 60)
    # Enough samples for rate() over the substituted $__rate_interval.
    time.sleep(max(0.0, stack.started + 12 - time.monotonic()))


def test_every_dashboard_query_is_valid_promql_and_returns_data(stack: Stack) -> None:
    import re

    _wait_for_data(stack)
    checked, failures = 0, []
    for path in grafana.dashboard_files():
        dash = grafana.load(path)
        for instance, zones in stack.hosts.items():
            values = {"datasource": "prometheus", "job": "dtagent"}
            for name, query, regex in grafana.variable_queries(dash):
                offered = _label_values(stack, query, values)
                assert offered, f"{path.name}: variable {name} offers nothing"
                if name == "instance":
                    assert sorted(offered) == sorted(stack.hosts)
                    values[name] = instance
                elif name == "zonename":
                    # The alias is shown, the zonename selected (Grafana's text/value regex).
                    m = re.compile(regex.strip("/").replace("(?<", "(?P<"))
                    choices = {
                        mm["value"]: mm["text"] for s in offered if (mm := m.search(s))
                    }
                    assert choices[zones[0]] == "web-01", choices
                    assert set(choices) <= {*zones.values(), "global"}
                    values[name] = zones[0]
                else:
                    values[name] = offered[0]
            for q in grafana.queries(path):
                expr = grafana.substitute(q.expr, values)
                checked += 1
                try:
                    if stack.query(expr):
                        continue
                    # A zone panel may be empty for a healthy zone (nothing throttled,
                    # no cap): it must show data for at least one zone of the host.
                    if "zonename" in values and any(
                        stack.query(grafana.substitute(q.expr, {**values, "zonename": z}))
                        for z in zones.values()
                    ):
                        continue
                    failures.append(f"{q.dashboard} / {q.panel} on {instance}: no data: {expr}")
                except AssertionError as exc:
                    failures.append(f"{q.dashboard} / {q.panel}: invalid: {expr}: {exc}")
    print(f"dashboard queries checked: {checked}")
    assert not failures, "\n".join(failures)


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    _wait_for_data(stack)

    def rules() -> list[dict[str, Any]]:
        groups = stack.api("rules")["groups"]
        return [r for g in groups for r in g["rules"]]

    _wait("every rule evaluated", lambda: all(r["health"] != "unknown" for r in rules()), 30)
    loaded = {r["name"] for r in rules()}
    assert loaded == {r.name for r in grafana.all_rules()} | {PIPELINE}
    bad = [f"{r['name']}: {r['health']} {r.get('lastError')}" for r in rules()
           if r["health"] != "ok"]
    assert not bad, "\n".join(bad)
    print(f"rules evaluated: {len(loaded)}")


# Which simulated zones must raise which alert (dtagent/simulate/model.py: zone index
# i % 10 == 2 near_mem_cap + slow_disk, 4 cpu_throttled, 5 near_swap_cap + over_mem_cap,
# 6 near_nprocs, 8 near_quota + at_maxbw), and which may (side effects of a profile).
MUST_FIRE: dict[str, set[int]] = {
    "DtagentZoneMemoryCapNear": {2, 5},
    "DtagentZoneMemoryCapExceeded": {5},
    "DtagentZoneSwapCapNear": {5},
    "DtagentZoneCpuCapSaturated": {4},
    "DtagentZoneCpuCapThreadsWaiting": {4},
    "DtagentZoneProcessesNearLimit": {6},
    "DtagentZoneZfsWriteThrottled": {2},
    "DtagentZoneLinkAtMaxbw": {8},
    "DtagentZoneQuotaAlmostFull": {8},
    "DtagentSmfServiceMaintenance": {2},  # its nginx is in maintenance all along
}
# Host-level alerts every simulated host raises (alert, zonename label or ""): its pool's
# last scrub is 40 days old; its global zone's ntp is in maintenance, an open FMA defect.
HOST_MUST_FIRE = {
    ("DtagentZpoolScrubOverdue", ""),
    ("DtagentFmaFaultOpen", ""),
    ("DtagentSmfServiceMaintenance", "global"),
}
MAY_FIRE: dict[str, set[int]] = {
    "DtagentZoneMemoryCapPaging": {5},
    "DtagentZoneQuotaFillingUp": {8},
    "DtagentZoneLinkAtMaxbw": {6},  # busy, with a maxbw
}
HEALTHY = {0, 1, 3}  # plain, busy, uncapped


def _fired(stack: Stack) -> set[tuple[str, str, str]]:
    """(alertname, instance, zonename) of every alert that has been firing."""
    res = stack.query('last_over_time(ALERTS{alertstate="firing"}[10m])')
    return {(s["metric"]["alertname"], s["metric"].get("instance", ""),
             s["metric"].get("zonename", "")) for s in res}


def test_near_exhaustion_zones_alert_and_healthy_zones_do_not(stack: Stack) -> None:
    _wait("all targets up", lambda: _targets_up(stack), 60)
    loaded = {r.name for r in grafana.all_rules() if r.kind == "alert"}
    must = {
        (alert, instance, zones[i])
        for alert, indices in MUST_FIRE.items() if alert in loaded
        for instance, zones in stack.hosts.items() for i in indices
    } | {
        (alert, instance, zonename)
        for alert, zonename in HOST_MUST_FIRE if alert in loaded
        for instance in stack.hosts
    }
    may = must | {
        (alert, instance, zones[i])
        for alert, indices in MAY_FIRE.items()
        for instance, zones in stack.hosts.items() for i in indices
    }
    if must:
        try:
            _wait("the near-exhaustion zones' alerts", lambda: must <= _fired(stack), 60)
        except AssertionError as exc:
            missing = sorted(must - _fired(stack))
            raise AssertionError(f"{exc}; not fired: {missing}") from None
    else:
        time.sleep(max(0.0, stack.started + 15 - time.monotonic()))
    fired = {f for f in _fired(stack) if f[0] != PIPELINE}
    print(f"alerts fired: {len(fired)} ({len({a for a, _, _ in fired})} kinds)")
    assert must <= fired
    unexpected = fired - may
    assert not unexpected, f"alerts that should not fire: {sorted(unexpected)}"
    healthy = {zones[i] for zones in stack.hosts.values() for i in HEALTHY}
    assert not {z for _, _, z in fired} & healthy


def test_alertmanager_delivers_the_alerts_to_the_webhooks(stack: Stack) -> None:
    test_near_exhaustion_zones_alert_and_healthy_zones_do_not(stack)
    _wait("the pipeline alert", lambda: {f[0] for f in _fired(stack)} >= {PIPELINE}, 30)
    fired = _fired(stack)
    assert {(PIPELINE, host, "") for host in stack.hosts} <= fired

    def delivered() -> set[tuple[str, str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("instance", ""),
                 a["labels"].get("zonename", ""))
                for _, body in stack.hook.received for a in body["alerts"]}

    # Inhibited alerts (near, when exceeded) are not delivered.
    wanted = {f for f in fired if f[0] != "DtagentZoneMemoryCapNear"}
    _wait("Alertmanager's notifications", lambda: wanted <= delivered(), 30)
    for path, body in stack.hook.received:
        assert body["version"] == "4" and body["status"] in ("firing", "resolved")
        for alert in body["alerts"]:
            labels = alert["labels"]
            zone = labels["alertname"].startswith("DtagentZone")
            if not zone:
                want = ("/dtagent/platform", "platform")
            elif labels["severity"] == "critical":
                want = ("/dtagent/page", "zone-owners-page")
            else:
                want = ("/dtagent/zones", "zone-owners")
            assert (path, body["receiver"]) == want, labels
            assert alert["annotations"]["runbook_url"].endswith(labels["alertname"].lower())
    print(f"notifications received: {len(stack.hook.received)}")
