"""Benchmark: a scrape's families rendered, gzipped and added, in-process, in µs a sample.

    python -m benchmarks.bench_render --zones 1000
    python -m benchmarks.bench_render --zones 1000 --against REV   # before (REV) / after

The families are what the agent collects from a simulated host (``dtagent simulate``,
replayed through the whole agent as ``dtagent scrape --replay`` does, every shipped D
script on): two consecutive frames, so each render is a kept renderer's next scrape,
as a server makes them. Measured, as the CPU time of this process (best of
``--repeat``), never asserted in a test:

* **render**: :class:`dtagent.exposition.Renderer` of the second frame after the first;
* **gzip**: :func:`dtagent.server.gzip_chunks` of that text (level 1), the body size at
  other levels, and what reusing the compressed bytes of each family whose text did
  not change since the last scrape would cost (each family deflated on its own, a
  hash of each family's text to find them, the CRC-32 of the whole);
* **add**: :meth:`dtagent.metrics.MetricFamily.add` of every plain sample of the
  frame, with its start time where it has one, into new families, less what the same
  calls of a method that does nothing cost.

With ``--against REV`` the same is measured with dtagent/exposition.py and
dtagent/metrics.py as they are at git revision REV, beside this tree's: the before and
after of a change. A sample is a line of the exposition that is not a comment.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtagent import log as logsetup
from dtagent.config import load
from dtagent.exposition import Renderer
from dtagent.metrics import MetricFamily
from dtagent.runtime import build
from dtagent.server import gzip_chunks
from dtagent.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent


def collect(zones: int, seed: int, workdir: Path) -> tuple[list[MetricFamily], ...]:
    """The families of the last two frames of a simulated host's bundle."""
    bundle = workdir / "host.bundle"
    simulate(bundle, zones, seed=seed, duration=60.0, step=5.0)
    config = load(None)
    config.set("sources", "replay", str(bundle))
    config.set("dtrace", "scripts", {"syscall_by_name": True})  # every shipped script
    out = []
    for frame in (-2, -1):
        runtime = build(config, replay_frame=frame)
        try:
            out.append(runtime.agent.collect())
        finally:
            runtime.close()
    return tuple(out)


def module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The module in ``path`` as it is at git revision ``rev``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
        check=True, capture_output=True, text=True,
    ).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def best(repeat: int, run: Callable[[], object]) -> float:
    """The least CPU seconds of ``repeat`` runs."""
    least = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        least = min(least, time.process_time() - start)
    return least


def render_seconds(renderer_class: Any, first: list[MetricFamily],
                   second: list[MetricFamily], repeat: int) -> float:
    """CPU seconds of a kept renderer's render of ``second`` right after ``first``."""
    renderer = renderer_class()
    least = float("inf")
    for _ in range(repeat):
        b"".join(renderer.chunks(first))
        start = time.process_time()
        b"".join(renderer.chunks(second))
        least = min(least, time.process_time() - start)
    return least


def add_seconds(family_class: Any, families: list[MetricFamily], repeat: int) -> float:
    """CPU seconds of adding every plain sample of ``families`` to new ones, less the
    same loop calling a function that does nothing (what a collector's call costs)."""
    calls = [(f.spec, f.samples, f.created) for f in families if f.samples]

    def run(make: Callable[[Any], Any]) -> None:
        for spec, samples, created in calls:
            add = make(spec).add
            for key, value in samples:
                add(key, value, created.get(key))

    class Nothing:
        def __init__(self, spec: Any) -> None:
            pass

        def add(self, key: Any, value: Any, created: Any = None) -> None:
            pass

    return best(repeat, lambda: run(family_class)) - best(repeat, lambda: run(Nothing))


def gzip_and_reuse_seconds(previous: list[bytes], chunks: list[bytes],
                           repeat: int) -> tuple[float, float]:
    """CPU seconds of :func:`gzip_chunks` of ``chunks``, and of a gzip body that would
    deflate only the families whose text changed since ``previous`` (each family a raw
    deflate piece ended by a full flush, found by a hash of its text, the CRC-32 of
    the whole text for the trailer), measured in turn so that both see the same load."""

    def deflate(chunk: bytes) -> bytes:
        packer = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        return packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)

    def key(chunk: bytes) -> tuple[int, int]:
        return hash(memoryview(chunk)), len(chunk)  # a new view: its hash is not cached

    kept = {key(c): deflate(c) for c in previous}

    def reuse() -> None:
        crc = 0
        out = []
        for chunk in chunks:
            piece = kept.get(key(chunk))
            out.append(piece if piece is not None else deflate(chunk))
            crc = zlib.crc32(chunk, crc)

    now = again = float("inf")
    for _ in range(repeat):
        now = min(now, best(1, lambda: gzip_chunks(list(chunks))))
        again = min(again, best(1, reuse))
    return now, again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="REV", help="also measure this git revision")
    args = parser.parse_args()
    logsetup.setup("warning", "auto", sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        first, second = collect(args.zones, args.seed, Path(tmp))

    previous = list(Renderer().chunks(first))
    chunks = list(Renderer().chunks(second))
    text = b"".join(chunks)
    samples = sum(1 for line in text.splitlines() if not line.startswith(b"#"))
    adds = sum(len(f.samples) for f in second)
    print(f"{args.zones} zones: {samples:,} samples, {len(chunks)} families, "
          f"{len(text) / 2**20:.1f} MiB of text; {adds:,} add calls")

    def us(seconds: float, n: int) -> str:
        return f"{seconds * 1e3:7.1f} ms  {seconds / n * 1e6:.3f} µs/sample"

    versions: list[tuple[str, Any, Any]] = []
    if args.against:
        old_exposition = module_at(args.against, "dtagent/exposition.py", "_before_exposition")
        old_metrics = module_at(args.against, "dtagent/metrics.py", "_before_metrics")
        versions.append((f"before ({args.against})", old_exposition.Renderer,
                         old_metrics.MetricFamily))
    versions.append(("this tree", Renderer, MetricFamily))
    for label, renderer_class, family_class in versions:
        if renderer_class is not Renderer:  # the same text, or the figures mean nothing
            assert b"".join(renderer_class().chunks(second)) == text
        print(f"{label}:")
        rendered = render_seconds(renderer_class, first, second, args.repeat)
        print(f"  render  {us(rendered, samples)}")
        add = add_seconds(family_class, second, args.repeat)
        print(f"  add     {add * 1e3:7.1f} ms  {add / adds * 1e6:.3f} µs/call")

    body = gzip_chunks(list(chunks))
    gz, reused = gzip_and_reuse_seconds(previous, chunks, args.repeat)
    print(f"gzip level 1: {us(gz, samples)}, {sum(map(len, body)) / 2**20:.2f} MiB")
    for level in (2, 3, 6):
        seconds = best(args.repeat, lambda n=level: gzip_chunks(list(chunks), n))
        size = sum(map(len, gzip_chunks(list(chunks), level)))
        print(f"gzip level {level}: {us(seconds, samples)}, {size / 2**20:.2f} MiB")
    same = [c for c, p in zip(chunks, previous, strict=False) if c == p]
    share = sum(map(len, same)) / len(text)
    print(f"families unchanged since the last frame: {len(same)} of {len(chunks)}, "
          f"{share:.1%} of the text")
    print(f"gzip reusing them: {us(reused, samples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
