"""The textfile source and collector: node_exporter's *.prom convention, bad files,
clashes, size limits, through the source and through the real runtime."""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.collectors.textfile import TextfileCollector
from dtagent.config import load
from dtagent.exposition import render
from dtagent.runtime import build
from dtagent.snapshot import (
    CommandResults,
    HostSnapshot,
    KstatSnapshot,
    Textfile,
    TextfileListing,
    TextfileRequest,
)
from dtagent.sources.textfile import LiveTextfiles, read_directory
from tests.helpers import samples_of


def snap_for(collector: TextfileCollector) -> HostSnapshot:
    """A snapshot holding what the textfile source reads for ``collector`` now."""
    files = LiveTextfiles().textfiles(list(collector.textfiles()))
    return HostSnapshot(KstatSnapshot(), CommandResults(), time=0.0, textfiles=files)


def test_good_files_with_their_types_and_mtimes(tmp_path: Path) -> None:
    (tmp_path / "backup.prom").write_text(
        "# HELP backup_last_success_seconds When the last backup finished.\n"
        "# TYPE backup_last_success_seconds gauge\n"
        'backup_last_success_seconds{dataset="zones/a"} 1.79e9\n'
        "backup_last_success_seconds 5\n"
        "# TYPE backup_runs_total counter\n"
        "backup_runs_total 12\n"
    )
    os.utime(tmp_path / "backup.prom", (1_790_000_000, 1_790_000_000))
    (tmp_path / "ignored.txt").write_text("garbage")
    (tmp_path / "half.prom.1234").write_text("garbage")  # a writer's file before its rename
    collector = TextfileCollector(directory=str(tmp_path))
    snap = snap_for(collector)
    got = samples_of(collector, snap)
    assert got[("dtagent_textfile_scrape_error", ())] == 0
    assert got[("dtagent_textfile_mtime_seconds", ("backup.prom",))] == 1_790_000_000
    assert got[("backup_last_success_seconds", ("zones/a",))] == 1.79e9
    assert got[("backup_last_success_seconds", ("",))] == 5
    assert got[("backup_runs_total", ())] == 12
    assert {k[1] for k in got if k[0] == "dtagent_textfile_mtime_seconds"} == {("backup.prom",)}
    text = render(collector.collect(snap)).decode()
    assert "# TYPE backup_runs_total counter" in text


def test_bad_clashing_and_own_names_are_refused_whole(tmp_path: Path) -> None:
    (tmp_path / "a.prom").write_text("good_metric 1\n")
    (tmp_path / "b.prom").write_text("good_metric 2\nother 3\n")  # clashes with a.prom
    (tmp_path / "c.prom").write_text("this is { not the format\n")
    (tmp_path / "d.prom").write_text("illumos_zpool_health 1\n")
    (tmp_path / "e.prom").write_text("dup 1\ndup 2\n")
    (tmp_path / "f.prom").write_bytes(b"latin1_metric{x=\"\xe9\"} 1\n")
    collector = TextfileCollector(directory=str(tmp_path))
    with structlog.testing.capture_logs() as logs:
        got = samples_of(collector, snap_for(collector))
    assert got[("dtagent_textfile_scrape_error", ())] == 1
    assert got[("good_metric", ())] == 1
    assert {k[1][0] for k in got if k[0] == "dtagent_textfile_mtime_seconds"} == {
        "a.prom", "b.prom", "c.prom", "d.prom", "e.prom", "f.prom"}
    assert not any(k[0] in ("other", "dup", "illumos_zpool_health", "latin1_metric")
                   for k in got)
    refused = {r["file"]: r["reason"] for r in logs if r["event"] == "textfile refused"}
    assert sorted(refused) == ["b.prom", "c.prom", "d.prom", "e.prom", "f.prom"]
    assert refused["b.prom"] == "good_metric is also defined in a.prom"
    assert refused["f.prom"] == "not UTF-8 (byte 17)"


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    collector = TextfileCollector(directory=str(tmp_path / "nope"))
    with structlog.testing.capture_logs() as logs:
        got = samples_of(collector, snap_for(collector))
    assert got == {("dtagent_textfile_scrape_error", ()): 1}
    assert [r["reason"] for r in logs] == [f"directory {tmp_path / 'nope'}: no such directory"]
    assert samples_of(TextfileCollector(), snap_for(TextfileCollector())) == {}


def test_the_source_refuses_what_it_must_not_read(tmp_path: Path) -> None:
    """Sizes are checked before reading; a FIFO (which a plain open would block on
    until a writer came) and a directory are not read at all."""
    (tmp_path / "big.prom").write_text("x 1\n" * 100)
    (tmp_path / "small.prom").write_text("y 1\n")
    os.mkfifo(tmp_path / "fifo.prom")
    (tmp_path / "dir.prom").mkdir()
    (tmp_path / "unreadable.prom").write_text("z 1\n")
    (tmp_path / "unreadable.prom").chmod(0)
    listing = read_directory(TextfileRequest(str(tmp_path), max_bytes=100))
    files = {f.name: f for f in listing.files}
    assert listing.error is None
    assert files["big.prom"].error == "larger than 100 bytes (400 bytes)"
    assert files["big.prom"].text == "" and files["big.prom"].mtime is not None
    assert files["small.prom"].text == "y 1\n" and files["small.prom"].error is None
    assert files["fifo.prom"].error == "not a regular file"
    assert files["dir.prom"].error == "not a regular file"
    if os.geteuid() != 0:  # root reads a file whatever its mode
        assert files["unreadable.prom"].error == "cannot read (Permission denied)"
    assert read_directory(TextfileRequest(str(tmp_path / "small.prom"))).error == (
        "not a directory")


def test_an_oversized_file_through_the_runtime(tmp_path: Path) -> None:
    """The real agent: an oversized file is refused with the error flag and one log line
    naming it, the other files are served."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a-good.prom").write_text("site_backup_ok 1\n")
    (tmp_path / "t" / "b-huge.prom").write_text("site_huge 1\n" * 1000)
    (tmp_path / "t" / "c-good.prom").write_text("site_other 2\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[collectors.textfile]\ndirectory = "{tmp_path / "t"}"\n'
                    "max_bytes = 1024\n[dtrace]\nenabled = false\n")
    rt = build(load(conf))
    try:
        with structlog.testing.capture_logs() as logs:
            got = {(f.name, tuple(lv)): v for f in rt.agent.collect() for lv, v in f.samples}
            rt.agent.collect(fresh=True)  # logged once, not at every scrape
    finally:
        rt.close()
    assert got[("site_backup_ok", ())] == 1 and got[("site_other", ())] == 2
    assert ("site_huge", ()) not in got
    assert got[("dtagent_textfile_scrape_error", ())] == 1
    assert ("dtagent_textfile_mtime_seconds", ("b-huge.prom",)) in got
    assert got[("dtagent_collector_success", ("textfile",))] == 1
    refused = [r for r in logs if r["event"] == "textfile refused"]
    assert [(r["file"], r["reason"]) for r in refused] == [
        ("b-huge.prom", "larger than 1024 bytes (12000 bytes)")]


TEXT = st.text(st.sampled_from("abc_{}=\"\\ #\n1.e+-\t,xTYPE"), max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TEXT, st.none() | TEXT, st.none() | st.floats()), max_size=4),
       st.none() | TEXT)
def test_no_textfile_content_makes_the_collector_raise(
    files: list[tuple[str, str | None, float | None]], listing_error: str | None,
) -> None:
    collector = TextfileCollector(directory="/d")
    listing = TextfileListing(
        tuple(Textfile(f"f{i}.prom", mtime, text, error)
              for i, (text, error, mtime) in enumerate(files)), listing_error)
    snap = HostSnapshot(KstatSnapshot(), CommandResults(), time=0.0,
                        textfiles={collector.request: listing})
    got = samples_of(collector, snap)  # raises nothing, and never a series twice
    refused = listing_error is not None or any(e is not None for _, e, _ in files)
    assert got[("dtagent_textfile_scrape_error", ())] in ((1,) if refused else (0, 1))
