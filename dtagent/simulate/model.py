"""The simulated host: zones with caps, profiles and a life cycle.

The simulator writes bundles that look like a real SmartOS global zone: the same
kstat module:instance:name:statistic names and classes, the platform's "no limit"
values, counters that only grow, gauges that move, and zones that boot, halt and
reboot (getting a new zone id, as on illumos). Each part module (zone_kstats,
storage, network, zone_commands, dtrace_part) turns this model into one area of a
frame.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

GiB = 1 << 30
MiB = 1 << 20

# "No limit" as the kernel reports it (illumos-joyent uts/common/os/zone.c):
# memory_cap physcap is ptob(UINT32_MAX) with 4 KiB pages; swapcap and rctl
# values are UINT64_MAX.
UINT64_MAX = (1 << 64) - 1
PHYSCAP_UNLIMITED = 17592186040320

BRANDS = ("joyent", "joyent-minimal", "lx", "bhyve")
ALIASES = ("web", "db", "cache", "api", "build", "queue", "search", "mail", "dns", "proxy")

# Profiles steer what a zone does; parts read them.
PROFILES = (
    "busy",
    "near_mem_cap",
    "over_mem_cap",
    "near_swap_cap",
    "cpu_throttled",
    "near_nprocs",
    "near_quota",
    "slow_disk",
    "slow_connect",
    "at_maxbw",
)


@dataclass
class SimZone:
    """One zone: identity, caps (None = uncapped) and running state."""

    uuid: str
    alias: str
    brand: str
    image_uuid: str
    cpu_cap: int | None  # percent of one CPU
    cpu_baseline: int | None
    mem_cap: int | None  # bytes
    swap_cap: int | None
    locked_cap: int | None
    nprocs_cap: int | None
    quota: int | None  # bytes, of the zone's dataset
    zonedid: int = 0  # debug id: stays with the zone across reboots (bhyve VM names use it)
    profile: frozenset[str] = frozenset()
    zoneid: int | None = None
    state: str = "installed"
    boot_time: int = 0
    nics: tuple[str, ...] = ("net0",)
    maxbw: dict[str, int] = field(default_factory=dict)  # nic -> bits/s
    # Running totals the parts keep (counters must survive a zone's reboot only where
    # the kernel keeps them; zone kstats restart from zero at boot).
    acc: dict[str, float] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == "running" and self.zoneid is not None


@dataclass
class LifeEvent:
    time: float
    zone: SimZone
    action: str  # "halt" | "boot"


@dataclass
class SimHost:
    """The global zone: its zones, pools, clock and scheduled zone events."""

    hostname: str
    zones: list[SimZone]
    rng: random.Random
    time: float
    step: float
    ncpus: int = 32
    physmem: int = 256 * GiB
    pools: tuple[str, ...] = ("zones",)
    next_zoneid: int = 1
    events: list[LifeEvent] = field(default_factory=list)
    acc: dict[str, float] = field(default_factory=dict)
    global_zone: SimZone = field(default_factory=lambda: _global_zone())

    def running(self) -> list[SimZone]:
        return [z for z in self.zones if z.running]

    def boot(self, zone: SimZone) -> None:
        zone.zoneid = self.next_zoneid
        self.next_zoneid += 1
        zone.state = "running"
        zone.boot_time = int(self.time)
        zone.acc.clear()

    def halt(self, zone: SimZone) -> None:
        zone.zoneid = None
        zone.state = "installed"
        zone.acc.clear()

    def advance(self) -> None:
        """Move the clock one step and apply the zone events that fall due."""
        self.time += self.step
        due = [e for e in self.events if e.time <= self.time]
        self.events = [e for e in self.events if e.time > self.time]
        for event in due:
            if event.action == "halt" and event.zone.running:
                self.halt(event.zone)
            elif event.action == "boot" and not event.zone.running:
                self.boot(event.zone)


def _global_zone() -> SimZone:
    return SimZone(
        uuid="global",
        alias="global",
        brand="joyent",
        image_uuid="",
        cpu_cap=None,
        cpu_baseline=None,
        mem_cap=None,
        swap_cap=None,
        locked_cap=None,
        nprocs_cap=None,
        quota=None,
        zoneid=0,
        state="running",
    )


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_host(zones: int, seed: int, start: float, step: float, duration: float) -> SimHost:
    """A host with ``zones`` zones: most capped, some uncapped, some under pressure.

    A few zones halt and boot again during ``duration`` (a reboot gives a new zone
    id), and one is installed but never booted, so churn shows in the output.
    """
    rng = random.Random(seed)
    host = SimHost(
        hostname=f"sim-{seed:04d}",
        zones=[],
        rng=rng,
        time=start,
        step=step,
    )
    host.acc["duration"] = duration
    images = [_uuid(rng) for _ in range(3)]
    for i in range(zones):
        brand = BRANDS[i % len(BRANDS)] if i else "joyent"
        if i % 8 == 7:
            brand = "kvm"  # every eighth zone is a KVM guest, the others of brand bhyve stay
        uncapped = i % 7 == 3
        mem = rng.choice((1, 2, 4, 8, 16)) * GiB
        profile: set[str] = set()
        if i % 5 == 1:
            profile.add("busy")
        # Deterministic pressure profiles so the demo and the alert tests always
        # have near-exhaustion zones next to healthy ones.
        pressure = {
            2: {"near_mem_cap", "slow_disk"},
            4: {"cpu_throttled", "busy"},
            5: {"near_swap_cap", "over_mem_cap"},
            6: {"near_nprocs", "slow_connect"},
            8: {"near_quota", "at_maxbw"},
        }
        profile |= pressure.get(i % 10, set()) if i >= 2 or zones <= 2 else set()
        zone = SimZone(
            uuid=_uuid(rng),
            alias=f"{ALIASES[i % len(ALIASES)]}-{i // len(ALIASES) + 1:02d}",
            brand=brand,
            image_uuid=images[i % len(images)],
            cpu_cap=None if uncapped else rng.choice((100, 200, 400, 800)),
            cpu_baseline=None,
            mem_cap=None if uncapped else mem,
            swap_cap=None if uncapped else 2 * mem,
            locked_cap=None if uncapped else mem,
            nprocs_cap=None if uncapped else rng.choice((2000, 4000, 10000)),
            quota=None if uncapped else rng.choice((25, 50, 100, 200)) * GiB,
            profile=frozenset(profile),
            nics=("net0", "net1") if i % 4 == 0 else ("net0",),
            zonedid=i + 1,
        )
        if zone.cpu_cap is not None and brand in ("joyent", "joyent-minimal", "lx"):
            zone.cpu_baseline = zone.cpu_cap // 2
        if "at_maxbw" in profile or i % 6 == 0:
            zone.maxbw = {"net0": rng.choice((100, 200, 500)) * 1_000_000}
        host.zones.append(zone)
    never_booted = zones - 1 if zones >= 4 else None
    for i, zone in enumerate(host.zones):
        if i != never_booted:
            host.boot(zone)
    # Churn: every 6th zone (not the first) reboots once; every 9th halts for good.
    for i, zone in enumerate(host.zones):
        if i == 0 or i == never_booted:
            continue
        if i % 6 == 5:
            t = start + duration * rng.uniform(0.2, 0.5)
            host.events.append(LifeEvent(t, zone, "halt"))
            host.events.append(LifeEvent(t + 4 * step, zone, "boot"))
        elif i % 9 == 7:
            host.events.append(LifeEvent(start + duration * 0.6, zone, "halt"))
    return host
