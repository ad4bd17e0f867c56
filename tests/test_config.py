"""Config files: defaults, overrides, and clear errors (file, key, expectation; exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtagent.cli import main
from dtagent.config import DEFAULT_LISTEN, MAX_CONFIG_BYTES, ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dtagent.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file() -> None:
    config = load(None)
    assert config.get("agent", "listen") == DEFAULT_LISTEN
    assert config.get("collectors", "enabled") == ["all"]


def test_the_annotated_example_loads_and_matches_the_defaults(repo_root: Path) -> None:
    example = load(repo_root / "examples" / "dtagent.toml")
    assert example.values == load(None).values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\nlisten = 9718\n", "key 'agent.listen': expected HOST:PORT or [V6]:PORT"),
        ('[agent]\nlisten = "nowhere"\n', "key 'agent.listen': expected HOST:PORT"),
        ("[agent]\nlistne = 1\n", "key 'agent.listne': expected a known setting (listen,"),
        ("[agent]\nmax_connections = 0\n", "'agent.max_connections': expected an integer from 1"),
        ("[agent]\nmax_connections = true\n", "'agent.max_connections': expected an integer"),
        ('[agent]\nlog_level = "loud"\n', "key 'agent.log_level': expected one of \"debug\""),
        ("[nope]\nx = 1\n", "key 'nope': expected a known section (agent, sources"),
        ("agent = 1\n", "key 'agent': expected a [agent] table, got 1"),
        ('[collectors]\nenabled = ["zonez"]\n', "expected a list of collector names; known: all,"),
        ("[collectors.nosuch]\nx = 1\n", "key 'collectors.nosuch': expected a known collector"),
        ("[collectors.host]\ninterval = 5\n", "'collectors.host.interval': expected a known"),
        ("[collectors]\nzone_info = 5\n", "'collectors.zone_info': expected a table of the"),
        ("[dtrace]\nscripts = { runq = 1 }\n", "'dtrace.scripts': expected a table of names"),
        ("[agent\n", "not valid TOML"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load("/nonexistent/dtagent.toml")


def test_flags_override_and_are_checked(tmp_path: Path) -> None:
    config = load(write(tmp_path, '[agent]\nlisten = "127.0.0.1:1"\n'))
    config.set("agent", "listen", "127.0.0.1:2", "--listen")
    assert config.get("agent", "listen") == "127.0.0.1:2"
    with pytest.raises(ConfigError, match=r"--listen: key 'agent\.listen'"):
        config.set("agent", "listen", "bogus", "--listen")


def test_cli_exits_2_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[agent]\nheader_timeout = "soon"\n')
    assert main(["scrape", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "agent.header_timeout" in err and "expected seconds above 0" in err
    assert main(["serve", "--listen", "localhost"]) == 2


# Each bad input of issue 10, with the one line it must get (file, key, value, expectation).
BAD_SETTINGS = [
    (
        "[collectors.zone_info]\nmetadata_refresh = -5\n",
        "key 'collectors.zone_info.metadata_refresh': expected seconds from 0 to 86400, got -5",
    ),
    (
        "[collectors.zone_dataset]\nzfs_list_interval = -1.0\n",
        "key 'collectors.zone_dataset.zfs_list_interval': expected seconds from 0 to 86400, "
        "got -1.0",
    ),
    (
        "[collectors.link]\ncommand_timeout = 0\n",
        "key 'collectors.link.command_timeout': expected seconds above 0, at most 60, got 0",
    ),
    (
        "[collectors.link]\nmaxbw_max_age = -3\n",
        "key 'collectors.link.maxbw_max_age': expected seconds from 0 to 86400, got -3",
    ),
    (
        "[collectors.flow]\nmax_age = nan\n",
        "key 'collectors.flow.max_age': expected seconds from 0 to 86400, got nan",
    ),
    (
        '[collectors.zone_dataset]\nroot = "-r"\n',
        "key 'collectors.zone_dataset.root': expected a ZFS dataset name, such as zones or "
        "rpool/zones, got '-r'",
    ),
    (
        "[agent]\nheader_timeout = inf\n",
        "key 'agent.header_timeout': expected seconds above 0, at most 3600, got inf",
    ),
    (
        "[agent]\nwrite_timeout = 1e300\n",
        "key 'agent.write_timeout': expected seconds above 0, at most 3600, got 1e+300",
    ),
    (
        '[agent]\nlisten = "127.0.0.1:\u0661\u0662\u0663\u0664"\n',
        "key 'agent.listen': expected HOST:PORT or [V6]:PORT, the port 0 to 65535 in ASCII "
        "digits, got '127.0.0.1:\u0661\u0662\u0663\u0664'",
    ),
    (
        "[dtrace]\nscripts = { nosuchscript = false }\n",
        "key 'dtrace.scripts.nosuchscript': expected the name of a D script (cpucaps, disk,",
    ),
    (
        "[collectors.plugins]\ninterval = 5\ntimeout = 10\n",
        "key 'collectors.plugins.timeout': expected at most interval (5 s), got 10.0",
    ),
    (
        '[collectors.smf]\nquiet_states = ["onlien"]\n',
        "key 'collectors.smf.quiet_states': expected a list of SMF states; known: degraded, "
        "disabled, legacy_run, maintenance, offline, online, uninitialized, got ['onlien']",
    ),
    (
        "[collectors.textfile]\nmax_bytes = 0\n",
        "key 'collectors.textfile.max_bytes': expected an integer from 1 to 1073741824, got 0",
    ),
    (
        "[dtrace]\nseries_cap = 0\n",
        "key 'dtrace.series_cap': expected an integer from 1 to 10000000, got 0",
    ),
]


@pytest.mark.parametrize(("text", "line"), BAD_SETTINGS)
def test_every_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str
) -> None:
    path = write(tmp_path, text)
    assert main(["scrape", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dtagent: config error: {path}: ")
    assert line in lines[0]


def test_a_script_dir_that_is_not_a_directory_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "file").write_text("")
    entries = [str(tmp_path / "d"), str(tmp_path / "missing"), str(tmp_path / "file")]
    path = write(tmp_path, f"[dtrace]\nscript_dirs = {json.dumps(entries)}\n")
    assert main(["scrape", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    expected = "expected an existing directory of NAME.d + NAME.toml scripts"
    assert lines == [
        f"dtagent: config error: {path}: key 'dtrace.script_dirs[1]': {expected} "
        f"(no such directory), got {entries[1]!r}",
        f"dtagent: config error: {path}: key 'dtrace.script_dirs[2]': {expected} "
        f"(not a directory), got {entries[2]!r}",
    ]
    (tmp_path / "missing").mkdir()
    (tmp_path / "file").unlink()
    (tmp_path / "file").mkdir()
    assert load(path).get("dtrace", "script_dirs") == entries


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "[agent]\nheader_timeout = inf\nmax_connections = 0\nbogus = 1\n"
        "[collectors.zone_info]\nmetadata_refresh = -5\n"
        "[collectors.link]\ncommand_timeout = 0\n"
        "[dtrace]\nscripts = { nosuch = true }\n",
    )
    assert main(["scrape", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    keys = ["agent.header_timeout", "agent.max_connections", "agent.bogus",
            "collectors.zone_info.metadata_refresh", "collectors.link.command_timeout",
            "dtrace.scripts.nosuch"]  # fmt: skip
    assert len(lines) == len(keys), lines
    for key, ln in zip(keys, lines, strict=True):
        assert ln.startswith(f"dtagent: config error: {path}: key '{key}': expected "), ln


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (bytes(range(256)) * 4, "not valid TOML (not UTF-8 text: byte 128 is 0x80)"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deeply"),
        ("".join(f"[{'t.' * i}t]\n" for i in range(1, 60)).encode(), "key 't': expected a known"),
        (b"x" * (MAX_CONFIG_BYTES + 1), f"larger than {MAX_CONFIG_BYTES} bytes"),
    ],
)
def test_files_that_are_not_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "dtagent.toml"
    path.write_bytes(content)
    assert main(["scrape", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dtagent: config error: {path}: "), lines
    assert expected in lines[0]


def test_a_directory_or_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scrape", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"dtagent: config error: {tmp_path}: is a directory, not a config file\n"
    assert main(["scrape", "--config", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.endswith("none.toml: no such config file\n")


def test_listen_flag_with_non_ascii_digits_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--listen", "127.0.0.1:\u0661\u0662\u0663\u0664"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dtagent: config error: --listen: key 'agent.listen': expected HOST:PORT")
    assert len(err.splitlines()) == 1


def test_declared_settings_must_match_the_constructor() -> None:
    from dtagent.collectors.base import Collector
    from dtagent.settings import duration

    with pytest.raises(TypeError, match="differ from the declared settings"):

        class Drifted(Collector):  # the default here is not the declared one
            name = "drifted"
            settings = {"max_age": duration(60.0, "seconds")}

            def __init__(self, max_age: float = 30.0) -> None:
                super().__init__()

            def collect(self, snap: object) -> list[object]:  # type: ignore[override]
                return []


def test_collector_settings_values_are_converted(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[collectors.zone_info]\nmetadata_refresh = 60\n"))
    value = config.collector_settings["zone_info"]["metadata_refresh"]
    assert value == 60.0 and isinstance(value, float)
