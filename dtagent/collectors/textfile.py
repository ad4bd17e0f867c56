"""Operators' own metrics: ``*.prom`` files in a directory, node_exporter's textfile
convention (files written atomically by others: write ``x.prom.$$`` then rename).

The textfile source (dtagent.sources.textfile) reads the files, bounded in size; this
collector parses and checks what it read: a file that could not be read or was too
large, that does not parse, that repeats a series, or that defines a metric the agent
exports itself (``illumos_*``, ``dtagent_*``) is left out whole, logged once with the
file and the reason, and reported with ``dtagent_textfile_scrape_error 1``; every
file's modification time is exported so a writer that stopped is visible. Counters,
gauges and untyped metrics keep their type; histograms and summaries become untyped
series (dtagent.parsers.textformat).
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.textformat import TextFormatError, parse_exposition
from dtagent.settings import integer, text
from dtagent.snapshot import TEXTFILE_MAX_BYTES, HostSnapshot, Textfile, TextfileRequest

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
            TEXTFILE_MAX_BYTES,
            "largest file read; a larger one is refused",
            minimum=1,
            maximum=1 << 30,
        ),
    }

    def __init__(self, directory: str = "", max_bytes: int = TEXTFILE_MAX_BYTES) -> None:
        super().__init__()
        self.request = TextfileRequest(directory, max_bytes)

    def textfiles(self) -> Iterable[TextfileRequest]:
        return (self.request,)

    def _refuse(self, name: str, reason: str) -> None:
        self.warn_once(f"{name}:{reason}", "textfile refused", directory=self.request.directory,
                       file=name, reason=reason)

    def _parse(self, file: Textfile) -> list[MetricFamily] | None:
        if file.error is not None:
            self._refuse(file.name, file.error)
            return None
        try:
            return parse_exposition(file.text, f"textfile {file.name}")
        except TextFormatError as exc:
            self._refuse(file.name, str(exc))
        return None

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        listing = snap.textfiles.get(self.request)
        if listing is None:
            return []  # no directory configured
        error = ERROR.family()
        mtime = MTIME.family()
        families: list[MetricFamily] = []
        names: dict[str, str] = {}
        failed = listing.error is not None
        if listing.error is not None:
            self._refuse("", f"directory {self.request.directory}: {listing.error}")
        for file in listing.files:
            if file.mtime is not None:
                mtime.add((file.name,), file.mtime)
            fams = self._parse(file)
            if fams is None:
                failed = True
                continue
            clash = next((f.name for f in fams if f.name in names), None)
            if clash is not None:
                self._refuse(file.name, f"{clash} is also defined in {names[clash]}")
                failed = True
                continue
            for f in fams:
                names[f.name] = file.name
            families.extend(fams)
        error.add((), 1 if failed else 0)
        return [error, *([mtime] if len(mtime) else []), *families]
