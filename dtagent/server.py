"""HTTP endpoint: /metrics (text format 0.0.4, or OpenMetrics when the scraper's Accept
header asks for it; gzip on request), /healthz, 404 otherwise.

Connections are served by threads, at most ``max_connections`` at once (the rest get a
503 straight away), and a client that connects and sends nothing is dropped after
``request_timeout`` seconds, so a slow or hostile client cannot pin the agent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from dtagent.exposition import (
    CONTENT_TYPE,
    OPENMETRICS_CONTENT_TYPE,
    render_chunks,
    render_openmetrics_chunks,
    wants_openmetrics,
)
from dtagent.metrics import MetricFamily

log = structlog.get_logger("dtagent.server")

LANDING = b"""<html><head><title>dtagent</title></head><body>
<h1>dtagent</h1><p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>
</body></html>
"""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); raises ValueError naming the problem."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, like [::1]:9718")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        addr: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        collect: Callable[[], list[MetricFamily]],
        max_connections: int,
        request_timeout: float,
    ) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.collect = collect
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.rejected = 0
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.rejected += 1
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "dtagent"

    def setup(self) -> None:
        super().setup()
        # The socket timeout drops a client that connects and sends nothing.
        self.connection.settimeout(self.server.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", client=self.client_address[0], message=format % args)

    def _send(
        self,
        code: int,
        body: bytes | list[bytes],
        ctype: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.writelines(chunks)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, LANDING, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self._send(
            405, b"method not allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"}
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _metrics(self) -> None:
        started = time.perf_counter()
        try:
            # One chunk per family, written as they are: a large host's exposition is
            # tens of megabytes, and joining it would hold it twice.
            # OpenMetrics (with _created start times) only when the scraper asks for it;
            # the 0.0.4 text format stays the default.
            openmetrics = wants_openmetrics(self.headers.get("Accept", ""))
            render = render_openmetrics_chunks if openmetrics else render_chunks
            chunks = render(self.server.collect())
        except Exception as exc:
            log.error("collection failed", error=str(exc), exc_info=exc)
            self._send(500, b"collection failed; see the agent's log\n", "text/plain")
            return
        headers: dict[str, str] = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            chunks = gzip_chunks(chunks)
            headers["Content-Encoding"] = "gzip"
        self._send(200, chunks, OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE, headers)
        log.debug(
            "scrape served",
            client=self.client_address[0],
            bytes=sum(len(c) for c in chunks),
            duration_s=round(time.perf_counter() - started, 4),
        )


def gzip_chunks(chunks: list[bytes], level: int = 1) -> list[bytes]:
    """A gzip member (RFC 1952) of ``chunks``, compressed one chunk at a time.

    ``chunks`` is consumed: each is released as soon as it is compressed, so the
    uncompressed text and its compressed copy are never both held whole.
    """
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    out: list[bytes] = []
    chunks.reverse()
    while chunks:
        piece = packer.compress(chunks.pop())
        if piece:
            out.append(piece)
    out.append(packer.flush())
    return out


class MetricsServer:
    """The agent's HTTP server, run in a background thread or in the foreground."""

    def __init__(
        self,
        listen: str,
        collect: Callable[[], list[MetricFamily]],
        *,
        max_connections: int = 8,
        request_timeout: float = 10.0,
    ) -> None:
        host, port = parse_listen(listen)
        self._httpd = _Server((host, port), _Handler, collect, max_connections, request_timeout)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="dtagent-http", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        """Release the socket of a server that was never started."""
        self._httpd.server_close()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
