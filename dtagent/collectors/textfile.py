"""Operators' own metrics: ``*.prom`` files in a directory, node_exporter's textfile
convention (files written atomically by others: write ``x.prom.$$`` then rename).

Each file is parsed with prometheus-client's text parser and checked: a file that does
not parse, that repeats a series, or that defines a metric the agent exports itself
(``illumos_*``, ``dtagent_*``) is left out whole and reported with
``dtagent_textfile_scrape_error 1``; every file's modification time is exported so a
writer that stopped is visible. Counters, gauges and untyped metrics keep their type;
histograms and summaries become untyped series (dtagent.parsers.textformat).

This collector reads the directory itself (as node_exporter's does): files are small and
local, and reading them is bounded by ``max_bytes`` per file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dtagent.collectors.base import Collector
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.textformat import TextFormatError, parse_exposition
from dtagent.settings import integer, text
from dtagent.snapshot import HostSnapshot

ERROR = MetricSpec(
    "dtagent_textfile_scrape_error",
    "gauge",
    "1 when at least one *.prom file of the textfile directory could not be read or was "
    "refused (see the agent's log), else 0.",
    (),
    "",
    "[collectors.textfile] directory",
)
MTIME = MetricSpec(
    "dtagent_textfile_mtime_seconds",
    "gauge",
    "Modification time of each *.prom file of the textfile directory, Unix time.",
    ("file",),
    "seconds",
    "[collectors.textfile] directory",
)


class TextfileCollector(Collector):
    name = "textfile"
    description = "Operators' own metrics from *.prom files in a directory (node_exporter's "
    "textfile convention), with a scrape error flag and each file's mtime"
    specs = (ERROR, MTIME)
    illumos_only = False
    settings = {
        "directory": text(
            "",
            "directory of *.prom files (empty: the collector exports nothing)",
            expected="a directory path, or empty",
        ),
        "max_bytes": integer(
            4 * 1024 * 1024,
            "largest file read; a larger one is refused",
            minimum=1,
            maximum=1 << 30,
        ),
    }

    def __init__(self, directory: str = "", max_bytes: int = 4 * 1024 * 1024) -> None:
        super().__init__()
        self.directory = directory
        self.max_bytes = max_bytes

    def _refuse(self, path: Path, reason: str) -> None:
        self.warn_once(f"{path}:{reason}", "textfile refused", file=str(path), reason=reason)

    def _read(self, path: Path) -> list[MetricFamily] | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            self._refuse(path, f"cannot read ({exc.strerror})")
            return None
        if len(data) > self.max_bytes:
            self._refuse(path, f"larger than {self.max_bytes} bytes")
            return None
        try:
            return parse_exposition(data.decode("utf-8"), f"textfile {path.name}")
        except UnicodeDecodeError:
            self._refuse(path, "not UTF-8")
        except TextFormatError as exc:
            self._refuse(path, str(exc))
        return None

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        if not self.directory:
            return []
        error = ERROR.family()
        mtime = MTIME.family()
        families: list[MetricFamily] = []
        names: dict[str, str] = {}
        failed = False
        try:
            entries = sorted(Path(self.directory).glob("*.prom"))
        except OSError as exc:
            self._refuse(Path(self.directory), f"cannot list ({exc.strerror})")
            entries = []
            failed = True
        if not Path(self.directory).is_dir():
            self._refuse(Path(self.directory), "not a directory")
            failed = True
        for path in entries:
            try:
                mtime.add((path.name,), os.stat(path).st_mtime)
            except OSError:
                failed = True
                continue
            fams = self._read(path)
            if fams is None:
                failed = True
                continue
            clash = next((f.name for f in fams if f.name in names), None)
            if clash is not None:
                self._refuse(path, f"{clash} is also defined in {names[clash]}")
                failed = True
                continue
            for f in fams:
                names[f.name] = path.name
            families.extend(fams)
        error.add((), 1 if failed else 0)
        return [error, *([mtime] if len(mtime) else []), *families]
