"""The control HTTP API under /api/v1/.

The agent's HTTP server (dtagent.httpd) hands each request under /api/v1/ to
:meth:`ControlAPI.handle` (mounted with ``web_auth=False``: the API authenticates
itself) and sends back its :class:`~dtagent.httpd.Response`. Every answer is JSON;
every error has a message and the status that describes it (400 malformed, 401 no or
wrong credentials, 403 not allowed, 404 no such zone, 409 cooldown or a change in
progress, 413 body too large, 422 a value out of range or an unknown key, 429 rate or
concurrency limit, 503 audit impossible). Every request — allowed or refused — leaves
an audit record.

Routes:
  GET   /api/v1/zones                      (scope read)
  GET   /api/v1/zones/{zonename}           (scope read)
  PATCH /api/v1/zones/{zonename}/caps      (scope set)   {"caps": {...}, "dry_run": bool,
                                                          "reason": "..."}
  POST  /api/v1/alertmanager               (scope alertmanager) webhook payload version 4
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from typing import Any
from urllib.parse import unquote

import structlog

from dtagent.control.alerts import handle_webhook
from dtagent.control.audit import AuditError
from dtagent.control.platform import PlatformError
from dtagent.control.policy import Principal, ZoneInfo
from dtagent.control.properties import ValidationError, valid_zonename
from dtagent.control.service import ControlService, Requester, _now_iso
from dtagent.httpd import Request, Response

log = structlog.get_logger("dtagent.control.api")

PREFIX = "/api/v1/"


class ApiRequest:
    """What the API needs of a request: the raw path, so a percent-encoded '/' in a zone
    name stays inside its segment, and who is calling from where."""

    def __init__(self, req: Request) -> None:
        self.method = req.method
        self.path = req.target
        self.headers = req.headers
        self.body = req.body
        self.peer = req.client
        cert = req.client_certificate
        self.client_subject = cert.subject if cert is not None else ""
        self.oversized = req.oversized


class ApiResponse:
    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _error(status: int, message: str, **extra: Any) -> ApiResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="dtagent"'} if status == 401 else {}
    return ApiResponse(status, {"error": message, "status": status, **extra}, headers)


class ControlAPI:
    def __init__(self, service: ControlService, max_body_bytes: int = 64 * 1024) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes

    # --- the entry point ------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """The server's handler (runs in a worker thread: it may block on commands)."""
        resp = self.answer(ApiRequest(request))
        return Response.json(resp.status, resp.body, resp.headers)

    def answer(self, req: ApiRequest) -> ApiResponse:
        started = time.monotonic()
        try:
            resp = self._route(req)
        except AuditError as exc:
            resp = _error(503, f"the request cannot be audited, so nothing was done: {exc}")
        except Exception as exc:  # never a traceback to the client
            log.error("control API error", error=str(exc), exc_info=exc)
            resp = _error(500, "internal error; see the agent's log")
        log.info(
            "control API",
            method=req.method,
            path=req.path[:120],
            status=resp.status,
            client=req.peer,
            duration_s=round(time.monotonic() - started, 3),
        )
        return resp

    def _route(self, req: ApiRequest) -> ApiResponse:
        raw = req.path.split("?", 1)[0]
        if not raw.startswith(PREFIX):
            return _error(404, "not found")
        parts = raw[len(PREFIX) :].split("/")
        if parts == ["zones"]:
            return self._with(req, "read", "GET", None, self._list)
        if len(parts) in (2, 3) and parts[0] == "zones":
            zonename = unquote(parts[1], errors="strict") if "%" in parts[1] else parts[1]
            if not valid_zonename(zonename):
                return self._refused(
                    req, 400, "not a zone name (letters, digits, '-', '_', '.'; at most 63)", None
                )
            if len(parts) == 2:
                return self._with(req, "read", "GET", zonename, self._show)
            if parts[2] == "caps":
                return self._with(req, "set", "PATCH", zonename, self._patch)
        if parts[0] == "zones":
            # zones/../x, zones/a/b/c: nothing here, and worth a record.
            return self._refused(req, 400, "not a zone path: /api/v1/zones/ZONENAME[/caps]",
                                 None)
        if parts == ["alertmanager"]:
            return self._with(req, "alertmanager", "POST", None, self._alertmanager)
        return _error(404, "not found")

    def _with(
        self, req: ApiRequest, scope: str, method: str, zonename: str | None, handler: Any
    ) -> ApiResponse:
        if req.method != method:
            resp = _error(405, f"use {method}")
            resp.headers["Allow"] = method
            return resp
        principal, problem = self._authenticate(req)
        if principal is None:
            return self._refused(req, 401, problem, None)
        if scope not in principal.scopes:
            return self._refused(req, 403, f"token {principal.id} has no {scope} scope", principal)
        body: object = None
        if method in ("PATCH", "POST"):
            if req.oversized or len(req.body) > self.max_body_bytes:
                return self._refused(req, 413, f"body over {self.max_body_bytes} bytes", principal)
            try:
                body = json.loads(req.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                return self._refused(req, 400, f"body is not JSON: {str(exc)[:100]}", principal)
            if not isinstance(body, dict):
                return self._refused(req, 400, "body must be a JSON object", principal)
        result: ApiResponse = handler(req, principal, zonename, body)
        return result

    def _authenticate(self, req: ApiRequest) -> tuple[Principal | None, str]:
        policy = self.service.policy
        header = req.headers.get("authorization", "")
        if header:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return None, "Authorization must be 'Bearer TOKEN'"
            token = policy.token(secret.strip())
            return (token, "") if token else (None, "unknown token")
        if req.client_subject:
            client = policy.client(req.client_subject)
            if client:
                return client, ""
            return None, f"no client entry for certificate subject {req.client_subject[:100]!r}"
        return None, "authentication required (Authorization: Bearer TOKEN)"

    def _refused(
        self, req: ApiRequest, status: int, message: str, principal: Principal | None
    ) -> ApiResponse:
        """Audit a request refused before it reached the service, then answer it."""
        record = {
            "id": "r-" + uuidlib.uuid4().hex[:16],
            "time": _now_iso(self.service.clock()),
            "phase": "refused",
            "source": "http",
            "who": principal.id if principal else "",
            "from": req.peer,
            "request": f"{req.method} {req.path[:200]!r}",
            "result": "refused",
            "refusal": message,
            "status": status,
        }
        self.service.audit.write(record)  # AuditError → 503 in handle()
        self.service.counters.add("refused")
        return _error(status, message, id=record["id"])

    def _audit_read(self, req: ApiRequest, principal: Principal, what: str) -> None:
        self.service.audit.write(
            {
                "id": "r-" + uuidlib.uuid4().hex[:16],
                "time": _now_iso(self.service.clock()),
                "phase": "read",
                "source": "http",
                "who": principal.id,
                "from": req.peer,
                "request": what,
                "result": "read",
            }
        )

    # --- handlers -------------------------------------------------------------------

    def _list(self, req: ApiRequest, principal: Principal, _zone: None, _b: None) -> ApiResponse:
        self._audit_read(req, principal, "GET zones")
        try:
            zones = self.service.zones()
        except PlatformError as exc:
            return _error(503, f"cannot list zones: {exc}")
        visible = [z for z in zones if principal.may_touch(ZoneInfo(z.zonename, z.alias))]
        return ApiResponse(
            200,
            {
                "zones": [
                    {
                        "zonename": z.zonename,
                        "uuid": z.uuid,
                        "alias": z.alias,
                        "state": z.state,
                        "brand": z.brand,
                        "configured": z.configured,
                    }
                    for z in visible
                ]
            },
        )

    def _show(self, req: ApiRequest, principal: Principal, zonename: str, _b: None) -> ApiResponse:
        self._audit_read(req, principal, f"GET zones/{zonename}")
        try:
            zone = self.service.find(zonename)
        except LookupError as exc:
            return _error(404, str(exc))
        except (ValidationError, PlatformError) as exc:
            return _error(503 if isinstance(exc, PlatformError) else 400, str(exc))
        if not principal.may_touch(ZoneInfo(zone.zonename, zone.alias)):
            return _error(404, f"no zone named {zonename!r}")  # not even its existence
        return ApiResponse(200, self.service.platform.read(zone).to_json())

    def _patch(
        self, req: ApiRequest, principal: Principal, zonename: str, body: dict[str, Any]
    ) -> ApiResponse:
        unknown = sorted(set(body) - {"caps", "dry_run", "reason"})
        if unknown:
            return self._refused(
                req,
                400,
                f"unknown field {unknown[0][:40]!r}; expected caps, dry_run, reason",
                principal,
            )
        caps, dry_run, reason = body.get("caps"), body.get("dry_run", False), body.get("reason", "")
        if (
            not isinstance(caps, dict)
            or not isinstance(dry_run, bool)
            or not isinstance(reason, str)
        ):
            return self._refused(
                req,
                400,
                'expected {"caps": {KEY: VALUE, ...}, "dry_run": true|false, "reason": TEXT}',
                principal,
            )
        outcome = self.service.change(
            zonename,
            caps,
            Requester(principal.id, "http", req.peer),
            dry_run=dry_run,
            reason=reason,
            may_touch=principal.may_touch,
        )
        body_out = outcome.to_json()
        if outcome.status >= 400:
            body_out["error"] = outcome.reason
        return ApiResponse(outcome.status, body_out)

    def _alertmanager(
        self, req: ApiRequest, principal: Principal, _z: None, body: dict[str, Any]
    ) -> ApiResponse:
        status, answer = handle_webhook(self.service, body, principal, req.peer)
        return ApiResponse(status, answer)
