"""Datalinks (physical NICs, VNICs, aggregations) from the link:0:<name> kstats, and
their bandwidth caps (maxbw) from dladm.

kstat fields (illumos-joyent usr/src/uts/common/io/dls/dls_stat.c and dls_mgmt.c):
ifspeed (bit/s), the 32-bit counters multircv brdcstrcv multixmt brdcstxmt norcvbuf
ierrors noxmtbuf oerrors collisions unknowns, the 64-bit rbytes64 ipackets64 obytes64
opackets64 (the 32-bit rbytes/obytes wrap, so they are not used), link_state (0 down, 1
up, 4294967295 unknown) and, on SmartOS only, ``zonename``.

Zone VNICs: in a SmartOS global zone a VNIC that zone N sees as ``net0`` has the kstat
``link:0:zN_net0`` (dls_mgmt.c ``dls_devnet_stat_create``), and N changes at every zone
boot because the zone id does and the VNIC is re-created. Series are keyed on the
``zonename`` statistic and the name the zone sees (``link="net0"``), never on the kstat
name, so they survive a reboot. On illumos-gate (OmniOS) there is no zonename statistic
and the VNIC keeps its own name (``dns_net0``): ``link`` is that name, ``zonename`` empty.

maxbw (libdladm usr/src/lib/libdladm/common/linkprop.c; dladm(8) show-linkprop): the
links of the global zone, and every VNIC on illumos-gate,
come from one cached ``dladm show-linkprop -c -o link,value -p maxbw``. On SmartOS the
global zone sees every zone's links under the zone's own names (``net0`` once per zone),
so a zone's caps come from ``dladm show-linkprop -z <zonename> -c -o link,value -p
maxbw``, run by the command source for each zone when it boots and every
``maxbw_max_age`` seconds (a few at a time, off the scrape path), never per scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.linkid import LinkId, identify
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.parsers import ParseMemo
from dtagent.parsers.network import MAXBW_ARGV, MaxbwTable, parse_maxbw, zone_maxbw_argv
from dtagent.settings import duration, timeout
from dtagent.snapshot import (
    CommandRequest,
    CommandResult,
    HostSnapshot,
    Kstat,
    KstatInput,
    KstatSnapshot,
)
from dtagent.zonemap import ZONES, running_zones

SRC = "link:0:<link> (class net)"
MAXBW_SRC = "dladm show-linkprop -c -o link,value -p maxbw [-z zonename]"
LABELS = ("link", "zonename")


def _spec(name: str, mtype: MetricType, help_: str, unit: str = "", src: str = SRC) -> MetricSpec:
    return MetricSpec(f"illumos_link_{name}", mtype, help_, LABELS, unit, src)


RBYTES = _spec("received_bytes_total", "counter", "Bytes received (rbytes64).", "bytes")
OBYTES = _spec("transmitted_bytes_total", "counter", "Bytes sent (obytes64).", "bytes")
IPACKETS = _spec("received_packets_total", "counter", "Packets received (ipackets64).")
OPACKETS = _spec("transmitted_packets_total", "counter", "Packets sent (opackets64).")
IERRORS = _spec("receive_errors_total", "counter", "Receive errors (ierrors, 32-bit).")
OERRORS = _spec("transmit_errors_total", "counter", "Transmit errors (oerrors, 32-bit).")
NORCVBUF = _spec(
    "receive_drops_total", "counter", "Received packets dropped for lack of buffers (norcvbuf)."
)
NOXMTBUF = _spec(
    "transmit_drops_total", "counter", "Packets not sent for lack of buffers (noxmtbuf)."
)
MULTIRCV = _spec("received_multicast_packets_total", "counter", "Multicast packets received.")
BRDCSTRCV = _spec("received_broadcast_packets_total", "counter", "Broadcast packets received.")
MULTIXMT = _spec("transmitted_multicast_packets_total", "counter", "Multicast packets sent.")
BRDCSTXMT = _spec("transmitted_broadcast_packets_total", "counter", "Broadcast packets sent.")
COLLISIONS = _spec("collisions_total", "counter", "Collisions (half-duplex links).")
UNKNOWNS = _spec(
    "received_unknown_protocol_packets_total",
    "counter",
    "Received packets of a protocol nothing listened for (unknowns).",
)
SPEED = _spec(
    "speed_bytes_per_second",
    "gauge",
    "Link speed (ifspeed, bit/s, divided by 8); absent when the link reports 0.",
    "bytes per second",
)
UP = _spec("up", "gauge", "1 when the link is up, 0 when down; absent when unknown.")
MAXBW = _spec(
    "maxbw_bytes_per_second",
    "gauge",
    "Bandwidth cap (maxbw) of the link in bytes per second; absent when the link has none.",
    "bytes per second",
    MAXBW_SRC,
)
MAXBW_USAGE = MetricSpec(
    "illumos_link_maxbw_usage_ratio",
    "gauge",
    "Traffic of a capped link since the previous collection against its maxbw, per "
    "direction (in: received, out: sent).",
    (*LABELS, "direction"),
    "ratio",
    f"{SRC}; {MAXBW_SRC}",
)

COUNTERS: tuple[tuple[str, MetricSpec], ...] = (
    ("rbytes64", RBYTES),
    ("obytes64", OBYTES),
    ("ipackets64", IPACKETS),
    ("opackets64", OPACKETS),
    ("ierrors", IERRORS),
    ("oerrors", OERRORS),
    ("norcvbuf", NORCVBUF),
    ("noxmtbuf", NOXMTBUF),
    ("multircv", MULTIRCV),
    ("brdcstrcv", BRDCSTRCV),
    ("multixmt", MULTIXMT),
    ("brdcstxmt", BRDCSTXMT),
    ("collisions", COLLISIONS),
    ("unknowns", UNKNOWNS),
)
# (statistic, family name): what the per-sample loop needs of COUNTERS
_COUNTER_NAMES = tuple((stat, spec.name) for stat, spec in COUNTERS)


def link_table(
    kstats: KstatSnapshot,
) -> tuple[dict[LinkId, Kstat], list[tuple[tuple[str, str], tuple[str, str]]]]:
    """The link kstats of a snapshot by identity (of two with one identity, the current
    zone's), and the (link, zonename) identities seen twice with the two kstat names.
    A pure function of the snapshot, shared through :meth:`KstatSnapshot.derived`."""
    zone_ids = {name: zid for zid, name in running_zones(kstats).items()}
    out: dict[tuple[str, str], tuple[LinkId, Kstat]] = {}
    duplicates: list[tuple[tuple[str, str], tuple[str, str]]] = []
    for ks in kstats.module("link"):
        if ks.instance != 0 or ks.ks_class != "net":
            continue  # the per-link mac_* kstats have other names/classes
        lid = identify(ks)
        key = (lid.link, lid.zonename)
        other = out.get(key)
        if other is not None:
            duplicates.append((key, (other[1].name, ks.name)))
            if other[0].zoneid == zone_ids.get(lid.zonename):
                continue
        out[key] = (lid, ks)
    return {lid: ks for lid, ks in out.values()}, duplicates


class LinkCollector(Collector):
    name = "link"
    description = (
        "Physical links and VNICs from the link kstats (bytes, packets, errors, drops, "
        "multicast and broadcast), labelled by the link name the zone sees and the zone; "
        "bandwidth caps (maxbw) from dladm, and traffic against them"
    )
    specs = (*(s for _, s in COUNTERS), SPEED, UP, MAXBW, MAXBW_USAGE)
    kstat_inputs = (KstatInput("link", "net"), ZONES,)
    settings = {
        "maxbw_max_age": duration(
            300.0, "seconds a dladm maxbw answer is reused (a zone's also until it reboots)"
        ),
        "command_timeout": timeout(
            5.0, "seconds before a hung dladm is killed", maximum=60.0
        ),
    }

    def __init__(self, maxbw_max_age: float = 300.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.maxbw_max_age = maxbw_max_age
        self.command_timeout = command_timeout
        # (link, zonename) -> (snaptime ns, rbytes64, obytes64) at the previous collection
        self._prev: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._tables = ParseMemo(parse_maxbw)  # by argv: one dladm per zone

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        links = self._links(kstats)
        if any(not lid.zone_owned for lid in links):
            yield CommandRequest(
                MAXBW_ARGV, refresh=self.maxbw_max_age, timeout=self.command_timeout
            )
        zones = {lid.zonename: lid.zoneid for lid in links if lid.zoneid is not None}
        for zonename, zoneid in sorted(zones.items()):
            yield CommandRequest(
                zone_maxbw_argv(zonename),
                refresh=self.maxbw_max_age,
                timeout=self.command_timeout,
                generation=zoneid,
            )

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        links = self._links(snap.kstats)
        fams = Families(self.specs)
        for lid, ks in links.items():
            labels = (lid.link, lid.zonename)
            made = snap.kstats.created(ks)
            data = ks.data
            for stat, name in _COUNTER_NAMES:
                value = data.get(stat)
                if type(value) is not int:
                    value = ks.int_stat(stat)  # None, or an int of another type
                if value is not None:
                    fams[name].add(labels, value, made)
            speed = ks.int_stat("ifspeed")
            if speed:
                fams[SPEED.name].add(labels, speed / 8)
            state = ks.int_stat("link_state")
            if state in (0, 1):
                fams[UP.name].add(labels, float(state))
        caps = self._maxbw(snap, links)
        seen: dict[tuple[str, str], tuple[int, int, int]] = {}
        now_ns = int(snap.time * 1e9)
        for lid, ks in links.items():
            key = (lid.link, lid.zonename)
            rb, ob = ks.int_stat("rbytes64"), ks.int_stat("obytes64")
            t = ks.snaptime or now_ns
            bw = caps.get(lid)
            if bw:
                fams[MAXBW.name].add(key, bw / 8)
            if rb is None or ob is None:
                continue
            seen[key] = (t, rb, ob)
            prev = self._prev.get(key)
            if bw and prev is not None and t > prev[0] and rb >= prev[1] and ob >= prev[2]:
                dt = (t - prev[0]) / 1e9
                fams[MAXBW_USAGE.name].add((*key, "in"), (rb - prev[1]) * 8 / dt / bw)
                fams[MAXBW_USAGE.name].add((*key, "out"), (ob - prev[2]) * 8 / dt / bw)
        self._prev = seen
        return fams.all()

    def _links(self, kstats: KstatSnapshot) -> dict[LinkId, Kstat]:
        """Link kstats by identity; of two kstats with one identity, the current zone's.
        Worked out once per snapshot (:func:`link_table`): commands() and collect()
        both ask."""
        links, duplicates = kstats.derived(link_table)
        for key, names in duplicates:
            self.warn_once(
                f"dup:{key}",
                "two link kstats for one zone link; using the current zone id's",
                link=key[0],
                zonename=key[1],
                kstats=list(names),
            )
        return links


    def _maxbw(self, snap: HostSnapshot, links: dict[LinkId, Kstat]) -> dict[LinkId, int]:
        """maxbw in bit/s of every link that has a cap."""
        caps: dict[LinkId, int] = {}
        self._tables.rotate()
        tables: dict[tuple[str, ...], MaxbwTable | None] = {}
        for lid in links:
            argv = zone_maxbw_argv(lid.zonename) if lid.zone_owned else MAXBW_ARGV
            if argv not in tables:
                tables[argv] = self._parse(snap.commands.get(argv))
            table = tables[argv]
            bw = table.bw.get(lid.link) if table is not None else None
            if bw:
                caps[lid] = bw
        return caps

    def _parse(self, res: CommandResult | None) -> MaxbwTable | None:
        if res is None:
            return None  # not run yet
        cmd = " ".join(res.argv)
        if not res.ok:
            self.warn_once(
                f"fail:{res.argv[:3]}:{res.error or res.returncode}",
                "dladm maxbw query failed; links are reported without their caps",
                command=cmd,
                reason=res.reason,
            )
            return None
        table = self._tables(res.stdout, res.argv)
        if table.problems:
            self.warn_once(
                f"parse:{res.argv[:3]}",
                "dladm maxbw output has lines that could not be read; they are ignored",
                command=cmd,
                problems=table.problems[:5],
            )
        return table
