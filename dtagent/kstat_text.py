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
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_TYPE_BY_NAME = {v.upper(): k for k, v in KSTAT_TYPE_NAMES.items()}


@dataclass(slots=True)
class ParseResult:
    """kstats found in a text dump, and the lines that were not kstat data."""

    kstats: list[Kstat] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def parse_value(text: str, dtype: int | None = None) -> StatValue:
    """A statistic's value as kstat printed it."""
    if dtype in _STRING_TYPES:
        return text
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


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
            ns = int(Decimal(raw) * 1_000_000_000)  # exact: hrtime printed as %.9f
            if stat == "crtime":
                ks.crtime = ns
            else:
                ks.snaptime = ns
        else:
            ks.data[stat] = parse_value(raw, dtype)

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
        if m := _HUMAN_MODULE.match(line):
            human_module = (m["module"], int(m["instance"]))
            human = None
            continue
        if human_module and (m := _HUMAN_NAME.match(line)):
            human = builder.get(human_module[0], human_module[1], m["name"])
            human.ks_class = m["cls"]
            human_module = None
            continue
        if human is not None and (m := _HUMAN_STAT.match(line)):
            builder.set(human, m["stat"], m["value"], None)
            continue
        human = None
        if m := _HEADER_LINE.match(line):
            ks = builder.get(m["module"], int(m["instance"]), m["name"])
            ks.ks_class = m["cls"]
            ks.ks_type = _TYPE_BY_NAME.get(m["type"], KSTAT_TYPE_NAMED)
            continue
        if m := _P_LINE.match(line):
            dtype = int(m["dtype"]) if m["dtype"] is not None else None
            ks = builder.get(m["module"], int(m["instance"]), m["name"])
            builder.set(ks, m["stat"], m["value"], dtype)
            continue
        if m := _P_EMPTY.match(line):
            # an empty string value: kstat -p prints the name, a TAB and nothing
            ks = builder.get(m["module"], int(m["instance"]), m["name"])
            builder.set(ks, m["stat"], "", 9)
            continue
        result.skipped.append((lineno, line))
    result.kstats = builder.finish()
    return result
