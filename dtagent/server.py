"""The agent's HTTP front: /metrics, /healthz and a landing page on :mod:`dtagent.httpd`.

/metrics is text format 0.0.4, or OpenMetrics when the scraper's Accept header asks for
it (:func:`dtagent.exposition.wants_openmetrics`).

* **One collection and one body per moment.** Scrapes that arrive within
  ``reuse_within`` (1 s) of a collection's start, while it runs or after, wait for it
  and get the same bytes; the gzip body and the plain one are each made once per
  moment and shared by every scraper, so memory does not grow with the number of
  scrapers, and no scrape gets data collected more than 1 s before it asked
  (:class:`SharedBodies` has the rule and why).
* **collect[]** (node_exporter's convention): ``/metrics?collect[]=zone_cpu`` runs only
  the named collectors (and DTrace scripts); an unknown name gets 400 with the list.
* **Accept-Encoding** is parsed with q-values (RFC 9110 12.5.3) and every /metrics
  response says ``Vary: Accept, Accept-Encoding`` (the format is negotiated too).
* TLS, basic auth and extra headers come from an exporter-toolkit web-config
  (:mod:`dtagent.webconfig`), re-read when it changes.

The event loop runs in one background thread; collections and renders run in a small
worker pool (at most ``max_renders`` at once) so the loop keeps answering while a large
host is rendered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import structlog

from dtagent.exposition import (
    CONTENT_TYPE,
    OPENMETRICS_CONTENT_TYPE,
    Renderer,
    iter_chunks,
    iter_openmetrics_chunks,
    wants_openmetrics,
)
from dtagent.httpd import Handler, HttpServer, Limits, Request, Response, Route
from dtagent.listen import parse_listen
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.webconfig import WebFront

log = structlog.get_logger("dtagent.server")

LANDING = b"""<html><head><title>dtagent</title></head><body>
<h1>dtagent</h1><p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>
</body></html>
"""

SRC = "the agent's HTTP front"
REQUESTS = MetricSpec(
    "dtagent_http_requests_total",
    "counter",
    "HTTP responses sent, by status code (503: connections refused over the limit).",
    ("code",),
    "",
    SRC,
)
AUTH_FAILURES = MetricSpec(
    "dtagent_http_auth_failures_total",
    "counter",
    "Requests refused with 401 (missing or wrong basic-auth credentials).",
    (),
    "",
    SRC,
)
TLS = MetricSpec(
    "dtagent_http_tls",
    "gauge",
    "1 if the listener serves TLS (web-config tls_server_config), 0 if plain HTTP.",
    (),
    "",
    SRC,
)
TIMEOUTS = MetricSpec(
    "dtagent_http_timeouts_total",
    "counter",
    "Connections closed at a deadline: header (request head not in time) or write "
    "(response not taken in time).",
    ("phase",),
    "",
    SRC,
)
TLS_FAILURES = MetricSpec(
    "dtagent_http_tls_failures_total",
    "counter",
    "TLS handshakes that failed or client certificates refused (client_allowed_sans).",
    (),
    "",
    SRC,
)
CONNECTIONS = MetricSpec(
    "dtagent_http_open_connections",
    "gauge",
    "HTTP connections open now.",
    (),
    "",
    SRC,
)
BODIES = MetricSpec(
    "dtagent_http_bodies_rendered_total",
    "counter",
    "Scrape bodies rendered, by encoding; concurrent scrapers share one body per moment.",
    ("encoding",),
    "",
    SRC,
)
WEB_CONFIG_RELOADS = MetricSpec(
    "dtagent_http_web_config_reloads_total",
    "counter",
    "Re-reads of the web-config file after it changed, by result (failure: the old "
    "settings stay in force).",
    ("result",),
    "",
    SRC,
)
SPECS = (
    REQUESTS,
    AUTH_FAILURES,
    TLS,
    TIMEOUTS,
    TLS_FAILURES,
    CONNECTIONS,
    BODIES,
    WEB_CONFIG_RELOADS,
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; a name or a wildcard address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def accepts_gzip(header: str | None) -> bool:
    """Whether to send gzip for this ``Accept-Encoding`` (RFC 9110 12.5.3).

    Codings are case-insensitive; ``q=0`` means "not acceptable"; ``*`` covers codings
    not listed. gzip is sent when its weight is above 0 and not below identity's (it
    is the smaller body). A malformed element is ignored; no header means identity.
    """
    if not header:
        return False
    weights: dict[str, float] = {}
    for element in header.split(","):
        name, *params = (p.strip() for p in element.split(";"))
        name = name.lower()
        if not name:
            continue
        weight = 1.0
        valid = True
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                weight_value = _qvalue(value.strip())
                if weight_value is None:
                    valid = False
                else:
                    weight = weight_value
        if valid:
            weights[name] = weight
    star = weights.get("*")
    gzip_q = weights.get("gzip", weights.get("x-gzip", star if star is not None else 0.0))
    identity_q = weights.get("identity", star if star is not None else 1.0)
    return gzip_q > 0 and gzip_q >= identity_q


def _qvalue(text: str) -> float | None:
    """A qvalue: 0 to 1 with at most three decimals (RFC 9110 12.4.2), else None."""
    if not text or len(text) > 5 or text[0] not in "01":
        return None
    if len(text) > 1 and (text[1] != "." or (not text[2:].isdigit() and text[2:] != "")):
        return None
    value = float(text)
    return value if value <= 1 else None


def gzip_chunks(chunks: Iterable[bytes], level: int = 1) -> list[bytes]:
    """A gzip member (RFC 1952) of ``chunks``, compressed one chunk at a time.

    A list is consumed (each chunk released as soon as it is compressed) and an
    iterator is drawn one chunk at a time, so the uncompressed text and its compressed
    copy are never both held whole.
    """
    if isinstance(chunks, list):
        chunks.reverse()
        source: Iterable[bytes] = _draining(chunks)
    else:
        source = chunks
    out: list[bytes] = []
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    for chunk in source:
        piece = packer.compress(chunk)
        if piece:
            out.append(piece)
    out.append(packer.flush())
    return out


def _draining(reversed_chunks: list[bytes]) -> Iterator[bytes]:
    while reversed_chunks:
        yield reversed_chunks.pop()


def gzip_of(chunks: Iterable[bytes], level: int = 1) -> list[bytes]:
    """gzip of ``chunks`` without consuming them (the plain body stays shared)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [piece for piece in (packer.compress(c) for c in chunks) if piece]
    out.append(packer.flush())
    return out


def gunzip_of(chunks: Iterable[bytes]) -> list[bytes]:
    """The plain text of a gzip body made by :func:`gzip_chunks`, in pieces."""
    unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = [piece for piece in (unpacker.decompress(c) for c in chunks) if piece]
    tail = unpacker.flush()
    if tail:
        out.append(tail)
    return out


BodyKey = tuple[frozenset[str] | None, bool]
"""What a body depends on: the collect[] filter (None: all) and OpenMetrics or not."""

Produce = Callable[[BodyKey], Iterable[bytes]]
"""Collects and renders one body: its chunks, made as they are drawn."""


@dataclass
class _Moment:
    started: float  # when its collection was asked for (monotonic)
    bodies: dict[bool, asyncio.Future[list[bytes]]] = field(default_factory=dict)  # gzip?
    failed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # kept: not collected


@dataclass
class SharedBodies:
    """One body per (collector filter, moment), shared by every concurrent scraper.

    The rule: a moment starts when a scrape finds no moment for its key that started
    less than ``reuse_within`` seconds ago; it collects once and renders once. Every
    scrape arriving within ``reuse_within`` of that start, while the collection runs
    or after, gets the same bytes. So no scrape gets data collected more than
    ``reuse_within`` before it asked (1 s by default). Prometheus expects each scrape
    to read the host afresh ("metrics should only be pulled from the application when
    Prometheus scrapes them", prometheus/docs content/docs/instrumenting/
    writing_exporters.md, Scheduling), as node_exporter and client_python do on every
    request; a window far below any scrape interval keeps that, and still gives the
    two servers of an HA pair, or several scrapers arriving together, one body.

    Each encoding is made once per moment. The first scraper's decides how: a gzip
    scrape (what Prometheus asks for) compresses the families as they are rendered and
    keeps only the compressed body; a plain scrape keeps the text. A scraper of the
    other encoding in the same moment gets it made from the one kept (gzip of the text,
    or the text inflated), never by collecting again.
    """

    produce: Produce
    executor: ThreadPoolExecutor
    reuse_within: float = 1.0
    rendered: dict[str, int] = field(default_factory=lambda: {"identity": 0, "gzip": 0})
    clock: Callable[[], float] = time.monotonic
    _moments: dict[BodyKey, _Moment] = field(default_factory=dict)

    async def body(self, key: BodyKey, gzip: bool) -> list[bytes]:
        loop = asyncio.get_running_loop()
        now = self.clock()
        moment = self._moments.get(key)
        if moment is None or self._stale(moment, now):
            self._forget_stale(now)
            moment = _Moment(now)
            self._moments[key] = moment
            future: asyncio.Future[list[bytes]] = loop.create_future()
            moment.bodies[gzip] = future
            moment.tasks.append(loop.create_task(self._fill(moment, future, key, gzip)))
        if gzip not in moment.bodies:
            other = await asyncio.shield(moment.bodies[not gzip])
            if gzip not in moment.bodies:  # a scraper of this encoding may have begun it
                future = loop.create_future()
                moment.bodies[gzip] = future
                moment.tasks.append(loop.create_task(self._convert(future, other, gzip)))
        return await asyncio.shield(moment.bodies[gzip])

    def _stale(self, moment: _Moment, now: float) -> bool:
        return moment.failed or now - moment.started >= self.reuse_within

    def _forget_stale(self, now: float) -> None:
        for key in [k for k, m in self._moments.items() if self._stale(m, now)]:
            del self._moments[key]

    def _make(self, key: BodyKey, gzip: bool) -> list[bytes]:
        chunks = self.produce(key)
        return gzip_chunks(chunks) if gzip else list(chunks)

    async def _fill(
        self, moment: _Moment, future: asyncio.Future[list[bytes]], key: BodyKey, gzip: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.executor, self._make, key, gzip)
        except Exception as exc:
            moment.failed = True
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            return
        self.rendered["gzip" if gzip else "identity"] += 1
        future.set_result(body)
        self._forget_when_stale(moment)

    def _forget_when_stale(self, moment: _Moment) -> None:
        """Let the moment's bodies go once no scrape can share them any more, rather
        than at the next scrape: at 1,000 zones the compressed body is 5 MiB, kept for
        nothing through the scrape interval (a scraper still writing it holds its own
        reference). The allocator keeps the space for what comes next (the DTrace
        records arriving, the next scrape); the RSS does not fall by it."""
        left = self.reuse_within - (self.clock() - moment.started)
        asyncio.get_running_loop().call_later(
            max(0.0, left), lambda: self._forget_stale(self.clock())
        )

    async def _convert(
        self, future: asyncio.Future[list[bytes]], other: list[bytes], gzip: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(
                self.executor, gzip_of if gzip else gunzip_of, other
            )
        except Exception as exc:
            future.set_exception(exc)
            future.exception()
            return
        self.rendered["gzip" if gzip else "identity"] += 1
        future.set_result(body)


class UnknownCollectors(ValueError):
    """collect[] named something that is not a collector or a DTrace script."""


CollectFiltered = Callable[[frozenset[str]], list[MetricFamily]]


class MetricsServer:
    """The agent's HTTP server, with its event loop in a background thread."""

    def __init__(
        self,
        listen: str,
        collect: Callable[[], Iterable[MetricFamily]],
        *,
        limits: Limits | None = None,
        web_config: str | None = None,
        max_renders: int = 2,
        reuse_within: float = 1.0,
        collect_only: CollectFiltered | None = None,
        collector_names: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.listen = listen
        self._host, self._port = parse_listen(listen)
        self._collect = collect
        self._collect_only = collect_only
        self._collector_names = collector_names
        self.front = WebFront(web_config)  # raises WebConfigError on a bad file
        self.http = HttpServer(
            limits,
            tls=self.front.ssl_context,
            authenticate=self.front.authenticate,
            extra_headers=self.front.headers,
            on_connection=self.front.maybe_reload,
            allowed_sans=self.front.allowed_sans,
        )
        self.front.counters = self.http.counters
        self.front.events = self.http.events
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, max_renders), thread_name_prefix="dtagent-render"
        )
        self.bodies = SharedBodies(self._produce, self._executor, reuse_within)
        self._renderer = Renderer()
        self.http.add_route("/metrics", self._metrics)
        self.http.add_route("/healthz", lambda _r: Response.text(200, "ok\n"))
        self.http.add_route(
            "/", lambda _r: Response(200, LANDING, "text/html; charset=utf-8")
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # bound now: a busy address is an OSError here, before anything starts
        self._sock: socket.socket | None = self.http.bind(self._host, self._port)
        bound = self._sock.getsockname()
        self._address: tuple[str, int] | None = (str(bound[0]), int(bound[1]))
        self._stopped = threading.Event()

    def use_agent(self, agent: Any) -> None:
        """Serve this agent: full collections, collect[] filters and the names they take."""
        self._collect = agent.stream
        self._collect_only = agent.collect_only
        self._collector_names = agent.names

    # -- for the control API (issue: control hooks) and other mounts ---------------

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
        """Mount ``handler`` on ``path`` (a prefix when it ends in ``/``) before start().

        See :meth:`dtagent.httpd.HttpServer.add_route`. ``web_auth=False`` for routes
        that authenticate themselves (bearer tokens); the TLS client certificate, when
        the web-config asks for one, is on ``request.client_certificate``.
        """
        return self.http.add_route(
            path,
            handler,
            methods=methods,
            web_auth=web_auth,
            max_body=max_body,
            oversized_to_handler=oversized_to_handler,
        )

    @property
    def tls(self) -> bool:
        """Whether the listener serves TLS (the web-config has a tls_server_config)."""
        return self.front.ssl_context() is not None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("server not started")
        return self._address

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{shown}:{port}/metrics"

    def start(self) -> None:
        """Serve in a background thread (the socket was bound by the constructor)."""
        sock = self._sock
        if sock is None:
            raise RuntimeError("server closed")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_loop_exception)
        self._loop = loop
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._address = loop.run_until_complete(self.http.start(sock))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.http.stop())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="dtagent-http", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        if not self.tls and not is_loopback(self.address[0]):
            log.warning(
                "serving plain HTTP on a non-loopback address: anyone who can reach it "
                "reads the metrics; set agent.web_config with tls_server_config",
                listen=self.listen,
            )

    def serve_forever(self) -> None:
        self.start()
        self._stopped.wait()

    def close(self) -> None:
        """Release the socket of a server that was never started (a refused reload)."""
        if self._thread is None and self._sock is not None:
            self._sock.close()
            self._sock = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def reload_web_config(self) -> bool:
        """Re-read the web-config now; False when it is invalid (the old one is kept)."""
        return self.front.reload()

    def request_reload(self) -> None:
        """Re-read the web-config soon, in the server's thread: safe in a signal handler."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.front.reload)

    # -- /metrics ----------------------------------------------------------------------

    def names(self) -> list[str]:
        """What collect[] accepts: the running collectors and DTrace scripts."""
        return sorted(self._collector_names()) if self._collector_names is not None else []

    def _produce(self, key: BodyKey) -> Iterator[bytes]:
        only, openmetrics = key
        if only is None or self._collect_only is None:
            families = self._collect()
        else:
            families = self._collect_only(only)
        # OpenMetrics (with _created start times) only when the scraper asks for it;
        # the 0.0.4 text format stays the default. The families are drawn one at a
        # time as they are rendered (a full scrape's come as they are collected).
        every = chain(families, self.families())
        if openmetrics:
            return iter_openmetrics_chunks(every)
        # full scrapes reuse what their last render made (label blocks, headers)
        return (self._renderer.chunks if only is None else iter_chunks)(every)

    def families(self) -> list[MetricFamily]:
        """The front's own metrics (requests by code, auth failures, TLS, ...)."""
        counters = self.http.counters
        requests = REQUESTS.family()
        for code, n in sorted(counters.requests.items()):
            requests.add((str(code),), n)
        auth = AUTH_FAILURES.family()
        auth.add((), counters.auth_failures)
        tls = TLS.family()
        tls.add((), 1 if self.tls else 0)
        timeouts = TIMEOUTS.family()
        for phase in ("header", "write"):
            timeouts.add((phase,), counters.timeouts.get(phase, 0))
        tls_failures = TLS_FAILURES.family()
        tls_failures.add((), counters.tls_failures)
        connections = CONNECTIONS.family()
        connections.add((), counters.open_connections)
        bodies = BODIES.family()
        for encoding, n in sorted(self.bodies.rendered.items()):
            bodies.add((encoding,), n)
        reloads = WEB_CONFIG_RELOADS.family()
        for result in ("success", "failure"):
            reloads.add((result,), self.front.reloads.get(result, 0))
        return [requests, auth, tls, timeouts, tls_failures, connections, bodies, reloads]

    async def _metrics(self, request: Request) -> Response:
        wanted = request.query_values("collect[]")
        key: frozenset[str] | None = None
        if wanted:
            known = self.names()
            unknown = sorted(set(wanted) - set(known))
            if unknown or self._collect_only is None:
                return Response.text(
                    400,
                    f"unknown collector {', '.join(unknown)} in collect[]; known: "
                    f"{', '.join(known)}\n",
                )
            key = frozenset(wanted)
        gzip = accepts_gzip(request.headers.get("accept-encoding"))
        openmetrics = wants_openmetrics(request.headers.get("accept", ""))
        try:
            chunks = await self.bodies.body((key, openmetrics), gzip)
        except Exception as exc:
            log.error("collection failed", error=f"{type(exc).__name__}: {exc}")
            return Response.text(500, "collection failed; see the agent's log\n")
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE
        return Response(200, chunks, content_type, headers)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """asyncio's own complaints, as one JSON log line (never a traceback on stderr)."""
    exc = context.get("exception")
    log.warning(
        "event loop",
        message=str(context.get("message", "")),
        error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
    )


def limits_of(config: Any) -> Limits:
    """The HTTP limits a config sets (agent.header_timeout, ...)."""
    return Limits(
        header_timeout=config.get("agent", "header_timeout"),
        idle_timeout=config.get("agent", "idle_timeout"),
        write_timeout=config.get("agent", "write_timeout"),
        max_connections=config.get("agent", "max_connections"),
    )


Mount = Callable[["MetricsServer", Any], None]
"""Adds routes to a new server from the config: ``mount(server, config)``."""
_mounts: list[Mount] = []


def register_mount(mount: Mount) -> Mount:
    """Have every server :func:`make_server` builds (at start and when a reload moves
    the listener) carry more routes, e.g. the control API's ``/api/v1/``."""
    _mounts.append(mount)
    return mount


def make_server(config: Any, agent: Any) -> MetricsServer:
    """The server a config asks for, serving ``agent`` (binds its address now)."""
    server = MetricsServer(
        config.get("agent", "listen"),
        agent.stream,
        limits=limits_of(config),
        web_config=config.get("agent", "web_config") or None,
        max_renders=config.get("agent", "max_renders"),
    )
    server.use_agent(agent)
    try:
        for mount in _mounts:
            mount(server, config)
    except Exception:
        server.close()
        raise
    return server
