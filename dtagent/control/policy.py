"""The control policy: which zones and properties may change, by how much, how often.

A TOML file named by ``control.policy`` in the config (docs/control.md has a complete
example). It is checked completely when it is loaded, like the config: an unknown key,
a wrong type or an impossible bound is a :class:`PolicyError` naming the file, the key
and what was expected (the CLI exits 2). Nothing is allowed unless the policy says so:
a property without a ``[properties.NAME]`` table cannot be changed at all.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtagent.control.properties import LINKNAME, PROPERTIES, ValidationError, check_value

SCOPES = ("read", "set", "alertmanager")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHANGE = re.compile(r"([+-])(\d+(?:\.\d+)?)%|([+-])(\d+)|=(\d+)")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PolicyError(Exception):
    """A policy problem; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class PropertyRule:
    """Bounds for one property. ``max_step_ratio`` 2.0: at most ×2 up or ÷2 down."""

    minimum: int
    maximum: int
    max_step_ratio: float | None = None
    cooldown_seconds: float = 0.0
    allow_none: bool = False  # may a change remove the cap (value 0)?


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    """What the policy may look at to decide whether a zone is in scope."""

    zonename: str
    alias: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    customer_metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ZoneSelector:
    """Zones in scope: any name, any alias glob, or all the given tags / metadata."""

    names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    customer_metadata: tuple[tuple[str, str], ...] = ()

    def matches(self, zone: ZoneInfo) -> bool:
        if zone.zonename in self.names:
            return True
        if zone.alias and any(fnmatch.fnmatchcase(zone.alias, g) for g in self.aliases):
            return True
        if self.tags and all(str(zone.tags.get(k)) == v for k, v in self.tags):
            return True
        return bool(self.customer_metadata) and all(
            str(zone.customer_metadata.get(k)) == v for k, v in self.customer_metadata
        )


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A firing alert (alertname + exact label matchers) → one change of one property."""

    alertname: str
    key: str  # cpu_cap, maxbw.net0, ...
    change: str  # "+25%", "-10%", "+100", "=400"
    matchers: tuple[tuple[str, str], ...] = ()
    limit: int | None = None  # the rule never goes past this (up: ceiling, down: floor)
    dry_run: bool | None = None  # None: the policy's automatic_dry_run

    def matches(self, labels: dict[str, str]) -> bool:
        return labels.get("alertname") == self.alertname and all(
            labels.get(k) == v for k, v in self.matchers
        )

    def target(self, current: int) -> int:
        m = _CHANGE.fullmatch(self.change)
        assert m is not None  # checked at load
        if m[5] is not None:
            value = int(m[5])
        elif m[1] is not None:
            delta = current * float(m[2]) / 100.0
            value = round(current + delta if m[1] == "+" else current - delta)
        else:
            value = current + int(m[4]) if m[3] == "+" else current - int(m[4])
        if self.limit is not None:
            value = min(value, self.limit) if value >= current else max(value, self.limit)
        return value


@dataclass(frozen=True, slots=True)
class Principal:
    """Who may call the API: a token (by its SHA-256) or a client certificate subject."""

    id: str
    scopes: frozenset[str]
    zones: tuple[str, ...] = ("*",)  # globs on zonename or alias
    sha256: str = ""
    subject: str = ""

    def may_touch(self, zone: ZoneInfo) -> bool:
        return any(
            fnmatch.fnmatchcase(zone.zonename, g)
            or (zone.alias and fnmatch.fnmatchcase(zone.alias, g))
            for g in self.zones
        )


@dataclass(frozen=True, slots=True)
class Policy:
    path: str
    zones: ZoneSelector
    properties: dict[str, PropertyRule]
    changes_per_hour: int = 10
    concurrent: int = 1
    automatic_dry_run: bool = True
    rules: tuple[AlertRule, ...] = ()
    tokens: tuple[Principal, ...] = ()
    clients: tuple[Principal, ...] = ()

    def rule_for(self, key: str) -> PropertyRule | None:
        return self.properties.get(key.partition(".")[0])

    def token(self, secret: str) -> Principal | None:
        """The token whose hash matches (constant-time comparison of every hash)."""
        import hmac

        digest = hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()
        found = None
        for t in self.tokens:
            if hmac.compare_digest(t.sha256, digest):
                found = t
        return found

    def client(self, subject: str) -> Principal | None:
        return next((c for c in self.clients if c.subject == subject), None)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- loading -----------------------------------------------------------------------


class _Checker:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, key: str, expected: str, got: object = None, show: bool = True) -> PolicyError:
        tail = f", got {got!r:.60}" if show else ""
        return PolicyError(f"{self.origin}: key {key!r}: expected {expected}{tail}")

    def table(self, raw: object, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, "a table", raw)
        for k in raw:
            if k not in allowed:
                raise PolicyError(
                    f"{self.origin}: key {(key + '.' if key else '') + k!r}: unknown key; "
                    f"known: {', '.join(sorted(allowed))}"
                )
        return raw

    def int_(self, raw: object, key: str, lo: int = 0, hi: int = 2**63) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not lo <= raw <= hi:
            raise self.fail(key, f"a whole number from {lo} to {hi}", raw)
        return raw

    def num(self, raw: object, key: str, lo: float, hi: float) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not lo <= raw <= hi:
            raise self.fail(key, f"a number from {lo:g} to {hi:g}", raw)
        return float(raw)

    def bool_(self, raw: object, key: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(key, "true or false", raw)
        return raw

    def str_(
        self, raw: object, key: str, pattern: re.Pattern[str] | None = None, what: str = "a string"
    ) -> str:
        if (
            not isinstance(raw, str)
            or not raw
            or len(raw) > 256
            or (pattern is not None and pattern.fullmatch(raw) is None)
        ):
            raise self.fail(key, what, raw)
        return raw

    def strs(self, raw: object, key: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
            raise self.fail(key, "a list of strings", raw)
        return tuple(raw)

    def labels(self, raw: object, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(raw, dict):
            raise self.fail(key, "a table of label = value", raw)
        out = []
        for k, v in raw.items():
            if _LABEL.fullmatch(k) is None or not isinstance(v, str | int | bool):
                raise self.fail(f"{key}.{k}", "a label name with a string value", v)
            out.append((k, str(v).lower() if isinstance(v, bool) else str(v)))
        return tuple(sorted(out))


def _property_rule(c: _Checker, name: str, raw: object) -> PropertyRule:
    key = f"properties.{name}"
    if name not in PROPERTIES:
        raise PolicyError(
            f"{c.origin}: key {key!r}: unknown property; known: {', '.join(PROPERTIES)}"
        )
    prop = PROPERTIES[name]
    t = c.table(raw, key, {"min", "max", "max_step_ratio", "cooldown_seconds", "allow_none"})
    for bound in ("min", "max"):
        if bound not in t:
            raise PolicyError(f"{c.origin}: key '{key}.{bound}': required")
    lo = c.int_(t["min"], f"{key}.min", prop.minimum, prop.maximum)
    hi = c.int_(t["max"], f"{key}.max", prop.minimum, prop.maximum)
    if lo > hi:
        raise c.fail(f"{key}.min", f"at most max ({hi})", lo)
    ratio = t.get("max_step_ratio")
    return PropertyRule(
        minimum=lo,
        maximum=hi,
        max_step_ratio=None
        if ratio is None
        else c.num(ratio, f"{key}.max_step_ratio", 1.0, 1000.0),
        cooldown_seconds=c.num(
            t.get("cooldown_seconds", 0), f"{key}.cooldown_seconds", 0, 7 * 86400
        ),
        allow_none=c.bool_(t.get("allow_none", False), f"{key}.allow_none")
        if prop.zero_means_none
        else _no_none(c, t, key),
    )


def _no_none(c: _Checker, t: dict[str, Any], key: str) -> bool:
    if "allow_none" in t:
        raise PolicyError(f"{c.origin}: key '{key}.allow_none': this property has no 'none' value")
    return False


def _rule(c: _Checker, i: int, raw: object, props: dict[str, PropertyRule]) -> AlertRule:
    key = f"rules[{i}]"
    t = c.table(raw, key, {"alertname", "matchers", "property", "change", "limit", "dry_run"})
    for req in ("alertname", "property", "change"):
        if req not in t:
            raise PolicyError(f"{c.origin}: key '{key}.{req}': required")
    alertname = c.str_(t["alertname"], f"{key}.alertname", _LABEL, "an alert name")
    prop_key = c.str_(t["property"], f"{key}.property")
    name, _, link = prop_key.partition(".")
    if (
        name not in PROPERTIES
        or (name == "maxbw") != bool(link)
        or (link and LINKNAME.fullmatch(link) is None)
    ):
        raise c.fail(f"{key}.property", "a property name (maxbw as maxbw.LINK)", prop_key)
    if name not in props:
        raise c.fail(
            f"{key}.property", f"a property the policy allows (add [properties.{name}])", prop_key
        )
    change = c.str_(t["change"], f"{key}.change", _CHANGE, "'+25%', '-10%', '+100' or '=400'")
    limit = None
    if "limit" in t:
        try:
            limit = check_value(prop_key, t["limit"])
        except ValidationError as exc:
            raise PolicyError(f"{c.origin}: key '{key}.limit': {exc}") from None
    return AlertRule(
        alertname=alertname,
        key=prop_key,
        change=change,
        matchers=c.labels(t.get("matchers", {}), f"{key}.matchers"),
        limit=limit,
        dry_run=c.bool_(t["dry_run"], f"{key}.dry_run") if "dry_run" in t else None,
    )


def _principal(c: _Checker, key: str, raw: object, kind: str) -> Principal:
    need = "sha256" if kind == "token" else "subject"
    t = c.table(raw, key, {"id", need, "scopes", "zones"})
    for req in ("id", need, "scopes"):
        if req not in t:
            raise PolicyError(f"{c.origin}: key '{key}.{req}': required")
    scopes = c.strs(t["scopes"], f"{key}.scopes")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise c.fail(f"{key}.scopes", f"a list of {', '.join(SCOPES)}", t["scopes"])
    zones = c.strs(t.get("zones", ["*"]), f"{key}.zones")
    if kind == "token":
        digest = c.str_(
            t["sha256"],
            f"{key}.sha256",
            _HEX64,
            "64 lowercase hex digits (dtagent caps token prints them)",
        )
        return Principal(c.str_(t["id"], f"{key}.id"), frozenset(scopes), zones, sha256=digest)
    return Principal(
        c.str_(t["id"], f"{key}.id"),
        frozenset(scopes),
        zones,
        subject=c.str_(t["subject"], f"{key}.subject"),
    )


def _read_toml(path: Path, origin: str, private: bool) -> dict[str, Any]:
    try:
        st = path.stat()
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise PolicyError(f"{origin}: no such file") from None
    except OSError as exc:
        raise PolicyError(f"{origin}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{origin}: not valid TOML ({exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"{origin}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise PolicyError(
            f"{origin}: writable by group or others (mode {mode:04o}); chmod go-w it: "
            "whoever can write it can grant themselves changes"
        )
    if private and mode & 0o077:
        raise PolicyError(f"{origin}: readable by group or others (mode {mode:04o}); chmod 600 it")
    if st.st_uid not in (0, os.geteuid()):
        raise PolicyError(f"{origin}: owned by uid {st.st_uid}, not root or this user")
    return data


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file (and the tokens file it names)."""
    path = Path(path)
    origin = str(path)
    raw = _read_toml(path, origin, private=False)
    c = _Checker(origin)
    top = c.table(
        raw, "", {"zones", "limits", "properties", "rules", "tokens", "tokens_file", "clients"}
    )
    zt = c.table(top.get("zones", {}), "zones", {"names", "aliases", "tags", "customer_metadata"})
    names = c.strs(zt.get("names", []), "zones.names")
    for n in names:
        from dtagent.control.properties import valid_zonename

        if not valid_zonename(n):
            raise c.fail("zones.names", "zone names", n)
    zones = ZoneSelector(
        names=names,
        aliases=c.strs(zt.get("aliases", []), "zones.aliases"),
        tags=c.labels(zt.get("tags", {}), "zones.tags"),
        customer_metadata=c.labels(zt.get("customer_metadata", {}), "zones.customer_metadata"),
    )
    lt = c.table(
        top.get("limits", {}), "limits", {"changes_per_hour", "concurrent", "automatic_dry_run"}
    )
    pt = c.table(top.get("properties", {}), "properties", set(PROPERTIES))
    props = {name: _property_rule(c, name, t) for name, t in pt.items()}
    rules_raw = top.get("rules", [])
    if not isinstance(rules_raw, list):
        raise c.fail("rules", "an array of tables ([[rules]])", rules_raw)
    rules = tuple(_rule(c, i, r, props) for i, r in enumerate(rules_raw))
    tokens_raw = top.get("tokens", [])
    if "tokens_file" in top:
        tpath = Path(c.str_(top["tokens_file"], "tokens_file"))
        if not tpath.is_absolute():
            tpath = path.parent / tpath
        tdata = _read_toml(tpath, str(tpath), private=True)
        tc = _Checker(str(tpath))
        tdata = tc.table(tdata, "", {"tokens"})
        tokens_raw = [*tokens_raw, *(tdata.get("tokens", []))]
        c_tokens = tc
    else:
        c_tokens = c
    if not isinstance(tokens_raw, list):
        raise c.fail("tokens", "an array of tables ([[tokens]])", tokens_raw)
    tokens = tuple(
        _principal(c_tokens, f"tokens[{i}]", t, "token") for i, t in enumerate(tokens_raw)
    )
    ids = [t.id for t in tokens]
    if len(set(ids)) != len(ids):
        raise c.fail("tokens", "unique ids", ids)
    clients_raw = top.get("clients", [])
    if not isinstance(clients_raw, list):
        raise c.fail("clients", "an array of tables ([[clients]])", clients_raw)
    clients = tuple(_principal(c, f"clients[{i}]", t, "client") for i, t in enumerate(clients_raw))
    return Policy(
        path=origin,
        zones=zones,
        properties=props,
        changes_per_hour=c.int_(
            lt.get("changes_per_hour", 10), "limits.changes_per_hour", 0, 10000
        ),
        concurrent=c.int_(lt.get("concurrent", 1), "limits.concurrent", 1, 64),
        automatic_dry_run=c.bool_(lt.get("automatic_dry_run", True), "limits.automatic_dry_run"),
        rules=rules,
        tokens=tokens,
        clients=clients,
    )


# --- decisions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the policy says no, with the HTTP status that says it."""

    status: int
    reason: str


def check_change(
    policy: Policy,
    zone: ZoneInfo,
    key: str,
    before: int | None,
    asked: int,
    last_change_age: float | None,
) -> Refusal | None:
    """One property change against the policy's rules; None when it is allowed.

    ``before`` None means the property has no value now (uncapped); ``last_change_age``
    is seconds since this zone's property was last changed (None: never).
    """
    if not policy.zones.matches(zone):
        return Refusal(403, f"zone {zone.zonename} is not in the policy's zones")
    rule = policy.rule_for(key)
    if rule is None:
        return Refusal(403, f"the policy does not allow changing {key.partition('.')[0]}")
    prop = PROPERTIES[key.partition(".")[0]]
    if asked == 0 and prop.zero_means_none:
        if not rule.allow_none:
            return Refusal(422, f"{key}: removing the cap (0) is not allowed by the policy")
    elif not rule.minimum <= asked <= rule.maximum:
        return Refusal(
            422,
            f"{key}: {asked} is outside the policy's {rule.minimum}..{rule.maximum} {prop.unit}",
        )
    if rule.max_step_ratio is not None and before and asked:
        ratio = asked / before if asked >= before else before / asked
        if ratio > rule.max_step_ratio + 1e-9:
            return Refusal(
                422,
                f"{key}: {before} → {asked} is a step of ×{ratio:.2f}; the policy allows at "
                f"most ×{rule.max_step_ratio:g} per change",
            )
    if last_change_age is not None and last_change_age < rule.cooldown_seconds:
        wait = rule.cooldown_seconds - last_change_age
        return Refusal(
            409,
            f"{key} of {zone.zonename} changed {last_change_age:.0f}s ago; cooldown "
            f"{rule.cooldown_seconds:g}s (retry in {wait:.0f}s)",
        )
    return None
