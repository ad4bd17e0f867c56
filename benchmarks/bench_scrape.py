"""Benchmark: scrape cost of a simulated host, our renderer vs prometheus-client, RSS.

    python -m benchmarks.bench_scrape --zones 500 --frames 5
    python -m benchmarks.bench_scrape --zones 1000 --churn 200

Reports, for the DESIGN budgets: CPU time of one full collection + render (target under
100 ms at 500 zones), the renderer's speed against prometheus-client's generate_latest
on the same samples, and the agent's RSS (target under 80 MB at 1,000 zones) before and
after replaying many frames of zone churn. Timing is measured here, never asserted in a
test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dtagent.agent import Agent
from dtagent.bundle import read_bundle
from dtagent.config import load
from dtagent.exposition import format_le, render
from dtagent.metrics import MetricFamily
from dtagent.runtime import select_collectors
from dtagent.simulate import simulate
from dtagent.sources.replay import ReplaySource


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
    return psutil.Process().memory_info().rss / 2**20


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


def compare_renderers(families: list[MetricFamily], repeat: int) -> tuple[float, float]:
    ours = _cpu(lambda: render(families), repeat)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Adapter(families))  # type: ignore[arg-type]
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
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.bundle"
        frames = max(args.frames, args.churn)
        simulate(path, args.zones, seed=7, duration=5.0 * (frames - 1), step=5.0)
        bundle = read_bundle(path)
    position = [0.0]
    replay = ReplaySource(bundle, clock=lambda: position[0])
    collectors = select_collectors(load(None))
    agent = Agent(collectors, replay, replay, illumos=True, reuse_within=0)

    families = agent.collect()
    samples = sum(
        len(f.samples) + len(f.hist_samples) * (len(f.spec.buckets) + 3) for f in families
    )
    collect_s = _cpu(agent.collect, args.repeat)
    ours_s, theirs_s = compare_renderers(families, args.repeat)
    syn = synthetic_families(1000)
    syn_ours, syn_theirs = compare_renderers(syn, args.repeat)
    print(
        f"synthetic 1,000 zones x (40 series + 20-bucket histogram): dtagent "
        f"{syn_ours * 1000:.0f} ms, prometheus-client {syn_theirs * 1000:.0f} ms, "
        f"speed-up {syn_theirs / syn_ours:.1f} x"
    )
    print(f"zones: {args.zones}  samples: {samples}  collectors: {len(collectors)}")
    print(f"collect (all collectors):     {collect_s * 1000:8.1f} ms CPU")
    print(f"render, dtagent:              {ours_s * 1000:8.1f} ms CPU")
    print(f"render, prometheus-client:    {theirs_s * 1000:8.1f} ms CPU")
    print(f"renderer speed-up:            {theirs_s / ours_s:8.1f} x")
    print(
        f"scrape (collect + render):    {(collect_s + ours_s) * 1000:8.1f} ms CPU "
        f"(budget at 500 zones: 100 ms)"
    )
    print(f"RSS: {_rss():.1f} MiB (process start {rss_start:.1f} MiB; budget at 1,000 zones: 80)")
    if args.churn:
        rss_before = _rss()
        for i in range(args.churn):
            position[0] = 5.0 * i
            render(agent.collect())
        gc.collect()
        print(
            f"after {args.churn} frames of churn: RSS {_rss():.1f} MiB (was {rss_before:.1f} MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
