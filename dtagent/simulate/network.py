"""Datalink kstats: link:0:<name> (class net) for physical links and zone VNICs.

Fields and types follow illumos-joyent uts/common/io/dls/dls_stat.c (reference
illumos-interfaces.md §4.1). In the global zone a zone's VNIC is named
z<zoneid>_<link> and carries a ``zonename`` statistic, so its name changes at every
zone boot.
"""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.simulate.model import SimHost, SimZone
from dtagent.snapshot import Kstat

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
    for phys in ("ixgbe0", "ixgbe1"):
        frame.kstats.append(
            link_kstat(host.acc, phys, f"link_{phys}_", None, host, total / 2 + 1e6, 10**10)
        )
