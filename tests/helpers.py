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

from dtagent.collectors.base import Collector
from dtagent.snapshot import (
    CommandResult,
    CommandSource,
    HostSnapshot,
    Kstat,
    KstatSnapshot,
)
from dtagent.sources.commands import NoCommands

REPO = Path(__file__).resolve().parent.parent


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
    """A command source that answers every command with ``answer(argv)`` (exit 0)."""

    def __init__(self, answer: Callable[[tuple[str, ...]], str]) -> None:
        self.answer = answer

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult:
        key = tuple(argv)
        return CommandResult(key, 0, self.answer(key))


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


def collected(
    collector: Collector, kstats: Iterable[Kstat], commands: CommandSource | None = None
) -> Samples:
    """One collection of ``kstats`` (and ``commands``: none by default)."""
    snap = HostSnapshot(KstatSnapshot(kstats), commands or NoCommands(), time=0.0)
    return samples_of(collector, snap)
