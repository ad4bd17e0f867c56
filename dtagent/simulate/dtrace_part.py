"""Simulated DTrace aggregation deltas for the shipped D scripts (scripts/d).

Each frame gets what the DTrace worker would have walked in the interval since the
previous frame (docs/bundle-dtrace.md, "Delta records"): for every running zone and
every shipped script, a histogram record with the non-zero llquantize buckets and the
record of its parallel ``sum()``, plus the counters. Keys are the zones' current ids,
so a zone that halted gets nothing and a rebooted zone reports under its new id.
The frame holds them as the worker writes them: one record per aggregation, all its
keys together (docs/bundle-dtrace.md, "Batched records").

Latencies are drawn from lognormal mixtures chosen per zone profile
(dtagent.simulate.model): zones with ``slow_disk`` have slow disk, ZIL and file system
tails, ``cpu_throttled`` zones are parked by their CPU cap and wait longer for a CPU,
the ``slow_connect`` zone's TCP connects take tens of milliseconds with SYN
retransmits. Counts are scaled-down event rates (a bundle should stay small), and
each sampled interval lands in the DTrace bucket the kernel would use for a value
inside it, recorded as the scripts do (value - 1, see docs/dtrace.md), so the
exported histograms are exact and ``_sum`` agrees with the buckets.

The part draws from its own generator, seeded by the host name (which carries the
seed) and the frame time, so adding it left the other parts' random sequences, and
therefore their output for a seed, unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from dtagent.bundle import Frame
from dtagent.dtrace.buckets import Buckets
from dtagent.dtrace.records import combine, parse, to_json
from dtagent.dtrace.spec import LE_PRESETS
from dtagent.simulate.model import SimHost, SimZone

# The shipped scripts record llquantize(value - 1, ...) (offset 1).
OFFSET = 1
NS = Buckets("llquantize", (10, 3, 9, 10))  # runq, cpucaps, syscall*, fs, tcpconn, zil
US = Buckets("llquantize", (10, 0, 6, 10))  # disk (zfs-zone-latency, zfs-zone-wait)
NS_UNIT = 1e-9
US_UNIT = 1e-6

# The shipped histograms' le bounds (seconds); samples are drawn per interval between
# them, so every interval is a union of whole DTrace buckets.
BOUNDS = LE_PRESETS["latency"]

SYSCALLS = ("read", "write", "openat", "close")
# syscall_by_name is off by default: only the first few zones get its records.
BY_NAME_ZONES = 3

# Events per second of a zone (scaled down from real hosts to keep bundles small;
# "busy" zones have three times more). Latency distributions do not depend on them.
RATES = {
    "runq": 30.0,
    "cpucaps": 20.0,  # a cpu_throttled zone
    "syscall": 80.0,
    "fs": 20.0,  # split across read, write, fsync, open, readdir
    "disk": 4.0,  # reads; writes are a fifth
    "tcpconn": 0.5,  # four times more in the slow_connect zone
    "zil": 0.2,  # ten times more in slow_disk zones
}


@dataclass(frozen=True)
class Latency:
    """A lognormal latency (median seconds, shape), with an optional slow mode."""

    median: float
    sigma: float
    tail: float = 0.0  # fraction of events in the slow mode
    tail_median: float = 0.0
    tail_sigma: float = 0.6

    def cdf(self, x: float) -> float:
        main = _lognorm_cdf(x, self.median, self.sigma)
        if not self.tail:
            return main
        slow = _lognorm_cdf(x, self.tail_median, self.tail_sigma)
        return (1 - self.tail) * main + self.tail * slow


def _lognorm_cdf(x: float, median: float, sigma: float) -> float:
    if x <= 0:
        return 0.0
    return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))


def _count(rng: random.Random, expected: float) -> int:
    """An integer with the given expectation (stochastic rounding)."""
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def _intervals() -> list[tuple[float, float, float]]:
    """(low, high, representative) in seconds for each interval between bounds."""
    out = [(0.0, BOUNDS[0], BOUNDS[0] * 0.7)]
    for lo, hi in itertools.pairwise(BOUNDS):
        out.append((lo, hi, math.sqrt(lo * hi)))
    out.append((BOUNDS[-1], math.inf, BOUNDS[-1] * 1.5))
    return out


INTERVALS = _intervals()


@functools.cache
def _slots(unit: float) -> tuple[tuple[int, int, int | None], ...]:
    """Per interval: a value in recorded units inside it, its bucket and lower bound."""
    buckets = NS if unit == NS_UNIT else US
    out = []
    for lo, hi, rep in INTERVALS:
        v = max(math.floor(lo / unit + 1e-9) + 1, round(rep / unit))
        if not math.isinf(hi):
            v = min(v, round(hi / unit))
        i = buckets.index(v - OFFSET)
        out.append((v, i, buckets.lower(i)))
    return tuple(out)


@functools.cache
def _probabilities(lat: Latency) -> tuple[tuple[int, float], ...]:
    """(interval, probability) for the intervals a latency reaches at all."""
    out = []
    prev = 0.0
    for k, (_lo, hi, _rep) in enumerate(INTERVALS):
        cur = 1.0 if math.isinf(hi) else lat.cdf(hi)
        p = max(0.0, cur - prev)
        prev = cur
        if p > 1e-6:
            out.append((k, p))
    return tuple(out)


class _Out:
    """Collects one frame's records."""

    def __init__(self, rng: random.Random, dt: float) -> None:
        self.rng = rng
        self.dt = dt
        self.records: list[dict[str, Any]] = []

    def events(self, rate: float) -> int:
        """How many events at ``rate`` per second happened in the interval."""
        return _count(self.rng, rate * self.dt * self.rng.uniform(0.8, 1.2))

    def histogram(
        self,
        script: str,
        agg: str,
        key: list[Any],
        n: int,
        lat: Latency,
        unit: float = NS_UNIT,
    ) -> int:
        """Records of ``n`` latencies drawn from ``lat`` (and their sum); returns the count.

        ``unit`` is the script's recorded unit (ns, or us for the disk script).
        """
        if n <= 0:
            return 0
        slots = _slots(unit)
        rand = self.rng.random
        pairs: list[list[Any]] = []
        total = count = 0
        for k, p in _probabilities(lat):
            e = n * p
            c = int(e) + (1 if rand() < e - int(e) else 0)
            if c:
                v, _i, lower = slots[k]
                pairs.append([lower, c])
                total += c * v
                count += c
        if not count:
            return 0
        self.records.append({"script": script, "agg": agg, "key": key, "buckets": pairs})
        self.records.append({"script": script, "agg": f"{agg}_sum", "key": key, "value": total})
        return count

    def value(self, script: str, agg: str, key: list[Any], value: int) -> None:
        if value:
            self.records.append({"script": script, "agg": agg, "key": key, "value": value})


@dataclass(frozen=True)
class _Series:
    """One histogram a zone reports: its aggregation, key tail, rate and latency."""

    script: str
    agg: str
    tail: tuple[str, ...]  # key after the zone id ("read", ...); () for zone-only keys
    rate: float  # events per second
    lat: Latency
    unit: float = NS_UNIT


@dataclass(frozen=True)
class _Model:
    """A zone's steady character, fixed by its uuid and profile."""

    series: tuple[_Series, ...]
    by_name: tuple[_Series, ...]  # syscall_by_name, for the first few zones only
    cpucaps_rate: float
    connect: _Series
    commit: _Series
    zil_record_bytes: int
    slow_disk: bool


@functools.lru_cache(maxsize=4096)
def _model(uuid: str, profile: frozenset[str], capped: bool) -> _Model:
    traits = random.Random(f"traits/{uuid}")
    scale = traits.uniform(0.5, 1.5) * (3.0 if "busy" in profile else 1.0)
    slow_disk = "slow_disk" in profile
    throttled = "cpu_throttled" in profile and capped

    # runq: every runnable thread's wait for a CPU (longer when the cap bites).
    runq_median = traits.uniform(5e-6, 15e-6)
    if throttled:
        runq = Latency(1.5e-3, 1.3)
    else:
        runq = Latency(runq_median, 1.0, tail=0.01, tail_median=2e-3)
    # syscall: all calls except those that wait for events by design.
    syscall = Latency(
        traits.uniform(1.5e-6, 4e-6), 1.4,
        tail=0.02 if slow_disk else 0.002, tail_median=20e-3 if slow_disk else 1e-3,
    )  # fmt: skip
    # fs: application-visible ZFS operations (ARC hits, then a slow mode).
    tail = 0.15 if slow_disk else 0.02
    slow = 40e-3 if slow_disk else 3e-3
    fs_rate = RATES["fs"] * scale
    # disk: physical ZFS I/O, recorded in microseconds.
    disk_rate = RATES["disk"] * scale
    series = (
        _Series("runq", "runq", (), RATES["runq"] * scale, runq),
        _Series("syscall", "syscall", (), RATES["syscall"] * scale, syscall),
        _Series("fs", "fs", ("read",), fs_rate, Latency(12e-6, 1.2, tail, slow)),
        _Series("fs", "fs", ("write",), fs_rate * 0.4, Latency(25e-6, 1.0, tail / 2, slow)),
        _Series("fs", "fs", ("fsync",), fs_rate * 0.01, Latency(60e-3 if slow_disk else 1e-3, 0.8)),
        _Series("fs", "fs", ("open",), fs_rate * 0.05, Latency(20e-6, 0.9)),
        _Series("fs", "fs", ("readdir",), fs_rate * 0.005, Latency(40e-6, 1.0, tail, slow)),
        _Series(
            "disk", "disk", ("read",), disk_rate,
            Latency(35e-3 if slow_disk else 2e-3, 0.9 if slow_disk else 0.7), US_UNIT,
        ),
        _Series(
            "disk", "disk", ("write",), disk_rate / 5,
            Latency(60e-3 if slow_disk else 1e-3, 0.8), US_UNIT,
        ),
    )  # fmt: skip
    by_name = tuple(
        _Series("syscall_by_name", "syscall_by_name", (name,), RATES["syscall"] / 8 * scale,
                syscall)
        for name in SYSCALLS
    )  # fmt: skip
    # cpucaps: only capped zones at their cap are parked (busy ones now and then).
    cpucaps_rate = 0.0
    if throttled:
        cpucaps_rate = RATES["cpucaps"] * scale
    elif capped and "busy" in profile:
        cpucaps_rate = RATES["cpucaps"] / 200
    # tcpconn: outgoing TCP connects; the slow_connect zone loses SYNs now and then.
    if "slow_connect" in profile:
        connect = _Series(
            "tcpconn", "tcpconn", (), RATES["tcpconn"] * 4 * scale,
            Latency(40e-3, 0.8, tail=0.05, tail_median=1.05, tail_sigma=0.3),
        )  # fmt: skip
    else:
        connect = _Series(
            "tcpconn", "tcpconn", (), RATES["tcpconn"] * scale,
            Latency(traits.uniform(2e-4, 6e-4), 0.9),
        )  # fmt: skip
    # zil: commits of fsync/O_DSYNC callers.
    commit = _Series(
        "zil", "zil_commit", (), RATES["zil"] * (10 if slow_disk else 1) * scale,
        Latency(50e-3 if slow_disk else 6e-4, 0.8),
    )  # fmt: skip
    return _Model(
        series=series,
        by_name=by_name,
        cpucaps_rate=cpucaps_rate,
        connect=connect,
        commit=commit,
        zil_record_bytes=traits.randrange(4096, 65536, 512),
        slow_disk=slow_disk,
    )


CPUCAPS_WAIT = Latency(8e-3, 0.7)


def _zone(out: _Out, host: SimHost, zone: SimZone, zid: int, by_name: bool) -> None:
    model = _model(zone.uuid, zone.profile, zone.cpu_cap is not None)
    for s in (*model.series, *(model.by_name if by_name else ()), model.connect):
        out.histogram(s.script, s.agg, [zid, *s.tail], out.events(s.rate), s.lat, s.unit)
    if zone.cpu_cap is not None:
        parked = out.histogram(
            "cpucaps", "cpucaps_wait", [zid], out.events(model.cpucaps_rate), CPUCAPS_WAIT
        )
        out.value("cpucaps", "cpucaps_throttles", [zid], parked)
    if model.slow_disk:
        _throttle(out, zone, zid)
    # zil: keyed by the host's first pool, then the zone.
    pool = host.pools[0]
    c = model.commit
    commits = out.histogram("zil", "zil_commit", [pool, zid], out.events(c.rate), c.lat)
    out.value("zil", "zil_bytes", [pool, zid], commits * model.zil_record_bytes)


def _throttle(out: _Out, zone: SimZone, zid: int) -> None:
    """The zone I/O throttle's delays: steps of 5 us up to 100 us (200 us for writes)."""
    delay = int(zone.acc.get("dtrace_zfs_delay", 40))
    delay = min(100, max(5, delay + 5 * out.rng.choice((-1, 0, 0, 1))))
    zone.acc["dtrace_zfs_delay"] = delay
    for op, n, wait in (
        ("read", out.events(3), delay),
        ("write", out.events(6), min(200, delay * 2)),
    ):
        if not n:
            continue
        i = US.index(wait - OFFSET)
        key = [zid, op]
        out.records.append(
            {"script": "disk", "agg": "disk_throttle", "key": key, "buckets": [[US.lower(i), n]]}
        )
        out.records.append(
            {"script": "disk", "agg": "disk_throttle_sum", "key": key, "value": n * wait}
        )


def _global(out: _Out, host: SimHost) -> None:
    """The global zone: its own processes, and the txg sync's asynchronous writes."""
    key = [0]
    out.histogram("runq", "runq", key, out.events(RATES["runq"] * 2), Latency(6e-6, 1.0))
    out.histogram("syscall", "syscall", key, out.events(RATES["syscall"] * 2), Latency(2e-6, 1.3))
    out.histogram(
        "disk", "disk", [0, "write"], out.events(RATES["disk"] * 10), Latency(3e-3, 0.8),
        US_UNIT,
    )  # fmt: skip


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Append this frame's DTrace deltas for every shipped script.

    ``rng`` (the host's shared generator) is deliberately not used; see the module
    docstring.
    """
    out = _Out(random.Random(f"dtrace/{host.hostname}/{frame.time!r}"), host.step)
    _global(out, host)
    for n, zone in enumerate(host.running()):
        assert zone.zoneid is not None
        _zone(out, host, zone, zone.zoneid, by_name=n < BY_NAME_ZONES)
    frame.dtrace.extend(to_json(r) for r in combine(parse(o) for o in out.records))
