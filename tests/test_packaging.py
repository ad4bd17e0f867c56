"""The package installs as a user installs it: a wheel in a fresh virtual environment,
with the D scripts (scripts/d) inside it, and every subpackage listed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import REPO, installed_env


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "dtagent").rglob("__init__.py")
    }
    assert listed == found | {"dtagent.data.d"}
    assert config["tool"]["setuptools"]["package-dir"] == {"dtagent.data.d": "scripts/d"}


def _run(*argv: str | Path, cwd: Path) -> str:
    res = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                         timeout=600, check=False, env=installed_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_installed_wheel_carries_and_loads_the_d_scripts(tmp_path: Path) -> None:
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w",
         tmp_path / "dist", cwd=tmp_path)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("dtagent-*.whl"))
    _run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    _run(tmp_path / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    dtagent = tmp_path / "venv" / "bin" / "dtagent"
    listing = _run(dtagent, "dtrace", "list", cwd=tmp_path)
    shipped = sorted(p.stem for p in (REPO / "scripts" / "d").glob("*.d") if "." not in p.stem)
    assert (REPO / "scripts" / "d" / "tcpconn.netstack.d").exists()  # a variant, shipped too
    for name in shipped:
        assert f"\n{name}: " in "\n" + listing, name
    # read from the installed copy, not from this checkout
    assert "site-packages/dtagent/data/d/runq.d" in listing
    assert str(REPO) not in listing
    # and the installed agent serves a simulated host with the scripts' histograms
    _run(dtagent, "simulate", "--zones", "3", "--duration", "30", "--out", "s.bundle",
         cwd=tmp_path)  # fmt: skip
    text = _run(dtagent, "scrape", "--replay", "s.bundle", cwd=tmp_path)
    assert "illumos_zone_runq_latency_seconds_bucket{" in text
    assert "illumos_zone_info{" in text
