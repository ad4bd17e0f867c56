"""Parser for ``svcs -Za -H -o zone,state,fmri``: every SMF service instance of every zone.

Format (svcs(1); illumos-gate usr/src/cmd/svcs/svcs.c): ``-Z`` lists the instances of
all zones and ``-a`` all instances, disabled ones included; ``-H`` drops the header;
``-o zone,state,fmri`` picks the columns, printed left-aligned and padded with spaces.
None of the three holds a space (zone names: sys/zone.h ZONENAME_REGEXP; FMRIs:
smf(7)). The state is one of the states below; ``*`` is appended while the instance is
moving to another state (svcs.c ``sprint_state``). An unknown state is reported as
such, never dropped: it is the kind of thing an operator wants to hear about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dtagent.parsers import complete_lines

SVCS_ARGV = ("svcs", "-Za", "-H", "-o", "zone,state,fmri")
# smf(7) "States": the states svcs prints (legacy_run for rc scripts).
STATES = (
    "online",
    "offline",
    "disabled",
    "maintenance",
    "degraded",
    "uninitialized",
    "legacy_run",
)
_ZONE = re.compile(r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}$")
_FMRI = re.compile(r"^(svc|lrc):/\S+$")
_STATE = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    zonename: str
    state: str  # one of STATES, or "unknown" (the text is in raw_state)
    fmri: str
    transitioning: bool = False
    raw_state: str = ""


@dataclass(slots=True)
class SvcsParsed:
    rows: list[ServiceInstance] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def parse_svcs(text: str) -> SvcsParsed:
    """Instances listed by ``svcs -Za -H -o zone,state,fmri``."""
    out = SvcsParsed()
    lines, cut = complete_lines(text)
    if cut is not None:
        out.bad.append((*cut, "truncated (no newline at the end of the output)"))
    for lineno, line in lines:
        parts = line.split()
        if len(parts) != 3:
            out.bad.append((lineno, line, f"{len(parts)} columns, expected zone, state, fmri"))
            continue
        zone, state, fmri = parts
        moving = state.endswith("*")
        state = state.rstrip("*")
        if not _ZONE.match(zone) or not _FMRI.match(fmri) or not _STATE.match(state):
            out.bad.append((lineno, line, "not a zone name, state and FMRI"))
            continue
        known = state if state in STATES else "unknown"
        out.rows.append(ServiceInstance(zone, known, fmri, moving, state))
    return out
