"""exporter-toolkit's web-config.yml: TLS, basic auth and response headers.

The format is the one node_exporter and most official exporters read with
``--web.config.file`` (prometheus/exporter-toolkit ``docs/web-configuration.md``;
semantics from its ``web/tls_config.go`` and ``web/handler.go``), so a file written for
node_exporter works unchanged and ``promtool check web-config`` validates ours:

* ``tls_server_config``: ``cert_file``/``key_file`` (relative paths are relative to
  the web-config's directory), ``client_auth_type``, ``client_ca_file`` (or inline
  ``client_ca``), ``client_allowed_sans``, ``min_version``/``max_version`` (default
  TLS12/TLS13), ``cipher_suites`` (Go's names, mapped to OpenSSL's; TLS 1.3 suites are
  not configurable, as in Go), ``prefer_server_cipher_suites``. ``curve_preferences``
  is checked but cannot be applied (Python's ssl sets one curve, not a preference
  list): the agent says so at start. Python's ssl cannot ask for a client certificate
  without verifying it, so ``RequireAnyClientCert`` is refused; ``RequestClientCert``
  (which authenticates nothing in Go either) is served as ``NoClientCert``.
* ``basic_auth_users``: user → bcrypt hash. A (user, hash, password) outcome is cached
  (100 entries) so a scrape does not pay bcrypt each time, as exporter-toolkit does;
  the cache keys are SHA-256 digests, not the passwords. Unknown users are checked
  against a dummy hash so timing does not tell which users exist.
* ``http_server_config.headers``: the five headers exporter-toolkit allows, with its
  allowed values. ``http2`` is accepted (the agent speaks HTTP/1.1 only).
* ``rate_limit``: ``interval`` (a Go duration) and ``burst``: a token bucket; over it
  requests get 429.

The file (and the certificate, key and CA files it names) is re-read when it changes,
so certificates rotate without a restart. An invalid file is refused at start with a
:class:`WebConfigError` naming the file, the key and the reason; an invalid file met
on a re-read is logged and the settings in force stay.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from dtagent.httpd import HttpCounters, OncePerClient, Request, Response, canonical_san

if TYPE_CHECKING:
    import yaml

log = structlog.get_logger("dtagent.webconfig")


class WebConfigError(Exception):
    """A web-config problem; the message names the file, the key and the reason."""


TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's crypto/tls CipherSuites() names (TLS 1.0-1.2) → OpenSSL names, from the table in
# OpenSSL's ciphers(1) manual ("TLS v1.2 cipher suites", "TLS v1.0 cipher suites").
# TLS 1.3 suites are fixed in Go and in Python's ssl alike.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")
# exporter-toolkit web/handler.go extraHTTPHeaders: name → allowed values (None: any)
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
TLS_KEYS = {
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
    "client_ca_file", "cipher_suites", "curve_preferences", "min_version", "max_version",
    "prefer_server_cipher_suites", "client_allowed_sans",
}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
_BCRYPT = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
    "h": 3600.0,
}


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_allowed_sans: frozenset[str] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebConfig:
    """A checked web-config; ``files`` are what a change is watched on."""

    path: str | None
    tls: TlsSettings | None = None
    users: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    http2: bool = True
    rate_limit: tuple[float, int] | None = None  # (seconds per token, burst)

    @property
    def files(self) -> tuple[str, ...]:
        out = [self.path] if self.path else []
        if self.tls is not None:
            out += [self.tls.cert_file, self.tls.key_file]
            if self.tls.client_ca_file:
                out.append(self.tls.client_ca_file)
        return tuple(out)


@functools.cache
def _strict_loader() -> type[yaml.SafeLoader]:
    """A YAML loader that refuses a key given twice (Go's yaml.UnmarshalStrict does too).

    Made, and PyYAML imported, when a web-config file is first read: an agent serving
    without one never loads PyYAML."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return StrictLoader


def parse_duration(text: str) -> float:
    """A Go duration ("1s", "1m30s", "500ms", "0") in seconds; ValueError otherwise."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise ValueError(f"{text!r} is not a duration like 1s, 500ms or 1m30s")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return total


def _expect(problem: str, where: str, key: str) -> WebConfigError:
    return WebConfigError(f"{where}: key {key!r}: {problem}")


def _str(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _expect(f"expected a string, got {value!r}", where, key)
    return value


def _str_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _expect(f"expected a list of strings, got {value!r}", where, key)
    return tuple(value)


def _table(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _expect(f"expected a mapping, got {value!r}", where, key)
    for k in value:
        if not isinstance(k, str):
            raise _expect(f"expected string keys, got {k!r}", where, key)
    return value


def _unknown(where: str, section: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            name = f"{section}.{key}" if section else key
            raise _expect("unknown setting; known: " + ", ".join(sorted(known)), where, name)


def _relative(base: str, path: str) -> str:
    return path if os.path.isabs(path) or not path else os.path.join(base, path)


def load_web_config(path: str | None) -> WebConfig:
    """Read and check a web-config file completely (certificates and keys included)."""
    if not path:
        return WebConfig(None)
    where = path
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise WebConfigError(f"{path}: no such web-config file") from None
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read ({exc.strerror})") from None
    import yaml

    try:
        raw = yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WebConfigError(f"{path}:{line} not valid YAML ({problem})") from None
    top = _table(where, "(top level)", raw)
    _unknown(where, "", top, TOP_KEYS)
    base = os.path.dirname(os.path.abspath(path))
    tls = _tls(where, base, _table(where, "tls_server_config", top.get("tls_server_config")))
    http = _table(where, "http_server_config", top.get("http_server_config"))
    _unknown(where, "http_server_config", http, {"headers", "http2"})
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        raise _expect(f"expected true or false, got {http2!r}", where, "http_server_config.http2")
    headers = _headers(where, _table(where, "http_server_config.headers", http.get("headers")))
    users = _users(where, _table(where, "basic_auth_users", top.get("basic_auth_users")))
    rate = _rate_limit(where, _table(where, "rate_limit", top.get("rate_limit")))
    config = WebConfig(path, tls, users, headers, http2, rate)
    if tls is not None:
        build_ssl_context(tls, where)  # every file read and checked now, not at a handshake
    return config


def _tls(where: str, base: str, table: dict[str, Any]) -> TlsSettings | None:
    _unknown(where, "tls_server_config", table, TLS_KEYS)
    sec = "tls_server_config."
    values = {k: v for k, v in table.items() if v is not None}
    enabled = any(
        values.get(k) for k in ("cert_file", "cert", "key_file", "key", "client_ca_file",
                                "client_ca", "client_auth_type")
    )
    if not enabled:
        return None
    for inline in ("cert", "key"):
        if inline in values:
            raise _expect(
                f"an inline {inline} is not supported; write it to a file and set "
                f"{inline}_file", where, sec + inline,
            )
    cert = _str(where, sec + "cert_file", values.get("cert_file", ""))
    key = _str(where, sec + "key_file", values.get("key_file", ""))
    if not cert:
        raise _expect("missing: TLS needs cert_file", where, sec + "cert_file")
    if not key:
        raise _expect("missing: TLS needs key_file", where, sec + "key_file")
    auth = _str(where, sec + "client_auth_type", values.get("client_auth_type", ""))
    if auth in UNSUPPORTED_CLIENT_AUTH:
        raise _expect(
            f"{auth} (a client certificate that is required but not verified) is not "
            "possible with Python's ssl; use RequireAndVerifyClientCert with client_ca_file",
            where, sec + "client_auth_type",
        )
    if auth not in CLIENT_AUTH:
        raise _expect(
            "expected one of " + ", ".join(k for k in CLIENT_AUTH if k), where,
            sec + "client_auth_type",
        )
    ca_file = _str(where, sec + "client_ca_file", values.get("client_ca_file", "")) or None
    ca_text = _str(where, sec + "client_ca", values.get("client_ca", "")) or None
    if ca_file and ca_text:
        raise _expect("give client_ca_file or client_ca, not both", where, sec + "client_ca")
    if (ca_file or ca_text) and CLIENT_AUTH[auth] == ssl.CERT_NONE:
        raise _expect(
            "client CAs are configured without a client auth policy; set "
            "client_auth_type: RequireAndVerifyClientCert", where, sec + "client_auth_type",
        )
    if CLIENT_AUTH[auth] != ssl.CERT_NONE and not (ca_file or ca_text):
        raise _expect(f"{auth} needs client_ca_file", where, sec + "client_ca_file")
    sans_list = table.get("client_allowed_sans")
    sans: frozenset[str] | None = None
    if sans_list is not None:
        sans = frozenset(
            canonical_san(s) for s in _str_list(where, sec + "client_allowed_sans", sans_list)
        )
        if CLIENT_AUTH[auth] == ssl.CERT_NONE:
            raise _expect(
                "client_allowed_sans needs a verified client certificate; set "
                "client_auth_type: RequireAndVerifyClientCert", where, sec + "client_allowed_sans",
            )
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = _str(where, sec + name, values.get(name, default))
        if text not in TLS_VERSIONS:
            raise _expect(
                "expected one of " + ", ".join(TLS_VERSIONS) + f", got {text!r}", where, sec + name
            )
        versions[name] = text
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise _expect("min_version is above max_version", where, sec + "min_version")
    suites = _str_list(where, sec + "cipher_suites", table.get("cipher_suites"))
    for suite in suites:
        if suite not in CIPHER_SUITES:
            extra = " (TLS 1.3 suites cannot be chosen)" if suite in TLS13_SUITES else ""
            raise _expect(
                f"unknown cipher {suite!r}{extra}; known: " + ", ".join(CIPHER_SUITES),
                where, sec + "cipher_suites",
            )
    curves = _str_list(where, sec + "curve_preferences", table.get("curve_preferences"))
    for curve in curves:
        if curve not in CURVES:
            raise _expect(
                f"unknown curve {curve!r}; known: " + ", ".join(CURVES), where,
                sec + "curve_preferences",
            )
    prefer = values.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _expect(
            f"expected true or false, got {prefer!r}", where, sec + "prefer_server_cipher_suites"
        )
    return TlsSettings(
        cert_file=_relative(base, cert),
        key_file=_relative(base, key),
        client_auth_type=auth or "NoClientCert",
        client_ca_file=_relative(base, ca_file) if ca_file else None,
        client_ca=ca_text,
        client_allowed_sans=sans,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        cipher_suites=suites,
        prefer_server_cipher_suites=prefer,
        curve_preferences=curves,
    )


def _headers(where: str, table: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in table.items():
        key = f"http_server_config.headers.{name}"
        if name not in HEADERS:
            raise _expect(
                "this header can not be configured; allowed: " + ", ".join(HEADERS), where, key
            )
        text = _str(where, key, value)
        allowed = HEADERS[name]
        if allowed is not None and text not in allowed:
            raise _expect(f"expected one of {', '.join(allowed)}, got {text!r}", where, key)
        if any(c in text for c in "\r\n\x00"):
            raise _expect("a header value cannot hold a line break", where, key)
        if text:
            out[name] = text
    return out


def _users(where: str, table: dict[str, Any]) -> dict[str, str]:
    users: dict[str, str] = {}
    for user, hashed in table.items():
        key = f"basic_auth_users.{user}"
        text = _str(where, key, hashed)
        if not _BCRYPT.match(text):
            raise _expect(
                "expected a bcrypt hash like $2y$10$... (htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                where, key,
            )
        if ":" in user:
            raise _expect("a user name cannot contain ':'", where, key)
        users[user] = text
    if users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise _expect(
                "basic auth needs the bcrypt package (pkgsrc py311-bcrypt, or pip install "
                "bcrypt)", where, "basic_auth_users",
            ) from None
    return users


def _rate_limit(where: str, table: dict[str, Any]) -> tuple[float, int] | None:
    if not table:
        return None
    _unknown(where, "rate_limit", table, {"interval", "burst"})
    interval_value = table.get("interval", "0")
    if isinstance(interval_value, int) and not isinstance(interval_value, bool):
        interval = interval_value * 1e-9  # a bare number is nanoseconds, as in Go
    else:
        try:
            interval = parse_duration(_str(where, "rate_limit.interval", interval_value))
        except ValueError as exc:
            raise _expect(str(exc), where, "rate_limit.interval") from None
    burst = table.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise _expect(f"expected a whole number ≥ 0, got {burst!r}", where, "rate_limit.burst")
    if interval <= 0:
        return None
    return interval, burst


def build_ssl_context(tls: TlsSettings, where: str = "web-config") -> ssl.SSLContext:
    """The server context for these settings; reads the certificate, key and CA files."""
    sec = "tls_server_config."
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = TLS_VERSIONS[tls.min_version]
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    except (ValueError, ssl.SSLError) as exc:
        raise _expect(
            f"not possible with this OpenSSL ({exc})", where, sec + "min_version"
        ) from None
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise _expect(f"cannot read {path} ({exc.strerror})", where, sec + key) from None
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise _expect(
            f"{tls.cert_file} and {tls.key_file} are not a PEM certificate and its key "
            f"({exc.reason or exc})", where, sec + "cert_file",
        ) from None
    if tls.cipher_suites:
        try:
            ctx.set_ciphers(":".join(CIPHER_SUITES[s] for s in tls.cipher_suites))
        except ssl.SSLError:
            raise _expect(
                "none of these suites is available in this OpenSSL", where, sec + "cipher_suites"
            ) from None
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file or tls.client_ca:
        try:
            if tls.client_ca_file:
                ctx.load_verify_locations(cafile=tls.client_ca_file)
            else:
                ctx.load_verify_locations(cadata=tls.client_ca)
        except FileNotFoundError:
            raise _expect(
                f"no such file {tls.client_ca_file}", where, sec + "client_ca_file"
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "client_ca_file" if tls.client_ca_file else "client_ca"
            raise _expect(f"not PEM CA certificates ({exc})", where, sec + key) from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class BasicAuthCache:
    """bcrypt verdicts cached by (user, hash, password) digest; one bcrypt at a time."""

    size = 100

    def __init__(self) -> None:
        self._verdicts: dict[bytes, bool] = {}
        self._lock: asyncio.Lock | None = None
        self._dummy: bytes | None = None
        self.bcrypt_runs = 0

    async def check(self, users: dict[str, str], user: str, password: bytes) -> bool:
        hashed = users.get(user)
        known = hashed is not None
        hash_bytes = hashed.encode("ascii") if hashed is not None else self._dummy_hash()
        key = hashlib.sha256(
            b"\0".join([user.encode("utf-8"), hash_bytes, password])
        ).digest()
        verdict = self._verdicts.get(key)
        if verdict is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                verdict = self._verdicts.get(key)
                if verdict is None:
                    self.bcrypt_runs += 1
                    verdict = await asyncio.to_thread(_bcrypt_check, password, hash_bytes)
                    if len(self._verdicts) >= self.size:
                        self._verdicts.pop(next(iter(self._verdicts)))
                    self._verdicts[key] = verdict
        return verdict and known

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            import bcrypt

            self._dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(10))
        return self._dummy


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    if len(password) > 72:  # bcrypt's limit; Go's x/crypto/bcrypt refuses these too
        return False
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


def basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from ``Authorization: Basic ...`` (RFC 7617), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class _TokenBucket:
    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = max(burst, 1)
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) / self.interval)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class _State:
    config: WebConfig
    context: ssl.SSLContext | None
    fingerprint: tuple[Any, ...]
    limiter: _TokenBucket | None


def _fingerprint(files: tuple[str, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in files:
        try:
            st = os.stat(name)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class WebFront:
    """The web-config in force, re-read when its files change; the server's hooks.

    ``ssl_context()``, ``allowed_sans()``, ``headers()`` and ``authenticate()`` are what
    :class:`dtagent.httpd.HttpServer` calls; ``reload()`` is for SIGHUP.
    """

    check_every = 1.0

    def __init__(self, path: str | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.counters = HttpCounters()
        self.events = OncePerClient()
        self.reloads: dict[str, int] = {}
        self.auth_cache = BasicAuthCache()
        self._clock = clock
        self._checked = clock()
        self._lock = threading.Lock()
        self._state = self._load(path)  # raises WebConfigError: refused at start
        self._describe(self._state.config)

    def prepare(self, path: str | None) -> _State:
        """Read and check ``path`` (a reload's first step); raises WebConfigError."""
        return self._load(path)

    def install(self, path: str | None, state: _State) -> None:
        """Put a prepared web-config in force (the next connection uses it)."""
        with self._lock:
            if state.config.tls is None and self._state.config.tls is not None:
                log.warning("web-config without TLS now: serving plain HTTP", file=path)
            self.path = path
            self._state = state
            self.reloads["success"] = self.reloads.get("success", 0) + 1
        self._describe(state.config)

    def _load(self, path: str | None) -> _State:
        config = load_web_config(path)
        fingerprint = _fingerprint(config.files)
        context = build_ssl_context(config.tls, config.path or "") if config.tls else None
        limiter = _TokenBucket(*config.rate_limit) if config.rate_limit else None
        return _State(config, context, fingerprint, limiter)

    def _describe(self, config: WebConfig) -> None:
        if config.path is None:
            return
        tls = config.tls
        log.info(
            "web-config loaded",
            file=config.path,
            tls=tls is not None,
            client_auth=tls.client_auth_type if tls else None,
            basic_auth_users=len(config.users),
        )
        if tls is not None and tls.curve_preferences:
            log.warning(
                "tls_server_config.curve_preferences cannot be applied with Python's ssl; "
                "OpenSSL's default curves are used",
                file=config.path,
            )
        if tls is not None and tls.client_auth_type == "RequestClientCert":
            log.warning(
                "client_auth_type RequestClientCert asks for no verified certificate; "
                "served as NoClientCert",
                file=config.path,
            )

    @property
    def config(self) -> WebConfig:
        return self._state.config

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._state.context

    def allowed_sans(self) -> frozenset[str] | None:
        tls = self._state.config.tls
        return tls.client_allowed_sans if tls is not None else None

    def headers(self) -> dict[str, str]:
        return self._state.config.headers

    def maybe_reload(self) -> None:
        """Re-read the files when they changed (checked at most once a second)."""
        if self.path is None:
            return
        now = self._clock()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        if _fingerprint(self._state.config.files) != self._state.fingerprint:
            self.reload()

    def reload(self) -> bool:
        """Re-read now; on an invalid file log why and keep the settings in force."""
        if self.path is None:
            return True
        with self._lock:
            old = self._state
            try:
                new = self._load(self.path)
            except WebConfigError as exc:
                self.reloads["failure"] = self.reloads.get("failure", 0) + 1
                # remember what was seen, so a bad file is reported once, not per request
                self._state = _State(
                    old.config, old.context, _fingerprint(old.config.files), old.limiter
                )
                log.error("web-config not reloaded; the previous settings stay", error=str(exc))
                return False
            if new.config.tls is None and old.config.tls is not None:
                log.warning("web-config reloaded without TLS: now serving plain HTTP",
                            file=self.path)
            self._state = new
            self.reloads["success"] = self.reloads.get("success", 0) + 1
            self._describe(new.config)
            return True

    async def authenticate(self, request: Request) -> Response | None:
        state = self._state
        if state.limiter is not None and not state.limiter.allow():
            return Response.text(429, "too many requests\n")
        users = state.config.users
        if not users:
            return None
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials is not None:
            user, password = credentials
            if await self.auth_cache.check(users, user, password):
                request.user = user
                return None
        self.counters.auth_failures += 1
        self.events.log(
            "auth",
            request.client,
            "authentication failed",
            user=credentials[0] if credentials else None,
            reason="wrong user or password" if credentials else "no basic-auth credentials",
        )
        return Response.text(
            401, "unauthorized\n", {"WWW-Authenticate": 'Basic realm="dtagent", charset="UTF-8"'}
        )
