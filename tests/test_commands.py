"""The command source: every run bounded by its deadline, output capped while read, a
fixed environment, no shell; runs scheduled off the scrape path; old results dropped and
reported; replay answering through the same interface.

The stand-ins are small shell scripts written by each test: one that leaves a
grandchild (``setsid sleep 30 &``) holding its pipes, one that writes 1 GB, one that
prints its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import structlog

from dtagent.agent import Agent
from dtagent.bundle import Frame, read_bundle, write_bundle
from dtagent.capture import FrameRecorder
from dtagent.collectors.base import Collector, Families
from dtagent.exposition import render
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import CommandRequest, CommandResult, HostSnapshot, KstatSnapshot
from dtagent.sources.commands import CommandRunner, execute
from dtagent.sources.replay import ReplaySource
from tests.helpers import REPO
from tests.test_zone_support import parse_text, value

SYSTEM_PATH = "/usr/bin:/bin"


def stand_in(directory: Path, name: str, body: str) -> Path:
    """An executable shell script ``name`` in ``directory``."""
    directory.mkdir(exist_ok=True)
    exe = directory / name
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    exe.chmod(0o755)
    return exe


def path_of(directory: Path) -> str:
    return f"{directory}{os.pathsep}{SYSTEM_PATH}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_grandchild_holding_the_pipes_does_not_hold_the_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    body = f"setsid sleep 30 &\necho $! > {pidfile}\necho partial\nexec sleep 1000\n"
    stand_in(tmp_path / "bin", "vmadm", body)
    started = time.monotonic()
    res = execute(("vmadm", "list"), timeout=1.0, path=path_of(tmp_path / "bin"))
    elapsed = time.monotonic() - started
    sleeper = int(pidfile.read_text())
    try:
        assert elapsed < 1.5, elapsed  # the deadline, not the grandchild's 30 s
        assert not res.ok and res.error == "timed out after 1s" and res.returncode == -9
        assert res.stdout == "partial\n"
        assert _alive(sleeper)  # it left the process group: nothing waited for it
    finally:
        os.kill(sleeper, 9)


def test_a_child_that_exits_is_done_though_a_grandchild_keeps_the_pipes(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "sleeper.pid"
    body = f"setsid sleep 30 &\necho $! > {pidfile}\necho ok\nexit 0\n"
    stand_in(tmp_path / "bin", "zoneadm", body)
    started = time.monotonic()
    res = execute(("zoneadm", "list"), timeout=5.0, path=path_of(tmp_path / "bin"))
    os.kill(int(pidfile.read_text()), 9)
    assert time.monotonic() - started < 1.0
    assert res.ok and res.stdout == "ok\n"


def test_the_whole_process_group_is_killed_at_the_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    stand_in(tmp_path / "bin", "zfs", f"sleep 30 &\necho $! > {pidfile}\nwait\n")
    res = execute(("zfs", "list"), timeout=0.5, path=path_of(tmp_path / "bin"))
    assert res.error == "timed out after 0.5s"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


# Run in a child interpreter so that the peak RSS measured is the runner's alone.
_ONE_GB = """
import json, resource, sys, time
from dtagent.sources.commands import execute
started = time.monotonic()
res = execute(("zfs", "list"), timeout=60, path=sys.argv[1])
print(json.dumps({"elapsed": time.monotonic() - started, "error": res.error,
                  "truncated": res.truncated, "stdout": len(res.stdout),
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_output_is_capped_while_it_is_read(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "zfs", "exec head -c 1073741824 /dev/zero\n")
    out = subprocess.run(
        [sys.executable, "-c", _ONE_GB, path_of(tmp_path / "bin")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    got = json.loads(out.stdout)
    assert got["truncated"] and "output passed 16777216 bytes" in got["error"], got
    assert got["stdout"] == 16 * 1024 * 1024
    # the 1 GB was never held: reading stopped at the 16 MiB cap
    assert got["peak_kib"] < 200 * 1024, got
    assert got["elapsed"] < 10, got


def test_fixed_environment_and_no_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("SECRET_TOKEN", "x")
    stand_in(tmp_path / "bin", "svcs", 'env | sort\nprintf "%s|" "$@"\n')
    argv = ("svcs", "-a", f"$(touch {tmp_path}/pwned); echo")
    res = execute(argv, timeout=5, path=path_of(tmp_path / "bin"))
    lines = res.stdout.splitlines()
    env = dict(line.split("=", 1) for line in lines[:-1] if "=" in line)
    assert env["LC_ALL"] == "C" and env["LANG"] == "C"
    assert env["PATH"] == path_of(tmp_path / "bin")
    assert "SECRET_TOKEN" not in env
    assert lines[-1] == f"-a|$(touch {tmp_path}/pwned); echo|"  # one argument each
    assert not (tmp_path / "pwned").exists()


def test_a_command_not_installed(tmp_path: Path) -> None:
    res = execute(("vmadm", "list"), timeout=1, path=str(tmp_path))
    assert res.returncode == 127 and "not found" in str(res.error)


def test_the_fallback_runs_when_the_first_is_not_installed(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "zoneadm", "echo zoneadm-out\n")
    runner = CommandRunner(path_of(tmp_path / "bin"))
    req = CommandRequest(("vmadm", "list"), refresh=60, fallbacks=(("zoneadm", "list"),))
    runner.results([req])
    assert runner.settle(5)
    res = runner.results([req]).get(("vmadm", "list"))
    runner.close()
    assert res is not None and res.ok
    assert (res.argv, res.stdout) == (("zoneadm", "list"), "zoneadm-out\n")


def test_schedule_refresh_generation_and_forgetting(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    stand_in(tmp_path / "bin", "dladm", f'echo "$@" >> {log}\necho "$@"\n')
    now = [1000.0]
    runner = CommandRunner(path_of(tmp_path / "bin"), clock=lambda: now[0])

    def ask(*requests: CommandRequest) -> None:
        runner.results(list(requests))
        assert runner.settle(5)

    def runs() -> list[str]:
        return log.read_text().splitlines()

    zone_a = CommandRequest(("dladm", "a"), refresh=300, generation=5)
    zone_b = CommandRequest(("dladm", "b"), refresh=300, generation=6)
    ask(zone_a, zone_b)
    assert sorted(runs()) == ["a", "b"]
    now[0] += 299
    ask(zone_a, zone_b)
    assert len(runs()) == 2  # not due yet
    # zone a rebooted (a new zone id): its command runs at once, b's does not
    zone_a = CommandRequest(("dladm", "a"), refresh=300, generation=9)
    ask(zone_a, zone_b)
    assert runs()[2:] == ["a"]
    now[0] += 1
    ask(zone_a, zone_b)
    assert runs()[3:] == ["b"]  # b's 300 s are up
    # zone b halted: its request is gone, and so is its result
    view = runner.results([zone_a])
    runner.close()
    assert view.get(("dladm", "b")) is None and view.get(("dladm", "a")) is not None


def test_at_most_workers_commands_run_at_once(tmp_path: Path) -> None:
    log = tmp_path / "live.log"
    body = f"echo start >> {log}\nsleep 0.3\necho end >> {log}\n"
    stand_in(tmp_path / "bin", "dladm", body)
    runner = CommandRunner(path_of(tmp_path / "bin"), workers=2)
    requests = [CommandRequest(("dladm", str(i)), refresh=60) for i in range(6)]
    runner.results(requests)
    assert runner.settle(10)
    view = runner.results(requests)
    runner.close()
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert len(view) == 6 and all(r.ok for r in view)


def test_an_old_result_is_dropped_not_served(tmp_path: Path) -> None:
    mode = tmp_path / "mode"
    mode.write_text("ok")
    body = f'[ "$(cat {mode})" = ok ] || {{ echo broken >&2; exit 1; }}\necho fresh\n'
    stand_in(tmp_path / "bin", "zfs", body)
    now = [0.0]
    runner = CommandRunner(path_of(tmp_path / "bin"), clock=lambda: now[0])
    req = CommandRequest(("zfs", "list"), refresh=60, timeout=5)  # limit: 125 s

    def at(t: float) -> tuple[CommandResult | None, object]:
        now[0] = t
        runner.results([req])
        assert runner.settle(5)
        view = runner.results([req])
        return view.get(("zfs", "list")), view.status

    at(0.0)
    mode.write_text("fail")
    res, _ = at(100.0)  # the run fails; the good result is still young enough
    assert res is not None and res.ok and res.stdout == "fresh\n" and res.age == 100.0
    res, status = at(126.0)  # no run due (the failed one is retried after 30 s)
    runner.close()
    assert res is not None and not res.ok and res.stdout == ""
    assert res.error == "the latest good result is 126 s old (older than its limit of 125 s)"
    assert [(s.command, s.age, s.limit, s.runs, s.failures) for s in status] == [  # type: ignore[attr-defined]
        ("zfs list", 126.0, 125.0, 2, 1)
    ]


class _Inventory(Collector):
    """A collector that reads one command."""

    name = "inventory"
    specs = (MetricSpec("test_inventory_lines", "gauge", "Lines of output.", ()),)

    def commands(self, kstats: KstatSnapshot) -> list[CommandRequest]:
        return [CommandRequest(("vmadm", "list"), refresh=300, timeout=1.0)]

    def collect(self, snap: HostSnapshot) -> list[MetricFamily]:
        fams = Families(self.specs)
        res = snap.commands.get(("vmadm", "list"))
        if res is not None and res.ok:
            fams["test_inventory_lines"].add((), len(res.stdout.splitlines()))
        return fams.all()


class _NoKstats:
    def kstats(self) -> KstatSnapshot:
        return KstatSnapshot(time=1.0)


def test_a_hanging_command_never_holds_a_scrape(tmp_path: Path) -> None:
    """Scrapes answer at once while the hung child runs; then the failure is reported."""
    pidfile = tmp_path / "sleeper.pid"
    body = f"setsid sleep 30 &\necho $! > {pidfile}\nsleep 1000\n"
    stand_in(tmp_path / "bin", "vmadm", body)
    runner = CommandRunner(path_of(tmp_path / "bin"))
    agent = Agent([_Inventory()], _NoKstats(), runner, illumos=True, reuse_within=0)
    timings: list[float] = []
    text = ""
    try:
        deadline = time.monotonic() + 2.0  # the command's 1 s timeout and a margin
        while time.monotonic() < deadline:
            started = time.monotonic()
            text = render(agent.collect()).decode()
            timings.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        runner.close()
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)
    assert max(timings) < 0.5, timings
    s = parse_text(text)
    assert value(s, "dtagent_command_failures_total", command="vmadm list") == 1
    assert value(s, "dtagent_command_runs_total", command="vmadm list") == 1
    assert value(s, "dtagent_collector_success", collector="inventory") == 1
    assert "test_inventory_lines" not in text


def test_run_now_is_bounded_and_counted(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "prctl", "sleep 30\n")
    runner = CommandRunner(path_of(tmp_path / "bin"))
    started = time.monotonic()
    res = runner.run_now(("prctl", "-n", "zone.cpu-cap"), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert res.error == "timed out after 0.5s"
    (status,) = runner.results([CommandRequest(("prctl", "-n"), refresh=60)]).status
    assert (status.command, status.runs, status.failures) == ("prctl -n", 1, 1)
    runner.close()


def test_stdin_is_fed_to_the_command(tmp_path: Path) -> None:
    """What run_now writes reaches the child whole (vmadm update reads JSON there), and
    a child that answers with more than a pipe holds before reading does not deadlock."""
    stand_in(tmp_path / "bin", "vmadm", "head -c 300000 /dev/zero | tr '\\0' x; cat\n")
    payload = json.dumps({"cpu_cap": 100, "pad": "y" * 200_000}).encode()
    runner = CommandRunner(path_of(tmp_path / "bin"))
    res = runner.run_now(("vmadm", "update", "z"), timeout=10, stdin=payload)
    assert res.ok, res.error
    assert res.stdout == "x" * 300_000 + payload.decode()
    runner.close()


def test_stdin_a_command_never_reads_is_bounded_by_the_deadline(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "vmadm", "sleep 30\n")
    started = time.monotonic()
    res = execute(("vmadm", "update"), timeout=0.5, path=path_of(tmp_path / "bin"),
                  stdin=b"z" * 1_000_000)  # fmt: skip
    assert time.monotonic() - started < 1.5
    assert res.error == "timed out after 0.5s"


def test_without_stdin_the_command_reads_end_of_file(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "vmadm", "cat; echo done\n")
    res = execute(("vmadm",), timeout=5, path=path_of(tmp_path / "bin"))
    assert (res.returncode, res.stdout) == (0, "done\n")


def test_replay_serves_recorded_results_through_the_same_interface(tmp_path: Path) -> None:
    argv = ("vmadm", "list")
    frames = [
        Frame(time=100.0, commands=[CommandResult(argv, 0, "one\n")]),
        Frame(time=200.0),
        Frame(time=300.0),
    ]
    path = tmp_path / "r.bundle"
    write_bundle(path, frames)
    req = CommandRequest(argv, refresh=60, timeout=5)  # limit: 125 s
    served = []
    for frame in range(3):
        res = ReplaySource(read_bundle(path), pin=frame).results([req]).get(argv)
        assert res is not None
        served.append((res.ok, res.stdout, res.age))
    assert served == [(True, "one\n", 0.0), (True, "one\n", 100.0), (False, "", 200.0)]


def test_capture_records_each_result_once(tmp_path: Path) -> None:
    """The recording hook: a frame carries the results that are new since the last."""
    stand_in(tmp_path / "bin", "vmadm", "echo z1\n")
    runner = CommandRunner(path_of(tmp_path / "bin"))
    agent = Agent([_Inventory()], _NoKstats(), runner, illumos=True, reuse_within=0)
    recorder = FrameRecorder()
    agent.observe(lambda snap: recorder(snap, []))
    assert agent.settle(5)
    frames = []
    for _ in range(2):
        agent.collect()
        assert recorder.last is not None
        frames.append(recorder.last)
    runner.close()
    assert [len(f.commands) for f in frames] == [1, 0]
    assert frames[0].commands[0].stdout == "z1\n"


def test_settle_gives_up_at_its_wait(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "vmadm", "sleep 30\n")
    runner = CommandRunner(path_of(tmp_path / "bin"))
    runner.results([CommandRequest(("vmadm", "list"), refresh=60, timeout=2)])
    started = time.monotonic()
    assert not runner.settle(0.3)
    assert time.monotonic() - started < 1.0
    runner.close()


def test_a_bad_request_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty tuple"):
        CommandRequest((), refresh=1)
    with pytest.raises(ValueError, match="timeout > 0"):
        CommandRequest(("zfs",), refresh=1, timeout=0)


def test_logged_when_it_starts_failing_and_when_it_recovers(tmp_path: Path) -> None:
    mode = tmp_path / "mode"
    mode.write_text("fail")
    stand_in(tmp_path / "bin", "zfs", f'[ "$(cat {mode})" = ok ] || exit 3\necho ok\n')
    now = [0.0]
    runner = CommandRunner(path_of(tmp_path / "bin"), clock=lambda: now[0])
    req = CommandRequest(("zfs", "list"), refresh=10)
    with structlog.testing.capture_logs() as logs:
        for step in range(4):
            if step == 3:
                mode.write_text("ok")
            now[0] += 10
            runner.results([req])
            assert runner.settle(5)
    runner.close()
    events = [e["event"] for e in logs if e["event"].startswith("command")]
    assert events == ["command failed", "command recovered"]


def _result(argv: tuple[str, ...], finished: float, rc: int = 0) -> CommandResult:
    return CommandResult(argv, rc, stdout="", finished=finished)


def test_the_queue_gives_the_earliest_due_first_and_drops_stale_items() -> None:
    from dtagent.sources.commands import _DueQueue, _Entry

    entries: dict[tuple[str, ...], _Entry] = {}

    def entry(name: str, refresh: float, finished: float | None) -> _Entry:
        argv = ("dladm", name)
        e = entries[argv] = _Entry(CommandRequest(argv, refresh=refresh))
        if finished is not None:
            e.last = _result(argv, finished)
        return e

    queue = _DueQueue()
    for e in (entry("slow", 300, 100.0), entry("fast", 10, 350.0), entry("new", 60, None)):
        queue.push(e)
    assert queue.pop_due(entries, 0.0)[0] is entries["dladm", "new"]  # never ran: at once
    # nothing else due before 360 (fast) and 400 (slow); the wait says when
    assert queue.pop_due(entries, 355.0) == (None, 5.0)
    assert queue.pop_due(entries, 500.0)[0] is entries["dladm", "fast"]
    # slow's request changed (a zone rebooted): its older item is stale, the new one due
    slow = entries["dladm", "slow"]
    slow.request = CommandRequest(slow.request.argv, refresh=300, generation=7)
    queue.push(slow)
    assert len(queue) == 2
    assert queue.pop_due(entries, 101.0)[0] is slow
    assert queue.pop_due(entries, 10_000.0) == (None, 60.0)  # the stale item went too
    assert len(queue) == 0
    # a gone entry's items are dropped, and compact() keeps the heap near the entries
    for _ in range(200):
        queue.push(entries["dladm", "fast"])
    assert len(queue) == 200
    queue.compact(entries)
    assert len(queue) == 1


def test_a_request_that_changes_while_it_runs_runs_again_when_it_ends(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    started = tmp_path / "started"
    stand_in(tmp_path / "bin", "dladm",
             f'echo "$@" >> {log}\ntouch {started}\nsleep 0.5\necho "$@"\n')
    now = [1000.0]
    runner = CommandRunner(path_of(tmp_path / "bin"), workers=1, clock=lambda: now[0])
    before = CommandRequest(("dladm", "a"), refresh=300, generation=1)
    runner.results([before])
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.exists()
    # the zone rebooted while its first run was still going: the next runs at once
    runner.results([CommandRequest(("dladm", "a"), refresh=300, generation=2)])
    assert runner.settle(10)
    runner.close()
    assert log.read_text().splitlines() == ["a", "a"]
