"""Bundles: write, read back exactly, refuse bad files clearly; replay advances with time."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from dtagent.bundle import (
    BundleError,
    Frame,
    PackedFrames,
    iter_frames,
    read_bundle,
    read_packed,
    write_bundle,
)
from dtagent.snapshot import (
    KSTAT_TYPE_IO,
    CommandRequest,
    CommandResult,
    Kstat,
    PluginRequest,
    PluginRun,
    Textfile,
    TextfileListing,
    TextfileRequest,
)
from dtagent.sources.replay import ReplaySource
from dtagent.zonemap import zones_of


def frames() -> list[Frame]:
    return [
        Frame(
            time=100.0 + 10 * i,
            kstats=[
                Kstat(
                    "zones",
                    3,
                    "web",
                    "zone_misc",
                    data={"zonename": "web", "nsec_user": 10 * i, "avg": 0.5},
                ),
                Kstat("zfs", 0, "zones", "disk", KSTAT_TYPE_IO, data={"reads": i}),
            ],
            commands=[CommandResult(("vmadm", "list"), 0, f"out{i}\n")] if i != 1 else [],
            dtrace=[{"script": "s", "agg": "a", "value": i}],
        )
        for i in range(3)
    ]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    assert write_bundle(path, frames(), source="test") == 3
    bundle = read_bundle(path)
    assert bundle.header["source"] == "test"
    assert bundle.frames == frames()
    ks = bundle.frames[2].kstats[0]
    assert isinstance(ks.data["avg"], float) and isinstance(ks.data["nsec_user"], int)


def test_plugin_runs_and_textfiles_round_trip_and_replay(tmp_path: Path) -> None:
    """Recorded when they changed (None: nothing recorded in that frame, [] : no plugins
    at that moment); replay serves the latest record at or before the frame, for any
    directory asked."""
    ok = PluginRun("10-ok", 0, "site_up 1\n", duration=0.25, finished=1_790_000_000.5)
    bad = PluginRun("20-bad", 3, stderr="oops", duration=0.01, finished=1_790_000_001.0)
    files = TextfileListing((Textfile("a.prom", 1_789_999_000.0, "x 1\n"),
                             Textfile("big.prom", 1_789_999_001.0, error="larger than 9 bytes")))
    recorded = [
        Frame(time=100.0),
        Frame(time=110.0, plugins=[ok, bad], textfiles=files),
        Frame(time=120.0),
        Frame(time=130.0, plugins=[], textfiles=TextfileListing(error="no such directory")),
    ]
    path = tmp_path / "b.bundle"
    write_bundle(path, recorded)
    assert read_bundle(path).frames == recorded
    packed = read_packed(path)
    assert packed.frames[1] == recorded[1] and packed.frames[2].plugins is None
    want = [PluginRequest("/anywhere"), PluginRequest("")]
    files_wanted = [TextfileRequest("/else")]
    seen = []
    for frame in range(4):
        replay = ReplaySource(packed, pin=frame)
        assert replay.has_plugins and replay.has_textfiles
        seen.append((replay.plugin_runs(want), replay.textfiles(files_wanted)))
    assert seen[0] == ({}, {})
    assert seen[1] == seen[2] == ({want[0]: (ok, bad), want[1]: (ok, bad)},
                                  {files_wanted[0]: files})
    assert seen[3] == ({want[0]: (), want[1]: ()},
                       {files_wanted[0]: TextfileListing(error="no such directory")})
    assert not ReplaySource(read_packed(_raw(tmp_path / "none.bundle", [HEADER, '{"t": 1}']))
                            ).has_plugins


def _raw(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


HEADER = json.dumps({"format": "dtagent-bundle", "version": 1})


def _kstat_frame(data: str, extra: str = "") -> str:
    return '{"t": 1, "kstats": [{"m": "a", "i": 0, "n": "x"' + extra + ', "d": ' + data + "}]}"


# Each bad bundle with the one line it gets: the file, the frame and the field.
BAD_BUNDLES = [
    (["{}"], ": header (line 1): not a dtagent-bundle file"),
    ([json.dumps({"format": "dtagent-bundle", "version": 9})], "bundle version 9"),
    ([HEADER[:-1] + ', "host": "\\udcff"}'], ": header (line 1): field host: not valid UTF-8"),
    ([HEADER], "bundle has no frames"),
    ([HEADER, "{oops"], ": frame 0 (line 2): not JSON"),
    ([HEADER, '{"kstats": []}'], ": frame 0 (line 2): field t: expected the frame time"),
    ([HEADER, '{"t": NaN}'], ": frame 0 (line 2): not a valid number (NaN is not a finite"),
    ([HEADER, '{"t": 1e400}'], ": frame 0 (line 2): not a valid number (1e400 is not a finite"),
    ([HEADER, '{"t": "1"}'], "frame 0 (line 2): field t: expected the frame time in seconds"),
    ([HEADER, '{"t": 1, "kstats": [{"m": "a"}]}'], ": kstats[0]: kstat without 'i'"),
    (
        [HEADER, _kstat_frame('{"v": [1]}')],
        "frame 0 (line 2): kstats[0]: field d.v: a:0:x:v has a list value",
    ),
    (
        [HEADER, _kstat_frame('{"zonename": "\\udcff"}')],
        "frame 0 (line 2): field kstats[0].d.zonename: not valid UTF-8 text (lone surrogate "
        "U+DCFF)",
    ),
    (
        [HEADER, _kstat_frame('{"\\ud800x": 1}')],
        "frame 0 (line 2): field kstats[0].d.\\ud800x: name not valid UTF-8 text",
    ),
    (
        [HEADER, _kstat_frame("{}", ', "s": "soon"')],
        "frame 0 (line 2): kstats[0]: field s: kstat 'a':0:'x': expected a snaptime in "
        "nanoseconds, got 'soon'",
    ),
    (
        [HEADER, _kstat_frame("{}", ', "s": -1')],
        "kstats[0]: field s: kstat 'a':0:'x': expected a snaptime in nanoseconds, got -1",
    ),
    (
        [HEADER, _kstat_frame(f'{{"v": {1 << 64}}}')],
        "frame 0 (line 2): kstats[0]: field d.v: a:0:x:v is outside the 64-bit range",
    ),
    (
        [HEADER, '{"t": 1, "dtrace": [{"script": "s", "value": ' + str(1 << 80) + '}]}'],
        "frame 0 (line 2): field dtrace[0].value: integer outside the 64-bit range",
    ),
    (
        [HEADER, '{"t": 1, "dtrace": [{"script": "s\\u00e9", "key": [{"a": 1}]}]}'],
        "frame 0 (line 2): field dtrace[0].key: expected a list of numbers, strings or",
    ),
    (
        [HEADER, _kstat_frame('{"v": %s}' % ("9" * 5000))],
        "frame 0 (line 2): not a valid number (Exceeds the limit",
    ),
    (
        [HEADER, '{"t": 1, "dtrace": [{"key": ' + "[" * 5000 + "]" * 5000 + "}]}"],
        "frame 0 (line 2): nested more than 8 levels deep",
    ),
    (
        [HEADER, '{"t": 1, "dtrace": [{"key": ' + "[" * 8 + "]" * 8 + "}]}"],
        "frame 0 (line 2): field dtrace[0].key: expected a list of numbers, strings or [lo, n]",
    ),
    (
        [HEADER, '{"t": 1, "dtrace": [{"script": "\\udcff"}]}'],
        "frame 0 (line 2): field dtrace[0].script: not valid UTF-8 text",
    ),
    ([HEADER, '{"t": 1, "kstats": [{"m": "a", "i": 1e3, "n": "x"}]}'], "field i: kstat"),
    ([HEADER, '{"t": 2}', '{"t": 1}'], ": frame 1 (line 3): field t: frame time goes backwards"),
    ([HEADER, '{"t": 1, "commands": [{"argv": []}]}'], "'argv' must be a non-empty list"),
    (
        [HEADER, '{"t": 1, "commands": [{"argv": ["x"], "rc": 1.5}]}'],
        "frame 0 (line 2): commands[0]: field rc: command ['x']: expected an exit status",
    ),
    ([HEADER, '{"t": 1, "plugins": {}}'], "frame 0 (line 2): field plugins: expected a list"),
    (
        [HEADER, '{"t": 1, "plugins": [{"name": "../x"}]}'],
        "frame 0 (line 2): plugins[0]: field name: expected a plugin's file name, got '../x'",
    ),
    (
        [HEADER, '{"t": 1, "plugins": [{"name": "p", "finished": ' + str(10**400) + "}]}"],
        "frame 0 (line 2): plugins[0]: field finished: plugin 'p': expected seconds",
    ),
    (
        [HEADER, '{"t": 1, "plugins": [{"name": "p", "stdout": 5}]}'],
        "frame 0 (line 2): plugins[0]: field stdout/stderr: plugin 'p': expected strings",
    ),
    (
        [HEADER, '{"t": 1, "textfiles": []}'],
        "frame 0 (line 2): textfiles: expected an object with a 'files' list",
    ),
    (
        [HEADER, '{"t": 1, "textfiles": {"files": [{"name": "x.txt"}]}}'],
        "frame 0 (line 2): textfiles.files[0]: field name: expected a *.prom file name, "
        "got 'x.txt'",
    ),
    (
        [HEADER, '{"t": 1, "textfiles": {"files": [{"name": "a.prom", "text": "\\udcff"}]}}'],
        "frame 0 (line 2): field textfiles.files[0].text: not valid UTF-8 text",
    ),
    (
        [HEADER, '{"t": 1, "textfiles": {"files": [{"name": "a.prom", "mtime": "now"}]}}'],
        "frame 0 (line 2): textfiles.files[0]: field mtime: textfile 'a.prom': expected Unix",
    ),
]


@pytest.mark.parametrize(("lines", "message"), BAD_BUNDLES)
def test_bad_bundles_are_refused_clearly(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _raw(tmp_path / "bad.bundle", lines)
    for read in (read_bundle, read_packed):  # the replay's reader checks every frame too
        with pytest.raises(BundleError) as err:
            read(path)
        assert str(path) in str(err.value) and message in str(err.value)


def test_not_gzip_and_missing(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bundle"
    plain.write_text("hello")
    with pytest.raises(BundleError, match="not a readable bundle"):
        read_bundle(plain)
    with pytest.raises(BundleError, match="no such bundle"):
        read_bundle(tmp_path / "missing.bundle")


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def bad() -> list[Frame]:
        return [Frame(time=2.0), Frame(time=1.0)]

    with pytest.raises(ValueError):
        write_bundle(tmp_path / "x.bundle", bad())
    assert list(tmp_path.iterdir()) == []


def _values(replay: ReplaySource) -> list[list[int]]:
    return [[d["value"] for d in records] for records, _ in replay.dtrace_batches()]


def _run(replay: ReplaySource, argv: list[str]) -> CommandResult:
    """The replay's answer to one request for ``argv``."""
    res = replay.results([CommandRequest(tuple(argv), refresh=60)]).get(argv)
    assert res is not None
    return res


def test_replay_advances_with_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    write_bundle(path, frames())
    now = [0.0]
    replay = ReplaySource(read_bundle(path), speed=2.0, clock=lambda: now[0])
    assert replay.kstats().get("zones", 3, "web").data["nsec_user"] == 0  # type: ignore[union-attr]
    assert _run(replay, ["vmadm", "list"]).stdout == "out0\n"
    assert _values(replay) == [[0]]
    now[0] = 5.0  # ×2 speed: 10 bundle seconds later, frame 1 (which has no command record)
    assert replay.time() == 110.0
    res = _run(replay, ["vmadm", "list"])
    assert (res.stdout, res.age) == ("out0\n", 10.0)
    now[0] = 100.0  # past the end: the last frame stays
    assert replay.time() == 120.0
    assert _run(replay, ["vmadm", "list"]).stdout == "out2\n"
    assert _values(replay) == [[1], [2]]  # one batch per frame
    assert replay.dtrace_batches() == []
    missing = _run(replay, ["zfs", "list"])
    assert not missing.ok and missing.error == "not recorded in the bundle"


def test_replay_pinned_to_a_frame(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    write_bundle(path, frames())
    assert ReplaySource.open(str(path), frame=1).time() == 110.0
    assert ReplaySource.open(str(path), frame=-1).time() == 120.0
    with pytest.raises(BundleError, match="no frame 3"):
        ReplaySource.open(str(path), frame=3)


def test_frames_stream_one_at_a_time_and_a_bad_line_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "stream.bundle"
    header = json.dumps({"format": "dtagent-bundle", "version": 1})
    good = [json.dumps({"t": float(t), "kstats": []}) for t in (1, 2)]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join([header, *good, "{broken"]) + "\n")
    frames = iter_frames(path)
    assert next(frames).time == 1.0
    assert next(frames).time == 2.0
    with pytest.raises(BundleError, match=r"stream.bundle: frame 2 \(line 4\): "):
        next(frames)


def test_packed_frames_are_the_frames_read_whole(tmp_path: Path) -> None:
    """Replay keeps frames compressed; each decodes to exactly the frame read whole."""
    from dtagent.simulate import EPOCH, frames
    from dtagent.simulate.model import make_host

    path = tmp_path / "sim.bundle"
    write_bundle(path, frames(make_host(4, 3, EPOCH, 5.0, 60.0), 6), source="test")
    whole = read_bundle(path).frames
    packed = PackedFrames(path)
    assert len(packed) == len(whole) == 6
    assert packed.times == [f.time for f in whole]
    assert [packed.has_dtrace(i) for i in range(6)] == [bool(f.dtrace) for f in whole]
    assert packed.commands == [f.commands for f in whole]
    for i in (0, 5, 2, -1):
        assert packed[i] == whole[i]
    for i, frame in enumerate(whole):
        assert packed.dtrace(i) == frame.dtrace
        assert packed.zones[i] == zones_of(frame.kstats)
    assert any(packed.dtrace(i) for i in range(len(packed)))
    assert all(len(z) == 4 for z in packed.zones)


def _with_bad_frame(path: Path, bad: int) -> None:
    """Rewrite a bundle with frame ``bad`` made unreadable, its header kept."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    lines[1 + bad] = re.sub(r'"t":[0-9.]+', '"t":"soon"', lines[1 + bad], count=1)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def test_a_written_bundle_says_in_its_header_what_its_frames_hold(tmp_path: Path) -> None:
    from dtagent.bundle import Contents, header_contents, read_header

    path = tmp_path / "b.bundle"
    write_bundle(path, [*frames(), Frame(time=130.0, dtrace=[{"script": "t", "agg": "x"}])],
                 source="test")
    header = read_header(path)
    assert header["source"] == "test"
    assert header_contents(header) == Contents(frozenset({"s", "t"}), False, False)
    assert len(read_bundle(path).frames) == 4  # the header member and the frames read as one
    old = tmp_path / "old.bundle"  # a bundle written before headers said it
    with gzip.open(old, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": "dtagent-bundle", "version": 1}) + "\n")
        fh.write(json.dumps({"t": 1.0, "kstats": []}) + "\n")
    assert header_contents(read_header(old)) is None
    replay = ReplaySource.open(str(old))
    assert replay.watcher is None and replay.dtrace_scripts() == set()  # read whole first
    with gzip.open(old, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": "dtagent-bundle", "version": 1,
                             "dtrace_scripts": "runq"}) + "\n")
    with pytest.raises(BundleError, match="field dtrace_scripts: expected a list"):
        read_header(old)


def test_a_served_replay_starts_on_its_first_frame_and_stops_at_a_bad_later_one(
    tmp_path: Path,
) -> None:
    from structlog.testing import capture_logs

    path = tmp_path / "b.bundle"
    write_bundle(path, [*frames(), *(Frame(time=130.0 + 10 * i) for i in range(3))])
    _with_bad_frame(path, 3)
    with pytest.raises(BundleError, match=r"frame 3 \(line 5\): field t"):
        read_packed(path)  # read whole (scrape --frame, checks): refused at once
    with capture_logs() as logs:
        replay = ReplaySource.open(str(path))  # served: the first frame is enough to start
        assert replay.watcher is not None
        assert replay.kstats().get("zones", 3, "web") is not None
        replay.watcher.join(10)
    failed = [e for e in logs if e["event"].startswith("bundle check failed")]
    assert len(failed) == 1 and failed[0]["last_good_frame"] == 2
    assert "frame 3 (line 5): field t" in failed[0]["problem"]
    assert len(replay.frames) == 3
    replay._start -= 3600  # an hour later: still the last good frame
    assert replay.time() == 120.0
    assert replay.dtrace_scripts() == {"s"}


def test_a_served_replay_of_a_good_bundle_reaches_every_frame(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    path = tmp_path / "b.bundle"
    write_bundle(path, frames())
    now = [0.0]
    with capture_logs() as logs:
        replay = ReplaySource(read_packed(path, background=True), clock=lambda: now[0])
        assert replay.watcher is not None
        replay.watcher.join(10)
    assert [e["frames"] for e in logs if e["event"] == "bundle checked"] == [3]
    now[0] = 25.0
    assert replay.time() == 120.0
    assert _run(replay, ["vmadm", "list"]).stdout == "out2\n"
    assert _values(replay) == [[0], [1], [2]]


def test_a_replay_pinned_to_a_frame_reads_no_frame_after_it(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    write_bundle(path, [*frames(), *(Frame(time=130.0 + 10 * i) for i in range(3))])
    _with_bad_frame(path, 4)
    pinned = ReplaySource.open(str(path), frame=1)
    assert pinned.time() == 110.0 and len(pinned.frames) == 2
    assert _values(pinned) == [[0], [1]]
    with pytest.raises(BundleError, match=r"frame 4 \(line 6\)"):
        ReplaySource.open(str(path), frame=-1)  # the last frame: every frame is read
    with pytest.raises(BundleError, match=r"frame 4 \(line 6\)"):
        ReplaySource.open(str(path), frame=5)
