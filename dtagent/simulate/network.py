"""Network: link kstats, Crossbow flows, per-zone TCP, and the dladm/flowadm outputs.

* link:0:<name> (class net) for physical links and zone VNICs. Fields and types follow
  illumos-joyent uts/common/io/dls/dls_stat.c. In
  the global zone a zone's VNIC is named z<zoneid>_<link> and carries a ``zonename``
  statistic, so its name changes at every zone boot.
* unix:0:<flow> (class flow) for a few user flows on the physical links and for the
  implicit flow of each physical link (usr/src/uts/common/io/mac/mac_flow.c, flow_stat_create).
* tcp:<zoneid>:tcp (class mib2) per zone netstack (inet/tcp/tcp_stats.c).
* Command records (docs/bundle.md): ``dladm show-linkprop -c -o link,value -p maxbw``
  (every link of the host, each zone's under the zone's own name), the per-zone
  ``dladm show-linkprop -z <zone> ...`` (recorded when the zone boots), and the
  flowadm show-flow / show-flowprop outputs, in libofmt parsable format, each recorded
  as often as the agent runs it by default.
"""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.parsers.network import (
    MAXBW_ARGV,
    SHOW_FLOW_ARGV,
    SHOW_FLOWPROP_ARGV,
    escape_ofmt,
    format_bw,
    zone_maxbw_argv,
)
from dtagent.simulate.model import SimHost, SimZone
from dtagent.snapshot import CommandResult, Kstat

U32 = 1 << 32


def _grow(acc: dict[str, float], key: str, amount: float) -> int:
    acc[key] = acc.get(key, 0.0) + max(0.0, amount)
    return int(acc[key])


def link_kstat(
    acc: dict[str, float],
    name: str,
    prefix: str,
    zonename: str | None,
    host: SimHost,
    rate_bps: float,
    speed: int,
) -> Kstat:
    rng = host.rng
    dt = host.step
    rbytes = _grow(acc, f"{prefix}rbytes", rate_bps / 8 * dt * rng.uniform(0.8, 1.2))
    obytes = _grow(acc, f"{prefix}obytes", rate_bps / 8 * dt * rng.uniform(0.5, 1.0))
    ipk = _grow(acc, f"{prefix}ipackets", rbytes / 900 - acc.get(f"{prefix}ipackets", 0))
    opk = _grow(acc, f"{prefix}opackets", obytes / 1100 - acc.get(f"{prefix}opackets", 0))
    data: dict[str, int | float | str] = {
        "ifspeed": speed,
        "multircv": _grow(acc, f"{prefix}multircv", dt * 2) % U32,
        "brdcstrcv": _grow(acc, f"{prefix}brdcstrcv", dt * 5) % U32,
        "multixmt": _grow(acc, f"{prefix}multixmt", dt) % U32,
        "brdcstxmt": _grow(acc, f"{prefix}brdcstxmt", dt) % U32,
        "norcvbuf": 0,
        "ierrors": _grow(acc, f"{prefix}ierrors", rng.choice((0, 0, 0, 1))) % U32,
        "noxmtbuf": 0,
        "oerrors": 0,
        "collisions": 0,
        # the 32-bit counters wrap; the *64 ones are the real totals
        "rbytes": rbytes % U32,
        "ipackets": ipk % U32,
        "obytes": obytes % U32,
        "opackets": opk % U32,
        "rbytes64": rbytes,
        "ipackets64": ipk,
        "obytes64": obytes,
        "opackets64": opk,
        "link_state": 1,
        "link_duplex": 2,
        "unknowns": 0,
    }
    if zonename is not None:
        data["zonename"] = zonename
    return Kstat("link", 0, name, "net", snaptime=int(host.time * 1e9), data=data)


def _zone_rate(zone: SimZone, nic: str, rng: random.Random) -> float:
    maxbw = zone.maxbw.get(nic)
    if maxbw and "at_maxbw" in zone.profile:
        return maxbw * rng.uniform(0.95, 0.99)
    return rng.uniform(1e5, 5e7) * (4 if "busy" in zone.profile else 1)


PHYS = ("ixgbe0", "ixgbe1")
# (flow, link, share of the link's traffic, maxbw bit/s or None, priority)
FLOWS = (
    ("https-1", "ixgbe0", 0.2, 500_000_000, "high"),
    ("nfs-1", "ixgbe1", 0.3, None, "medium"),
    ("dns-1", "ixgbe0", 0.01, 10_000_000, "low"),
)


def _maxbw_lines(zone: SimZone) -> list[str]:
    return [
        escape_ofmt([nic, format_bw(zone.maxbw[nic]) if nic in zone.maxbw else ""])
        for nic in zone.nics
    ]


def flow_kstat(host: SimHost, name: str, rate_bps: float) -> Kstat:
    dt = host.step
    rng = host.rng
    prefix = f"flow_{name}_"
    rbytes = _grow(host.acc, f"{prefix}rbytes", rate_bps / 8 * dt * rng.uniform(0.8, 1.2))
    obytes = _grow(host.acc, f"{prefix}obytes", rate_bps / 8 * dt * rng.uniform(0.5, 1.0))
    data: dict[str, int | float | str] = {
        "rbytes": rbytes,
        "ipackets": _grow(host.acc, f"{prefix}ipackets", rate_bps / 8 * dt / 900),
        "ierrors": _grow(host.acc, f"{prefix}ierrors", rng.choice((0, 0, 0, 1))),
        "obytes": obytes,
        "opackets": _grow(host.acc, f"{prefix}opackets", rate_bps / 8 * dt / 1100),
        "oerrors": 0,
    }
    return Kstat("unix", 0, name[:30], "flow", snaptime=int(host.time * 1e9), data=data)


def tcp_kstat(host: SimHost, zone: SimZone, rng: random.Random) -> Kstat:
    """tcp:<zoneid>:tcp, counters kept in the zone (a new netstack at every boot)."""
    dt = host.step
    acc = zone.acc
    busy = 4.0 if "busy" in zone.profile else 1.0
    conns = rng.uniform(2, 40) * busy * dt
    slow = 5.0 if "slow_connect" in zone.profile else 1.0
    segs = conns * rng.uniform(20, 60)
    data: dict[str, int | float | str] = {
        "rtoAlgorithm": 4,
        "rtoMin": 400,
        "rtoMax": 60000,
        "maxConn": -1,
        "activeOpens": _grow(acc, "tcp_active", conns * 0.4) % U32,
        "passiveOpens": _grow(acc, "tcp_passive", conns * 0.6) % U32,
        "attemptFails": _grow(acc, "tcp_fails", conns * 0.01 * slow) % U32,
        "estabResets": _grow(acc, "tcp_resets", conns * 0.02) % U32,
        "currEstab": int(conns / dt * rng.uniform(0.5, 3)),
        "inSegs": _grow(acc, "tcp_insegs", segs),
        "outSegs": _grow(acc, "tcp_outsegs", segs * 0.9),
        "retransSegs": _grow(acc, "tcp_retrans", segs * 0.002 * slow) % U32,
        "retransBytes": _grow(acc, "tcp_retransbytes", segs * 0.002 * slow * 1200) % U32,
        "outRsts": _grow(acc, "tcp_outrsts", conns * 0.03) % U32,
        "inDupAck": _grow(acc, "tcp_dupack", segs * 0.003) % U32,
        "listenDrop": _grow(acc, "tcp_listendrop", dt * 0.2 if busy > 1 else 0) % U32,
        "listenDropQ0": 0,
        "halfOpenDrop": 0,
        "timRetrans": _grow(acc, "tcp_timretrans", segs * 0.0005 * slow) % U32,
        "timRetransDrop": _grow(acc, "tcp_timretransdrop", conns * 0.0005 * slow) % U32,
        "outFastRetrans": _grow(acc, "tcp_fastretrans", segs * 0.001) % U32,
        "timKeepaliveDrop": 0,
    }
    zoneid = zone.zoneid if zone.zoneid is not None else 0
    return Kstat("tcp", zoneid, "tcp", "mib2", snaptime=int(host.time * 1e9), data=data)


def _record(frame: Frame, argv: tuple[str, ...], lines: list[str]) -> None:
    text = "".join(f"{ln}\n" for ln in lines)
    frame.commands.append(CommandResult(argv, 0, text, ""))


# How often the agent's command source runs these by default (the link collector's
# maxbw_max_age, the flow collector's max_age): the bundle records them as often.
MAXBW_REFRESH = 300.0
FLOW_REFRESH = 60.0


def _due(acc: dict[str, float], key: str, now: float, every: float) -> bool:
    """True (and remembered) when ``key`` was last recorded ``every`` seconds ago or never."""
    last = acc.get(key)
    if last is not None and now - last < every:
        return False
    acc[key] = now
    return True


def _commands(host: SimHost, frame: Frame) -> None:
    running = host.running()
    lines = [escape_ofmt([p, ""]) for p in PHYS]
    for zone in running:
        lines.extend(_maxbw_lines(zone))
    if _due(host.acc, "net_maxbw_at", host.time, MAXBW_REFRESH):
        _record(frame, MAXBW_ARGV, lines)
    for zone in running:
        # at boot (a new zone id: the zone's acc starts afresh) and every refresh
        if _due(zone.acc, "net_maxbw_at", host.time, MAXBW_REFRESH):
            _record(frame, zone_maxbw_argv(zone.uuid), _maxbw_lines(zone))
    if _due(host.acc, "net_flows_at", host.time, FLOW_REFRESH):
        _record(frame, SHOW_FLOW_ARGV, [escape_ofmt([f, link]) for f, link, *_ in FLOWS])
        props: list[str] = []
        for flow, _, _, bw, prio in FLOWS:
            props.append(escape_ofmt([flow, "maxbw", format_bw(bw) if bw else ""]))
            props.append(escape_ofmt([flow, "priority", prio]))
        _record(frame, SHOW_FLOWPROP_ARGV, props)


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    total = 0.0
    for zone in host.running():
        for nic in zone.nics:
            rate = _zone_rate(zone, nic, rng)
            total += rate
            frame.kstats.append(
                link_kstat(
                    zone.acc,
                    f"z{zone.zoneid}_{nic}",
                    f"link_{nic}_",
                    zone.uuid,
                    host,
                    rate,
                    10_000_000_000,
                )
            )
    for phys in PHYS:
        rate = total / 2 + 1e6
        frame.kstats.append(link_kstat(host.acc, phys, f"link_{phys}_", None, host, rate, 10**10))
        frame.kstats.append(flow_kstat(host, phys, rate))  # the link's implicit flow
    for flow, _, share, _, _ in FLOWS:
        frame.kstats.append(flow_kstat(host, flow, (total / 2 + 1e6) * share))
    for zone in [host.global_zone, *host.running()]:
        frame.kstats.append(tcp_kstat(host, zone, rng))
    _commands(host, frame)
