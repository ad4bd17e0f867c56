"""Fault management: open problems from ``fmadm faulty`` and the fault manager's module
statistics from ``fmstat`` (formats in dtagent.parsers.fma).

``illumos_fma_open_faults`` is always exported once fmadm answered, 0 on a healthy
host; each open problem adds one ``illumos_fma_fault_info`` series (its UUID, message
id, severity, first fault class and affected resource), and problems are counted by
fault class and resource kind (the FMRI scheme: zfs, hc, dev, cpu, svc, ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.fma import FMADM_ARGV, FMSTAT_ARGV, parse_fmadm_faulty, parse_fmstat
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, CommandResult, HostSnapshot, KstatSnapshot

FMADM_SRC = " ".join(FMADM_ARGV)
FMSTAT_SRC = " ".join(FMSTAT_ARGV)

OPEN = MetricSpec("illumos_fma_open_faults", "gauge",
                  "Problems fmadm faulty lists as open.", (), "", FMADM_SRC)
BY_CLASS = MetricSpec(
    "illumos_fma_faults",
    "gauge",
    "Open problems by fault class and resource kind (FMRI scheme of the affected "
    "resource).",
    ("class", "kind"),
    "",
    FMADM_SRC,
)
INFO = MetricSpec(
    "illumos_fma_fault_info",
    "gauge",
    "One series per open problem, always 1: its UUID, message id (see "
    "illumos.org/msg/<msgid>), severity, fault class and affected resource.",
    ("uuid", "msgid", "severity", "class", "resource"),
    "",
    FMADM_SRC,
)
RECEIVED = MetricSpec("illumos_fma_module_events_received_total", "counter",
                      "Events the fault manager module received (ev_recv).", ("module",), "",
                      FMSTAT_SRC)
ACCEPTED = MetricSpec("illumos_fma_module_events_accepted_total", "counter",
                      "Events the module accepted as relevant to a diagnosis (ev_acpt).",
                      ("module",), "", FMSTAT_SRC)
OPEN_CASES = MetricSpec("illumos_fma_module_open_cases", "gauge",
                        "Cases the module has open (open).", ("module",), "", FMSTAT_SRC)
SOLVED = MetricSpec("illumos_fma_module_solved_cases_total", "counter",
                    "Cases the module has solved (solve).", ("module",), "", FMSTAT_SRC)


class FmaCollector(Collector):
    name = "fma"
    description = (
        "Fault management: open problems (fmadm faulty) by class and resource kind with "
        "one info series each, and fault manager module statistics (fmstat)"
    )
    specs = (OPEN, BY_CLASS, INFO, RECEIVED, ACCEPTED, OPEN_CASES, SOLVED)
    settings = {
        "refresh": duration(60.0, "seconds between runs of fmadm faulty and fmstat"),
        "command_timeout": timeout(
            10.0, "seconds fmadm or fmstat may take before it is killed", maximum=60.0
        ),
    }

    def __init__(self, refresh: float = 60.0, command_timeout: float = 10.0) -> None:
        super().__init__()
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        for argv in (FMADM_ARGV, FMSTAT_ARGV):
            yield CommandRequest(argv, refresh=self.refresh, timeout=self.command_timeout)

    def _run(self, snap: HostSnapshot, argv: tuple[str, ...]) -> CommandResult | None:
        res = snap.commands.get(argv)
        if res is None or res.ok:
            return res  # None: not run yet
        self.warn_once(f"cmd:{argv[0]}", "fault manager command failed; its series are left out",
                       argv=list(argv), rc=res.returncode, error=res.error,
                       stderr=res.stderr.strip()[:300])
        return None

    def _bad(self, what: str, bad: list[tuple[int, str, str]]) -> None:
        if bad:
            lineno, line, reason = bad[0]
            self.warn_once(f"parse:{what}:{reason}", "output lines not understood; left out",
                           command=what, count=len(bad), first_line=lineno, text=line[:200],
                           reason=reason)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        faulty = self._run(snap, FMADM_ARGV)
        if faulty is not None:
            parsed = parse_fmadm_faulty(faulty.stdout)
            self._bad("fmadm faulty", parsed.bad)
            counts: Counter[tuple[str, str]] = Counter()
            seen: set[str] = set()
            for fault in parsed.faults:
                if fault.uuid in seen:
                    continue
                seen.add(fault.uuid)
                klass = fault.classes[0] if fault.classes else "unknown"
                counts[(klass, fault.resource_kind)] += 1
                resource = fault.resources[0] if fault.resources else ""
                fams[INFO.name].add(
                    (fault.uuid, fault.msgid, fault.severity, klass, resource), 1
                )
            fams[OPEN.name].add((), len(seen))
            for key, n in sorted(counts.items()):
                fams[BY_CLASS.name].add(key, n)
        stats = self._run(snap, FMSTAT_ARGV)
        if stats is not None:
            sparsed = parse_fmstat(stats.stdout)
            self._bad("fmstat", sparsed.bad)
            for row in sparsed.rows:
                m = (row.module,)
                fams[RECEIVED.name].add(m, row.received)
                fams[ACCEPTED.name].add(m, row.accepted)
                fams[OPEN_CASES.name].add(m, row.open_cases)
                fams[SOLVED.name].add(m, row.solved)
        return fams.all()
