"""Mount the control API on the agent's listener, or refuse to start; reload its policy.

The API starts only when it can be secured: a policy that names at least one token or
client certificate, and either a loopback listen address or TLS. Without TLS on a
network address, bearer tokens would cross the network in clear text; the operator can
accept that only with the explicitly named ``control.allow_plaintext_on_network``.

A reload (SIGHUP, ``svcadm refresh``) re-reads the policy (:class:`PolicyHook`) and
checks it as the start does; the cooldowns and the hourly count are the audit log's, so
they carry over. Turning the API on or off needs a restart: a reload that changes
``control.enabled`` is refused, so the agent never runs with an API the config says is
off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from dtagent.config import Config, ConfigError
from dtagent.control.api import ApiRequest, ApiResponse, ControlAPI
from dtagent.control.audit import AuditCounters
from dtagent.control.platform import Runner
from dtagent.control.policy import Policy, PolicyError, load_policy
from dtagent.listen import parse_listen
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.reload import Change, ReloadRefused, ServeState, register, section_changes

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


def require_auth(policy: Policy) -> None:
    """An API nobody can authenticate to is a mistake, refused at start and at a reload."""
    if not policy.tokens and not policy.clients:
        raise ConfigError(
            f"{policy.path}: control.enabled needs authentication: add [[tokens]] "
            "(dtagent caps token prints one) or [[clients]] for TLS client certificates"
        )


def load_serving_policy(path: str) -> Policy:
    """The policy as the API serves it: checked (PolicyError) and with a way to
    authenticate (ConfigError); a reload and ``dtagent check`` load it the same way."""
    policy = load_policy(path)
    require_auth(policy)
    return policy


def counter_families(counters: AuditCounters) -> Callable[[], list[MetricFamily]]:
    def families() -> list[MetricFamily]:
        fam = ACTIONS.family()
        counts = counters.snapshot()
        for result in sorted({*RESULTS, *counts}):
            fam.add((result,), counts.get(result, 0))
        return [fam]

    return families


def check_listener(config: Config, tls: bool) -> bool:
    """Refuse plain HTTP on a network address unless the operator said so by name
    (ConfigError); True when the API will serve tokens in clear text on the network.
    ``dtagent check`` asks the same."""
    listen = config.get("agent", "listen")
    host, _port = parse_listen(listen)
    if tls or is_loopback(host):
        return False
    if not config.get("control", "allow_plaintext_on_network"):
        raise ConfigError(
            f"control.enabled: {listen} is not a loopback address and the listener has "
            "no TLS (agent.web_config tls_server_config); serve TLS, listen on 127.0.0.1, "
            "or set control.allow_plaintext_on_network = true to accept tokens in clear "
            "text"
        )
    return True


class Control:
    """The control API of one ``serve``: checked at start, mounted on each server the
    agent makes (a reload that moves the listener gets it too)."""

    def __init__(self, config: Config) -> None:
        from dtagent.control.cli import build_service

        self.service = build_service(config)
        policy = self.service.policy
        require_auth(policy)
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
        """As :func:`check_listener`, with a warning when clear text was accepted."""
        if check_listener(config, tls):
            log.warning("control API without TLS on a network address",
                        listen=config.get("agent", "listen"))

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

    def stream(self) -> Iterator[MetricFamily]:
        yield from self._agent.stream()
        yield from self._families()

    def collect_only(self, names: frozenset[str]) -> list[MetricFamily]:
        return list(self._agent.collect_only(names))

    def names(self) -> Any:
        return self._agent.names()


# --------------------------------------------------------------------- reload

# what a reload cannot change while the agent runs (the route and the audit file are
# made at start); noted in the reload's log line
AT_RESTART = ("audit_log", "max_body_bytes")


class PolicyHook:
    """SIGHUP re-reads ``control.policy`` (changed or not) and checks it as ``serve`` does
    at start; a valid one judges the next request, an invalid one refuses the reload (the
    policy in force stays, one log line names the file, the key and why)."""

    name = "control"

    def __init__(self, state: ServeState, control: Control) -> None:
        self.state = state
        self.control = control

    def prepare(self, old: Config, new: Config) -> Change | None:
        switched = section_changes(old, new, "control", ["enabled"])
        if switched:
            raise ReloadRefused(restart_needed(old, new))
        service = self.control.service
        path = new.get("control", "policy")
        if not path:
            raise ReloadRefused("key 'control.policy': not set, and control.enabled needs a "
                                "policy (see docs/control.md)")
        try:
            policy = load_serving_policy(path)
        except (PolicyError, ConfigError) as exc:
            raise ReloadRefused(str(exc)) from None
        self._check_listener(old, new)
        parts = policy_changes(service.policy, policy)
        timeout = new.get("control", "command_timeout")
        keep, max_bytes = new.get("control", "audit_keep"), new.get("control", "audit_max_bytes")
        in_place = section_changes(old, new, "control", ["command_timeout", "audit_max_bytes",
                                                          "audit_keep",
                                                          "allow_plaintext_on_network"])
        later = [f"{c} (takes effect at the next restart)"
                 for c in section_changes(old, new, "control", list(AT_RESTART))]
        later += self._command_path_note(old, new)
        if not (parts or in_place or later):
            return None

        def apply() -> None:
            service.set_policy(policy)
            service.platform.timeout = timeout
            service.audit.keep, service.audit.max_bytes = keep, max_bytes

        describe = [f"control policy {path}: " + "; ".join(parts)] if parts else []
        return Change("; ".join([*describe, *in_place, *later]), apply)

    def _command_path_note(self, old: Config, new: Config) -> list[str]:
        """A new sources.command_path reaches the wing's commands when they run on the
        agent's command source (the collectors hook sets its path); the choice of vmadm
        or zonecfg is made at start (dtagent.control.platform.detect) and stays."""
        if not section_changes(old, new, "sources", ["command_path"]):
            return []
        platform = self.control.service.platform
        if platform.runner is not self.state.runtime.runner:
            return ["the control wing's commands keep the old sources.command_path until "
                    "the next restart"]
        import shutil

        vmadm = shutil.which("vmadm", path=new.get("sources", "command_path")) is not None
        if vmadm == (platform.name == "smartos"):
            return []
        return [f"the control wing keeps its {platform.name} commands until the next "
                f"restart (vmadm is {'now' if vmadm else 'no longer'} in "
                "sources.command_path)"]

    def _check_listener(self, old: Config, new: Config) -> None:
        """No reload may leave the API on a network address in clear text: a web-config
        that drops TLS, or allow_plaintext_on_network turned off. (A new listen address
        is checked when its server is made.)"""
        if section_changes(old, new, "agent", ["listen"]):
            return
        from dtagent.webconfig import WebConfigError, load_web_config

        try:
            tls = load_web_config(new.get("agent", "web_config") or None).tls is not None
        except WebConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        try:
            self.control.check_listener(new, tls)
        except ConfigError as exc:
            raise ReloadRefused(str(exc)) from None


def restart_needed(old: Config, new: Config) -> str:
    """The refusal of a reload that turns the control API on or off."""
    before, after = old.get("control", "enabled"), new.get("control", "enabled")
    return (f"key 'control.enabled': {before!r} -> {after!r} needs a restart (svcadm restart "
            "dtagent): the control API is mounted when the agent starts; to stop every change "
            "without a restart, reload a policy with limits.changes_per_hour = 0")


def _diff(key: str, before: object, after: object) -> list[str]:
    return [] if before == after else [f"{key}: {before!r} -> {after!r}"]


def _principals(kind: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> list[str]:
    """Ids added, removed and changed (scopes, zones, hash or subject: never shown)."""
    before, after = {p.id: p for p in old}, {p.id: p for p in new}
    out = []
    for verb, ids in (("added", sorted(after.keys() - before.keys())),
                      ("removed", sorted(before.keys() - after.keys())),
                      ("changed", sorted(i for i in before.keys() & after.keys()
                                         if before[i] != after[i]))):
        if ids:
            out.append(f"{kind} {verb}: {', '.join(ids)}")
    return out


def policy_changes(old: Policy, new: Policy) -> list[str]:
    """What a re-read policy changes, for the reload's log line (no secret in it)."""
    out = _diff("file", old.path, new.path)
    for f in ("names", "aliases", "tags", "customer_metadata"):
        out += _diff(f"zones.{f}", getattr(old.zones, f), getattr(new.zones, f))
    for f in ("changes_per_hour", "concurrent", "automatic_dry_run"):
        out += _diff(f"limits.{f}", getattr(old, f), getattr(new, f))
    for name in sorted(old.properties.keys() | new.properties.keys()):
        a, b = old.properties.get(name), new.properties.get(name)
        if a is None or b is None:
            out.append(f"properties.{name} {'added' if a is None else 'removed'}")
            continue
        for f, key in (("minimum", "min"), ("maximum", "max"), ("max_step_ratio", None),
                       ("cooldown_seconds", None), ("allow_none", None)):
            out += _diff(f"properties.{name}.{key or f}", getattr(a, f), getattr(b, f))
    if old.rules != new.rules:
        out.append(f"rules: {len(old.rules)} -> {len(new.rules)}"
                   if len(old.rules) != len(new.rules) else "rules changed")
    out += _principals("tokens", old.tokens, new.tokens)
    out += _principals("clients", old.clients, new.clients)
    return out


@register
def policy_hook(state: ServeState) -> PolicyHook | None:
    """The reload hook of a ``serve`` with the control API on (none without it)."""
    control = state.parts.get("control")
    return PolicyHook(state, control) if isinstance(control, Control) else None


def mount(config: Config, tls: bool = False) -> tuple[ApiHandler, Callable[[], list[MetricFamily]]]:
    """The API's answer function and its metrics, checked as ``serve`` checks them
    (ConfigError / PolicyError saying why not); for tests and other servers."""
    control = Control(config)
    control.check_listener(config, tls)
    return control.api.answer, control.families
