"""dtagent capture through the stand-ins (libkstat, the platform commands) replays to the
metrics the live agent served; `--anonymize` leaves none of the original zone names,
aliases, host names or dataset names in the bundle, and still replays to the same
metrics under other names."""

from __future__ import annotations

import gzip
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest

from dtagent.anonymize import Anonymizer, anonymize_bundle
from dtagent.bundle import read_bundle, read_header
from dtagent.capture import capture
from dtagent.config import load
from dtagent.exposition import render
from dtagent.runtime import build
from dtagent.simulate import frames, make_host
from tests.native import build_shared
from tests.native.kstat_stub import load_kstats, open_stub
from tests.test_live_vs_replay import _command_bin, _series

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _values_by_metric(text: str) -> dict[str, list[float]]:
    """Each platform metric's sample values, sorted: the same host under other names."""
    out: dict[str, list[float]] = defaultdict(list)
    for (name, _labels), value in _series(text).items():
        out[name].append(value)
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture
def captured(tmp_path: Path) -> tuple[Path, str, set[str]]:
    """A capture of a simulated host served by the stand-ins: (bundle, what the live
    agent served at the last frame, the host's names)."""
    host = make_host(6, seed=11, start=1_790_000_000.0, step=5.0, duration=60)
    seen = list(frames(host, 3))
    last = seen[-1]
    lib = open_stub()
    lib.stub_reset()
    load_kstats(lib, last.kstats)
    names = {z.uuid for z in host.zones} | {z.alias for z in host.zones if z.alias}
    for res in last.commands + [c for f in seen for c in f.commands]:
        if res.argv[0] == "zfs":
            names |= {line.split("\t")[0] for line in res.stdout.splitlines()} - {"zones"}
    cfg = tmp_path / "live.toml"
    bindir = _command_bin(tmp_path / "bin", seen)
    cfg.write_text(
        '[sources]\nplatform = "illumos"\n'
        f"libkstat = {str(build_shared('libkstat_stub.c'))!r}\n"
        f"command_path = {str(bindir) + os.pathsep + '/usr/bin:/bin'!r}\n"
        "[dtrace]\nenabled = false\n")
    bundle = tmp_path / "host.bundle"
    runtime = build(load(cfg))
    served: list[str] = []
    collect = runtime.agent.collect
    runtime.agent.collect = lambda **kw: (fams := collect(**kw), served.append(  # type: ignore[method-assign]
        render(fams).decode()))[0]
    try:
        assert capture(runtime, str(bundle), interval=0.05, count=2) == 2
    finally:
        runtime.close()
        lib.stub_reset()
    return bundle, served[-1], names


def _replay(bundle: Path) -> str:
    config = load(None)
    config.set("sources", "replay", str(bundle))
    config.set("dtrace", "enabled", False)
    runtime = build(config, replay_frame=-1)
    try:
        return render(runtime.agent.collect()).decode()
    finally:
        runtime.close()


def test_a_capture_replays_to_what_the_live_agent_served(
    captured: tuple[Path, str, set[str]],
) -> None:
    bundle, live, _ = captured
    replayed = _series(_replay(bundle))
    assert len([k for k in replayed if k[0].startswith("illumos_zone_")]) > 50
    assert replayed == _series(live)


def test_an_anonymized_capture_has_none_of_the_names_and_the_same_metrics(
    captured: tuple[Path, str, set[str]], tmp_path: Path,
) -> None:
    bundle, live, names = captured
    out = tmp_path / "anon.bundle"
    anon = anonymize_bundle(bundle, out, hostnames=["cn-17.example.com"])
    with gzip.open(bundle, "rt") as fh:
        raw = fh.read()
    with gzip.open(out, "rt") as fh:
        text = fh.read()
    assert all(name in raw for name in names)  # they were there
    for name in names:
        assert name not in text, name
    assert read_header(out)["anonymized"] is True
    # zone names stay UUID-shaped, and each one is the same everywhere
    zone_map = {k: v for k, v in anon.mapping.items() if UUID.fullmatch(k)}
    assert zone_map and all(UUID.fullmatch(v) for v in zone_map.values())
    assert len(set(zone_map.values())) == len(zone_map)
    # the same host under other names: every metric has the same values
    assert _values_by_metric(_replay(out)) == _values_by_metric(live)
    # and the global zone is still the global zone
    assert 'zonename="global"' in _replay(out)
    frames_out = read_bundle(out).frames
    assert all(len(ks.name) <= 30 for f in frames_out for ks in f.kstats)


def test_names_are_replaced_whole_and_with_a_secret_key() -> None:
    a = Anonymizer(key=b"k1")
    a.learn([], hostnames=["cn1"])
    assert a.text("cn1 cn10 xcn1 cn1,") == f"{a.mapping['cn1']} cn10 xcn1 {a.mapping['cn1']},"
    b = Anonymizer(key=b"k2")
    b.learn([], hostnames=["cn1"])
    assert a.mapping["cn1"] != b.mapping["cn1"]  # not a plain hash of the name


def test_cli_capture_anonymize_needs_a_live_host(tmp_path: Path) -> None:
    from tests.helpers import dtagent

    res = dtagent("capture", "--out", str(tmp_path / "x.bundle"), "--anonymize",
                  "--count", "1")
    assert res.returncode == 1 and "needs a live illumos host" in res.stderr
    sim = tmp_path / "sim.bundle"
    assert dtagent("simulate", "--zones", "3", "--duration", "30", "--out",
                   str(sim)).returncode == 0
    res = dtagent("anonymize", str(sim), "--out", str(tmp_path / "anon.bundle"))
    assert res.returncode == 0, res.stderr
    assert "names replaced" in res.stderr
    header = read_header(tmp_path / "anon.bundle")
    assert header["hostname"] != read_header(sim)["hostname"]
