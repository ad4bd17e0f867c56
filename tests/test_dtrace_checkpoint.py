"""DTrace checkpoints in bundles: a replay pinned to frame N starts from the last
checkpoint at or before N and applies only the deltas after it, and serves exactly
what applying every frame from the first serves."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from dtagent.bundle import BundleError, decode_frame, encode_frame, read_bundle, write_bundle
from dtagent.dtrace.provider import (
    CHECKPOINT_EVERY,
    DELTA_AGE,
    Checkpointer,
    DTraceMetrics,
    DTraceSettings,
    replay_provider,
)
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


def _exposition(path: Path, frame: int, settings: DTraceSettings | None = None) -> bytes:
    replay, provider = _provider(path, frame, settings or DTraceSettings())
    snap = HostSnapshot(replay.kstats(), CommandResults(), time=replay.time(), illumos=True)
    text = render(provider.families(snap))
    # the age of the last batch is wall time since it was taken, not the bundle's
    age, n = re.subn(rb"(?m)^(" + DELTA_AGE.name.encode() + rb") \S+$", rb"\1 AGE", text)
    assert n == 1
    return age


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
