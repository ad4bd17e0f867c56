"""The command line, driven as a user drives it (child processes)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from dtagent import __version__
from tests.helpers import dtagent, free_port, start_dtagent, wait_http


def test_version_and_help() -> None:
    assert dtagent("--version").stdout.strip() == f"dtagent {__version__}"
    out = dtagent("--help").stdout
    for command in ("serve", "scrape", "simulate", "demo", "import-kstat", "dtrace"):
        assert f"\n  {command}" in out
        assert f"dtagent {command}" in out  # an example for each
    for command in ("serve", "scrape", "simulate", "demo", "import-kstat"):
        assert "Example: dtagent" in dtagent(command, "--help").stdout


def test_simulate_then_scrape_replay(tmp_path: Path) -> None:
    bundle = tmp_path / "sim.bundle"
    res = dtagent(
        "simulate", "--zones", "6", "--out", str(bundle), "--seed", "3", "--duration", "60"
    )
    assert res.returncode == 0, res.stderr
    out = dtagent("scrape", "--replay", str(bundle))
    assert out.returncode == 0, out.stderr
    assert 'dtagent_collector_available{collector="host"} 0' in out.stdout
    assert "dtagent_build_info" in out.stdout


def test_simulate_rejects_nonsense(tmp_path: Path) -> None:
    res = dtagent("simulate", "--zones", "0", "--out", str(tmp_path / "x.bundle"))
    assert res.returncode == 2 and "at least one zone" in res.stderr
    assert dtagent("simulate", "--out", "x").returncode == 2  # --zones is required


def test_import_every_real_kstat_sample(samples_dir: Path, tmp_path: Path) -> None:
    dumps = sorted(p for p in samples_dir.glob("*kstat*.txt"))
    assert len(dumps) >= 10
    bundle = tmp_path / "samples.bundle"
    res = dtagent("import-kstat", *map(str, dumps), "--out", str(bundle))
    assert res.returncode == 0, res.stderr
    assert f"({len(dumps)} frames)" in res.stderr
    for frame in range(len(dumps)):
        out = dtagent("scrape", "--replay", str(bundle), "--frame", str(frame))
        assert out.returncode == 0, out.stderr


def test_import_refuses_a_file_without_kstats(samples_dir: Path, tmp_path: Path) -> None:
    res = dtagent(
        "import-kstat",
        str(samples_dir / "zonememstat_smartos.txt"),
        "--out",
        str(tmp_path / "x.bundle"),
    )
    assert res.returncode == 2 and "no module:instance:name:statistic lines" in res.stderr
    assert "line 1 is " in res.stderr
    assert not (tmp_path / "x.bundle").exists()


def test_scrape_of_a_bad_bundle_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(b"not gzip")
    res = dtagent("scrape", "--replay", str(bad))
    assert res.returncode == 1 and "bundle error" in res.stderr and str(bad) in res.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_promtool_check_metrics_is_silent(tmp_path: Path) -> None:
    bundle = tmp_path / "sim.bundle"
    assert (
        dtagent("simulate", "--zones", "8", "--out", str(bundle), "--duration", "300").returncode
        == 0
    )
    for frame in (["--frame", "0"], []):  # the first and the last
        text = dtagent("scrape", "--replay", str(bundle), *frame).stdout
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr


def test_serve_off_illumos_runs_host_and_self_and_says_why(tmp_path: Path) -> None:
    port = free_port()
    proc = start_dtagent("serve", "--listen", f"127.0.0.1:{port}")
    try:
        body = wait_http(f"http://127.0.0.1:{port}/metrics").decode()
        assert 'illumos_host_cpu_seconds_total{mode="user"}' in body
        assert 'dtagent_collector_success{collector="host"} 1' in body
        assert 'dtagent_collector_available{collector="dtrace"} 0' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    unavailable = {
        e["collector"]: e["reason"] for e in events if e["event"] == "collector unavailable"
    }
    assert "dtrace" in unavailable and "illumos" in unavailable["dtrace"]
    assert any(e["event"] == "stopping" and e["signal"] == "SIGTERM" for e in events)


def test_demo_serves_a_simulated_host(tmp_path: Path) -> None:
    port = free_port()
    proc = start_dtagent(
        "demo",
        "--zones",
        "4",
        "--listen",
        f"127.0.0.1:{port}",
        "--out",
        str(tmp_path / "demo.bundle"),
    )
    try:
        body = wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60).decode()
        assert "dtagent_build_info" in body
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("dtagent demo: serving a SIMULATED SmartOS host")
        assert proc.stdout.readline().strip() == (
            f"dtagent demo (simulated host): open http://127.0.0.1:{port}/metrics"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
