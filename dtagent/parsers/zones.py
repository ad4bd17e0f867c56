"""Parsers for the zone inventory and zone dataset commands: vmadm, zoneadm, zfs list,
and prctl for the caps off SmartOS.

Pure functions of the command's text output. Every parser returns what it could read
plus the lines it refused (with the reason), so a collector can report the good rows
and log the bad ones once. A final line without its newline is a truncated output (all
three commands end every line with one) and is refused, never half-parsed.

Formats, from the sources that print them:

* ``vmadm list -p -o uuid,zonename,zoneid,state,brand,image_uuid,alias``
  (smartos-live src/vm/sbin/vmadm.js ``outputVMListLine``): fields joined with ``:``,
  **no escaping** ("TODO: escape ':' characters"), an absent value printed as the empty
  string (0 is printed as ``0``), trailing whitespace trimmed, no header with ``-p``
  (vmadm.js ``case 'list'``: parsable sets ``header = false``). ``alias`` is free text
  and may itself contain ``:``, so it is asked for last and takes the rest of the line.
* ``zoneadm list -cp`` (illumos usr/src/cmd/zoneadm/zoneadm.c ``zone_print``;
  zoneadm(8)): ``zoneid:zonename:state:zonepath:uuid:brand:ip-type``,
  illumos-joyent appends ``:debugid``; zoneid is ``-`` when the zone is not running;
  ``:`` inside the zonepath is printed as ``\\:``. Real lines:
  tests/fixtures/samples/zoneadm_list_pc_smartos.txt.
* ``zfs list -Hp -t filesystem,volume -o name,used,available,referenced,quota -r ROOT``
  (illumos usr/src/cmd/zfs/zfs_main.c: ``-H`` tab-separated without header; libzfs
  ``zfs_prop_get`` with ``literal``: exact integers, quota 0 (none) printed as ``0``,
  a property that does not apply printed as ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dtagent.parsers import complete_lines

VMADM_FIELDS = ("uuid", "zonename", "zoneid", "state", "brand", "image_uuid", "alias")
VMADM_ARGV = ("vmadm", "list", "-p", "-o", ",".join(VMADM_FIELDS))
ZONEADM_ARGV = ("zoneadm", "list", "-cp")
# The settable caps no kstat carries (dtagent.collectors.zone_settings parses the output).
VMADM_SETTINGS_FIELDS = ("uuid", "zonename", "cpu_shares", "zfs_io_priority", "max_lwps")
VMADM_SETTINGS_ARGV = ("vmadm", "list", "-p", "-o", ",".join(VMADM_SETTINGS_FIELDS))
ZFS_FIELDS = ("name", "used", "available", "referenced", "quota")
# Off SmartOS the same caps are read live from each running zone's resource controls.
PRCTL_SETTINGS_RCTLS = ("zone.cpu-shares", "zone.zfs-io-priority", "zone.max-lwps")


def prctl_zones_argv(zonenames: Iterable[str]) -> tuple[str, ...]:
    """One ``prctl`` for every zone: it takes any number of operands (prctl.c main)."""
    return ("prctl", "-P", "-t", "privileged", "-i", "zone", *zonenames)


def parse_prctl_zones(text: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """``prctl -P -t privileged -i zone Z1 Z2 ...`` → zonename → rctl → its first
    privileged value; and the lines not understood.

    illumos-gate usr/src/cmd/prctl/prctl.c print_rctls: each operand's output starts
    with ``zone: ID: NAME`` (operands after the first are preceded by a blank line), then
    one line per rctl that has a value of the asked privilege: ``RCTL usage N - - -``
    and ``RCTL privileged VALUE FLAG ACTION RECIPIENT`` (raw numbers). A zone prctl
    cannot grab a process of is only named on stderr.
    """
    zones: dict[str, dict[str, int]] = {}
    bad: list[str] = []
    current: dict[str, int] | None = None
    lines, cut = complete_lines(text)
    if cut is not None:
        bad.append(cut[1][:200])  # truncated: never half-read
    for _lineno, line in lines:
        m = _PRCTL_HEADING.match(line)
        if m is not None:
            current = zones.setdefault(m[2], {})
            continue
        parts = line.split()
        if current is None or len(parts) != 6 or not parts[2].isdigit():
            bad.append(line[:200])
            continue
        if parts[1] == "privileged":
            current.setdefault(parts[0], int(parts[2]))
    return zones, bad


def zfs_list_argv(root: str) -> tuple[str, ...]:
    """The one ``zfs list`` call that reads every dataset under ``root``."""
    return ("zfs", "list", "-Hp", "-t", "filesystem,volume", "-o", ",".join(ZFS_FIELDS), "-r", root)


# zone names: illumos sys/zone.h ZONENAME_REGEXP "[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}".
_ZONENAME = re.compile(r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}$")
_STATE = re.compile(r"^[a-z_]+$")
_DIGITS = re.compile(r"^[0-9]+$")
_PRCTL_HEADING = re.compile(r"^zone: (-?[0-9]+): (\S+)$")


@dataclass(frozen=True, slots=True)
class ZoneEntry:
    """One zone as the inventory command lists it (zoneid None: not running)."""

    zonename: str
    zoneid: int | None
    state: str
    brand: str = ""
    uuid: str = ""
    alias: str = ""
    image_uuid: str = ""
    zonepath: str = ""  # zoneadm only


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    """One dataset's space, bytes; quota None when the dataset has none (0 or ``-``)."""

    name: str
    used: int
    available: int
    referenced: int
    quota: int | None


T = TypeVar("T")


@dataclass(slots=True)
class Parsed(Generic[T]):
    """Rows read, and the lines refused as (line number, line, reason)."""

    rows: list[T] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def _lines(text: str, bad: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
    """Non-empty lines; a last line without its newline is refused as truncated."""
    lines, cut = complete_lines(text)
    if cut is not None:
        bad.append((*cut, "truncated (no newline at the end of the output)"))
    return lines


def _checked(zoneid: str, zonename: str, state: str) -> int | str | None:
    """The zone id of a listed zone (None: not running), or what is wrong with the row."""
    try:
        zid = _zoneid(zoneid)
    except ValueError as exc:
        return str(exc)
    if not _ZONENAME.match(zonename) or not _STATE.match(state):
        return "bad zone name or state"
    return zid


def _zoneid(text: str) -> int | None:
    if text in ("", "-"):
        return None
    if not _DIGITS.match(text) or int(text) > 0x7FFFFFFF:
        raise ValueError(f"zone id {text!r} is not a number")
    return int(text)


def parse_vmadm_list(text: str) -> Parsed[ZoneEntry]:
    """Rows of ``vmadm list -p -o uuid,zonename,zoneid,state,brand,image_uuid,alias``."""
    result: Parsed[ZoneEntry] = Parsed()
    for lineno, line in _lines(text, result.bad):
        parts = line.split(":", len(VMADM_FIELDS) - 1)
        if len(parts) != len(VMADM_FIELDS):
            result.bad.append((lineno, line, f"{len(parts)} fields, expected {len(VMADM_FIELDS)}"))
            continue
        uuid, zonename, zoneid, state, brand, image_uuid, alias = parts
        zonename = zonename or uuid  # vmadm's zonename defaults to the uuid
        zid = _checked(zoneid, zonename, state)
        if isinstance(zid, str):
            result.bad.append((lineno, line, zid))
            continue
        result.rows.append(ZoneEntry(zonename, zid, state, brand, uuid, alias.rstrip(), image_uuid))
    return result


def _split_escaped(line: str) -> list[str]:
    """Split on ``:`` not preceded by a backslash; ``\\:`` becomes ``:``."""
    fields: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == ":":
            cur.append(":")
            i += 2
            continue
        if ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    fields.append("".join(cur))
    return fields


def parse_zoneadm_list(text: str) -> Parsed[ZoneEntry]:
    """Rows of ``zoneadm list -cp`` (7 fields upstream, 8 on illumos-joyent)."""
    result: Parsed[ZoneEntry] = Parsed()
    for lineno, line in _lines(text, result.bad):
        parts = _split_escaped(line)
        if len(parts) < 7:
            result.bad.append((lineno, line, f"{len(parts)} fields, expected at least 7"))
            continue
        zoneid, zonename, state, zonepath, uuid, brand = parts[:6]
        zid = _checked(zoneid, zonename, state)
        if isinstance(zid, str):
            result.bad.append((lineno, line, zid))
            continue
        result.rows.append(ZoneEntry(zonename, zid, state, brand, uuid, zonepath=zonepath))
    return result


def _bytes(text: str) -> int | None:
    if text == "-":
        return None
    if not _DIGITS.match(text) or int(text) >= 1 << 64:
        raise ValueError(f"{text!r} is not a byte count")
    return int(text)


def parse_zfs_list(text: str) -> Parsed[DatasetEntry]:
    """Rows of ``zfs list -Hp -o name,used,available,referenced,quota``."""
    result: Parsed[DatasetEntry] = Parsed()
    for lineno, line in _lines(text, result.bad):
        parts = line.split("\t")
        if len(parts) != len(ZFS_FIELDS):
            result.bad.append((lineno, line, f"{len(parts)} fields, expected {len(ZFS_FIELDS)}"))
            continue
        name = parts[0]
        try:
            used, avail, refer, quota = (_bytes(p) for p in parts[1:])
        except ValueError as exc:
            result.bad.append((lineno, line, str(exc)))
            continue
        if not name or used is None or avail is None or refer is None:
            result.bad.append((lineno, line, "missing name or space figures"))
            continue
        result.rows.append(DatasetEntry(name, used, avail, refer, quota or None))
    return result
