"""One change request, whatever its source: validate, check, audit, apply, read back, audit.

:class:`ControlService` is what the CLI, the HTTP API and the Alertmanager webhook
call. Its answer (:class:`Outcome`) carries the HTTP status that describes it, so every
interface reports the same thing the same way.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dtagent.control.audit import AuditCounters, AuditError, AuditLog
from dtagent.control.platform import Platform, PlatformError, ZoneCaps
from dtagent.control.policy import Policy, Refusal, ZoneInfo, check_change
from dtagent.control.properties import (
    ValidationError,
    check_changes,
    check_memory,
    valid_zonename,
)

log = structlog.get_logger("dtagent.control")


@dataclass
class Requester:
    """Who asks (token id, certificate subject or local user), from where, and how."""

    who: str
    source: str  # cli, http, alertmanager, revert
    address: str = ""
    alert: dict[str, str] | None = None


@dataclass
class Outcome:
    """What happened. ``status`` is the HTTP status that describes it."""

    status: int
    result: str  # applied, dry_run, refused, failed, unaudited, not_found, invalid
    reason: str = ""
    id: str = ""
    zonename: str = ""
    asked: dict[str, int] = field(default_factory=dict)
    before: dict[str, int | None] = field(default_factory=dict)
    after: dict[str, int | None] = field(default_factory=dict)
    differences: dict[str, dict[str, int | None]] = field(default_factory=dict)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "status": self.status}
        for key in ("id", "zonename", "reason"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.asked:
            out.update(asked=self.asked, before=self.before, dry_run=self.dry_run)
        if self.after:
            out["after"] = self.after
        if self.differences:
            out["differences"] = self.differences
        return out


def _now_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ControlService:
    def __init__(
        self,
        platform: Platform,
        policy: Policy,
        audit: AuditLog,
        counters: AuditCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platform = platform
        self.policy = policy
        self.audit = audit
        self.counters = counters or AuditCounters()
        self.clock = clock
        self._slots = threading.BoundedSemaphore(policy.concurrent)
        self._zone_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def set_policy(self, policy: Policy) -> None:
        """Put a re-read policy (SIGHUP) in force from the next request on. Cooldowns and
        the hourly count come from the audit log, not from the policy, so the changes
        already made count under the new policy as they did under the old one. A request
        under way finishes under the policy it started with."""
        with self._guard:
            if policy.concurrent != self.policy.concurrent:
                # requests under way release the semaphore they took
                self._slots = threading.BoundedSemaphore(policy.concurrent)
            self.policy = policy

    # --- reading ------------------------------------------------------------------

    def zones(self) -> list[ZoneCaps]:
        return self.platform.inventory()

    def find(self, ident: str) -> ZoneCaps:
        """A zone by zonename or unique alias; ValidationError / LookupError otherwise."""
        if not valid_zonename(ident):
            raise ValidationError(
                f"not a zone name: {ident[:70]!r} (letters, digits, '-', '_', '.'; at most 63)"
            )
        zones = self.platform.inventory()
        by_name = [z for z in zones if z.zonename == ident]
        if by_name:
            return by_name[0]
        by_alias = [z for z in zones if z.alias == ident]
        if len(by_alias) == 1:
            return by_alias[0]
        if len(by_alias) > 1:
            raise LookupError(f"alias {ident!r} names {len(by_alias)} zones; use the zonename")
        raise LookupError(f"no zone named {ident!r}")

    def show(self, ident: str) -> ZoneCaps:
        return self.platform.read(self.find(ident))

    # --- changing -----------------------------------------------------------------

    def change(
        self,
        ident: str,
        changes: dict[str, object],
        requester: Requester,
        dry_run: bool = False,
        reason: str = "",
        may_touch: Callable[[ZoneInfo], bool] | None = None,
    ) -> Outcome:
        """Validate, check the policy, audit, apply, read back, audit; never raises for
        anything a caller sent."""
        action_id = "c-" + uuidlib.uuid4().hex[:16]
        reason = reason[:500]
        base: dict[str, Any] = {
            "id": action_id,
            "who": requester.who,
            "from": requester.address,
            "source": requester.source,
            "reason": reason,
            "dry_run": dry_run,
        }
        if requester.alert:
            base["alert"] = requester.alert
        if not valid_zonename(ident):
            return self._refuse(
                base, repr(ident[:70]), {}, {}, 400, "invalid", f"not a zone name: {ident[:70]!r}"
            )
        safe_zone = ident
        try:
            asked = check_changes(changes)
            zone = self.find(ident)
        except ValidationError as exc:
            return self._refuse(
                base, safe_zone, {}, {}, 422 if changes else 400, "invalid", str(exc)
            )
        except LookupError as exc:
            return self._refuse(base, safe_zone, {}, {}, 404, "not_found", str(exc))
        except PlatformError as exc:
            return self._refuse(base, safe_zone, {}, {}, 503, "failed", f"cannot list zones: {exc}")
        info = ZoneInfo(zone.zonename, zone.alias, zone.tags, zone.customer_metadata)
        if may_touch is not None and not may_touch(info):
            return self._refuse(
                base,
                zone.zonename,
                {str(k): v for k, v in asked.items()},
                {},
                403,
                "refused",
                f"not allowed to change zone {zone.zonename}",
            )

        def refused(status: int, result: str, why: str) -> Outcome:
            """The zone's request refused before any of its values was read."""
            return self._refuse(base, zone.zonename, asked, {}, status, result, why)

        unknown_links = [
            k for k in asked if k.startswith("maxbw.") and k.partition(".")[2] not in zone.links
        ]
        if unknown_links:
            link = unknown_links[0][6:]
            return refused(422, "invalid", f"zone {zone.zonename} has no link {link}")
        unsupported = [k for k in asked if k in self.platform.unsupported]
        if unsupported:
            return refused(422, "invalid", self.platform.unsupported[unsupported[0]])
        lock = self._zone_lock(zone.zonename)
        with self._guard:  # one policy for the whole request, even across a reload
            policy, slots = self.policy, self._slots
        if not slots.acquire(blocking=False):
            return refused(429, "refused", f"{policy.concurrent} change(s) already in progress")
        try:
            if not lock.acquire(blocking=False):
                return refused(
                    409, "refused", f"another change of {zone.zonename} is in progress"
                )
            try:
                return self._change_locked(base, zone, info, asked, dry_run, policy)
            finally:
                lock.release()
        finally:
            slots.release()

    def _zone_lock(self, zonename: str) -> threading.Lock:
        with self._guard:
            return self._zone_locks.setdefault(zonename, threading.Lock())

    def _change_locked(
        self,
        base: dict[str, Any],
        zone: ZoneCaps,
        info: ZoneInfo,
        asked: dict[str, int],
        dry_run: bool,
        policy: Policy,
    ) -> Outcome:
        zone = self.platform.read(zone, asked)
        before = {k: zone.current(k) for k in asked}

        def refused(status: int, result: str, why: str) -> Outcome:
            """The request refused once the zone's values were read."""
            return self._refuse(base, zone.zonename, asked, before, status, result, why)

        if "quota" in asked and not zone.dataset:
            return refused(
                422, "invalid", zone.no_dataset or f"zone {zone.zonename} has no known dataset"
            )
        after_memory = {
            k: zone.current(k) for k in ("max_physical_memory", "max_swap", "max_locked_memory")
        }
        after_memory.update({k: v for k, v in asked.items() if k in after_memory})
        if "max_physical_memory" in asked:
            # vmadm moves swap and locked memory with physical memory when they are not
            # given (VM.js); the check applies to what would be asked of it.
            for k in ("max_swap", "max_locked_memory"):
                if k not in asked:
                    after_memory[k] = None
        try:
            check_memory(after_memory)
        except ValidationError as exc:
            return refused(422, "invalid", str(exc))
        try:
            with self.audit.exclusive():
                now = self.clock()
                history = self._history(now)
                if not dry_run and history.count >= policy.changes_per_hour:
                    return refused(
                        429,
                        "refused",
                        f"{history.count} changes in the last hour; the policy allows "
                        f"{policy.changes_per_hour}",
                    )
                for key, value in asked.items():
                    last = history.last.get((zone.zonename, key.partition(".")[0]))
                    refusal = check_change(
                        policy,
                        info,
                        key,
                        before.get(key),
                        value,
                        None if last is None else now - last,
                    )
                    if refusal is not None:
                        return refused(refusal.status, "refused", refusal.reason)
                record = dict(
                    base,
                    time=_now_iso(now),
                    phase="request",
                    zonename=zone.zonename,
                    asked=asked,
                    before=before,
                    result="dry_run" if dry_run else "pending",
                )
                self.audit.write(record)
        except AuditError as exc:
            return self._unaudited(base, zone.zonename, asked, before, exc)
        if dry_run:
            self.counters.add("dry_run")
            log.info(
                "control dry run",
                id=base["id"],
                zonename=zone.zonename,
                asked=asked,
                before=before,
                who=base["who"],
            )
            return Outcome(
                200,
                "dry_run",
                "nothing applied (dry run)",
                base["id"],
                zone.zonename,
                asked,
                before,
                dry_run=True,
            )
        problems = self.platform.apply(zone, asked)
        fresh = self._reread(zone, asked)
        after = {k: fresh.current(k) for k in asked}
        side = {
            k: v
            for k, v in fresh.values().items()
            if k not in asked and k in zone.live and v != zone.current(k)
        }
        differences = {
            k: {"asked": v, "live": after[k]}
            for k, v in asked.items()
            if after[k] != v and not (v == 0 and after[k] is None)
        }
        if (
            not fresh.live_known
            and fresh.running
            and any(
                k in fresh.live or k in fresh.configured
                for k in asked
                if "." not in k and k != "quota"
            )
        ):
            problems.append("the live values could not be read back: " + "; ".join(fresh.problems))
        if differences:
            problems.append(
                "not in effect: "
                + ", ".join(
                    f"{k} asked {d['asked']}, live {d['live']}" for k, d in differences.items()
                )
            )
        result = "failed" if problems else "applied"
        done = dict(
            base,
            time=_now_iso(self.clock()),
            phase="done",
            zonename=zone.zonename,
            asked=asked,
            before=before,
            after=after,
            also_changed=side,
            result=result,
            problems=problems,
        )
        try:
            self.audit.write(done)
        except AuditError as exc:
            self.counters.add("unaudited")
            log.error(
                "control change made but its outcome could not be audited",
                id=base["id"],
                zonename=zone.zonename,
                error=str(exc),
                result=result,
            )
            return Outcome(
                503,
                "unaudited",
                f"{result}, but the outcome could not be audited: {exc}",
                base["id"],
                zone.zonename,
                asked,
                before,
                after,
                differences,
            )
        self.counters.add(result)
        log.info(
            "control change",
            id=base["id"],
            zonename=zone.zonename,
            asked=asked,
            before=before,
            after=after,
            result=result,
            problems=problems,
            who=base["who"],
        )
        if problems:
            return Outcome(
                500,
                "failed",
                "; ".join(problems),
                base["id"],
                zone.zonename,
                asked,
                before,
                after,
                differences,
            )
        return Outcome(
            200, "applied", "", base["id"], zone.zonename, asked, before, dict(after, **side)
        )

    def _reread(self, zone: ZoneCaps, keys: dict[str, int]) -> ZoneCaps:
        try:
            fresh = next(
                (z for z in self.platform.inventory() if z.zonename == zone.zonename), None
            )
        except PlatformError as exc:
            zone.problems.append(str(exc))
            fresh = None
        if fresh is None:
            fresh = ZoneCaps(
                zonename=zone.zonename, state=zone.state, dataset=zone.dataset, links=zone.links
            )
        return self.platform.read(fresh, keys)

    def _refuse(
        self,
        base: dict[str, Any],
        zonename: str,
        asked: dict[str, Any],
        before: dict[str, int | None],
        status: int,
        result: str,
        reason: str,
    ) -> Outcome:
        record = dict(
            base,
            time=_now_iso(self.clock()),
            phase="refused",
            zonename=zonename,
            asked=asked,
            before=before,
            result="refused",
            refusal=reason,
            status=status,
        )
        try:
            self.audit.write(record)
        except AuditError as exc:
            return self._unaudited(base, zonename, asked, before, exc)
        self.counters.add("refused")
        log.warning(
            "control change refused",
            id=base["id"],
            zonename=zonename,
            status=status,
            reason=reason,
            who=base["who"],
            source=base["source"],
        )
        return Outcome(
            status,
            result,
            reason,
            base["id"],
            zonename,
            {k: v for k, v in asked.items() if isinstance(v, int)},
            before,
            dry_run=bool(base["dry_run"]),
        )

    def _unaudited(
        self,
        base: dict[str, Any],
        zonename: str,
        asked: dict[str, Any],
        before: dict[str, int | None],
        exc: AuditError,
    ) -> Outcome:
        self.counters.add("unaudited")
        log.error(
            "control request not audited, nothing done",
            id=base["id"],
            zonename=zonename,
            error=str(exc),
        )
        return Outcome(
            503,
            "unaudited",
            f"nothing done: {exc}",
            base["id"],
            zonename,
            {k: v for k, v in asked.items() if isinstance(v, int)},
            before,
        )

    @dataclass
    class _History:
        count: int = 0
        last: dict[tuple[str, str], float] = field(default_factory=dict)
        alert_keys: set[str] = field(default_factory=set)

    def _history(self, now: float) -> ControlService._History:
        """Changes attempted in the last hour and the last change of each zone+property,
        from the audit log (this process's and any other's)."""
        h = ControlService._History()
        for rec in self.audit.records(generations=1):
            if rec.get("phase") != "request" or rec.get("dry_run"):
                continue
            try:
                t = datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                continue
            if now - t < 3600:
                h.count += 1
            asked = rec.get("asked")
            if isinstance(asked, dict):
                for key in asked:
                    k = (str(rec.get("zonename")), str(key).partition(".")[0])
                    h.last[k] = max(h.last.get(k, t), t)
        return h

    def handled_alerts(self) -> set[str]:
        """Alert keys (fingerprint@startsAt) already acted on or refused."""
        keys = set()
        for rec in self.audit.records(generations=1):
            alert = rec.get("alert")
            if isinstance(alert, dict) and isinstance(alert.get("key"), str):
                keys.add(alert["key"])
        return keys

    def revert(self, action_id: str, requester: Requester, dry_run: bool = False) -> Outcome:
        """Put back the audited 'before' values of an applied change, under the policy."""
        done = None
        for rec in self.audit.records(generations=self.audit.keep):
            if rec.get("id") == action_id and rec.get("phase") == "done":
                done = rec
        if done is None:
            return Outcome(404, "not_found", f"no completed change with id {action_id!r:.40}")
        before = done.get("before")
        if not isinstance(before, dict):
            return Outcome(422, "invalid", f"change {action_id} has no before values")
        restore = {k: (0 if v is None else v) for k, v in before.items()}
        return self.change(
            str(done.get("zonename")),
            restore,
            requester,
            dry_run=dry_run,
            reason=f"revert {action_id}",
        )


def refusal_outcome(refusal: Refusal) -> Outcome:
    return Outcome(refusal.status, "refused", refusal.reason)
