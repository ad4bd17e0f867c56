"""The control HTTP API and the Alertmanager webhook, served by the agent's real HTTP
server on loopback, over the stateful stand-in host."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from dtagent.config import ConfigError, load
from dtagent.control.policy import PolicyError, hash_token
from dtagent.control.serve import Control, mount
from dtagent.server import MetricsServer
from tests.control_host import POLICY, WEB, Host

TOKENS = {
    "reader": ("read-secret-0123456789", ["read"], ["*"]),
    "setter": ("set-secret-0123456789", ["read", "set"], ["*"]),
    "webonly": ("web-secret-0123456789", ["read", "set"], ["web-*"]),
    "am": ("am-secret-0123456789", ["alertmanager"], ["*"]),
}


def policy_text(extra: str = "") -> str:
    out = [POLICY, extra]
    for name, (secret, scopes, zones) in TOKENS.items():
        out.append(
            f'[[tokens]]\nid = "{name}"\nsha256 = "{hash_token(secret)}"\n'
            f"scopes = {json.dumps(scopes)}\nzones = {json.dumps(zones)}\n"
        )
    return "\n".join(out)


def serve_api(config: Any, control: Control | None = None) -> MetricsServer:
    """The agent's real HTTP server on loopback with the control API mounted, as serve
    mounts it."""
    control = control or Control(config)
    server = MetricsServer("127.0.0.1:0", lambda: [])
    control.attach(server, config)
    server.start()
    return server


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, json.loads(payload)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Client, Host]]:
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    cfg = host.write_config(host.write_policy(policy_text()), extra="enabled = true\n")
    config = load(cfg)
    config.set("agent", "listen", "127.0.0.1:0")
    config.set("control", "max_body_bytes", 4096)
    server = serve_api(config)
    try:
        yield Client(server.address[1]), host
    finally:
        server.stop()
        structlog.reset_defaults()


def audit(host: Host) -> list[dict[str, Any]]:
    path = host.dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def changed(host: Host) -> bool:
    return any(
        c[:2] in (["vmadm", "update"], ["zfs", "set"], ["dladm", "set-linkprop"])
        for c in host.commands()
    )


SET = TOKENS["setter"][0]


def test_read_zones_and_one_zone(served: tuple[Client, Host]) -> None:
    client, host = served
    status, body = client.request("GET", "/api/v1/zones", token=TOKENS["reader"][0])
    assert status == 200
    assert {z["alias"] for z in body["zones"]} == {"web-1", "db-1", "idle-1", "other-1"}
    status, body = client.request("GET", "/api/v1/zones/web-1", token=TOKENS["reader"][0])
    assert status == 200 and body["zonename"] == WEB and body["caps"]["cpu_cap"] == 200
    status, body = client.request("GET", "/api/v1/zones/db-1", token=TOKENS["webonly"][0])
    assert status == 404  # a token limited to web-* does not even see db-1
    assert [r["phase"] for r in audit(host)] == ["read", "read", "read"]


def test_patch_applies_and_reports_before_and_after(served: tuple[Client, Host]) -> None:
    client, host = served
    status, body = client.request(
        "PATCH",
        f"/api/v1/zones/{WEB}/caps",
        {"caps": {"cpu_cap": 300}, "reason": "ticket 9"},
        token=SET,
    )
    assert status == 200, body
    assert body["result"] == "applied" and body["before"] == {"cpu_cap": 200}
    assert body["after"]["cpu_cap"] == 300
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 300
    records = audit(host)
    assert [r["phase"] for r in records] == ["request", "done"]
    assert records[0]["who"] == "setter" and records[0]["from"] == "127.0.0.1"
    status, body = client.request(
        "PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 400}, "dry_run": True}, token=SET
    )
    assert (status, body["result"]) == (200, "dry_run")
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 300


@pytest.mark.parametrize(
    ("method", "path", "body", "token", "raw", "status"),
    [
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 300}}, None, None, 401),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 300}}, "wrong", None, 401),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 300}}, "reader", None, 403),
        ("POST", "/api/v1/alertmanager", {"version": "4", "alerts": []}, "setter", None, 403),
        ("PATCH", "/api/v1/zones/db-1/caps", {"caps": {"cpu_cap": 300}}, "webonly", None, 403),
        ("PATCH", "/api/v1/zones/web-1/caps", None, "setter", b"{not json", 400),
        ("PATCH", "/api/v1/zones/web-1/caps", None, "setter", b"[1, 2]", 400),
        ("PATCH", "/api/v1/zones/web-1/caps", None, "setter", b'{"caps": 1}', 400),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {}, "sudo": 1}, "setter", None, 400),
        ("PATCH", "/api/v1/zones/web-1/caps", None, "setter", b" " * 5000, 413),
        (
            "PATCH",
            "/api/v1/zones/..%2f..%2fetc/caps",
            {"caps": {"cpu_cap": 300}},
            "setter",
            None,
            400,
        ),
        (
            "PATCH",
            "/api/v1/zones/web-1%3Brm%20-rf/caps",
            {"caps": {"cpu_cap": 300}},
            "setter",
            None,
            400,
        ),
        ("PATCH", "/api/v1/zones/web-1%0Aid/caps", {"caps": {"cpu_cap": 300}}, "setter", None, 400),
        ("PATCH", "/api/v1/zones/../web-1/caps", {"caps": {"cpu_cap": 300}}, "setter", None, 400),
        ("PATCH", "/api/v1/zones/web-1;id/caps", {"caps": {"cpu_cap": 300}}, "setter", None, 400),
        (
            "PATCH",
            "/api/v1/zones/" + "a" * 200 + "/caps",
            {"caps": {"cpu_cap": 300}},
            "setter",
            None,
            400,
        ),
        ("PATCH", "/api/v1/zones/nosuchzone/caps", {"caps": {"cpu_cap": 300}}, "setter", None, 404),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"root": 1}}, "setter", None, 422),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 10**9}}, "setter", None, 422),
        ("PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 900}}, "setter", None, 422),
        (
            "PATCH",
            "/api/v1/zones/web-1/caps",
            {"caps": {"cpu_cap": "300; id"}},
            "setter",
            None,
            422,
        ),
        ("PATCH", "/api/v1/zones/other-1/caps", {"caps": {"cpu_cap": 300}}, "setter", None, 403),
        ("GET", "/api/v1/zones/web-1/caps", None, "setter", None, 405),
    ],
)
def test_refusals_are_audited_and_apply_nothing(
    served: tuple[Client, Host],
    method: str,
    path: str,
    body: object,
    token: str | None,
    raw: bytes | None,
    status: int,
) -> None:
    client, host = served
    secret = TOKENS[token][0] if token in TOKENS else token
    got, answer = client.request(method, path, body, token=secret, raw=raw)
    assert got == status, answer
    assert answer["status"] == status and answer["error"]
    assert not changed(host)
    if status != 405:
        records = audit(host)
        assert records and records[-1]["result"] == "refused"
        assert records[-1]["status"] == status
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 200


def test_a_cooldown_is_409(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    text = policy_text().replace("cooldown_seconds = 0", "cooldown_seconds = 600")
    config = load(host.write_config(host.write_policy(text), extra="enabled = true\n"))
    config.set("agent", "listen", "127.0.0.1:0")
    control = Control(config)
    server = serve_api(config, control)
    families = control.families
    try:
        client = Client(server.address[1])
        first = client.request(
            "PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 300}}, token=SET
        )
        assert first[0] == 200
        second = client.request(
            "PATCH", "/api/v1/zones/web-1/caps", {"caps": {"cpu_cap": 400}}, token=SET
        )
        assert second[0] == 409 and "cooldown" in second[1]["error"]
        counts = {s[0][0]: s[1] for s in families()[0].samples}
        assert counts["applied"] == 1 and counts["refused"] == 1
    finally:
        server.stop()
        structlog.reset_defaults()


def alert(
    status: str = "firing",
    fingerprint: str = "f1",
    starts: str = "2026-12-01T10:00:00Z",
    zonename: str = WEB,
    alertname: str = "ZoneCpuCapSaturated",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "zonename": zonename, "severity": "warning"},
        "annotations": {},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "dtagent",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": list(alerts),
    }


RULE = """
[[rules]]
alertname = "ZoneCpuCapSaturated"
matchers = { severity = "warning" }
property = "cpu_cap"
change = "+25%"
limit = 400
"""


@pytest.fixture
def webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[Client, Host]]:
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    text = policy_text(RULE)
    if getattr(request, "param", None) == "dry":
        text = text.replace("automatic_dry_run = false", "automatic_dry_run = true")
    config = load(host.write_config(host.write_policy(text), extra="enabled = true\n"))
    config.set("agent", "listen", "127.0.0.1:0")
    server = serve_api(config)
    try:
        yield Client(server.address[1]), host
    finally:
        server.stop()
        structlog.reset_defaults()


AM = TOKENS["am"][0]


def test_a_firing_alert_acts_once_by_fingerprint_and_starts_at(
    webhook: tuple[Client, Host],
) -> None:
    client, host = webhook
    status, body = client.request("POST", "/api/v1/alertmanager", payload(alert()), token=AM)
    assert status == 200 and body["results"][0]["result"] == "applied", body
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 250  # 200 + 25%
    status, body = client.request("POST", "/api/v1/alertmanager", payload(alert()), token=AM)
    assert status == 200 and body["results"][0]["result"] == "ignored"
    assert "already handled" in body["results"][0]["reason"]
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 250
    # The same alert firing again later (a new startsAt) acts again, up to the limit.
    later = alert(starts="2026-12-01T11:00:00Z")
    client.request("POST", "/api/v1/alertmanager", payload(later), token=AM)
    assert host.load()["zones"][WEB]["rctls"]["zone.cpu-cap"] == 312
    done = [r for r in audit(host) if r.get("phase") == "done"]
    assert [r["alert"]["key"] for r in done] == [
        "f1@2026-12-01T10:00:00Z",
        "f1@2026-12-01T11:00:00Z",
    ]


def test_resolved_and_unmatched_alerts_never_act(webhook: tuple[Client, Host]) -> None:
    client, host = webhook
    status, body = client.request(
        "POST",
        "/api/v1/alertmanager",
        payload(alert(status="resolved"), alert(alertname="Other", fingerprint="f2")),
        token=AM,
    )
    assert status == 200
    assert [r["result"] for r in body["results"]] == ["ignored", "ignored"]
    assert not changed(host)


def test_a_refused_action_is_200_with_the_reason(webhook: tuple[Client, Host]) -> None:
    client, host = webhook
    status, body = client.request(
        "POST", "/api/v1/alertmanager", payload(alert(zonename="other-1-not-a-zone")), token=AM
    )
    assert status == 200 and body["results"][0]["result"] in ("not_found", "refused", "invalid")
    status, body = client.request(
        "POST",
        "/api/v1/alertmanager",
        payload(alert(zonename=audit_zone(host), fingerprint="f9")),
        token=AM,
    )
    assert status == 200 and body["results"][0]["result"] == "refused"
    assert "not in the policy" in body["results"][0]["reason"]
    assert not changed(host)


def audit_zone(host: Host) -> str:
    return next(u for u, z in host.load()["zones"].items() if z["alias"] == "other-1")


@pytest.mark.parametrize("webhook", ["dry"], indirect=True)
def test_automatic_actions_are_dry_runs_by_default(webhook: tuple[Client, Host]) -> None:
    client, host = webhook
    status, body = client.request("POST", "/api/v1/alertmanager", payload(alert()), token=AM)
    assert status == 200 and body["results"][0]["result"] == "dry_run"
    assert body["results"][0]["asked"] == {"cpu_cap": 250}
    assert not changed(host)


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"version": "3", "alerts": []}',
        b'{"version": "4", "alerts": {}}',
        b'{"version": "4", "alerts": [{"status": "firing"}]}',
        b"not json",
    ],
)
def test_a_broken_webhook_request_is_400(webhook: tuple[Client, Host], raw: bytes) -> None:
    client, host = webhook
    status, body = client.request("POST", "/api/v1/alertmanager", raw=raw, token=AM)
    assert status == 400 and body["error"]
    assert not changed(host) and audit(host)[-1]["result"] == "refused"


def test_the_api_refuses_to_start_without_auth_or_on_the_network_in_clear(
    tmp_path: Path,
) -> None:
    host = Host(tmp_path)
    config = load(host.write_config(host.write_policy(POLICY), extra="enabled = true\n"))
    with pytest.raises(ConfigError, match="needs authentication"):
        mount(config)
    config = load(host.write_config(host.write_policy(policy_text()), extra="enabled = true\n"))
    config.set("agent", "listen", "0.0.0.0:9718")
    with pytest.raises(ConfigError, match="allow_plaintext_on_network"):
        mount(config)
    config.set("control", "allow_plaintext_on_network", True)
    mount(config)  # the operator said so, explicitly
    config = load(
        host.write_config(host.write_policy("[limits]\nnope = 1\n"), extra="enabled = true\n")
    )
    with pytest.raises(PolicyError):
        mount(config)
    structlog.reset_defaults()


def test_a_client_certificate_subject_authenticates_like_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listener passes the verified certificate's subject; the API maps it through
    # the policy's [[clients]] (the TLS handshake itself is the server's job).
    from dtagent.control.api import ApiRequest
    from dtagent.httpd import ClientCertificate, Request

    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    text = policy_text() + (
        '[[clients]]\nid = "grafana"\nsubject = "CN=grafana,O=ops"\nscopes = ["read"]\n'
    )
    config = load(host.write_config(host.write_policy(text), extra="enabled = true\n"))
    api, _ = mount(config, tls=True)
    cert = ClientCertificate("CN=grafana,O=ops", (), "grafana")
    raw = Request("GET", "/api/v1/zones/web-1", "/api/v1/zones/web-1", [], "HTTP/1.1", {}, b"",
                  "10.0.0.9", True, cert)
    request = ApiRequest(raw)
    assert api(request).status == 200
    request.client_subject = "CN=mallory"
    denied = api(request)
    assert denied.status == 401 and "CN=mallory" in denied.body["error"]
    request.method, request.path = "PATCH", "/api/v1/zones/web-1/caps"
    request.client_subject, request.body = "CN=grafana,O=ops", b'{"caps": {"cpu_cap": 300}}'
    assert api(request).status == 403  # read scope only
    assert not changed(host)
    structlog.reset_defaults()


def _series(text: str, name: str) -> dict[str, float]:
    """command label → value of one dtagent_command_* family in an exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + '{command="'):
            label = line[len(name) + 10 :].partition('"')[0]
            out[label] = float(line.rpartition(" ")[2])
    return out


def test_served_control_commands_are_counted_on_the_agents_command_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dtagent serve` hands its command source to the control wing: a change's vmadm
    lookup, vmadm update and prctl runs show in the served dtagent_command_* series under
    their own names, next to the collectors' commands (the CLI keeps a runner of its
    own; nothing of it is served)."""
    import urllib.request

    from dtagent.serve import Serve
    from tests.native import build_shared
    from tests.native.kstat_stub import open_stub

    lib = open_stub()
    lib.stub_reset()
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    cfg = host.write_config(host.write_policy(policy_text()), extra="enabled = true\n")
    cfg.write_text(
        '[agent]\nlisten = "127.0.0.1:0"\n[collectors]\nenabled = ["zone_settings"]\n'
        "[dtrace]\nenabled = false\n"
        + cfg.read_text().replace(
            "[sources]\n",
            '[sources]\nplatform = "illumos"\n'
            f"libkstat = {json.dumps(str(build_shared('libkstat_stub.c')))}\n",
        )
    )
    serve = Serve(load(cfg))
    try:
        serve.start()
        assert serve.runtime.runner is not None
        client = Client(serve.state.server.address[1])
        status, body = client.request(
            "PATCH", f"/api/v1/zones/{WEB}/caps", {"caps": {"cpu_cap": 300}}, token=SET
        )
        assert (status, body["result"]) == (200, "applied"), body
        serve.runtime.agent.settle(10)
        with urllib.request.urlopen(serve.url, timeout=10) as resp:
            text = resp.read().decode()
    finally:
        serve.stop()
        lib.stub_reset()
        structlog.reset_defaults()
    runs = _series(text, "dtagent_command_runs_total")
    failures = _series(text, "dtagent_command_failures_total")
    ran = [c for c in host.commands() if c[:2] == ["vmadm", "update"]]
    assert len(ran) == 1
    assert runs["control vmadm update"] == 1 and failures["control vmadm update"] == 0
    # lookup before and after the change, prctl -P before and for the read-back
    assert runs["control vmadm lookup"] == 2 and runs["control prctl get"] == 2
    assert runs["vmadm list"] >= 1  # the collector's, on the same runner
    # run on demand, never served to a collector: no age, no limit
    limits = _series(text, "dtagent_command_max_age_seconds")
    assert "vmadm list" in limits and not [k for k in limits if k.startswith("control ")]
