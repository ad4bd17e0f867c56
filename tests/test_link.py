"""Links and VNICs: real link kstats, zone reboots, maxbw through a stand-in dladm."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.agent import Agent
from dtagent.collectors.flow import FlowCollector
from dtagent.collectors.link import LinkCollector
from dtagent.collectors.zfs_arc import ZfsArcCollector
from dtagent.exposition import render
from dtagent.kstat_text import parse
from dtagent.linkid import identify
from dtagent.snapshot import CommandSource, Kstat, KstatSnapshot
from dtagent.sources.commands import CommandRunner
from tests.conftest import FAKEBIN
from tests.helpers import Answers, Samples, samples_of, snapshot_of, stand_in_runner

ZONE_A = "3bab6c39-8d88-448a-beed-8d14f06d3fef"
ZONE_B = "8a1e7c2f-3b4d-4e5f-9a0b-1c2d3e4f5a6b"


def collect(
    collector: LinkCollector,
    kstats: Iterable[Kstat],
    commands: CommandSource | None = None,
    t: float = 0.0,
) -> Samples:
    """One collection, once ``commands`` has run what the collector asks for."""
    return samples_of(collector, snapshot_of([collector], kstats, commands, t))


def zone_kstat(zoneid: int, zonename: str) -> Kstat:
    return Kstat("zones", zoneid, zonename[:30], "zone_misc", data={"zonename": zonename})


def vnic(
    name: str, zonename: str | None, rbytes: int = 1000, obytes: int = 2000, t_ns: int = 0
) -> Kstat:
    data: dict[str, int | float | str] = {
        "ifspeed": 10_000_000_000,
        "rbytes64": rbytes,
        "obytes64": obytes,
        "ipackets64": 10,
        "opackets64": 20,
        "ierrors": 1,
        "oerrors": 2,
        "link_state": 1,
    }
    if zonename is not None:
        data["zonename"] = zonename
    return Kstat("link", 0, name, "net", snaptime=t_ns, data=data)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the stand-in dladm reads its answers from (and logs calls to)."""
    monkeypatch.setenv("DTAGENT_FAKE_DIR", str(tmp_path))
    monkeypatch.delenv("DTAGENT_FAKE_DLADM_MODE", raising=False)
    (tmp_path / "calls.log").write_text("")
    return tmp_path


def calls(fake: Path) -> list[str]:
    return (fake / "calls.log").read_text().splitlines()


def runner() -> CommandRunner:
    return stand_in_runner(str(FAKEBIN))


def test_omnios_vnic_sample(samples_dir: Path) -> None:
    kstats = parse((samples_dir / "omnios_kstat_link_vnic_decoded.txt").read_text().splitlines())
    for ks in kstats.kstats:
        ks.ks_class = "net"  # the decoded fixture has values only; link kstats are class net
    got = collect(LinkCollector(), kstats.kstats)
    lab = ("dns_net0", "")  # illumos-gate: the VNIC's own name, no zonename statistic
    assert got[("illumos_link_received_bytes_total", lab)] == 1518773044
    assert got[("illumos_link_transmitted_bytes_total", lab)] == 69053870
    assert got[("illumos_link_received_packets_total", lab)] == 1637072
    assert got[("illumos_link_transmitted_packets_total", lab)] == 687231
    assert got[("illumos_link_received_broadcast_packets_total", lab)] == 470586
    assert got[("illumos_link_received_multicast_packets_total", lab)] == 3576
    assert got[("illumos_link_received_unknown_protocol_packets_total", lab)] == 1207
    assert got[("illumos_link_receive_errors_total", lab)] == 0
    assert got[("illumos_link_speed_bytes_per_second", lab)] == 125_000_000
    assert got[("illumos_link_up", lab)] == 1


def test_smartos_zone_sample_truncated(samples_dir: Path) -> None:
    # Human `kstat link:0:net0` inside a SmartOS zone, cut off at rbytes64.
    text = (samples_dir / "kstat_link_net0_smartos_ngz_partial.txt").read_text()
    kstats = parse(text.splitlines()).kstats
    got = collect(LinkCollector(), kstats)
    lab = ("net0", "")
    assert got[("illumos_link_transmitted_bytes_total", lab)] == 25407245
    assert got[("illumos_link_received_packets_total", lab)] == 185022
    assert got[("illumos_link_transmitted_broadcast_packets_total", lab)] == 350
    # rbytes64 is missing from the capture: only that series is absent; ifspeed 0 is
    # "unknown", not a speed.
    assert ("illumos_link_received_bytes_total", lab) not in got
    assert ("illumos_link_speed_bytes_per_second", lab) not in got


def test_zone_vnic_labels_survive_a_reboot() -> None:
    collector = LinkCollector()
    uplink = vnic("ixgbe0", None)
    before = collect(collector, [zone_kstat(5, ZONE_A), vnic("z5_net0", ZONE_A), uplink])
    # the zone reboots: new zone id, the VNIC is re-created under a new kstat name
    after = collect(collector, [zone_kstat(9, ZONE_A), vnic("z9_net0", ZONE_A), uplink])
    assert set(before) == set(after)
    assert ("illumos_link_received_bytes_total", ("net0", ZONE_A)) in after
    assert ("illumos_link_received_bytes_total", ("ixgbe0", "")) in after
    assert identify(vnic("z12_net1", ZONE_A)).link == "net1"
    assert identify(vnic("z12_net1", "global")).link == "z12_net1"  # a global zone link


def test_two_kstats_for_one_zone_link_give_one_series() -> None:
    # Halting and booting quickly, the old VNIC kstat may still be there: keep the
    # current zone id's, and say so once.
    collector = LinkCollector()
    kstats = [zone_kstat(9, ZONE_A), vnic("z5_net0", ZONE_A, 7), vnic("z9_net0", ZONE_A, 3)]
    with structlog.testing.capture_logs() as logs:
        got = collect(collector, kstats)
        reverse = collect(collector, list(reversed(kstats)))
    assert got[("illumos_link_received_bytes_total", ("net0", ZONE_A))] == 3
    assert reverse[("illumos_link_received_bytes_total", ("net0", ZONE_A))] == 3
    assert [e["event"] for e in logs].count(
        "two link kstats for one zone link; using the current zone id's"
    ) == 1


def test_maxbw_from_dladm_global_and_per_zone(fake: Path) -> None:
    # The global zone's view names every zone's VNIC net0; those rows are ambiguous.
    (fake / "dladm-maxbw.txt").write_text("ixgbe0:\nvnic7:  200\nnet0:  100\nnet0:\n")
    (fake / f"dladm-maxbw-{ZONE_A}.txt").write_text("net0:  100\nnet1:\n")
    (fake / f"dladm-maxbw-{ZONE_B}.txt").write_text("net0:    1.500\n")
    kstats = [
        zone_kstat(5, ZONE_A),
        zone_kstat(6, ZONE_B),
        vnic("z5_net0", ZONE_A),
        vnic("z5_net1", ZONE_A),
        vnic("z6_net0", ZONE_B),
        vnic("ixgbe0", None),
        vnic("vnic7", None),
    ]
    cmds = runner()
    collector = LinkCollector()
    got = collect(collector, kstats, cmds, 100.0)
    maxbw = {k[1]: v for k, v in got.items() if k[0] == "illumos_link_maxbw_bytes_per_second"}
    assert maxbw == {
        ("net0", ZONE_A): 12_500_000,
        ("net0", ZONE_B): 187_500,
        ("vnic7", ""): 25_000_000,
    }
    assert sorted(calls(fake)) == sorted(
        [
            "dladm show-linkprop -c -o link,value -p maxbw",
            f"dladm show-linkprop -z {ZONE_A} -c -o link,value -p maxbw",
            f"dladm show-linkprop -z {ZONE_B} -c -o link,value -p maxbw",
        ]
    )
    # Each runs once per refresh: the next scrapes fork nothing ...
    collect(collector, kstats, cmds, 110.0)
    assert len(calls(fake)) == 3
    # ... until a zone reboots (new zone id, new VNIC): only that zone is asked again.
    kstats2 = [zone_kstat(8, ZONE_A) if k.key == ("zones", 5, ZONE_A[:30]) else k for k in kstats]
    kstats2 = [
        vnic(k.name.replace("z5_", "z8_"), ZONE_A) if k.name.startswith("z5_") else k
        for k in kstats2
    ]
    got = collect(collector, kstats2, cmds, 120.0)
    assert got[("illumos_link_maxbw_bytes_per_second", ("net0", ZONE_A))] == 12_500_000
    assert calls(fake)[3:] == [f"dladm show-linkprop -z {ZONE_A} -c -o link,value -p maxbw"]


def test_maxbw_usage_ratio_between_collections() -> None:
    answers = Answers(lambda argv: "net0:  100\n" if "-z" in argv else "")
    collector = LinkCollector()
    z = zone_kstat(5, ZONE_A)
    first = collect(collector, [z, vnic("z5_net0", ZONE_A, 0, 0, 10 * 10**9)], answers, 10.0)
    assert not any(k[0] == "illumos_link_maxbw_usage_ratio" for k in first)
    # 10 s later: 62.5 MB in (50 Mbit/s of 100), 125 MB out (100 Mbit/s)
    second = collect(collector,
            [z, vnic("z5_net0", ZONE_A, 62_500_000, 125_000_000, 20 * 10**9)], answers, 20.0
        )
    assert second[("illumos_link_maxbw_usage_ratio", ("net0", ZONE_A, "in"))] == 0.5
    assert second[("illumos_link_maxbw_usage_ratio", ("net0", ZONE_A, "out"))] == 1.0
    # counters that went back (a re-created VNIC) give no ratio rather than a bogus one
    third = collect(collector, [z, vnic("z5_net0", ZONE_A, 5, 5, 30 * 10**9)], answers, 30.0)
    assert not any(k[0] == "illumos_link_maxbw_usage_ratio" for k in third)


@pytest.mark.parametrize("mode", ["fail", "hang", "garbage"])
def test_dladm_trouble_is_logged_and_links_still_reported(
    fake: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("DTAGENT_FAKE_DLADM_MODE", mode)
    kstats = [zone_kstat(5, ZONE_A), vnic("z5_net0", ZONE_A), vnic("ixgbe0", None)]
    kstats += [zone_kstat(6, ZONE_B), vnic("z6_net0", ZONE_B)]
    arcstats = Kstat("zfs", 0, "arcstats", "misc", data={"hits": 5, "size": 7})
    cmds = runner()
    agent = Agent(
        [LinkCollector(command_timeout=0.5), ZfsArcCollector()],
        _Static([*kstats, arcstats]),
        cmds,
        illumos=True,
        reuse_within=0,
    )
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        agent.collect()  # the scrape that sets dladm off does not wait for it
        assert time.monotonic() - started < 0.4
        assert cmds.settle(10)
        started = time.monotonic()
        text = render(agent.collect()).decode()
        assert time.monotonic() - started < 0.4
    assert len(calls(fake)) == 3  # the global query and one per zone, each once
    assert 'illumos_link_received_bytes_total{link="net0",zonename="' + ZONE_A in text
    assert 'illumos_link_received_bytes_total{link="ixgbe0",zonename=""} 1000' in text
    assert "illumos_zfs_arc_hits_total 5" in text
    assert "illumos_link_maxbw_bytes_per_second" not in text
    assert 'dtagent_collector_success{collector="link"} 1' in text
    failures = 0 if mode == "garbage" else 3
    assert f'dtagent_command_failures_total{{command="dladm show-linkprop"}} {failures}' in text
    warnings = [e for e in logs if e["log_level"] == "warning" and e.get("collector") == "link"]
    assert warnings, logs
    w = warnings[0]
    assert "dladm" in w["event"] and "dladm show-linkprop" in w["command"]
    if mode == "garbage":
        assert "could not be read" in w["event"] and w["problems"]
    else:
        assert "failed" in w["event"]
        assert ("timed out" in w["reason"]) == (mode == "hang")


class _Static:
    def __init__(self, kstats: list[Kstat]) -> None:
        self._kstats = kstats

    def kstats(self) -> KstatSnapshot:
        return KstatSnapshot(self._kstats, time=1.0)


def _text(text: str) -> Answers:
    """A command source whose every command prints the same text."""
    return Answers(lambda argv: text)


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_any_dladm_output_leaves_the_link_counters_alone(text: str) -> None:
    kstats = [zone_kstat(5, ZONE_A), vnic("z5_net0", ZONE_A), vnic("ixgbe0", None)]
    got = collect(LinkCollector(), kstats, _text(text), 1.0)
    assert got[("illumos_link_received_bytes_total", ("net0", ZONE_A))] == 1000
    assert got[("illumos_link_received_bytes_total", ("ixgbe0", ""))] == 1000
    for (name, _), value in got.items():
        if name == "illumos_link_maxbw_bytes_per_second":
            assert value > 0


def test_collector_settings_from_the_config(tmp_path: Path) -> None:
    from dtagent.config import ConfigError, load
    from dtagent.runtime import select_collectors

    path = tmp_path / "dtagent.toml"
    path.write_text(
        "[collectors.link]\nmaxbw_max_age = 60\ncommand_timeout = 4\n"
        "[collectors.flow]\nmax_age = 30.0\ncommand_timeout = 2\n"
    )
    by_name = {c.name: c for c in select_collectors(load(path))}
    link, flow = by_name["link"], by_name["flow"]
    assert isinstance(link, LinkCollector)
    assert (link.maxbw_max_age, link.command_timeout) == (60, 4)
    assert isinstance(flow, FlowCollector)
    assert (flow.max_age, flow.command_timeout) == (30.0, 2)
    path.write_text('[collectors.link]\ncommand_timeout = "long"\n')
    with pytest.raises(ConfigError, match="command_timeout"):
        load(path)


def test_a_zone_cap_is_dropped_once_dladm_has_failed_for_two_intervals(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake / "dladm-maxbw.txt").write_text("")
    (fake / f"dladm-maxbw-{ZONE_A}.txt").write_text("net0:  100\n")
    kstats = [zone_kstat(5, ZONE_A), vnic("z5_net0", ZONE_A), vnic("ixgbe0", None)]
    # The runner's clock is the test's, so the schedule and the ages are exact; the
    # timeout is the only wall-clock bound (of each stand-in run), generous so that a
    # loaded machine never makes a run time out (which would drop the first answer).
    collector = LinkCollector(maxbw_max_age=300.0, command_timeout=60.0)
    now = [100.0]
    cmds = stand_in_runner(clock=lambda: now[0])
    key = ("illumos_link_maxbw_bytes_per_second", ("net0", ZONE_A))
    assert collect(collector, kstats, cmds)[key] == 12_500_000
    monkeypatch.setenv("DTAGENT_FAKE_DLADM_MODE", "fail")
    # due again, dladm fails: the last answer stands for a while ...
    now[0] = 401.0
    assert collect(collector, kstats, cmds)[key] == 12_500_000
    now[0] = 759.0  # 659 s old: within two refresh intervals and a timeout (660 s)
    assert collect(collector, kstats, cmds)[key] == 12_500_000
    # ... but not once it is older than that
    now[0] = 761.0
    with structlog.testing.capture_logs() as logs:
        assert key not in collect(collector, kstats, cmds)
    assert any("older than its limit" in str(e.get("reason")) for e in logs), logs
