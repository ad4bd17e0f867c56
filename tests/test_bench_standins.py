"""The stand-ins' benchmark modes: the libkstat feed file and looping DTrace records.

benchmarks/bench_serve.py drives `dtagent serve` in its own process, so the simulated
host reaches the libkstat stand-in through a feed file it reloads, and the libdtrace
stand-in repeats a scenario's records at a steady rate. Both must behave as the
kernel does (kstats updated in place, deleted, created; one walk per tick), or the
benchmark would measure something the agent never meets.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import live_host
from dtagent.simulate import EPOCH, frames, make_host
from dtagent.snapshot import KSTAT_TYPE_IO, Kstat
from dtagent.sources.libkstat import KstatReader
from tests.helpers import REPO, worker_records
from tests.native import build_shared
from tests.native.dtrace_stub import Scenario, library
from tests.native.kstat_stub import open_stub

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"


@pytest.fixture
def feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    lib = open_stub()
    lib.stub_reset()
    path = tmp_path / "kstat.feed"
    monkeypatch.setenv("KSTAT_STUB_FEED", str(path))
    yield path
    monkeypatch.delenv("KSTAT_STUB_FEED")
    lib.stub_reset()


def _zone(zid: int, name: str, nsec: int) -> Kstat:
    return Kstat("zones", zid, name[:30], "zone_misc",
                 data={"zonename": name, "nsec_user": nsec, "avenrun_1min": 3})


def test_feed_updates_in_place_deletes_and_creates(feed: Path) -> None:
    disk = Kstat("zfs", 0, "zones", "disk", KSTAT_TYPE_IO,
                 data={"nread": 10, "reads": 2, "wtime": 5})
    live_host.write_atomic(feed, live_host.feed_text(
        [_zone(1, "web", 100), _zone(2, "db", 7), disk], 5_000_000_000))
    lib = open_stub()
    with KstatReader(str(build_shared("libkstat_stub.c"))) as reader:
        snap = reader.snapshot()
        assert snap.get("zones", 1, "web").data["nsec_user"] == 100  # type: ignore[union-attr]
        assert snap.get("zfs", 0, "zones").data["nread"] == 10  # type: ignore[union-attr]
        assert snap.get("zones", 1, "web").snaptime == 5_000_000_000  # type: ignore[union-attr]
        live_host.write_atomic(feed, live_host.feed_text(
            [_zone(1, "web", 250), _zone(3, "batch", 1), disk], 10_000_000_000))
        snap = reader.snapshot()
        assert snap.get("zones", 1, "web").data["nsec_user"] == 250  # type: ignore[union-attr]
        assert snap.get("zones", 2, "db") is None  # halted: its kstat is gone
        assert snap.get("zones", 3, "batch").data["zonename"] == "batch"  # type: ignore[union-attr]
        # only the deleted zone's header was freed; the others stayed where they were
        assert lib.stub_freed_headers() == 1
        # an unchanged file is not reloaded
        before = (feed.parent / "kstat.feed.cpu").read_text()
        reader.snapshot()
        assert (feed.parent / "kstat.feed.cpu").read_text() == before


def test_feed_of_a_simulated_frame_reads_back_as_the_frame(feed: Path) -> None:
    frame = next(frames(make_host(3, 2, EPOCH, 5.0, 100.0), 1))
    live_host.write_atomic(feed, live_host.feed_text(frame.kstats, 1))
    with KstatReader(str(build_shared("libkstat_stub.c"))) as reader:
        snap = reader.snapshot()
    assert len(snap) == len(frame.kstats)
    for ks in frame.kstats:
        got = snap.get(*ks.key)
        assert got is not None and got.data == ks.data, ks.key


def test_looping_records_repeat_at_their_period(tmp_path: Path) -> None:
    sc = Scenario(tmp_path).write(
        "matches stub:every 5\nloop 2\ntick 1\nrec stub:every calls count | z:3 s:read | 0 0\n"
    )
    argv = [sys.executable, "-m", "dtagent.dtrace.worker", "--libdtrace", str(library()),
            "--interval", "0.05", "--script", str(FIXTURES / "every.d")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(sc.env(), PYTHONPATH=str(REPO)))
    walks: dict[int, list[dict[str, object]]] = {}
    pending: list[dict[str, object]] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and len(walks) < 6:
            for rec in worker_records([proc.stdout.readline()]):
                assert isinstance(rec, dict)
                if "tick" in rec:
                    walks[int(rec["tick"])] = pending
                    pending = []
                elif rec.get("agg") == "calls":
                    pending.append(rec)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    fired = sorted(t for t, recs in walks.items() if recs)
    assert fired and all(t % 2 == 1 for t in fired), walks
    assert all(walks[t][0]["value"] == 2 for t in fired)
    assert len(fired) >= 2


def test_feed_churn_keeps_the_kernel_to_its_live_kstats(feed: Path) -> None:
    """Zones halting and booting for ever: the stand-in's "kernel" frees a deleted
    kstat as the real one does, so its memory follows the live kstats (kids still
    only grow), and a file's halted zones are deleted before its booted ones exist."""
    lib = open_stub()
    zones = [_zone(z, f"z{z}", 1) for z in range(1, 11)]
    live_host.write_atomic(feed, live_host.feed_text(zones, 1))
    with KstatReader(str(build_shared("libkstat_stub.c"))) as reader:
        reader.snapshot()
        kcid = reader.chain_id
        for gen in range(1, 51):  # every zone replaced by a new one, 50 times
            zones = [_zone(10 * gen + z, f"z{10 * gen + z}", gen) for z in range(1, 11)]
            live_host.write_atomic(feed, live_host.feed_text(zones, 1 + gen))
            snap = reader.snapshot()
            assert sorted(ks.instance for ks in snap) == [10 * gen + z for z in range(1, 11)]
            assert snap.get("zones", 10 * gen + 1, f"z{10 * gen + 1}").data["nsec_user"] == gen  # type: ignore[union-attr]
            assert reader.chain_id > kcid
            kcid = reader.chain_id
        assert lib.stub_slots() == 10
        assert lib.stub_freed_headers() == 500


SMAPS = """\
5640fa90f000-5640fcd94000 rw-p 00000000 00:00 0                          [heap]
Size:              37396 kB
Rss:               37292 kB
Pss:               37292 kB
7fb290000000-7fb290c9e000 rw-p 00000000 00:00 0
Size:              12920 kB
Rss:               12920 kB
7fb290c9e000-7fb294000000 ---p 00000000 00:00 0
Size:              52616 kB
Rss:                   0 kB
7fb29cefd000-7fb29e7fd000 rw-p 00000000 00:00 0
Size:              25600 kB
Rss:               24224 kB
7fb2afcc5000-7fb2aff42000 r-xp 00200000 08:01 1234      /usr/lib/libcrypto.so.3
Size:               2548 kB
Rss:                1908 kB
7fb2b0000000-7fb6b0000000 rw-s 00000000 00:01 2049      /memfd:libkstat-stub-kernel (deleted)
Size:           16777216 kB
Rss:               20480 kB
7ffc1a2b3000-7ffc1a2d4000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  36 kB
VmFlags: rd wr mr mw me gd ac
"""


def test_the_soak_has_zones_rebooting_from_its_start_to_its_end() -> None:
    """The soak's churn (benchmarks/bench_serve.py schedule_reboots) runs through all
    its frames: in every stretch of ten frames some zones get a new zone id, no more
    than the schedule's share are down at once, and the frames before the soak are
    those of a host without it (the schedule has its own random stream)."""
    import random

    from benchmarks.bench_serve import REBOOT_STEPS, STEP, schedule_reboots

    def ids(churn: bool) -> list[dict[str, int]]:
        host = make_host(40, 7, EPOCH, STEP, STEP * 200)
        if churn:
            schedule_reboots(host, 10, 99, random.Random(7))
        out: list[dict[str, int]] = []
        for _ in frames(host, 100):
            out.append({z.uuid: z.zoneid for z in host.zones if z.zoneid is not None})
        return out

    calm, churned = ids(False), ids(True)
    assert churned[:10] == calm[:10]
    for start in range(10, 90, 10):
        before, after = churned[start], churned[start + 10]
        renumbered = [u for u in before if u in after and after[u] != before[u]]
        assert renumbered, f"no zone rebooted in frames {start}-{start + 10}"
    # one reboot a frame at 40 zones, each zone down for REBOOT_STEPS frames
    assert min(len(f) for f in churned) >= min(len(f) for f in calm) - REBOOT_STEPS - 1


def test_the_soak_places_rss_by_kind_of_mapping() -> None:
    """The soak's split of RSS (benchmarks/bench_serve.py memory_split): [heap] is
    glibc's main arena, an anonymous mapping at a 64 MiB boundary a thread arena's
    heap, the libkstat stand-in's memfd its simulated kernel, other anonymous memory
    (Python's arenas, a stack) the rest; and on this process the kinds add up to its
    RSS."""
    from benchmarks.bench_serve import MEMORY_KINDS, memory_split

    assert memory_split(SMAPS) == {
        "glibc_main_heap": round(37292 / 1024, 1),
        "glibc_thread_arenas": round(12920 / 1024, 1),
        "other_anonymous": round((24224 + 36) / 1024, 1),
        "files": round(1908 / 1024, 1),
        "standin_kernel": 20.0,
    }
    own = memory_split(Path("/proc/self/smaps").read_text())
    status = Path("/proc/self/status").read_text()
    rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
    assert set(own) == set(MEMORY_KINDS) and own["files"] > 0
    assert abs(sum(own.values()) - rss / 1024) < max(2.0, 0.05 * rss / 1024)


def test_the_simulated_kernel_is_held_apart_from_the_process_heaps(feed: Path) -> None:
    """What the stand-in's "kernel" holds lives in its own mapping, which the benchmark
    leaves out of the agent's RSS (on illumos it is kernel memory): loading 300 zones'
    kstats grows that mapping by what the kernel holds, and a reload of the same kstats
    (which rewrites every statistic) neither grows it nor leaks."""
    from benchmarks.bench_serve import memory_split

    lib = open_stub()

    def kernel_mib() -> float:
        return memory_split(Path("/proc/self/smaps").read_text())["standin_kernel"]

    before = kernel_mib()
    zones = [_zone(z, f"zone{z}", 1) for z in range(1, 301)]
    wide = [Kstat("link", 0, f"z{z}_net0", "net",
                  data={f"stat{i}": i for i in range(200)}) for z in range(1, 301)]
    live_host.write_atomic(feed, live_host.feed_text(zones + wide, 1))
    with KstatReader(str(build_shared("libkstat_stub.c"))) as reader:
        assert len(reader.snapshot()) == 600
        held = lib.stub_kernel_bytes()
        assert held > 300 * 200 * 48  # 200 named statistics of 48 bytes a kstat, at least
        # blocks are powers of two, their tails never touched: most of it is resident
        assert kernel_mib() - before >= 0.5 * held / 2**20
        after: list[int] = []
        for nsec in (2, 3, 4, 5):
            live_host.write_atomic(feed, live_host.feed_text(
                [_zone(z, f"zone{z}", nsec) for z in range(1, 301)] + wide, nsec))
            snap = reader.snapshot()
            assert snap.get("zones", 7, "zone7").data["nsec_user"] == nsec  # type: ignore[union-attr]
            after.append(lib.stub_kernel_bytes())
        # the first reload sizes the feed's index for 600 kstats; then nothing moves
        assert after[0] < 1.05 * held and len(set(after)) == 1
    lib.stub_reset()
    assert lib.stub_kernel_bytes() < held / 10


def test_the_heap_probe_tells_live_memory_from_free_space(tmp_path: Path) -> None:
    """benchmarks/heap_probe.py answers the soak with this process's live heap: 32 MiB
    held shows in glibc's in-use bytes and leaves them when freed (into the free space
    glibc keeps, or back to the system), and objects Python holds show in its live
    blocks."""
    from benchmarks import heap_probe

    out = tmp_path / "heap.jsonl"
    heap_probe.answer_requests(out)
    before = heap_probe.ask(out)
    held = [bytearray(65536) for _ in range(512)]
    small = [(i, str(i)) for i in range(100_000)]
    during = heap_probe.ask(out)
    del held, small
    after = heap_probe.ask(out)
    assert before is not None and during is not None and after is not None
    assert during.in_use_mib + during.mapped_mib - before.in_use_mib - before.mapped_mib > 30
    assert after.in_use_mib + after.mapped_mib - before.in_use_mib - before.mapped_mib < 4
    assert during.python_blocks - before.python_blocks > 150_000
    assert abs(after.python_blocks - before.python_blocks) < 20_000
    assert len(out.read_text().splitlines()) == 3


def test_the_heap_probe_runs_the_agents_cli_unchanged() -> None:
    """Under the probe the agent is its own CLI: a bad flag is its usage error, one
    line and status 2, no traceback."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.heap_probe", "serve", "--no-such-flag"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert run.returncode == 2, run.stderr
    assert "--no-such-flag" in run.stderr and "Traceback" not in run.stderr
