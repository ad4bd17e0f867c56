"""The SMF manifest is valid against the real service_bundle DTD and runs `dtagent serve`."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import SMF_DTD


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (Debian libxml2-utils)")
def test_manifest_validates_against_the_dtd(repo_root: Path) -> None:
    res = subprocess.run(
        [
            "xmllint",
            "--noout",
            "--nonet",
            "--dtdvalid",
            str(SMF_DTD),
            str(repo_root / "smf" / "dtagent.xml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "validity error" not in res.stderr


def test_manifest_runs_the_agent_in_the_foreground(repo_root: Path) -> None:
    root = ET.parse(repo_root / "smf" / "dtagent.xml").getroot()
    service = root.find("service")
    assert service is not None
    start = service.find("exec_method[@name='start']")
    assert start is not None
    assert start.get("exec", "").endswith("dtagent serve --config %{config/file}")
    props = {
        (pg.get("name"), pv.get("name")): pv.get("value")
        for pg in service.findall("property_group")
        for pv in pg.findall("propval")
    }
    assert props[("startd", "duration")] == "child"
    assert props[("config", "file")].startswith("/opt/custom/")
