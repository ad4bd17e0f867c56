"""A simulated host behind the live sources' stand-ins, for benchmarking `dtagent serve`.

The agent under test runs its live path unchanged (``sources.platform = "illumos"``):
its ctypes libkstat binding loads the libkstat stand-in (tests/native), which reloads
its "kernel" from a feed file this module writes for every simulated frame; its
command source runs stand-in executables that print the simulated host's outputs for
their exact argv; its DTrace supervisor runs the real worker over the libdtrace
stand-in, which replays a looping scenario of aggregation records for every zone at a
steady rate. Nothing here runs in the agent's process: the simulator, the feed writer
and the scrapers are the benchmark's, so the agent's CPU and RSS are its own (the
stand-in's reload time is written to ``FEED.cpu`` and left out of the figures).
"""

from __future__ import annotations

import math
import os
import random
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dtagent.bundle import Frame
from dtagent.dtrace.spec import ScriptSpec, enabled_scripts, load_scripts, shipped_dir
from dtagent.snapshot import KSTAT_TYPE_IO, KSTAT_TYPE_NAMED, CommandResult, Kstat

IO_FIELDS = (
    "nread", "nwritten", "reads", "writes", "wtime", "wlentime", "wlastupdate",
    "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt",
)  # fmt: skip


def _clean(text: str) -> str:
    """A feed field: no tabs or newlines (kstat names and values never hold them)."""
    return text.replace("\t", " ").replace("\n", " ")


def feed_text(kstats: Sequence[Kstat], hrtime: int) -> str:
    """The libkstat stand-in's feed for one moment (see tests/native/libkstat_stub.c)."""
    out = [f"h\t{hrtime}"]
    for ks in kstats:
        out.append(f"k\t{_clean(ks.module)}\t{ks.instance}\t{_clean(ks.name)}\t"
                   f"{_clean(ks.ks_class)}\t{ks.ks_type}")
        if ks.ks_type == KSTAT_TYPE_IO:
            out.append("io\t" + "\t".join(str(int(ks.data.get(f, 0))) for f in IO_FIELDS))
            continue
        if ks.ks_type != KSTAT_TYPE_NAMED:
            raise ValueError(f"the feed carries named and io kstats only, not {ks.key}")
        for name, value in ks.data.items():
            if isinstance(value, str):
                out.append(f"s\t{_clean(name)}\t{_clean(value)}")
            elif isinstance(value, float):
                out.append(f"d\t{_clean(name)}\t{value!r}")
            elif value < 0:
                out.append(f"i\t{_clean(name)}\t{value}")
            else:
                out.append(f"u\t{_clean(name)}\t{value}")
    out.append("")
    return "\n".join(out)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class CommandTable:
    """Stand-in executables printing the latest simulated output for their exact argv.

    Each argv's output is a small file of its own, named by its arguments joined with
    "_", and the executables are /bin/sh scripts that cat it, so a stand-in costs
    about what the real command would (a few milliseconds), not the benchmark's own
    overhead.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.out = directory / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self._latest: dict[str, tuple[int, str, str]] = {}
        self._names: set[str] = set()

    @staticmethod
    def key(args: Sequence[str]) -> str:
        name = "_".join(args)
        if "/" in name or len(name) > 200 or name.startswith("."):
            raise ValueError(f"argv {list(args)!r} cannot name a stand-in output file")
        return name

    def update(self, results: Sequence[CommandResult]) -> None:
        for res in results:
            key = self.key(res.argv[1:])
            value = (res.returncode, res.stdout, res.stderr)
            if self._latest.get(key) != value:
                self._latest[key] = value
                write_atomic(self.out / f"{key}.err", res.stderr)
                write_atomic(self.out / f"{key}.rc", f"{res.returncode}\n")
                write_atomic(self.out / f"{key}.out", res.stdout)
            name = os.path.basename(res.argv[0])
            if name not in self._names:
                self._names.add(name)
                self._write_exe(name)

    def _write_exe(self, name: str) -> None:
        exe = self.dir / name
        exe.write_text(
            "#!/bin/sh\n"
            "IFS=_\n"
            f'f="{self.out}/$*"\n'
            '[ -r "$f.out" ] || { echo "unexpected argv: $*" >&2; exit 2; }\n'
            'read rc < "$f.rc"\n'
            'cat "$f.out"; cat "$f.err" >&2\n'
            'exit "$rc"\n'
        )
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# Per zone and second, what the scenario fires: (group period in ticks, aggregations).
# The busiest (run queue, system calls) every second; file system and disk every 5 s,
# staggered over the zones; TCP connects, ZIL commits and cap throttling every 10 s.
# About 9 records per zone per second: 18,000 a second at 2,000 zones.
GROUPS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, ("runq", "syscall")),
    (5, ("fs", "disk", "disk_throttle")),
    (10, ("tcpconn", "zil_commit", "cpucaps_wait")),
)
COUNTERS = {"zil_commit": "zil_bytes", "cpucaps_wait": "cpucaps_throttles"}


@dataclass(frozen=True)
class Scenario:
    text: str
    records_per_second: float


def _selector(spec: ScriptSpec, others: Sequence[ScriptSpec]) -> str:
    """A piece of the script's program text no other enabled script contains."""
    for probe in spec.probes:
        if probe in spec.source and not any(probe in o.source for o in others):
            return probe
    raise ValueError(f"no probe of {spec.name} selects its program alone")


def dtrace_scenario(zone_ids: Sequence[int], seed: int = 1) -> Scenario:
    """A looping libdtrace stand-in scenario for the enabled shipped scripts."""
    specs = enabled_scripts(load_scripts([shipped_dir()]), {})
    by_agg = {a.name: (s, a) for s in specs for a in s.aggregations}
    rng = random.Random(seed)
    lines: list[str] = []
    per_second = 0.0
    for period, names in GROUPS:
        lines.append(f"loop {period}")
        for name in names:
            if name not in by_agg:
                continue
            spec, agg = by_agg[name]
            sel = _selector(spec, [o for o in specs if o is not spec])
            lo, hi, step = agg.params[1], agg.params[2], agg.params[0]
            strings = [k.allow or ("zones",) for k in agg.keys if k.kind == "string"]
            variants: list[str] = [""] if not strings else [str(v) for v in strings[0]]
            for i, zid in enumerate(zone_ids):
                lines.append(f"tick {1 + i % period}")
                for variant in variants:
                    keys = []
                    for k in agg.keys:
                        keys.append(f"z:{zid}" if k.kind == "zoneid" else f"s:{variant}")
                    key = " ".join(keys)
                    values = [
                        max(1, int(step ** rng.uniform(lo, hi - 0.5)))
                        for _ in range(rng.randint(3, 8))
                    ]
                    vals = " ".join(map(str, values))
                    lines.append(
                        f"rec {sel} {agg.name} llquantize {' '.join(map(str, agg.params))}"
                        f" | {key} | {vals}"
                    )
                    per_second += 1 / period
                    if agg.sum:
                        lines.append(f"rec {sel} {agg.sum} sum | {key} | {vals}")
                        per_second += 1 / period
                    counter = COUNTERS.get(agg.name)
                    if counter and counter in by_agg:
                        fn = by_agg[counter][1].function
                        lines.append(f"rec {sel} {counter} {fn} | {key} | {vals}")
                        per_second += 1 / period
    lines.append("")
    return Scenario("\n".join(lines), per_second)


def zone_ids(frame: Frame) -> list[int]:
    """The ids of the zones running in a frame (the zones kstat of each zone)."""
    ids = {ks.instance for ks in frame.kstats if ks.module == "zones"}
    return sorted(ids)


def hrtime(frame: Frame, epoch: float) -> int:
    return math.floor((frame.time - epoch + 1000.0) * 1e9)
