"""SIGHUP (`svcadm refresh`) with the control API on: the policy is re-read and judges the
next request, the changes already made still count (the audit log is the memory), a bad
policy is refused with one line and the old one judges on, and turning the API on or
off is refused until a restart."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtagent import log as logsetup
from dtagent.config import load
from dtagent.control.policy import hash_token
from dtagent.serve import Serve
from tests.conftest import FAKEBIN
from tests.control_host import Host
from tests.helpers import REPO, free_port, wait_http
from tests.test_control_api import SET, policy_text

PATCH = "/api/v1/zones/web-1/caps"


def _request(port: int, method: str, path: str, body: object = None,
             token: str = SET) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    return resp.status, payload


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _config(host: Host, port: int, policy: Path, extra: str = "") -> Path:
    cfg = host.write_config(policy, extra="enabled = true\n" + extra)
    cfg.write_text(f'[agent]\nlisten = "127.0.0.1:{port}"\nlog_format = "json"\n'
                   + cfg.read_text())
    return cfg


def test_sighup_rereads_the_policy_and_refuses_a_bad_one(tmp_path: Path) -> None:
    host = Host(tmp_path)
    port = free_port()
    policy = host.write_policy(policy_text())
    cfg = _config(host, port, policy)
    err = tmp_path / "serve.log"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dtagent", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=out, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO), **host.env()))

    def after_hup(event: str, count: int) -> dict[str, Any]:
        """SIGHUP, then the count-th log line of ``event`` (the reload's answer)."""
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [e for e in _events(err) if e["event"] == event]
            if len(found) >= count:
                return found[count - 1]
            assert proc.poll() is None, err.read_text()
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} after SIGHUP: {err.read_text()[-2000:]}")

    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        status, body = _request(port, "PATCH", PATCH, {"caps": {"cpu_cap": 300}})
        assert (status, body["result"]) == (200, "applied")

        # a new policy: one change an hour, cpu_cap at most 350, one more token
        newer = policy_text().replace("changes_per_hour = 50", "changes_per_hour = 1")
        newer = newer.replace("min = 50\nmax = 800", "min = 50\nmax = 350")
        newer += f'[[tokens]]\nid = "late"\nsha256 = "{hash_token("late-secret-0123")}"\n' \
                 'scopes = ["read"]\n'
        policy.write_text(newer)
        reloaded = after_hup("config reloaded", 1)
        assert reloaded["changed"] == [
            f"control policy {policy}: limits.changes_per_hour: 50 -> 1; "
            "properties.cpu_cap.max: 800 -> 350; tokens added: late"]
        assert hash_token("late-secret-0123") not in err.read_text()
        # the change made before the reload counts against the new hourly limit
        status, body = _request(port, "PATCH", PATCH, {"caps": {"cpu_cap": 320}})
        assert status == 429, body
        assert body["reason"] == "1 changes in the last hour; the policy allows 1"
        # a dry run is not counted, so the new bounds answer it
        status, body = _request(port, "PATCH", PATCH, {"caps": {"cpu_cap": 400},
                                                       "dry_run": True})
        assert status == 422 and "outside the policy's 50..350" in body["reason"], body
        assert _request(port, "GET", "/api/v1/zones/web-1", token="late-secret-0123")[0] == 200

        # a bad policy: refused with one line naming the file and the key; the old
        # policy judges on (its 350, not the bad file's 800)
        policy.write_text(newer.replace("max = 350", "max = 800")
                          .replace("concurrent = 2", "concurrent = 0"))
        refused = after_hup("config reload refused; the running config stays", 1)
        assert refused["problem"] == (f"{policy}: key 'limits.concurrent': expected a whole "
                                      "number from 1 to 64, got 0")
        status, body = _request(port, "PATCH", PATCH, {"caps": {"cpu_cap": 400},
                                                       "dry_run": True})
        assert status == 422 and "outside the policy's 50..350" in body["reason"], body

        # turning the API off needs a restart: refused, the API still answers
        policy.write_text(newer)
        cfg.write_text(cfg.read_text().replace("enabled = true", "enabled = false"))
        refused = after_hup("config reload refused; the running config stays", 2)
        assert refused["problem"].startswith(
            "key 'control.enabled': True -> False needs a restart (svcadm restart dtagent)")
        assert _request(port, "GET", "/api/v1/zones/web-1")[0] == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _events(err)
    assert [e["event"] for e in events].count("config reloaded") == 1
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped[0]["reloads"] == 1 and stopped[0]["reloads_refused"] == 2


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logsetup.setup("info", "json", stream=out)
    try:
        yield out
    finally:
        logsetup.setup("info", "auto")


def _problems(logs: io.StringIO) -> list[str]:
    return [str(rec["problem"]) for rec in map(json.loads, logs.getvalue().splitlines())
            if rec.get("event") == "config reload refused; the running config stays"]


def test_turning_the_api_on_needs_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO,
) -> None:
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    cfg = _config(host, free_port(), host.write_policy(policy_text()))
    cfg.write_text(cfg.read_text().replace("enabled = true", "enabled = false"))
    serve = Serve(load(cfg), load=lambda: load(cfg))
    try:
        serve.start()
        cfg.write_text(cfg.read_text().replace("enabled = false", "enabled = true"))
        assert serve.reloader.reload() is False
        assert _problems(logs) == [
            "key 'control.enabled': False -> True needs a restart (svcadm restart dtagent): "
            "the control API is mounted when the agent starts"]
        assert serve.state.config.get("control", "enabled") is False
    finally:
        serve.stop()


def test_a_reload_never_leaves_the_api_in_clear_text_on_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO,
) -> None:
    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    cfg = _config(host, free_port(), host.write_policy(policy_text()),
                  extra="allow_plaintext_on_network = true\n")
    cfg.write_text(cfg.read_text().replace('"127.0.0.1:', '"0.0.0.0:'))
    serve = Serve(load(cfg), load=lambda: load(cfg))
    try:
        serve.start()
        good = serve.state.config
        cfg.write_text(cfg.read_text().replace("allow_plaintext_on_network = true\n", ""))
        assert serve.reloader.reload() is False
        [problem] = _problems(logs)
        assert problem.startswith("control.enabled: 0.0.0.0:") and "no TLS" in problem
        assert serve.state.config is good
        # what can change in place does, and the rest says when it will
        cfg.write_text(cfg.read_text().replace("command_timeout = 5", "command_timeout = 7")
                       .replace("enabled = true", "enabled = true\nallow_plaintext_on_network"
                                " = true\nmax_body_bytes = 1000"))
        assert serve.reloader.reload() is True
        changed = [rec["changed"] for rec in map(json.loads, logs.getvalue().splitlines())
                   if rec.get("event") == "config reloaded"]
        assert changed == [["control.command_timeout: 5.0 -> 7.0; control.max_body_bytes: "
                            "65536 -> 1000 (takes effect at the next restart)"]]
        control = serve.state.parts["control"]
        assert control.service.platform.timeout == 7.0
    finally:
        serve.stop()


def _changed(logs: io.StringIO) -> list[object]:
    return [rec["changed"] for rec in map(json.loads, logs.getvalue().splitlines())
            if rec.get("event") == "config reloaded"]


@pytest.mark.parametrize("shared", [False, True])
def test_a_new_command_path_says_what_the_control_wing_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO, shared: bool,
) -> None:
    """Live on illumos the wing runs its commands on the agent's command source, whose
    path a reload changes; its choice of vmadm or zonecfg stays until a restart. With a
    runner of its own (here: Linux), the old path stays."""
    from tests.native import build_shared

    host = Host(tmp_path)
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    cfg = _config(host, free_port(), host.write_policy(policy_text()))
    if shared:
        stub = json.dumps(str(build_shared("libkstat_stub.c")))
        cfg.write_text(cfg.read_text().replace(
            "[sources]\n", f'[sources]\nplatform = "illumos"\nlibkstat = {stub}\n')
            + "[dtrace]\nenabled = false\n")
    serve = Serve(load(cfg), load=lambda: load(cfg))
    try:
        control = serve.state.parts["control"]
        assert (control.service.platform.runner is serve.runtime.runner) is shared
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for exe in FAKEBIN.iterdir():
            if exe.name != "vmadm":
                (bin_dir / exe.name).symlink_to(exe)
        old = load(cfg).get("sources", "command_path")
        cfg.write_text(cfg.read_text().replace(old, f"{bin_dir}:/usr/bin:/bin"))
        assert serve.reloader.reload() is True
        [changed] = _changed(logs)
        assert isinstance(changed, list)
        note = ("the control wing keeps its smartos commands until the next restart (vmadm "
                "is no longer in sources.command_path)" if shared else
                "the control wing's commands keep the old sources.command_path until the "
                "next restart")
        assert changed[-1] == note, changed
        assert control.service.platform.name == "smartos"
    finally:
        serve.stop()
