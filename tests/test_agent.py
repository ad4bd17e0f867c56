"""The agent: a failing collector is reported and logged, the others still serve."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import structlog
from prometheus_client.parser import text_string_to_metric_families

from dtagent.agent import Agent
from dtagent.collectors.base import Collector
from dtagent.exposition import render
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot, Kstat, KstatSnapshot
from dtagent.sources.commands import NoCommands

ZONES = MetricSpec("t_zones", "gauge", "Zones seen.", ())


class Counting(Collector):
    name = "t_counting"
    specs = (ZONES,)

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fam = ZONES.family()
        fam.add((), len(snap.kstats.module("zones")))
        return [fam]


class Broken(Collector):
    name = "t_broken"

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        if self.fail:
            raise KeyError("nsec_user")
        return []


class StaticKstats:
    def kstats(self) -> KstatSnapshot:
        return KstatSnapshot([Kstat("zones", 1, "a"), Kstat("zones", 2, "b")])


def samples(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render(agent.collect()).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_failing_collector_is_reported_and_logged_once() -> None:
    broken = Broken()
    agent = Agent([broken, Counting()], StaticKstats(), NoCommands(), illumos=True, reuse_within=0)
    with structlog.testing.capture_logs() as logs:
        first = samples(agent)
        samples(agent)
    assert first[("t_zones", ())] == 2
    assert first[("dtagent_collector_success", (("collector", "t_broken"),))] == 0
    assert first[("dtagent_collector_success", (("collector", "t_counting"),))] == 1
    failures = [e for e in logs if e["event"] == "collector failed"]
    assert len(failures) == 1 and "KeyError" in failures[0]["error"]
    broken.fail = False
    with structlog.testing.capture_logs() as logs:
        again = samples(agent)
    assert again[("dtagent_collector_success", (("collector", "t_broken"),))] == 1
    assert [e["event"] for e in logs] == ["collector recovered"]


def test_kstat_source_failure_does_not_take_metrics_down() -> None:
    class Exploding:
        def kstats(self) -> KstatSnapshot:
            raise OSError("kstat chain gone")

    agent = Agent([Counting()], Exploding(), NoCommands(), illumos=True, reuse_within=0)
    with structlog.testing.capture_logs() as logs:
        got = samples(agent)
    assert got[("t_zones", ())] == 0
    assert any(e["event"] == "reading kstats failed" for e in logs)


def test_scrapes_close_together_share_one_collection() -> None:
    agent = Agent([Counting()], StaticKstats(), NoCommands(), illumos=True, reuse_within=60)
    assert agent.collect() is agent.collect()
    assert agent.collections == 1


def test_the_agent_lets_a_scrapes_families_go_once_no_caller_holds_them() -> None:
    import weakref

    agent = Agent([Counting()], StaticKstats(), NoCommands(), illumos=True, reuse_within=60)
    first = agent.collect()
    gone = weakref.ref(first)
    del first
    assert gone() is None  # not kept until the next collection
    agent.collect()
    assert agent.collections == 2  # nothing held to share: collected anew


def test_the_kstats_read_are_let_go_before_the_dtrace_deltas_are_applied() -> None:
    """The DTrace deltas and families are most of a large host's scrape: the kstats
    read (6 MiB at 1,000 zones) are released before the first family is drawn, which
    applies the deltas. With observers (``dtagent capture``, which records the deltas
    applied), the first family is drawn before they see the snapshot."""
    import weakref

    class Tracked(KstatSnapshot):  # a subclass has __weakref__
        pass

    class Kstats:
        ref: weakref.ref[KstatSnapshot] | None = None

        def kstats(self) -> KstatSnapshot:
            snap = Tracked([Kstat("zones", 1, "a")])
            self.ref = weakref.ref(snap)
            return snap

    events: list[str] = []

    class DTrace:
        def families(self, snap: HostSnapshot) -> Iterator[MetricFamily]:
            assert snap.kstats.module("zones")  # the zone map is read from it now

            def made() -> Iterator[MetricFamily]:
                alive = kstats.ref is not None and kstats.ref() is not None
                events.append("applied with kstats" if alive else "applied")
                fam = MetricSpec("t_dtrace", "gauge", "Drawn.", ()).family()
                fam.add((), 1)
                yield fam

            return made()

    kstats = Kstats()
    agent = Agent([Counting()], kstats, NoCommands(), illumos=True, reuse_within=0,
                  dtrace=DTrace())  # type: ignore[arg-type]
    text = render(agent.collect()).decode()
    assert "t_zones 1\n" in text and "t_dtrace 1\n" in text
    assert events == ["applied"]
    agent.observe(lambda snap: events.append(f"observed {len(snap.kstats.module('zones'))}"))
    text = render(agent.collect()).decode()
    assert "t_zones 1\n" in text and "t_dtrace 1\n" in text
    assert events == ["applied", "applied with kstats", "observed 1"]
