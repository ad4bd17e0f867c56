"""Executable plugins: run off the scrape path with a timeout, per-plugin success,
duration and last run, bad output and clashes refused, through the real runtime."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from dtagent.collectors.plugins import PluginsCollector
from dtagent.config import ConfigError, load
from dtagent.runtime import build
from dtagent.snapshot import HostSnapshot, KstatSnapshot
from dtagent.sources.commands import NoCommands
from dtagent.sources.plugins import PluginRunner
from tests.helpers import samples_of

SNAP = HostSnapshot(KstatSnapshot(), NoCommands(), time=0.0)


def plugin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def make_plugins(d: Path) -> None:
    plugin(d, "10-backup", "echo '# TYPE backup_age_seconds gauge'\n"
                          "echo 'backup_age_seconds{dataset=\"zones/a\"} 3600'\n")
    plugin(d, "20-fails", "echo oops >&2; exit 3\n")
    plugin(d, "30-hangs", "sleep 30\n")
    plugin(d, "40-garbage", "echo 'not { metrics'\n")
    plugin(d, "50-own-name", "echo 'illumos_zpool_health 1'\n")
    plugin(d, "60-clash", "echo 'backup_age_seconds 1'\n")
    (d / "70-not-executable").write_text("#!/bin/sh\necho x 1\n")
    plugin(d, ".hidden", "echo hidden 1\n")


def test_runner_results(tmp_path: Path) -> None:
    make_plugins(tmp_path)
    runner = PluginRunner(str(tmp_path), interval=60, timeout=0.5)
    started = time.monotonic()
    runner.run_once()
    assert time.monotonic() - started < 10  # the hang was cut at its timeout
    res = runner.results()
    assert sorted(res) == ["10-backup", "20-fails", "30-hangs", "40-garbage", "50-own-name",
                           "60-clash"]
    assert res["10-backup"].ok and res["60-clash"].ok
    assert "exit status 3" in (res["20-fails"].error or "")
    assert "timed out" in (res["30-hangs"].error or "")
    assert not res["40-garbage"].ok and not res["50-own-name"].ok


def test_collector_never_runs_a_plugin_in_the_scrape(tmp_path: Path) -> None:
    make_plugins(tmp_path)
    collector = PluginsCollector(directory=str(tmp_path), interval=60, timeout=0.5)
    try:
        started = time.monotonic()
        first = samples_of(collector, SNAP)  # starts the runner thread, returns at once
        assert time.monotonic() - started < 0.5
        assert first == {}
        assert collector.runner is not None
        deadline = time.monotonic() + 15
        while collector.runner.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = samples_of(collector, SNAP)
    finally:
        collector.close()
    assert got[("dtagent_plugin_success", ("10-backup",))] == 1
    assert got[("dtagent_plugin_success", ("30-hangs",))] == 0
    assert got[("dtagent_plugin_success", ("60-clash",))] == 0  # backup_age_seconds taken
    assert got[("backup_age_seconds", ("zones/a",))] == 3600
    assert got[("dtagent_plugin_duration_seconds", ("30-hangs",))] >= 0.5
    assert got[("dtagent_plugin_last_run_timestamp_seconds", ("10-backup",))] > 1.7e9


def test_configured_through_the_config_file_and_stopped_with_the_agent(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    plugin(tmp_path / "p", "ok", "echo 'site_up 1'\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.plugins]\ndirectory = "{tmp_path / "p"}"\ninterval = 5.0\n'
                    "timeout = 2.0\n[dtrace]\nenabled = false\n")
    rt = build(load(conf))
    try:
        rt.agent.collect()
        (collector,) = [c for c in rt.agent.collectors if c.name == "plugins"]
        assert isinstance(collector, PluginsCollector) and collector.runner is not None
    finally:
        rt.close()
    assert collector.runner._thread is not None and not collector.runner._thread.is_alive()
    bad = tmp_path / "bad.toml"
    bad.write_text('[collectors.plugins]\ninterval = "often"\n')
    try:
        load(bad)
    except ConfigError as exc:
        assert "collectors.plugins.interval" in str(exc)
    else:
        raise AssertionError("a bad interval was accepted")


def test_a_reload_that_replaces_the_plugins_collector_stops_the_old_runner(
    tmp_path: Path,
) -> None:
    plugin(tmp_path, "ok", "echo 'site_up 1'\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.plugins]\ndirectory = "{tmp_path}"\ninterval = 5.0\n'
                    "timeout = 2.0\n[dtrace]\nenabled = false\n")
    rt = build(load(conf))
    try:
        rt.agent.collect()
        (old,) = [c for c in rt.agent.collectors if c.name == "plugins"]
        assert isinstance(old, PluginsCollector) and old.runner is not None
        fresh = PluginsCollector(directory=str(tmp_path), interval=7.0, timeout=2.0)
        rt.agent.set_collectors([c for c in rt.agent.collectors if c is not old] + [fresh])
        assert old.runner._thread is not None and not old.runner._thread.is_alive()
        rt.agent.collect()
    finally:
        rt.close()
    assert fresh.runner is not None and fresh.runner._thread is not None
    assert not fresh.runner._thread.is_alive()
