"""Fuzzers: random config files, corrupted bundles, kstat text and command lines end in
success or a documented one-line error, never anything else.

Each is bounded (max_examples, no deadline) so the suite stays fast; they run in the
README's test command with the rest.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtagent import cli, config
from dtagent.bundle import BundleError, Frame, encode_frame, read_packed, write_bundle
from dtagent.collectors import available
from dtagent.config import SCHEMA, ConfigError, load
from dtagent.exposition import render
from dtagent.kstat_text import parse
from dtagent.snapshot import Kstat

BOUNDED = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------ TOML documents


def toml_value(v: Any) -> str:
    """``v`` written as a TOML value (strings through JSON escapes, which TOML shares)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
section_names = st.one_of(st.sampled_from(sorted(SCHEMA)), st.text(min_size=1, max_size=8))
collector_names = st.one_of(st.sampled_from(sorted(available())), st.text(min_size=1, max_size=8))


def declared_keys() -> list[tuple[str, str]]:
    keys = [(section, key) for section, decl in SCHEMA.items() for key in decl]
    for name, cls in available().items():
        keys += [(f"collectors.{name}", key) for key in cls.settings]
    return keys


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A TOML document: declared keys with random values, random keys and sections."""
    tables: dict[str, dict[str, Any]] = {}
    for section, key in draw(st.lists(st.sampled_from(declared_keys()), max_size=8)):
        tables.setdefault(section, {})[key] = draw(values)
    for _ in range(draw(st.integers(0, 2))):
        tables.setdefault(draw(section_names), {})[draw(st.text(min_size=1, max_size=8))] = draw(
            values
        )
    if draw(st.booleans()):
        tables.setdefault(f"collectors.{draw(collector_names)}", {})["x"] = draw(values)
    out = []
    for section, items in tables.items():
        out.append("[" + ".".join(json.dumps(part) for part in section.split(".")) + "]")
        out.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in items.items())
    return "\n".join(out) + "\n"


def assert_config_error(exc: ConfigError, path: Path) -> None:
    assert exc.problems
    for line in exc.problems:
        assert "\n" not in line and line.startswith(f"{path}: "), line


@BOUNDED
@given(documents())
def test_random_config_documents(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dtagent.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load(path)
    except ConfigError as exc:
        assert_config_error(exc, path)
        return
    # accepted: every declared value is what its declaration accepts
    for section, decl in SCHEMA.items():
        for key, setting in decl.items():
            assert setting.problem(cfg.get(section, key)) is None, (section, key)


@BOUNDED
@given(st.sampled_from(declared_keys()), values)
def test_random_values_for_every_declared_setting(
    tmp_path: Path, where: tuple[str, str], value: Any
) -> None:
    section, key = where
    path = tmp_path / "dtagent.toml"
    header = "[" + ".".join(section.split(".")) + "]"
    path.write_text(f"{header}\n{key} = {toml_value(value)}\n", encoding="utf-8",
                    errors="surrogatepass")
    try:
        cfg = load(path)
    except ConfigError as exc:
        assert_config_error(exc, path)
        # about this key only (dtrace.scripts: one line per unknown script), unless the
        # value made the file itself invalid (a surrogate is neither UTF-8 nor TOML)
        not_toml = f"{path}: not valid TOML ("
        if not (len(exc.problems) == 1 and exc.problems[0].startswith(not_toml)):
            assert all(f"key '{section}.{key}" in line for line in exc.problems), exc.problems
        return
    if section.startswith("collectors."):
        name = section.split(".", 1)[1]
        setting = available()[name].settings[key]
        got = cfg.collector_settings[name][key]
        available()[name](**cfg.collector_settings[name])  # constructs without a check
    else:
        setting = SCHEMA[section][key]
        got = cfg.get(section, key)
    assert setting.problem(got) is None


@BOUNDED
@given(st.binary(max_size=512))
def test_random_bytes_as_a_config(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "dtagent.toml"
    path.write_bytes(data)
    try:
        load(path)
    except ConfigError as exc:
        assert_config_error(exc, path)


# ------------------------------------------------------------------ bundles


def valid_frames() -> list[Frame]:
    zone = Kstat("zones", 3, "web", ks_class="zone_misc", snaptime=5_000_000_000,
                 data={"zonename": "web", "nsec_user": 10, "avenrun_1min": 12})
    glob = Kstat("zones", 0, "global", ks_class="zone_misc", snaptime=5_000_000_000,
                 data={"zonename": "global", "nsec_user": 7})
    arc = Kstat("zfs", 0, "arcstats", ks_class="misc", data={"hits": 5, "size": 1 << 40})
    return [
        Frame(time=1.0, kstats=[glob, zone, arc],
              dtrace=[{"script": "runq", "agg": "runq", "key": [3],
                       "buckets": [[None, 2], [1000, 7]]}]),
        Frame(time=6.0, kstats=[glob, zone, arc],
              commands=[], dtrace=[{"drop": "aggregation", "count": 1}]),
    ]


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(alphabet=st.characters(), max_size=8),  # surrogates included
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = copy.deepcopy(obj)
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return obj


@st.composite
def corrupted_bundles(draw: st.DrawFn) -> list[str]:
    """The lines of a valid bundle with one frame's value replaced, or its text mangled."""
    lines = [json.dumps({"format": "dtagent-bundle", "version": 1})]
    lines += [encode_frame(f) for f in valid_frames()]
    index = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["value", "text", "nest"]))
    if how == "value":
        obj = json.loads(lines[index])
        path = draw(st.sampled_from(paths(obj)))
        lines[index] = json.dumps(replaced(obj, path, draw(json_values)))
    elif how == "text":
        line = lines[index]
        at = draw(st.integers(0, len(line)))
        cut = draw(st.integers(0, 8))
        lines[index] = line[:at] + draw(st.text(max_size=6)) + line[at + cut:]
    else:
        depth = draw(st.integers(2, 3000))
        lines[index] = lines[index][:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    return lines


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(corrupted_bundles())
def test_corrupted_bundles_are_refused_or_served(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.bundle"
    with gzip.open(path, "wt", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write("\n".join(lines) + "\n")
    try:
        bundle = read_packed(path)
    except BundleError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(str(path))
        return
    # what passes the check can be served: every frame decodes and scrapes
    for i in range(len(bundle.frames)):
        bundle.frames[i]
    scrape_bundle(path)



def scrape_bundle(path: Path) -> bytes:
    from dtagent.runtime import build

    cfg = config.load(None)
    cfg.set("sources", "replay", str(path))
    runtime = build(cfg, replay_frame=-1)
    try:
        return render(runtime.agent.collect())
    finally:
        runtime.close()


# ------------------------------------------------------------------ kstat -p text

kstat_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=0, max_size=12
)
kstat_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789", min_size=1, max_size=60),
    kstat_names,
)


@st.composite
def kstat_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["p", "human", "header", "noise"]))
    module, name, stat = draw(kstat_names), draw(kstat_names), draw(kstat_names)
    instance = draw(st.one_of(st.integers(-5, 2**40).map(str), kstat_names))
    if kind == "p":
        sep = draw(st.sampled_from(["\t", "  ", " "]))
        return f"{module}:{instance}:{name}:{stat}{sep}{draw(kstat_values)}"
    if kind == "human":
        return draw(st.sampled_from([
            f"module: {module}  instance: {instance}",
            f"name: {name}  class: {stat}",
            f"\t{stat}  {draw(kstat_values)}",
        ]))
    if kind == "header":
        return f"{module}:{instance}:{name} class={stat} type={draw(kstat_names)}"
    return draw(kstat_names)


@BOUNDED
@given(st.lists(kstat_lines(), max_size=30))
def test_kstat_text_parses_anything_into_writable_kstats(lines: list[str]) -> None:
    result = parse(ln + "\n" for ln in lines)
    nonblank = sum(1 for ln in lines if ln.strip())
    assert len(result.skipped) + len(result.problems) <= nonblank
    for lineno, problem in result.problems:
        assert 1 <= lineno <= len(lines) and "\n" not in problem
    # whatever it accepted, a bundle can hold and read back
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.bundle"
        write_bundle(path, [Frame(time=1.0, kstats=result.kstats)])
        assert len(read_packed(path).frames) == 1


# ------------------------------------------------------------------ command lines

tokens = st.one_of(
    st.sampled_from([
        "serve", "scrape", "simulate", "demo", "import-kstat", "capture", "dtrace", "list",
        "check", "--config", "--listen", "--replay", "--replay-speed", "--frame", "--zones",
        "--out", "--seed", "--duration", "--step", "--interval", "--count", "--log-level",
        "debug", "-1", "0", "1e999", "nan", "\u0661\u0662", "127.0.0.1:9718", "--help", "-h",
    ]),
    st.text(max_size=10),
)


PARSER = cli.build_parser()


@BOUNDED
@given(st.lists(tokens, max_size=8))
def test_any_command_line_parses_or_is_one_usage_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    try:
        PARSER.parse_args(argv)
    except SystemExit as exc:
        captured = capsys.readouterr()
        if exc.code == 0:  # --help
            assert captured.out
            return
        assert exc.code == 2
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dtagent"), lines
    else:
        capsys.readouterr()
