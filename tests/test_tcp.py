"""Per-zone TCP from the per-netstack tcp:<stackid>:tcp MIB kstats."""

from __future__ import annotations

from dtagent.collectors.tcp import ZoneTcpCollector
from dtagent.kstat_text import parse
from dtagent.simulate import frames, make_host
from dtagent.snapshot import Kstat
from dtagent.zonemap import running_zones
from tests.helpers import Samples, collected

ZONE = "3bab6c39-8d88-448a-beed-8d14f06d3fef"

# `kstat -p tcp:` as the global zone sees it: its own stack (0), a running zone's (5), and
# the stack of a zone that is halting (7; its zones:7 kstat is already gone). Field
# names from illumos-gate inet/tcp/tcp_stats.c tcp_kstat_init.
KSTAT_P = f"""\
zones:5:{ZONE[:30]}:class\tzone_misc
zones:5:{ZONE[:30]}:zonename\t{ZONE}
tcp:0:tcp:class\tmib2
tcp:0:tcp:activeOpens\t120
tcp:0:tcp:passiveOpens\t45
tcp:0:tcp:currEstab\t7
tcp:0:tcp:listenDrop\t0
tcp:0:tcp:retransSegs\t3
tcp:0:tcp:inSegs\t100000
tcp:5:tcp:class\tmib2
tcp:5:tcp:rtoAlgorithm\t4
tcp:5:tcp:maxConn\t-1
tcp:5:tcp:activeOpens\t10
tcp:5:tcp:passiveOpens\t9000
tcp:5:tcp:attemptFails\t2
tcp:5:tcp:estabResets\t1
tcp:5:tcp:currEstab\t33
tcp:5:tcp:retransSegs\t77
tcp:5:tcp:listenDrop\t12
tcp:5:tcp:listenDropQ0\t4
tcp:5:tcp:halfOpenDrop\t0
tcp:7:tcp:class\tmib2
tcp:7:tcp:activeOpens\t1
tcp:5:tcpstat:class\tnet
tcp:5:tcpstat:tcp_listendrop\t12
"""


def collect(kstats: list[Kstat]) -> Samples:
    return collected(ZoneTcpCollector(), kstats)


def test_stacks_are_labelled_by_zonename() -> None:
    got = collect(parse(KSTAT_P.splitlines()).kstats)
    z = (ZONE,)
    assert got[("illumos_zone_tcp_active_opens_total", z)] == 10
    assert got[("illumos_zone_tcp_passive_opens_total", z)] == 9000
    assert got[("illumos_zone_tcp_failed_connection_attempts_total", z)] == 2
    assert got[("illumos_zone_tcp_established_resets_total", z)] == 1
    assert got[("illumos_zone_tcp_established_connections", z)] == 33
    assert got[("illumos_zone_tcp_retransmitted_segments_total", z)] == 77
    assert got[("illumos_zone_tcp_listen_drops_total", z)] == 12
    assert got[("illumos_zone_tcp_listen_drops_q0_total", z)] == 4
    assert got[("illumos_zone_tcp_active_opens_total", ("global",))] == 120
    assert got[("illumos_zone_tcp_received_segments_total", ("global",))] == 100000
    # the halting zone's stack is skipped; fields a stack lacks are simply absent
    assert {labels for (_, labels) in got} == {("global",), z}
    assert ("illumos_zone_tcp_received_segments_total", z) not in got


def test_simulated_zones_all_have_tcp() -> None:
    host = make_host(8, seed=2, start=0.0, step=5.0, duration=60)
    frame = next(iter(frames(host, 1)))
    got = collect(frame.kstats)
    names = set(running_zones(frame.snapshot()).values()) | {"global"}
    assert {labels[0] for (name, labels) in got} == names
