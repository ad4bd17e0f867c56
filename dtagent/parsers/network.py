"""Parsers of dladm and flowadm parsable output (pure functions of text).

Formats, from the illumos sources (dladm(8), flowadm(8)):

* Parsable mode of every ofmt-based tool (illumos-gate usr/src/lib/libofmt/common/ofmt.c,
  ``ofmt_print_field``): one line per row, fields separated by ``:``; when more than
  one field is selected, a ``:`` or ``\\`` inside a value is prefixed with ``\\``; with a
  single field the value is printed raw. An empty value is printed as nothing (the
  human ``--`` is only for human output); a field whose callback failed prints ``?``.
* ``dladm show-linkprop -c -o link,value -p maxbw`` (usr/src/cmd/dladm/dladm.c
  ``print_linkprop``): the VALUE of a link without a cap is empty (libdladm linkprop.c
  ``get_maxbw`` returns no value when MRP_MAXBW is unset); a property the link does not
  support reads ``--``. A cap is printed by ``dladm_bw2str`` (libdladm.c) in Mbit/s as
  ``"%5u"`` or ``"%5u.%03u"`` (leading spaces kept in parsable output) or ``"0.%03u"``.
  On SmartOS the global zone sees every zone's links under the zone's own names
  (``net0`` once per zone), so a name printed twice cannot be mapped to one link.
* ``flowadm show-flow -p -o flow,link`` (usr/src/cmd/flowadm/flowadm.c, fields FLOW LINK
  IPADDR PROTO LPORT RPORT DSFLD) and ``flowadm show-flowprop -c -o
  flow,property,value -p maxbw,priority`` (same file, ``print_flowprop``; props maxbw,
  priority low|medium|high).

Nothing here raises on bad input: each malformed line is skipped and described in
``problems`` so the collector can log it, and the rest of the output is still used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dtagent.parsers import complete_lines

# dladm_bw2str output: whole Mbit/s, or Mbit/s with three decimals (kbit/s).
_BW = re.compile(r"^(\d{1,12})(?:\.(\d{3}))?$")
_UNKNOWN = {"--", "?"}
_PRIORITY = re.compile(r"^[a-z]{1,16}$")
MAX_PROBLEMS = 20

# The commands whose output is parsed here, as the link and flow collectors run them
# (and the simulator records them).
MAXBW_ARGV = ("dladm", "show-linkprop", "-c", "-o", "link,value", "-p", "maxbw")
SHOW_FLOW_ARGV = ("flowadm", "show-flow", "-p", "-o", "flow,link")
SHOW_FLOWPROP_ARGV = (
    "flowadm",
    "show-flowprop",
    "-c",
    "-o",
    "flow,property,value",
    "-p",
    "maxbw,priority",
)


def zone_maxbw_argv(zonename: str) -> tuple[str, ...]:
    """The per-zone maxbw command (SmartOS dladm: ``-z`` selects the zone's links)."""
    return ("dladm", "show-linkprop", "-z", zonename, "-c", "-o", "link,value", "-p", "maxbw")


def split_ofmt(line: str, nfields: int) -> list[str] | None:
    """The fields of one libofmt parsable line, unescaped; None when malformed.

    With one field ofmt prints the value raw (no escaping), so the line is the value.
    """
    if nfields < 1:
        raise ValueError("nfields must be at least 1")
    if nfields == 1:
        return [line]
    fields: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in line:
        if escaped:
            if ch not in ":\\":
                return None  # ofmt escapes only ':' and '\'
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        return None
    fields.append("".join(cur))
    return fields if len(fields) == nfields else None


def escape_ofmt(values: list[str]) -> str:
    """A parsable line as libofmt prints it (used by the simulator and the fakes)."""
    if len(values) == 1:
        return values[0]
    return ":".join(v.replace("\\", "\\\\").replace(":", "\\:") for v in values)


def parse_bw(text: str) -> int | None:
    """A dladm_bw2str value in bit/s; None for no cap or unknown; ValueError if garbled."""
    value = text.strip()
    if value == "" or value in _UNKNOWN:
        return None
    m = _BW.match(value)
    if m is None:
        raise ValueError(f"not a bandwidth in Mbit/s: {text!r}")
    mbps = int(m[1])
    kbps = int(m[2]) if m[2] else 0
    return mbps * 1_000_000 + kbps * 1000


def format_bw(bits: int) -> str:
    """dladm_bw2str (libdladm.c): the inverse of :func:`parse_bw`."""
    kbps = (bits % 1_000_000) // 1000
    mbps = bits // 1_000_000
    if kbps:
        return f"0.{kbps:03d}" if mbps == 0 else f"{mbps:5d}.{kbps:03d}"
    return f"{mbps:5d}"


def _lines(text: str, problems: list[str]) -> list[tuple[int, str]]:
    """Non-empty lines; a last line without its newline is refused as truncated."""
    lines, cut = complete_lines(text)
    if cut is not None:
        _problem(problems, f"line {cut[0]}: truncated (no newline at the end): {_show(cut[1])}")
    return lines


def _problem(problems: list[str], msg: str) -> None:
    if len(problems) < MAX_PROBLEMS:
        problems.append(msg)
    elif len(problems) == MAX_PROBLEMS:
        problems.append("(more problems not listed)")


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


@dataclass(slots=True)
class MaxbwTable:
    """maxbw per link name (bit/s; None: no cap), from ``show-linkprop -o link,value``.

    ``ambiguous`` holds names printed more than once (every zone's ``net0`` in a
    SmartOS global zone): they are not in ``bw``.
    """

    bw: dict[str, int | None] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def parse_maxbw(stdout: str) -> MaxbwTable:
    """``dladm show-linkprop -c -o link,value -p maxbw`` (optionally with ``-z``)."""
    out = MaxbwTable()
    for lineno, line in _lines(stdout, out.problems):
        fields = split_ofmt(line, 2)
        if fields is None:
            _problem(out.problems, f"line {lineno}: expected LINK:VALUE, got {_show(line)}")
            continue
        link, raw = fields
        if not link or link in _UNKNOWN:
            _problem(out.problems, f"line {lineno}: no link name in {_show(line)}")
            continue
        try:
            bw = parse_bw(raw)
        except ValueError as exc:
            _problem(out.problems, f"line {lineno}: {exc}")
            continue
        if link in out.ambiguous:
            continue
        if link in out.bw:
            del out.bw[link]
            out.ambiguous.add(link)
            continue
        out.bw[link] = bw
    return out


@dataclass(slots=True)
class FlowTable:
    """Flows by name with their link, from ``flowadm show-flow -p -o flow,link``."""

    links: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_show_flow(stdout: str) -> FlowTable:
    out = FlowTable()
    for lineno, line in _lines(stdout, out.problems):
        fields = split_ofmt(line, 2)
        if fields is None:
            _problem(out.problems, f"line {lineno}: expected FLOW:LINK, got {_show(line)}")
            continue
        flow, link = fields
        if not flow or not link or flow in _UNKNOWN or link in _UNKNOWN:
            _problem(out.problems, f"line {lineno}: empty flow or link in {_show(line)}")
            continue
        if flow in out.links:
            _problem(out.problems, f"line {lineno}: flow {flow!r} listed twice")
            continue
        out.links[flow] = link
    return out


@dataclass(slots=True)
class FlowProps:
    """maxbw (bit/s; None: no cap) and priority of each flow, from show-flowprop."""

    maxbw: dict[str, int | None] = field(default_factory=dict)
    priority: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_flowprops(stdout: str) -> FlowProps:
    """``flowadm show-flowprop -c -o flow,property,value -p maxbw,priority``."""
    out = FlowProps()
    for lineno, line in _lines(stdout, out.problems):
        fields = split_ofmt(line, 3)
        if fields is None:
            _problem(
                out.problems, f"line {lineno}: expected FLOW:PROPERTY:VALUE, got {_show(line)}"
            )
            continue
        flow, prop, raw = fields
        if not flow:
            _problem(out.problems, f"line {lineno}: no flow name in {_show(line)}")
            continue
        if prop == "maxbw":
            try:
                out.maxbw[flow] = parse_bw(raw)
            except ValueError as exc:
                _problem(out.problems, f"line {lineno}: {exc}")
        elif prop == "priority":
            value = raw.strip()
            if value in _UNKNOWN or value == "":
                continue
            if not _PRIORITY.match(value):
                _problem(out.problems, f"line {lineno}: not a priority: {value!r}")
                continue
            out.priority[flow] = value
        else:
            _problem(out.problems, f"line {lineno}: unexpected property {prop!r}")
    return out
