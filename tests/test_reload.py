"""Reloading in place (SIGHUP, `svcadm refresh`) and stopping (SIGTERM), while DTrace
histograms accumulate through the libdtrace stand-in: counters never go down, a bad
config is refused with one log line and the old one stays, the worker is restarted only
when a script it runs changed, and a stop ends the worker with its last walk."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dtagent import log as logsetup
from dtagent.config import load
from dtagent.serve import Serve
from dtagent.snapshot import Kstat
from tests.helpers import REPO, free_port, wait_http, wait_until
from tests.native import build_shared
from tests.native.dtrace_stub import Scenario
from tests.native.dtrace_stub import library as libdtrace
from tests.native.kstat_stub import load_kstats, open_stub

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"
SHIPPED_OFF = ", ".join(f"{p.stem} = false" for p in sorted((REPO / "scripts" / "d").glob("*.d"))
                        if p.stem.count(".") == 0)
WEB = "web"


def scenario(ticks: int = 600) -> str:
    """Every tick: one read call and one 1.5 us latency in zone 3, one sample in zone 3."""
    out = ["matches stub:every 5", "matches stub:other 2", "run *"]
    for t in range(1, ticks + 1):
        out += [f"tick {t}",
                "rec stub:every calls count | z:3 s:read | 0",
                "rec stub:every lat llquantize 10 3 9 10 | z:3 | 1499",
                "rec stub:every lat_sum sum | z:3 | 1500",
                "rec stub:other samples count | z:3 | 0"]
    return "\n".join(out) + "\n"


def config_text(port: int, *, other: bool = False, extra: str = "",
                collectors: str = '["host"]') -> str:
    return (
        f'[agent]\nlisten = "127.0.0.1:{port}"\nlog_format = "json"\n'
        "[sources]\n"
        'platform = "illumos"\n'
        f"libkstat = {json.dumps(str(build_shared('libkstat_stub.c')))}\n"
        'command_path = "/nonexistent"\n'
        f"[collectors]\nenabled = {collectors}\n"
        "[dtrace]\n"
        f"libdtrace = {json.dumps(str(libdtrace()))}\n"
        f"script_dirs = [{json.dumps(str(FIXTURES))}]\n"
        f"scripts = {{ {SHIPPED_OFF}, broken = false, optional = false, "
        f"other = {'true' if other else 'false'} }}\n" + extra
    )


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("test_", "dtagent_dtrace_worker_restarts_total")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


CALLS = 'test_syscalls_total{zonename="web",syscall="read"}'
LAT_COUNT = 'test_syscall_latency_seconds_count{zonename="web"}'
SAMPLES = 'test_cpu_samples_total{zonename="web"}'


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, io.StringIO]]:
    lib = open_stub()
    lib.stub_reset()
    load_kstats(lib, [Kstat("zones", 0, "global", "zone_misc", data={"zonename": "global"}),
                      Kstat("zones", 3, WEB, "zone_misc", data={"zonename": WEB})])
    Scenario(tmp_path).write(scenario()).apply(monkeypatch)
    logs = io.StringIO()
    logsetup.setup("info", "json", stream=logs)
    try:
        yield tmp_path / "dtagent.toml", logs
    finally:
        lib.stub_reset()
        logsetup.setup("info", "auto")


def _log_lines(logs: io.StringIO, event: str) -> list[dict[str, object]]:
    return [rec for rec in map(json.loads, logs.getvalue().splitlines())
            if rec.get("event") == event]


def test_reloads_keep_counters_refuse_bad_configs_and_stop_cleanly(
    live: tuple[Path, io.StringIO],
) -> None:
    cfg, logs = live
    port = free_port()
    cfg.write_text(config_text(port))
    serve = Serve(load(cfg), load=lambda: load(cfg))
    seen: list[dict[str, float]] = []

    def until(cond: str, check: object, timeout: float = 60) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = scrape(f"http://127.0.0.1:{port}/metrics")
            seen.append(got)
            if check(got):  # type: ignore[operator]
                return got
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {cond}: {seen[-1:]}")

    try:
        serve.start()
        first = until("histograms", lambda g: g.get(LAT_COUNT, 0) >= 3)
        pid = serve.runtime.agent.dtrace.supervisor.worker_pid()
        assert pid is not None

        # a change that does not touch the D scripts: the worker keeps running
        cfg.write_text(config_text(port, collectors='["host", "zone_cpu"]',
                                   extra="").replace('"json"', '"json"\nlog_level = "info"'))
        assert serve.handle(signal.SIGHUP) is False
        assert [c.name for c in serve.runtime.agent.collectors] == ["host", "zone_cpu"]
        assert serve.runtime.agent.dtrace.supervisor.worker_pid() == pid
        until("more calls", lambda g: g.get(CALLS, 0) > first[CALLS])

        # a bad config: refused with one line naming the key, nothing changes
        good = serve.state.config
        cfg.write_text(config_text(port, other=True, extra="series_cap = -1\n"))
        assert serve.handle(signal.SIGHUP) is False
        refused = _log_lines(logs, "config reload refused; the running config stays")
        assert len(refused) == 1 and "dtrace.series_cap" in str(refused[0]["problem"])
        assert serve.state.config is good
        assert serve.runtime.agent.dtrace.supervisor.worker_pid() == pid

        # a script turned on: the running worker starts it beside the others (which
        # keep their handles), the counters go on
        cfg.write_text(config_text(port, other=True))
        before = until("calls", lambda g: CALLS in g)
        assert serve.handle(signal.SIGHUP) is False
        after = until("the new script's samples and more calls",
                      lambda g: g.get(SAMPLES, 0) >= 2 and g.get(CALLS, 0) > before[CALLS])
        assert serve.runtime.agent.dtrace.supervisor.worker_pid() == pid
        assert after.get("dtagent_dtrace_worker_restarts_total", 0) == 0

        # a new listen address: the server moves, the old one closes
        new_port = free_port()
        cfg.write_text(config_text(new_port, other=True))
        assert serve.handle(signal.SIGHUP) is False
        port_before, port = port, new_port
        until("the new address", lambda g: g.get(CALLS, 0) > after[CALLS])
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port_before}/metrics", timeout=2)

        reloaded = _log_lines(logs, "config reloaded")
        assert len(reloaded) == 3
        assert "collectors.enabled" in str(reloaded[0]["changed"])
        assert "D scripts restarted: other" in str(reloaded[1]["changed"])
        assert "D scripts kept running: every" in str(reloaded[1]["changed"])
        assert "agent.listen" in str(reloaded[2]["changed"])

        # SIGUSR1 and friends are logged, nothing else
        assert serve.handle(signal.SIGUSR1) is False
        assert _log_lines(logs, "signal ignored")[0]["signal"] == "SIGUSR1"

        worker = serve.runtime.agent.dtrace.supervisor.worker_pid()
        assert serve.handle(signal.SIGTERM) is True
    finally:
        serve.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert _log_lines(logs, "stopped")[0]["reloads"] == 3
    # counters never went down, across every reload and the restart
    for key in (CALLS, LAT_COUNT, SAMPLES):
        values = [s[key] for s in seen if key in s]
        assert values == sorted(values), key
    assert seen[-1][CALLS] > first[CALLS]


def test_signals_reach_the_process_as_smf_sends_them(tmp_path: Path) -> None:
    """The real main loop: SIGHUP good and bad, SIGUSR1 and SIGQUIT, then SIGTERM while
    the DTrace worker runs (it stops tracing, as the stand-in's call log shows)."""
    sc = Scenario(tmp_path).write(scenario(200))
    port = free_port()
    cfg = tmp_path / "dtagent.toml"
    cfg.write_text(config_text(port))
    proc = subprocess.Popen([sys.executable, "-m", "dtagent", "serve", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(sc.env(), PYTHONPATH=str(REPO)))
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))
    reader.start()

    def logged(event: str, count: int = 1) -> Callable[[], bool]:
        return lambda: sum(f'"event": "{event}' in line for line in lines) >= count

    try:
        wait_http(f"http://127.0.0.1:{port}/metrics")
        wait_until("the worker's go", lambda: any(c.startswith("go ") for c in sc.calls()))
        # each signal waits for the agent's log line of the one before it: a second
        # SIGHUP sent before the first was handled would read the second config twice
        cfg.write_text(config_text(port, extra="hang_timeout = -5\n"))
        proc.send_signal(signal.SIGHUP)
        wait_until("the bad config refused", logged("config reload refused"))
        cfg.write_text(config_text(port, extra="hang_timeout = 20.0\n"))
        proc.send_signal(signal.SIGHUP)
        wait_until("the good config reloaded", logged("config reloaded"))
        for n, sig in enumerate((signal.SIGUSR1, signal.SIGQUIT), start=1):
            proc.send_signal(sig)
            wait_until(f"{sig.name} logged", logged("signal ignored", n))
        assert proc.poll() is None, "a signal killed the agent"
        wait_http(f"http://127.0.0.1:{port}/metrics")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert took < 30  # the manifest's stop timeout
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    refused = [e for e in events if e["event"].startswith("config reload refused")]
    assert len(refused) == 1 and "dtrace.hang_timeout" in str(refused[0]["problem"])
    assert [e["changed"] for e in events if e["event"] == "config reloaded"] == [
        ["dtrace.hang_timeout: 15.0 -> 20.0"]]
    assert [e["signal"] for e in events if e["event"] == "signal ignored"] == [
        "SIGUSR1", "SIGQUIT"]
    assert names[-2:] == ["stopping", "stopped"] or names.index("stopped") > names.index(
        "stopping")
    # the worker stopped tracing and walked once more before closing the handle
    calls = sc.calls()
    assert calls[-1] == "close"
    assert "walk n=3" in calls[calls.index("stop"):]


# The agent as `python -m dtagent serve` runs it, except that the main thread blocks
# SIGHUP and SIGTERM first: the kernel then hands each one to the one thread that does
# not block them (a parked thread, as the agent's own threads are), never to the
# main thread, which waits for them.
OTHER_THREAD = """
import signal, sys, threading
threading.Thread(target=threading.Event().wait, daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM})
from dtagent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_that_reaches_another_thread_still_wakes_the_main_loop(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = tmp_path / "dtagent.toml"
    cfg.write_text(f'[agent]\nlisten = "127.0.0.1:{port}"\nlog_format = "json"\n')
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", OTHER_THREAD, "serve", "--config",
                                 str(cfg)], stdout=subprocess.DEVNULL, stderr=out, cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))

    def events() -> list[str]:
        return [json.loads(line)["event"] for line in log_path.read_text().splitlines()
                if line.startswith("{")]

    try:
        wait_http(f"http://127.0.0.1:{port}/metrics")
        cfg.write_text(cfg.read_text() + 'log_level = "info"\n')
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "config reloaded" not in events() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "config reloaded" in events(), "the SIGHUP was not acted on"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert events()[-2:] == ["stopping", "stopped"]


def test_a_reload_passes_the_new_command_env_to_the_agents_commands(
    live: tuple[Path, io.StringIO], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sources.command_env names the variables the agent's commands get; a reload that
    changes it takes effect for the next command, and the log line says so."""
    cfg, logs = live
    monkeypatch.setenv("DTAGENT_TEST_ZONE_HINT", "from-the-environment")
    port = free_port()
    cfg.write_text(config_text(port).replace("[dtrace]\n", "[dtrace]\nenabled = false\n"))
    serve = Serve(load(cfg), load=lambda: load(cfg))
    env = ["/usr/bin/env"]
    try:
        before = serve.runtime.runner.run_now(env, timeout=10)
        assert before.ok and "DTAGENT_TEST_ZONE_HINT" not in before.stdout
        cfg.write_text(cfg.read_text().replace(
            'command_path = "/nonexistent"\n',
            'command_path = "/nonexistent"\ncommand_env = ["DTAGENT_TEST_ZONE_HINT"]\n'))
        assert serve.reloader.reload() is True
        after = serve.runtime.runner.run_now(env, timeout=10)
        assert after.ok
        assert "DTAGENT_TEST_ZONE_HINT=from-the-environment\n" in after.stdout
        [line] = _log_lines(logs, "config reloaded")
        assert "sources.command_env: [] -> ['DTAGENT_TEST_ZONE_HINT']" in str(line["changed"])
    finally:
        serve.stop()
