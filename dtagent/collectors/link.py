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

maxbw (reference §4.3): the links of the global zone, and every VNIC on illumos-gate,
come from one cached ``dladm show-linkprop -c -o link,value -p maxbw``. On SmartOS the
global zone sees every zone's links under the zone's own names (``net0`` once per zone),
so a zone's caps come from ``dladm show-linkprop -z <zonename> -c -o link,value -p
maxbw``, cached per zone until the zone reboots or ``maxbw_max_age`` passes, and at most
``maxbw_zones_per_scrape`` zones are refreshed per scrape so a host with many zones
never forks dladm per zone per scrape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.parsers.network import MaxbwTable, parse_maxbw
from dtagent.snapshot import CommandResult, HostSnapshot, Kstat
from dtagent.zonemap import running_zones

SRC = "link:0:<link> (class net)"
MAXBW_SRC = "dladm show-linkprop -c -o link,value -p maxbw [-z zonename]"
LABELS = ("link", "zonename")
MAXBW_ARGV = ("dladm", "show-linkprop", "-c", "-o", "link,value", "-p", "maxbw")
_ZONE_PREFIX = re.compile(r"^z(\d+)_(.+)$")


def zone_maxbw_argv(zonename: str) -> tuple[str, ...]:
    """The per-zone maxbw command (SmartOS dladm: ``-z`` selects the zone's links)."""
    return ("dladm", "show-linkprop", "-z", zonename, "-c", "-o", "link,value", "-p", "maxbw")


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


@dataclass(frozen=True, slots=True)
class LinkId:
    """Who a link kstat belongs to and the name its owner sees."""

    link: str
    zonename: str  # "" when the platform does not say (illumos-gate)
    zoneid: int | None  # from the z<N>_ prefix of a SmartOS zone VNIC

    @property
    def zone_owned(self) -> bool:
        return self.zoneid is not None


def identify(ks: Kstat) -> LinkId:
    """The labels of a link kstat (see the module docstring)."""
    zonename = ks.str_stat("zonename")
    if zonename and zonename != "global":
        m = _ZONE_PREFIX.match(ks.name)
        if m is not None:
            return LinkId(m[2], zonename, int(m[1]))
        return LinkId(ks.name, zonename, None)
    return LinkId(ks.name, zonename or "", None)


@dataclass(slots=True)
class _ZoneCaps:
    zoneid: int
    checked: float
    bw: dict[str, int | None]


class LinkCollector(Collector):
    name = "link"
    description = (
        "Physical links and VNICs from the link kstats (bytes, packets, errors, drops, "
        "multicast and broadcast), labelled by the link name the zone sees and the zone; "
        "bandwidth caps (maxbw) from dladm, and traffic against them"
    )
    specs = (*(s for _, s in COUNTERS), SPEED, UP, MAXBW, MAXBW_USAGE)
    settings_help = {
        "maxbw_max_age": "seconds a dladm maxbw answer is reused (a zone's also until it reboots)",
        "maxbw_zones_per_scrape": "most zones whose maxbw is re-read by one scrape "
        "(SmartOS, one dladm run per zone)",
        "command_timeout": "seconds before a hung dladm is killed",
    }

    def __init__(
        self,
        maxbw_max_age: float = 300.0,
        maxbw_zones_per_scrape: int = 16,
        command_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.maxbw_max_age = maxbw_max_age
        self.maxbw_zones_per_scrape = maxbw_zones_per_scrape
        self.command_timeout = command_timeout
        self._zone_caps: dict[str, _ZoneCaps] = {}
        # (link, zonename) -> (snaptime ns, rbytes64, obytes64) at the previous collection
        self._prev: dict[tuple[str, str], tuple[int, int, int]] = {}

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        links = self._links(snap)
        fams = Families(self.specs)
        for lid, ks in links.items():
            labels = (lid.link, lid.zonename)
            made = snap.kstats.created(ks)
            for stat, spec in COUNTERS:
                value = ks.int_stat(stat)
                if value is not None:
                    fams[spec.name].add(labels, value, made)
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

    def _links(self, snap: HostSnapshot) -> dict[LinkId, Kstat]:
        """Link kstats by identity; of two kstats with one identity, the current zone's."""
        zone_ids = {name: zid for zid, name in running_zones(snap.kstats).items()}
        out: dict[tuple[str, str], tuple[LinkId, Kstat]] = {}
        for ks in snap.kstats.module("link"):
            if ks.instance != 0 or ks.ks_class != "net":
                continue  # the per-link mac_* kstats have other names/classes
            lid = identify(ks)
            key = (lid.link, lid.zonename)
            other = out.get(key)
            if other is not None:
                self.warn_once(
                    f"dup:{key}",
                    "two link kstats for one zone link; using the current zone id's",
                    link=lid.link,
                    zonename=lid.zonename,
                    kstats=[other[1].name, ks.name],
                )
                if other[0].zoneid == zone_ids.get(lid.zonename):
                    continue
            out[key] = (lid, ks)
        return {lid: ks for lid, ks in out.values()}

    def _maxbw(self, snap: HostSnapshot, links: dict[LinkId, Kstat]) -> dict[LinkId, int]:
        """maxbw in bit/s of every link that has a cap."""
        caps: dict[LinkId, int] = {}
        plain = [lid for lid in links if not lid.zone_owned]
        dladm_ok = True
        if plain:
            res = snap.commands.run(
                MAXBW_ARGV, max_age=self.maxbw_max_age, timeout=self.command_timeout
            )
            table = self._parse(res)
            dladm_ok = table is not None
            if table is not None:
                for lid in plain:
                    bw = table.bw.get(lid.link)
                    if bw:
                        caps[lid] = bw
        zones: dict[str, int] = {
            lid.zonename: lid.zoneid for lid in links if lid.zoneid is not None
        }
        for zonename in [z for z in self._zone_caps if z not in zones]:
            del self._zone_caps[zonename]
        due = sorted(
            (z for z, zid in zones.items() if self._due(z, zid, snap.time)),
            key=lambda z: self._zone_caps[z].checked if z in self._zone_caps else -1.0,
        )
        # when dladm just failed (or hung), the zones wait for a later scrape; nor do
        # the per-zone queries of one scrape together take longer than one timeout
        started = time.monotonic()
        for zonename in due[: self.maxbw_zones_per_scrape if dladm_ok else 0]:
            if time.monotonic() - started > self.command_timeout:
                break
            zoneid = zones[zonename]
            res = snap.commands.run(
                zone_maxbw_argv(zonename),
                max_age=self.maxbw_max_age,
                timeout=self.command_timeout,
                generation=zoneid,
            )
            table = self._parse(res)
            if table is None:
                # dladm that fails (or hangs) for one zone does for the next: leave the
                # rest to later scrapes rather than stack timeouts in this one
                self._zone_caps.pop(zonename, None)
                break
            self._zone_caps[zonename] = _ZoneCaps(zoneid, snap.time, dict(table.bw))
        for lid in links:
            zc = self._zone_caps.get(lid.zonename) if lid.zone_owned else None
            # an answer older than two refresh intervals (dladm failing since) is stale
            fresh = zc is not None and snap.time - zc.checked <= 2 * self.maxbw_max_age
            if zc is not None and fresh and zc.zoneid == lid.zoneid:
                bw = zc.bw.get(lid.link)
                if bw:
                    caps[lid] = bw
        return caps

    def _due(self, zonename: str, zoneid: int | None, now: float) -> bool:
        zc = self._zone_caps.get(zonename)
        return zc is None or zc.zoneid != zoneid or now - zc.checked >= self.maxbw_max_age

    def _parse(self, res: CommandResult) -> MaxbwTable | None:
        cmd = " ".join(res.argv)
        if not res.ok:
            reason = res.error or f"exit status {res.returncode}: {res.stderr.strip()[:200]}"
            self.warn_once(
                f"fail:{res.argv[:3]}:{res.error or res.returncode}",
                "dladm maxbw query failed; links are reported without their caps",
                command=cmd,
                reason=reason,
            )
            return None
        table = parse_maxbw(res.stdout)
        if table.problems:
            self.warn_once(
                f"parse:{res.argv[:3]}",
                "dladm maxbw output has lines that could not be read; they are ignored",
                command=cmd,
                problems=table.problems[:5],
            )
        return table
