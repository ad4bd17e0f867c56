"""Crossbow flows: flowadm (a stand-in on PATH) joined with the class-flow kstats."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.collectors.flow import FlowCollector
from dtagent.parsers.network import escape_ofmt, format_bw
from dtagent.snapshot import Kstat
from tests.conftest import FAKEBIN
from tests.helpers import Answers, Samples, collected, snapshot_of, stand_in_runner

LONG = "a-flow-with-a-name-longer-than-thirty-characters"


def flow_kstat(name: str, rbytes: int) -> Kstat:
    # io/mac/mac_flow.c flow_stat_create: unix:0:<flow>, class flow, six uint64 fields
    return Kstat(
        "unix",
        0,
        name[:30],
        "flow",
        data={
            "rbytes": rbytes,
            "ipackets": 3,
            "ierrors": 0,
            "obytes": rbytes * 2,
            "opackets": 4,
            "oerrors": 1,
        },
    )


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, samples_dir: Path) -> Path:
    """The flows of the flowadm(8) man page example, as flowadm -p / -c prints them."""
    monkeypatch.setenv("DTAGENT_FAKE_DIR", str(tmp_path))
    monkeypatch.delenv("DTAGENT_FAKE_FLOWADM_MODE", raising=False)
    text = (samples_dir / "flowadm_show_flow_manpage_example.txt").read_text()
    rows = [ln.split() for ln in text.splitlines() if ln and not ln.startswith(("#", "FLOW"))]
    flows = [(r[0], r[1]) for r in rows if len(r) == 7 and r[0] == "https-1"]
    flows.append((LONG, "bge0"))
    (tmp_path / "flowadm-show-flow.txt").write_text(
        "".join(escape_ofmt(list(f)) + "\n" for f in flows)
    )
    props = {(r[0], r[1]): r[2] for r in rows if len(r) == 5 and r[1] in ("maxbw", "priority")}
    assert props == {("https-1", "maxbw"): "500", ("https-1", "priority"): "high"}
    lines = [
        escape_ofmt(["https-1", "maxbw", format_bw(int(props["https-1", "maxbw"]) * 10**6)]),
        escape_ofmt(["https-1", "priority", props["https-1", "priority"]]),
        escape_ofmt([LONG, "maxbw", ""]),
        escape_ofmt([LONG, "priority", "medium"]),
    ]
    (tmp_path / "flowadm-show-flowprop.txt").write_text("".join(ln + "\n" for ln in lines))
    (tmp_path / "calls.log").write_text("")
    return tmp_path


def collect(collector: FlowCollector, kstats: list[Kstat]) -> Samples:
    return collected(collector, kstats, stand_in_runner(str(FAKEBIN)))


KSTATS = [
    flow_kstat("https-1", 1000),
    flow_kstat(LONG, 50),
    flow_kstat("bge0", 99999),  # the link's implicit flow: never reported
    Kstat("link", 0, "bge0", "net", data={"rbytes64": 5}),
]


def test_flows_joined_with_kstats(fake: Path) -> None:
    got = collect(FlowCollector(), KSTATS)
    https = ("https-1", "bge0", "")
    long_ = (LONG, "bge0", "")
    assert got[("illumos_flow_received_bytes_total", https)] == 1000
    assert got[("illumos_flow_transmitted_bytes_total", https)] == 2000
    assert got[("illumos_flow_transmit_errors_total", https)] == 1
    assert got[("illumos_flow_received_bytes_total", long_)] == 50  # kstat name cut to 30
    assert got[("illumos_flow_maxbw_bytes_per_second", https)] == 62_500_000
    assert ("illumos_flow_maxbw_bytes_per_second", long_) not in got
    assert got[("illumos_flow_info", (*https, "high", "500000000"))] == 1
    assert got[("illumos_flow_info", (*long_, "medium", ""))] == 1
    assert not any(k[1][0] == "bge0" for k in got)


def test_flow_commands_run_once_per_refresh(fake: Path) -> None:
    collector = FlowCollector(max_age=60)
    cmds = stand_in_runner(str(FAKEBIN))
    for _ in range(3):
        collector.collect(snapshot_of([collector], KSTATS, cmds))
    assert len((fake / "calls.log").read_text().splitlines()) == 2


def test_zonename_of_a_zone_link(fake: Path) -> None:
    kstats = [*KSTATS[:3], Kstat("link", 0, "bge0", "net", data={"zonename": "web"})]
    got = collect(FlowCollector(), kstats)
    assert ("illumos_flow_received_bytes_total", ("https-1", "bge0", "web")) in got


ZONE_A = "3bab6c39-8d88-448a-beed-8d14f06d3fef"
ZONE_B = "5e1ea978-70a7-4e49-ba60-dbd625329041"


def _flows_on(fake: Path, *links: tuple[str, str]) -> None:
    (fake / "flowadm-show-flow.txt").write_text("".join(f"{f}:{lnk}\n" for f, lnk in links))


def test_zonename_of_a_flow_on_a_zone_vnic(fake: Path) -> None:
    """In the global zone a zone's VNIC kstat is z<id>_net0 (illumos-joyent
    usr/src/uts/common/io/dls/dls_mgmt.c, dls_devnet_stat_create): a flow
    on it, by either name, is the zone's; net0 of two zones is nobody's in particular."""
    _flows_on(fake, ("f1", "z5_net0"), ("f2", "net0"), ("f3", "net1"))
    vnics = [
        Kstat("link", 0, "z5_net0", "net", data={"zonename": ZONE_A}),
        Kstat("link", 0, "z5_net1", "net", data={"zonename": ZONE_A}),
        Kstat("link", 0, "z6_net0", "net", data={"zonename": ZONE_B}),
    ]
    kstats = [flow_kstat(f, 10) for f in ("f1", "f2", "f3")] + vnics
    info = {k[1][:3] for k in collect(FlowCollector(), kstats) if k[0] == "illumos_flow_info"}
    assert info == {("f1", "z5_net0", ZONE_A), ("f2", "net0", ""), ("f3", "net1", ZONE_A)}


def test_flows_sharing_a_kstat_name_report_no_traffic(fake: Path) -> None:
    twin = LONG[:30] + "-other"
    _flows_on(fake, (LONG, "bge0"), (twin, "bge0"), ("https-1", "bge0"))
    with structlog.testing.capture_logs() as logs:
        got = collect(FlowCollector(), KSTATS)
    traffic = {k[1][0] for k in got if k[0] == "illumos_flow_received_bytes_total"}
    assert traffic == {"https-1"}
    assert {k[1][0] for k in got if k[0] == "illumos_flow_info"} == {LONG, twin, "https-1"}
    assert sum("share one kstat name" in e["event"] for e in logs) == 1  # once per name


@pytest.mark.parametrize("mode", ["fail", "hang", "garbage", "noprops"])
def test_flowadm_trouble(fake: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("DTAGENT_FAKE_FLOWADM_MODE", mode)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        got = collect(FlowCollector(command_timeout=0.5), KSTATS)
    assert time.monotonic() - started < 5
    warnings = [e for e in logs if e["log_level"] == "warning" and e.get("collector") == "flow"]
    assert warnings, logs
    if mode == "noprops":
        # flows still reported, without maxbw and priority
        assert got[("illumos_flow_received_bytes_total", ("https-1", "bge0", ""))] == 1000
        assert not any(k[0] == "illumos_flow_maxbw_bytes_per_second" for k in got)
        assert warnings[0]["effect"] == "flows without maxbw"
    else:
        # without a flow list the implicit flows cannot be told apart: report none
        assert got == {}
    if mode == "garbage":
        assert "could not be read" in warnings[0]["event"]
    if mode == "hang":
        assert "timed out" in warnings[0]["reason"]


def _text(flows: str, props: str) -> Answers:
    """flowadm show-flow prints ``flows``, show-flowprop ``props``."""
    return Answers(lambda argv: flows if argv[1] == "show-flow" else props)


@settings(max_examples=60, deadline=None)
@given(st.text(), st.text())
def test_any_flowadm_output_is_survived(flows: str, props: str) -> None:
    collector = FlowCollector()
    for fam in collector.collect(snapshot_of([collector], KSTATS, _text(flows, props))):
        for labels, value in fam.samples:
            assert labels[0] != "bge0" or "bge0" in flows  # implicit flows only if listed
            assert value >= 0
