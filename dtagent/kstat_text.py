"""Parse `kstat` text output into kstats, so a user's dump can be replayed.

Formats read (illumos usr/src/cmd/stat/kstat/kstat.c):

* ``kstat -p``: ``module:instance:name:statistic<TAB>value`` per line, with the
  pseudo-statistics ``class``, ``crtime`` and ``snaptime`` (seconds, ``%.9f``).
* ``kstat`` (human): a block opened by ``module: M  instance: N`` and
  ``name: X  class: C``, then indented ``statistic  value`` lines.
* The decoded captures in the project's samples, which add `` [type=N]`` (the
  KSTAT_DATA_* code) after a value, and header lists ``m:i:n class=C type=T``.

Anything else (shell prompts, other commands' output, timestamps from ``-T``) is
skipped and counted, never guessed at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from dtagent.snapshot import (
    KSTAT_TYPE_IO,
    KSTAT_TYPE_NAMED,
    KSTAT_TYPE_NAMES,
    Kstat,
    StatValue,
)

# KSTAT_DATA_CHAR (0) and KSTAT_DATA_STRING (9) are strings; FLOAT (5) and DOUBLE (6)
# are floats (sys/kstat.h).
_STRING_TYPES = {0, 9}
_FLOAT_TYPES = {5, 6}

# kstat_io_t field names (sys/kstat.h); a kstat -p block with exactly these is an IO kstat.
IO_FIELDS = frozenset(
    [
        "nread",
        "nwritten",
        "reads",
        "writes",
        "wtime",
        "wlentime",
        "wlastupdate",
        "rtime",
        "rlentime",
        "rlastupdate",
        "wcnt",
        "rcnt",
    ]
)

_P_LINE = re.compile(
    r"^(?P<module>[^:\s]+):(?P<instance>-?\d+):(?P<name>.+):(?P<stat>[^:\t]+?)"
    r"(?:\t|\s{2,}|\s(?=\S))(?P<value>.*?)(?:\s+\[type=(?P<dtype>\d+)\])?\s*$"
)
_P_EMPTY = re.compile(r"^(?P<module>[^:\s]+):(?P<instance>-?\d+):(?P<name>.+):(?P<stat>[^:\s]+)$")
_HEADER_LINE = re.compile(
    r"^(?P<module>[^:\s]+):(?P<instance>-?\d+):(?P<name>\S+) class=(?P<cls>\S+) "
    r"type=(?P<type>[A-Z]+)$"
)
_HUMAN_MODULE = re.compile(r"^module:\s+(?P<module>\S+)\s+instance:\s+(?P<instance>-?\d+)\s*$")
_HUMAN_NAME = re.compile(r"^name:\s+(?P<name>\S+)\s+class:\s+(?P<cls>\S+)\s*$")
_HUMAN_STAT = re.compile(r"^\s+(?P<stat>\S+)\s+(?P<value>\S.*?)\s*$")
_INT = re.compile(r"^-?\d+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ufffd]")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_TYPE_BY_NAME = {v.upper(): k for k, v in KSTAT_TYPE_NAMES.items()}


# What a kstat can hold (sys/kstat.h): integers of at most 64 bits, signed or unsigned;
# an instance is an int; names are at most KSTAT_STRLEN - 1 (30) characters.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
INSTANCE_MAX = (1 << 31) - 1
_MAX_DIGITS = 40  # more digits than any 64-bit integer or printed hrtime has


class Unrepresentable(ValueError):
    """A value a kstat cannot hold (an integer past 64 bits, a float that overflows)."""


@dataclass(slots=True)
class ParseResult:
    """kstats found in a text dump, the lines that were not kstat data, and the kstat
    lines whose values no kstat can hold (line number, problem)."""

    kstats: list[Kstat] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def parse_value(text: str, dtype: int | None = None) -> StatValue:
    """A statistic's value as kstat printed it; :class:`Unrepresentable` when it is a
    number no kstat can hold."""
    if dtype in _STRING_TYPES:
        return text
    if _INT.match(text):
        if len(text) > _MAX_DIGITS or not INT_MIN <= int(text) <= INT_MAX:
            raise Unrepresentable(f"{_short(text)} does not fit in a 64-bit integer")
        return int(text)
    if _FLOAT.match(text):
        value = float(text)
        if not math.isfinite(value):
            raise Unrepresentable(f"{_short(text)} overflows a double")
        return value
    return text


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _hrtime_ns(raw: str) -> int:
    """A crtime/snaptime printed as seconds with %.9f, in nanoseconds, exactly."""
    if len(raw) > _MAX_DIGITS:
        raise Unrepresentable(f"{_short(raw)} is not an hrtime")
    ns = int(Decimal(raw) * 1_000_000_000)
    if not 0 <= ns <= INT_MAX:
        raise Unrepresentable(f"{_short(raw)} is not an hrtime")
    return ns


def _instance(text: str) -> int:
    if len(text) > 11 or not -INSTANCE_MAX - 1 <= int(text) <= INSTANCE_MAX:
        raise Unrepresentable(f"instance {_short(text)} does not fit in an int")
    return int(text)


class _Builder:
    def __init__(self) -> None:
        self.kstats: dict[tuple[str, int, str], Kstat] = {}

    def get(self, module: str, instance: int, name: str) -> Kstat:
        key = (module, instance, name)
        ks = self.kstats.get(key)
        if ks is None:
            ks = Kstat(module=module, instance=instance, name=name)
            self.kstats[key] = ks
        return ks

    def set(self, ks: Kstat, stat: str, raw: str, dtype: int | None) -> None:
        if stat == "class":
            ks.ks_class = raw
        elif stat in ("crtime", "snaptime") and _FLOAT.match(raw):
            ns = _hrtime_ns(raw)
            if stat == "crtime":
                ks.crtime = ns
            else:
                ks.snaptime = ns
        else:
            data = ks.data
            assert isinstance(data, dict)  # the builder's own kstats: made with a dict
            data[stat] = parse_value(raw, dtype)

    def finish(self) -> list[Kstat]:
        for ks in self.kstats.values():
            if ks.data and set(ks.data) <= IO_FIELDS and {"rlentime", "wlentime"} <= set(ks.data):
                ks.ks_type = KSTAT_TYPE_IO
        return list(self.kstats.values())


def parse(lines: Iterable[str]) -> ParseResult:
    """Parse kstat text in any of the formats above (they may be mixed)."""
    result = ParseResult()
    builder = _Builder()
    human: Kstat | None = None
    human_module: tuple[str, int] | None = None
    for lineno, raw_line in enumerate(lines, start=1):
        line = raw_line.rstrip("\r\n")
        if not line.strip():
            human = None
            continue
        try:
            human, human_module, kind = _line(builder, line, human, human_module)
        except Unrepresentable as exc:
            result.problems.append((lineno, str(exc)))
            continue
        if kind is None:
            result.skipped.append((lineno, line))
    result.kstats = builder.finish()
    return result


def _line(
    builder: _Builder, line: str, human: Kstat | None, human_module: tuple[str, int] | None
) -> tuple[Kstat | None, tuple[str, int] | None, str | None]:
    """Read one non-blank line: the human-format block state after it, and what the
    line was (None: not kstat data). Raises :class:`Unrepresentable`."""
    if _CONTROL.search(line):
        return None, human_module, None  # kstat never prints control characters
    if m := _HUMAN_MODULE.match(line):
        return None, (m["module"], _instance(m["instance"])), "module"
    if human_module and (m := _HUMAN_NAME.match(line)):
        ks = builder.get(human_module[0], human_module[1], m["name"])
        ks.ks_class = m["cls"]
        return ks, None, "name"
    if human is not None and (m := _HUMAN_STAT.match(line)):
        builder.set(human, m["stat"], m["value"], None)
        return human, human_module, "stat"
    if m := _HEADER_LINE.match(line):
        ks = builder.get(m["module"], _instance(m["instance"]), m["name"])
        ks.ks_class = m["cls"]
        ks.ks_type = _TYPE_BY_NAME.get(m["type"], KSTAT_TYPE_NAMED)
        return None, human_module, "header"
    if m := _P_LINE.match(line):
        dtype = int(m["dtype"]) if m["dtype"] is not None else None
        ks = builder.get(m["module"], _instance(m["instance"]), m["name"])
        builder.set(ks, m["stat"], m["value"], dtype)
        return None, human_module, "p"
    if m := _P_EMPTY.match(line):
        # an empty string value: kstat -p prints the name, a TAB and nothing
        ks = builder.get(m["module"], _instance(m["instance"]), m["name"])
        builder.set(ks, m["stat"], "", 9)
        return None, human_module, "p"
    return None, human_module, None
