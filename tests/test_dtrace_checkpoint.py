"""DTrace checkpoints in bundles: a replay pinned to frame N starts from the last
checkpoint at or before N and applies only the deltas after it, a served replay that
moves ahead by many frames at once catches up from the last checkpoint it reached, and
both serve exactly what applying every frame from the first serves. An anonymized
bundle keeps its checkpoints, rewritten as its frames are."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dtagent.anonymize import anonymize_bundle
from dtagent.bundle import (
    BundleError,
    BundleWriter,
    decode_frame,
    encode_frame,
    read_bundle,
    read_packed,
    write_bundle,
)
from dtagent.dtrace.provider import (
    CHECKPOINT_EVERY,
    DELTA_AGE,
    RESTORE_SAVES,
    Checkpointer,
    DTraceMetrics,
    DTraceSettings,
    ReplayDeltas,
    replay_provider,
)
from dtagent.dtrace.spec import with_zone_buckets
from dtagent.exposition import render
from dtagent.simulate import simulate
from dtagent.snapshot import CommandResults, HostSnapshot
from dtagent.sources.replay import ReplaySource
from dtagent.zonemap import zones_of

FRAMES = 3 * CHECKPOINT_EVERY + 1


def _without_checkpoints(src: Path, dst: Path) -> None:
    bundle = read_bundle(src)
    frames = [dataclasses.replace(f, checkpoint=None) for f in bundle.frames]
    write_bundle(dst, frames, source="simulate")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(with checkpoints, the same frames without): a simulated host whose zones halt
    and reboot over the bundle."""
    tmp = tmp_path_factory.mktemp("checkpoint")
    new, old = tmp / "new.bundle", tmp / "old.bundle"
    n = simulate(new, 20, seed=5, duration=5.0 * (FRAMES - 1),
                 checkpoints=Checkpointer(DTraceSettings()))
    assert n == FRAMES
    _without_checkpoints(new, old)
    return new, old


def _provider(path: Path, frame: int, settings: DTraceSettings) -> tuple[ReplaySource,
                                                                         DTraceMetrics]:
    replay = ReplaySource.open(str(path), frame=frame)
    return replay, replay_provider(settings, replay)


def _scrape(replay: ReplaySource, provider: DTraceMetrics) -> bytes:
    """The DTrace part of a scrape, as the agent takes it (kstats, then the families)."""
    snap = HostSnapshot(replay.kstats(), CommandResults(), time=replay.time(), illumos=True)
    text = render(provider.families(snap))
    # the age of the last batch is wall time since it was taken, not the bundle's
    age, n = re.subn(rb"(?m)^(" + DELTA_AGE.name.encode() + rb") \S+$", rb"\1 AGE", text)
    assert n == 1
    return age


def _exposition(path: Path, frame: int, settings: DTraceSettings | None = None) -> bytes:
    return _scrape(*_provider(path, frame, settings or DTraceSettings()))


def _restored(provider: DTraceMetrics) -> list[int]:
    assert isinstance(provider.source, ReplayDeltas)
    return provider.source.restored


def test_writers_save_a_checkpoint_every_so_many_frames(bundles: tuple[Path, Path]) -> None:
    new, old = bundles
    frames = read_bundle(new).frames
    assert [i for i, f in enumerate(frames) if f.checkpoint is not None] == [
        CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, 3 * CHECKPOINT_EVERY]
    assert all(f.checkpoint is None for f in read_bundle(old).frames)
    # zones come and go on both sides of the checkpoints, so the jump has to get the
    # forgotten zones and the zone map right
    maps = [zones_of(f.kstats) for f in frames]
    changed = [i for i in range(1, len(maps)) if maps[i] != maps[i - 1]]
    assert any(i < CHECKPOINT_EVERY for i in changed)
    assert any(CHECKPOINT_EVERY < i < 2 * CHECKPOINT_EVERY for i in changed)


@pytest.mark.parametrize("frame", [
    0, CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 1,
    2 * CHECKPOINT_EVERY - 1, 2 * CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY + 7,
    3 * CHECKPOINT_EVERY, -1,
])
def test_a_jump_serves_what_every_frame_applied_serves(
    bundles: tuple[Path, Path], frame: int
) -> None:
    new, old = bundles
    jumped = _exposition(new, frame)
    assert b'dtagent_dtrace_records_rejected_total{reason="invalid"} 0' in jumped
    assert b"illumos_zone_runq_latency_seconds_bucket{" in jumped
    assert jumped == _exposition(old, frame)


@pytest.mark.parametrize("frame", [CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY,
                                   2 * CHECKPOINT_EVERY + 7])
def test_only_the_frames_after_the_checkpoint_are_applied(
    bundles: tuple[Path, Path], frame: int
) -> None:
    new, old = bundles
    index = frame // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    batches = _provider(new, frame, DTraceSettings())[1].source.take()
    every = _provider(old, frame, DTraceSettings())[1].source.take()
    assert len(every) == frame + 1  # every simulated frame holds deltas
    if index == 0:
        assert len(batches) == frame + 1
    else:  # the checkpoint's zone map, then the frames after it
        assert len(batches) == 1 + frame - index
        assert batches[0][0] == []
        assert batches[1:] == every[index + 1:]


@pytest.mark.parametrize("settings", [
    DTraceSettings(series_cap=50), DTraceSettings(zone_buckets="1-10"),
    DTraceSettings(scripts={"disk": False}),
])
def test_other_settings_apply_every_frame(
    bundles: tuple[Path, Path], settings: DTraceSettings
) -> None:
    new, old = bundles
    frame = 2 * CHECKPOINT_EVERY + 3
    assert len(_provider(new, frame, settings)[1].source.take()) == frame + 1
    assert _exposition(new, frame, settings) == _exposition(old, frame, settings)


def _frame_line(path: Path, index: int) -> str:
    return encode_frame(read_bundle(path).frames[index])


@pytest.mark.parametrize(("change", "problem"), [
    (lambda cp: cp.update(basis=3), "field dtrace_checkpoint.basis: expected a string"),
    (lambda cp: cp.update(zones=[[0]]), "field dtrace_checkpoint.zones: expected a list of"),
    (lambda cp: cp["drops"].update(x=-1), "field dtrace_checkpoint.drops: expected an object"),
    (lambda cp: cp["aggs"][0]["series"].append([["a"], None, [1], 0, 0, [0]]),
     "field dtrace_checkpoint.aggs[0].series["),
    (lambda cp: cp["aggs"][1].update(seen=[[1]]),
     "field dtrace_checkpoint.aggs[1].seen: expected a list of label lists"),
])
def test_the_bundle_check_refuses_a_malformed_checkpoint(
    bundles: tuple[Path, Path], change: object, problem: str
) -> None:
    obj = json.loads(_frame_line(bundles[0], CHECKPOINT_EVERY))
    change(obj["dtrace_checkpoint"])  # type: ignore[operator]
    with pytest.raises(BundleError) as exc:
        decode_frame(json.dumps(obj), "b: frame 60")
    assert problem in str(exc.value)
    assert str(exc.value).startswith("b: frame 60: ") and "\n" not in str(exc.value)


def test_a_checkpoint_that_does_not_fit_the_scripts_is_not_used(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """Well formed but wrong (a histogram with a bucket too few): every frame is
    applied instead, and the replay serves what it would without checkpoints."""
    new, old = bundles
    frames = read_bundle(new).frames
    cp = frames[CHECKPOINT_EVERY].checkpoint
    assert cp is not None
    hist = next(a for a in cp["aggs"] if a["series"] and a["series"][0][2])
    hist["series"][0][2].pop()
    bad = tmp_path / "bad.bundle"
    write_bundle(bad, frames, source="simulate")
    frame = CHECKPOINT_EVERY + 2
    assert len(_provider(bad, frame, DTraceSettings())[1].source.take()) == frame + 1
    assert _exposition(bad, frame) == _exposition(old, frame)


class _Served:
    """A replay served as ``serve --replay`` serves it (not pinned: it advances with the
    clock, at ``speed``), on a clock the test moves."""

    def __init__(self, path: Path, speed: float = 1.0,
                 settings: DTraceSettings | None = None) -> None:
        bundle = read_packed(path)
        self.times = [f.time for f in bundle.frames]
        self.now = 0.0
        self.replay = ReplaySource(bundle, speed=speed, clock=lambda: self.now)
        self.provider = replay_provider(settings or DTraceSettings(), self.replay)

    def at_frame(self, index: int) -> bytes:
        """A scrape once the replay is half a step into frame ``index``."""
        half = (self.times[1] - self.times[0]) / 2
        self.now = (self.times[index] - self.times[0] + half) / self.replay.speed
        return _scrape(self.replay, self.provider)

    def after(self, seconds: float) -> bytes:
        self.now += seconds
        return _scrape(self.replay, self.provider)


def _served_alike(new: Path, old: Path, scrapes: list[int]) -> list[int]:
    """Scrape both bundles' replays at the same frames; they must serve the same. The
    checkpoints the one with them restored."""
    jumping, every = _Served(new), _Served(old)
    for frame in scrapes:
        assert jumping.at_frame(frame) == every.at_frame(frame), f"scrape at frame {frame}"
    assert _restored(every.provider) == []
    return _restored(jumping.provider)


@pytest.mark.parametrize(("scrapes", "restored"), [
    # the first scrape comes late (a start long before it, or a fast replay)
    ([FRAMES - 1], [3 * CHECKPOINT_EVERY]),
    ([2 * CHECKPOINT_EVERY + 7], [2 * CHECKPOINT_EVERY]),
    # long pauses between scrapes, then scrapes of the last frame (no frame left)
    ([0, 1, CHECKPOINT_EVERY + 5, 2 * CHECKPOINT_EVERY + 5, FRAMES - 1, FRAMES - 1],
     [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, 3 * CHECKPOINT_EVERY]),
    # a checkpoint crossed when it saves just enough frames, and when it does not
    ([0, CHECKPOINT_EVERY - RESTORE_SAVES, CHECKPOINT_EVERY + 1], [CHECKPOINT_EVERY]),
    ([0, CHECKPOINT_EVERY - RESTORE_SAVES + 1, CHECKPOINT_EVERY + 1], []),
    # frame by frame: never worth it
    (list(range(CHECKPOINT_EVERY - 3, CHECKPOINT_EVERY + 3)), []),
])
def test_a_served_replay_catches_up_from_the_last_checkpoint_it_reached(
    bundles: tuple[Path, Path], scrapes: list[int], restored: list[int]
) -> None:
    assert _served_alike(*bundles, scrapes) == restored


def test_a_faster_replay_catches_up_at_every_scrape(bundles: tuple[Path, Path]) -> None:
    new, old = bundles
    speed = 20.0  # 15 s between scrapes: 300 bundle seconds, 60 frames of 5 s
    jumping, every = _Served(new, speed), _Served(old, speed)
    assert jumping.at_frame(0) == every.at_frame(0)
    for _ in range(4):
        assert jumping.after(15.0) == every.after(15.0)
    assert _restored(jumping.provider) == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY,
                                           3 * CHECKPOINT_EVERY]


def _zone_missing_once(src: Path, index: int, tmp: Path) -> tuple[Path, Path]:
    """``src``'s frames, but frame ``index`` has no deltas and one zone that runs in the
    frames on both sides of it is missing there; (with checkpoints made for them,
    without any)."""
    frames = [dataclasses.replace(f, checkpoint=None) for f in read_bundle(src).frames]
    around = set(zones_of(frames[index - 1].kstats)) & set(zones_of(frames[index + 1].kstats))
    zone = max(around)
    frames[index] = dataclasses.replace(
        frames[index], dtrace=[],
        kstats=[k for k in frames[index].kstats if (k.module, k.instance) != ("zones", zone)])
    new, old = tmp / "missing.bundle", tmp / "missing-old.bundle"
    with BundleWriter(new, Checkpointer(DTraceSettings()), source="simulate") as writer:
        for frame in frames:
            writer.write(dataclasses.replace(frame))
    write_bundle(old, frames, source="simulate")
    return new, old


def test_a_zone_map_of_the_scrapes_own_stops_the_catching_up(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """A scrape that reaches only a frame without deltas applies that frame's zone map
    (its zones' series go): a replay from the first frame with a checkpoint did not, so
    none is restored from then on."""
    new, old = _zone_missing_once(bundles[0], 10, tmp_path)
    assert _served_alike(new, old, [9, 10, CHECKPOINT_EVERY + 5]) == []
    # without the scrape on frame 10 the same checkpoint is restored
    assert _served_alike(new, old, [9, CHECKPOINT_EVERY + 5]) == [CHECKPOINT_EVERY]


def test_after_a_reload_every_frame_is_applied(bundles: tuple[Path, Path]) -> None:
    """A reload reconfigures the accumulator (here a lower series cap): the series it
    kept are not what a checkpoint holds."""
    served = [_Served(path) for path in bundles]
    for s in served:
        s.at_frame(5)
        acc = s.provider.accumulator
        acc.reconfigure(with_zone_buckets(s.provider.specs, "1-2-5"), 10, overrides={})
        assert isinstance(s.provider.source, ReplayDeltas)
        s.provider.source.set_scripts(
            [name for name, (status, _) in acc.status.items() if status == "running"])
    jumping, every = served
    assert b'dtagent_dtrace_series_dropped_total{metric="' in jumping.at_frame(0)
    assert jumping.at_frame(2 * CHECKPOINT_EVERY + 3) == every.at_frame(2 * CHECKPOINT_EVERY + 3)
    assert _restored(jumping.provider) == []


def test_a_checkpoint_that_does_not_fit_is_passed_over_for_an_earlier_one(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    new, old = bundles
    frames = read_bundle(new).frames
    cp = frames[2 * CHECKPOINT_EVERY].checkpoint
    assert cp is not None
    next(a for a in cp["aggs"] if a["series"] and a["series"][0][2])["series"][0][2].pop()
    bad = tmp_path / "bad.bundle"
    write_bundle(bad, frames, source="simulate")
    with capture_logs() as logs:
        restored = _served_alike(bad, old, [0, 2 * CHECKPOINT_EVERY + 3])
    assert restored == [CHECKPOINT_EVERY]
    unused = [e for e in logs if e["event"].startswith("DTrace checkpoint not used")]
    assert [e["frame"] for e in unused] == [2 * CHECKPOINT_EVERY]
    assert "bucket counts" in unused[0]["problem"]


def test_an_anonymized_bundle_keeps_its_checkpoints_with_the_names_replaced(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    new, _ = bundles
    anon_path = tmp_path / "anon.bundle"
    anon = anonymize_bundle(new, anon_path, key=b"k" * 32)
    frames = read_bundle(anon_path).frames
    assert [i for i, f in enumerate(frames) if f.checkpoint is not None] == [
        CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, 3 * CHECKPOINT_EVERY]
    zone = next(name for name in zones_of(read_bundle(new).frames[0].kstats).values()
                if name != "global")
    assert zone in anon.mapping
    text = json.dumps([f.checkpoint for f in frames])
    assert zone not in text and anon.mapping[zone] in text
    for frame in (CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY + 7):
        replay, provider = _provider(anon_path, frame, DTraceSettings())
        served = _scrape(replay, provider)
        assert _restored(provider) == [frame // CHECKPOINT_EVERY * CHECKPOINT_EVERY]
        original = _exposition(new, frame)
        assert zone.encode() in original
        assert served == anon.text(original.decode()).encode()


def test_a_checkpoint_whose_zones_disagree_with_its_frame_is_not_used(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    """A zone map that is not that of its frame (a running zone left out) says the
    checkpoint was not made from these frames: it is passed over for the one before."""
    new, old = bundles
    frames = read_bundle(new).frames
    at = 2 * CHECKPOINT_EVERY
    cp = frames[at].checkpoint
    assert cp is not None
    with_series = {row[1] for a in cp["aggs"] for row in a["series"]} - {None, "global"}
    cp["zones"] = [z for z in cp["zones"] if z[1] != min(with_series)]
    bad = tmp_path / "zones.bundle"
    write_bundle(bad, frames, source="simulate")
    with capture_logs() as logs:
        replay, provider = _provider(bad, at, DTraceSettings())
        assert _scrape(replay, provider) == _exposition(old, at)
        assert _restored(provider) == [CHECKPOINT_EVERY]
        assert _served_alike(bad, old, [0, at]) == [CHECKPOINT_EVERY]
    unused = [e for e in logs if e["event"].startswith("DTrace checkpoint not used")]
    assert [e["frame"] for e in unused] == [at, at]
    assert "zone map" in unused[0]["problem"]
