"""The SMF manifest install.sh writes: valid against the real service_bundle DTD, its
paths and property names the ones install.sh creates and the agent reads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dtagent import smf
from tests.conftest import SMF_DTD
from tests.helpers import REPO, free_port, wait_http

DTD = SMF_DTD
INSTALL = REPO / "scripts" / "install.sh"
FAKESMF = Path(__file__).resolve().parent / "fakesmf"


def manifest(tmp_path: Path, *args: str) -> Path:
    res = subprocess.run([str(INSTALL), "--print-manifest", *args], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "dtagent.xml"
    out.write_text(res.stdout)
    return out


def _props(service: ET.Element) -> dict[tuple[str | None, str | None], str | None]:
    return {(pg.get("name"), pv.get("name")): pv.get("value")
            for pg in service.findall("property_group") for pv in pg.findall("propval")}


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (Debian libxml2-utils)")
@pytest.mark.parametrize("options", [(), ("--listen", "10.0.0.5:9718", "--log-level", "debug",
                                          "--privileges", "all")])
def test_the_installed_manifest_validates_against_the_dtd(tmp_path: Path,
                                                          options: tuple[str, ...]) -> None:
    res = subprocess.run(["xmllint", "--noout", "--nonet", "--dtdvalid", str(DTD),
                          str(manifest(tmp_path, *options))],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "validity error" not in res.stderr
    # the template itself, placeholders and all
    res = subprocess.run(["xmllint", "--noout", "--nonet", "--dtdvalid", str(DTD),
                          str(REPO / "smf" / "dtagent.xml.in")],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_the_manifest_enables_the_instance_and_names_what_install_sh_creates(
    tmp_path: Path,
) -> None:
    root = ET.parse(manifest(tmp_path, "--listen", "10.0.0.5:9718")).getroot()
    assert "@@" not in ET.tostring(root, encoding="unicode")
    service = root.find("service")
    assert service is not None and service.get("name") == "application/dtagent"
    default = service.find("create_default_instance")
    assert default is not None and default.get("enabled") == "true"  # persistent on SmartOS
    methods = {m.get("name"): m for m in service.findall("exec_method")}
    start = methods["start"].get("exec", "")
    interpreter, *argv = start.split()
    # install.sh links /opt/dtagent/venv to the running release's venv
    assert interpreter == "/opt/dtagent/venv/bin/python"
    assert argv == ["-I", "-m", "dtagent", "serve", "--smf"]
    assert methods["stop"].get("exec") == ":kill"
    assert methods["refresh"].get("exec") == ":kill -HUP"
    for name in ("start", "stop", "refresh"):
        assert int(methods[name].get("timeout_seconds", "0")) > 0
    context = service.find("method_context")
    assert context is not None and context.get("working_directory") == "/opt/dtagent/var"
    cred = context.find("method_credential")
    assert cred is not None
    privileges = cred.get("privileges", "").split(",")
    assert privileges == ["basic", "dtrace_kernel", "dtrace_proc", "dtrace_user"]
    assert cred.get("limit_privileges") == cred.get("privileges")
    env = {e.get("name"): e.get("value") for e in context.iter("envvar")}
    assert "venv" not in env["PATH"]  # the interpreter is absolute; PATH finds commands
    props = _props(service)
    assert props[("startd", "duration")] == "child"
    # the property names the agent reads, and the values install.sh writes
    assert {name for group, name in props if group == smf.PROPERTY_GROUP} == set(smf.PROPERTIES)
    assert props[("config", "file")] == "/opt/dtagent/etc/dtagent.toml"
    assert props[("config", "listen")] == "10.0.0.5:9718"
    assert props[("config", "log_level")] == ""


def test_a_low_port_adds_net_privaddr(tmp_path: Path) -> None:
    text = manifest(tmp_path, "--listen", "10.0.0.5:80").read_text()
    assert 'privileges="basic,dtrace_kernel,dtrace_proc,dtrace_user,net_privaddr"' in text


def test_serve_smf_reads_the_config_property_group(tmp_path: Path) -> None:
    """The start method's command, under the stand-in SMF: config/file, config/listen
    and config/log_level as svcprop prints them."""
    prefix = tmp_path / "opt" / "dtagent"
    (prefix / "etc").mkdir(parents=True)
    (prefix / "etc" / "dtagent.toml").write_text(
        '[agent]\nlisten = "127.0.0.1:1"\n[dtrace]\nenabled = false\n')
    port = free_port()
    path = manifest(tmp_path, "--prefix", str(prefix), "--listen", f"127.0.0.1:{port}",
                    "--log-level", "debug")
    state = tmp_path / "smf"
    state.mkdir()
    env = dict(os.environ, PATH=f"{FAKESMF}:{os.environ['PATH']}",
               DTAGENT_FAKE_SMF=str(state), PYTHONPATH=str(REPO))
    subprocess.run([str(FAKESMF / "svccfg"), "import", str(path)], env=env, check=True)
    env["SMF_FMRI"] = "svc:/application/dtagent:default"
    proc = subprocess.Popen([sys.executable, "-m", "dtagent", "serve", "--smf"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        body = wait_http(f"http://127.0.0.1:{port}/metrics")
        assert b"dtagent_" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert '"level": "debug"' in err  # config/log_level over the file's info
    calls = (state / "calls.log").read_text()
    assert "svcprop -p config svc:/application/dtagent:default" in calls


def test_serve_smf_outside_smf_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SMF_FMRI"}
    res = subprocess.run([sys.executable, "-m", "dtagent", "serve", "--smf"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert res.returncode == 2
    assert "SMF_FMRI is not set" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
