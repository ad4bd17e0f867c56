"""Parsers for ``fmadm faulty`` (open problems) and ``fmstat`` (fault manager modules).

Formats, from illumos-gate usr/src/cmd/fm/fmadm/common/faulty.c and fmadm(8):

* ``fmadm faulty`` prints, for each open problem (``print_status_record``), a header of
  three lines (dashes, ``TIME EVENT-ID MSG-ID SEVERITY``, dashes), then
  ``%-15s %-37s %-14s %-9s %s``: the diagnosis time, the problem's UUID, its message id,
  its severity and ``injected`` for an injected fault; then ``print_sup_record``:
  ``Host``/``Platform``/``Product_sn`` lines, ``Fault class :`` with one class per
  line (continuation lines padded to the label's width), ``Affects     :``,
  ``Problem in  :`` and ``FRU         :`` with one FMRI per line and a status line,
  and the message's ``Description``/``Response``/``Impact``/``Action`` text. No
  faults: no output at all.
* ``fmadm faulty -r`` (``print_asru``): ``%-69s %s``, the FMRI and its state.
* ``fmstat`` (usr/src/cmd/fm/fmstat/common/fmstat.c): a header
  ``module ev_recv ev_acpt wait svc_t %w %b open solve memsz bufsz`` and one row per
  module; memsz/bufsz are human-readable sizes (``1.8M``), the counts integers.

Nothing here raises: a record whose identification line is not understood is skipped
and listed in ``bad``; a record cut off before its ``Fault class`` keeps its UUID with
the class ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dtagent.parsers import complete_lines

FMADM_ARGV = ("fmadm", "faulty")
FMSTAT_ARGV = ("fmstat",)

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_IDENT = re.compile(rf"^(.{{15}}) ({_UUID})\s+(\S+)\s+(\S+)(?:\s+(injected))?\s*$")
_LABEL = re.compile(r"^([A-Z][A-Za-z_. ]{0,11}?)\s*:\s?(.*)$")
_FMRI_SCHEME = re.compile(r"^([a-z][a-z0-9-]*):")
_CLASS = re.compile(r"^(fault|defect|alert|upset|list)\.[A-Za-z0-9_.-]+$")


@dataclass(slots=True)
class Fault:
    """One open problem: its UUID, message id, severity, fault classes and resources."""

    uuid: str
    time: str
    msgid: str
    severity: str
    classes: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    injected: bool = False

    @property
    def resource_kind(self) -> str:
        """The FMRI scheme of the first affected resource (zfs, hc, dev, cpu, svc...)."""
        for fmri in self.resources:
            if m := _FMRI_SCHEME.match(fmri):
                return m.group(1)
        return "unknown"


@dataclass(slots=True)
class FaultyParsed:
    faults: list[Fault] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def parse_fmadm_faulty(text: str) -> FaultyParsed:
    """Open problems from ``fmadm faulty``."""
    out = FaultyParsed()
    lines, cut = complete_lines(text)
    if cut is not None:
        out.bad.append((*cut, "truncated (no newline at the end of the output)"))
    current: Fault | None = None
    label = ""
    for lineno, line in lines:
        if line.startswith("---") or line.startswith("TIME "):
            label = ""
            continue
        m = _IDENT.match(line)
        if m:
            current = Fault(m.group(2), m.group(1).strip(), m.group(3), m.group(4))
            current.injected = m.group(5) is not None
            out.faults.append(current)
            label = ""
            continue
        if current is None:
            out.bad.append((lineno, line, "text before the first problem's identification line"))
            continue
        lm = _LABEL.match(line)
        if lm and not line.startswith(" "):
            label, value = lm.group(1).strip(), lm.group(2).strip()
        elif line.startswith(" ") and label:
            value = line.strip()
        else:
            label, value = "", ""
        if label == "Fault class":
            name = value.split()[0] if value else ""
            if _CLASS.match(name):
                current.classes.append(name)
        elif label in ("Affects", "Problem in"):
            fmri = value.split()[0] if value else ""
            if _FMRI_SCHEME.match(fmri) and fmri not in current.resources:
                current.resources.append(fmri)
    return out


@dataclass(frozen=True, slots=True)
class FmstatRow:
    module: str
    received: int
    accepted: int
    open_cases: int
    solved: int


@dataclass(slots=True)
class FmstatParsed:
    rows: list[FmstatRow] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


FMSTAT_HEADER = ("module", "ev_recv", "ev_acpt", "wait", "svc_t", "%w", "%b", "open", "solve")


def parse_fmstat(text: str) -> FmstatParsed:
    """Module rows of ``fmstat``: events received and accepted, cases open and solved."""
    out = FmstatParsed()
    lines, cut = complete_lines(text)
    if cut is not None:
        out.bad.append((*cut, "truncated (no newline at the end of the output)"))
    header: list[str] | None = None
    for lineno, line in lines:
        parts = line.split()
        if header is None:
            if tuple(parts[: len(FMSTAT_HEADER)]) == FMSTAT_HEADER:
                header = parts
            else:
                out.bad.append((lineno, line, "expected the fmstat header"))
            continue
        if len(parts) != len(header):
            out.bad.append((lineno, line, f"{len(parts)} columns, expected {len(header)}"))
            continue
        row = dict(zip(header, parts, strict=True))
        try:
            out.rows.append(
                FmstatRow(
                    row["module"],
                    int(row["ev_recv"]),
                    int(row["ev_acpt"]),
                    int(row["open"]),
                    int(row["solve"]),
                )
            )
        except ValueError:
            out.bad.append((lineno, line, "event and case counts are not integers"))
    return out
