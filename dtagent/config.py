"""The agent's configuration: a TOML file (see examples/dtagent.toml), overridden by flags.

Every setting is declared in :mod:`dtagent.settings` (type, range, default, help): the
sections below, and each collector's ``[collectors.NAME]`` table in the collector's
``settings``. :func:`load` checks the whole file before anything starts and raises one
:class:`ConfigError` listing every problem, each naming the file, the key, the value
and what was expected; the CLI prints them and exits with status 2.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtagent import settings as s
from dtagent.listen import parse_listen
from dtagent.settings import Problem, Setting

if TYPE_CHECKING:
    from dtagent.collectors.base import Collector

DEFAULT_LISTEN = "127.0.0.1:9718"
# A config is a few kilobytes; anything this large is not one.
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(Exception):
    """Configuration problems; each line of the message names the file and the key."""

    def __init__(self, problems: list[Problem] | str) -> None:
        self.problems: list[str] = (
            [problems] if isinstance(problems, str) else [str(p) for p in problems]
        )
        super().__init__("\n".join(self.problems))


def _listen_ok(value: str) -> bool:
    try:
        parse_listen(value)
    except ValueError:
        return False
    return True


def _collector_names() -> Collection[str]:
    from dtagent.collectors import available

    return [*available(), "all"]


def _env_name_ok(name: str) -> bool:
    return bool(name) and "=" not in name and name not in ("PATH", "LC_ALL", "LANG")


SCHEMA: dict[str, dict[str, Setting]] = {
    "agent": {
        "listen": s.text(
            DEFAULT_LISTEN,
            "address to serve /metrics on",
            expected="HOST:PORT or [V6]:PORT, the port 0 to 65535 in ASCII digits",
            valid=_listen_ok,
        ),
        "web_config": s.text(
            "",
            "exporter-toolkit web-config.yml: TLS, basic auth, headers (see docs/security.md)",
            expected="a file path, or empty",
        ),
        "max_connections": s.integer(
            1024, "open connections at most; more are closed at once", minimum=1, maximum=65536
        ),
        "header_timeout": s.timeout(
            10.0,
            "seconds for a whole request head (and body) to arrive, from its first byte",
            maximum=3600.0,
        ),
        "idle_timeout": s.timeout(
            60.0, "seconds an idle keep-alive connection is kept", maximum=3600.0
        ),
        "write_timeout": s.timeout(
            30.0,
            "seconds for a client to take a whole response before it is cut off",
            maximum=3600.0,
        ),
        "max_renders": s.integer(
            2,
            "collections and renders at once (different collect[] filters)",
            minimum=1,
            maximum=64,
        ),
        "log_level": s.choice(
            "info", "debug, info, warning or error", ("debug", "info", "warning", "error")
        ),
        "log_format": s.choice(
            "auto",
            "auto (console on a terminal, else JSON), json, console",
            ("auto", "json", "console"),
        ),
    },
    "sources": {
        "replay": s.text("", "serve this bundle instead of the live host", expected="a path"),
        "replay_speed": s.number(
            1.0, "bundle seconds per wall-clock second", above=0.0, maximum=1000.0
        ),
        "platform": s.choice(
            "auto",
            "auto (illumos sources when the host runs illumos) or illumos (use them anyway: "
            "for stand-in libraries and commands)",
            ("auto", "illumos"),
        ),
        "libkstat": s.text(
            "libkstat.so.1",
            "libkstat to load",
            expected="a library name or path",
            valid=bool,
        ),
        "command_path": s.text(
            "/usr/sbin:/usr/bin:/sbin:/bin",
            "PATH used to find vmadm, zoneadm, zfs, dladm, flowadm (and the only PATH "
            "they get)",
            expected="a PATH of directories separated by ':'",
            valid=bool,
        ),
        "command_env": s.string_list(
            [],
            "names of the agent's environment variables the commands get too (otherwise "
            "they get only PATH and LC_ALL=C)",
            what="environment variable names, not PATH, LC_ALL or LANG (the agent sets those)",
            valid=_env_name_ok,
        ),
    },
    "collectors": {
        "enabled": s.string_list(
            ["all"], 'collectors to run, or ["all"]', choices=_collector_names,
            what="collector names",
        ),
        "disabled": s.string_list(
            [], "collectors not to run", choices=_collector_names, what="collector names"
        ),
    },
    "dtrace": {
        "enabled": s.boolean(True, "run the D scripts (needs DTrace privileges)"),
        "script_dirs": s.string_list(
            [], "extra directories of NAME.d + NAME.toml scripts (each must exist)"
        ),
        "scripts": s.switches(
            {}, "per-script on/off, e.g. { syscall = false }; names must be known scripts"
        ),
        "libdtrace": s.text(
            "libdtrace.so.1", "libdtrace to load", expected="a library name or path", valid=bool
        ),
        "series_cap": s.integer(
            10000,
            "most series per DTrace metric; more are refused and counted",
            minimum=1,
            maximum=10_000_000,
        ),
        "zone_buckets": s.choice(
            "1-2-5",
            "bounds of the per-zone latency histograms: 1-2-5 per decade (22 buckets, 1 us "
            "to 10 s) or 1-10 (8 buckets, less than half the series; see docs/dtrace.md)",
            ("1-2-5", "1-10"),
        ),
        "walk_interval": s.integer(
            10,
            "seconds between the worker's walks of the aggregations: a scrape's DTrace "
            "figures are at most this old; each walk costs one record per key that fired "
            "(see docs/dtrace.md)",
            minimum=1,
            maximum=300,
        ),
        "hang_timeout": s.timeout(
            15.0, "seconds without a heartbeat before the DTrace worker is killed and restarted"
        ),
        "max_backoff": s.timeout(
            60.0, "longest wait before restarting a failed DTrace worker"
        ),
    },
    # The control wing (docs/control.md): off unless enabled, and then only with a policy
    # that names who may do what.
    "control": {
        "enabled": s.boolean(
            False, "serve the control API (/api/v1) beside /metrics; needs a policy"
        ),
        "policy": s.text(
            "", "the control policy file (TOML; see docs/control.md)",
            expected="a file path, or empty",
        ),
        "audit_log": s.text(
            "/var/log/dtagent/control.log", "the audit log: one JSON line per request",
            expected="a file path", valid=bool,
        ),
        "audit_max_bytes": s.integer(
            10 * 1024 * 1024, "size at which the audit log is rotated",
            minimum=1, maximum=1 << 40,
        ),
        "audit_keep": s.integer(5, "rotated audit logs kept", minimum=1, maximum=1000),
        "command_timeout": s.timeout(
            30.0, "seconds vmadm, prctl, zonecfg, dladm or zfs may take", maximum=3600.0
        ),
        "max_body_bytes": s.integer(
            64 * 1024, "largest request body the API reads", minimum=1, maximum=16 << 20
        ),
        "allow_plaintext_on_network": s.boolean(
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
        checked = s.check_value(origin, f"{section}.{key}", SCHEMA[section][key], value)
        if isinstance(checked, Problem):
            raise ConfigError([checked])
        self.values[section][key] = checked


def _read(path: str | Path) -> dict[str, Any]:
    """The parsed TOML document; any reason it cannot be read is one ConfigError line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML (not UTF-8 text: byte {exc.start} is 0x{data[exc.start]:02x})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None


def _script_dir_problem(entry: str) -> str | None:
    """What is wrong with one ``dtrace.script_dirs`` entry (None: it is a directory).

    A directory that is not there would otherwise be skipped without a word, and the
    scripts the operator put in it would never run."""
    try:
        is_dir = Path(entry).is_dir()
        exists = is_dir or Path(entry).exists()
    except OSError as exc:  # too long a name, a loop of links
        return f"an existing directory of NAME.d + NAME.toml scripts ({exc.strerror})"
    if is_dir:
        return None
    what = "not a directory" if exists else "no such directory"
    return f"an existing directory of NAME.d + NAME.toml scripts ({what})"


def _known_scripts(script_dirs: list[str]) -> set[str]:
    from dtagent.dtrace.spec import script_dirs as all_dirs

    return {p.stem for d in all_dirs(script_dirs) if d.is_dir() for p in d.glob("*.d")}


def _check_collectors(
    origin: str,
    table: Mapping[str, Any],
    available: Mapping[str, type[Collector]],
    problems: list[Problem],
) -> dict[str, dict[str, Any]]:
    """Each ``[collectors.NAME]`` table against that collector's declared settings."""
    out: dict[str, dict[str, Any]] = {}
    for name, sub in table.items():
        if name in SCHEMA["collectors"]:
            continue
        key = f"collectors.{name}"
        if name not in available:
            known = ", ".join(sorted(available))
            problems.append(s.missing_key_problem(origin, key, f"a known collector ({known})"))
            continue
        if not isinstance(sub, dict):
            problems.append(Problem(origin, key, sub, "a table of the collector's settings"))
            continue
        declared: Mapping[str, Setting] = available[name].settings
        before = len(problems)
        values = s.check_table(origin, key, declared, sub, problems)
        if len(problems) == before:
            for setting, expected in available[name].settings_problems(values).items():
                problems.append(Problem(origin, f"{key}.{setting}", values[setting], expected))
        out[name] = {k: v for k, v in values.items() if k in sub}
    return out


def _collector_table(key: str, value: Any) -> bool:
    return isinstance(value, dict)  # a [collectors.NAME] table: checked by _check_collectors


def _never(key: str, value: Any) -> bool:
    return False


def load(
    path: str | Path | None, available: Mapping[str, type[Collector]] | None = None
) -> Config:
    """Read and check a config file (None: all defaults); every problem at once."""
    from dtagent.collectors import available as available_collectors

    collectors = available if available is not None else available_collectors()
    raw = _read(path) if path is not None else {}
    origin = str(path) if path is not None else "defaults"
    problems: list[Problem] = []
    config = Config(path=str(path) if path is not None else None)
    for section, value in raw.items():
        if section not in SCHEMA:
            known = ", ".join(SCHEMA)
            problems.append(s.missing_key_problem(origin, section, f"a known section ({known})"))
        elif not isinstance(value, dict):
            problems.append(Problem(origin, section, value, f"a [{section}] table"))
    for section, declared in SCHEMA.items():
        given = raw.get(section, {})
        config.values[section] = s.check_table(
            origin,
            section,
            declared,
            given if isinstance(given, dict) else {},
            problems,
            skip=_collector_table if section == "collectors" else _never,
        )
    collector_table = raw.get("collectors", {})
    if isinstance(collector_table, dict):
        config.collector_settings = _check_collectors(
            origin, collector_table, collectors, problems
        )
    for i, entry in enumerate(config.values["dtrace"]["script_dirs"]):
        if (problem := _script_dir_problem(entry)) is not None:
            problems.append(Problem(origin, f"dtrace.script_dirs[{i}]", entry, problem,
                                    limit=4096))
    scripts = _known_scripts(config.values["dtrace"]["script_dirs"])
    for script in config.values["dtrace"]["scripts"]:
        if script not in scripts:
            problems.append(
                s.missing_key_problem(
                    origin,
                    f"dtrace.scripts.{script}",
                    "the name of a D script (" + ", ".join(sorted(scripts)) + ")",
                )
            )
    if problems:
        raise ConfigError(problems)
    return config
