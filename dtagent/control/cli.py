"""``dtagent caps show|set|revert|token``: the control wing by hand."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from typing import Any

from dtagent.cliargs import EXIT_ERROR, EXIT_OK, EXIT_USAGE, command_group
from dtagent.config import Config, load


def register(sub: Any) -> None:
    csub = command_group(
        sub,
        "caps",
        help="show or change a zone's caps (the control wing)",
        description="Show a zone's caps and usage, or change them under the control policy "
        "(audited, read back). Example: dtagent caps set web-1 cpu_cap=400 --reason 'ticket 12'",
    )

    sp = csub.add_parser(
        "show",
        help="a zone's caps, configured and live, and its usage",
        description="Show a zone's caps (live, and as configured) and usage. ZONE is a "
        "zonename or a unique alias. Example: dtagent caps show web-1 --json",
    )
    sp.add_argument("zone", metavar="ZONE")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.add_argument("--config", metavar="FILE", help="TOML config")
    sp.set_defaults(handler=cmd_show)

    st = csub.add_parser(
        "set",
        help="change caps under the policy",
        description="Change one or more caps of a zone under the control policy. Units: "
        "cpu_cap %% of one CPU, memory in MiB, quota in GiB, maxbw.LINK in Mbit/s. "
        "Example: dtagent caps set web-1 cpu_cap=400 max_physical_memory=4096 --dry-run",
    )
    st.add_argument("zone", metavar="ZONE")
    st.add_argument("changes", nargs="+", metavar="KEY=VALUE")
    st.add_argument("--dry-run", action="store_true", help="check and audit, apply nothing")
    st.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the audit log)")
    st.add_argument("--json", action="store_true", help="print the outcome as JSON")
    st.add_argument("--config", metavar="FILE", help="TOML config")
    st.set_defaults(handler=cmd_set)

    rv = csub.add_parser(
        "revert",
        help="restore the values a change replaced",
        description="Restore the 'before' values of an applied change (its id is in the "
        "audit log and in the answer to the change), under the same policy. "
        "Example: dtagent caps revert c-3f2a9c0d1e2b4a5f",
    )
    rv.add_argument("id", metavar="ID")
    rv.add_argument("--dry-run", action="store_true")
    rv.add_argument("--json", action="store_true")
    rv.add_argument("--config", metavar="FILE", help="TOML config")
    rv.set_defaults(handler=cmd_revert)

    tk = csub.add_parser(
        "token",
        help="make an API token and the line for the policy",
        description="Print a new random API token (give it to the client) and the "
        "[[tokens]] entry with its SHA-256 for the policy or tokens file. The token itself "
        "is stored nowhere. Example: dtagent caps token alertmanager --scope alertmanager",
    )
    tk.add_argument("id", metavar="ID")
    tk.add_argument(
        "--scope",
        action="append",
        choices=["read", "set", "alertmanager"],
        help="scope (repeatable; default read)",
    )
    tk.set_defaults(handler=cmd_token)


def _config(args: argparse.Namespace) -> Config:
    from dtagent import log as logsetup

    config = load(getattr(args, "config", None))
    # The outcome is printed; the log (JSON on stderr) only says what went wrong.
    logsetup.setup("warning", "json")
    return config


def build_service(config: Config, need_policy: bool = True) -> Any:
    """The ControlService the config describes (policy loaded and checked)."""
    from dtagent.control.audit import AuditLog
    from dtagent.control.platform import detect
    from dtagent.control.policy import Policy, PolicyError, ZoneSelector, load_policy
    from dtagent.control.service import ControlService
    from dtagent.sources.commands import CommandRunner, passed_env

    path = config.get("control", "policy")
    if not path:
        if need_policy:
            raise PolicyError(
                "control.policy is not set: no change is allowed without a policy "
                "(see docs/control.md)"
            )
        policy = Policy(path="", zones=ZoneSelector(), properties={})
    else:
        policy = load_policy(path)
    command_path = config.get("sources", "command_path")
    # the same path and environment as the agent's own commands (sources.command_*)
    runner = CommandRunner(
        path=command_path, extra_env=passed_env(config.get("sources", "command_env"))
    )
    platform = detect(runner, command_path, config.get("control", "command_timeout"))
    audit = AuditLog(
        config.get("control", "audit_log"),
        config.get("control", "audit_max_bytes"),
        config.get("control", "audit_keep"),
    )
    return ControlService(platform, policy, audit)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


def cmd_show(args: argparse.Namespace) -> int:
    from dtagent.control.platform import PlatformError
    from dtagent.control.properties import PROPERTIES, ValidationError

    service = build_service(_config(args), need_policy=False)
    try:
        zone = service.show(args.zone)
    except (ValidationError, LookupError, PlatformError) as exc:
        print(f"dtagent caps show: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValidationError) else EXIT_ERROR
    if args.json:
        print(json.dumps(zone.to_json(), indent=2, sort_keys=True))
        return EXIT_OK
    print(
        f"zone {zone.zonename}"
        + (f" ({zone.alias})" if zone.alias else "")
        + f"  state {zone.state}  brand {zone.brand}"
    )
    print(f"{'PROPERTY':<22}{'LIVE':>12}{'CONFIGURED':>12}  UNIT")
    for key, value in zone.values().items():
        prop = PROPERTIES[key.partition(".")[0]]
        conf = zone.configured.get(key)
        print(f"{key:<22}{_show(value):>12}{_show(conf):>12}  {prop.unit}")
    for rctl, used in sorted(zone.usage.items()):
        print(f"usage {rctl:<30}{used:>20}")
    for problem in zone.problems:
        print(f"note: {problem}")
    return EXIT_OK


def _show(v: int | None) -> str:
    return "-" if v is None else str(v)


def _report(outcome: Any, as_json: bool, command: str) -> int:
    if as_json:
        print(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    elif outcome.result in ("applied", "dry_run"):
        verb = "would change" if outcome.result == "dry_run" else "changed"
        for key, value in outcome.asked.items():
            print(f"{outcome.zonename}: {key} {verb} {_show(outcome.before.get(key))} → {value}")
        print(f"id {outcome.id}" + (" (dry run: nothing applied)" if outcome.dry_run else ""))
    else:
        print(
            f"dtagent caps {command}: {outcome.result}: {outcome.reason}"
            + (f" (id {outcome.id})" if outcome.id else ""),
            file=sys.stderr,
        )
    if outcome.result in ("applied", "dry_run"):
        return EXIT_OK
    return EXIT_USAGE if outcome.status in (400, 422) else EXIT_ERROR


def cmd_set(args: argparse.Namespace) -> int:
    from dtagent.control.service import Requester

    changes: dict[str, object] = {}
    for item in args.changes:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"dtagent caps set: expected KEY=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        changes[key] = value
    service = build_service(_config(args))
    outcome = service.change(
        args.zone, changes, Requester(_who(), "cli"), dry_run=args.dry_run, reason=args.reason
    )
    return _report(outcome, args.json, "set")


def cmd_revert(args: argparse.Namespace) -> int:
    from dtagent.control.service import Requester

    service = build_service(_config(args))
    outcome = service.revert(args.id, Requester(_who(), "revert"), dry_run=args.dry_run)
    return _report(outcome, args.json, "revert")


def cmd_token(args: argparse.Namespace) -> int:
    from dtagent.control.policy import hash_token

    token = "dta_" + secrets.token_urlsafe(32)
    scopes = args.scope or ["read"]
    print(f"token (give it to the client; it is not stored): {token}", file=sys.stderr)
    print("[[tokens]]")
    print(f"id = {json.dumps(args.id)}")
    print(f'sha256 = "{hash_token(token)}"')
    print(f"scopes = {json.dumps(scopes)}")
    print('zones = ["*"]')
    return EXIT_OK
