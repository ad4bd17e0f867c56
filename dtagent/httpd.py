"""A small, strict, event-driven HTTP/1.1 server on asyncio streams.

The agent's listener serves /metrics to a few Prometheus servers and, when enabled,
the control API (``/api/v1/...``). Both are machine clients, so this server speaks a
narrow, strict subset of HTTP/1.1 (RFC 9110/9112) and refuses the rest with a proper
status line instead of guessing:

* every connection is one coroutine, so a slow client costs a socket, never a thread
  or a slot; connections beyond ``Limits.max_connections`` are closed at once;
* the whole request head (and body) must arrive within ``header_timeout`` from its
  first byte, however slowly it trickles; an idle keep-alive connection is closed after
  ``idle_timeout``; every response must be written within ``write_timeout`` or the
  connection is aborted (a stalled reader holds only a reference to a shared body);
* request line, header line, header count, head size and body size are bounded;
  HTTP/0.9 (no version), obs-fold, a missing or repeated Host, Transfer-Encoding and
  conflicting Content-Lengths are refused (no request smuggling, no guessing);
* a body on GET/HEAD is drained (up to the route's body limit) so it cannot be read
  as the next request;
* TLS is done per connection with ``StreamWriter.start_tls`` and whatever
  :class:`ssl.SSLContext` the ``tls`` callable returns at that moment, so a re-read
  web-config (new certificate, new client-auth policy) applies to the next connection.

Routes are registered with :meth:`HttpServer.add_route`; a handler gets a
:class:`Request` and returns a :class:`Response`. See docs/architecture.md
("The HTTP front") for how the control API mounts its routes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import inspect
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

import structlog

from dtagent import __version__

log = structlog.get_logger("dtagent.http")

SERVER_HEADER = f"dtagent/{__version__}"
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/([0-9])\.([0-9])$")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET_BAD = re.compile(rb"[^\x21-\x7e]")
WRITE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Limits:
    """Deadlines (seconds) and sizes (bytes) that bound what one client can cost."""

    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    write_timeout: float = 30.0
    max_request_line: int = 8192
    max_header_line: int = 8192
    max_headers: int = 100
    max_head_bytes: int = 65536
    max_body: int = 65536
    max_connections: int = 1024
    backlog: int = 1024


@dataclass(frozen=True)
class ClientCertificate:
    """The verified client certificate of a TLS connection (from ``getpeercert()``).

    ``subject`` is written like ``CN=prometheus,O=ops`` (RFC 4514 order: most specific
    first); ``sans`` lists the subjectAltName values (DNS names, IP addresses in
    canonical form, e-mail addresses, URIs).
    """

    subject: str
    sans: tuple[str, ...]
    common_name: str | None


@dataclass
class Request:
    """One parsed request. Header names are lower case; ``body`` is read whole."""

    method: str
    target: str
    path: str
    query: list[tuple[str, str]]
    version: str
    headers: dict[str, str]
    body: bytes
    client: str
    tls: bool
    client_certificate: ClientCertificate | None
    #: set by the server's authenticator (e.g. the basic-auth user), for logs and audit
    user: str | None = None
    #: the body was over the route's ``max_body`` and was not read (routes that asked
    #: for ``oversized_to_handler``, to refuse it themselves: e.g. to audit it)
    oversized: bool = False

    def query_values(self, name: str) -> list[str]:
        """All values of one query parameter, in order (``collect[]`` repeats)."""
        return [v for k, v in self.query if k == name]


Body = bytes | Sequence[bytes]


@dataclass
class Response:
    """A response: status, headers (Content-Length and Server are added) and body.

    ``body`` may be a list of chunks (a large exposition is never joined); the server
    writes them in slices within the write deadline.
    """

    status: int = 200
    body: Body = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
        return cls(status, text.encode("utf-8"), headers=dict(headers or {}))

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
        """A JSON body (sorted keys, one line) with its content type."""
        body = (json.dumps(value, sort_keys=True) + "\n").encode("utf-8")
        return cls(status, body, "application/json", dict(headers or {}))

    @property
    def length(self) -> int:
        if isinstance(self.body, bytes | bytearray | memoryview):
            return len(self.body)
        return sum(len(c) for c in self.body)


Handler = Callable[[Request], Awaitable[Response] | Response]


@dataclass(frozen=True)
class Route:
    """A path (exact) or a prefix (ending in ``/``) with its handler.

    ``web_auth``: whether the web-config's basic auth guards it (the metrics routes);
    a route with its own authentication (the control API's bearer tokens) says False.
    ``max_body``: the largest body the route accepts (0: none; a body on GET/HEAD is
    drained up to the server's ``Limits.max_body``).
    """

    path: str
    handler: Handler
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    prefix: bool = False
    web_auth: bool = True
    max_body: int = 0
    oversized_to_handler: bool = False


class HttpError(Exception):
    """A request refused before it reached a handler; ``close`` ends the connection."""

    def __init__(self, status: int, message: str, *, close: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


Authenticator = Callable[[Request], Awaitable[Response | None]]
"""Returns None to let the request through, or the refusal (401) to send instead."""


@dataclass
class HttpCounters:
    """What the front has seen, exported as ``dtagent_http_*`` metrics."""

    requests: dict[int, int] = field(default_factory=dict)
    auth_failures: int = 0
    timeouts: dict[str, int] = field(default_factory=dict)
    refused_connections: int = 0
    tls_failures: int = 0
    open_connections: int = 0

    def count(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def timeout(self, phase: str) -> None:
        self.timeouts[phase] = self.timeouts.get(phase, 0) + 1


class OncePerClient:
    """Logs a kind of event at most once per client per ``interval`` (default a minute).

    The count of events not logged in between is carried on the next line, so a flood
    of bad requests costs one log line a minute per client, never one per request.
    """

    def __init__(self, interval: float = 60.0, max_clients: int = 4096) -> None:
        self.interval = interval
        self.max_clients = max_clients
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def log(self, kind: str, client: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        key = (kind, client)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return
        if len(self._last) >= self.max_clients:
            cutoff = now - self.interval
            self._last = {k: v for k, v in self._last.items() if v[0] >= cutoff}
            if len(self._last) >= self.max_clients:
                self._last.clear()
        suppressed = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        log.warning(message, client=client, kind=kind, suppressed_since_last=suppressed, **fields)


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _client_certificate(writer: asyncio.StreamWriter) -> ClientCertificate | None:
    peer = writer.get_extra_info("peercert")
    if not peer:
        return None
    parts: list[str] = []
    common_name: str | None = None
    for rdn in reversed(peer.get("subject", ())):
        for key, value in rdn:
            short = _RDN_NAMES.get(key, key)
            parts.append(f"{short}={value}")
            if key == "commonName" and common_name is None:
                common_name = value
    sans: list[str] = []
    for kind, value in peer.get("subjectAltName", ()):
        sans.append(canonical_san(value) if kind == "IP Address" else value)
    return ClientCertificate(",".join(parts), tuple(sans), common_name)


def canonical_san(value: str) -> str:
    """An IP SAN in the form Go's ``net.IP.String`` writes (what web-configs list)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
    "domainComponent": "DC",
}


def http_date(now: float | None = None) -> str:
    return email.utils.formatdate(now, usegmt=True)


class HttpServer:
    """Serves registered routes on one listening socket, in the running event loop.

    ``tls`` returns the SSL context for the next connection (None: plain HTTP);
    ``authenticate`` guards routes with ``web_auth``; ``extra_headers`` returns the
    headers every response carries (web-config ``http_server_config.headers``).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        tls: Callable[[], ssl.SSLContext | None] = lambda: None,
        authenticate: Authenticator | None = None,
        extra_headers: Callable[[], dict[str, str]] = dict,
        on_connection: Callable[[], None] | None = None,
        allowed_sans: Callable[[], frozenset[str] | None] = lambda: None,
    ) -> None:
        self.limits = limits or Limits()
        self.routes: list[Route] = []
        self.counters = HttpCounters()
        self.events = OncePerClient()
        self._tls = tls
        self._authenticate = authenticate
        self._extra_headers = extra_headers
        self._on_connection = on_connection
        self._allowed_sans = allowed_sans
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # -- routes ---------------------------------------------------------------------

    def add_route(
        self,
        path: str,
        handler: Handler,
        *,
        methods: Iterable[str] = ("GET", "HEAD"),
        web_auth: bool = True,
        max_body: int = 0,
        oversized_to_handler: bool = False,
    ) -> Route:
        """Serve ``path`` (exact), or everything under it when it ends in ``/``.

        The handler may be a coroutine function or a plain function (run in a worker
        thread, so it may block). The longest matching route wins. A body over
        ``max_body`` gets 413 before the handler runs, unless ``oversized_to_handler``:
        then the handler sees ``request.oversized`` (body unread, connection closed
        after the response).
        """
        if not path.startswith("/"):
            raise ValueError(f"route {path!r} must start with /")
        route = Route(
            path,
            handler,
            frozenset(m.upper() for m in methods),
            prefix=path.endswith("/") and path != "/",
            web_auth=web_auth,
            max_body=max_body,
            oversized_to_handler=oversized_to_handler,
        )
        self.routes.append(route)
        self.routes.sort(key=lambda r: len(r.path), reverse=True)
        return route

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.path == path or (route.prefix and path.startswith(route.path)):
                return route
        return None

    # -- lifecycle ------------------------------------------------------------------

    def bind(self, host: str, port: int) -> socket.socket:
        """The listening socket (bound now, so a busy address fails at once)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server(
            (host, port), family=family, backlog=self.limits.backlog, reuse_port=False
        )

    async def start(self, sock: socket.socket) -> tuple[str, int]:
        """Serve on a socket from :meth:`bind`; returns the bound address."""
        self._server = await asyncio.start_server(
            self._connection,
            sock=sock,
            backlog=self.limits.backlog,
            limit=max(self.limits.max_request_line, self.limits.max_header_line) + 2,
        )
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- one connection ------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        if len(self._connections) >= self.limits.max_connections:
            self.counters.refused_connections += 1
            self.counters.count(503)
            self.events.log(
                "refused", client, "connection refused: too many open connections",
                limit=self.limits.max_connections,
            )
            if self._tls() is None:
                with contextlib.suppress(Exception):
                    writer.write(self._head(503, {"Content-Length": "0"}, close=True))
            writer.transport.abort()
            return
        assert task is not None
        self._connections.add(task)
        self.counters.open_connections = len(self._connections)
        done = False
        try:
            if self._on_connection is not None:
                self._on_connection()
            done = await self._serve(reader, writer, client)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception as exc:  # never a traceback on stderr: one JSON line
            log.error("connection failed", client=client, error=f"{type(exc).__name__}: {exc}")
        finally:
            closed = False
            try:
                closed = done and await self._close(writer)
            finally:
                self._connections.discard(task)
                self.counters.open_connections = len(self._connections)
                if not closed:
                    writer.transport.abort()

    async def _close(self, writer: asyncio.StreamWriter) -> bool:
        """Close a connection whose exchange ended well: what the transport still
        buffers (up to its high-water mark, 64 KiB: a drain returns below it, not at
        empty) is sent first, within the write deadline. Aborting at once threw that
        tail of the last response away: a client closing after a large body, or eight
        taking one body together, read a body shorter than its Content-Length."""
        writer.close()
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            return False  # not taken in time: aborted
        return True

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> bool:
        """Serve one connection's requests; True when it ended well and what is still
        buffered for it is to be sent before it is closed (False: abort it)."""
        limits = self.limits
        context = self._tls()
        cert: ClientCertificate | None = None
        if context is not None:
            try:
                await writer.start_tls(context, ssl_handshake_timeout=limits.header_timeout)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                self.counters.tls_failures += 1
                self.events.log("tls", client, "TLS handshake failed", error=str(exc) or "timeout")
                return False
            cert = _client_certificate(writer)
            allowed = self._allowed_sans()
            if allowed is not None and (cert is None or not allowed.intersection(cert.sans)):
                self.counters.tls_failures += 1
                self.events.log(
                    "tls", client, "client certificate has no allowed SAN",
                    sans=list(cert.sans) if cert else [],
                )
                return False
        while True:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    first = await reader.read(1)
            except TimeoutError:
                return True  # idle keep-alive connection: close quietly
            if not first:
                return True
            started = time.monotonic()
            try:
                async with asyncio.timeout(limits.header_timeout):
                    request, close = await self._read_request(
                        first, reader, writer, client, cert, context is not None
                    )
            except HttpError as exc:
                self.events.log(
                    "bad-request", client, "bad request refused",
                    status=exc.status, error=exc.message,
                )
                await self._send_error(writer, client, exc.status, exc.message, close=True)
                return True
            except TimeoutError:
                self.counters.timeout("header")
                self.events.log(
                    "header-timeout", client, "request head not received in time",
                    timeout_s=limits.header_timeout,
                )
                await self._send_error(writer, client, 408, "request timeout", close=True)
                return True
            response = await self._respond(request)
            if response.status >= 400 and response.status != 401:
                close = close or response.status in (400, 408, 413, 431)
            ok = await self._write(writer, client, request, response, close)
            log.debug(
                "request",
                client=client,
                method=request.method,
                path=request.path,
                status=response.status,
                duration_s=round(time.monotonic() - started, 4),
            )
            if close or not ok:
                return ok  # a response not taken in time is not waited for again

    async def _read_request(
        self,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        cert: ClientCertificate | None,
        tls: bool,
    ) -> tuple[Request, bool]:
        limits = self.limits
        line = await self._readline(reader, limits.max_request_line, 414, "request line", first)
        if line == b"\r\n":
            # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request
            line = await self._readline(reader, limits.max_request_line, 414, "request line")
        method, target, version = _parse_request_line(line)
        headers: dict[str, str] = {}
        count = 0
        head_bytes = len(line)
        seen_host = 0
        while True:
            raw = await self._readline(reader, limits.max_header_line, 431, "header line")
            head_bytes += len(raw)
            if head_bytes > limits.max_head_bytes:
                raise HttpError(431, f"request head larger than {limits.max_head_bytes} bytes")
            if raw == b"\r\n":
                break
            count += 1
            if count > limits.max_headers:
                raise HttpError(431, f"more than {limits.max_headers} header fields")
            name, value = _parse_header(raw)
            if name == "host":
                seen_host += 1
            if name in headers:
                if name in ("host", "content-length", "authorization"):
                    raise HttpError(400, f"repeated {name} header")
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
        if version == "HTTP/1.1" and seen_host != 1:
            raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
        if "transfer-encoding" in headers:
            raise HttpError(
                411 if "content-length" not in headers else 400,
                "Transfer-Encoding is not accepted; send Content-Length",
            )
        path_part, _, query_part = target.partition("?")
        path = unquote(path_part)
        route = self.match(path)
        length = 0
        if "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit() or len(text) > 18:
                raise HttpError(400, "Content-Length is not a number")
            length = int(text)
        allowed = route.max_body if route is not None and method not in ("GET", "HEAD") else 0
        drain = method in ("GET", "HEAD") or route is None or method not in route.methods
        bound = max(allowed, limits.max_body if drain else 0)
        oversized = False
        if length > bound:
            if drain or route is None or not route.oversized_to_handler:
                raise HttpError(413, f"request body larger than {bound} bytes")
            oversized, length = True, 0  # the handler refuses it; never read

        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise HttpError(417, "only Expect: 100-continue is understood")
            if length and version == "HTTP/1.1":  # RFC 9110 10.1.1: say go on
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length) if length else b""
        if drain:
            body = b""
        connection = headers.get("connection", "").lower()
        tokens = {t.strip() for t in connection.split(",")}
        close = oversized or "close" in tokens or (
            version == "HTTP/1.0" and "keep-alive" not in tokens
        )
        request = Request(
            method=method,
            target=target,
            path=path,
            query=parse_qsl(query_part, keep_blank_values=True),
            version=version,
            headers=headers,
            body=body,
            client=client,
            tls=tls,
            client_certificate=cert,
            oversized=oversized,
        )
        return request, close

    @staticmethod
    async def _readline(
        reader: asyncio.StreamReader, limit: int, status: int, what: str, prefix: bytes = b""
    ) -> bytes:
        try:
            line = prefix if prefix == b"\n" else prefix + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(status, f"{what} longer than {limit} bytes") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("client closed mid-request") from None
        if len(line) > limit + 2:
            raise HttpError(status, f"{what} longer than {limit} bytes")
        if not line.endswith(b"\r\n"):
            raise HttpError(400, f"{what} does not end in CRLF")
        return line

    async def _respond(self, request: Request) -> Response:
        route = self.match(request.path)
        if route is None:
            return Response.text(404, "not found\n")
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            return Response.text(405, "method not allowed\n", {"Allow": allow})
        if route.web_auth and self._authenticate is not None:
            refusal = await self._authenticate(request)
            if refusal is not None:
                return refusal
        try:
            result = route.handler(request)
            if inspect.isawaitable(result):
                result = await result
            elif not isinstance(result, Response):
                raise TypeError("handler returned no Response")
            if not isinstance(result, Response):
                raise TypeError("handler returned no Response")
            return result
        except Exception as exc:
            log.error(
                "request handler failed",
                path=request.path,
                client=request.client,
                error=f"{type(exc).__name__}: {exc}",
            )
            return Response.text(500, "internal error; see the agent's log\n")

    def _head(self, status: int, headers: dict[str, str], *, close: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason(status)}", f"Server: {SERVER_HEADER}",
                 f"Date: {http_date()}"]
        extra = self._extra_headers()
        merged = {**extra, **headers}
        for key, value in merged.items():
            lines.append(f"{key}: {value}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_error(
        self, writer: asyncio.StreamWriter, client: str, status: int, text: str, *, close: bool
    ) -> None:
        body = f"{text}\n".encode()
        head = self._head(
            status,
            {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))},
            close=close,
        )
        self.counters.count(status)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.limits.write_timeout):
                writer.write(head + body)
                await writer.drain()

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        client: str,
        request: Request,
        response: Response,
        close: bool,
    ) -> bool:
        headers = {"Content-Type": response.content_type, **response.headers}
        headers["Content-Length"] = str(response.length)
        self.counters.count(response.status)
        head = self._head(response.status, headers, close=close)
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                writer.write(head)
                if request.method != "HEAD":
                    body = response.body
                    chunks = [body] if isinstance(body, bytes | bytearray | memoryview) else body
                    for chunk in chunks:
                        view = memoryview(chunk)
                        for start in range(0, len(view), WRITE_CHUNK):
                            writer.write(view[start : start + WRITE_CHUNK])
                            await writer.drain()
                await writer.drain()
        except TimeoutError:
            self.counters.timeout("write")
            self.events.log(
                "write-timeout", client, "response not taken in time; connection aborted",
                timeout_s=self.limits.write_timeout, path=request.path,
            )
            return False
        except (ConnectionError, OSError):
            return False
        return True


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line[:-2].split(b" ")
    if len(parts) != 3:
        if len(parts) == 2 and _TOKEN.match(parts[0]):
            raise HttpError(400, "HTTP/0.9 requests are not served; send HTTP/1.1")
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, "malformed method")
    match = _VERSION.match(version)
    if match is None:
        raise HttpError(400, "malformed HTTP version")
    if match.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not target or _TARGET_BAD.search(target):
        raise HttpError(400, "malformed request target")
    text = target.decode("ascii")
    if text.startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
        rest = text.split("://", 1)[1]
        slash = rest.find("/")
        text = rest[slash:] if slash >= 0 else "/"
    elif not text.startswith("/"):
        raise HttpError(400, "request target must be a path")
    return method.decode("ascii"), text, version.decode("ascii")


def _parse_header(raw: bytes) -> tuple[str, str]:
    line = raw[:-2]
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete header line folding")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.match(name):
        raise HttpError(400, "malformed header field")
    value = value.strip(b" \t")
    if _CTL.search(value):
        raise HttpError(400, f"control character in header {name.decode('ascii')}")
    return name.decode("ascii").lower(), value.decode("latin-1")
