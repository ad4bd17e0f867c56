"""Synthetic SmartOS hosts, written as bundles (``dtagent simulate``, ``dtagent demo``).

:func:`make_host` builds the zones; each part module appends one area of every frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from dtagent.bundle import BundleWriter, Checkpoints, Frame
from dtagent.simulate import (
    dtrace_part,
    health,
    network,
    storage,
    vm_kstats,
    zone_commands,
    zone_kstats,
)
from dtagent.simulate.model import SimHost, make_host
from dtagent.snapshot import Kstat

PARTS = (zone_kstats, storage, network, zone_commands, health, vm_kstats, dtrace_part)

DEFAULT_STEP = 5.0
DEFAULT_DURATION = 3600.0
# Frames start at a fixed, plausible epoch so bundles of the same seed are identical.
EPOCH = 1_790_000_000.0


HOST_UPTIME = 12 * 86400.0  # the simulated host booted this long before the first frame


def frames(host: SimHost, count: int) -> Iterator[Frame]:
    """``count`` frames, one per ``host.step`` seconds.

    Every kstat gets a creation time (ks_crtime, hrtime nanoseconds since boot) as the
    kernel gives it: those present in the first frame were created a minute after the
    host booted, the others when they first appear; a kstat that disappears (a zone
    halting) and comes back is a new kstat, with a new creation time. The host's boot
    time is in ``unix:0:system_misc`` ``boot_time``, as on illumos.
    """
    boot = host.acc.setdefault("host_boot", host.time - HOST_UPTIME)
    born: dict[tuple[str, int, str], int] = {}
    for i in range(count):
        if i:
            host.advance()
        frame = Frame(time=host.time)
        for part in PARTS:
            part.contribute(host, frame, host.rng)
        frame.kstats.append(Kstat("unix", 0, "system_misc", "misc", data={
            "boot_time": int(boot), "ncpus": host.ncpus, "nproc": 400 + 30 * len(host.zones),
        }))
        now = int(((boot + 60.0) if i == 0 else host.time) - boot) * 1_000_000_000
        seen: dict[tuple[str, int, str], int] = {}
        for ks in frame.kstats:
            if not ks.crtime:
                ks.crtime = born.get(ks.key, now)
            seen[ks.key] = ks.crtime
        born = seen
        yield frame


def simulate(
    out: str | os.PathLike[str],
    zones: int,
    seed: int = 1,
    duration: float = DEFAULT_DURATION,
    step: float = DEFAULT_STEP,
    checkpoints: Checkpoints | None = None,
) -> int:
    """Write a bundle of a simulated host; returns the number of frames.
    ``checkpoints``: see :class:`~dtagent.bundle.BundleWriter` (the DTrace layer's,
    handed in: the simulator does not import it)."""
    if zones < 1:
        raise ValueError("a simulated host needs at least one zone")
    if step <= 0 or duration < step:
        raise ValueError("step must be positive and duration at least one step")
    count = int(duration // step) + 1
    host = make_host(zones, seed, EPOCH, step, duration)
    with BundleWriter(
        out,
        checkpoints,
        source="simulate",
        hostname=host.hostname,
        zones=zones,
        seed=seed,
        step=step,
    ) as writer:
        for frame in frames(host, count):
            writer.write(frame)
        return writer.frames


__all__ = ["PARTS", "SimHost", "frames", "make_host", "simulate"]
