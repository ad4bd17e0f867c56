"""The release tarball and install.sh, run as an operator runs them, into --root TMP.

svccfg, svcadm, svcs and svcprop are stand-ins (tests/fakesmf) that keep a service
repository in a directory and record every call; `dtagent check` runs for real against
the stand-in libraries and commands (tests/standin_host.py). pip runs with no index
and no site config: everything comes from the release's wheelhouse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, installed_env
from tests.standin_host import ready_config, ready_env

FAKESMF = Path(__file__).resolve().parent / "fakesmf"
FMRI = "svc:/application/dtagent:default"
PYTHON = getattr(sys, "_base_executable", sys.executable)


def _run(argv: list[str], env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make dist`'s tarball, unpacked; the wheels of psutil, PyYAML and bcrypt for this
    machine added to its wheelhouse (on SmartOS pkgsrc's py311-psutil, py311-yaml and
    py311-bcrypt stand there instead)."""
    res = _run([str(REPO / "scripts" / "dist.sh")],
               env=dict(os.environ, DTAGENT_VENV=str(Path(sys.executable).parent.parent)))
    assert res.returncode == 0, res.stdout + res.stderr
    tarball = Path(res.stdout.strip().splitlines()[-1])
    out = tmp_path_factory.mktemp("release")
    with tarfile.open(tarball) as tar:
        tar.extractall(out, filter="data")
    (unpacked,) = out.iterdir()
    from importlib.metadata import version

    for binary in ("psutil", "PyYAML", "bcrypt"):
        got = _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", f"{binary}=={version(binary)}", "-d",
                    str(unpacked / "wheels")])
        assert got.returncode == 0, got.stderr
    yield unpacked


def test_the_tarball_holds_what_the_docs_say(release: Path) -> None:
    names = sorted(p.name for p in (release / "wheels").iterdir())
    assert any(n.startswith("dtagent-") for n in names)
    assert any(n.startswith("prometheus_client-") for n in names)
    assert any(n.startswith("structlog-") for n in names)
    assert all(n.endswith("-none-any.whl") for n in names
               if not n.startswith(("psutil-", "pyyaml-", "PyYAML-", "bcrypt-")))
    for part in ("install.sh", "VERSION", "smf/dtagent.xml.in", "etc/dtagent.toml",
                 "docs/install-smartos.md", "docs/bundle.md", "README.md"):
        assert (release / part).is_file(), part
    assert os.access(release / "install.sh", os.X_OK)


def test_the_wheelhouse_installs_offline_and_check_runs(release: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run([PYTHON, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    env = installed_env(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_COMPILE="1")
    # the pip wheel Python ships (runs from the zip), as install.sh does: no copy of pip
    import ensurepip

    pip = next((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    res = _run([str(venv / "bin" / "python"), f"{pip}/pip", "install", "-q", "--no-index",
                "--find-links", str(release / "wheels"), "dtagent"], env=env)
    assert res.returncode == 0, res.stderr
    check = _run([str(venv / "bin" / "dtagent"), "check", "--json"], env=env)
    assert check.returncode == 1  # this is Linux
    doc = json.loads(check.stdout)
    assert doc["exit"] == 1
    assert {f["check"] for f in doc["findings"]} >= {"platform", "libkstat", "libdtrace"}


# ------------------------------------------------------------------ install.sh


class Host:
    """A --root directory, the SMF stand-ins' repository, and install.sh runs into it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.smf = tmp_path / "smf"
        self.smf.mkdir()
        self.env = ready_env(tmp_path)
        self.env.update(
            PATH=f"{FAKESMF}:{self.env['PATH']}",
            DTAGENT_FAKE_SMF=str(self.smf),
            DTAGENT_ONLINE_WAIT="3",
            PIP_CONFIG_FILE=os.devnull,
            PIP_NO_COMPILE="1",  # byte-compiling every install is most of pip's time here
        )
        self.ready = ready_config(tmp_path)

    def install(self, release: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([str(release / "install.sh"), "--root", str(self.root),
                     "--python", PYTHON, *args], env=self.env)

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "dtagent"

    @property
    def manifest(self) -> Path:
        return self.root / "opt" / "custom" / "smf" / "dtagent.xml"

    def calls(self) -> list[str]:
        """The svccfg and svcadm calls (svcs and svcprop only read)."""
        log = self.smf / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [c for c in lines if c.startswith(("svccfg", "svcadm"))]

    def state(self) -> str:
        repo = json.loads((self.smf / "repo.json").read_text())
        return str(repo[FMRI]["state"])

    def tree(self) -> dict[str, str]:
        """Every file and link under the root, with its content or target."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file() and "__pycache__" not in rel:
                out[rel] = p.read_bytes().hex() if p.stat().st_size < 100_000 else str(
                    p.stat().st_mtime_ns)
        return out


def variant(release: Path, tmp_path: Path, version: str, *, broken: bool = False) -> Path:
    """The same release as `version` (its wheel re-labelled); `broken` adds an enabled D
    script that does not compile here."""
    out = tmp_path / f"dtagent-{version}"
    shutil.copytree(release, out)
    (out / "VERSION").write_text(version + "\n")
    (old,) = (out / "wheels").glob("dtagent-*.whl")
    old_version = old.name.split("-")[1]
    new = out / "wheels" / f"dtagent-{version}-py3-none-any.whl"
    with zipfile.ZipFile(old) as src, zipfile.ZipFile(new, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            name = item.filename.replace(f"dtagent-{old_version}.dist-info",
                                         f"dtagent-{version}.dist-info")
            if name.endswith(("METADATA", "__init__.py")) and "dtagent" in name:
                data = data.replace(old_version.encode(), version.encode())
            if name.endswith("RECORD"):
                continue
            dst.writestr(name, data)
        if broken:
            dst.writestr("dtagent/data/d/zbroken.d", "tick-1s { @zbroken = count(); }\n")
            dst.writestr("dtagent/data/d/zbroken.toml", (
                'description = "a script this platform image cannot compile"\n'
                'providers = ["profile"]\nfbt = false\nenabled = true\n'
                '[[aggregation]]\nname = "zbroken"\nfunction = "count"\n'
                'metric = "illumos_zbroken_total"\ntype = "counter"\nhelp = "x"\n'))
        dst.writestr(f"dtagent-{version}.dist-info/RECORD", "")
    old.unlink()
    return out


def test_install_upgrade_rollback_uninstall(release: Path, tmp_path: Path) -> None:
    host = Host(tmp_path)
    sc = tmp_path / "scenario.txt"
    sc.write_text("compile_fail zbroken operator not supported on this platform image\n")

    # 1. a fresh install: the files land; the example config is valid but does not
    #    point at the stand-ins, so the check fails (this is Linux) and nothing is enabled
    first = host.install(release)
    assert first.returncode == 1, first.stderr
    assert "'dtagent check' found a problem" in first.stderr
    assert "platform         FAIL" in first.stderr
    assert (host.prefix / "venv").is_symlink()
    assert os.readlink(host.prefix / "venv") == "lib/dtagent-0.1.0"
    assert (host.prefix / "lib" / "dtagent-0.1.0" / "bin" / "python").exists()
    assert (host.prefix / "etc" / "dtagent.toml").read_text() == (
        release / "etc" / "dtagent.toml").read_text()
    assert (host.prefix / "var").is_dir()
    assert (host.prefix / "share" / "doc" / "install-smartos.md").is_file()
    assert host.manifest.is_file()
    assert host.calls() == [], "nothing imported or enabled while the check fails"

    # 2. the operator points the config at this host (stand-ins); the next run enables
    (host.prefix / "etc" / "dtagent.toml").write_text(host.ready)
    second = host.install(release)
    assert second.returncode == 0, second.stderr
    text = host.manifest.read_text()
    assert '<create_default_instance enabled="true"/>' in text
    assert 'exec="/opt/dtagent/venv/bin/python -I -m dtagent serve --smf"' in text
    assert host.calls() == [f"svccfg import {host.manifest}", f"svcadm enable {FMRI}"]
    assert host.state() == "online"

    # 3. a second run changes nothing: no file, no svccfg or svcadm call
    before = host.tree()
    calls = len(host.calls())
    again = host.install(release)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stderr
    assert host.tree() == before
    assert host.calls()[calls:] == []

    # 4. an upgrade whose check fails leaves the old version in place and running
    broken = variant(release, tmp_path, "0.1.2", broken=True)
    bad = host.install(broken, "--upgrade")
    assert bad.returncode == 1
    assert "dtagent 0.1.2 fails its check" in bad.stderr
    assert "dtrace:zbroken" in bad.stderr
    assert os.readlink(host.prefix / "venv") == "lib/dtagent-0.1.0"
    assert not (host.prefix / "lib" / "dtagent-0.1.2").exists()
    assert host.state() == "online"

    # 5. an upgrade that does not come online is rolled back
    newer = variant(release, tmp_path, "0.1.1")
    (host.smf / "fail-starts").write_text("1")
    rolled = host.install(newer, "--upgrade")
    assert rolled.returncode == 1
    assert "rolling back to 0.1.0" in rolled.stderr
    assert os.readlink(host.prefix / "venv") == "lib/dtagent-0.1.0"
    assert not (host.prefix / "lib" / "dtagent-0.1.1").exists()
    assert host.state() == "online"

    # 6. a good upgrade keeps the config and restarts the service
    host.install(release)  # untouched by the failures above
    (host.prefix / "etc" / "dtagent.toml").write_text(host.ready + "# edited\n")
    up = host.install(newer, "--upgrade")
    assert up.returncode == 0, up.stderr
    assert os.readlink(host.prefix / "venv") == "lib/dtagent-0.1.1", up.stderr
    assert not (host.prefix / "lib" / "dtagent-0.1.0").exists()
    assert (host.prefix / "etc" / "dtagent.toml").read_text().endswith("# edited\n")
    assert f"svcadm restart {FMRI}" in host.calls()
    version = _run([str(host.prefix / "venv" / "bin" / "python"), "-I", "-m", "dtagent",
                    "--version"], env=host.env)
    assert version.stdout.strip() == "dtagent 0.1.1"

    # 7. uninstall removes what was installed, keeps the config; --purge removes it too
    gone = host.install(newer, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert f"svcadm disable -s {FMRI}" in host.calls()
    assert "svccfg delete svc:/application/dtagent" in host.calls()
    assert not host.manifest.exists()
    left = sorted(str(p.relative_to(host.root)) for p in host.root.rglob("*") if p.is_file())
    assert left == ["opt/dtagent/etc/dtagent.toml"]
    purge = host.install(newer, "--uninstall", "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not host.prefix.exists()
