"""The HTTP endpoint: /metrics with gzip, /healthz, 404, concurrency, idle clients.

The strict HTTP/1.1 details, slow clients and load are in test_httpd.py and
test_http_load.py; TLS and basic auth in test_webconfig.py."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtagent.httpd import Limits
from dtagent.listen import parse_listen
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.server import MetricsServer, SharedBodies, gzip_chunks
from tests.helpers import wait_until

SPEC = MetricSpec("t_up", "gauge", "Up.", ("zonename",))


def families() -> list[MetricFamily]:
    fam = SPEC.family()
    for i in range(2000):
        fam.add((f"zone-{i}",), i)
    return [fam]


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer(
        "127.0.0.1:0",
        families,
        limits=Limits(max_connections=4, idle_timeout=0.5, header_timeout=0.5),
    )
    srv.start()
    yield srv
    srv.stop()


def get(
    srv: MetricsServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_metrics_plain_and_gzip(server: MetricsServer) -> None:
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b't_up{zonename="zone-1999"} 1999\n' in body
    status, headers, zipped = get(server, "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(zipped) == body
    assert len(zipped) < len(body) / 3


def test_health_and_unknown_paths(server: MetricsServer) -> None:
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/nope")[0] == 404
    assert get(server, "/metrics/extra")[0] == 404
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("POST", "/metrics", body=b"x")
    assert conn.getresponse().status == 405


def test_concurrent_scrapes_all_complete() -> None:
    server = MetricsServer("127.0.0.1:0", families, limits=Limits(header_timeout=2))
    server.start()
    results: list[int] = []
    lock = threading.Lock()

    def scrape() -> None:
        for _ in range(5):
            status, _, body = get(server, "/metrics")
            with lock:
                results.append(status if b"t_up{zonename=\"zone-1999\"} 1999\n" in body else -1)

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.stop()
    assert results == [200] * 40


def test_idle_client_is_dropped_after_timeout(server: MetricsServer) -> None:
    host, port = server.address
    sock = socket.create_connection((host, port))
    sock.settimeout(5)
    started = time.monotonic()
    assert sock.recv(1024) == b""  # the server closed the connection
    elapsed = time.monotonic() - started
    sock.close()
    assert 0.3 < elapsed < 4
    assert get(server, "/healthz")[0] == 200


def test_connections_beyond_the_limit_get_503(server: MetricsServer) -> None:
    host, port = server.address
    idle = [socket.create_connection((host, port)) for _ in range(4)]
    counters = server.http.counters
    wait_until("4 open connections", lambda: counters.open_connections == 4)  # the limit
    status = get(server, "/metrics")[0]
    for s in idle:
        s.close()
    assert status == 503
    wait_until("the idle ones closed", lambda: counters.open_connections == 0)
    assert get(server, "/metrics")[0] == 200


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9718") == ("0.0.0.0", 9718)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9718", ":80", "host:port", "::1:80", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


@given(st.lists(st.binary(max_size=3000), max_size=40))
def test_gzip_of_chunks_is_gzip_of_the_whole(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    packed = gzip_chunks(list(chunks))
    assert gzip.decompress(b"".join(packed)) == whole


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsServer]:
    """The real agent on a simulated host (collectors and D scripts), served."""
    from dtagent.config import load
    from dtagent.runtime import build
    from dtagent.simulate import simulate

    bundle = tmp_path_factory.mktemp("collect") / "host.bundle"
    simulate(str(bundle), 4, seed=3, duration=30, step=5)
    config = load(None)
    config.set("sources", "replay", str(bundle))
    runtime = build(config)
    srv = MetricsServer("127.0.0.1:0", runtime.agent.collect)
    srv.use_agent(runtime.agent)
    srv.start()
    yield srv
    srv.stop()
    runtime.close()


def _family_names(body: bytes) -> set[str]:
    return {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")}


def test_collect_filter_serves_only_the_named_collectors_and_scripts(
    replayed: MetricsServer,
) -> None:
    status, _, body = get(replayed, "/metrics?collect[]=zone_cpu&collect%5B%5D=runq")
    assert status == 200
    platform = {n for n in _family_names(body) if n.startswith("illumos_")}
    assert "illumos_zone_runq_latency_seconds" in platform
    assert any(n.startswith("illumos_zone_cpu") for n in platform)
    assert not any(n.startswith(("illumos_zfs", "illumos_link", "illumos_zone_memory"))
                   for n in platform)
    assert b'dtagent_collector_success{collector="zone_cpu"} 1\n' in body
    assert b'collector="zone_memory"' not in body.split(b"dtagent_collector_available")[0]
    full = _family_names(get(replayed, "/metrics")[2])
    assert {"illumos_zfs_arc_size_bytes", "illumos_zone_memory_rss_bytes"} & full
    assert platform < full


def test_collect_filter_refuses_unknown_names_with_the_list(replayed: MetricsServer) -> None:
    status, _, body = get(replayed, "/metrics?collect[]=zone_cpu&collect[]=zonecpu")
    assert status == 400
    text = body.decode()
    assert "unknown collector zonecpu" in text
    assert "zone_cpu" in text and "runq" in text and "zfs_arc" in text


def test_registered_mounts_add_routes_to_every_server_make_server_builds() -> None:
    from dtagent import server as server_module
    from dtagent.config import load
    from dtagent.httpd import Response

    seen: list[str] = []

    def mount(srv: MetricsServer, config: object) -> None:
        seen.append(srv.listen)
        srv.add_route("/api/v1/", lambda r: Response.json(200, {"path": r.path}),
                      web_auth=False)

    class Agent:
        def stream(self) -> list[MetricFamily]:
            return families()

        def collect_only(self, names: frozenset[str]) -> list[MetricFamily]:
            return families()

        def names(self) -> list[str]:
            return ["t"]

    config = load(None)
    config.set("agent", "listen", "127.0.0.1:0")
    server_module.register_mount(mount)
    try:
        srv = server_module.make_server(config, Agent())
    finally:
        server_module._mounts.remove(mount)
    srv.start()
    try:
        status, headers, body = get(srv, "/api/v1/zones")
        assert (status, headers["content-type"], body) == (
            200, "application/json", b'{"path": "/api/v1/zones"}\n')
        assert seen == ["127.0.0.1:0"]
        assert get(srv, "/metrics?collect[]=t")[0] == 200
    finally:
        srv.stop()


class _Producer:
    """A body source that counts its collections; ``gate`` holds one until set."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, key: object) -> Iterator[bytes]:
        self.calls += 1
        n = self.calls
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("kstat chain broke")
        return (f"# moment {n}\nline {i} {'x' * 50}\n".encode() for i in range(500))


def _bodies(producer: _Producer, clock: list[float]) -> SharedBodies:
    from concurrent.futures import ThreadPoolExecutor

    return SharedBodies(producer, ThreadPoolExecutor(2), reuse_within=1.0,
                        clock=lambda: clock[0])


def test_one_moment_gives_every_scraper_the_same_bytes_each_encoding_made_once() -> None:
    import asyncio

    producer = _Producer()
    clock = [100.0]
    bodies = _bodies(producer, clock)

    async def scrape_together() -> list[list[bytes]]:
        return list(await asyncio.gather(
            *(bodies.body((None, False), gzip) for gzip in (True, False, True, False, True))
        ))

    got = asyncio.run(scrape_together())
    assert producer.calls == 1
    assert bodies.rendered == {"gzip": 1, "identity": 1}
    plain = b"".join(got[1])
    assert plain.startswith(b"# moment 1\n") and plain.count(b"\n") == 1000
    assert all(b"".join(got[i]) == plain for i in (1, 3))
    assert all(gzip.decompress(b"".join(got[i])) == plain for i in (0, 2, 4))
    assert got[0] is got[2]  # the same body, not a copy per scraper


def test_a_body_is_reused_only_within_the_window_from_its_collection_start() -> None:
    import asyncio

    producer = _Producer()
    clock = [100.0]
    bodies = _bodies(producer, clock)

    async def run() -> list[bytes]:
        first = b"".join(await bodies.body((None, False), False))
        clock[0] = 100.9  # within 1 s of the start: the same moment
        same = b"".join(await bodies.body((None, False), False))
        clock[0] = 101.0  # 1 s after the start: collected afresh
        later = b"".join(await bodies.body((None, False), False))
        other_key = b"".join(await bodies.body((frozenset({"zone_cpu"}), False), False))
        return [first, same, later, other_key]

    first, same, later, other_key = asyncio.run(run())
    assert first == same and first.startswith(b"# moment 1\n")
    assert later.startswith(b"# moment 2\n")
    assert other_key.startswith(b"# moment 3\n")  # a collect[] filter has its own moment
    assert producer.calls == 3


def test_a_moment_lets_its_body_go_when_the_window_ends_not_at_the_next_scrape() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    producer = _Producer()
    bodies = SharedBodies(producer, ThreadPoolExecutor(1), reuse_within=0.2)

    async def run() -> tuple[int, int]:
        await bodies.body((None, False), True)
        held = len(bodies._moments)
        await asyncio.sleep(0.5)  # no scrape comes; the window has ended
        return held, len(bodies._moments)

    held, after = asyncio.run(run())
    assert (held, after) == (1, 0)
    assert producer.calls == 1


def test_a_scrape_after_the_window_does_not_join_a_collection_still_running() -> None:
    import asyncio

    producer = _Producer()
    producer.gate.clear()
    clock = [100.0]
    bodies = _bodies(producer, clock)

    async def run() -> tuple[bytes, bytes, bytes]:
        early = asyncio.ensure_future(bodies.body((None, False), True))
        await asyncio.sleep(0.05)
        clock[0] = 100.5  # joins the running collection
        joined = asyncio.ensure_future(bodies.body((None, False), True))
        await asyncio.sleep(0.05)
        clock[0] = 101.5  # the running one began too long ago: a new moment
        late = asyncio.ensure_future(bodies.body((None, False), True))
        await asyncio.sleep(0.05)
        producer.gate.set()
        out = [gzip.decompress(b"".join(await f)) for f in (early, joined, late)]
        return out[0], out[1], out[2]

    early, joined, late = asyncio.run(run())
    assert early == joined and early.startswith(b"# moment 1\n")
    assert late.startswith(b"# moment 2\n")
    assert producer.calls == 2


def test_a_failed_collection_fails_its_scrapers_and_the_next_one_collects_again() -> None:
    import asyncio

    producer = _Producer()
    producer.fail = True
    clock = [100.0]
    bodies = _bodies(producer, clock)

    async def run() -> list[object]:
        return list(await asyncio.gather(
            bodies.body((None, False), True), bodies.body((None, False), False),
            return_exceptions=True,
        ))

    failed = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) for e in failed), failed
    producer.fail = False
    body = asyncio.run(run())
    assert producer.calls == 2
    assert gzip.decompress(b"".join(body[0])) == b"".join(body[1])  # type: ignore[arg-type]
