"""The same host through libkstat (the C stand-in) and through a bundle gives the same metrics.

A simulated frame is loaded into the libkstat stand-in and its command outputs are served
by stand-in executables, then the agent runs in live mode (``sources.platform =
"illumos"``) and in replay mode on the same frame: every platform series must agree.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dtagent.bundle import Frame, write_bundle
from dtagent.config import load
from dtagent.exposition import render
from dtagent.runtime import build
from dtagent.simulate import frames, make_host
from tests.native import build_shared
from tests.native.kstat_stub import load_kstats, open_stub

# Series whose values legitimately differ between the two runs.
VARYING = ("illumos_host_", "dtagent_")
AGE_SUFFIX = "_age_seconds"


def _series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith(VARYING) or s.name.endswith(AGE_SUFFIX):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _command_bin(directory: Path, frames_seen: list[Frame]) -> Path:
    """Executables that print the latest recorded output for their exact argv."""
    latest: dict[str, dict[str, object]] = {}
    for frame in frames_seen:
        for res in frame.commands:
            latest[json.dumps(list(res.argv[1:]))] = {"argv0": res.argv[0], "rc": res.returncode,
                                                      "stdout": res.stdout}
    directory.mkdir()
    table = directory / "outputs.json"
    table.write_text(json.dumps(latest))
    for argv0 in {v["argv0"] for v in latest.values()}:
        exe = directory / str(argv0)
        exe.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            f"table = json.load(open({str(table)!r}))\n"
            "rec = table.get(json.dumps(sys.argv[1:]))\n"
            "if rec is None:\n"
            "    sys.stderr.write('unexpected argv: %r\\n' % sys.argv); sys.exit(2)\n"
            "sys.stdout.write(rec['stdout']); sys.exit(rec['rc'])\n"
        )
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return directory


def test_live_libkstat_and_replay_agree(tmp_path: Path) -> None:
    host = make_host(10, seed=4, start=1_790_000_000.0, step=5.0, duration=300)
    seen = list(frames(host, 4))
    last = seen[-1]
    bundle = tmp_path / "one.bundle"
    # the replay gets the last frame's kstats and every command recorded up to it
    write_bundle(bundle, [Frame(time=last.time, kstats=last.kstats,
                                commands=[c for f in seen for c in f.commands])])

    lib = open_stub()
    lib.stub_reset()
    load_kstats(lib, last.kstats)
    try:
        config_file = tmp_path / "live.toml"
        bindir = _command_bin(tmp_path / "bin", seen)
        config_file.write_text(
            "[sources]\n"
            'platform = "illumos"\n'
            f"libkstat = {str(build_shared('libkstat_stub.c'))!r}\n"
            f"command_path = {str(bindir) + os.pathsep + '/usr/bin:/bin'!r}\n"
            "[dtrace]\nenabled = false\n"
        )
        live = build(load(config_file))
        try:
            assert live.agent.settle(30)  # as dtagent scrape: the commands run once first
            live_text = render(live.agent.collect()).decode()
        finally:
            live.close()
    finally:
        lib.stub_reset()

    replay_config = load(None)
    replay_config.set("sources", "replay", str(bundle))
    replay_config.set("dtrace", "enabled", False)
    replay = build(replay_config)
    try:
        replay_text = render(replay.agent.collect()).decode()
    finally:
        replay.close()

    live_series, replay_series = _series(live_text), _series(replay_text)
    zone_series = [k for k in replay_series if k[0].startswith("illumos_zone_")]
    assert len(zone_series) > 100
    # the command-fed series are there too (vmadm metadata, zfs list space), not only kstats
    assert any(k[0] == "illumos_zone_info" and dict(k[1])["alias"] for k in replay_series)
    assert any(k[0] == "illumos_zone_quota_ratio" for k in replay_series)
    assert live_series == replay_series
    # pool health, SMF, FMA and the KVM/bhyve guests' kstats come through the live
    # sources (libkstat stand-in, command stand-ins) as through the replay
    names = {k[0] for k in live_series}
    for name in ("illumos_zpool_health", "illumos_smf_services", "illumos_fma_open_faults",
                 "illumos_vm_vcpu_time_seconds_total", "illumos_vm_vcpu_exits_total",
                 "illumos_vm_info"):
        assert name in names, name
    assert 'dtagent_collector_success{collector="host"} 1' in live_text
