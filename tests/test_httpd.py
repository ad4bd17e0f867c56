"""The strict HTTP/1.1 front: status lines on every refusal, limits, deadlines, routes.

Requests are written byte for byte on raw sockets (what a hostile or broken client
sends), and the replies are read as the wire carries them.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator

import pytest

from dtagent.httpd import Limits, Request, Response
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.server import MetricsServer, accepts_gzip

SPEC = MetricSpec("t_up", "gauge", "Up.", ("zonename",))


def families() -> list[MetricFamily]:
    fam = SPEC.family()
    for i in range(300):
        fam.add((f"zone-{i}",), i)
    return [fam]


LIMITS = Limits(
    header_timeout=0.6,
    idle_timeout=0.8,
    write_timeout=2.0,
    max_request_line=256,
    max_header_line=256,
    max_headers=10,
    max_head_bytes=1024,
    max_body=512,
)


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1:0", families, limits=LIMITS)

    def echo(request: Request) -> Response:
        return Response(200, request.body, "application/octet-stream",
                        {"X-Method": request.method})

    srv.add_route("/api/v1/", echo, methods=("GET", "POST", "PATCH"), web_auth=False,
                  max_body=128)

    def audited(request: Request) -> Response:
        return Response.text(413 if request.oversized else 200, f"audited {request.oversized}")

    srv.add_route("/api/v2/", audited, methods=("POST",), web_auth=False, max_body=8,
                  oversized_to_handler=True)
    srv.start()
    yield srv
    srv.stop()


def exchange(srv: MetricsServer, data: bytes, wait: float = 3.0) -> bytes:
    """Send ``data``, read until the server closes (or ``wait`` passes)."""
    sock = socket.create_connection(srv.address, timeout=wait)
    sock.sendall(data)
    out = b""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    except TimeoutError:
        pass
    finally:
        sock.close()
    return out


def status_of(reply: bytes) -> int:
    line = reply.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), reply[:80]
    return int(line.split()[1])


def headers_of(reply: bytes) -> dict[str, str]:
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in head)}


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.x\r\nHost: x\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\nHost: x\n\n", 400),  # bare LF
        (b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (
            b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nabc",
            400,
        ),
        (b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            400,
        ),
        (b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 129\r\n\r\n", 413),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 513\r\n\r\n", 413),
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: a\r\n" * 11 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 200 + b"\r\n" * 1, 408),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ],
)
def test_malformed_and_oversized_requests_get_a_status_line(
    server: MetricsServer, request_bytes: bytes, status: int
) -> None:
    reply = exchange(server, request_bytes)
    assert status_of(reply) == status
    headers = headers_of(reply)
    assert headers["server"].startswith("dtagent/")
    assert "python" not in headers["server"].lower()
    assert int(headers["content-length"]) == len(reply.split(b"\r\n\r\n", 1)[1])


def test_head_larger_than_the_limit_is_refused(server: MetricsServer) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 200 + b"\r\n"
    reply = exchange(server, head * 1 + (b"X-Pad: " + b"p" * 200 + b"\r\n") * 5 + b"\r\n")
    assert status_of(reply) == 431


def test_a_get_body_is_drained_not_read_as_the_next_request(server: MetricsServer) -> None:
    smuggled = b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
        + smuggled
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert b"404" not in reply


def test_keep_alive_and_pipelining(server: MetricsServer) -> None:
    reply = exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.0\r\n\r\n",
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert reply.endswith(b"ok\n")  # HTTP/1.0 without keep-alive: closed after it


def test_routes_for_the_control_api_take_bodies_within_their_limit(
    server: MetricsServer,
) -> None:
    reply = exchange(
        server,
        b'PATCH /api/v1/zones/z1/caps HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n'
        b'Connection: close\r\n\r\n{"cpu_cap":1}',
    )
    assert status_of(reply) == 200
    assert headers_of(reply)["x-method"] == "PATCH"
    assert reply.endswith(b'{"cpu_cap":1')  # exactly Content-Length bytes were read


def test_idle_and_trickling_clients_are_closed_at_their_deadlines(
    server: MetricsServer,
) -> None:
    sock = socket.create_connection(server.address, timeout=5)
    started = time.monotonic()
    assert sock.recv(100) == b""  # idle: closed quietly after idle_timeout
    assert 0.6 < time.monotonic() - started < 3
    sock.close()
    sock = socket.create_connection(server.address, timeout=5)
    started = time.monotonic()
    reply = b""
    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.05)
        if time.monotonic() - started > 1.2:
            break
    sock.settimeout(3)
    try:
        while piece := sock.recv(1000):
            reply += piece
    except OSError:
        pass
    sock.close()
    assert status_of(reply) == 408  # the head's deadline does not restart per byte
    assert time.monotonic() - started < 3
    assert server.http.counters.timeouts["header"] >= 1


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity;q=1, gzip;q=0", False),
        ("identity;q=1, gzip;q=0.5", False),
        ("identity;q=0.5, gzip;q=0.8", True),
        ("notgzipreally", False),
        ("gzipx", False),
        ("*", True),
        ("*;q=0", False),
        ("*;q=0, gzip", True),
        ("gzip;q=2", False),  # malformed weight: the element is ignored
        ("gzip;q=abc", False),
        ("gzip;q=0.1234", False),
        (" gzip ; q=1.0 ", True),
    ],
)
def test_accept_encoding_is_parsed_with_q_values(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_metrics_vary_and_encoding_on_the_wire(server: MetricsServer) -> None:
    plain = exchange(
        server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0\r\n"
        b"Connection: close\r\n\r\n"
    )
    zipped = exchange(
        server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: GZIP\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert headers_of(plain)["vary"] == headers_of(zipped)["vary"] == "Accept, Accept-Encoding"
    assert "content-encoding" not in headers_of(plain)
    assert headers_of(zipped)["content-encoding"] == "gzip"
    body = gzip.decompress(zipped.split(b"\r\n\r\n", 1)[1])
    assert b't_up{zonename="zone-299"} 299\n' in body
    assert b't_up{zonename="zone-299"} 299\n' in plain


def test_http_metrics_count_codes(server: MetricsServer) -> None:
    exchange(server, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    exchange(server, b"GET /\r\n\r\n")
    reply = exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b'dtagent_http_requests_total{code="404"} 1\n' in reply
    assert b'dtagent_http_requests_total{code="400"} 1\n' in reply
    assert b"dtagent_http_tls 0\n" in reply


def test_expect_100_continue_as_curl_sends_it(server: MetricsServer) -> None:
    sock = socket.create_connection(server.address, timeout=5)
    sock.sendall(b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"data")
    reply = b""
    while piece := sock.recv(4096):
        reply += piece
    sock.close()
    assert status_of(reply) == 200 and reply.endswith(b"data")
    reply = exchange(server, b"POST /api/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                     b"Expect: something\r\n\r\nx")
    assert status_of(reply) == 417


def test_an_oversized_body_can_be_refused_by_the_route_itself(server: MetricsServer) -> None:
    reply = exchange(server, b"POST /api/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
                     b"123456789GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(reply) == 413 and reply.endswith(b"audited True")  # and closed
    reply = exchange(server, b"POST /api/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
                     b"Connection: close\r\n\r\n12345678")
    assert status_of(reply) == 200 and reply.endswith(b"audited False")


def test_a_large_body_is_sent_whole_before_the_connection_closes() -> None:
    """A response is flushed before its connection closes: when the last write returns
    the transport may still hold the body's tail (a drain returns below the high-water
    mark, not at empty), which an abort threw away. A client reading slower than the
    server writes (eight taking one large body together, in the benchmark) got a body
    shorter than its Content-Length."""
    body = [bytes([65 + i % 26]) * 65789 for i in range(32)]  # 2 MiB, odd-sized chunks
    whole = b"".join(body)
    srv = MetricsServer("127.0.0.1:0", families, limits=Limits(write_timeout=20.0))
    srv.add_route("/big", lambda _r: Response(200, body, "application/octet-stream"))
    # accepted sockets inherit the listener's send buffer: a small one keeps the tail
    # of the body in the server's own buffer, not the kernel's, when the writes end
    assert srv._sock is not None
    srv._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    srv.start()
    try:
        for _ in range(3):
            sock = socket.create_connection(srv.address, timeout=20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:  # a slow reader: the server's buffers stay full to the end
                time.sleep(0.001)
                piece = sock.recv(16384)
                if not piece:
                    break
                data += piece
            sock.close()
            head, _, got = data.partition(b"\r\n\r\n")
            assert f"Content-Length: {len(whole)}".encode() in head
            assert len(got) == len(whole)
            assert got == whole
    finally:
        srv.stop()
