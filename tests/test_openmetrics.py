"""OpenMetrics exposition with counter start times (``_created`` from ks_crtime): checked
with prometheus-client's OpenMetrics parser, through the HTTP server's content
negotiation, on the replayed simulated host and on the live libkstat stand-in."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from dtagent.bundle import Frame, write_bundle
from dtagent.config import load
from dtagent.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    render,
    render_openmetrics_chunks,
    wants_openmetrics,
)
from dtagent.runtime import build
from dtagent.server import MetricsServer
from dtagent.simulate import frames, make_host
from tests.native import build_shared
from tests.native.kstat_stub import load_kstats, open_stub

# What Prometheus 2.x sends (scrape.go acceptHeader).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def _replayed(tmp_path: Path) -> tuple[list[Frame], str]:
    host = make_host(10, seed=4, start=1_790_000_000.0, step=5.0, duration=300)
    seen = list(frames(host, 3))
    bundle = tmp_path / "one.bundle"
    write_bundle(bundle, [Frame(time=seen[-1].time, kstats=seen[-1].kstats,
                                commands=[c for f in seen for c in f.commands])])
    return seen, str(bundle)


def _agent_text(config_path: Path | None, replay: str = "", om: bool = True) -> str:
    config = load(config_path)
    if replay:
        config.set("sources", "replay", replay)
    config.set("dtrace", "enabled", False)
    rt = build(config)
    try:
        fams = rt.agent.collect()
        return (b"".join(render_openmetrics_chunks(fams)) if om else render(fams)).decode()
    finally:
        rt.close()


def _created(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in om_parse(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                out[(fam.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_replayed_host_parses_as_openmetrics_with_created_and_units(tmp_path: Path) -> None:
    seen, bundle = _replayed(tmp_path)
    text = _agent_text(None, bundle)
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in om_parse(text)}  # raises on any violation of the format
    cpu = fams["illumos_zone_cpu_seconds"]
    assert cpu.type == "counter" and cpu.unit == "seconds"
    totals = [s for s in cpu.samples if s.name.endswith("_total")]
    created = [s for s in cpu.samples if s.name.endswith("_created")]
    assert totals and len(created) == len(totals)
    boot = 1_790_000_000.0 - 12 * 86400
    assert all(boot < s.value <= seen[-1].time for s in created)
    # a bhyve vCPU counter starts when its zone booted, a pool counter a minute after boot
    assert any(s.name == "illumos_vm_vcpu_time_seconds_created" for s in
               fams["illumos_vm_vcpu_time_seconds"].samples)
    assert {s.value for s in fams["illumos_zfs_pool_reads"].samples
            if s.name.endswith("_created")} == {boot + 60}
    # gauges never get one
    assert not any(s.name.endswith("_created") for s in fams["illumos_zone_info"].samples)
    # the 0.0.4 text of the same agent carries no _created at all
    plain = _agent_text(None, bundle, om=False)
    assert "_created" not in plain and "# EOF" not in plain
    assert {f.name for f in text_parse(plain)}


def test_live_libkstat_gives_the_same_start_times_as_the_replay(tmp_path: Path) -> None:
    seen, bundle = _replayed(tmp_path)
    lib = open_stub()
    lib.stub_reset()
    load_kstats(lib, seen[-1].kstats)
    try:
        config_file = tmp_path / "live.toml"
        config_file.write_text(
            "[sources]\n"
            'platform = "illumos"\n'
            f"libkstat = {str(build_shared('libkstat_stub.c'))!r}\n"
            f"command_path = {str(tmp_path / 'none') + os.pathsep + '/nonexistent'!r}\n"
            "[dtrace]\nenabled = false\n"
        )
        live = _created(_agent_text(config_file))
    finally:
        lib.stub_reset()
    replay = _created(_agent_text(None, bundle))
    kstat_fed = {k: v for k, v in replay.items() if k[0].startswith(("illumos_zone_cpu",
                                                                      "illumos_zfs_pool"))}
    assert kstat_fed and all(live.get(k) == v for k, v in kstat_fed.items())


def test_server_negotiates_openmetrics_and_keeps_text_as_default(tmp_path: Path) -> None:
    _, bundle = _replayed(tmp_path)
    config = load(None)
    config.set("sources", "replay", bundle)
    config.set("dtrace", "enabled", False)
    rt = build(config)
    srv = MetricsServer("127.0.0.1:0", rt.agent.collect)
    srv.start()
    try:
        host, port = srv.address
        for accept, ctype in ((PROMETHEUS_ACCEPT, OPENMETRICS_CONTENT_TYPE),
                              ("", "text/plain; version=0.0.4; charset=utf-8"),
                              ("application/openmetrics-text;q=0", "text/plain; version=0.0.4;"
                               " charset=utf-8")):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            assert resp.status == 200 and resp.getheader("Content-Type") == ctype
            if ctype == OPENMETRICS_CONTENT_TYPE:
                assert body.endswith("# EOF\n") and list(om_parse(body))
    finally:
        srv.stop()
        rt.close()


def test_accept_header_parsing() -> None:
    assert wants_openmetrics(PROMETHEUS_ACCEPT)
    assert wants_openmetrics("application/openmetrics-text")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics("application/openmetrics-text; q=0")
    assert not wants_openmetrics("application/openmetrics-text; q=bogus")
