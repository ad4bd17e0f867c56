"""``dtagent capture``: record a live host's sources into a bundle.

Each frame holds the kstat snapshot the collectors saw and the command outputs they
caused to be run (a cached answer is not recorded again), so replaying the bundle gives
the same metrics the live agent served. A user can capture on a SmartOS host and replay
anywhere, and a bug report can carry the bundle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from dtagent.agent import KstatProvider
from dtagent.bundle import BundleWriter, Frame
from dtagent.dtrace.provider import DTraceMetrics
from dtagent.runtime import Runtime
from dtagent.snapshot import CommandResult, CommandSource, KstatSnapshot

log = structlog.get_logger("dtagent.capture")


class RecordingKstats:
    """Passes snapshots through and keeps the last one for the frame."""

    def __init__(self, inner: KstatProvider) -> None:
        self.inner = inner
        self.last: KstatSnapshot | None = None

    def kstats(self) -> KstatSnapshot:
        self.last = self.inner.kstats()
        return self.last


class RecordingCommands:
    """Passes commands through and records the outputs that were freshly run."""

    def __init__(self, inner: CommandSource) -> None:
        self.inner = inner
        self.recorded: list[CommandResult] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult:
        result = self.inner.run(argv, max_age=max_age, timeout=timeout, generation=generation)
        if result.age == 0.0:
            self.recorded.append(result)
        return result


def capture(
    runtime: Runtime,
    out: str,
    *,
    interval: float,
    count: int,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Record ``count`` frames, ``interval`` seconds apart; returns frames written."""
    agent = runtime.agent
    kstats = RecordingKstats(agent.kstat_provider)
    commands = RecordingCommands(agent.commands)
    agent.kstat_provider = kstats
    agent.commands = commands
    agent.reuse_within = 0.0
    # The DTrace provider hands every delta record it takes to this list, so each
    # frame carries the deltas that arrived since the previous one.
    dtrace_records: list[dict[str, Any]] | None = None
    if isinstance(agent.dtrace, DTraceMetrics):
        dtrace_records = agent.dtrace.recording = []
    stop = stop or threading.Event()
    with BundleWriter(out, source="capture", mode=runtime.mode) as writer:
        for i in range(count):
            started = time.monotonic()
            commands.recorded = []
            if dtrace_records is not None:
                dtrace_records.clear()
            agent.collect()
            snap = kstats.last or KstatSnapshot()
            dtrace = list(dtrace_records or ())
            writer.write(
                Frame(
                    time=snap.time or clock(),
                    kstats=list(snap),
                    commands=commands.recorded,
                    dtrace=dtrace,
                )
            )
            log.info(
                "frame captured",
                frame=i,
                kstats=len(snap),
                commands=len(commands.recorded),
                dtrace_records=len(dtrace),
            )
            if i + 1 < count and stop.wait(max(0.0, interval - (time.monotonic() - started))):
                break
        return writer.frames
