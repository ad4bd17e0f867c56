"""A simulated SmartOS host shows all of storage and network: ARC, pools, links, VNIC
caps, flows and per-zone TCP, through the replay source as `dtagent demo` serves it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dtagent.agent import Agent
from dtagent.bundle import read_bundle
from dtagent.collectors.base import Collector
from dtagent.collectors.flow import FlowCollector
from dtagent.collectors.link import LinkCollector
from dtagent.collectors.tcp import ZoneTcpCollector
from dtagent.collectors.zfs_arc import ZfsArcCollector
from dtagent.collectors.zfs_pool import ZfsPoolCollector
from dtagent.exposition import render
from dtagent.simulate import simulate
from dtagent.sources.replay import ReplaySource
from tests.helpers import snapshot_of

# The names the dashboards and alert rules use (dashboards/generate.py, dashboards/alerts).
EXPECTED = [
    "illumos_zfs_arc_size_bytes",
    "illumos_zfs_arc_target_size_bytes",
    "illumos_zfs_arc_min_size_bytes",
    "illumos_zfs_arc_max_size_bytes",
    "illumos_zfs_arc_mru_size_bytes",
    "illumos_zfs_arc_mfu_size_bytes",
    "illumos_zfs_arc_hits_total",
    "illumos_zfs_arc_misses_total",
    "illumos_zfs_arc_l2_size_bytes",
    "illumos_zfs_arc_l2_allocated_bytes",
    "illumos_zfs_arc_l2_hits_total",
    "illumos_zfs_arc_l2_misses_total",
    "illumos_zfs_arc_l2_read_bytes_total",
    "illumos_zfs_arc_l2_written_bytes_total",
    "illumos_zfs_arc_l2_checksum_errors_total",
    "illumos_zfs_arc_l2_io_errors_total",
    "illumos_zfs_arcstats_value",
    "illumos_zfs_pool_reads_total",
    "illumos_zfs_pool_writes_total",
    "illumos_zfs_pool_read_bytes_total",
    "illumos_zfs_pool_written_bytes_total",
    "illumos_zfs_pool_run_queue_length_seconds_total",
    "illumos_zfs_pool_wait_queue_length_seconds_total",
    "illumos_link_received_bytes_total",
    "illumos_link_transmitted_bytes_total",
    "illumos_link_receive_errors_total",
    "illumos_link_transmit_errors_total",
    "illumos_link_maxbw_bytes_per_second",
    "illumos_link_maxbw_usage_ratio",
    "illumos_flow_received_bytes_total",
    "illumos_flow_transmitted_bytes_total",
    "illumos_flow_maxbw_bytes_per_second",
    "illumos_flow_info",
    "illumos_zone_tcp_active_opens_total",
    "illumos_zone_tcp_passive_opens_total",
    "illumos_zone_tcp_listen_drops_total",
    "illumos_zone_tcp_retransmitted_segments_total",
]


def collectors() -> list[Collector]:
    return [
        ZfsArcCollector(),
        ZfsPoolCollector(),
        LinkCollector(),
        FlowCollector(),
        ZoneTcpCollector(),
    ]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "host.bundle"
    simulate(path, 12, seed=7, duration=600, step=5)
    return path


def test_every_frame_has_it_all_and_vnic_series_survive_reboots(bundle: Path) -> None:
    data = read_bundle(bundle)
    cols = collectors()
    link_labels: dict[str, set[tuple[str, ...]]] = {}
    kstat_names: dict[str, set[str]] = {}
    usage: dict[tuple[str, ...], float] = {}
    for i in range(len(data.frames)):
        replay = ReplaySource(data, pin=i)
        snap = snapshot_of(cols, replay.kstats(), replay, time=replay.time())
        names: set[str] = set()
        for c in cols:
            for fam in c.collect(snap):
                names.add(fam.name)
                if fam.name == "illumos_link_received_bytes_total":
                    for labels, _ in fam.samples:
                        if labels[1]:
                            link_labels.setdefault(labels[1], set()).add(tuple(labels))
                if fam.name == "illumos_link_maxbw_usage_ratio":
                    usage.update(fam.samples)
        if i:
            missing = set(EXPECTED) - names
            assert not missing, f"frame {i}: {sorted(missing)}"
        for ks in snap.kstats.module("link"):
            zone = ks.str_stat("zonename")
            if zone:
                kstat_names.setdefault(zone, set()).add(ks.name)
    rebooted = [z for z, n in kstat_names.items() if len(n) > 1]
    assert rebooted, "the simulated host should reboot a zone"
    for zone in rebooted:
        # new kstat names (z<new id>_net0) but the same labelled series
        assert {labels[0] for labels in link_labels[zone]} == {
            n.split("_", 1)[1] for n in kstat_names[zone]
        }
    # capped VNICs (the at_maxbw profile runs near the cap)
    assert usage and all(v >= 0 for v in usage.values())
    assert max(usage.values()) > 0.9


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_replayed_scrape_passes_promtool(bundle: Path) -> None:
    now = [0.0]
    replay = ReplaySource(read_bundle(bundle), clock=lambda: now[0])
    agent = Agent(collectors(), replay, replay, illumos=True, reuse_within=0)
    now[0] = 590.0
    agent.collect()
    now[0] = 600.0  # two frames later: a rate against the caps
    text = render(agent.collect()).decode()
    assert 'illumos_link_maxbw_usage_ratio{link="net0"' in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr
