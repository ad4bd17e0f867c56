"""Small helpers shared by tests: free ports, running the CLI, waiting for HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dtagent.collectors.base import Collector
from dtagent.snapshot import (
    CommandRequest,
    CommandResult,
    CommandResults,
    CommandSource,
    HostSnapshot,
    Kstat,
    KstatSnapshot,
)
from dtagent.sources.commands import CommandRunner, NoCommands

REPO = Path(__file__).resolve().parent.parent
FAKEBIN = REPO / "tests" / "fakebin"


def _stand_in_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("DTAGENT_FAKE_")}


_RUNNERS: list[CommandRunner] = []


def stand_in_runner(path: str | Path = FAKEBIN, **kw: object) -> CommandRunner:
    """The real command runner on the stand-ins in ``path`` (then /usr/bin:/bin, which
    the stand-ins themselves use). The agent gives commands a fixed environment, so
    the DTAGENT_FAKE_* settings a test sets are passed on explicitly, read at each run.
    It is closed when the test ends (tests/conftest.py), so its background threads
    never run a command into the next test's stand-in directory."""
    search = str(path)
    if "/usr/bin" not in search.split(os.pathsep):
        search += os.pathsep + "/usr/bin:/bin"
    runner = CommandRunner(search, extra_env=_stand_in_settings, **kw)  # type: ignore[arg-type]
    _RUNNERS.append(runner)
    return runner


def close_stand_in_runners() -> None:
    while _RUNNERS:
        _RUNNERS.pop().close()


def installed_env(**extra: str) -> dict[str, str]:
    """The environment for a freshly installed copy: this one without PYTHONPATH, which
    would put a source checkout (and the egg-info a build leaves in it) before the
    installed package, so pip would take the checkout for the installed distribution."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dtagent(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "dtagent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def start_dtagent(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dtagent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def wait_until(
    what: str, cond: Callable[[], bool], timeout: float = 30, poll: float = 0.01
) -> None:
    """Poll ``cond`` until it holds: a test waits for the state it needs, never a fixed
    time; ``timeout`` only bounds a test whose condition never comes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def spawn_logged(
    argv: Sequence[str], log: Path, procs: list[subprocess.Popen[bytes]],
    env: dict[str, str] | None = None,
) -> None:
    """Start a server process (Prometheus, Alertmanager, an agent) in ``log``'s directory,
    its output into ``log``; it joins ``procs`` for :func:`stop_processes`."""
    with log.open("wb") as out:
        procs.append(subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
            env=env if env is not None else dict(os.environ, PYTHONPATH=str(REPO)),
        ))


def spawn_listening(
    what: str, argv: Callable[[int], Sequence[str]], log: Path,
    procs: list[subprocess.Popen[bytes]], ready: str = "/-/ready",
    env: dict[str, str] | None = None, attempts: int = 3,
) -> int:
    """Start a server (``argv(port)``) on a free port and wait until it answers
    ``ready``; the port it listens on. Between :func:`free_port` and the server's bind
    another process may take the port (test suites running side by side): a server that
    exits instead of answering is started again on another port."""
    for _ in range(attempts):
        port = free_port()
        spawn_logged(argv(port), log, procs, env)
        proc = procs[-1]
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=5):
                    pass
            except OSError:  # not listening yet, or another process's answer
                time.sleep(0.1)
                continue
            if proc.poll() is None:
                return port
        if proc.poll() is None:
            raise AssertionError(f"{what} did not answer on port {port} (see {log})")
    raise AssertionError(f"{what} exited {attempts} times without listening (see {log})")


def stop_processes(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then wait for each (SIGKILL one that takes over 10 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return bytes(resp.read())
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer: {last}")


class Answers:
    """A command source that answers every request with ``answer(argv)`` (exit 0)."""

    def __init__(self, answer: Callable[[tuple[str, ...]], str]) -> None:
        self.answer = answer

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        def latest(req: CommandRequest) -> tuple[CommandResult, CommandResult]:
            res = CommandResult(req.argv, 0, self.answer(req.argv))
            return res, res

        return CommandResults.select(requests, latest, 0.0)

    def settle(self, timeout: float) -> bool:
        return True


def command_results(
    collectors: Iterable[Collector],
    kstats: KstatSnapshot,
    source: CommandSource,
    timeout: float = 30.0,
) -> CommandResults:
    """The results ``source`` has for the collectors' requests once it has run them all
    (a live runner runs them in the background: this waits, as a scrape never does)."""
    requests = [r for c in collectors for r in c.commands(kstats)]
    source.results(requests)
    assert source.settle(timeout), "the commands did not finish"
    return source.results(requests)


Samples = dict[tuple[str, tuple[str, ...]], float]


def samples_of(collector: Collector, snap: HostSnapshot) -> Samples:
    """(metric, label values) -> value of one collection; a series twice fails."""
    out: Samples = {}
    for fam in collector.collect(snap):
        for labels, value in fam.samples:
            key = (fam.name, tuple(labels))
            assert key not in out, f"duplicate series {key}"
            out[key] = value
    return out


def snapshot_of(
    collectors: Iterable[Collector],
    kstats: Iterable[Kstat],
    commands: CommandSource | None = None,
    time: float = 0.0,
) -> HostSnapshot:
    """A snapshot of ``kstats`` with the results of the collectors' commands, run to the
    end by ``commands`` (none by default)."""
    snap = KstatSnapshot(kstats, time=time)
    results = command_results(collectors, snap, commands or NoCommands())
    return HostSnapshot(snap, results, time=time)


def collected(
    collector: Collector, kstats: Iterable[Kstat], commands: CommandSource | None = None
) -> Samples:
    """One collection of ``kstats`` (and ``commands``: none by default)."""
    return samples_of(collector, snapshot_of([collector], kstats, commands))


def per_key_objects(obj: object) -> list[Any]:
    """A DTrace worker line's JSON object as one-key record objects (a batched record
    becomes one ``{"key": ..., "value"/"buckets": ...}`` per key; any other record stays
    as it is), so a test can look for one key's delta."""
    from dtagent.dtrace.records import Invalid, parse, per_key, to_json

    rec = parse(obj)
    if isinstance(rec, Invalid):
        return [obj]
    return [to_json(r) for r in per_key(rec)]


def worker_records(lines: Iterable[str]) -> list[Any]:
    """Every record of the worker's output lines, one per key (:func:`per_key_objects`)."""
    import json

    return [o for line in lines if line.strip() for o in per_key_objects(json.loads(line))]
