"""End to end: the agent reading a simulated host live — its libkstat binding over the
libkstat stand-in, its commands from the stateful stand-in host — with the control wing
enabled; a real Prometheus evaluating the shipped zone rules (their ``for:`` and windows
shortened to fit the test); a real Alertmanager posting DtagentZoneCpuCapSaturated to the
agent's webhook; the stand-in host's vmadm/prctl changing the zone's cap, and the
stand-in kernel's cpucaps kstat with it, so the next scrape shows the new cap — changed
once, however often Alertmanager repeats the notification."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dtagent.control.policy import hash_token
from tests.control_host import MIB, POLICY, Host, KernelFeed, zone
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

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.integration
if PROMETHEUS is None or ALERTMANAGER is None:
    pytest.skip("needs Debian's prometheus and prometheus-alertmanager", allow_module_level=True)

ZONES = 6
SEED = 21
THROTTLED = 4  # the simulator makes zone 4 of every host cpu_throttled
TOKEN = "am-e2e-token-0123456789abcdef"
RULE = """
[[rules]]
alertname = "DtagentZoneCpuCapSaturated"
matchers = { severity = "warning" }
property = "cpu_cap"
change = "+25%"
limit = 1600
"""


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    wait_until(what, check, timeout, poll=0.5)  # each check queries a server


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_an_alert_raises_the_cap_once_and_the_next_scrape_shows_it(tmp_path: Path) -> None:
    from dtagent.simulate.model import make_host
    from tests.native import build_shared
    from tests.native.kstat_stub import open_stub

    sim = make_host(ZONES, SEED, time.time(), 1.0, 3600.0)
    target = sim.zones[THROTTLED]
    assert target.cpu_cap, "the simulator's throttled zone has a cap"
    before_cap = target.cpu_cap
    state: dict[str, Any] = {"zones": {}, "datasets": {}}
    for z in sim.zones:
        mem = (z.mem_cap or 1024 * MIB) // MIB
        state["zones"][z.uuid] = zone(
            z.uuid,
            z.alias,
            z.zoneid or 0,
            cpu_cap=z.cpu_cap or 0,
            phys=mem,
            swap=2 * mem,
            locked=mem,
            state="running" if z.running else "stopped",
        )
    host = Host(tmp_path, state)
    feed = KernelFeed(host, sim)
    policy = POLICY.replace('aliases = ["web-*", "db-*", "idle-*"]', 'aliases = ["*"]')
    policy = policy.replace("max = 800\nmax_step_ratio = 2.0", "max = 1600\nmax_step_ratio = 2.0")
    policy += RULE + (
        f'\n[[tokens]]\nid = "alertmanager"\nsha256 = "{hash_token(TOKEN)}"\n'
        'scopes = ["alertmanager"]\n'
    )
    agent_port = free_port()
    config = host.write_config(host.write_policy(policy), extra="enabled = true\n")
    # The live path: libkstat through the stand-in library, the commands on the stand-in
    # host; the rule needs zone_cpu only.
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{agent_port}"\n'
        '[collectors]\nenabled = ["zone_cpu"]\n[dtrace]\nenabled = false\n'
        + config.read_text().replace(
            "[sources]\n",
            '[sources]\nplatform = "illumos"\n'
            f"libkstat = {json.dumps(str(build_shared('libkstat_stub.c')))}\n",
        )
    )
    open_stub()  # built before the agent loads it
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "alertmanager.yml").write_text(f"""
route:
  receiver: humans
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: dtagent-control
      matchers: ['alertname="DtagentZoneCpuCapSaturated"']
      group_by: [alertname, instance, zonename]
      group_wait: 0s
      group_interval: 1s
      repeat_interval: 2s
receivers:
  - name: humans
  - name: dtagent-control
    webhook_configs:
      - url: 'http://127.0.0.1:{agent_port}/api/v1/alertmanager'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {tmp_path / "token"}
""")
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in grafana.rule_files():
        text = grafana.shorten_ranges(grafana.shorten_for(path.read_text(), "2s"), "20s")
        (rules / path.name).write_text(text)
    def write_prometheus_yml(am_port: int) -> None:
        (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{rules}/*.yml']
alerting:
  alertmanagers:
    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]
scrape_configs:
  - job_name: dtagent
    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]
""")
    env = dict(os.environ, PYTHONPATH=str(REPO), **host.env(), **feed.env())
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], name: str) -> None:
        spawn_logged(argv, tmp_path / f"{name}.log", procs, env)

    agent = f"http://127.0.0.1:{agent_port}"
    # The test's own scrapes name a collector (collect[]): Prometheus's scrapes never
    # use that filter, so each of the test's is a collection of its own, not a body
    # shared with a scrape that came a moment before (dtagent/server.py).
    own_scrape = f"{agent}/metrics?collect[]=zone_cpu"
    series = f'illumos_zone_cpu_cap_cpus{{zonename="{target.uuid}"}}'
    audit_path = tmp_path / "audit.log"

    def records() -> list[dict[str, Any]]:
        if not audit_path.exists():
            return []
        return [json.loads(line) for line in audit_path.read_text().splitlines()]

    def done() -> list[dict[str, Any]]:
        return [r for r in records() if r.get("phase") == "done"]

    try:
        feed.start()
        spawn([sys.executable, "-m", "dtagent", "serve", "--config", str(config)], "agent")
        wait_http(f"{agent}/healthz", timeout=60)
        # read live: the kstat the stand-in kernel holds, before anything changed
        assert _scrape(own_scrape)[series] == before_cap / 100
        am_port = spawn_listening("alertmanager", lambda port: [
            str(ALERTMANAGER),
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ], tmp_path / "alertmanager.log", procs, env=env)
        write_prometheus_yml(am_port)
        prom_port = spawn_listening("prometheus", lambda port: [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ], tmp_path / "prometheus.log", procs, env=env)
        prom = f"http://127.0.0.1:{prom_port}"

        _wait("the alert's action", lambda: bool(done()), timeout=180)
        # The very next scrape after the webhook's answer: the value the action asked.
        scraped = _scrape(own_scrape)[series]
        action = done()[0]
        raised = round(before_cap * 1.25)
        assert action["asked"] == {"cpu_cap": raised} and action["result"] == "applied"
        assert scraped == action["asked"]["cpu_cap"] / 100
        zone_state = host.load()["zones"][target.uuid]
        assert zone_state["rctls"]["zone.cpu-cap"] == raised
        assert zone_state["config"]["cpu_cap"] == raised
        assert action["zonename"] == target.uuid and action["source"] == "alertmanager"
        assert action["before"] == {"cpu_cap": before_cap}
        assert action["after"] == {"cpu_cap": raised}
        assert action["alert"]["alertname"] == "DtagentZoneCpuCapSaturated"
        request = [r for r in records() if r.get("phase") == "request"]
        assert [r["id"] for r in request] == [action["id"]]

        # Alertmanager repeats the notification every 2 s (the zone is still at its new
        # cap, so the alert keeps firing with the same startsAt); the agent acts once.
        def repeated() -> bool:
            return (
                sum(
                    1
                    for r in records()
                    if r.get("phase") == "webhook"
                    and any(a.get("zonename") == target.uuid for a in r["alerts"])
                    and r["time"] > action["time"]
                )
                >= 3
            )

        _wait("repeated notifications", repeated, timeout=60)
        assert len(done()) == 1, done()
        assert host.load()["zones"][target.uuid]["rctls"]["zone.cpu-cap"] == raised
        assert _scrape(own_scrape)[series] == raised / 100

        # Prometheus has the new cap and the agent's count of the action.
        _wait(
            "the new cap in Prometheus",
            lambda: [float(s["value"][1]) for s in _query(prom, series)] == [raised / 100],
            timeout=30,
        )
        _wait(
            "the applied action in Prometheus",
            lambda: any(
                float(s["value"][1]) >= 1
                for s in _query(prom, 'dtagent_control_actions_total{result="applied"}')
            ),
            timeout=30,
        )
        # The wing ran its commands on the agent's command source: one vmadm update,
        # counted in the served dtagent_command_* series under its own name.
        _wait(
            "the control commands in Prometheus",
            lambda: [
                float(s["value"][1])
                for s in _query(prom, 'dtagent_command_runs_total{command="control vmadm update"}')
            ]
            == [1.0],
            timeout=30,
        )
        assert feed.frames >= 10  # the kernel moved on while the test ran
    finally:
        stop_processes(procs)
        feed.stop()
