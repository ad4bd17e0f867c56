"""Mount the control API on the agent's listener, or refuse to start.

The API starts only when it can be secured: a policy that names at least one token or
client certificate, and either a loopback listen address or TLS. Without TLS on a
network address, bearer tokens would cross the network in clear text; the operator can
accept that only with the explicitly named ``control.allow_plaintext_on_network``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import structlog

from dtagent.config import Config, ConfigError
from dtagent.control.api import ApiRequest, ApiResponse, ControlAPI
from dtagent.control.audit import AuditCounters
from dtagent.control.platform import Runner
from dtagent.listen import parse_listen
from dtagent.metrics import MetricFamily, MetricSpec

log = structlog.get_logger("dtagent.control")

ApiHandler = Callable[[ApiRequest], ApiResponse]

ACTIONS = MetricSpec(
    "dtagent_control_actions_total",
    "counter",
    "Control requests by result: applied, failed (did not take), dry_run, refused "
    "(policy, validation or authentication), unaudited (refused because the audit log "
    "could not be written).",
    ("result",),
    "",
    "the control wing (docs/control.md)",
)
RESULTS = ("applied", "failed", "dry_run", "refused", "unaudited")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def counter_families(counters: AuditCounters) -> Callable[[], list[MetricFamily]]:
    def families() -> list[MetricFamily]:
        fam = ACTIONS.family()
        counts = counters.snapshot()
        for result in sorted({*RESULTS, *counts}):
            fam.add((result,), counts.get(result, 0))
        return [fam]

    return families


class Control:
    """The control API of one ``serve``: checked at start, mounted on each server the
    agent makes (a reload that moves the listener gets it too)."""

    def __init__(self, config: Config) -> None:
        from dtagent.control.cli import build_service

        self.service = build_service(config)
        policy = self.service.policy
        if not policy.tokens and not policy.clients:
            raise ConfigError(
                f"{policy.path}: control.enabled needs authentication: add [[tokens]] "
                "(dtagent caps token prints one) or [[clients]] for TLS client certificates"
            )
        self.api = ControlAPI(self.service, config.get("control", "max_body_bytes"))
        self.families = counter_families(self.service.counters)
        log.info("control API enabled", policy=policy.path, platform=self.service.platform.name,
                 tokens=len(policy.tokens), clients=len(policy.clients),
                 automatic_dry_run=policy.automatic_dry_run)

    def use_runner(self, runner: Runner) -> None:
        """Run the wing's commands on ``runner`` (the agent's command source, so they are
        counted in its ``dtagent_command_*`` series) instead of a runner of its own."""
        self.service.platform.runner = runner

    def check_listener(self, config: Config, tls: bool) -> None:
        """Refuse plain HTTP on a network address unless the operator said so by name."""
        listen = config.get("agent", "listen")
        host, _port = parse_listen(listen)
        if tls or is_loopback(host):
            return
        if not config.get("control", "allow_plaintext_on_network"):
            raise ConfigError(
                f"control.enabled: {listen} is not a loopback address and the listener has "
                "no TLS (agent.web_config tls_server_config); serve TLS, listen on 127.0.0.1, "
                "or set control.allow_plaintext_on_network = true to accept tokens in clear "
                "text"
            )
        log.warning("control API without TLS on a network address", listen=listen)

    def attach(self, server: Any, config: Config) -> None:
        """Mount /api/v1/ on a MetricsServer that has not started yet."""
        self.check_listener(config, bool(server.tls))
        server.add_route(
            "/api/v1/",
            self.api.handle,
            methods=("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"),
            web_auth=False,
            max_body=config.get("control", "max_body_bytes"),
            oversized_to_handler=True,
        )

    def wrap(self, agent: Any) -> Any:
        return _WithControlMetrics(agent, self.families)


class _WithControlMetrics:
    """The agent as the server sees it, with dtagent_control_actions_total added."""

    def __init__(self, agent: Any, families: Callable[[], list[MetricFamily]]) -> None:
        self._agent = agent
        self._families = families

    def collect(self) -> list[MetricFamily]:
        return [*self._agent.collect(), *self._families()]

    def collect_only(self, names: frozenset[str]) -> list[MetricFamily]:
        return list(self._agent.collect_only(names))

    def names(self) -> Any:
        return self._agent.names()


def mount(config: Config, tls: bool = False) -> tuple[ApiHandler, Callable[[], list[MetricFamily]]]:
    """The API's answer function and its metrics, checked as ``serve`` checks them
    (ConfigError / PolicyError saying why not); for tests and other servers."""
    control = Control(config)
    control.check_listener(config, tls)
    return control.api.answer, control.families
