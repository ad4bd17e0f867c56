"""Alertmanager's webhook (payload version 4) → the policy's rules → changes.

The payload (Alertmanager docs, configuration "webhook_config"): ``version`` "4",
``status``, ``receiver``, ``groupKey``, ``alerts`` — each with ``status`` (firing or
resolved), ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL`` and
``fingerprint``.

Alertmanager retries a notification that gets an error status, so the answer is 200
whenever the request itself was readable — also when every action was refused (the
reasons are in the answer and the audit log) — and 400 only for a payload that is not
one. Each firing alert acts at most once: its key is ``fingerprint@startsAt`` and the
audit log remembers the keys it has seen, so a repeated notification (``repeat_interval``,
a retry, a second Alertmanager of an HA pair) changes nothing. A resolved alert never
acts. The zone is the alert's ``zonename`` label.
"""

from __future__ import annotations

from typing import Any

from dtagent.control.policy import Principal
from dtagent.control.service import ControlService, Requester, _now_iso

MAX_ALERTS = 200


def _problem(body: dict[str, Any]) -> str | None:
    if body.get("version") != "4":
        return (
            f'expected an Alertmanager webhook payload version "4", got {body.get("version")!r:.20}'
        )
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        return "alerts: expected a list"
    if len(alerts) > MAX_ALERTS:
        return f"alerts: more than {MAX_ALERTS} in one notification"
    for i, a in enumerate(alerts):
        if not isinstance(a, dict):
            return f"alerts[{i}]: expected an object"
        if a.get("status") not in ("firing", "resolved"):
            return f"alerts[{i}].status: expected firing or resolved"
        labels = a.get("labels")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            return f"alerts[{i}].labels: expected an object of strings"
        for key in ("fingerprint", "startsAt"):
            if not isinstance(a.get(key), str) or not a[key] or len(a[key]) > 100:
                return f"alerts[{i}].{key}: expected a string"
    return None


def handle_webhook(
    service: ControlService, body: dict[str, Any], principal: Principal, peer: str
) -> tuple[int, dict[str, Any]]:
    problem = _problem(body)
    if problem is not None:
        service.audit.write(
            {
                "time": _now_iso(service.clock()),
                "phase": "refused",
                "source": "alertmanager",
                "who": principal.id,
                "from": peer,
                "result": "refused",
                "refusal": problem,
                "status": 400,
            }
        )
        service.counters.add("refused")
        return 400, {"error": problem, "status": 400}
    handled = service.handled_alerts()
    results: list[dict[str, Any]] = []
    for alert in body["alerts"]:
        labels: dict[str, str] = alert["labels"]
        key = f"{alert['fingerprint']}@{alert['startsAt']}"
        entry: dict[str, Any] = {
            "alertname": labels.get("alertname", ""),
            "key": key,
            "zonename": labels.get("zonename", ""),
        }
        results.append(entry)
        if alert["status"] != "firing":
            entry.update(result="ignored", reason="resolved alerts never act")
            continue
        rules = [r for r in service.policy.rules if r.matches(labels)]
        if not rules:
            entry.update(result="ignored", reason="no rule matches this alert")
            continue
        if key in handled:
            entry.update(result="ignored", reason="already handled (same fingerprint and startsAt)")
            continue
        handled.add(key)
        rule = rules[0]
        zonename = labels.get("zonename", "")
        about = {
            "key": key,
            "alertname": rule.alertname,
            "fingerprint": alert["fingerprint"],
            "startsAt": alert["startsAt"],
        }
        requester = Requester(principal.id, "alertmanager", peer, alert=about)
        dry_run = service.policy.automatic_dry_run if rule.dry_run is None else rule.dry_run
        current = _current(service, zonename, rule.key)
        if current is None:
            outcome = service.change(
                zonename,
                {},
                requester,
                dry_run=dry_run,
                reason=f"alert {rule.alertname}: no current {rule.key}",
            )
        else:
            target = rule.target(current)
            if target == current:
                outcome = service.change(
                    zonename,
                    {rule.key: target},
                    requester,
                    dry_run=True,
                    reason=f"alert {rule.alertname}: {rule.key} already at its limit {current}",
                )
                entry.update(
                    result="ignored", reason=f"{rule.key} already at {current}", id=outcome.id
                )
                continue
            outcome = service.change(
                zonename,
                {rule.key: target},
                requester,
                dry_run=dry_run,
                reason=f"alert {rule.alertname} ({rule.change})",
                may_touch=principal.may_touch,
            )
        entry.update(
            result=outcome.result,
            status=outcome.status,
            id=outcome.id,
            reason=outcome.reason,
            asked=outcome.asked,
            before=outcome.before,
            dry_run=outcome.dry_run,
        )
    # One record per notification, so repeated deliveries are visible even when they
    # change nothing.
    service.audit.write(
        {
            "time": _now_iso(service.clock()),
            "phase": "webhook",
            "source": "alertmanager",
            "who": principal.id,
            "from": peer,
            "receiver": str(body.get("receiver", ""))[:100],
            "alerts": [
                {k: e.get(k) for k in ("alertname", "zonename", "key", "result", "id")}
                for e in results
            ],
            "result": "handled",
        }
    )
    return 200, {"status": 200, "results": results}


def _current(service: ControlService, zonename: str, key: str) -> int | None:
    try:
        zone = service.platform.read(service.find(zonename), [key])
    except Exception:  # no zone, no value: the change below is refused and audited
        return None
    return zone.current(key)
