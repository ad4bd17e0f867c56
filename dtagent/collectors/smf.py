"""SMF service instances of the global zone and of every zone, from one
``svcs -Za -H -o zone,state,fmri`` (format in dtagent.parsers.smf).

Counts per zone and state are always exported. Per-instance state sets
(``illumos_smf_service_state``) are exported only for instances whose state is not in
``quiet_states`` (by default online, disabled and legacy_run: a healthy host exports
none), and at most ``max_instances`` of them, so a host with hundreds of zones does
not export tens of thousands of series; the instances left out are counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers import ParseMemo
from dtagent.parsers.smf import STATES, SVCS_ARGV, parse_svcs
from dtagent.settings import duration, integer, string_list, timeout
from dtagent.snapshot import CommandRequest, HostSnapshot, KstatSnapshot

SRC = " ".join(SVCS_ARGV)

COUNT = MetricSpec(
    "illumos_smf_services",
    "gauge",
    "Service instances by zone and state (online, offline, disabled, maintenance, "
    "degraded, uninitialized, legacy_run; unknown for a state the agent does not know).",
    ("zonename", "state"),
    "",
    SRC,
)
STATE = MetricSpec(
    "illumos_smf_service_state",
    "gauge",
    "Per-instance state set (1 for the current state, 0 for the others), only for "
    "instances not in a quiet state (collectors.smf.quiet_states).",
    ("zonename", "fmri", "state"),
    "",
    SRC,
)
TRANSITIONING = MetricSpec(
    "illumos_smf_services_transitioning",
    "gauge",
    "Service instances moving to another state (svcs marks them with '*'), by zone.",
    ("zonename",),
    "",
    SRC,
)
OMITTED = MetricSpec(
    "illumos_smf_service_state_omitted",
    "gauge",
    "Instances whose per-instance state set was left out because max_instances was "
    "reached.",
    (),
    "",
    SRC,
)


class SmfCollector(Collector):
    name = "smf"
    description = (
        "SMF service instances of every zone: counts by zone and state, and a state set "
        "for each instance that is not online or disabled (svcs -Za)"
    )
    specs = (COUNT, STATE, TRANSITIONING, OMITTED)
    settings = {
        "refresh": duration(60.0, "seconds between runs of svcs"),
        "command_timeout": timeout(
            10.0, "seconds svcs may take before it is killed", maximum=60.0
        ),
        "quiet_states": string_list(
            ["online", "disabled", "legacy_run"],
            "states whose instances get no per-instance series",
            choices=lambda: STATES,
            what="SMF states",
        ),
        "max_instances": integer(
            500, "most instances with a per-instance state set", minimum=0, maximum=100_000
        ),
    }

    def __init__(
        self,
        refresh: float = 60.0,
        command_timeout: float = 10.0,
        quiet_states: Sequence[str] = ("online", "disabled", "legacy_run"),
        max_instances: int = 500,
    ) -> None:
        super().__init__()
        quiet = list(quiet_states)
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)
        self.quiet = frozenset(quiet)
        self.max_instances = max_instances
        self._svcs = ParseMemo(parse_svcs)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        yield CommandRequest(SVCS_ARGV, refresh=self.refresh, timeout=self.command_timeout)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        res = snap.commands.get(SVCS_ARGV)
        if res is None:
            return []  # not run yet
        if not res.ok:
            self.warn_once("cmd", "svcs failed; SMF series are left out", rc=res.returncode,
                           error=res.error, stderr=res.stderr.strip()[:300])
            return []
        parsed = self._svcs(res.stdout)
        if parsed.bad:
            lineno, line, reason = parsed.bad[0]
            self.warn_once(f"parse:{reason}", "svcs lines not understood; they are left out",
                           count=len(parsed.bad), first_line=lineno, text=line[:200],
                           reason=reason)
        counts: Counter[tuple[str, str]] = Counter()
        moving: Counter[str] = Counter()
        detailed = omitted = 0
        seen: set[tuple[str, str]] = set()
        for row in parsed.rows:
            if (row.zonename, row.fmri) in seen:
                continue
            seen.add((row.zonename, row.fmri))
            counts[(row.zonename, row.state)] += 1
            if row.transitioning:
                moving[row.zonename] += 1
            if row.state == "unknown":
                self.warn_once(f"state:{row.raw_state}", "unknown SMF state",
                               fmri=row.fmri, state=row.raw_state)
            if row.state in self.quiet:
                continue
            if detailed >= self.max_instances:
                omitted += 1
                continue
            detailed += 1
            for state in (*STATES, "unknown"):
                fams[STATE.name].add((row.zonename, row.fmri, state),
                                     1 if state == row.state else 0)
        zones = sorted({z for z, _ in counts})
        for zone in zones:
            for state in STATES:
                fams[COUNT.name].add((zone, state), counts.get((zone, state), 0))
            if counts.get((zone, "unknown")):
                fams[COUNT.name].add((zone, "unknown"), counts[(zone, "unknown")])
            fams[TRANSITIONING.name].add((zone,), moving.get(zone, 0))
        fams[OMITTED.name].add((), omitted)
        return fams.all()
