"""Benchmark: `dtagent serve` scraped over HTTP, beside node_exporter and prometheus-client.

    python -m benchmarks.bench_serve --zones 100 500 1000 2000 --out build/bench
    python -m benchmarks.bench_serve --zones 1000 --soak 600      # RSS under zone churn
    python -m benchmarks.bench_serve --zones 100 --replay-only

For each size, in one run:

* **live path**: `dtagent serve` with ``sources.platform = "illumos"`` over the
  libkstat and libdtrace stand-ins and stand-in commands (benchmarks/live_host.py),
  the simulated host moving one frame (5 s of simulated time) per scrape, the real
  DTrace worker walking about 9 aggregation records per zone per second;
* **node_exporter**: Debian's prometheus-node-exporter with only its textfile
  collector, serving the body dtagent served last (the same samples);
* **generate_latest**: prometheus-client rendering those samples, parsed into its
  own metric families, in this process;
* **replay path**: `dtagent serve --replay` of a simulated bundle of the same size.

Scrapes come at a fixed interval and ask for gzip, as Prometheus does. CPU is the
served process's own (user + system, /proc), never wall time: per scrape interval
(everything the agent did in it: reading DTrace records, collecting, rendering,
serving) and per request; the libkstat stand-in's reload of its feed is left out. RSS
and its high-water mark come from /proc/PID/status. Timing is measured here, never
asserted in a test. Results go to OUT/results.json, OUT/results.md and OUT/bench.png.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import heap_probe, live_host
from dtagent.bundle import Frame
from dtagent.config import SCHEMA
from dtagent.simulate import EPOCH, frames
from dtagent.simulate.model import LifeEvent, SimHost, make_host

ROOT = Path(__file__).resolve().parent.parent
STEP = 5.0
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (its threads, not its children)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _mem(pid: int) -> tuple[float, float]:
    """(RSS, high-water mark) in MiB from /proc/PID/status."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


# glibc maps each thread arena's heap at a multiple of HEAP_MAX_SIZE, 64 MiB on LP64
# (glibc malloc/arena.c: new_heap, "a memory region aligned to a multiple of
# HEAP_MAX_SIZE"; HEAP_MAX_SIZE is 2 * DEFAULT_MMAP_THRESHOLD_MAX, 2 * 32 MiB).
_GLIBC_HEAP_ALIGN = 64 << 20
MEMORY_KINDS = ("glibc_main_heap", "glibc_thread_arenas", "other_anonymous", "files",
                "standin_kernel")
# The libkstat stand-in keeps its simulated kernel in a memfd mapping of this name
# (tests/native/libkstat_stub.c, "The kernel's memory"): on illumos that memory is the
# kernel's, not the agent's.
_STANDIN_KERNEL = "/memfd:libkstat-stub-kernel"


def memory_split(smaps: str) -> dict[str, float]:
    """RSS in MiB by kind of mapping, from the text of /proc/PID/smaps.

    ``glibc_main_heap`` is [heap] (the main arena), ``glibc_thread_arenas`` the
    anonymous mappings starting at a 64 MiB boundary (the heaps of the arenas glibc
    gives threads), ``other_anonymous`` the rest of the anonymous memory (Python's
    object arenas of 1 MiB, large allocations mapped on their own, thread stacks),
    ``files`` mapped files (the interpreter, libraries), and ``standin_kernel`` the
    libkstat stand-in's simulated kernel (its memfd), which the agent's own figure
    leaves out. The soak reports it so that a growth can be placed: Linux-specific,
    like the benchmark.
    """
    split = dict.fromkeys(MEMORY_KINDS, 0.0)
    kind = "other_anonymous"
    for line in smaps.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            start = int(head.partition("-")[0], 16)
            fields = rest.split(None, 4)
            name = fields[4].strip() if len(fields) > 4 else ""
            if name == "[heap]":
                kind = "glibc_main_heap"
            elif name.startswith(_STANDIN_KERNEL):
                kind = "standin_kernel"
            elif name.startswith("/"):
                kind = "files"
            elif not name and start % _GLIBC_HEAP_ALIGN == 0:
                kind = "glibc_thread_arenas"
            else:
                kind = "other_anonymous"
        elif head == "Rss:":
            split[kind] += int(rest.split()[0]) / 1024
    return {k: round(v, 1) for k, v in split.items()}


def _memory_split(pid: int) -> dict[str, float]:
    try:
        return memory_split(Path(f"/proc/{pid}/smaps").read_text())
    except OSError:
        return {}


def own_rss(pid: int) -> tuple[float, float]:
    """(the agent's own RSS, the stand-in kernel's) in MiB: the process's RSS less the
    libkstat stand-in's simulated kernel, the memory a real host keeps in its kernel."""
    rss, _ = _mem(pid)
    kernel = _memory_split(pid).get("standin_kernel", 0.0)
    return round(rss - kernel, 1), kernel


def _get(url: str, gzipped: bool = True, timeout: float = 120.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def _plain(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def _samples(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


@dataclass
class Scrapes:
    """Per-scrape figures of one served process."""

    request_cpu_ms: list[float] = field(default_factory=list)
    interval_cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    gzip_bytes: int = 0
    plain_bytes: int = 0
    samples: int = 0

    def summary(self) -> dict[str, Any]:
        def stats(xs: list[float]) -> dict[str, float]:
            if not xs:
                return {}
            return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

        return {
            "request_cpu_ms": stats(self.request_cpu_ms),
            "interval_cpu_ms": stats(self.interval_cpu_ms),
            "wall_ms": stats(self.wall_ms),
            "gzip_bytes": self.gzip_bytes,
            "plain_bytes": self.plain_bytes,
            "samples": self.samples,
        }


class StubCpu:
    """The libkstat stand-in's own reload CPU (left out of the agent's)."""

    def __init__(self, feed: Path | None) -> None:
        self.path = Path(str(feed) + ".cpu") if feed else None

    def __call__(self) -> float:
        if self.path is None:
            return 0.0
        try:
            return int(self.path.read_text().strip() or 0) / 1e9
        except (OSError, ValueError):
            return 0.0


def scrape_loop(
    url: str,
    pid: int,
    count: int,
    interval: float,
    *,
    before_each: Callable[[], None] | None = None,
    stub_cpu: Callable[[], float] = lambda: 0.0,
) -> tuple[Scrapes, bytes]:
    """``count`` scrapes at a fixed interval; returns the figures and the last body."""
    out = Scrapes()
    body = b""
    next_at = time.monotonic()
    last_cpu: float | None = None
    for _ in range(count):
        next_at += interval
        if before_each is not None:
            before_each()
        while (left := next_at - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
        c0, s0, w0 = _cpu(pid), stub_cpu(), time.perf_counter()
        status, body = _get(url)
        w1, c1, s1 = time.perf_counter(), _cpu(pid), stub_cpu()
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
        out.request_cpu_ms.append((c1 - c0 - (s1 - s0)) * 1000)
        out.wall_ms.append((w1 - w0) * 1000)
        now = c1 - s1
        if last_cpu is not None:
            out.interval_cpu_ms.append((now - last_cpu) * 1000)
        last_cpu = now
    out.gzip_bytes = len(body)
    plain = _plain(body)
    out.plain_bytes = len(plain)
    out.samples = _samples(plain)
    return out, plain


def wait_first_scrape(
    url: str, proc: subprocess.Popen[bytes], started: float, timeout: float, marker: bytes
) -> tuple[float, float | None]:
    """Seconds from start to the first 200 on /metrics, and to one holding ``marker``."""
    first: float | None = None
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the served process exited with {proc.returncode}")
        try:
            status, body = _get(url, timeout=timeout)
        except OSError:
            time.sleep(0.05)
            continue
        if status == 200:
            now = time.monotonic() - started
            if first is None:
                first = now
            if marker in _plain(body):
                return first, now
        time.sleep(0.2)
    if first is None:
        raise RuntimeError(f"no scrape served within {timeout:.0f} s")
    return first, None


def concurrent_scrapes(url: str, pid: int, scrapers: int, rounds: int) -> dict[str, Any]:
    """``scrapers`` clients arriving together, ``rounds`` times: CPU and memory."""
    rss_before, _ = _mem(pid)
    own_before, _ = own_rss(pid)
    cpu: list[float] = []
    for _ in range(rounds):
        c0 = _cpu(pid)
        errors: list[BaseException] = []

        def one(errors: list[BaseException] = errors) -> None:
            try:
                _get(url)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(scrapers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"concurrent scrape failed: {errors[0]}")
        cpu.append((_cpu(pid) - c0) * 1000)
        time.sleep(1.0)
    rss, hwm = _mem(pid)
    return {"scrapers": scrapers, "round_cpu_ms": statistics.median(cpu),
            "rss_before_mib": rss_before, "rss_after_mib": rss, "hwm_mib": hwm,
            "own_rss_before_mib": own_before, "own_rss_after_mib": own_rss(pid)[0]}


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ live path


class LiveHost:
    """The simulated host's frames, written to the stand-ins' files one at a time."""

    def __init__(self, workdir: Path, zones: int, frame_count: int, seed: int = 7,
                 churn_from: int | None = None) -> None:
        self.feed = workdir / "kstat.feed"
        self.commands = live_host.CommandTable(workdir / "bin")
        host = make_host(zones, seed, EPOCH, STEP, STEP * max(frame_count, 200))
        if churn_from is not None:
            schedule_reboots(host, churn_from, frame_count, random.Random(seed))
        self._frames: Iterator[Frame] = frames(host, frame_count + 1)
        self.first = self._next()
        self._write(self.first)
        self._ahead: Frame | None = None

    def _next(self) -> Frame:
        return next(self._frames)

    def _write(self, frame: Frame) -> None:
        live_host.write_atomic(
            self.feed, live_host.feed_text(frame.kstats, live_host.hrtime(frame, EPOCH))
        )
        self.commands.update(frame.commands)

    def advance(self) -> None:
        """Publish the frame made ahead, and make the next one."""
        frame = self._ahead if self._ahead is not None else self._next()
        self._write(frame)
        try:
            self._ahead = self._next()
        except StopIteration:
            self._ahead = frame


REBOOTS_PER_FRAME_PER_ZONE = 1 / 400
REBOOT_STEPS = 4


def schedule_reboots(host: SimHost, first: int, last: int, rng: random.Random) -> None:
    """Zones rebooting all through frames ``first`` to ``last``: at each frame one zone
    in 400 (at least one) halts and boots again four steps later, with a new zone id.

    The simulator's own churn (a sixth of the zones rebooting once between 20% and 50%
    of its duration, a ninth halting for good at 60%) falls in a few minutes of a soak
    and then stops, so a soak's last minutes had no churn to be flat under. A zone may
    reboot several times (one picked while down just boots on time), and one the
    simulator halts for good may come back; the first zone and the one never booted
    (the last, see make_host) are left alone.
    A separate random stream, so the frames before ``first`` are those of a run
    without the soak.
    """
    candidates = host.zones[1:-1] if len(host.zones) >= 4 else host.zones[1:]
    per_frame = max(1, round(len(host.zones) * REBOOTS_PER_FRAME_PER_ZONE))
    for frame in range(first, last + 1):
        at = EPOCH + frame * STEP
        for zone in rng.sample(candidates, min(per_frame, len(candidates))):
            host.events.append(LifeEvent(at, zone, "halt"))
            host.events.append(LifeEvent(at + REBOOT_STEPS * STEP, zone, "boot"))


def live_config(workdir: Path, libkstat: Path, libdtrace: Path, bindir: Path,
                walk_interval: int | None = None) -> Path:
    path = workdir / "live.toml"
    path.write_text(
        "[sources]\n"
        'platform = "illumos"\n'
        f"libkstat = {str(libkstat)!r}\n"
        f"command_path = {str(bindir) + os.pathsep + '/usr/bin:/bin'!r}\n"
        "[dtrace]\n"
        f"libdtrace = {str(libdtrace)!r}\n"
        + (f"walk_interval = {walk_interval}\n" if walk_interval is not None else "")
    )
    return path


def run_live(zones: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tests.native import build_shared

    workdir.mkdir(parents=True, exist_ok=True)
    frame_count = args.scrapes + 4 + (int(args.soak / args.interval) if args.soak else 0)
    host = LiveHost(workdir, zones, frame_count,
                    churn_from=args.scrapes + 4 if args.soak else None)
    scenario = live_host.dtrace_scenario(live_host.zone_ids(host.first))
    (workdir / "scenario.txt").write_text(scenario.text)
    libkstat = build_shared("libkstat_stub.c")
    config = live_config(
        workdir, libkstat, build_shared("libdtrace_stub.c"), host.commands.dir,
        args.walk_interval,
    )
    port = _free_port()
    env = dict(
        os.environ,
        KSTAT_STUB_FEED=str(host.feed),
        DTRACE_STUB_SCENARIO=str(workdir / "scenario.txt"),
        DTRACE_STUB_LOG=os.devnull,
        DTRACE_STUB_RUNS=str(workdir / "runs"),
        PYTHONPATH=str(ROOT),
    )
    # the agent's CLI as it is, or under the heap probe (the same CLI and one thread)
    module = "dtagent"
    if args.heap_probe and args.soak:
        module = "benchmarks.heap_probe"
        env[heap_probe.ENV] = str(workdir / "heap.jsonl")
        (workdir / "heap.jsonl").unlink(missing_ok=True)
    url = f"http://127.0.0.1:{port}/metrics"
    log = (workdir / "serve.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=log,
    )
    try:
        first, with_dtrace = wait_first_scrape(
            url, proc, started, 600.0, b"illumos_zone_runq_latency_seconds_bucket"
        )
        stub = StubCpu(host.feed)
        # two scrapes in, so every counter and histogram has its series
        scrape_loop(url, proc.pid, 2, args.interval, before_each=host.advance, stub_cpu=stub)
        scrapes, body = scrape_loop(
            url, proc.pid, args.scrapes, args.interval, before_each=host.advance, stub_cpu=stub
        )
        rss, hwm = _mem(proc.pid)
        own, kernel = own_rss(proc.pid)
        result: dict[str, Any] = {
            "zones": zones,
            "first_scrape_s": first,
            "first_dtrace_scrape_s": with_dtrace,
            "dtrace_records_per_s": scenario.records_per_second,
            "walk_interval": args.walk_interval if args.walk_interval is not None else
            SCHEMA["dtrace"]["walk_interval"].default,
            "dtrace_scenario_records": scenario.text.count("\nrec "),
            "scrapes": scrapes.summary(),
            "rss_mib": rss,
            "hwm_mib": hwm,
            "own_rss_mib": own,
            "standin_kernel_mib": kernel,
            "worker": _worker_figures(proc.pid),
        }
        if args.concurrent:
            result["concurrent"] = concurrent_scrapes(url, proc.pid, args.concurrent, 3)
        if args.soak:
            probe = Path(env[heap_probe.ENV]) if heap_probe.ENV in env else None
            result["soak"] = soak(url, proc.pid, host, args, stub, probe)
        (workdir / "body.prom").write_bytes(body)
        return result
    finally:
        stop(proc)
        log.close()


def _worker_figures(pid: int) -> dict[str, float]:
    """CPU and RSS of the DTrace worker (the agent's child; not in the agent's figures)."""
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if "dtagent.dtrace.worker" in " ".join(child.cmdline()):
                t = child.cpu_times()
                rss, hwm = _mem(child.pid)
                return {"cpu_s": t.user + t.system, "rss_mib": rss, "hwm_mib": hwm,
                        "age_s": time.time() - child.create_time()}
    return {}


def soak(url: str, pid: int, host: LiveHost, args: argparse.Namespace,
         stub: StubCpu, probe: Path | None = None) -> dict[str, Any]:
    """Scrape through zone churn for ``args.soak`` seconds; RSS every minute, and the
    live heap too when the agent runs under :mod:`benchmarks.heap_probe`."""
    trend: list[tuple[float, float]] = []
    own: list[float] = []
    splits: list[dict[str, float]] = []
    heap: list[dict[str, float]] = []
    t0 = time.monotonic()
    per_minute = max(1, int(60 / args.interval))
    while time.monotonic() - t0 < args.soak:
        scrape_loop(url, pid, per_minute, args.interval, before_each=host.advance,
                    stub_cpu=stub)
        trend.append((round(time.monotonic() - t0), _mem(pid)[0]))
        own.append(own_rss(pid)[0])
        splits.append(_memory_split(pid))
        if probe is not None and (figures := heap_probe.ask(probe)) is not None:
            heap.append(asdict(figures))
    return {"seconds": args.soak, "rss_trend_mib": trend, "own_rss_trend_mib": own,
            "heap_trend": heap,
            "hwm_mib": _mem(pid)[1], "rss_split_mib": splits}


# ------------------------------------------------------------------ the peers


def run_node_exporter(body: bytes, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    exe = args.node_exporter
    textdir = workdir / "textfile"
    textdir.mkdir(parents=True, exist_ok=True)
    (textdir / "dtagent.prom").write_bytes(body)
    port = _free_port()
    log = (workdir / "node_exporter.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={textdir}"],
        stdout=log, stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_first_scrape(url, proc, time.monotonic(), 60.0, b"")
        scrape_loop(url, proc.pid, 2, 1.0)
        scrapes, served = scrape_loop(url, proc.pid, args.scrapes, args.peer_interval)
        if b"node_textfile_scrape_error 0" not in served:
            raise RuntimeError("node_exporter could not read the textfile (see its log)")
        rss, hwm = _mem(proc.pid)
        return {"scrapes": scrapes.summary(), "rss_mib": rss, "hwm_mib": hwm}
    finally:
        stop(proc)
        log.close()


def run_generate_latest(body: bytes, repeat: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(body.decode()))

    class Fixed:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        generate_latest(registry)
        times.append((time.process_time() - t0) * 1000)
    return {"cpu_ms": {"median": statistics.median(times), "min": min(times),
                       "max": max(times)}}


# ------------------------------------------------------------------ replay path


def run_replay(zones: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "sim.bundle"
    duration = STEP * (args.scrapes * args.interval / STEP + 60)
    subprocess.run(
        [sys.executable, "-m", "dtagent", "simulate", "--zones", str(zones), "--out",
         str(bundle), "--seed", "7", "--duration", str(duration)],
        check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = (workdir / "serve-replay.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtagent", "serve", "--replay", str(bundle), "--listen",
         f"127.0.0.1:{port}"],
        stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        first, with_dtrace = wait_first_scrape(
            url, proc, started, 600.0, b"illumos_zone_runq_latency_seconds_bucket"
        )
        scrape_loop(url, proc.pid, 2, args.interval)
        scrapes, _ = scrape_loop(url, proc.pid, args.scrapes, args.interval)
        rss, hwm = _mem(proc.pid)
        return {"zones": zones, "bundle_mib": bundle.stat().st_size / 2**20,
                "first_scrape_s": first, "first_dtrace_scrape_s": with_dtrace,
                "scrapes": scrapes.summary(), "rss_mib": rss, "hwm_mib": hwm}
    finally:
        stop(proc)
        log.close()


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "load_avg_at_start": os.getloadavg(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, load average at start {m['load_avg_at_start'][0]:.1f} "
        "(shared with other work: compare ratios within the run).",
        f"Scrapes: {results['args']['scrapes']} per size, every "
        f"{results['args']['interval']:g} s (node_exporter every "
        f"{results['args']['peer_interval']:g} s), gzip requested.",
    ]
    if results["live"]:
        lines += [
            "",
            "| zones | samples | dtagent CPU/scrape interval | dtagent CPU/request | "
            "node_exporter textfile CPU/request | generate_latest CPU | "
            "dtagent/node_exporter | µs/sample | wall/request | plain / gzip | RSS / HWM | "
            "own RSS (stand-in kernel) | first scrape (with DTrace) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for row in results["live"]:
        s = row["scrapes"]
        ne = row.get("node_exporter", {}).get("scrapes", {})
        gl = row.get("generate_latest", {}).get("cpu_ms", {})

        def med(d: dict[str, Any], key: str) -> float:
            v = d.get(key, {})
            return float(v.get("median", float("nan"))) if v else float("nan")

        def spread(d: dict[str, Any], key: str) -> str:
            v = d.get(key, {})
            return f"{v['median']:.0f} ms ({v['min']:.0f}–{v['max']:.0f})" if v else "–"

        ours = med(s, "interval_cpu_ms")
        theirs = med(ne, "request_cpu_ms")
        dt = row["first_dtrace_scrape_s"]
        lines.append(
            f"| {row['zones']:,} | {s['samples']:,} | {spread(s, 'interval_cpu_ms')} | "
            f"{spread(s, 'request_cpu_ms')} | {spread(ne, 'request_cpu_ms')} | "
            f"{gl.get('median', float('nan')):.0f} ms | {ours / theirs:.2f} | "
            f"{ours * 1000 / max(1, s['samples']):.2f} | {med(s, 'wall_ms'):.0f} ms | "
            f"{s['plain_bytes'] / 2**20:.1f} / {s['gzip_bytes'] / 2**20:.2f} MiB | "
            f"{row['rss_mib']:.0f} / {row['hwm_mib']:.0f} MiB | "
            f"{row['own_rss_mib']:.0f} MiB ({row['standin_kernel_mib']:.0f}) | "
            f"{row['first_scrape_s']:.1f} s ({'–' if dt is None else f'{dt:.1f} s'}) |"
        )
    if results["live"]:
        lines.append(
            "\nOwn RSS: the process's RSS less the libkstat stand-in's simulated kernel (its "
            "memfd mapping), the kstats a real host keeps in its kernel; libkstat's own "
            "headers and ks_data copies are in it."
        )
    for row in results["live"]:
        if "concurrent" in row:
            c = row["concurrent"]
            lines.append(
                f"\n{row['zones']:,} zones, {c['scrapers']} scrapers at once: "
                f"{c['round_cpu_ms']:.0f} ms CPU per round, RSS {c['rss_before_mib']:.1f} → "
                f"{c['rss_after_mib']:.1f} MiB (own {c['own_rss_before_mib']:.1f} → "
                f"{c['own_rss_after_mib']:.1f}), HWM {c['hwm_mib']:.0f} MiB"
            )
        if "soak" in row:
            trend = " → ".join(f"{r:.0f}" for _, r in row["soak"]["rss_trend_mib"])
            own = " → ".join(f"{r:.0f}" for r in row["soak"].get("own_rss_trend_mib", ()))
            lines.append(
                f"\n{row['zones']:,} zones, {row['soak']['seconds']:.0f} s of zone churn: "
                f"RSS per minute {trend} MiB (own {own}), HWM "
                f"{row['soak']['hwm_mib']:.0f} MiB"
            )
            splits = [s for s in row["soak"].get("rss_split_mib", ()) if s]
            if len(splits) >= 2:
                first, last = splits[0], splits[-1]
                parts = ", ".join(f"{kind.replace('_', ' ')} {first[kind]:.1f} → "
                                  f"{last[kind]:.1f}" for kind in MEMORY_KINDS)
                lines.append(f"(first minute → last, MiB: {parts})")
            heap = row["soak"].get("heap_trend") or []
            if len(heap) >= 2:
                h0, h1 = heap[0], heap[-1]
                lines.append(
                    f"(live heap, first minute → last: glibc in use {h0['in_use_mib']:.1f} → "
                    f"{h1['in_use_mib']:.1f} MiB, free space it keeps {h0['free_mib']:.1f} → "
                    f"{h1['free_mib']:.1f}, mapped {h0['mapped_mib']:.1f} → "
                    f"{h1['mapped_mib']:.1f}; Python's live blocks {h0['python_blocks']:,} → "
                    f"{h1['python_blocks']:,})"
                )
        w = row.get("worker")
        if w:
            lines.append(
                f"\n{row['zones']:,} zones: DTrace worker {w['cpu_s'] / w['age_s'] * 100:.0f}% "
                f"of a CPU for {row['dtrace_records_per_s']:,.0f} records fired a second "
                f"(walked every {row.get('walk_interval', 10)} s: one record per key a "
                f"walk), RSS "
                f"{w['rss_mib']:.0f} / HWM {w['hwm_mib']:.0f} MiB (its own process, not in "
                f"the figures above; it counts the libdtrace stand-in's scenario of "
                f"{row['dtrace_scenario_records']:,} records, which a real libdtrace does "
                f"not hold: see docs/performance.md)"
            )
    if results.get("replay"):
        lines += [
            "",
            "Replay path (`dtagent serve --replay`, simulated bundle):",
            "",
            "| zones | bundle | samples | CPU/scrape interval | CPU/request | RSS / HWM | "
            "first scrape (with DTrace) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["replay"]:
            s = row["scrapes"]
            dt = row["first_dtrace_scrape_s"]
            lines.append(
                f"| {row['zones']:,} | {row['bundle_mib']:.0f} MiB | {s['samples']:,} | "
                f"{s['interval_cpu_ms']['median']:.0f} ms | "
                f"{s['request_cpu_ms']['median']:.0f} ms | "
                f"{row['rss_mib']:.0f} / {row['hwm_mib']:.0f} MiB | "
                f"{row['first_scrape_s']:.1f} s ({'–' if dt is None else f'{dt:.1f} s'}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zones", type=int, nargs="+", default=[100, 500, 1000, 2000])
    ap.add_argument("--scrapes", type=int, default=10, help="timed scrapes per size")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between scrapes")
    ap.add_argument("--peer-interval", type=float, default=2.0,
                    help="seconds between node_exporter scrapes (its file does not change)")
    ap.add_argument("--concurrent", type=int, default=8, help="scrapers arriving together")
    ap.add_argument("--walk-interval", type=int, default=None,
                    help="the agent's dtrace.walk_interval (default: the agent's default)")
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of zone churn (live)")
    ap.add_argument("--heap-probe", action="store_true",
                    help="in the soak, run the agent under benchmarks.heap_probe and report "
                         "its live heap every minute (glibc's in-use and free bytes, "
                         "Python's live blocks): a leak or fragmentation")
    ap.add_argument("--no-replay", action="store_true", help="leave the replay path out")
    ap.add_argument("--replay-only", action="store_true")
    ap.add_argument("--node-exporter", default="prometheus-node-exporter")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = ap.parse_args(argv)
    # stopped by a signal: unwind, so the finally blocks stop the served processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "live": [], "replay": []}
    with tempfile.TemporaryDirectory(prefix="dtagent-bench-") as tmp:
        for zones in args.zones:
            work = Path(tmp) / f"z{zones}"
            if not args.replay_only:
                print(f"live path, {zones} zones ...", file=sys.stderr, flush=True)
                row = run_live(zones, args, work)
                body = (work / "body.prom").read_bytes()
                row["node_exporter"] = run_node_exporter(body, args, work)
                row["generate_latest"] = run_generate_latest(body, 5)
                results["live"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            if not args.no_replay:
                print(f"replay path, {zones} zones ...", file=sys.stderr, flush=True)
                rrow = run_replay(zones, args, work)
                results["replay"].append(rrow)
                print(json.dumps(rrow), file=sys.stderr, flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "results.md").write_text(text)
    print(text)
    try:
        from benchmarks.plot import plot

        plot(results, args.out / "bench.png")
        print(f"plot: {args.out / 'bench.png'}")
    except ImportError as exc:
        print(f"no plot ({exc}); install the bench extra: pip install -e '.[bench]'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
