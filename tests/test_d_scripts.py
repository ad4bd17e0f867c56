"""The shipped D scripts (scripts/d): their specs load through the engine's loader and
say what the D text does; every le is exact; the in-kernel state is bounded; and the
simulator's deltas for them are what the scripts would produce."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtagent.dtrace import spec as sp
from dtagent.dtrace.buckets import Buckets
from dtagent.simulate import dtrace_part, frames, make_host
from dtagent.zonemap import running_zones
from tests.helpers import per_key_objects

ROOT = Path(__file__).resolve().parent.parent
D_DIR = ROOT / "scripts" / "d"

# Every shipped script: whatever scripts/d/ holds (a new script is tested without
# being added to a list here); NAME.VARIANT.d files are variants of NAME.
SCRIPTS = tuple(sorted(p.stem for p in D_DIR.glob("*.d") if "." not in p.stem))

# Names the dashboards and alert rules already use (dashboards/generate.py).
METRICS = {
    "runq": "illumos_zone_runq_latency_seconds",
    "cpucaps_wait": "illumos_zone_cpucaps_wait_seconds",
    "cpucaps_throttles": "illumos_zone_cpucaps_throttles_total",
    "syscall": "illumos_zone_syscall_latency_seconds",
    "syscall_by_name": "illumos_zone_syscall_latency_by_name_seconds",
    "fs": "illumos_zone_fs_latency_seconds",
    "disk": "illumos_zone_disk_latency_seconds",
    "disk_throttle": "illumos_zone_zfs_throttle_delay_seconds",
    "tcpconn": "illumos_zone_tcp_connect_latency_seconds",
    "zil_commit": "illumos_zfs_zil_commit_latency_seconds",
    "zil_bytes": "illumos_zfs_zil_committed_bytes_total",
}

LE = sp.LE_PRESETS["latency"]


def specs() -> list[sp.ScriptSpec]:
    errors: list[sp.SpecError] = []
    loaded = sp.load_scripts([D_DIR], errors)
    assert errors == []
    return loaded


def spec_of(name: str) -> sp.ScriptSpec:
    return sp.load_script(D_DIR / f"{name}.d")


def code(s: sp.ScriptSpec) -> str:
    return sp.strip_comments(s.source)


def comments(s: sp.ScriptSpec) -> str:
    return "".join(re.findall(r"/\*.*?\*/", s.source, re.DOTALL))


# ----------------------------------------------------------------- specs load


def test_every_script_has_its_spec_and_loads() -> None:
    toml_files = {p.stem for p in D_DIR.glob("*.toml")}
    assert SCRIPTS and toml_files == set(SCRIPTS)
    loaded = specs()
    assert [s.name for s in loaded] == sorted(SCRIPTS)
    names = {a.name: a.metric for s in loaded for a in s.aggregations}
    assert names == METRICS


def test_the_shipped_directory_is_the_engines() -> None:
    assert sp.shipped_dir().resolve() == D_DIR.resolve()


@pytest.mark.parametrize("name", SCRIPTS)
def test_aggregations_in_the_d_text_match_the_spec(name: str) -> None:
    s = spec_of(name)
    uses = sp.find_aggregations(s.source)
    used = {u.name for u in uses}
    declared: set[str] = set()
    for agg in s.aggregations:
        declared.add(agg.name)
        mine = [u for u in uses if u.name == agg.name]
        assert mine, f"{name}: @{agg.name} not in the D text"
        for u in mine:
            assert u.function == agg.function and u.nkeys == len(agg.keys)
            if agg.function == "llquantize":
                # llquantize(value - offset, factor, low, high, nsteps)
                assert [int(a) for a in u.args[1:5]] == list(agg.params)
                assert re.search(rf"-\s*{agg.offset}$", u.args[0]), u.args[0]
        if agg.sum:
            declared.add(agg.sum)
            sums = [u for u in uses if u.name == agg.sum]
            assert sums and all(u.function == "sum" and u.nkeys == len(agg.keys) for u in sums)
            # The sum takes the true value, not the offset one.
            assert all(not re.search(r"-\s*1\s*$", u.args[0]) for u in sums)
    assert used == declared, f"{name}: aggregations in the D text but not declared"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_le_is_a_dtrace_bucket_boundary(name: str) -> None:
    for agg in spec_of(name).aggregations:
        if agg.type != "histogram":
            continue
        assert agg.le == LE, "one bound set for every latency: 1 us to 10 s, 1-2-5"
        assert agg.offset == 1
        # Worked out by hand from sys/dtrace.h DTRACE_LLQUANTIZE_*: llquantize(v - 1,
        # 10, 3, 9, 10) of ns and (10, 0, 6, 10) of us both have bucket 0 below the
        # first bound and nine buckets per decade, so le = 1, 2, 5 x 10^k us is the end
        # of bucket 9k, 9k + 1, 9k + 4.
        assert agg.le_buckets == (0, 1, 4, 9, 10, 13, 18, 19, 22, 27, 28, 31, 36, 37, 40,
                                  45, 46, 49, 54, 55, 58, 63)
        b = Buckets(agg.function, agg.params)
        for le, idx in zip(agg.le, agg.le_buckets, strict=True):
            hi = round(le / agg.scale) - agg.offset
            assert abs(le / agg.scale - (hi + agg.offset)) < 1e-6
            _lo, hi_i = b.bounds(b.index(hi))
            assert hi_i == hi and b.index(hi) == idx
            # and the value just above le is in the next bucket
            assert b.index(hi + 1) == idx + 1
        # The top le is the top bounded bucket; only overflow lies above.
        assert b.bounds(agg.le_buckets[-1] + 1)[1] == 2**63 - 1


def test_units_and_offsets() -> None:
    for s in specs():
        for agg in s.aggregations:
            if agg.type == "histogram":
                us = s.name == "disk"
                assert agg.scale == (1e-6 if us else 1e-9)
                assert agg.params == ((10, 0, 6, 10) if us else (10, 3, 9, 10))


# ------------------------------------------------------- what the specs declare


def _matches(description: str, probe: str) -> bool:
    """A D probe description (empty fields match anything) covers a required probe."""
    return all(d in ("", p) for d, p in zip(description.split(":"), probe.split(":"), strict=True))


@pytest.mark.parametrize("name", SCRIPTS)
def test_spec_declares_providers_probes_overhead_caveats(name: str) -> None:
    s = spec_of(name)
    text = code(s)
    described = set(re.findall(r"^\s*([a-z]+):[\w-]*:[\w-]*:[\w-]+", text, re.MULTILINE))
    assert described == set(s.providers)
    assert s.fbt == ("fbt" in s.providers)
    descriptions = re.findall(r"(?<![\w>])([a-z]+:[\w-]*:[\w-]*:[\w-]+)", text)
    for probe in s.probes:
        assert any(_matches(d, probe) for d in descriptions), f"{name}: {probe} not traced"
    assert re.search(r"\d", s.overhead)
    assert "%" in s.overhead or "negligible" in s.overhead
    assert len(s.caveats) > 100
    assert s.enabled == (name != "syscall_by_name")
    # Every script cites where its probes and arguments come from.
    assert "illumos" in comments(s) and "usr/src/" in comments(s)


def test_no_pid_keys_and_no_printing() -> None:
    for s in specs():
        text = code(s)
        for u in sp.find_aggregations(s.source):
            assert "pid" not in u.args and "pid" not in text.split(f"@{u.name}[")[1].split("]")[0]
        assert not re.search(r"\[\s*pid\s*\]", text)
        assert not re.search(r"\b(printf|printa|trace|exit|system)\s*\(", text)


def _assigned(text: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, text))


@pytest.mark.parametrize("name", SCRIPTS)
def test_in_kernel_state_is_released(name: str) -> None:
    s = spec_of(name)
    text = code(s)
    # thread-locals: each one set is zeroed on the paired probe
    for var in _assigned(text, r"self->(\w+)\s*=(?!=)"):
        assert re.search(rf"self->{var}\s*=\s*0\s*;", text), f"{name}: self->{var} never zeroed"
    # global associative arrays: each entry set is deleted (assigned 0)
    for var in _assigned(text, r"(?<!@)\b(\w+)\[[^\]]+\]\s*=(?!=)"):
        assert re.search(rf"\b{var}\[[^\]]+\]\s*=\s*0\s*;", text), f"{name}: {var}[] leaks"
    # dynamic state means dynvarsize is sized explicitly
    if re.search(r"self->|(?<!@)\b\w+\[[^\]]+\]\s*=(?!=)", text):
        assert sp.size_bytes(s.options["dynvarsize"]) >= 2 << 20


def test_identifiers_are_unique_across_scripts() -> None:
    """All scripts run in one libdtrace handle: no two may share a variable."""
    owners: dict[str, str] = {}
    for s in specs():
        text = code(s)
        names = (
            {f"@{u.name}" for u in sp.find_aggregations(s.source)}
            | {f"self->{v}" for v in re.findall(r"self->(\w+)", text)}
            | {f"this->{v}" for v in re.findall(r"this->(\w+)", text)}
            | {f"{v}[]" for v in re.findall(r"(?<!@)\b([a-z_]+)\[[^\]]*\]\s*=(?!=)", text)}
        )
        for n in names:
            assert owners.setdefault(n, s.name) == s.name, f"{n} in {owners[n]} and {s.name}"


def test_syscall_by_name_label_is_bounded_by_its_probes() -> None:
    s = spec_of("syscall_by_name")
    (agg,) = s.aggregations
    label = agg.keys[1]
    assert label.label == "syscall" and label.allow is not None
    text = code(s)
    entries = re.findall(r"syscall::(\w+):entry", text)
    returns = re.findall(r"syscall::(\w+):return", text)
    assert entries == returns == list(label.allow)
    assert label.max_values == len(label.allow)
    assert "probefunc" in text


def test_string_keys_come_from_fixed_sets() -> None:
    fs = spec_of("fs")
    ops = set(re.findall(r'"(read|write|fsync|open|readdir)"', code(fs)))
    assert fs.aggregations[0].keys[1].allow is not None
    assert ops == set(fs.aggregations[0].keys[1].allow)
    disk = spec_of("disk")
    for agg in disk.aggregations:
        assert agg.keys[1].label == "op" and agg.keys[1].allow is not None
    zil = spec_of("zil")
    for agg in zil.aggregations:
        assert agg.keys[0].label == "pool" and agg.keys[0].max_values


def test_merged_options_stay_modest() -> None:
    merged = sp.merge_options([s for s in specs() if s.enabled])
    # per CPU: principal + aggregation buffers of every enabled script
    per_cpu = sp.size_bytes(merged["bufsize"]) + sp.size_bytes(merged["aggsize"])
    assert per_cpu <= 3 << 20
    assert sp.size_bytes(merged["dynvarsize"]) <= 32 << 20


# ---------------------------------------------------------------- simulation


def _sim_frames(zones: int, seed: int, count: int) -> Iterator[tuple[Any, Any]]:
    host = make_host(zones, seed=seed, start=0.0, step=5.0, duration=count * 5.0)
    for frame in frames(host, count):
        yield host, frame


def _recs(frame: Any) -> list[Any]:
    """A simulated frame's DTrace records, one per key (the frame batches them)."""
    return [o for r in frame.dtrace for o in per_key_objects(r)]


def _check_record(
    rec: dict[str, Any], by_script: dict[str, sp.ScriptSpec], zones: set[int]
) -> None:
    s = by_script[rec["script"]]
    aggs = {a.name: a for a in s.aggregations}
    sums = s.sum_aggregations()
    agg = aggs.get(rec["agg"]) or sums[rec["agg"]]
    assert len(rec["key"]) == len(agg.keys)
    for k, v in zip(agg.keys, rec["key"], strict=True):
        if k.kind == "zoneid":
            assert isinstance(v, int) and v in zones
        elif k.allow is not None:
            assert v in k.allow
        else:
            assert isinstance(v, str) and v
    if rec["agg"] in sums:
        assert isinstance(rec["value"], int) and rec["value"] > 0
    elif agg.type == "histogram":
        b = agg.buckets()
        lows = [lo for lo, _n in rec["buckets"]]
        idx = [b.index_of_lower(lo) for lo in lows]
        assert None not in idx and idx == sorted(set(idx))  # type: ignore[type-var]
        assert all(isinstance(n, int) and n > 0 for _lo, n in rec["buckets"])
    else:
        assert isinstance(rec["value"], int) and rec["value"] > 0


def test_simulated_deltas_fit_the_shipped_specs() -> None:
    by_script = {s.name: s for s in specs()}
    seen: set[tuple[str, str]] = set()
    for _host, frame in _sim_frames(20, seed=3, count=150):
        zones = set(running_zones(frame.snapshot()))
        for rec in _recs(frame):
            _check_record(rec, by_script, zones)
            seen.add((rec["script"], rec["agg"]))
    expected = {
        (s.name, n)
        for s in by_script.values()
        for a in s.aggregations
        for n in (a.name, a.sum)
        if n
    }
    assert seen == expected, "every shipped script and aggregation is simulated"


HistKey = tuple[str, str, tuple[Any, ...]]


def _histograms(frame_recs: list[dict[str, Any]]) -> dict[HistKey, dict[Any, int]]:
    out: dict[HistKey, dict[Any, int]] = {}
    for r in frame_recs:
        if "buckets" in r:
            h = out.setdefault((r["script"], r["agg"], tuple(r["key"])), {})
            for lo, n in r["buckets"]:
                h[lo] = h.get(lo, 0) + n
    return out


def test_simulated_sums_agree_with_the_buckets() -> None:
    by_script = {s.name: s for s in specs()}
    for _host, frame in _sim_frames(12, seed=4, count=20):
        sums = {
            (r["script"], r["agg"], tuple(r["key"])): r["value"]
            for r in _recs(frame)
            if "value" in r
        }
        for (script, agg_name, key), h in _histograms(_recs(frame)).items():
            agg = by_script[script].aggregation(agg_name)
            assert agg is not None and agg.sum is not None
            b = agg.buckets()
            low = high = 0
            for lo, n in h.items():
                i = b.index_of_lower(lo)
                assert i is not None
                lo_v, hi_v = b.bounds(i)
                low += n * max(lo_v + agg.offset, 0)
                high += n * (hi_v + agg.offset)
            assert low <= sums[(script, agg.sum, key)] <= high


def _mean(recs: list[dict[str, Any]], script: str, agg: str, zid: int) -> float:
    total = count = 0
    for r in recs:
        if r["script"] == script and r["key"][0 if script != "zil" else 1] == zid:
            if r["agg"] == agg:
                count += sum(n for _lo, n in r["buckets"])
            elif r["agg"] == f"{agg}_sum":
                total += r["value"]
    return total / count if count else 0.0


def test_profiles_show_in_the_deltas() -> None:
    host = make_host(20, seed=5, start=0.0, step=5.0, duration=600)
    recs: list[dict[str, Any]] = []
    for frame in frames(host, 60):
        recs.extend(_recs(frame))
    by_profile: dict[str, list[int]] = {}
    for z in host.zones:
        if z.zoneid is not None:
            for p in z.profile or {"plain"}:
                by_profile.setdefault(p, []).append(z.zoneid)
    plain = [
        z.zoneid
        for z in host.zones
        if z.zoneid is not None and not z.profile & {"slow_disk", "cpu_throttled", "slow_connect"}
    ]
    slow_disk, throttled, slow_connect = (
        by_profile["slow_disk"], by_profile["cpu_throttled"], by_profile["slow_connect"],
    )  # fmt: skip
    worst_plain_disk = max(_mean(recs, "disk", "disk", z) for z in plain)
    assert all(_mean(recs, "disk", "disk", z) > 5 * worst_plain_disk for z in slow_disk)
    assert all(_mean(recs, "zil", "zil_commit", z) > 10 * max(
        _mean(recs, "zil", "zil_commit", p) for p in plain) for z in slow_disk)  # fmt: skip
    assert {r["key"][0] for r in recs if r["agg"] == "disk_throttle"} == set(slow_disk)
    parked = {r["key"][0] for r in recs if r["agg"] == "cpucaps_throttles"}
    assert set(throttled) <= parked
    assert all(_mean(recs, "tcpconn", "tcpconn", z) > 20 * max(
        _mean(recs, "tcpconn", "tcpconn", p) for p in plain) for z in slow_connect)  # fmt: skip


def test_halted_zones_get_no_deltas_under_a_stale_id() -> None:
    host = make_host(20, seed=3, start=0.0, step=5.0, duration=600)
    seen_ids: set[int] = set()
    for frame in frames(host, 121):
        running = set(running_zones(frame.snapshot()))
        seen_ids |= running
        for rec in _recs(frame):
            for k in rec["key"]:
                if isinstance(k, int):
                    assert k in running
    assert len(seen_ids) > 20  # churn happened: reboots gave new ids


def test_simulation_is_deterministic_and_leaves_other_parts_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = [f.dtrace for _h, f in _sim_frames(8, seed=9, count=10)]
    b = [f.dtrace for _h, f in _sim_frames(8, seed=9, count=10)]
    c = [f.dtrace for _h, f in _sim_frames(8, seed=10, count=10)]
    assert a == b and a != c
    with_dtrace = [f.kstats for _h, f in _sim_frames(8, seed=9, count=10)]
    monkeypatch.setattr(dtrace_part, "contribute", lambda host, frame, rng: None)
    without = [f.kstats for _h, f in _sim_frames(8, seed=9, count=10)]
    assert with_dtrace == without


# --------------------------------------------------------------------- the docs


def test_docs_describe_every_script_and_metric() -> None:
    text = (ROOT / "docs" / "dtrace.md").read_text(encoding="utf-8")
    for s in specs():
        assert f"## {s.name}:" in text
        for agg in s.aggregations:
            assert f"`{agg.metric}`" in text
    assert "scripts = { syscall_by_name = true" in text
    assert "script_dirs" in text


def test_docs_worked_example_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "dtrace.md").read_text(encoding="utf-8")
    example = text[text.index("## Adding your own script") :]
    d_src = re.search(r"```d\n(.*?)```", example, re.DOTALL)
    toml_src = re.search(r"```toml\n(description.*?)```", example, re.DOTALL)
    assert d_src and toml_src
    (tmp_path / "execs.d").write_text(d_src.group(1))
    (tmp_path / "execs.toml").write_text(toml_src.group(1))
    loaded = sp.load_scripts([D_DIR, tmp_path])
    execs = next(s for s in loaded if s.name == "execs")
    assert [a.metric for a in execs.aggregations] == [
        "site_zone_exec_latency_seconds", "site_zone_execs_total",
    ]  # fmt: skip
    # it follows the rules the shipped scripts are held to
    text_d = code(execs)
    for var in _assigned(text_d, r"self->(\w+)\s*=(?!=)"):
        assert re.search(rf"self->{var}\s*=\s*0\s*;", text_d)


# ------------------------------------------- what each script measures, against the sources


SYSNUM = Path(__file__).resolve().parent / "fixtures" / "illumos" / "name_to_sysnum"


def syscall_names() -> set[str]:
    """The system call names of illumos-gate usr/src/uts/intel/os/name_to_sysnum."""
    return {line.split()[0] for line in SYSNUM.read_text().splitlines() if line.strip()}


def clauses(text: str) -> list[tuple[list[str], str, str]]:
    """(probe descriptions, predicate, body) of every clause of comment-free D text."""
    out = []
    for m in re.finditer(r"((?:[a-z]+:[\w-]*:[\w-]*:[\w-]+\s*,?\s*)+)(?:/(.*?)/)?\s*\{(.*?)\n\}",
                         text, re.DOTALL):
        probes = [p.strip() for p in m.group(1).split(",") if p.strip()]
        out.append((probes, (m.group(2) or "").strip(), m.group(3)))
    return out


def test_runq_drops_the_start_when_the_thread_keeps_its_cpu_or_exits() -> None:
    """disp.c swtch(): a thread picked again after it enqueued itself fires remain-cpu,
    not on-cpu; without clearing, its next wait would be measured from then."""
    s = spec_of("runq")
    found = {}
    for probes, predicate, body in clauses(code(s)):
        for p in probes:
            found[p] = (predicate, body)
    for probe in ("sched:::remain-cpu", "proc:::lwp-exit"):
        _predicate, body = found[probe]
        assert re.search(r"runq_start\[\(uintptr_t\)curthread\]\s*=\s*0;", body), probe
        assert "@" not in body, f"{probe} must not record a latency"
    assert "sched:::remain-cpu" in s.probes
    assert "remain-cpu" in s.caveats and "dequeue" in s.caveats


def test_syscall_leaves_out_the_calls_that_wait_by_design() -> None:
    s = spec_of("syscall")
    table = syscall_names()
    undone: dict[str, str] = {}
    for probes, predicate, body in clauses(code(s)):
        if re.search(r"self->syscall_ts\s*=\s*0;", body) and "@" not in body:
            for p in probes:
                name = p.split(":")[2]
                assert name in table, f"{name} is not an illumos system call"
                undone[name] = predicate
    for name in ("pollsys", "lwp_park", "portfs", "nanosleep", "waitsys", "vfork", "kaio",
                 "doorfs", "accept", "sigsuspend", "rexit", "lwp_exit"):
        assert undone.get(name) == "", name
    # only the waiting forms (sem_impl.h SEMOP 2, SEMTIMEDOP 4; msg_impl.h MSGRCV 2,
    # MSGSND 3; devpoll.h DP_POLL 0xD001, DP_PPOLL 0xD003)
    assert undone["semsys"] == "arg0 == 2 || arg0 == 4"
    assert undone["msgsys"] == "arg0 == 2 || arg0 == 3"
    assert undone["ioctl"] == "arg1 == 0xD001 || arg1 == 0xD003"
    for name in ("vfork", "kaio", "semop", "msgrcv", "DP_POLL"):
        assert name in s.caveats, name


def test_fs_traces_every_read_and_write_call_of_the_syscall_table() -> None:
    s = spec_of("fs")
    text = code(s)
    wanted = {n for n in syscall_names() if re.fullmatch(r"p?(read|write)v?(64)?", n)}
    assert {"preadv", "pwritev", "pread64", "writev"} <= wanted
    entries = set(re.findall(r"syscall::(\w+):entry", text))
    returns = set(re.findall(r"syscall::(\w+):return", text))
    assert wanted <= entries and wanted <= returns


def test_tcpconn_takes_the_zone_from_the_stable_translator() -> None:
    s = spec_of("tcpconn")
    assert s.variant is None and s.variants == ("netstack",)
    main = code(s)
    assert "args[1]->cs_zoneid" in main
    assert not re.search(r"tcp_t|netstack|conn_t", main), "no kernel structures by default"
    fallback_path = D_DIR / "tcpconn.netstack.d"
    fallback = sp.strip_comments(fallback_path.read_text())
    assert "netstack_stackid" in fallback
    assert sp.load_scripts([D_DIR]) == specs()  # the variant file is not a script itself
    for text in (main, fallback):
        # a leftover SYN-SENT entry of a reused tcp_t is never measured: the initial
        # sequence number is stored with the start and matched
        by_probe = {p: (pred, body) for probes, pred, body in clauses(text) for p in probes}
        pred, body = by_probe["tcp:::connect-request"]
        assert "tcpconn_iss[args[3]->tcps_addr] != args[3]->tcps_iss" in pred
        assert "tcpconn_iss[args[3]->tcps_addr] = args[3]->tcps_iss;" in body
        recording = [pred for probes, pred, body in clauses(text)
                     if "tcp:::connect-established" in probes and "@tcpconn[" in body]
        assert recording and all("tcpconn_iss[args[3]->tcps_addr] == args[3]->tcps_iss"
                                 in p for p in recording)


def test_a_variant_is_selected_by_the_spec(tmp_path: Path) -> None:
    for suffix in (".d", ".netstack.d"):
        (tmp_path / f"tcpconn{suffix}").write_text((D_DIR / f"tcpconn{suffix}").read_text())
    toml = (D_DIR / "tcpconn.toml").read_text()
    (tmp_path / "tcpconn.toml").write_text('variant = "netstack"\n' + toml)
    chosen = sp.load_script(tmp_path / "tcpconn.d")
    assert chosen.variant == "netstack" and "netstack_stackid" in chosen.source
    (tmp_path / "tcpconn.toml").write_text('variant = "nope"\n' + toml)
    with pytest.raises(sp.SpecError, match=r"variant.*one of the listed variants netstack"):
        sp.load_script(tmp_path / "tcpconn.d")
    (tmp_path / "tcpconn.toml").write_text(toml)
    (tmp_path / "tcpconn.netstack.d").write_text(
        (D_DIR / "tcpconn.netstack.d").read_text().replace("@tcpconn_sum[", "@tcpconn_total["))
    with pytest.raises(sp.SpecError, match=r"tcpconn\.netstack\.d: .*tcpconn_sum"):
        sp.load_script(tmp_path / "tcpconn.d")


def test_zil_bytes_say_what_lwb_nused_counts() -> None:
    (agg,) = [a for a in spec_of("zil").aggregations if a.name == "zil_bytes"]
    for words in ("chain header", "indirect", "logbias=throughput"):
        assert words in agg.help, words


def test_disk_has_only_the_ops_that_are_timed() -> None:
    s = spec_of("disk")
    assert [a.keys[1].allow for a in s.aggregations] == [("read", "write"), ("read", "write")]
    assert '"other"' not in code(s)
    latency = s.aggregation("disk")
    assert latency is not None and "taskq" in latency.help
    cites = comments(s)
    assert "illumos-joyent usr/src/uts/common/fs/zfs/zfs_zone.c" in cites
    assert "illumos-gate usr/src/uts/common/fs/zfs/zfs_zone.c" not in cites
