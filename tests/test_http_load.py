"""Slow clients and many scrapers against the HTTP front (loopback, bounded).

* 200 slowloris connections (headers a byte at a time) and 50 stalled readers (a
  request for a large body, then nothing read) are held open while normal scrapes keep
  answering 200; the slowloris are cut off at the head deadline (not per byte) and the
  stalled readers at the write deadline.
* 64 concurrent scrapers of ``dtagent serve`` on a simulated 200-zone host: no 5xx,
  every body identical within one moment, and the server's RSS is reported (printed
  with ``-s``; memory is not asserted against a clock, only against the number of
  scrapers: it must not grow with them).

Every loop here is bounded in count and time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dtagent.httpd import Limits
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.server import MetricsServer
from tests.helpers import REPO, free_port, wait_http

SPEC = MetricSpec("t_zone_value", "gauge", "A large exposition.", ("zonename", "kind"))
ROWS = 40_000  # about 3.5 MB of text: more than a loopback socket's buffers hold


def large_body() -> list[MetricFamily]:
    fam = SPEC.family()
    for i in range(ROWS):
        fam.add((f"{i:08d}-0000-4000-8000-{i:012d}", "k" * 8), i)
    return [fam]


def scrape(address: tuple[str, int], path: str = "/metrics", gzip: bool = True) -> int:
    conn = http.client.HTTPConnection(*address, timeout=20)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip" if gzip else "identity"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer(
        "127.0.0.1:0",
        large_body,
        limits=Limits(header_timeout=4.0, idle_timeout=10.0, write_timeout=4.0),
    )
    srv.start()
    yield srv
    srv.stop()


def test_slowloris_and_stalled_readers_do_not_stop_scrapes(server: MetricsServer) -> None:
    address = server.address
    slow: list[socket.socket] = []
    stalled: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection(address, timeout=5)
            s.sendall(b"G")
            s.setblocking(False)
            slow.append(s)
        for _ in range(50):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(address)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            stalled.append(s)
        opened = time.monotonic()
        while server.http.counters.open_connections < 250:  # all accepted and held
            assert time.monotonic() - opened < 5, server.http.counters.open_connections
            time.sleep(0.01)
        trickle = b"ET /metrics HTTP/1.1\r\nHost: x\r\n"
        statuses: list[int] = []
        sent = 0
        # while they are held: trickle one byte each, and scrape normally
        while time.monotonic() - opened < 2.5 and sent < len(trickle):
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(trickle[sent : sent + 1])
            sent += 1
            statuses.append(scrape(address))
            statuses.append(scrape(address, "/healthz"))
        assert statuses and set(statuses) == {200}, statuses
        # the head deadline cuts the slowloris off, however steadily they trickle
        deadline = time.monotonic() + 20
        while server.http.counters.timeouts.get("header", 0) < 200:
            assert time.monotonic() < deadline, server.http.counters.timeouts
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(b"X")
            time.sleep(0.2)
        # the write deadline aborts the stalled readers; their body was made once
        while server.http.counters.timeouts.get("write", 0) < 50:
            assert time.monotonic() < deadline, server.http.counters.timeouts
            time.sleep(0.2)
        assert server.bodies.rendered["identity"] <= 1 + len(statuses)
        assert scrape(address) == 200
        print(
            f"\nslow clients: {len(statuses)} scrapes answered 200 while 200 slowloris and "
            f"50 stalled readers were held; rendered bodies {server.bodies.rendered}"
        )
    finally:
        for s in slow + stalled:
            s.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tuple[str, int], int]]:
    tmp = tmp_path_factory.mktemp("load")
    bundle = tmp / "host.bundle"
    subprocess.run(
        [sys.executable, "-m", "dtagent", "simulate", "--zones", "200", "--out", str(bundle),
         "--duration", "20", "--step", "5"],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )
    port = free_port()
    log = (tmp / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtagent", "serve", "--replay", str(bundle),
         "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield ("127.0.0.1", port), proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        assert all(line.startswith(b"{") for line in Path(log.name).read_bytes().splitlines())


# a body shows the bodies made before its moment, of both encodings: their sum names
# the moment (the first scraper's encoding is rendered, the other converted from it)
MOMENT = re.compile(
    rb'dtagent_http_bodies_rendered_total\{encoding="gzip"\} (\d+)\n'
    rb'dtagent_http_bodies_rendered_total\{encoding="identity"\} (\d+)\n'
)


def _scraper(address: tuple[str, int], until: float, gzip: bool,
             out: list[tuple[int, bytes, str]]) -> None:
    import gzip as gz

    conn = http.client.HTTPConnection(*address, timeout=30)
    done = 0
    while time.monotonic() < until and done < 40:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip" if gzip else ""})
        resp = conn.getresponse()
        body = resp.read()
        if resp.getheader("Content-Encoding") == "gzip":
            body = gz.decompress(body)
        moment = MOMENT.search(body)
        out.append((resp.status,
                    str(int(moment.group(1)) + int(moment.group(2))).encode() if moment else b"?",
                    hashlib.sha256(body).hexdigest()))
        done += 1
    conn.close()


def test_64_concurrent_scrapers_share_one_body_per_moment(
    agent: tuple[tuple[str, int], int],
) -> None:
    address, pid = agent
    proc = psutil.Process(pid)
    rss_before = proc.memory_info().rss
    results: list[tuple[int, bytes, str]] = []
    until = time.monotonic() + 4
    threads = [
        threading.Thread(target=_scraper, args=(address, until, i % 2 == 0, results))
        for i in range(64)
    ]
    peak = rss_before
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.05)
    for t in threads:
        t.join()
    rss_after = proc.memory_info().rss
    codes = {status for status, _, _ in results}
    assert codes == {200}, codes
    by_moment: dict[bytes, set[str]] = defaultdict(set)
    for _, moment, digest in results:
        by_moment[moment].add(digest)
    assert b"?" not in by_moment
    assert all(len(digests) == 1 for digests in by_moment.values()), {
        m: len(d) for m, d in by_moment.items() if len(d) > 1
    }
    size = len(scrape_body(address))
    print(
        f"\n64 scrapers: {len(results)} scrapes, {len(by_moment)} moments "
        f"(bodies of {size / 1e6:.1f} MB), RSS before {rss_before / 2**20:.0f} MiB, "
        f"peak {peak / 2**20:.0f} MiB, after {rss_after / 2**20:.0f} MiB"
    )
    assert len(by_moment) < len(results) / 4  # shared, not one render per scrape
    # one body per moment: memory must not grow with 64 scrapers (64 copies of the body
    # would be far above this)
    assert peak - rss_before < 16 * size + 32 * 2**20


def scrape_body(address: tuple[str, int]) -> bytes:
    conn = http.client.HTTPConnection(*address, timeout=20)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    conn.close()
    return body
