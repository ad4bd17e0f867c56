"""Benchmark: the agent's cost per DTrace delta record, decoding and applying.

    python -m benchmarks.bench_dtrace --zones 100 500 1000 2000

The records are a simulated host's (`dtagent simulate`'s DTrace part, every shipped
script on), written one JSON line per record as the worker writes them. For each size
it reports, per key (one zone's delta of one aggregation, the unit the record rate
counts), the CPU of ``json.loads`` + :func:`dtagent.dtrace.records.parse` of the lines
(decode) and of :meth:`Accumulator.apply` (apply), once the keys have been seen (the
steady state of a running agent), with the lines and keys per frame. CPU time
(``time.process_time``, the garbage collector off as in a scrape), best of several
rounds: compare within one run. Nothing is
asserted; the figures go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable

from dtagent.dtrace.accumulator import Accumulator
from dtagent.dtrace.provider import with_global
from dtagent.dtrace.records import Record, parse
from dtagent.dtrace.spec import load_scripts, script_dirs
from dtagent.simulate import EPOCH, frames
from dtagent.simulate.model import make_host
from dtagent.zonemap import running_zones


def _best(fn: Callable[[], object], rounds: int) -> float:
    """Best CPU time of ``rounds`` calls, with the cyclic garbage collector off as the
    agent has it while it collects (dtagent/agent.py)."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        finally:
            gc.enable()
    return best


def _keys(obj: object) -> int:
    if isinstance(obj, dict) and isinstance(obj.get("keys"), list):
        return len(obj["keys"])
    return 1


def measure(zones: int, count: int, rounds: int) -> dict[str, float]:
    """Decode and apply figures for ``count`` frames of a ``zones``-zone host."""
    host = make_host(zones, seed=1, start=EPOCH, step=5.0, duration=5.0 * count)
    specs = load_scripts(script_dirs(()), [])
    batches: list[tuple[list[bytes], dict[int, str]]] = []
    for frame in frames(host, count):
        lines = [json.dumps(o, separators=(",", ":")).encode() for o in frame.dtrace]
        batches.append((lines, with_global(running_zones(frame.snapshot()))))
    keys = sum(_keys(json.loads(line)) for lines, _ in batches for line in lines)
    n_lines = sum(len(lines) for lines, _ in batches)

    def decode() -> list[list[Record]]:
        return [[parse(json.loads(line)) for line in lines] for lines, _ in batches]

    decoded = decode()
    # one zone map for every round (the frames' together), as a live agent applies a
    # scrape's records with that scrape's map: no zone comes and goes between rounds
    zmap: dict[int, str] = {}
    for _, frame_zones in batches:
        zmap.update(frame_zones)
    acc = Accumulator(specs, 100_000)
    for recs in decoded:
        acc.apply(recs, zmap)  # every key seen once: what follows is the steady state

    def apply() -> None:
        for recs in decoded:
            acc.apply(recs, zmap)

    t_decode = _best(decode, rounds)
    t_apply = _best(apply, rounds)
    return {
        "zones": zones,
        "lines_per_frame": n_lines / count,
        "keys_per_frame": keys / count,
        "decode_us_per_key": t_decode / keys * 1e6,
        "apply_us_per_key": t_apply / keys * 1e6,
        "rejected": float(sum(acc.rejected.values())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument("--frames", type=int, default=4, help="simulated 5 s frames")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| zones | lines/frame | keys/frame | decode µs/key | apply µs/key | total µs/key |")
    print("|---|---|---|---|---|---|")
    for z in args.zones:
        r = measure(z, args.frames, args.rounds)
        total = r["decode_us_per_key"] + r["apply_us_per_key"]
        print(f"| {z:,} | {r['lines_per_frame']:,.0f} | {r['keys_per_frame']:,.0f} | "
              f"{r['decode_us_per_key']:.2f} | {r['apply_us_per_key']:.2f} | {total:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
