"""web-config.yml: the checks at load, TLS, client certificates, basic auth, reloads.

Every web-config these tests serve with is also passed through the real
``promtool check web-config`` (Debian's prometheus package), so what the agent accepts
is what the Prometheus ecosystem accepts. Certificates are made at test time.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from dtagent.cli import main
from dtagent.httpd import Limits, Request, Response
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.server import MetricsServer
from dtagent.webconfig import WebConfigError, load_web_config, parse_duration
from tests.certs import HASH, PASSWORD, Certs, make_certs

PROMTOOL = shutil.which("promtool")
SPEC = MetricSpec("t_up", "gauge", "Up.", ())


def families() -> list[MetricFamily]:
    fam = SPEC.family()
    fam.add((), 1)
    return [fam]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def promtool_accepts(path: Path) -> None:
    """The real promtool validates the same file (skipped only without promtool)."""
    if PROMTOOL is None:
        pytest.skip("needs Debian's prometheus package (promtool)")
    out = subprocess.run(
        [PROMTOOL, "check", "web-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


def write(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def tls_block(certs: Certs, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {certs.server.cert}\n"
        f"  key_file: {certs.server.key}\n" + extra
    )


def client_context(certs: Certs, client: bool = False, stranger: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if client:
        ctx.load_cert_chain(str(certs.client.cert), str(certs.client.key))
    if stranger:
        ctx.load_cert_chain(str(certs.stranger.cert), str(certs.stranger.key))
    return ctx


def serve(path: Path | None) -> MetricsServer:
    srv = MetricsServer(
        "127.0.0.1:0", families, web_config=str(path) if path else None,
        limits=Limits(header_timeout=2, idle_timeout=2),
    )
    srv.add_route("/api/v1/whoami", _whoami, web_auth=False)
    srv.start()
    return srv


def _whoami(request: Request) -> Response:
    cert = request.client_certificate
    return Response.text(200, f"{cert.subject if cert else '-'}|{request.tls}\n")


def get(
    srv: MetricsServer,
    path: str = "/metrics",
    *,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


# -- checks at load ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: [1]\n", "key 'tls_server_config': expected a mapping"),
        ("tls_server_configs: {}\n", "key 'tls_server_configs': unknown setting"),
        ("tls_server_config:\n  cert_file: x\n", "key 'tls_server_config.key_file': missing"),
        ("tls_server_config:\n  key_file: x\n", "key 'tls_server_config.cert_file': missing"),
        ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
         "key 'tls_server_config.cert_file': cannot read /nonexistent.crt"),
        ("basic_auth_users:\n  alice: plain\n", "key 'basic_auth_users.alice': expected a bcrypt"),
        ("basic_auth_users:\n  alice: 1\n", "key 'basic_auth_users.alice': expected a string"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
         "key 'http_server_config.headers.X-Frame-Options': expected one of deny, sameorigin"),
        ("http_server_config:\n  headers:\n    X-Powered-By: me\n",
         "key 'http_server_config.headers.X-Powered-By': this header can not be configured"),
        ("http_server_config:\n  http2: maybe\n", "key 'http_server_config.http2': expected true"),
        ("rate_limit:\n  interval: soon\n", "key 'rate_limit.interval'"),
        ("basic_auth_users:\n  a: x\n  a: y\n", "given twice"),
        ("basic_auth_users: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_file_the_key_and_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  client_auth_type: Sometimes\n", "key 'tls_server_config.client_auth_type': expected"),
        ("  client_auth_type: RequireAnyClientCert\n", "not possible with Python's ssl"),
        ("  client_auth_type: RequireAndVerifyClientCert\n",
         "key 'tls_server_config.client_ca_file': RequireAndVerifyClientCert needs"),
        ("  client_ca_file: {ca}\n", "configured without a client auth policy"),
        ("  min_version: TLS14\n", "key 'tls_server_config.min_version': expected one of"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
        ("  cipher_suites: [TLS_FAKE]\n", "unknown cipher 'TLS_FAKE'"),
        ("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "TLS 1.3 suites cannot be chosen"),
        ("  curve_preferences: [CurveP999]\n", "unknown curve"),
        ("  client_allowed_sans: [a]\n", "client_allowed_sans needs a verified"),
        ("  cert: inline\n", "an inline cert is not supported"),
    ],
)
def test_bad_tls_settings_are_refused(
    tmp_path: Path, certs: Certs, extra: str, message: str
) -> None:
    path = write(tmp_path, tls_block(certs, extra.replace("{ca}", str(certs.ca))))
    with pytest.raises(WebConfigError) as err:
        load_web_config(str(path))
    assert message in str(err.value)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path, certs: Certs) -> None:
    path = write(
        tmp_path,
        f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.client.key}\n",
    )
    with pytest.raises(WebConfigError, match="not a PEM certificate and its key"):
        load_web_config(str(path))


def test_relative_paths_are_relative_to_the_file(tmp_path: Path, certs: Certs) -> None:
    for pair in (certs.server,):
        shutil.copy(pair.cert, tmp_path / "s.crt")
        shutil.copy(pair.key, tmp_path / "s.key")
    path = write(tmp_path, "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n")
    promtool_accepts(path)
    config = load_web_config(str(path))
    assert config.tls is not None and config.tls.cert_file == str(tmp_path / "s.crt")


def test_go_durations() -> None:
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0
    for bad in ("", "1", "1d", "s", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_cli_refuses_a_bad_web_config_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "basic_auth_users:\n  alice: plain\n")
    try:
        assert main(["serve", "--listen", "127.0.0.1:0", "--web-config", str(path)]) == 2
        missing = main(["serve", "--listen", "127.0.0.1:0", "--web-config", str(tmp_path / "no")])
    finally:
        structlog.reset_defaults()  # serve set logging up on pytest's captured stderr
    assert missing == 2
    err = capsys.readouterr().err.strip().splitlines()[:1]
    assert len(err) == 1
    assert str(path) in err[0] and "basic_auth_users.alice" in err[0]


# -- TLS and basic auth on the wire ------------------------------------------------


@pytest.fixture
def tls_auth(tmp_path: Path, certs: Certs) -> Iterator[tuple[MetricsServer, Path]]:
    path = write(
        tmp_path,
        tls_block(certs, "  min_version: TLS12\n  cipher_suites:\n"
                  "    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n"
                  "    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n")
        + f"basic_auth_users:\n  prometheus: {HASH}\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "    Strict-Transport-Security: max-age=31536000\n",
    )
    promtool_accepts(path)
    srv = serve(path)
    yield srv, path
    srv.stop()


def test_tls_with_basic_auth(tls_auth: tuple[MetricsServer, Path], certs: Certs) -> None:
    srv, _ = tls_auth
    assert srv.tls and srv.url.startswith("https://")
    ctx = client_context(certs)
    status, headers, body = get(srv, context=ctx, auth=("prometheus", PASSWORD))
    assert status == 200 and b"t_up 1\n" in body and b"dtagent_http_tls 1\n" in body
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"] == "max-age=31536000"
    for auth in (("prometheus", "wrong"), ("nobody", PASSWORD), None):
        status, headers, _ = get(srv, context=ctx, auth=auth)
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic realm=")
        assert headers["x-content-type-options"] == "nosniff"  # on refusals too
    # routes with their own authentication are not behind basic auth
    assert get(srv, "/api/v1/whoami", context=ctx)[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        get(srv)  # plain HTTP to a TLS listener: no answer


def test_bcrypt_runs_once_per_credentials(
    tls_auth: tuple[MetricsServer, Path], certs: Certs
) -> None:
    srv, _ = tls_auth
    ctx = client_context(certs)
    for _ in range(5):
        assert get(srv, context=ctx, auth=("prometheus", PASSWORD))[0] == 200
        assert get(srv, context=ctx, auth=("prometheus", "wrong"))[0] == 401
    assert srv.front.auth_cache.bcrypt_runs == 2


def test_auth_failures_are_counted_and_logged_once_a_minute(
    tls_auth: tuple[MetricsServer, Path], certs: Certs
) -> None:
    srv, _ = tls_auth
    ctx = client_context(certs)
    with structlog.testing.capture_logs() as logs:
        for _ in range(6):
            assert get(srv, context=ctx, auth=("prometheus", "wrong"))[0] == 401
    failures = [e for e in logs if e["event"] == "authentication failed"]
    assert len(failures) == 1 and failures[0]["client"] == "127.0.0.1"
    _, _, body = get(srv, context=ctx, auth=("prometheus", PASSWORD))
    assert b"dtagent_http_auth_failures_total 6\n" in body
    assert b'dtagent_http_requests_total{code="401"} 6\n' in body


def test_client_certificates(tmp_path: Path, certs: Certs) -> None:
    path = write(
        tmp_path,
        tls_block(
            certs,
            "  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {certs.ca}\n",
        ),
    )
    promtool_accepts(path)
    srv = serve(path)
    try:
        status, _, body = get(srv, "/api/v1/whoami", context=client_context(certs, client=True))
        assert status == 200
        assert body == b"CN=prometheus,O=dtagent tests|True\n"
        for ctx in (client_context(certs), client_context(certs, stranger=True)):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                get(srv, context=ctx)
        deadline = time.monotonic() + 3  # the server sees the failure just after the client
        while srv.http.counters.tls_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.http.counters.tls_failures == 2
    finally:
        srv.stop()


def test_client_allowed_sans(tmp_path: Path, certs: Certs) -> None:
    base = tls_block(
        certs,
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {certs.ca}\n  client_allowed_sans:\n",
    )
    for sans, allowed in ((["prometheus.example.org"], True), (["other.example.org"], False)):
        # (Debian's promtool 2.42 predates client_allowed_sans: not checked with it)
        path = write(tmp_path, base + "".join(f"    - {s}\n" for s in sans))
        srv = serve(path)
        try:
            ctx = client_context(certs, client=True)
            if allowed:
                assert get(srv, context=ctx)[0] == 200
            else:
                with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                    get(srv, context=ctx)
        finally:
            srv.stop()


def test_changes_are_picked_up_and_a_bad_file_keeps_the_old_settings(
    tmp_path: Path, certs: Certs
) -> None:
    path = write(tmp_path, tls_block(certs) + f"basic_auth_users:\n  prometheus: {HASH}\n")
    srv = serve(path)
    ctx = client_context(certs)
    try:
        assert get(srv, context=ctx)[0] == 401
        # a file that is broken midway through an edit: refused, old settings stay
        path.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        srv.front._checked = 0  # the next connection re-checks at once
        assert get(srv, context=ctx)[0] == 401
        assert srv.front.reloads == {"failure": 1}
        assert get(srv, context=ctx, auth=("prometheus", PASSWORD))[0] == 200
        # the fixed file: no users now, a header added
        path.write_text(
            tls_block(certs) + "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        )
        os.utime(path, (time.time() + 10, time.time() + 10))
        srv.front._checked = 0
        status, headers, _ = get(srv, context=ctx)
        assert status == 200 and headers["x-frame-options"] == "deny"
        assert srv.front.reloads == {"failure": 1, "success": 1}
        # SIGHUP's path: an explicit reload of a bad file says False and changes nothing
        path.write_text("tls_server_config:\n  cert_file: /nonexistent\n  key_file: /x\n")
        assert srv.reload_web_config() is False
        assert get(srv, context=ctx)[0] == 200
    finally:
        srv.stop()


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, certs: Certs) -> None:
    shutil.copy(certs.server.cert, tmp_path / "s.crt")
    shutil.copy(certs.server.key, tmp_path / "s.key")
    path = write(tmp_path, "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n")
    srv = serve(path)
    try:
        first = _served_certificate(srv)
        fresh = make_certs(tmp_path / "fresh")
        shutil.copy(fresh.server.cert, tmp_path / "s.crt")
        shutil.copy(fresh.server.key, tmp_path / "s.key")
        srv.front._checked = 0
        assert get(srv, context=client_context(fresh))[0] == 200
        assert _served_certificate(srv) != first
    finally:
        srv.stop()


def _served_certificate(srv: MetricsServer) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(srv.address, timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        cert = tls.getpeercert(binary_form=True)
    assert cert is not None
    return cert


def test_plain_http_on_a_non_loopback_address_warns(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        srv = MetricsServer("0.0.0.0:0", families)
        srv.start()
        srv.stop()
        quiet = MetricsServer("127.0.0.1:0", families)
        quiet.start()
        quiet.stop()
    warnings = [e for e in logs if e["log_level"] == "warning" and "plain HTTP" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["listen"] == "0.0.0.0:0"


@pytest.mark.parametrize("name", ["web-config.yml", "web-config-mtls.yml"])
def test_the_examples_check_with_promtool_and_serve(
    tmp_path: Path, certs: Certs, name: str
) -> None:
    """The shipped examples, with certificates at the paths they name (relative)."""
    (tmp_path / "tls").mkdir()
    shutil.copy(certs.server.cert, tmp_path / "tls" / "dtagent.crt")
    shutil.copy(certs.server.key, tmp_path / "tls" / "dtagent.key")
    shutil.copy(certs.ca, tmp_path / "tls" / "clients-ca.crt")
    path = tmp_path / name
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / name, path)
    promtool_accepts(path)
    srv = serve(path)
    try:
        if name == "web-config.yml":
            ctx = client_context(certs)
            assert get(srv, context=ctx)[0] == 401
            status, headers, _ = get(srv, context=ctx, auth=("prometheus", "change-me"))
            assert status == 200 and headers["x-frame-options"] == "deny"
        else:
            assert get(srv, context=client_context(certs, client=True))[0] == 200
    finally:
        srv.stop()


def test_sighup_re_reads_the_web_config(tmp_path: Path, certs: Certs) -> None:
    import json
    import signal

    from tests.helpers import free_port, start_dtagent

    path = write(tmp_path, tls_block(certs))
    port = free_port()
    proc = start_dtagent("serve", "--listen", f"127.0.0.1:{port}", "--web-config", str(path))
    try:
        assert proc.stderr is not None
        lines: list[dict[str, object]] = []

        def wait_for(event: str, count: int) -> None:
            assert proc.stderr is not None
            while sum(1 for e in lines if e.get("event") == event) < count:
                line = proc.stderr.readline()
                assert line, f"agent exited: {proc.wait()}"
                lines.append(json.loads(line))  # every line one JSON object

        wait_for("serving", 1)
        path.write_text("tls_server_config:\n  cert_file: /nonexistent\n  key_file: /x\n")
        proc.send_signal(signal.SIGHUP)
        wait_for("config reload refused; the running config stays", 1)
        assert "cert_file" in str(lines[-1]["problem"])
        path.write_text(tls_block(certs, "  min_version: TLS13\n"))
        proc.send_signal(signal.SIGHUP)
        wait_for("web-config loaded", 2)
        ctx = client_context(certs)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),  # TLS 1.3 only now
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ):
            ctx.wrap_socket(raw, server_hostname="localhost")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
