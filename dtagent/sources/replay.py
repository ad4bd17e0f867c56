"""Replay: serve a bundle as if it were the live host, advancing as time passes.

The replay maps the agent's clock onto the bundle's: at ``start`` it serves the first
frame, and ``speed`` seconds of bundle time pass per second of wall time. After the
last frame it keeps serving the last one (and says so once in the log), so counters
never go backwards. Command requests are answered with the latest output recorded at
or before the current frame, and so are plugin and textfile requests (whatever
directory they name: the bundle recorded one of each); DTrace deltas are handed out
once each, in order (or a checkpoint in place of those up to it: see
:class:`~dtagent.dtrace.provider.ReplayDeltas`).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from dtagent.bundle import (
    Bundle,
    BundleUsageError,
    Frame,
    PackedFrames,
    bundle_scripts,
    header_contents,
    read_header,
    read_packed,
)
from dtagent.snapshot import (
    CommandRequest,
    CommandResult,
    CommandResults,
    KstatInput,
    KstatSnapshot,
    PluginRequest,
    PluginRun,
    TextfileListing,
    TextfileRequest,
    modules_of,
)
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
        inputs: Iterable[KstatInput] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("replay speed must be positive")
        self.bundle = bundle
        self.name = name
        self.speed = speed
        self._clock = clock
        self._start = clock()
        self._index = -1
        self._snapshot: KstatSnapshot | None = None
        self._dtrace_sent = -1
        self._lock = threading.Lock()
        self._ended_logged = False
        self._pin = pin
        # only the modules the collectors declared, as the live reader reads them (by
        # module: an imported ``kstat -p`` dump may not say a kstat's class)
        self._inputs = (
            tuple(KstatInput(m) for m in sorted(modules_of(inputs))) if inputs is not None else None
        )
        # Command history: argv → its results in time order, ``finished`` the frame time;
        # taken in frame by frame as frames are checked (see _take_in).
        self._commands: dict[tuple[str, ...], list[CommandResult]] = {}
        self._command_times: dict[tuple[str, ...], list[float]] = {}
        # The plugin runs and textfiles as recorded, at the frames that recorded them.
        self._plugin_times: list[float] = []
        self._plugin_sets: list[tuple[PluginRun, ...]] = []
        self._textfile_times: list[float] = []
        self._textfile_sets: list[TextfileListing] = []
        self._taken_in = 0
        frames = bundle.frames
        self._packed = frames if isinstance(frames, PackedFrames) else None
        if self._packed is not None:
            self._times = self._packed.times
        else:
            self._times = [f.time for f in frames]
        self._take_in()
        if self._packed is not None and self._packed.background:
            self.watcher: threading.Thread | None = threading.Thread(
                target=self._watch, args=(self._packed,), name="dtagent-replay-watch",
                daemon=True,
            )
            self.watcher.start()
        else:
            self.watcher = None

    def _take_in(self) -> None:
        """Index the command results, plugin runs and textfiles of the frames checked
        since the last call (all of them at once unless the bundle is still being
        checked in the background)."""
        count = len(self._times)
        if count == self._taken_in:
            return
        for index in range(self._taken_in, count):
            at = self._times[index]
            if self._packed is not None:
                results = self._packed.commands[index]
                plugins = self._packed.plugins[index]
                textfiles = self._packed.textfiles[index]
            else:
                frame = self.bundle.frames[index]
                results, plugins, textfiles = frame.commands, frame.plugins, frame.textfiles
            for res in results:
                self._commands.setdefault(res.argv, []).append(replace(res, finished=at))
                self._command_times.setdefault(res.argv, []).append(at)
            if plugins is not None:
                self._plugin_times.append(at)
                self._plugin_sets.append(tuple(plugins))
            if textfiles is not None:
                self._textfile_times.append(at)
                self._textfile_sets.append(textfiles)
        self._taken_in = count

    def _watch(self, packed: PackedFrames) -> None:
        """Say when the background check of the bundle ends, and how."""
        packed.complete.wait()
        if packed.error is None:
            log.info("bundle checked", frames=len(packed), bundle=self.name)
            return
        log.error(
            "bundle check failed: the replay stops at the last good frame",
            problem=str(packed.error), last_good_frame=len(packed) - 1, bundle=self.name,
        )

    def has_dtrace(self, index: int) -> bool:
        """Whether frame ``index`` holds DTrace deltas."""
        if self._packed is not None:
            return self._packed.has_dtrace(index)
        return bool(self.bundle.frames[index].dtrace)

    @classmethod
    def open(
        cls,
        path: str,
        speed: float = 1.0,
        frame: int | None = None,
        inputs: Iterable[KstatInput] | None = None,
    ) -> ReplaySource:
        """Open a bundle; ``frame`` pins the replay to that frame (negative: from the end);
        ``inputs`` are the kstats served (None: all)."""
        if frame is None:
            # A bundle whose header says what its frames hold is served from its first frame
            # while the rest is checked; an older one is read and checked first.
            background = header_contents(read_header(path)) is not None
            bundle = read_packed(path, background=background)
            return cls(bundle, speed=speed, name=str(path), inputs=inputs)
        # pinned: the frames after it are not needed (a frame from the end needs them all)
        bundle = read_packed(path, upto=frame if frame >= 0 else None)
        count = len(bundle.frames)
        index = frame if frame >= 0 else count + frame
        if not 0 <= index < count:
            raise BundleUsageError(
                f"{path}: no frame {frame}: it has {count} (0 to {count - 1})"
            )
        return cls(bundle, name=str(path), pin=index, inputs=inputs)

    @property
    def frames(self) -> Sequence[Frame]:
        return self.bundle.frames

    def _current(self) -> int:
        self._take_in()
        if self._pin is not None:
            return self._pin
        elapsed = (self._clock() - self._start) * self.speed
        target = self._times[0] + elapsed
        index = max(0, bisect.bisect_right(self._times, target) - 1)
        checked = self._packed is None or self._packed.complete.is_set()
        if (index == len(self._times) - 1 and checked and not self._ended_logged
                and len(self._times) > 1):
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
                snapshot = self.frames[index].snapshot()
                if self._inputs is not None:
                    snapshot = snapshot.only(self._inputs)
                self._snapshot = snapshot
            return self._snapshot

    def time(self) -> float:
        """The bundle time of the current frame."""
        with self._lock:
            return self._times[self._current()]

    def dtrace_scripts(self) -> set[str]:
        """The D scripts the bundle's DTrace deltas name (empty: DTrace did not run)."""
        contents = header_contents(self.bundle.header)
        return set(contents.dtrace_scripts) if contents else bundle_scripts(self.bundle)

    def dtrace_due(self) -> range:
        """The frames reached since the last call (or :meth:`dtrace_batches`), whose
        DTrace deltas are due; from now on they count as handed out."""
        with self._lock:
            index = self._current()
            due = range(self._dtrace_sent + 1, index + 1)
            self._dtrace_sent = max(self._dtrace_sent, index)
        return due

    def dtrace_batch(self, index: int) -> tuple[list[dict[str, Any]], dict[int, str]] | None:
        """(DTrace deltas, running zones) of frame ``index``; None when it has no deltas.

        Each frame's deltas belong with that frame's zones: a zone that halted since
        has no name in a later frame, and its id may belong to another zone by then.
        """
        if not self.has_dtrace(index):
            return None
        frames = self.bundle.frames
        if isinstance(frames, PackedFrames):
            return frames.dtrace(index), frames.zones[index]
        return frames[index].dtrace, zones_of(frames[index].kstats)

    def dtrace_zones(self, index: int) -> dict[int, str] | None:
        """The running zones of the last frame at or before ``index`` that holds DTrace
        deltas (those a replay applied them with); None when there is none."""
        frames = self.bundle.frames
        for i in range(index, -1, -1):
            if self.has_dtrace(i):
                if isinstance(frames, PackedFrames):
                    return frames.zones[i]
                return zones_of(frames[i].kstats)
        return None

    def dtrace_batches(self) -> list[tuple[list[dict[str, Any]], dict[int, str]]]:
        """(DTrace deltas, running zones) of every frame reached since the last call."""
        return [b for i in self.dtrace_due() if (b := self.dtrace_batch(i)) is not None]

    def dtrace_checkpoints(self, frames: range) -> list[int]:
        """The frames among ``frames`` that hold a DTrace checkpoint record, latest first."""
        bundle = self.bundle.frames
        if isinstance(bundle, PackedFrames):
            held = bundle.checkpoints()
        else:
            held = [i for i in frames if bundle[i].checkpoint is not None]
        return [i for i in reversed(held) if i in frames]

    def dtrace_checkpoint(self, index: int) -> dict[str, Any] | None:
        """Frame ``index``'s DTrace checkpoint record (docs/bundle-dtrace.md), if any."""
        frames = self.bundle.frames
        if isinstance(frames, PackedFrames):
            return frames.checkpoint(index)
        return frames[index].checkpoint

    @property
    def has_plugins(self) -> bool:
        """Whether the bundle recorded plugin runs (a capture with a plugin directory)."""
        contents = header_contents(self.bundle.header)
        return contents.plugins if contents else bool(self._plugin_sets)

    @property
    def has_textfiles(self) -> bool:
        """Whether the bundle recorded textfiles (a capture with a textfile directory)."""
        contents = header_contents(self.bundle.header)
        return contents.textfiles if contents else bool(self._textfile_sets)

    def plugin_runs(
        self, requests: Sequence[PluginRequest]
    ) -> Mapping[PluginRequest, tuple[PluginRun, ...]]:
        """Each request answered with the plugin runs recorded last at or before the
        current frame (none before the first record)."""
        pos = bisect.bisect_right(self._plugin_times, self.time()) - 1
        if pos < 0:
            return {}
        return dict.fromkeys(requests, self._plugin_sets[pos])

    def textfiles(
        self, requests: Sequence[TextfileRequest]
    ) -> Mapping[TextfileRequest, TextfileListing]:
        """Each request answered with the textfiles recorded last at or before the
        current frame (none before the first record)."""
        pos = bisect.bisect_right(self._textfile_times, self.time()) - 1
        if pos < 0:
            return {}
        return dict.fromkeys(requests, self._textfile_sets[pos])

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        """Each request served from the latest output recorded at or before the current
        frame (of its argv, else of its first fallback that was recorded), its age the
        bundle time since; the same age limit as live applies."""
        now = self.time()
        return CommandResults.select(requests, lambda req: self._recorded(req, now), now)

    def settle(self, timeout: float) -> bool:
        """Recorded results are always at hand."""
        return True

    def _recorded(
        self, req: CommandRequest, now: float
    ) -> tuple[CommandResult | None, CommandResult | None]:
        """(latest, latest successful) recorded result for the request at ``now``."""
        missing = CommandResult(req.argv, 127, error="not recorded in the bundle", finished=now)
        for argv in (req.argv, *req.fallbacks):
            history = self._commands.get(argv)
            if not history:
                continue
            pos = bisect.bisect_right(self._command_times[argv], now) - 1
            if pos < 0:
                missing = CommandResult(
                    argv, 127, error="not recorded yet at this point of the bundle", finished=now
                )
                continue
            last = history[pos]
            if last.returncode == 127 and argv != (req.fallbacks or (argv,))[-1]:
                continue  # not installed on the recorded host: its fallback answered
            last_ok = next((r for r in reversed(history[: pos + 1]) if r.ok), None)
            return last, last_ok
        return missing, None
