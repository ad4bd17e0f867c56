"""The agent's configuration: a TOML file (see examples/dtagent.toml), overridden by flags.

Every key is checked: an unknown key, a wrong type or a bad value is a
:class:`ConfigError` naming the file, the key and what was expected, and the CLI exits
with status 2. Collector settings (``[collectors.<name>]``) are checked against the
collector's own constructor, so a new collector setting needs no change here.
"""

from __future__ import annotations

import inspect
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtagent.listen import parse_listen

DEFAULT_LISTEN = "127.0.0.1:9718"


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""


@dataclass(frozen=True)
class Setting:
    type: type | tuple[type, ...]
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a problem or None


def _positive(value: Any) -> str | None:
    return None if value > 0 else "a number greater than 0"


def _choice(*options: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else "one of " + ", ".join(repr(o) for o in options)

    return check


def _listen(value: Any) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return f"HOST:PORT ({exc})"
    return None


def _str_list(value: Any) -> str | None:
    return None if all(isinstance(v, str) for v in value) else "a list of strings"


def _env_names(value: Any) -> str | None:
    if not all(isinstance(v, str) and v and "=" not in v for v in value):
        return "a list of environment variable names"
    if {"PATH", "LC_ALL", "LANG"} & set(value):
        return "no PATH, LC_ALL or LANG (the agent sets those)"
    return None


SCHEMA: dict[str, dict[str, Setting]] = {
    "agent": {
        "listen": Setting(str, DEFAULT_LISTEN, "address to serve /metrics on", _listen),
        "web_config": Setting(
            str,
            "",
            "exporter-toolkit web-config.yml: TLS, basic auth, headers (see docs/security.md)",
        ),
        "max_connections": Setting(
            int, 1024, "open connections at most; more are closed at once", _positive
        ),
        "header_timeout": Setting(
            (int, float),
            10.0,
            "seconds for a whole request head (and body) to arrive, from its first byte",
            _positive,
        ),
        "idle_timeout": Setting(
            (int, float), 60.0, "seconds an idle keep-alive connection is kept", _positive
        ),
        "write_timeout": Setting(
            (int, float),
            30.0,
            "seconds for a client to take a whole response before it is cut off",
            _positive,
        ),
        "max_renders": Setting(
            int, 2, "collections and renders at once (different collect[] filters)", _positive
        ),
        "log_level": Setting(
            str,
            "info",
            "debug, info, warning or error",
            _choice("debug", "info", "warning", "error"),
        ),
        "log_format": Setting(
            str,
            "auto",
            "auto (console on a terminal, else JSON), json, console",
            _choice("auto", "json", "console"),
        ),
    },
    "sources": {
        "replay": Setting(str, "", "serve this bundle instead of the live host"),
        "replay_speed": Setting(
            (int, float), 1.0, "bundle seconds per wall-clock second", _positive
        ),
        "platform": Setting(
            str,
            "auto",
            "auto (illumos sources when the host runs illumos) or illumos (use them anyway: "
            "for stand-in libraries and commands)",
            _choice("auto", "illumos"),
        ),
        "libkstat": Setting(str, "libkstat.so.1", "libkstat to load"),
        "command_path": Setting(
            str,
            "/usr/sbin:/usr/bin:/sbin:/bin",
            "PATH used to find vmadm, zoneadm, zfs, dladm, flowadm (and the only PATH "
            "they get)",
        ),
        "command_env": Setting(
            list,
            [],
            "names of the agent's environment variables the commands get too (otherwise "
            "they get only PATH and LC_ALL=C)",
            _env_names,
        ),
    },
    "collectors": {
        "enabled": Setting(list, ["all"], 'collectors to run, or ["all"]', _str_list),
        "disabled": Setting(list, [], "collectors not to run", _str_list),
    },
    "dtrace": {
        "enabled": Setting(bool, True, "run the D scripts (needs DTrace privileges)"),
        "script_dirs": Setting(
            list, [], "extra directories of NAME.d + NAME.toml scripts", _str_list
        ),
        "scripts": Setting(dict, {}, "per-script on/off, e.g. { syscall = false }"),
        "libdtrace": Setting(str, "libdtrace.so.1", "libdtrace to load"),
        "series_cap": Setting(
            int, 10000, "most series per DTrace metric; more are refused and counted", _positive
        ),
        "hang_timeout": Setting(
            (int, float),
            15.0,
            "seconds without a heartbeat before the DTrace worker is killed and restarted",
            _positive,
        ),
        "max_backoff": Setting(
            (int, float), 60.0, "longest wait before restarting a failed DTrace worker", _positive
        ),
    },
    # The control wing (docs/control.md): off unless enabled, and then only with a policy
    # that names who may do what.
    "control": {
        "enabled": Setting(
            bool, False, "serve the control API (/api/v1) beside /metrics; needs a policy"
        ),
        "policy": Setting(str, "", "the control policy file (TOML; see docs/control.md)"),
        "audit_log": Setting(
            str, "/var/log/dtagent/control.log", "the audit log: one JSON line per request"
        ),
        "audit_max_bytes": Setting(
            int, 10 * 1024 * 1024, "size at which the audit log is rotated", _positive
        ),
        "audit_keep": Setting(int, 5, "rotated audit logs kept", _positive),
        "command_timeout": Setting(
            (int, float), 30.0, "seconds vmadm, prctl, zonecfg, dladm or zfs may take", _positive
        ),
        "max_body_bytes": Setting(
            int, 64 * 1024, "largest request body the API reads", _positive
        ),
        "allow_plaintext_on_network": Setting(
            bool,
            False,
            "serve the control API without TLS on a non-loopback address (tokens then "
            "cross the network in clear text)",
        ),
    },
}


@dataclass
class Config:
    """Validated settings; ``values[section][key]`` with defaults filled in."""

    path: str | None = None
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    collector_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]

    def set(self, section: str, key: str, value: Any, origin: str = "flag") -> None:
        """Override one setting (from a command-line flag), with the same checks."""
        self.values[section][key] = _check(origin, f"{section}.{key}", SCHEMA[section][key], value)


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(t, tuple):
        return "a number" if set(t) == {int, float} else " or ".join(names[x] for x in t)
    return names.get(t, t.__name__)


def _check(origin: str, key: str, setting: Setting, value: Any) -> Any:
    expected = setting.type
    ok = isinstance(value, expected) and not (
        isinstance(value, bool)
        and expected is not bool
        and bool not in (expected if isinstance(expected, tuple) else (expected,))
    )
    if not ok:
        raise ConfigError(f"{origin}: key {key!r}: expected {_type_name(expected)}, got {value!r}")
    if setting.check is not None and (problem := setting.check(value)):
        raise ConfigError(f"{origin}: key {key!r}: expected {problem}, got {value!r}")
    return value


def _collector_params(cls: type) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls)
    return {
        name: p
        for name, p in sig.parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _annotation_types(cls: type, name: str) -> tuple[type, ...] | None:
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:
        return None
    hint = hints.get(name)
    if hint is None:
        return None
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    out: list[type] = []
    for a in args:
        origin = typing.get_origin(a) or a
        if isinstance(origin, type):
            out.append(origin)
            if origin is float:
                out.append(int)
    return tuple(out) or None


def _check_collectors(
    origin: str, table: dict[str, Any], available: dict[str, type]
) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for name, sub in table.items():
        if name in SCHEMA["collectors"]:
            continue
        if name not in available:
            raise ConfigError(
                f"{origin}: key 'collectors.{name}': unknown collector; known: "
                + ", ".join(sorted(available))
            )
        if not isinstance(sub, dict):
            raise ConfigError(f"{origin}: key 'collectors.{name}': expected a table")
        params = _collector_params(available[name])
        for key, value in sub.items():
            if key not in params:
                known = ", ".join(sorted(params)) or "none"
                raise ConfigError(
                    f"{origin}: key 'collectors.{name}.{key}': unknown setting; known: {known}"
                )
            types_ok = _annotation_types(available[name], key)
            if types_ok and (
                not isinstance(value, types_ok)
                or (isinstance(value, bool) and bool not in types_ok)
            ):
                raise ConfigError(
                    f"{origin}: key 'collectors.{name}.{key}': expected "
                    f"{' or '.join(t.__name__ for t in types_ok)}, got {value!r}"
                )
        settings[name] = dict(sub)
    return settings


def load(path: str | Path | None, available: dict[str, type] | None = None) -> Config:
    """Read and check a config file (None: all defaults)."""
    from dtagent.collectors import available as available_collectors

    collectors = available if available is not None else available_collectors()
    raw: dict[str, Any] = {}
    origin = str(path) if path is not None else "defaults"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    config = Config(path=str(path) if path is not None else None)
    for section in raw:
        if section not in SCHEMA:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: " + ", ".join(SCHEMA))
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{origin}: key {section!r}: expected a table")
    for section, settings in SCHEMA.items():
        given = raw.get(section, {})
        values: dict[str, Any] = {}
        for key, value in given.items():
            if key not in settings:
                if section == "collectors" and isinstance(value, dict):
                    continue
                raise ConfigError(
                    f"{origin}: key '{section}.{key}': unknown setting; known: "
                    + ", ".join(settings)
                )
            values[key] = _check(origin, f"{section}.{key}", settings[key], value)
        for key, setting in settings.items():
            values.setdefault(key, setting.default)
        config.values[section] = values
    for name in [*config.values["collectors"]["enabled"], *config.values["collectors"]["disabled"]]:
        if name != "all" and name not in collectors:
            raise ConfigError(
                f"{origin}: key 'collectors.enabled/disabled': unknown collector {name!r}; "
                "known: " + ", ".join(sorted(collectors))
            )
    config.collector_settings = _check_collectors(origin, raw.get("collectors", {}), collectors)
    for script, on in config.values["dtrace"]["scripts"].items():
        if not isinstance(on, bool):
            raise ConfigError(f"{origin}: key 'dtrace.scripts.{script}': expected true or false")
    return config
