"""`dtagent check`, run as an operator runs it: on this Linux machine (not ready, exit 1),
on a host of stand-ins (ready, exit 0), and with one thing missing at a time."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAKEBIN
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


def _control_check(tmp_path: Path, policy: str, *args: str, command_path: str | None = None,
                   enabled: bool = True,
                   listen: str | None = None) -> subprocess.CompletedProcess[str]:
    """`dtagent check` with the control wing on, over the stateful stand-in host."""
    from tests.control_host import Host

    tmp_path.mkdir(parents=True, exist_ok=True)
    host = Host(tmp_path)
    state = host.load()
    state["datasets"]["zones"] = {"quota": 0, "used": 1 << 30, "available": 1 << 40,
                                  "referenced": 1 << 20}
    host.save(state)
    config = ready_config(tmp_path, listen=listen, extra=(
        f'[control]\nenabled = {"true" if enabled else "false"}\n'
        f'policy = "{host.write_policy(policy)}"\naudit_log = "{tmp_path / "audit.log"}"\n'))
    if command_path is not None:
        config = re.sub(r'command_path = "[^"]*"', f'command_path = "{command_path}"', config)
    return _check(tmp_path, config, *args, **host.env())


def test_with_control_on_its_policy_and_commands_are_checked(tmp_path: Path) -> None:
    from tests.test_control_api import policy_text

    res = _control_check(tmp_path / "a", policy_text(), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    found = _findings(res)
    assert found["policy"] == ("ok", f"{tmp_path / 'a' / 'policy.toml'}: 9 properties, "
                               "0 rules, 4 tokens, 0 client certificates")
    assert found["control"] == ("ok", "vmadm in sources.command_path: vmadm, prctl, zfs, dladm")
    for cmd in ("vmadm", "prctl", "zfs", "dladm"):
        assert found[f"control:{cmd}"][0] == "ok", found[f"control:{cmd}"]
        assert found[f"control:{cmd}"][1].startswith(str(FAKEBIN / cmd) + " answers")
    assert "control:zonecfg" not in found

    # without vmadm the wing uses zoneadm, zonecfg and prctl: each is checked (the
    # collectors' own vmadm row fails, so the report is exit 1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in FAKEBIN.iterdir():
        if exe.name != "vmadm":
            (bin_dir / exe.name).symlink_to(exe)
    illumos = _control_check(tmp_path / "b", policy_text(), "--json",
                             command_path=f"{bin_dir}:/usr/bin:/bin")
    found = _findings(illumos)
    assert found["control"][1] == ("no vmadm in sources.command_path: zoneadm, zonecfg, "
                                   "prctl, zfs, dladm (illumos without vmadm)")
    for cmd in ("zoneadm", "zonecfg", "prctl", "zfs", "dladm"):
        assert found[f"control:{cmd}"][0] == "ok", found[f"control:{cmd}"]
    assert found["command:vmadm"][0] == "fail" and illumos.returncode == 1


def test_a_missing_prctl_fails_the_control_check(tmp_path: Path) -> None:
    from tests.test_control_api import policy_text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in FAKEBIN.iterdir():
        if exe.name != "prctl":
            (bin_dir / exe.name).symlink_to(exe)
    if shutil.which("prctl", path="/usr/bin:/bin"):
        pytest.skip("this machine has a prctl of its own")
    path = f"{bin_dir}:/usr/bin:/bin"  # the stand-ins need python3 and sh's tools
    res = _control_check(tmp_path / "a", policy_text(), command_path=path)
    assert res.returncode == 1, res.stdout
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:-1]}
    assert rows["control:prctl"].split(None, 2)[1:] == [
        "FAIL", f"prctl not found in sources.command_path ({path})"]
    assert rows["control:vmadm"].split()[1] == "OK"
    assert res.stdout.splitlines()[-1] == "result: something needed is missing (exit 1)"

    # a named policy is checked even with the API off (dtagent caps uses it)
    off = _control_check(tmp_path / "b", policy_text(), "--json", command_path=path,
                         enabled=False)
    assert off.returncode == 1 and _findings(off)["control:prctl"][0] == "fail"


def test_a_bad_policy_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    from tests.test_control_api import policy_text

    res = _control_check(tmp_path, policy_text().replace("concurrent = 2", "concurrent = 0"))
    assert res.returncode == 2, res.stdout
    policy = tmp_path / "policy.toml"
    row = next(line for line in res.stdout.splitlines() if line.startswith("policy "))
    assert row.split(None, 2)[1:] == [
        "FAIL", f"{policy}: key 'limits.concurrent': expected a whole number from 1 to 64, "
        "got 0"]
    assert res.stdout.splitlines()[-1] == "result: the config is bad (exit 2)"
    assert res.stderr == ""

    # an API nobody can authenticate to: serve would refuse it, so does check
    no_auth = _control_check(tmp_path / "b", policy_text().split("[[tokens]]")[0], "--json")
    assert no_auth.returncode == 2
    assert "control.enabled needs authentication" in _findings(no_auth)["policy"][1]


def test_on_linux_an_enabled_control_wing_is_missing_its_commands(tmp_path: Path) -> None:
    from tests.control_host import Host
    from tests.test_control_api import policy_text

    host = Host(tmp_path)
    cfg = tmp_path / "dtagent.toml"
    cfg.write_text(f'[control]\nenabled = true\npolicy = "{host.write_policy(policy_text())}"\n')
    res = dtagent("check", "--config", str(cfg))
    assert res.returncode == 1, res.stdout
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in res.stdout.splitlines()[1:-1]}
    assert rows["policy"][0] == "OK"
    for cmd in ("zoneadm", "zonecfg", "prctl", "zfs", "dladm"):
        assert rows[f"control:{cmd}"] == ["FAIL", f"{cmd} not found in sources.command_path "
                                                  "(/usr/sbin:/usr/bin:/sbin:/bin)"]


def test_the_web_config_is_checked_and_the_api_never_in_clear_text(tmp_path: Path) -> None:
    from tests.test_control_api import policy_text

    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n"
                   "  key_file: /nonexistent/key.pem\n")
    config = ready_config(tmp_path).replace("[agent]\n", f'[agent]\nweb_config = "{web}"\n')
    bad = _check(tmp_path / "a", config)
    assert bad.returncode == 2, bad.stdout
    row = next(line for line in bad.stdout.splitlines() if line.startswith("web-config "))
    assert row.split()[1] == "FAIL" and str(web) in row and "cert_file" in row

    web.write_text("basic_auth_users: {}\n")
    good = _check(tmp_path / "b", config, "--json")
    assert _findings(good)["web-config"] == ("ok", f"{web}: no TLS")

    port = free_port()
    clear = _control_check(tmp_path / "c", policy_text(), "--json", "--skip", "listen")
    assert _findings(clear)["policy"][0] == "ok"  # loopback: clear text stays on the host
    network = _control_check(tmp_path / "d", policy_text(), "--skip", "listen",
                             listen=f"0.0.0.0:{port}")
    assert network.returncode == 2, network.stdout
    row = next(line for line in network.stdout.splitlines() if line.startswith("policy "))
    assert f"0.0.0.0:{port} is not a loopback address and the listener has no TLS" in row
