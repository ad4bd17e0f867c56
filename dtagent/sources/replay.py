"""Replay: serve a bundle as if it were the live host, advancing as time passes.

The replay maps the agent's clock onto the bundle's: at ``start`` it serves the first
frame, and ``speed`` seconds of bundle time pass per second of wall time. After the
last frame it keeps serving the last one (and says so once in the log), so counters
never go backwards. Commands are answered with the latest output recorded at or
before the current frame; DTrace deltas are handed out once each, in order.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from dtagent.bundle import Bundle, BundleError, Frame, PackedFrames, read_packed
from dtagent.snapshot import CommandResult, KstatSnapshot
from dtagent.zonemap import zones_of

log = structlog.get_logger("dtagent.replay")


class ReplaySource:
    """Frames of a bundle, selected by the (scaled) time since the replay started."""

    def __init__(
        self,
        bundle: Bundle,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
        pin: int | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("replay speed must be positive")
        self.bundle = bundle
        self.name = name
        self.speed = speed
        self._clock = clock
        self._start = clock()
        frames = bundle.frames
        if isinstance(frames, PackedFrames):
            self._times = frames.times
            commands = frames.commands
            self._with_dtrace = [frames.has_dtrace(i) for i in range(len(frames))]
        else:
            self._times = [f.time for f in frames]
            commands = [f.commands for f in frames]
            self._with_dtrace = [bool(f.dtrace) for f in frames]
        self._index = -1
        self._snapshot: KstatSnapshot | None = None
        self._dtrace_sent = -1
        self._lock = threading.Lock()
        self._ended_logged = False
        self._pin = pin
        # Command history: argv → list of (frame time, result), in time order.
        self._commands: dict[tuple[str, ...], list[tuple[float, CommandResult]]] = {}
        for at, results in zip(self._times, commands, strict=True):
            for res in results:
                self._commands.setdefault(res.argv, []).append((at, res))

    @classmethod
    def open(cls, path: str, speed: float = 1.0, frame: int | None = None) -> ReplaySource:
        """Open a bundle; ``frame`` pins the replay to that frame (negative: from the end)."""
        bundle = read_packed(path)
        if frame is None:
            return cls(bundle, speed=speed, name=str(path))
        count = len(bundle.frames)
        index = frame if frame >= 0 else count + frame
        if not 0 <= index < count:
            raise BundleError(f"{path}: no frame {frame} (it has {count})")
        return cls(bundle, name=str(path), pin=index)

    @property
    def frames(self) -> Sequence[Frame]:
        return self.bundle.frames

    def _current(self) -> int:
        if self._pin is not None:
            return self._pin
        elapsed = (self._clock() - self._start) * self.speed
        target = self._times[0] + elapsed
        index = max(0, bisect.bisect_right(self._times, target) - 1)
        if index == len(self._times) - 1 and not self._ended_logged and len(self._times) > 1:
            self._ended_logged = True
            log.info("replay reached its last frame; serving it from now on", bundle=self.name)
        return index

    def frame(self) -> Frame:
        with self._lock:
            return self.frames[self._current()]

    def kstats(self) -> KstatSnapshot:
        """The kstat snapshot of the current frame (built once per frame)."""
        with self._lock:
            index = self._current()
            if index != self._index or self._snapshot is None:
                self._index = index
                self._snapshot = self.frames[index].snapshot()
            return self._snapshot

    def time(self) -> float:
        """The bundle time of the current frame."""
        with self._lock:
            return self._times[self._current()]

    def dtrace_batches(self) -> list[tuple[list[dict[str, Any]], dict[int, str]]]:
        """(DTrace deltas, running zones) of every frame reached since the last call.

        Each frame's deltas belong with that frame's zones: a zone that halted since
        has no name in a later frame, and its id may belong to another zone by then.
        """
        with self._lock:
            index = self._current()
            wanted = [
                i for i in range(self._dtrace_sent + 1, index + 1) if self._with_dtrace[i]
            ]
            self._dtrace_sent = max(self._dtrace_sent, index)
        frames = self.bundle.frames
        if isinstance(frames, PackedFrames):
            return [(frames.dtrace(i), frames.zones[i]) for i in wanted]
        return [(frames[i].dtrace, zones_of(frames[i].kstats)) for i in wanted]

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult:
        """The latest recorded output of ``argv`` at or before the current frame."""
        key = tuple(argv)
        now = self.time()
        history = self._commands.get(key)
        if not history:
            return CommandResult(key, 127, error="not recorded in the bundle")
        pos = bisect.bisect_right([t for t, _ in history], now) - 1
        if pos < 0:
            return CommandResult(key, 127, error="not recorded yet at this point of the bundle")
        recorded_at, res = history[pos]
        return CommandResult(
            key, res.returncode, res.stdout, res.stderr, res.error, age=now - recorded_at
        )
