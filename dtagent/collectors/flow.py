"""Crossbow flows: traffic from the unix:0:<flow> kstats of class ``flow``, joined with
``flowadm show-flow`` (which flows exist, on which link) and ``flowadm show-flowprop``
(their maxbw and priority).

Every flow entry of the MAC layer has a ``unix:0:<name>`` kstat of class flow with the
uint64 fields rbytes ipackets ierrors obytes opackets oerrors (illumos-gate
usr/src/uts/common/io/mac/mac_flow.c ``flow_stat_create``), including the implicit flow
of each MAC client, which is named after its link. Only the flows flowadm lists are
reported, so those implicit ones are not (flowadm(8), usr/src/cmd/flowadm/flowadm.c). Both
flowadm commands run every ``max_age`` seconds; when show-flow fails no flow is reported,
because the user flows could not be told from the implicit ones.

``zonename`` is the zone of the flow's link, from the link kstats' SmartOS ``zonename``
statistic: the link named as in the global zone (``z5_net0``), or as the zone sees it
(``net0``) when only one zone has a link of that name; empty otherwise. Flows whose
names share their first 30 characters share one kstat name, so their traffic is not
reported (their info series is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.linkid import identify
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.parsers.network import (
    SHOW_FLOW_ARGV,
    SHOW_FLOWPROP_ARGV,
    FlowProps,
    FlowTable,
    parse_flowprops,
    parse_show_flow,
)
from dtagent.settings import duration, timeout
from dtagent.snapshot import (
    CommandRequest,
    CommandResult,
    HostSnapshot,
    Kstat,
    KstatInput,
    KstatSnapshot,
)

SRC = "unix:0:<flow> (class flow); flowadm show-flow -p -o flow,link"
PROPS_SRC = "flowadm show-flowprop -c -o flow,property,value -p maxbw,priority"
LABELS = ("flow", "link", "zonename")
KSTAT_NAME_MAX = 30  # KSTAT_STRLEN - 1


def _spec(name: str, mtype: MetricType, help_: str, unit: str = "") -> MetricSpec:
    return MetricSpec(f"illumos_flow_{name}", mtype, help_, LABELS, unit, SRC)


RBYTES = _spec("received_bytes_total", "counter", "Bytes received by the flow.", "bytes")
IPACKETS = _spec("received_packets_total", "counter", "Packets received by the flow.")
IERRORS = _spec("receive_errors_total", "counter", "Receive errors of the flow.")
OBYTES = _spec("transmitted_bytes_total", "counter", "Bytes sent by the flow.", "bytes")
OPACKETS = _spec("transmitted_packets_total", "counter", "Packets sent by the flow.")
OERRORS = _spec("transmit_errors_total", "counter", "Transmit errors of the flow.")
MAXBW = MetricSpec(
    "illumos_flow_maxbw_bytes_per_second",
    "gauge",
    "Bandwidth cap (maxbw) of the flow in bytes per second; absent when it has none.",
    LABELS,
    "bytes per second",
    PROPS_SRC,
)
INFO = MetricSpec(
    "illumos_flow_info",
    "gauge",
    "1 for each flow flowadm lists, with its priority (low, medium, high; empty when "
    "unknown) and its maxbw in bit/s (empty when it has none).",
    (*LABELS, "priority", "maxbw_bits_per_second"),
    "",
    f"flowadm show-flow; {PROPS_SRC}",
)

COUNTERS: tuple[tuple[str, MetricSpec], ...] = (
    ("rbytes", RBYTES),
    ("ipackets", IPACKETS),
    ("ierrors", IERRORS),
    ("obytes", OBYTES),
    ("opackets", OPACKETS),
    ("oerrors", OERRORS),
)


class FlowCollector(Collector):
    name = "flow"
    description = (
        "Crossbow flows: per-flow traffic from the class-flow kstats of the flows flowadm "
        "lists, their maxbw and priority (implicit per-link flows are not reported)"
    )
    specs = (*(s for _, s in COUNTERS), MAXBW, INFO)
    kstat_inputs = (KstatInput("unix", "flow"), KstatInput("link", "net"),)
    settings = {
        "max_age": duration(60.0, "seconds between flowadm runs"),
        "command_timeout": timeout(
            5.0, "seconds before a hung flowadm is killed", maximum=60.0
        ),
    }

    def __init__(self, max_age: float = 60.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.max_age = max_age
        self.command_timeout = command_timeout

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        for argv in (SHOW_FLOW_ARGV, SHOW_FLOWPROP_ARGV):
            yield CommandRequest(argv, refresh=self.max_age, timeout=self.command_timeout)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        flows = self._show_flow(snap)
        if flows is None or not flows.links:
            return []
        props = self._flowprops(snap)
        stats = self._flow_kstats(snap)
        link_zones = self._link_zones(snap)
        # kstat names are cut to 30 characters: flows that share those read one kstat
        prefixes = Counter(flow[:KSTAT_NAME_MAX] for flow in flows.links)
        fams = Families(self.specs)
        for flow, link in flows.links.items():
            labels = (flow, link, link_zones.get(link, ""))
            bw = props.maxbw.get(flow)
            fams[INFO.name].add((*labels, props.priority.get(flow, ""), str(bw) if bw else ""), 1.0)
            if bw:
                fams[MAXBW.name].add(labels, bw / 8)
            if prefixes[flow[:KSTAT_NAME_MAX]] > 1:
                self.warn_once(
                    f"prefix:{flow[:KSTAT_NAME_MAX]}",
                    "flows whose names share their first 30 characters share one kstat "
                    "name; their traffic is not reported",
                    flow=flow,
                )
                continue
            ks = stats.get(flow[:KSTAT_NAME_MAX])
            if ks is None:
                continue  # a flow on a link that is down has no kstat
            made = snap.kstats.created(ks)
            for stat, spec in COUNTERS:
                value = ks.int_stat(stat)
                if value is not None:
                    fams[spec.name].add(labels, value, made)
        return fams.all()

    def _run(self, snap: HostSnapshot, argv: tuple[str, ...]) -> CommandResult | None:
        res = snap.commands.get(argv)
        if res is None or res.ok:
            return res
        self.warn_once(
            f"fail:{argv[1]}:{res.error or res.returncode}",
            "flowadm failed",
            command=" ".join(argv),
            reason=res.reason,
            effect="no flows reported" if argv[1] == "show-flow" else "flows without maxbw",
        )
        return None

    def _show_flow(self, snap: HostSnapshot) -> FlowTable | None:
        res = self._run(snap, SHOW_FLOW_ARGV)
        if res is None:
            return None
        table = parse_show_flow(res.stdout)
        self._log_problems("show-flow", table.problems)
        return table

    def _flowprops(self, snap: HostSnapshot) -> FlowProps:
        res = self._run(snap, SHOW_FLOWPROP_ARGV)
        if res is None:
            return FlowProps()
        props = parse_flowprops(res.stdout)
        self._log_problems("show-flowprop", props.problems)
        return props

    def _log_problems(self, sub: str, problems: list[str]) -> None:
        if problems:
            self.warn_once(
                f"parse:{sub}",
                "flowadm output has lines that could not be read; they are ignored",
                command=f"flowadm {sub}",
                problems=problems[:5],
            )

    @staticmethod
    def _flow_kstats(snap: HostSnapshot) -> dict[str, Kstat]:
        return {ks.name: ks for ks in snap.kstats.klass("flow") if ks.module == "unix"}

    @staticmethod
    def _link_zones(snap: HostSnapshot) -> dict[str, str]:
        """The zone of each link a flow may name: the kstat name (z5_net0 in the
        global zone) and the name the zone sees (net0) when only one zone has it."""
        zones: dict[str, str] = {}
        seen_as: dict[str, set[str]] = {}
        for ks in snap.kstats.module("link"):
            if ks.ks_class != "net":
                continue
            lid = identify(ks)
            if lid.zonename:
                zones[ks.name] = lid.zonename
                seen_as.setdefault(lid.link, set()).add(lid.zonename)
        for link, names in seen_as.items():
            if link not in zones and len(names) == 1:
                zones[link] = next(iter(names))
        return zones
