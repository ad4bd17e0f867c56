"""Declared settings: each has a type, a range, a default and a help text.

Every setting the agent reads, from ``[agent]`` to a collector's ``[collectors.NAME]``
table, is declared once with one of the constructors below. The config loader checks
every value against its declaration before anything starts and reports all the
problems it finds at once; ``docs/configuration.md`` is generated from the same
declarations (``python -m dtagent.docgen``), so the two cannot disagree.

Declaring a setting::

    from dtagent import settings

    SETTINGS = {
        "max_age": settings.duration(60.0, "seconds a flowadm answer is reused"),
        "command_timeout": settings.timeout(5.0, "seconds before a hung flowadm is killed"),
        "workers": settings.integer(4, "worker threads", minimum=1, maximum=64),
        "mode": settings.choice("fast", "how to run", ("fast", "safe")),
    }

and checking a table of values::

    problems: list[settings.Problem] = []
    values = settings.check_table("dtagent.toml", "collectors.flow", SETTINGS, raw, problems)

``values`` has every declared key (the default where none was given); each entry of
``problems`` names the file, the key, the value and what was expected. A collector
lists its settings in its ``settings`` class attribute; its constructor takes them as
keyword arguments with the same defaults (checked when the class is defined) and never
has to check them itself. A rule between two settings (a timeout at most an interval)
goes in the collector's ``settings_problems`` classmethod, which the loader calls with
the checked values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

# The longest duration any setting accepts: a day. Longer is a mistake (and a value
# like 1e300 s overflows the C timeouts it ends up in).
MAX_SECONDS = 86400.0


@dataclass(frozen=True)
class Setting:
    """One declared setting.

    ``expected`` says in words what a valid value is; it is used in error messages and
    in docs/configuration.md. ``accepts`` decides; ``convert`` normalises an accepted
    value (an int given for a float setting becomes a float).
    """

    default: Any
    help: str
    expected: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda v: v
    known: Callable[[], Collection[str]] | None = None  # discovered names, for messages

    def problem(self, value: Any) -> str | None:
        """What was expected, when ``value`` is not valid; None when it is."""
        try:
            if self.accepts(value):
                return None
        except (TypeError, ValueError, OverflowError):
            pass
        if self.known is not None:
            return f"{self.expected}; known: " + ", ".join(sorted(self.known()))
        return self.expected


@dataclass(frozen=True)
class Problem:
    """One bad setting: where it is, what it held, what was expected."""

    origin: str  # the config file, or the flag that set it
    key: str  # dotted: "collectors.zone_info.metadata_refresh"
    value: Any
    expected: str
    limit: int = 60  # of the value shown; a path is shown whole (its tail names it)

    def __str__(self) -> str:
        if self.value is _MISSING:
            return f"{self.origin}: key {self.key!r}: expected {self.expected}"
        return (f"{self.origin}: key {self.key!r}: expected {self.expected}, "
                f"got {shown(self.value, self.limit)}")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a problem stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt(x: float) -> str:
    return f"{x:g}"


# ------------------------------------------------------------------- constructors


def duration(default: float, help: str, *, maximum: float = MAX_SECONDS) -> Setting:
    """Seconds, 0 allowed (an interval or a cache age): finite, 0 to ``maximum``."""
    return Setting(
        float(default),
        help,
        f"seconds from 0 to {_fmt(maximum)}",
        lambda v: _is_number(v) and math.isfinite(v) and 0 <= v <= maximum,
        float,
    )


def timeout(default: float, help: str, *, maximum: float = MAX_SECONDS) -> Setting:
    """Seconds, more than 0 (a timeout or a backoff): finite, above 0 up to ``maximum``."""
    return Setting(
        float(default),
        help,
        f"seconds above 0, at most {_fmt(maximum)}",
        lambda v: _is_number(v) and math.isfinite(v) and 0 < v <= maximum,
        float,
    )


def number(default: float, help: str, *, above: float, maximum: float) -> Setting:
    """A finite number greater than ``above`` and at most ``maximum``."""
    return Setting(
        float(default),
        help,
        f"a number above {_fmt(above)}, at most {_fmt(maximum)}",
        lambda v: _is_number(v) and math.isfinite(v) and above < v <= maximum,
        float,
    )


def integer(default: int, help: str, *, minimum: int, maximum: int) -> Setting:
    """An integer from ``minimum`` to ``maximum``."""
    return Setting(
        default,
        help,
        f"an integer from {minimum} to {maximum}",
        lambda v: _is_int(v) and minimum <= v <= maximum,
    )


def boolean(default: bool, help: str) -> Setting:
    return Setting(default, help, "true or false", lambda v: isinstance(v, bool))


def text(
    default: str,
    help: str,
    *,
    expected: str = "a string",
    valid: Callable[[str], bool] = lambda s: True,
) -> Setting:
    """A string; ``valid`` (described by ``expected``) narrows it."""
    return Setting(
        default, help, expected, lambda v: isinstance(v, str) and _is_text(v) and valid(v)
    )


def choice(default: str, help: str, options: Collection[str]) -> Setting:
    """One of ``options``."""
    listed = ", ".join(f'"{o}"' for o in options)
    return Setting(default, help, f"one of {listed}", lambda v: isinstance(v, str) and v in options)


def string_list(
    default: list[str],
    help: str,
    *,
    choices: Callable[[], Collection[str]] | None = None,
    what: str = "strings",
    valid: Callable[[str], bool] = lambda s: True,
) -> Setting:
    """A list of strings; with ``choices``, each must be one of what it returns (asked
    at check time, so the choices can be discovered, such as the collectors)."""

    def accepts(v: Any) -> bool:
        if not isinstance(v, list) or not all(
            isinstance(s, str) and _is_text(s) and valid(s) for s in v
        ):
            return False
        return choices is None or all(s in choices() for s in v)

    return Setting(list(default), help, f"a list of {what}", accepts, list, choices)


def switches(default: dict[str, bool], help: str) -> Setting:
    """A table of names to true/false (which names are known is checked by the caller)."""
    return Setting(
        dict(default),
        help,
        "a table of names to true or false",
        lambda v: isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(b, bool) for k, b in v.items()),
        dict,
    )


def _is_text(s: str) -> bool:
    """Valid Unicode text: no lone surrogates and no NUL (neither reaches a file name,
    a log line or an exposition intact)."""
    if "\0" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ------------------------------------------------------------------- checking


def check_value(origin: str, key: str, setting: Setting, value: Any) -> Any | Problem:
    """The converted value, or the :class:`Problem` with it."""
    expected = setting.problem(value)
    if expected is not None:
        return Problem(origin, key, value, expected)
    return setting.convert(value)


def check_table(
    origin: str,
    prefix: str,
    declared: Mapping[str, Setting],
    given: Mapping[str, Any],
    problems: list[Problem],
    *,
    skip: Callable[[str, Any], bool] = lambda key, value: False,
) -> dict[str, Any]:
    """Every declared key's value (its default unless ``given`` has a valid one).

    Unknown keys and invalid values are appended to ``problems``; ``skip`` names the
    keys another check owns (the ``[collectors.NAME]`` sub-tables).
    """
    values: dict[str, Any] = {}
    for key, value in given.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in declared:
            if skip(key, value):
                continue
            known = ", ".join(declared) or "none"
            problems.append(Problem(origin, dotted, _MISSING, f"a known setting ({known})"))
            continue
        checked = check_value(origin, dotted, declared[key], value)
        if isinstance(checked, Problem):
            problems.append(checked)
        else:
            values[key] = checked
    for key, setting in declared.items():
        values.setdefault(key, setting.default)
    return values


def missing_key_problem(origin: str, key: str, expected: str) -> Problem:
    """A problem with no value to show (an unknown key or section)."""
    return Problem(origin, key, _MISSING, expected)
