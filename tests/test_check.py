"""`dtagent check`, run as an operator runs it: on this Linux machine (not ready, exit 1),
on a host of stand-ins (ready, exit 0), and with one thing missing at a time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, dtagent, free_port
from tests.standin_host import ready_config, ready_env


def _check(tmp_path: Path, config: str, *args: str, privileges: str | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "dtagent.toml"
    cfg.write_text(config)
    environ = ready_env(tmp_path) if privileges is None else ready_env(tmp_path, privileges)
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dtagent", "check", "--config", str(cfg),
                           *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=environ, check=False)


def _findings(res: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    doc = json.loads(res.stdout)
    return {f["check"]: (f["status"], f["detail"]) for f in doc["findings"]}


def test_on_linux_the_report_says_what_is_missing_and_exits_1() -> None:
    res = dtagent("check")
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert rows["platform"] == "FAIL" and "need illumos" in res.stdout
    assert rows["privileges"] == "FAIL" and rows["libkstat"] == "FAIL"
    assert rows["libdtrace"] == "FAIL"
    for cmd in ("zoneadm", "vmadm", "zfs", "dladm", "flowadm"):
        assert rows[f"command:{cmd}"] == "FAIL"
    assert rows["config"] == "OK" and rows["listen"] in ("OK", "WARN")
    assert lines[-1] == "result: something needed is missing (exit 1)"
    assert res.stderr == ""


def test_with_the_stand_ins_everything_is_ready(tmp_path: Path) -> None:
    res = _check(tmp_path, ready_config(tmp_path), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    found = _findings(res)
    assert found["platform"][0] == "warn"  # Linux with stand-ins, said so
    assert found["privileges"] == ("ok", "held: dtrace_kernel, dtrace_proc, dtrace_user")
    assert found["libkstat"][0] == "ok" and found["libdtrace"][0] == "ok"
    shipped = sorted(p.stem for p in (REPO / "scripts" / "d").glob("*.d"))
    enabled = [n for n in shipped if f"dtrace:{n}" in found]
    assert "runq" in enabled and "tcpconn" in enabled
    assert all(found[f"dtrace:{n}"][0] == "ok" for n in enabled)
    # the platform-dependent choice, reported as far as this host allows
    assert "variant: default (also: netstack)" in found["dtrace:tcpconn"][1]
    assert "zone attribution: cannot tell here" in found["dtrace:tcpconn"][1]
    for cmd in ("zoneadm", "vmadm", "zfs", "dladm", "flowadm"):
        assert found[f"command:{cmd}"][0] == "ok", found[f"command:{cmd}"]
    assert found["listen"][0] == "warn" and "loopback" in found["listen"][1]
    assert found["smf"][0] == "skip"
    assert json.loads(res.stdout)["exit"] == 0


def test_each_missing_need_fails_with_its_reason(tmp_path: Path) -> None:
    no_dtrace = _check(tmp_path / "a", ready_config(tmp_path), privileges="basic")
    assert no_dtrace.returncode == 1
    assert "missing dtrace_kernel, dtrace_proc, dtrace_user" in no_dtrace.stdout

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = _check(tmp_path / "b", ready_config(tmp_path, listen=f"127.0.0.1:{port}"),
                      "--json")
        skipped = _check(tmp_path / "b", ready_config(tmp_path, listen=f"127.0.0.1:{port}"),
                         "--json", "--skip", "listen")
    assert busy.returncode == 1
    assert _findings(busy)["listen"][0] == "fail"
    assert "Address already in use" in _findings(busy)["listen"][1]
    assert skipped.returncode == 0 and _findings(skipped)["listen"][0] == "skip"

    hung = _check(tmp_path / "c", ready_config(tmp_path), "--json", DTAGENT_FAKE_ZFS_MODE="fail")
    assert hung.returncode == 1
    assert _findings(hung)["command:zfs"][0] == "fail"
    assert "exit 1" in _findings(hung)["command:zfs"][1]

    sc = tmp_path / "d"
    sc.mkdir()
    (sc / "scenario.txt").write_text("compile_fail runq.d translator does not exist\n")
    broken = _check(sc, ready_config(tmp_path), "--json")
    assert broken.returncode == 1, broken.stdout
    status, detail = _findings(broken)["dtrace:runq"]
    assert status == "fail" and "does not compile" in detail and "dtrace.scripts.runq" in detail


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    res = _check(tmp_path, ready_config(tmp_path) + "series_cap = -1\n")
    assert res.returncode == 2
    assert "config" in res.stdout and "dtrace.series_cap" in res.stdout
    assert res.stdout.splitlines()[-1] == "result: the config is bad (exit 2)"


def test_an_unknown_skip_is_a_usage_error() -> None:
    res = dtagent("check", "--skip", "nonsense")
    assert res.returncode == 2 and "not a check" in res.stderr
    assert free_port() > 0


def test_under_smf_the_service_state_is_reported(tmp_path: Path) -> None:
    fakesmf = Path(__file__).resolve().parent / "fakesmf"
    state = tmp_path / "smf"
    state.mkdir()
    manifest = tmp_path / "dtagent.xml"
    res = subprocess.run([str(REPO / "scripts" / "install.sh"), "--print-manifest"],
                         capture_output=True, text=True, check=True)
    manifest.write_text(res.stdout)
    env = {"DTAGENT_FAKE_SMF": str(state)}
    path = f"{fakesmf}:/usr/bin:/bin"
    subprocess.run([str(fakesmf / "svccfg"), "import", str(manifest)], check=True,
                   env={**env, "PATH": path})
    online = _check(tmp_path / "a", ready_config(tmp_path), "--json", PATH=path, **env)
    assert _findings(online)["smf"] == ("ok", "svc:/application/dtagent:default is online")
    (state / "fail-starts").write_text("1")
    subprocess.run([str(fakesmf / "svcadm"), "restart", "dtagent"], check=True,
                   env={**env, "PATH": path})
    broken = _check(tmp_path / "b", ready_config(tmp_path), "--json", PATH=path, **env)
    status, detail = _findings(broken)["smf"]
    assert status == "warn" and "maintenance" in detail and "svcadm clear" in detail
    assert broken.returncode == 0  # the service's state is reported, not needed
