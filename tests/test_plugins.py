"""Executable plugins: run by the plugin source off the scrape path with a timeout,
per-plugin success, duration and last run, bad output and clashes refused by the
collector, through the real runtime and the served /metrics."""

from __future__ import annotations

import shutil
import stat
import time
import urllib.request
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.anonymize import Anonymizer
from dtagent.bundle import read_bundle
from dtagent.capture import capture
from dtagent.collectors.plugins import PluginsCollector
from dtagent.config import ConfigError, load
from dtagent.metrics import MetricFamily
from dtagent.runtime import build
from dtagent.serve import Serve
from dtagent.snapshot import (
    CommandResults,
    HostSnapshot,
    KstatSnapshot,
    PluginRequest,
    PluginRun,
)
from dtagent.sources.plugins import LivePlugins, PluginRunner
from tests.helpers import free_port, samples_of


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


def wait_for(path: Path, timeout: float = 60) -> None:
    """Until a plugin has made ``path`` (it has started), or fail."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_runner_runs_each_plugin_with_its_outcome(tmp_path: Path) -> None:
    make_plugins(tmp_path)
    runner = PluginRunner(PluginRequest(str(tmp_path), interval=60, timeout=0.5))
    assert runner.results() is None  # nothing has run
    runner.run_once()
    res = {r.name: r for r in runner.results() or ()}
    assert sorted(res) == ["10-backup", "20-fails", "30-hangs", "40-garbage", "50-own-name",
                           "60-clash"]
    assert res["10-backup"].ok and res["60-clash"].ok
    assert "backup_age_seconds{dataset=\"zones/a\"} 3600" in res["10-backup"].stdout
    assert res["20-fails"].reason == "exit status 3: oops"
    assert "timed out" in res["30-hangs"].reason
    assert res["30-hangs"].duration >= 0.5  # it was cut at its timeout
    # the source does not judge the output: the collector parses it
    assert res["40-garbage"].ok and res["50-own-name"].ok
    (tmp_path / "30-hangs").unlink()
    runner.run_once()
    assert "30-hangs" not in {r.name for r in runner.results() or ()}  # gone is forgotten


def test_collector_reads_the_runs_from_the_snapshot(tmp_path: Path) -> None:
    make_plugins(tmp_path)
    collector = PluginsCollector(directory=str(tmp_path), interval=60, timeout=0.5)
    source = LivePlugins()
    try:
        (request,) = collector.plugins()
        assert request == PluginRequest(str(tmp_path), 60.0, 0.5)
        assert source.plugin_runs([request]) == {}  # started, not run yet
        assert samples_of(collector, HostSnapshot(KstatSnapshot(), CommandResults(), 0.0)) == {}
        assert source.settle(30)
        runs = source.plugin_runs([request])
    finally:
        source.close()
    snap = HostSnapshot(KstatSnapshot(), CommandResults(), time=0.0, plugins=runs)
    got = samples_of(collector, snap)
    assert got[("dtagent_plugin_success", ("10-backup",))] == 1
    for refused in ("20-fails", "30-hangs", "40-garbage", "50-own-name", "60-clash"):
        assert got[("dtagent_plugin_success", (refused,))] == 0, refused
    assert got[("backup_age_seconds", ("zones/a",))] == 3600  # 60-clash's value dropped
    assert got[("dtagent_plugin_duration_seconds", ("30-hangs",))] >= 0.5
    assert got[("dtagent_plugin_last_run_timestamp_seconds", ("10-backup",))] > 1.7e9
    assert not any(k[0] in ("illumos_zpool_health", "x", "hidden") for k in got)
    assert samples_of(collector, snap) == got  # the same snapshot, the same families


def test_a_hanging_plugin_does_not_hold_up_a_served_scrape(tmp_path: Path) -> None:
    """The real agent behind /metrics: a plugin that blocks until the test lets it go,
    and a textfile directory with an oversized file. The scrape is answered while the
    plugin is still blocked, with the plugin before it and the files that fit."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "backup.prom").write_text("site_backup_ok 1\n")
    (tmp_path / "t" / "huge.prom").write_text("site_huge 1\n" * 200)
    (tmp_path / "p").mkdir()
    plugin(tmp_path / "p", "10-ok", "echo 'site_up 1'\n")
    plugin(tmp_path / "p", "20-waits",
           f"touch {tmp_path / 'started'}\n"
           f"while [ ! -e {tmp_path / 'release'} ]; do sleep 0.05; done\n"
           "echo 'site_waited 1'\n")
    port = free_port()
    conf = tmp_path / "c.toml"
    conf.write_text(f'[agent]\nlisten = "127.0.0.1:{port}"\n'
                    f'[collectors.plugins]\ndirectory = "{tmp_path / "p"}"\n'
                    "interval = 120.0\ntimeout = 60.0\n"
                    f'[collectors.textfile]\ndirectory = "{tmp_path / "t"}"\nmax_bytes = 1000\n'
                    "[dtrace]\nenabled = false\n")
    serve = Serve(load(conf))
    try:
        serve.start()  # the plugins start running now
        wait_for(tmp_path / "started")
        with urllib.request.urlopen(serve.url, timeout=60) as resp:
            body = resp.read().decode()
        assert not (tmp_path / "release").exists()  # the plugin is still blocked
        assert 'dtagent_plugin_success{plugin="10-ok"} 1' in body
        assert "site_up 1" in body
        assert "20-waits" not in body and "site_waited" not in body
        assert 'dtagent_collector_success{collector="plugins"} 1' in body
        assert "site_backup_ok 1" in body and "site_huge" not in body
        assert "dtagent_textfile_scrape_error 1" in body
        assert 'dtagent_textfile_mtime_seconds{file="huge.prom"}' in body
    finally:
        (tmp_path / "release").touch()
    try:
        assert serve.runtime.agent.settle(60)
        got = {(f.name, tuple(lv)): v for f in serve.runtime.agent.collect(fresh=True)
               for lv, v in f.samples}
        assert got[("dtagent_plugin_success", ("20-waits",))] == 1
        assert got[("site_waited", ())] == 1
    finally:
        serve.stop()


def test_configured_through_the_config_file_and_stopped_with_the_agent(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    plugin(tmp_path / "p", "ok", "echo 'site_up 1'\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.plugins]\ndirectory = "{tmp_path / "p"}"\ninterval = 5.0\n'
                    "timeout = 2.0\n[dtrace]\nenabled = false\n")
    rt = build(load(conf))
    try:
        source = rt.agent.plugins
        assert isinstance(source, LivePlugins)
        assert rt.agent.settle(30)
        got = {f.name for f in rt.agent.collect(fresh=True)}
        assert "site_up" in got
        (runner,) = source._runners.values()
        assert runner.alive and runner.request == PluginRequest(str(tmp_path / "p"), 5.0, 2.0)
    finally:
        rt.close()
    assert not runner.alive
    bad = tmp_path / "bad.toml"
    bad.write_text('[collectors.plugins]\ninterval = "often"\n')
    try:
        load(bad)
    except ConfigError as exc:
        assert "collectors.plugins.interval" in str(exc)
    else:
        raise AssertionError("a bad interval was accepted")


def test_a_reload_retunes_or_stops_the_runner_the_collectors_declare(tmp_path: Path) -> None:
    plugin(tmp_path, "ok", "echo 'site_up 1'\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.plugins]\ndirectory = "{tmp_path}"\ninterval = 5.0\n'
                    "timeout = 2.0\n[dtrace]\nenabled = false\n")
    rt = build(load(conf))
    try:
        agent = rt.agent
        assert isinstance(agent.plugins, LivePlugins)
        agent.collect()
        (old,) = [c for c in agent.collectors if c.name == "plugins"]
        (runner,) = agent.plugins._runners.values()
        # new settings for the same directory: the same runner, retuned, runs kept
        fresh = PluginsCollector(directory=str(tmp_path), interval=7.0, timeout=2.0)
        agent.set_collectors([c for c in agent.collectors if c is not old] + [fresh])
        agent.collect(fresh=True)
        assert list(agent.plugins._runners.values()) == [runner]
        assert runner.request.interval == 7.0 and runner.alive
        # no collector declares the directory any more: its runner stops
        agent.set_collectors([c for c in agent.collectors if c is not fresh])
        agent.collect(fresh=True)
        assert agent.plugins._runners == {}
        runner.join(10)
        assert not runner.alive
    finally:
        rt.close()


def _operator_series(families: list[MetricFamily]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(f.name, tuple(lv)): v for f in families for lv, v in f.samples
            if f.name.startswith(("dtagent_plugin_", "dtagent_textfile_", "site_"))}


def test_a_capture_carries_plugin_runs_and_textfiles_into_its_replay(tmp_path: Path) -> None:
    """Captured with a plugin and a textfile directory; replayed with neither (and the
    directories gone): the same operator metrics, from the bundle. Each set is recorded
    in the first frame only, since neither changed."""
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    plugin(tmp_path / "p", "10-ok", "echo 'site_up{zone=\"web-01\"} 1'\n")
    plugin(tmp_path / "p", "20-fails", "exit 4\n")
    (tmp_path / "t" / "a.prom").write_text("site_backup_ok 1\n")
    (tmp_path / "t" / "b.prom").write_text("site_big 1\n" * 100)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.plugins]\ndirectory = "{tmp_path / "p"}"\n'
                    f'[collectors.textfile]\ndirectory = "{tmp_path / "t"}"\nmax_bytes = 100\n'
                    "[dtrace]\nenabled = false\n")
    bundle = tmp_path / "host.bundle"
    rt = build(load(conf))
    try:
        assert capture(rt, str(bundle), interval=0.0, count=3) == 3
        live = _operator_series(rt.agent.collect(fresh=True))
    finally:
        rt.close()
    assert live[("site_up", ("web-01",))] == 1 and live[("site_backup_ok", ())] == 1
    assert live[("dtagent_plugin_success", ("20-fails",))] == 0
    assert live[("dtagent_textfile_scrape_error", ())] == 1
    frames = read_bundle(bundle).frames
    assert [f.plugins is not None for f in frames] == [True, False, False]
    assert [f.textfiles is not None for f in frames] == [True, False, False]
    assert frames[0].plugins is not None
    assert [r.name for r in frames[0].plugins] == ["10-ok", "20-fails"]
    shutil.rmtree(tmp_path / "p")
    shutil.rmtree(tmp_path / "t")
    config = load(None)
    config.set("sources", "replay", str(bundle))
    config.set("dtrace", "enabled", False)
    replay = build(config, replay_frame=-1)
    try:
        assert not isinstance(replay.agent.plugins, LivePlugins)
        assert _operator_series(replay.agent.collect()) == live
    finally:
        replay.close()
    # what plugins and textfiles printed is anonymized as the command output is
    anon = Anonymizer(key=b"k")
    anon.learn([], hostnames=["web-01"])
    out = anon.frame(frames[0])
    assert out.plugins is not None and out.textfiles is not None
    assert "web-01" not in out.plugins[0].stdout
    assert anon.mapping["web-01"] in out.plugins[0].stdout


OUTPUT = st.text(st.sampled_from("abc_{}=\"\\ #\n1.e+-\t,xTYPE"), max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-9, 255), OUTPUT,
                          st.none() | OUTPUT), max_size=4))
def test_no_plugin_output_makes_the_collector_raise(
    runs: list[tuple[str, int, str, str | None]],
) -> None:
    collector = PluginsCollector(directory="/p")
    by_name = {name: PluginRun(name, rc, out, error=err) for name, rc, out, err in runs}
    snap = HostSnapshot(KstatSnapshot(), CommandResults(), time=0.0,
                        plugins={collector.request: tuple(by_name.values())})
    got = samples_of(collector, snap)  # raises nothing, and never a series twice
    for run in by_name.values():
        if not run.ok:
            assert got[("dtagent_plugin_success", (run.name,))] == 0
