"""Benchmark: scrape cost of a simulated host, our renderer vs prometheus-client, RSS.

    python -m benchmarks.bench_scrape --zones 500 --frames 5
    python -m benchmarks.bench_scrape --zones 1000 --churn 200

Reports, for the budgets in docs/architecture.md: CPU time of one full collection +
render (target under 100 ms at 500 zones, about 50,000 samples), the renderer's speed
against prometheus-client's generate_latest on the same samples, and the agent's RSS
(target under 80 MB at 1,000 zones) before and after many frames of zone churn. The
kstat collectors and the DTrace histograms are timed apart and together: the budget's
50,000 samples are the kstat side; every shipped D script adds its histograms per zone.

The simulated host is written to a temporary bundle by a child process and fed to the
agent one frame at a time, as a live host would be, so the RSS is the agent's own and
not the simulator's or that of a whole bundle held in memory.
Timing is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dtagent.agent import Agent
from dtagent.bundle import Frame, iter_frames, write_bundle
from dtagent.config import load
from dtagent.dtrace.provider import replay_provider
from dtagent.exposition import format_le, render, render_chunks
from dtagent.metrics import MetricFamily
from dtagent.runtime import select_collectors
from dtagent.simulate import EPOCH, frames
from dtagent.simulate.model import make_host
from dtagent.snapshot import CommandRequest, CommandResult, CommandResults, KstatSnapshot
from dtagent.zonemap import zones_of

STEP = 5.0


class FrameFeed:
    """The agent's kstat, command and DTrace sources, one simulated frame at a time."""

    def __init__(self, stream: Iterator[Frame]) -> None:
        self._stream = stream
        self._commands: dict[tuple[str, ...], CommandResult] = {}
        self._pending: list[Frame] = []
        self._snap = KstatSnapshot()
        self.advance()

    def advance(self) -> None:
        frame = next(self._stream)
        for res in frame.commands:
            self._commands[res.argv] = res
        self._snap = frame.snapshot()
        self._pending.append(frame)

    def kstats(self) -> KstatSnapshot:
        return self._snap

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        def latest(req: CommandRequest) -> tuple[CommandResult, CommandResult | None]:
            res = self._commands.get(req.argv)
            if res is None:
                return CommandResult(req.argv, 127, error="not simulated"), None
            return res, res

        return CommandResults.select(requests, latest, 0.0)

    def settle(self, timeout: float) -> bool:
        return True

    def dtrace_batches(self) -> list[tuple[list[dict[str, Any]], dict[int, str]]]:
        out, self._pending = self._pending, []
        return [(f.dtrace, zones_of(f.kstats)) for f in out]


class _Adapter:
    """Presents our families to prometheus-client, to time generate_latest on them."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        for fam in self.families:
            spec = fam.spec
            labels = list(spec.labels)
            if spec.type == "histogram":
                h = HistogramMetricFamily(spec.name, spec.help, labels=labels)
                for values, cum, total, count in fam.hist_samples:
                    buckets = [(format_le(b), c) for b, c in zip(spec.buckets, cum, strict=True)]
                    h.add_metric(list(values), [*buckets, ("+Inf", count)], total)
                yield h
            elif spec.type == "counter":
                c = CounterMetricFamily(spec.name, spec.help, labels=labels)
                for values, value in fam.samples:
                    c.add_metric(list(values), value)
                yield c
            else:
                g = GaugeMetricFamily(spec.name, spec.help, labels=labels)
                for values, value in fam.samples:
                    g.add_metric(list(values), value)
                yield g


def _cpu(fn: object, repeat: int) -> float:
    """Median CPU seconds of ``fn()``."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - t0)
    return statistics.median(times)


def _rss() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def synthetic_families(zones: int) -> list[MetricFamily]:
    """The reference workload: 40 series per zone plus a 20-bucket histogram per zone."""
    from dtagent.metrics import MetricSpec

    fams: list[MetricFamily] = []
    for m in range(40):
        kind = "counter" if m % 2 else "gauge"
        name = f"bench_metric_{m}" + ("_total" if kind == "counter" else "")
        fam = MetricSpec(name, kind, "Synthetic.", ("zonename",)).family()  # type: ignore[arg-type]
        for z in range(zones):
            fam.add((f"{z:08x}-1111-2222-3333-444455556666",), z * 1000.5 + m)
        fams.append(fam)
    bounds = tuple(2.0**k / 1e9 for k in range(10, 30))
    hist = MetricSpec(
        "bench_latency_seconds", "histogram", "Synthetic.", ("zonename",), buckets=bounds
    ).family()
    for z in range(zones):
        cum = [float(i * 10 + z) for i in range(len(bounds))]
        hist.add_histogram((f"{z:08x}-1111-2222-3333-444455556666",), cum, 1.5 * z, cum[-1] + 1)
    fams.append(hist)
    return fams


def write_frames(path: Path, zones: int, count: int) -> None:
    """Simulate ``count`` frames of a host into a bundle (run in a child process).

    Zones reboot from a fifth of the way through the host's life and some halt at three
    fifths (make_host): the timed scrapes see every zone running, the churn frames see
    both.
    """
    host = make_host(zones, 7, EPOCH, STEP, STEP * max(count, 200))
    write_bundle(path, frames(host, count), source="benchmark")


def _samples(families: list[MetricFamily]) -> int:
    return sum(
        len(f.samples) + len(f.hist_samples) * (len(f.spec.buckets) + 3) for f in families
    )


def compare_renderers(families: list[MetricFamily], repeat: int) -> tuple[float, float]:
    ours = _cpu(lambda: render(families), repeat)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Adapter(families))
    theirs = _cpu(lambda: generate_latest(registry), repeat)
    return ours, theirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zones", type=int, default=500)
    ap.add_argument("--frames", type=int, default=5, help="frames to simulate and time")
    ap.add_argument(
        "--churn",
        type=int,
        default=0,
        help="also replay this many frames of zone churn and report RSS growth",
    )
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    rss_start = _rss()
    frame_count = args.frames + args.churn + 1
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "bench.bundle"
    child = multiprocessing.get_context("spawn").Process(
        target=write_frames, args=(path, args.zones, frame_count)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"simulating the host failed (exit {child.exitcode})")
    feed = FrameFeed(iter_frames(path))
    config = load(None)
    collectors = select_collectors(config)
    dtrace = replay_provider(config, feed)
    agent = Agent(collectors, feed, feed, illumos=True, reuse_within=0, dtrace=dtrace)
    # Scrapes as the server makes them: one chunk per family, never joined.
    for _ in range(args.frames):  # a few frames in, so counters and histograms fill
        render_chunks(agent.collect())
        feed.advance()
    # Memory first, before the timings below allocate prometheus-client's output.
    gc.collect()
    print(
        f"RSS after {args.frames} scrapes: {_rss():.1f} MiB "
        f"(process start {rss_start:.1f} MiB; budget at 1,000 zones: 80)"
    )
    if args.churn:
        rss_before = _rss()
        trend = []
        for i in range(1, args.churn + 1):
            feed.advance()
            render_chunks(agent.collect())
            if i % max(1, args.churn // 4) == 0:
                gc.collect()
                trend.append(f"{_rss():.0f}")
        print(
            f"during {args.churn} more frames of zone churn: RSS {' -> '.join(trend)} MiB "
            f"(was {rss_before:.1f} MiB)"
        )

    families = agent.collect()
    kstat_fams = [f for f in families if not f.spec.source.startswith("D script")]
    collect_s = _cpu(agent.collect, args.repeat)
    kstat_agent = Agent(collectors, feed, feed, illumos=True, reuse_within=0)
    kstat_collect_s = _cpu(kstat_agent.collect, args.repeat)
    ours_s, theirs_s = compare_renderers(families, args.repeat)
    kstat_ours_s, kstat_theirs_s = compare_renderers(kstat_fams, args.repeat)
    syn = synthetic_families(1000)
    syn_ours, syn_theirs = compare_renderers(syn, args.repeat)
    print(
        f"synthetic 1,000 zones x (40 series + 20-bucket histogram): dtagent "
        f"{syn_ours * 1000:.0f} ms, prometheus-client {syn_theirs * 1000:.0f} ms, "
        f"speed-up {syn_theirs / syn_ours:.1f} x"
    )
    print(f"zones: {args.zones}  collectors: {len(collectors)} + DTrace")
    for label, fams, coll, ours, theirs in (
        ("kstat collectors", kstat_fams, kstat_collect_s, kstat_ours_s, kstat_theirs_s),
        ("kstats + DTrace", families, collect_s, ours_s, theirs_s),
    ):
        print(f"-- {label}: {_samples(fams)} samples")
        print(f"   collect:                   {coll * 1000:8.1f} ms CPU")
        print(f"   render, dtagent:           {ours * 1000:8.1f} ms CPU")
        print(f"   render, prometheus-client: {theirs * 1000:8.1f} ms CPU")
        print(f"   renderer speed-up:         {theirs / ours:8.1f} x")
        print(f"   scrape (collect + render): {(coll + ours) * 1000:8.1f} ms CPU")
    print("   (budget: 100 ms CPU for a 500-zone host of about 50,000 samples)")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
