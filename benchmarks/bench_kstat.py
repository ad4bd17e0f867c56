"""Benchmark: the live kstat read (`KstatReader.snapshot`) of a simulated host.

    python -m benchmarks.bench_kstat --zones 100 1000 2000 --rounds 20

The real :class:`~dtagent.sources.libkstat.KstatReader` reads, through ctypes, the
libkstat stand-in (tests/native/libkstat_stub.c) serving the kstats of a simulated host
of N zones (the modules the default collectors declare, as ``dtagent serve`` reads
them). Before each round the host moves one frame (5 s of simulated time) and the
stand-in reloads its feed in the next ``kstat_chain_update``; that reload's CPU is the
stand-in's (it writes it to FEED.cpu) and is left out. What remains is the reader's
own CPU per snapshot (user + system of this process; the read is single-threaded):
the chain update, one KSTAT_IOC_READ per kstat, decoding and building the snapshot,
with the cyclic garbage collector off, as the agent reads.
Reported per snapshot and per kstat, as the median and minimum over the rounds.
Timing is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from benchmarks import live_host
from dtagent import config as dtconfig
from dtagent.runtime import select_collectors
from dtagent.simulate import EPOCH, frames
from dtagent.simulate.model import make_host
from dtagent.snapshot import KstatInput, modules_of
from dtagent.zonemap import ZONES

STEP = 5.0


def reader_modules() -> frozenset[str]:
    """The modules `dtagent serve` reads with the default configuration."""
    collectors = select_collectors(dtconfig.load(None))
    inputs: set[KstatInput] = {i for c in collectors for i in c.kstat_inputs}
    inputs.add(ZONES)
    return modules_of(inputs)


def _stub_cpu(feed: Path) -> float:
    """The stand-in's cumulative reload CPU seconds (FEED.cpu)."""
    try:
        return int(Path(str(feed) + ".cpu").read_text().strip() or 0) / 1e9
    except (OSError, ValueError):
        return 0.0


def run(zones: int, rounds: int, workdir: Path, library: Path) -> dict[str, Any]:
    from dtagent.sources.libkstat import KstatReader

    feed = workdir / f"kstat-{zones}.feed"
    os.environ["KSTAT_STUB_FEED"] = str(feed)
    host = make_host(zones, 7, EPOCH, STEP, STEP * max(rounds + 2, 200))
    sim = list(frames(host, rounds + 2))

    def publish(i: int) -> None:
        frame = sim[i]
        live_host.write_atomic(
            feed, live_host.feed_text(frame.kstats, live_host.hrtime(frame, EPOCH))
        )

    publish(0)
    per_snapshot: list[float] = []
    counts: list[int] = []
    with KstatReader(str(library), reader_modules()) as reader:
        reader.kstats()  # the first read walks the chain and allocates every ks_data
        for i in range(1, rounds + 1):
            publish(i)
            # feed files are mtime-keyed; make sure each one is seen as replaced
            time.sleep(0.01)
            # the agent reads with the cyclic collector off (agent.py, _ScrapeGc)
            gc.collect()
            gc.disable()
            s0, c0 = _stub_cpu(feed), time.process_time()
            snap = reader.kstats()
            c1, s1 = time.process_time(), _stub_cpu(feed)
            gc.enable()
            per_snapshot.append(c1 - c0 - (s1 - s0))
            counts.append(len(snap))
        walks = reader.chain_walks
    kstats = statistics.median(counts)
    med, low = statistics.median(per_snapshot), min(per_snapshot)
    return {
        "zones": zones,
        "kstats": kstats,
        "rounds": rounds,
        "chain_walks": walks,
        "snapshot_ms": {"median": med * 1e3, "min": low * 1e3},
        "per_kstat_us": {"median": med / kstats * 1e6, "min": low / kstats * 1e6},
    }


def main(argv: list[str] | None = None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--zones", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    from tests.native import build_shared

    library = build_shared("libkstat_stub.c")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-kstat-") as tmp:
        for zones in args.zones:
            res = run(zones, args.rounds, Path(tmp), library)
            results.append(res)
            print(
                f"{zones:>5} zones  {res['kstats']:>7.0f} kstats  "
                f"{res['snapshot_ms']['median']:8.1f} ms/snapshot "
                f"(min {res['snapshot_ms']['min']:.1f})  "
                f"{res['per_kstat_us']['median']:5.2f} µs/kstat "
                f"(min {res['per_kstat_us']['min']:.2f})  "
                f"chain walks {res['chain_walks']}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"python": sys.version, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
