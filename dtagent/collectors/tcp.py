"""Per-zone TCP from the per-netstack tcp MIB kstats (tcp:<stackid>:tcp, class mib2).

illumos-gate usr/src/uts/common/inet/tcp/tcp_stats.c ``tcp_kstat_init`` creates one
named kstat per IP stack with ``kstat_create_netstack("tcp", stackid, "tcp", "mib2")``
and makes an exclusive-IP zone's kstat visible to the global zone. An exclusive stack's
id is its zone's id (every SmartOS zone has one); stack 0 is the global zone's, shared
by any shared-IP zone. So the instance is mapped to ``zonename`` through the running
zones (zones:<id> kstats), as triton-cmon-agent does (TritonDataCenter/triton-cmon-agent
lib/instrumenter/collectors-vm/tcp.js).
A stack whose zone is not running (halting) is skipped. Fields: activeOpens
passiveOpens attemptFails estabResets currEstab retransSegs outRsts inDupAck listenDrop
listenDropQ0 halfOpenDrop timRetrans timRetransDrop ... are uint32 and wrap; inSegs and
outSegs are uint64.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import ZoneNames
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.snapshot import HostSnapshot, KstatInput
from dtagent.zonemap import ZONES

SRC = "tcp:<zoneid>:tcp (class mib2)"


def _spec(name: str, mtype: MetricType, help_: str, unit: str = "") -> MetricSpec:
    return MetricSpec(f"illumos_zone_tcp_{name}", mtype, help_, ("zonename",), unit, SRC)


FIELDS: tuple[tuple[str, MetricSpec], ...] = (
    ("activeOpens", _spec("active_opens_total", "counter", "Outgoing connections started.")),
    ("passiveOpens", _spec("passive_opens_total", "counter", "Incoming connections accepted.")),
    (
        "attemptFails",
        _spec("failed_connection_attempts_total", "counter", "Connection attempts that failed."),
    ),
    (
        "estabResets",
        _spec("established_resets_total", "counter", "Established connections reset."),
    ),
    ("currEstab", _spec("established_connections", "gauge", "Connections established now.")),
    ("inSegs", _spec("received_segments_total", "counter", "Segments received.")),
    ("outSegs", _spec("transmitted_segments_total", "counter", "Segments sent.")),
    ("retransSegs", _spec("retransmitted_segments_total", "counter", "Segments retransmitted.")),
    (
        "retransBytes",
        _spec("retransmitted_bytes_total", "counter", "Bytes retransmitted.", "bytes"),
    ),
    ("outRsts", _spec("transmitted_resets_total", "counter", "Segments sent with RST.")),
    ("inDupAck", _spec("received_duplicate_acks_total", "counter", "Duplicate ACKs received.")),
    (
        "listenDrop",
        _spec(
            "listen_drops_total",
            "counter",
            "Incoming connections dropped because a listen queue was full.",
        ),
    ),
    (
        "listenDropQ0",
        _spec(
            "listen_drops_q0_total",
            "counter",
            "Incoming connections dropped because a half-open (SYN) queue was full.",
        ),
    ),
    ("halfOpenDrop", _spec("half_open_drops_total", "counter", "Half-open connections dropped.")),
    ("timRetrans", _spec("retransmit_timeouts_total", "counter", "Retransmission timeouts.")),
    (
        "timRetransDrop",
        _spec(
            "retransmit_timeout_drops_total",
            "counter",
            "Connections dropped after too many retransmission timeouts.",
        ),
    ),
    ("outFastRetrans", _spec("fast_retransmits_total", "counter", "Fast retransmissions.")),
    (
        "timKeepaliveDrop",
        _spec("keepalive_drops_total", "counter", "Connections dropped by keepalive."),
    ),
)

# (statistic, family name): what the per-sample loop needs of FIELDS
_NAMES = tuple((stat, spec.name) for stat, spec in FIELDS)

class ZoneTcpCollector(Collector):
    name = "zone_tcp"
    description = (
        "Per-zone TCP from the per-netstack tcp MIB kstats: connections opened and "
        "established, resets, retransmissions, listen-queue drops, labelled by zonename"
    )
    specs = tuple(spec for _, spec in FIELDS)
    kstat_inputs = (KstatInput("tcp", "mib2"), ZONES)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        zones = ZoneNames(snap.kstats)
        fams = Families(self.specs)
        for ks in snap.kstats.module("tcp"):
            if ks.name != "tcp" or ks.ks_class != "mib2":
                continue
            zonename = zones.of(ks)  # the instance is the netstack's (= zone's) id
            if zonename is None:
                continue  # the stack of a zone that is going away
            made = snap.kstats.created(ks)
            z = (zonename,)  # one label tuple for the zone's samples
            data = ks.data
            for stat, name in _NAMES:
                value = data.get(stat)
                if type(value) is not int:
                    value = ks.int_stat(stat)  # None, or an int of another type
                if value is not None:
                    fams[name].add(z, value, made)
        return fams.all()
