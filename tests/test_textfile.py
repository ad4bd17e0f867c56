"""The textfile collector: node_exporter's *.prom convention, bad files, clashes."""

from __future__ import annotations

import os
from pathlib import Path

from dtagent.collectors.textfile import TextfileCollector
from dtagent.exposition import render
from dtagent.snapshot import HostSnapshot, KstatSnapshot
from dtagent.sources.commands import NoCommands
from tests.helpers import samples_of

SNAP = HostSnapshot(KstatSnapshot(), NoCommands(), time=0.0)


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
    collector = TextfileCollector(directory=str(tmp_path))
    got = samples_of(collector, SNAP)
    assert got[("dtagent_textfile_scrape_error", ())] == 0
    assert got[("dtagent_textfile_mtime_seconds", ("backup.prom",))] == 1_790_000_000
    assert got[("backup_last_success_seconds", ("zones/a",))] == 1.79e9
    assert got[("backup_last_success_seconds", ("",))] == 5
    assert got[("backup_runs_total", ())] == 12
    text = render(collector.collect(SNAP)).decode()
    assert "# TYPE backup_runs_total counter" in text


def test_bad_clashing_and_own_names_are_refused_whole(tmp_path: Path) -> None:
    (tmp_path / "a.prom").write_text("good_metric 1\n")
    (tmp_path / "b.prom").write_text("good_metric 2\nother 3\n")  # clashes with a.prom
    (tmp_path / "c.prom").write_text("this is { not the format\n")
    (tmp_path / "d.prom").write_text("illumos_zpool_health 1\n")
    (tmp_path / "e.prom").write_text("dup 1\ndup 2\n")
    got = samples_of(TextfileCollector(directory=str(tmp_path)), SNAP)
    assert got[("dtagent_textfile_scrape_error", ())] == 1
    assert got[("good_metric", ())] == 1
    assert {k[1][0] for k in got if k[0] == "dtagent_textfile_mtime_seconds"} == {
        "a.prom", "b.prom", "c.prom", "d.prom", "e.prom"}
    assert not any(k[0] in ("other", "dup", "illumos_zpool_health") for k in got)


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    got = samples_of(TextfileCollector(directory=str(tmp_path / "nope")), SNAP)
    assert got == {("dtagent_textfile_scrape_error", ()): 1}
    assert samples_of(TextfileCollector(), SNAP) == {}
