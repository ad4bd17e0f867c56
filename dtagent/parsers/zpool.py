"""Parsers for ``zpool list -Hp`` and ``zpool status -p``: pool sizes, health, vdev errors
and the last or current scan (scrub or resilver).

Pure functions of the text. Formats, from illumos-gate usr/src/cmd/zpool/zpool_main.c
and zpool(8) (zpool(1M) on older releases):

* ``zpool list -Hp -o name,size,allocated,free,fragmentation,capacity,dedupratio,health``:
  ``-H`` tab-separated without a header, ``-p`` exact values (libzfs
  ``zpool_get_prop`` with ``literal``): bytes as integers, fragmentation and capacity
  as whole percents without ``%``, dedupratio as ``1.00`` without ``x``, a value
  that does not apply as ``-``.
* ``zpool status -p`` (``status_callback``): per pool ``  pool: NAME``, `` state:
  HEALTH``, optional ``status:``/``action:``/``see:`` paragraphs, ``  scan:`` with up to
  two continuation lines (``print_scan_status``), ``config:`` then the vdev tree as
  ``NAME STATE READ WRITE CKSUM [note]`` lines indented two spaces per level below
  the ``NAME`` header (``print_status_config``), the ``logs``/``cache``/``spares``/
  ``special``/``dedup`` sections at the pool's own indent, and an ``errors:`` line.
  ``-p`` prints the error counts exactly; without it (older platforms) they may read
  ``1.2K``, which is accepted. Scan figures are always human-readable (``243M``).

Bad or unseen text never raises: what can be read is returned, and each line that
was not understood is listed in ``bad`` with the reason, so a pool whose vdev tree
has a line of a shape not seen before keeps its health, scan and every other vdev.
A final line without its newline (a truncated output) is refused, never half-read.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from dtagent.parsers import complete_lines

LIST_FIELDS = (
    "name",
    "size",
    "allocated",
    "free",
    "fragmentation",
    "capacity",
    "dedupratio",
    "health",
)
LIST_ARGV = ("zpool", "list", "-Hp", "-o", ",".join(LIST_FIELDS))
STATUS_ARGV = ("zpool", "status", "-p")

# Pool and vdev states: zpool_state_to_name() in libzfs_pool.c, plus SUSPENDED
# (a pool whose I/O is suspended, printed by zpool list's health).
HEALTH_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "REMOVED", "UNAVAIL", "SUSPENDED")
# Section headings inside config: (print_logs / print_l2cache / print_spares and the
# allocation classes of print_class_vdevs).
SECTIONS = {
    "logs": "log",
    "cache": "cache",
    "spares": "spare",
    "special": "special",
    "dedup": "dedup",
}

_INT = re.compile(r"^[0-9]+$")
_NUMBER = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]?)B?$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}


def human_number(text: str) -> float | None:
    """``243M`` / ``2.56T`` / ``0`` / ``1.88K`` as a number (zfs_nicenum, powers of 1024)."""
    m = _NUMBER.match(text.strip())
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class PoolListRow:
    """One pool from ``zpool list -Hp``; None where zpool printed ``-``."""

    name: str
    size: int | None
    allocated: int | None
    free: int | None
    fragmentation: float | None  # ratio 0-1
    capacity: float | None  # ratio 0-1
    dedupratio: float | None
    health: str


@dataclass(frozen=True, slots=True)
class Vdev:
    """One line of the vdev tree: ``parent`` is the enclosing vdev ("" at the top)."""

    name: str
    parent: str
    role: str  # data, log, cache, spare, special, dedup
    state: str
    read_errors: float | None
    write_errors: float | None
    checksum_errors: float | None
    note: str = ""


@dataclass(slots=True)
class Scan:
    """The scan line: ``function`` scrub or resilver; ``state`` in_progress, finished,
    canceled, paused, or none (never scanned)."""

    function: str = ""
    state: str = "none"
    started: float | None = None  # Unix time
    ended: float | None = None
    progress: float | None = None  # ratio 0-1 while in progress
    repaired_bytes: float | None = None
    errors: int | None = None  # errors found by the finished scan


@dataclass(slots=True)
class PoolStatus:
    name: str
    state: str = ""
    scan: Scan | None = None
    vdevs: list[Vdev] = field(default_factory=list)
    data_errors: int | None = None  # from the errors: line; None when absent
    complete: bool = False  # the errors: line was reached (the whole section was read)


@dataclass(slots=True)
class StatusParsed:
    pools: list[PoolStatus] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ListParsed:
    rows: list[PoolListRow] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def _ratio(text: str, scale: float) -> float | None:
    if text == "-":
        return None
    try:
        value = float(text.rstrip("%x"))
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value < 0 or value != value:
        raise ValueError(f"{text!r} is not a number")
    return value / scale


def _size(text: str) -> int | None:
    if text == "-":
        return None
    if not _INT.match(text) or int(text) >= 1 << 64:
        raise ValueError(f"{text!r} is not a byte count")
    return int(text)


def parse_zpool_list(text: str) -> ListParsed:
    """Rows of ``zpool list -Hp -o name,size,allocated,free,fragmentation,capacity,...``."""
    out = ListParsed()
    lines, cut = complete_lines(text)
    if cut is not None:
        out.bad.append((*cut, "truncated (no newline at the end of the output)"))
    for lineno, line in lines:
        parts = line.split("\t")
        if len(parts) != len(LIST_FIELDS):
            out.bad.append((lineno, line, f"{len(parts)} fields, expected {len(LIST_FIELDS)}"))
            continue
        name, size, alloc, free, frag, cap, dedup, health = parts
        try:
            row = PoolListRow(
                name,
                _size(size),
                _size(alloc),
                _size(free),
                _ratio(frag, 100.0),
                _ratio(cap, 100.0),
                _ratio(dedup, 1.0),
                health,
            )
        except ValueError as exc:
            out.bad.append((lineno, line, str(exc)))
            continue
        if not name or not re.match(r"^[A-Z]+$", health):
            out.bad.append((lineno, line, "missing pool name or health"))
            continue
        out.rows.append(row)
    return out


def _ctime(text: str) -> float | None:
    """A ctime(3) date (``Sun Sep 12 15:11:35 2021``, local time) as Unix time."""
    try:
        return time.mktime(time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


_SCAN_DONE = re.compile(
    r"^(scrub repaired|resilvered) (\S+) in (.+?) with (\d+) errors on (.+)$"
)
_SCAN_SINCE = re.compile(r"^(scrub|resilver) (in progress|paused) since (.+)$")
_SCAN_CANCELED = re.compile(r"^(scrub|resilver) canceled on (.+)$")
_PCT_DONE = re.compile(r"(\d+(?:\.\d+)?)% done")
_REPAIRED = re.compile(r"(\S+) (repaired|resilvered),")


def parse_scan(lines: list[str]) -> Scan | None:
    """The ``scan:`` line and its continuation lines; None when not understood."""
    first = lines[0]
    if first == "none requested":
        return Scan()
    if m := _SCAN_DONE.match(first):
        function = "scrub" if m.group(1).startswith("scrub") else "resilver"
        return Scan(
            function,
            "finished",
            ended=_ctime(m.group(5)),
            repaired_bytes=human_number(m.group(2)),
            errors=int(m.group(4)),
        )
    if m := _SCAN_CANCELED.match(first):
        return Scan(m.group(1), "canceled", ended=_ctime(m.group(2)))
    if m := _SCAN_SINCE.match(first):
        state = "in_progress" if m.group(2) == "in progress" else "paused"
        scan = Scan(m.group(1), state, started=_ctime(m.group(3)))
        rest = " ".join(lines[1:])
        if pct := _PCT_DONE.search(rest):
            scan.progress = min(1.0, float(pct.group(1)) / 100.0)
        if rep := _REPAIRED.search(rest):
            scan.repaired_bytes = human_number(rep.group(1))
        return scan
    return None


_N = r"[0-9][0-9.]*[KMGTPE]?"
_VDEV = re.compile(
    rf"^(\s*)(\S+)\s+([A-Z]+)(?:\s+({_N})\s+({_N})\s+({_N}))?(?=\s|$)(?:\s+(.*))?$"
)


def _count(text: str | None) -> float | None:
    return None if text is None else human_number(text)


def _parse_config(
    pool: PoolStatus, lines: list[tuple[int, str]], bad: list[tuple[int, str, str]]
) -> None:
    """The vdev tree below the NAME STATE READ WRITE CKSUM header."""
    base: int | None = None
    role = "data"
    stack: list[tuple[int, str]] = []  # (indent, name) of the enclosing vdevs
    for lineno, raw in lines:
        line = raw.expandtabs(8)
        stripped = line.strip()
        if base is None:
            if stripped.split()[:2] == ["NAME", "STATE"]:
                base = len(line) - len(line.lstrip())
            else:
                bad.append((lineno, raw, "expected the NAME STATE READ WRITE CKSUM header"))
            continue
        indent = len(line) - len(line.lstrip())
        if indent == base and stripped in SECTIONS:
            role = SECTIONS[stripped]
            stack = []
            continue
        m = _VDEV.match(line)
        if m is None or indent < base or (indent - base) % 2:
            bad.append((lineno, raw, "not a vdev line (name, state, three error counts)"))
            continue
        name, state = m.group(2), m.group(3)
        counts = (_count(m.group(4)), _count(m.group(5)), _count(m.group(6)))
        note = (m.group(7) or "").strip()
        if (m.group(4) is not None and None in counts) or (
            m.group(4) is None and note[:1].isdigit()
        ):
            bad.append((lineno, raw, "error counts are not three numbers"))
            continue
        level = (indent - base) // 2
        while stack and stack[-1][0] >= level:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if level == 0 and role == "data":
            if name != pool.name:
                bad.append((lineno, raw, f"expected the pool {pool.name!r} at the top"))
                continue
            parent = ""
        stack.append((level, name))
        pool.vdevs.append(
            Vdev(name, parent, role, state, *counts, note=note)
        )


_ERRORS_N = re.compile(r"^(\d+) data errors")


def parse_zpool_status(text: str) -> StatusParsed:
    """Every pool section of ``zpool status -p``."""
    out = StatusParsed()
    lines, cut = complete_lines(text)
    if cut is not None:
        out.bad.append((*cut, "truncated (no newline at the end of the output)"))
    pool: PoolStatus | None = None
    section = ""  # "", "scan", "config", "errors", or another paragraph
    scan_lines: list[str] = []
    scan_at = 0
    config: list[tuple[int, str]] = []

    def finish() -> None:
        nonlocal scan_lines, config
        if pool is None:
            return
        if scan_lines:
            pool.scan = parse_scan(scan_lines)
            if pool.scan is None:
                out.bad.append((scan_at, scan_lines[0], "scan line not understood"))
        if config:
            _parse_config(pool, config, out.bad)
        scan_lines, config = [], []

    for lineno, raw in lines:
        key, sep, value = raw.partition(":")
        heading = key.strip() if sep and re.match(r"^ *[a-z]+$", key) else None
        if heading == "pool":
            finish()
            pool = PoolStatus(value.strip())
            out.pools.append(pool)
            section = ""
            continue
        if pool is None:
            if raw.strip() not in ("no pools available",):
                out.bad.append((lineno, raw, "text before the first 'pool:' line"))
            continue
        if heading is not None:
            section = heading
            if heading == "state":
                pool.state = value.strip()
            elif heading == "scan":
                scan_lines, scan_at = [value.strip()], lineno
            elif heading == "errors":
                msg = value.strip()
                pool.complete = True
                if msg.startswith("No known data errors"):
                    pool.data_errors = 0
                elif m := _ERRORS_N.match(msg):
                    pool.data_errors = int(m.group(1))
                elif msg.startswith("Permanent errors have been detected"):
                    pool.data_errors = 0  # counted from the listed files below
                else:
                    out.bad.append((lineno, raw, "errors line not understood"))
            elif heading not in ("status", "action", "see", "config", "remove", "checkpoint"):
                out.bad.append((lineno, raw, f"unknown heading {heading!r}; skipped"))
            continue
        if section == "scan":
            scan_lines.append(raw.strip())
        elif section == "config":
            config.append((lineno, raw))
        elif section == "errors" and pool.data_errors is not None:
            pool.data_errors += 1  # one listed file or object per line
    finish()
    return out
