"""A real Prometheus scraping ``dtagent serve --web-config`` over TLS.

Two agents run as a user runs them (the CLI, in child processes): one with TLS and
basic auth, one that requires a client certificate. One Prometheus (Debian's) scrapes
them with four jobs: the right password (up == 1), a wrong one (401, up == 0), the
client certificate (up == 1) and none (handshake refused, up == 0). Every web-config
passes ``promtool check web-config``. Certificates are made at test time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import HASH, PASSWORD, Certs, make_certs
from tests.helpers import REPO, free_port, spawn_logged, stop_processes, wait_http

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
if PROMETHEUS is None or PROMTOOL is None:
    pytest.skip("needs Debian's prometheus package", allow_module_level=True)


def _check(path: Path) -> None:
    assert PROMTOOL is not None
    out = subprocess.run([PROMTOOL, "check", "web-config", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def _wait_tls(port: int, certs: Certs, client: bool, timeout: float = 60) -> None:
    import ssl

    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if client:
        ctx.load_cert_chain(str(certs.client.cert), str(certs.client.key))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx,
                                        timeout=5) as resp:
                resp.read()
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without credentials)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Certs]]:
    tmp = tmp_path_factory.mktemp("prom-tls")
    certs = make_certs(tmp / "certs")
    auth_config = tmp / "web-auth.yml"
    auth_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n"
    )
    mtls_config = tmp / "web-mtls.yml"
    mtls_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {certs.ca}\n"
    )
    for path in (auth_config, mtls_config):
        _check(path)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for name, config in (("auth", auth_config), ("mtls", mtls_config)):
            port = free_port()
            ports[name] = port
            with (tmp / f"agent-{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "dtagent", "serve", "--listen", f"127.0.0.1:{port}",
                     "--web-config", str(config)],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                ))
        _wait_tls(ports["auth"], certs, client=False)
        _wait_tls(ports["mtls"], certs, client=True)
        tls = {"ca_file": str(certs.ca), "server_name": "localhost"}
        client_tls = {**tls, "cert_file": str(certs.client.cert),
                      "key_file": str(certs.client.key)}

        def job(name: str, port: int, tls_config: dict[str, str], **extra: Any) -> Any:
            return {"job_name": name, "scheme": "https", "tls_config": tls_config,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}], **extra}

        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                job("basic", ports["auth"], tls,
                    basic_auth={"username": "prometheus", "password": PASSWORD}),
                job("wrong-password", ports["auth"], tls,
                    basic_auth={"username": "prometheus", "password": "wrong"}),
                job("client-cert", ports["mtls"], client_tls),
                job("no-client-cert", ports["mtls"], tls),
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        prom_port = free_port()
        assert PROMETHEUS is not None
        spawn_logged([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                      f"--storage.tsdb.path={tmp / 'data'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                     tmp / "prometheus.log", procs)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=60)
        yield f"http://127.0.0.1:{prom_port}", certs
    finally:
        stop_processes(procs)
        for name in ("auth", "mtls"):
            log_text = (tmp / f"agent-{name}.log").read_bytes() if (
                tmp / f"agent-{name}.log").exists() else b""
            for line in log_text.splitlines():  # every log line is one JSON object
                assert isinstance(json.loads(line), dict), line


def _targets(prom: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{prom}/api/v1/targets", timeout=10) as resp:
        data = json.load(resp)["data"]["activeTargets"]
    return {t["labels"]["job"]: t for t in data}


def test_prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates(
    prometheus: tuple[str, Any],
) -> None:
    prom, _ = prometheus
    deadline = time.monotonic() + 45
    while True:
        targets = _targets(prom)
        healths = {job: t["health"] for job, t in targets.items()}
        if all(h != "unknown" for h in healths.values()) and len(healths) == 4:
            break
        assert time.monotonic() < deadline, healths
        time.sleep(0.5)
    assert healths == {
        "basic": "up",
        "wrong-password": "down",
        "client-cert": "up",
        "no-client-cert": "down",
    }, {job: t["lastError"] for job, t in targets.items()}
    assert "401" in targets["wrong-password"]["lastError"]
    assert targets["no-client-cert"]["lastError"]
    query = urllib.parse.urlencode({"query": "up"})
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{prom}/api/v1/query?{query}", timeout=10) as resp:
            result = json.load(resp)["data"]["result"]
        up = {r["metric"]["job"]: r["value"][1] for r in result}
        if len(up) == 4:
            break
        assert time.monotonic() < deadline, up
        time.sleep(0.5)
    assert up == {"basic": "1", "wrong-password": "0", "client-cert": "1",
                  "no-client-cert": "0"}
    # the agent's own counters, as Prometheus stored them
    query = urllib.parse.urlencode({"query": 'dtagent_http_auth_failures_total{job="basic"}'})
    with urllib.request.urlopen(f"{prom}/api/v1/query?{query}", timeout=10) as resp:
        result = json.load(resp)["data"]["result"]
    assert result and float(result[0]["value"][1]) >= 1
