"""What the agent calls at each scrape: queued deltas applied, families returned.

The deltas come from a :class:`DeltaSource`: the supervised worker on a live host, or
a replayed bundle. Live deltas are applied with the zone map of the scrape's own kstat
snapshot (``zones:<id>`` kstats), so zone names are those of the moment the scrape
sees; a replayed frame's deltas with the zone map of that frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import structlog

from dtagent.dtrace.accumulator import DEFAULT_SERIES_CAP, SRC, Accumulator
from dtagent.dtrace.records import (
    Batch,
    DeltaSource,
    Histogram,
    Histograms,
    Invalid,
    Record,
    Tick,
    Value,
    Values,
    WorkerHealth,
    parse,
    to_json,
)
from dtagent.dtrace.spec import (
    ScriptSpec,
    SpecError,
    enabled_scripts,
    load_scripts,
    script_dirs,
    with_zone_buckets,
)
from dtagent.dtrace.supervisor import Supervisor
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot, KstatSnapshot
from dtagent.zonemap import GLOBAL_ZONEID, GLOBAL_ZONENAME, running_zones

log = structlog.get_logger("dtagent.dtrace")


def with_global(zones: dict[int, str]) -> dict[int, str]:
    """The zone map with the global zone (its id is fixed) whenever any zone runs."""
    if zones and GLOBAL_ZONEID not in zones:
        return {**zones, GLOBAL_ZONEID: GLOBAL_ZONENAME}
    return zones


def zone_map(kstats: KstatSnapshot) -> dict[int, str]:
    """Running zones by id, with the global zone."""
    return with_global(running_zones(kstats))


WORKER_UP = MetricSpec(
    "dtagent_dtrace_worker_up",
    "gauge",
    "1 while the DTrace worker process runs and reports every second, 0 when it does "
    "not; when replaying, 1 if the bundle holds DTrace deltas. Absent when no worker "
    "exists (no script enabled, or a bundle without DTrace deltas).",
    (),
    "",
    SRC,
)
RESTARTS = MetricSpec(
    "dtagent_dtrace_worker_restarts_total",
    "counter",
    "Times the DTrace worker was restarted after it exited or stopped reporting.",
    (),
    "",
    SRC,
)
DELTA_AGE = MetricSpec(
    "dtagent_dtrace_last_delta_age_seconds",
    "gauge",
    "Seconds since the last batch of DTrace deltas arrived (absent before the first).",
    (),
    "seconds",
    SRC,
)
PROVIDER_SPECS = (WORKER_UP, RESTARTS, DELTA_AGE)


__all__ = ["Batch", "DTraceMetrics", "DTraceSettings", "DeltaSource", "WorkerHealth"]


@dataclass(frozen=True)
class DTraceSettings:
    """The ``[dtrace]`` settings the provider needs, as plain values (the runtime
    reads them from the configuration)."""

    script_dirs: Sequence[str] = ()
    scripts: Mapping[str, bool] = field(default_factory=dict)  # on/off by name
    series_cap: int = DEFAULT_SERIES_CAP
    zone_buckets: str = "1-2-5"  # spec.ZONE_BUCKETS
    libdtrace: str = "libdtrace.so.1"
    hang_timeout: float = 15.0
    max_backoff: float = 60.0
    walk_interval: int = 10  # seconds between the worker's aggregation walks


# A replay catching up restores a checkpoint when that saves applying at least this
# many frames' deltas: restoring one (decoding it included) costs about as much as
# applying one and a half frames (13 ms against 9 ms at 200 zones, docs/performance.md).
RESTORE_SAVES = 2


class ReplayDeltas:
    """Deltas of a replayed bundle, frame by frame as the replay advances.

    Each frame's records come with that frame's zone map (see :meth:`take`), and
    records of scripts that are not enabled are left out, as a live worker would
    not run them.

    Catching up: when the frames reached since the last :meth:`take` include a
    checkpoint made for the accumulator's :attr:`~Accumulator.basis`, the latest one is
    restored into it and only the frames after it are handed out (the checkpoint holds
    what applying the frames up to it from the first frame builds up), if that saves
    applying :data:`RESTORE_SAVES` frames or more. That is exact only while everything
    the accumulator applied came from here, in order: after a reload of the scripts or
    settings (:meth:`set_scripts`), or a zone map applied that no frame handed out (a
    scrape that reached no frame with deltas after one that did, on a frame with other
    zones), every frame is applied from then on.
    """

    def __init__(
        self,
        replay: Any,
        clock: Callable[[], float] = time.time,
        scripts: Collection[str] | None = None,
        recorded: Collection[str] | None = None,
        accumulator: Accumulator | None = None,
    ) -> None:
        """``recorded``: the scripts the bundle holds records of (None: not known, taken
        as all); empty, no worker ran when it was made. ``accumulator``: the one the
        deltas are applied to, which checkpoints are restored into (None: none are)."""
        self._replay = replay
        self._clock = clock
        self._last: float | None = None
        self._recorded = None if recorded is None else frozenset(recorded)
        self._scripts = None if scripts is None else self._wanted(scripts)
        self._accumulator = accumulator
        # the zone map of the last batch handed out (None: none yet), to tell whether the
        # accumulator applied one of its own since
        self._handed: dict[int, str] | None = None
        self.restored: list[int] = []  # the checkpoints restored, by frame

    def set_scripts(self, scripts: Collection[str]) -> None:
        """The scripts a (reloaded) config runs, of those the bundle recorded. A reload
        also reconfigured the accumulator, keeping series no checkpoint holds: none is
        restored from then on."""
        self._scripts = self._wanted(scripts)
        self._accumulator = None

    def _wanted(self, scripts: Collection[str]) -> frozenset[str]:
        wanted = frozenset(scripts)
        return wanted if self._recorded is None else wanted & self._recorded

    def take(self) -> list[Batch]:
        """(records, zone map of their frame) for every frame reached since the last call;
        after a restored checkpoint, an empty batch of its zone map first (what a replay
        from the first frame applied last), then the frames after it."""
        out: list[Batch] = []
        due = self._replay.dtrace_due()
        start = due.start
        acc = self._accumulator
        if acc is not None and self._handed is not None and dict(acc.zones) != self._handed:
            acc = self._accumulator = None  # a zone map of the scrape's own was applied
        if acc is not None and len(due):
            for index in self._replay.dtrace_checkpoints(due):
                saved = sum(self._replay.has_dtrace(i) for i in range(start, index + 1))
                if saved < RESTORE_SAVES:
                    break  # an earlier one would save fewer still
                restored = self._restore(acc, index)
                if restored is not None:
                    out.append(([], restored))
                    start = index + 1
                    break
        for index in range(start, due.stop):
            batch = self._replay.dtrace_batch(index)
            if batch is not None:
                objs, zones = batch
                out.append((replayed(objs, self._scripts), with_global(zones)))
        if out:
            self._last = self._clock()
            self._handed = dict(out[-1][1])
        return out

    def _restore(self, acc: Accumulator, index: int) -> dict[int, str] | None:
        """Frame ``index``'s checkpoint restored into ``acc`` if it was made for it (its
        zone map), else None (nothing changed; one that does not fit is logged)."""
        state = self._replay.dtrace_checkpoint(index)
        if state is None or state.get("basis") != acc.basis:
            return None
        try:
            self._check_zones(index, state.get("zones"))
            acc.restore(state)
        except ValueError as exc:
            log.warning("DTrace checkpoint not used: the frames before it are applied",
                        frame=index, problem=str(exc))
            return None
        self.restored.append(index)
        return dict(acc.zones)

    def _check_zones(self, index: int, saved: object) -> None:
        """Raises ValueError unless a checkpoint's zone map (``saved``) is that of the
        last frame up to ``index`` whose deltas were applied, as a writer saves it:
        another says the checkpoint was not made from these frames (an edited bundle)."""
        frame_zones = self._replay.dtrace_zones(index)
        expected = None if frame_zones is None else with_global(frame_zones)
        pairs = [tuple(z) for z in saved] if isinstance(saved, list) and all(
            isinstance(z, list) for z in saved) else None
        if expected is None or pairs is None or len(pairs) != len(expected) \
                or set(pairs) != set(expected.items()):
            raise ValueError(f"its zone map ({len(pairs or ())} zones) is not that of the "
                             f"frame it was saved after ({len(expected or ())} zones)")

    def health(self) -> WorkerHealth:
        # the recorded worker was up if the bundle holds its deltas; else there was none
        return WorkerHealth(None if self._recorded == frozenset() else True, 0, self._last)


def replayed(objs: Sequence[object], scripts: Collection[str] | None) -> list[Record]:
    """A frame's records as a replay applies them: aggregation records of a script
    that is off are left out (``scripts``: those on, None: all); drops and errors
    always count."""
    records = [parse(o) for o in objs]
    if scripts is None:
        return records
    return [r for r in records if not isinstance(r, Value | Histogram | Values | Histograms)
            or r.script in scripts]


# A bundle writer saves the replay's accumulated DTrace state every this many frames
# (a checkpoint record, docs/bundle-dtrace.md), so ``scrape --replay --frame N`` applies
# at most this many frames' deltas. 60 frames (five minutes at the simulator's 5 s step) keeps
# the records to about 1% of a bundle: one is about twice the size of a frame's deltas.
CHECKPOINT_EVERY = 60


class Checkpointer:
    """Applies each frame written to a bundle as a replay of it would, and says the
    accumulator's state every :data:`CHECKPOINT_EVERY` frames.

    The state is that of a replay under ``settings`` with every script they enable
    running: it carries its :attr:`Accumulator.basis`, and a replay under other settings
    (or whose bundle did not record every such script) applies every frame instead.
    """

    def __init__(self, settings: DTraceSettings) -> None:
        specs, _ = load_config_scripts(settings)
        self._running = [s.name for s in enabled_scripts(specs, dict(settings.scripts))]
        self.accumulator = Accumulator(
            with_zone_buckets(specs, settings.zone_buckets), settings.series_cap,
            overrides=dict(settings.scripts), running=self._running)
        self._applied = False
        # a frame with deltas but no running zone makes a replay apply them with the zone
        # map of the frame it serves, which no writer knows: no checkpoint after one
        self._exact = True

    def __call__(self, index: int, dtrace: Sequence[object],
                 zones: dict[int, str]) -> dict[str, object] | None:
        """Frame ``index``'s deltas (and ``zones``, its running zones) applied; its
        checkpoint record, or None."""
        if dtrace and self._exact:
            batch_zones = with_global(zones)
            if not batch_zones:
                self._exact = False
            else:
                self.accumulator.apply(replayed(dtrace, self._running), batch_zones)
                self._applied = True
        if index % CHECKPOINT_EVERY or not index or not (self._applied and self._exact):
            return None
        return self.accumulator.state()


class IdleSource:
    """No script enabled: no worker is needed, so there is none (and none is down)."""

    def take(self) -> list[Batch]:
        return []

    def health(self) -> WorkerHealth:
        return WorkerHealth(None, 0, None)


class DTraceMetrics:
    """The agent's DTrace provider: a delta source feeding an accumulator."""

    def __init__(
        self,
        accumulator: Accumulator,
        source: DeltaSource,
        *,
        held_cap: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accumulator = accumulator
        self.source = source
        self.held_cap = held_cap
        self._clock = clock
        self._held: list[Record] = []
        self._lost_seen = 0
        self.supervisor: Supervisor | None = None  # set by live_provider
        self.specs: list[ScriptSpec] = []  # the scripts loaded, enabled or not
        # when a list: every record taken from the source is appended, in its JSON
        # form (dtagent capture writes them into a bundle)
        self.recording: list[dict[str, object]] | None = None

    def families(self, snap: HostSnapshot) -> Iterator[MetricFamily]:
        """The families after the deltas taken since the last call are applied; draw
        them all before the next call.

        Only the zone map is read from ``snap`` now. The deltas are taken and applied
        when the first family is drawn, so the caller can let the snapshot's kstats go
        first: at 1,000 zones they are about 6 MiB that need not sit beside the
        deltas being decoded. Families never drawn leave the deltas in the source,
        applied at the next call."""
        return self._applied(zone_map(snap.kstats))

    def _applied(self, zones: dict[int, str]) -> Iterator[MetricFamily]:
        # a scrape with no deltas still applies the zone map (gone zones are forgotten)
        for taken, batch_zones in self.source.take() or [((), {})]:
            if self.recording is not None:
                taken = list(taken)
                self.recording.extend(to_json(r) for r in taken
                                      if not isinstance(r, Tick | Invalid))
            self._apply(taken, batch_zones or zones)
        yield from self._report()

    def _apply(self, taken: Iterable[Record], zones: dict[int, str]) -> None:
        held, self._held = self._held, []
        if zones:
            # drawn as applied: the live source decodes each record only now
            self.accumulator.apply(chain(held, taken), zones)
            return
        records = held + list(taken)
        if records:
            # No zone map (a failed kstat read): keep the deltas for the next scrape
            # rather than dropping every zone's data and series.
            if len(records) > self.held_cap:
                lost = len(records) - self.held_cap
                self.accumulator.rejected["backlog"] = (
                    self.accumulator.rejected.get("backlog", 0) + lost
                )
                records = records[lost:]
            self._held = records

    def _report(self) -> Iterator[MetricFamily]:
        health = self.source.health()
        if health.lost > self._lost_seen:
            rejected = self.accumulator.rejected
            rejected["backlog"] = rejected.get("backlog", 0) + health.lost - self._lost_seen
            self._lost_seen = health.lost
        out: list[MetricFamily] = []
        up = WORKER_UP.family()
        if health.up is not None:
            up.add((), 1 if health.up else 0)
        restarts = RESTARTS.family()
        restarts.add((), health.restarts)
        out += [up, restarts]
        last = health.last_batch
        if last is not None:
            age = DELTA_AGE.family()
            age.add((), max(0.0, self._clock() - last))
            out.append(age)
        # the aggregations' families are made as they are drawn (rendered), one at a time
        return chain(self.accumulator.iter_families(), out)


def load_config_scripts(settings: DTraceSettings) -> tuple[list[ScriptSpec], list[SpecError]]:
    """Shipped scripts plus ``script_dirs``; problems logged, not fatal."""
    errors: list[SpecError] = []
    specs = load_scripts(script_dirs(settings.script_dirs), errors)
    for err in errors:
        log.error("D script not loaded", problem=str(err))
    # dtrace.scripts names only known scripts: the config loader refuses others.
    return specs, errors


def replay_provider(settings: DTraceSettings, replay: Any) -> DTraceMetrics:
    specs, _ = load_config_scripts(settings)
    overrides = dict(settings.scripts)
    # Running: enabled here and recorded in the bundle (a script without deltas in it
    # did not run on the recorded host, whatever this config enables).
    recorded = replay.dtrace_scripts()
    running = [s.name for s in enabled_scripts(specs, overrides) if s.name in recorded]
    acc = Accumulator(with_zone_buckets(specs, settings.zone_buckets), settings.series_cap,
                      overrides=overrides, running=running)
    # a scrape (pinned to a frame) or a catch-up starts from the last checkpoint it reached
    deltas = ReplayDeltas(replay, scripts=running, recorded=recorded, accumulator=acc)
    provider = DTraceMetrics(acc, deltas)
    provider.specs = specs
    return provider


def worker_argv(
    libdtrace: str, running: Sequence[ScriptSpec], walk_interval: float
) -> list[str]:
    """The worker's command line for these scripts, walked every ``walk_interval``
    seconds (its status and snapshots stay at every second). No default here: the
    setting's (``dtrace.walk_interval``) is the one."""
    import sys

    # -I when the agent runs isolated (the SMF manifest): the worker imports the same code
    argv = [sys.executable, *(["-I"] if sys.flags.isolated else []), "-m",
            "dtagent.dtrace.worker", "--libdtrace", libdtrace,
            "--walk-interval", f"{walk_interval:g}"]
    for s in running:
        argv += ["--script", str(s.path)]
    return argv


def worker_scripts(running: Sequence[ScriptSpec]) -> list[tuple[str, str]]:
    """(path, digest) of each script, as the worker loads it from its path (so the
    digest is the one the worker computes for what it runs), for
    :meth:`~dtagent.dtrace.supervisor.Supervisor.update_scripts`."""
    from dtagent.dtrace.spec import load_script, spec_digest

    out = []
    for s in running:
        try:
            digest = spec_digest(load_script(s.path))
        except SpecError:
            digest = spec_digest(s)
        out.append((str(s.path), digest))
    return out


def live_provider(settings: DTraceSettings) -> DTraceMetrics:
    """The supervised worker running the enabled scripts, feeding an accumulator."""
    specs, _ = load_config_scripts(settings)
    overrides = dict(settings.scripts)
    running = enabled_scripts(specs, overrides)
    for s in specs:
        if s not in running:
            log.info("D script disabled", script=s.name,
                     reason="off in the config" if s.name in overrides else "off by default")
    supervisor = Supervisor(
        worker_argv(settings.libdtrace, running, settings.walk_interval),
        hang_timeout=settings.hang_timeout,
        max_backoff=settings.max_backoff,
    )
    acc = Accumulator(with_zone_buckets(specs, settings.zone_buckets), settings.series_cap,
                      overrides=overrides)
    if not running:
        provider = DTraceMetrics(acc, IdleSource())
    else:
        provider = DTraceMetrics(acc, supervisor)
        supervisor.start()
    provider.supervisor = supervisor
    provider.specs = specs
    return provider
