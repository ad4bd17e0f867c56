"""End to end: a simulated host served by the agent with the control wing enabled, a real
Prometheus evaluating the shipped zone rules (their ``for:`` and windows shortened to fit
the test), a real Alertmanager posting DtagentZoneCpuCapSaturated to the agent's
webhook, and the stand-in host's vmadm/prctl changing the zone's cap — once, however
often Alertmanager repeats the notification."""

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
from tests.control_host import MIB, POLICY, Host, zone
from tests.helpers import REPO, free_port, wait_http
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
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_an_alert_raises_the_cap_once(tmp_path: Path) -> None:
    from dtagent.simulate.model import make_host

    sim = make_host(ZONES, SEED, 0.0, 1.0, 10.0)
    target = sim.zones[THROTTLED]
    assert target.cpu_cap, "the simulator's throttled zone has a cap"
    state: dict[str, Any] = {"zones": {}, "datasets": {}}
    for i, z in enumerate(sim.zones):
        mem = (z.mem_cap or 1024 * MIB) // MIB
        state["zones"][z.uuid] = zone(
            z.uuid, z.alias, 10 + i, cpu_cap=z.cpu_cap or 0, phys=mem, swap=2 * mem, locked=mem
        )
    host = Host(tmp_path, state)
    policy = POLICY.replace('aliases = ["web-*", "db-*", "idle-*"]', 'aliases = ["*"]')
    policy = policy.replace("max = 800\nmax_step_ratio = 2.0", "max = 1600\nmax_step_ratio = 2.0")
    policy += RULE + (
        f'\n[[tokens]]\nid = "alertmanager"\nsha256 = "{hash_token(TOKEN)}"\n'
        'scopes = ["alertmanager"]\n'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dtagent",
            "simulate",
            "--zones",
            str(ZONES),
            "--seed",
            str(SEED),
            "--step",
            "1",
            "--duration",
            "900",
            "--out",
            str(tmp_path / "host.bundle"),
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
        timeout=120,
        capture_output=True,
    )
    agent_port, am_port, prom_port = free_port(), free_port(), free_port()
    config = host.write_config(host.write_policy(policy), extra="enabled = true\n")
    config.write_text(
        f'[agent]\nlisten = "127.0.0.1:{agent_port}"\n'
        + config.read_text().replace(
            "[sources]\n", f'[sources]\nreplay = "{tmp_path}/host.bundle"\n'
        )
    )
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
    env = dict(os.environ, PYTHONPATH=str(REPO), **host.env())
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], name: str) -> None:
        with (tmp_path / f"{name}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
            )

    try:
        spawn([sys.executable, "-m", "dtagent", "serve", "--config", str(config)], "agent")
        wait_http(f"http://127.0.0.1:{agent_port}/healthz", timeout=60)
        spawn(
            [
                str(ALERTMANAGER),
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            "alertmanager",
        )
        spawn(
            [
                str(PROMETHEUS),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            "prometheus",
        )
        prom = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{prom}/-/ready", timeout=60)

        def cap() -> int:
            value: int = host.load()["zones"][target.uuid]["rctls"].get("zone.cpu-cap", 0)
            return value

        _wait("the cap to be raised", lambda: cap() != target.cpu_cap, timeout=120)
        raised = round(target.cpu_cap * 1.25)
        assert cap() == raised
        assert host.load()["zones"][target.uuid]["config"]["cpu_cap"] == raised

        audit_path = tmp_path / "audit.log"

        def records() -> list[dict[str, Any]]:
            return [json.loads(line) for line in audit_path.read_text().splitlines()]

        # Alertmanager repeats the notification every 2 s; the agent acts only once.
        def repeated() -> bool:
            return (
                sum(
                    1
                    for r in records()
                    if r.get("phase") == "webhook"
                    and any(a.get("zonename") == target.uuid for a in r["alerts"])
                )
                >= 3
            )

        _wait("repeated notifications", repeated, timeout=60)
        done = [r for r in records() if r.get("phase") == "done"]
        assert len(done) == 1, done
        assert done[0]["zonename"] == target.uuid and done[0]["source"] == "alertmanager"
        assert done[0]["before"] == {"cpu_cap": target.cpu_cap}
        assert done[0]["after"] == {"cpu_cap": raised}
        assert done[0]["alert"]["alertname"] == "DtagentZoneCpuCapSaturated"
        assert cap() == raised

        # The change is in the next scrape: the agent counts it, Prometheus has it.
        _wait(
            "the applied action in Prometheus",
            lambda: any(
                float(s["value"][1]) >= 1
                for s in _query(prom, 'dtagent_control_actions_total{result="applied"}')
            ),
            timeout=30,
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
