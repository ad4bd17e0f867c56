"""Every collector declares what it reads, and what it declares is enough.

Each collector runs on frames of a simulated host that hold only the kstats it declares
(``kstat_inputs``, module and class, stricter than the live reader, which selects by
module) and the command results it requests: every metric it declares must then appear.
A collector that reads a kstat module it does not declare, or a metric no simulated
host produces, fails here rather than exporting nothing on a live host.
"""

from __future__ import annotations

import pytest

from dtagent.collectors import available
from dtagent.collectors.base import Collector
from dtagent.simulate import frames, make_host
from dtagent.snapshot import (
    CommandRequest,
    CommandResult,
    CommandResults,
    HostSnapshot,
    KstatSnapshot,
)
from dtagent.sources.hoststats import read_host_stats

COLLECTORS = available()
# Collectors whose metrics come from the operator's files, not from the platform.
OPERATORS = {"textfile": "reads *.prom files from a directory", "plugins": "runs executables"}


def _scrapes(collector: Collector, count: int = 30) -> set[str]:
    """Names of the families with samples over ``count`` frames of a simulated host
    (nine zones: every brand, a KVM guest among them; long enough for rebooting zones
    and a second sample of every ratio)."""
    host = make_host(9, seed=3, start=1_790_000_000.0, step=10.0, duration=count * 10.0)
    recorded: dict[tuple[str, ...], tuple[float, CommandResult]] = {}
    seen: set[str] = set()
    for frame in frames(host, count):
        for res in frame.commands:
            recorded[res.argv] = (frame.time, res)
        kstats = frame.snapshot().only(collector.kstat_inputs)
        requests = list(collector.commands(kstats))

        def latest(
            req: CommandRequest, now: float = frame.time
        ) -> tuple[CommandResult | None, CommandResult | None]:
            for argv in (req.argv, *req.fallbacks):
                if argv in recorded:
                    at, res = recorded[argv]
                    res = CommandResult(res.argv, res.returncode, res.stdout, finished=at)
                    return res, res if res.ok else None
            return None, None

        commands = CommandResults.select(requests, latest, frame.time)
        host_stats = None if collector.illumos_only else read_host_stats()
        snap = HostSnapshot(kstats, commands, time=frame.time, host=host_stats)
        seen.update(f.name for f in collector.collect(snap) if len(f))
    return seen


@pytest.mark.parametrize("name", sorted(set(COLLECTORS) - OPERATORS.keys()))
def test_every_declared_metric_appears_on_a_simulated_host(name: str) -> None:
    collector = COLLECTORS[name]()
    reads = collector.kstat_inputs or list(collector.commands(KstatSnapshot()))
    assert reads or not collector.illumos_only, f"{name} declares no kstats and no commands"
    declared = {spec.name for spec in collector.specs}
    missing = declared - _scrapes(collector)
    assert not missing, f"{name}: declared but never produced from its declared inputs"


def test_an_undeclared_module_gives_nothing() -> None:
    """The check has teeth: without its zone_vfs input, zone_vfs exports no I/O."""
    cls = COLLECTORS["zone_vfs"]

    class Undeclared(cls):  # type: ignore[misc, valid-type]
        kstat_inputs = tuple(i for i in cls.kstat_inputs if i.module != "zone_vfs")

    seen = _scrapes(Undeclared(), count=3)
    assert "illumos_zone_vfs_reads_total" not in seen
    assert "illumos_zone_vfs_reads_total" in _scrapes(cls(), count=3)
