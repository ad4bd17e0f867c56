"""``dtagent capture``: record a live host's sources into a bundle.

Each frame holds the kstat snapshot the collectors saw, the command results that were
new since the previous frame (a result already recorded is not recorded again), the
plugin runs and textfiles when they changed since the last frame that recorded them,
and the DTrace deltas taken, so replaying the bundle gives the same metrics the live
agent served. A user can capture on a SmartOS host and replay anywhere, and a bug
report can carry the bundle. The runtime's recording hook hands over each collection;
nothing of the agent is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from dtagent.bundle import BundleWriter, Checkpoints, Frame
from dtagent.runtime import Runtime
from dtagent.snapshot import CommandResult, HostSnapshot, PluginRun, TextfileListing

log = structlog.get_logger("dtagent.capture")

# How long the first frame waits for the commands to have run once.
FIRST_RUN_WAIT = 30.0


class FrameRecorder:
    """Turns collections into bundle frames: kstats, new command results, DTrace."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._recorded: dict[tuple[str, ...], float] = {}  # argv -> finished of the last
        self._plugins: list[PluginRun] | None = None  # as last recorded
        self._textfiles: TextfileListing | None = None
        self.last: Frame | None = None

    def __call__(self, snap: HostSnapshot, dtrace: list[Any]) -> None:
        fresh: list[CommandResult] = []
        for res in snap.commands:
            # a result dropped as too old keeps its run's time: it is not recorded twice
            if self._recorded.get(res.argv) != res.finished:
                self._recorded[res.argv] = res.finished
                fresh.append(res)
        plugins: list[PluginRun] | None = None
        if snap.plugins:  # the runs of every declared directory (there is one)
            runs = sorted((r for rs in snap.plugins.values() for r in rs), key=lambda r: r.name)
            if runs != self._plugins:
                plugins = self._plugins = runs
        textfiles: TextfileListing | None = None
        for listing in snap.textfiles.values():
            if listing != self._textfiles:
                textfiles = self._textfiles = listing
            break
        self.last = Frame(
            time=snap.kstats.time or self._clock(),
            kstats=list(snap.kstats),
            commands=fresh,
            dtrace=dtrace,
            plugins=plugins,
            textfiles=textfiles,
        )


def capture(
    runtime: Runtime,
    out: str,
    *,
    interval: float,
    count: int,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    checkpoints: Checkpoints | None = None,
) -> int:
    """Record ``count`` frames, ``interval`` seconds apart; returns frames written.
    ``checkpoints``: see :class:`~dtagent.bundle.BundleWriter`."""
    agent = runtime.agent
    recorder = FrameRecorder(clock)
    runtime.record(recorder)
    stop = stop or threading.Event()
    if not agent.settle(FIRST_RUN_WAIT):
        log.warning("some commands had not finished for the first frame", waited_s=FIRST_RUN_WAIT)
    with BundleWriter(out, checkpoints, source="capture", mode=runtime.mode) as writer:
        for i in range(count):
            started = time.monotonic()
            agent.collect(fresh=True)
            frame = recorder.last
            if frame is not None:
                writer.write(frame)
                log.info(
                    "frame captured",
                    frame=i,
                    kstats=len(frame.kstats),
                    commands=len(frame.commands),
                    dtrace_records=len(frame.dtrace),
                )
            if i + 1 < count and stop.wait(max(0.0, interval - (time.monotonic() - started))):
                break
        return writer.frames
