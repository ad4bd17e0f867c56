"""Config files: defaults, overrides, and clear errors (file, key, expectation; exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtagent.cli import main
from dtagent.config import DEFAULT_LISTEN, ConfigError, load
from dtagent.runtime import build
from tests.helpers import dtagent


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
        ("[agent]\nlisten = 9718\n", "key 'agent.listen': expected a string, got 9718"),
        ('[agent]\nlisten = "nowhere"\n', "key 'agent.listen': expected HOST:PORT"),
        ("[agent]\nlistne = 1\n", "key 'agent.listne': unknown setting"),
        ("[agent]\nmax_connections = 0\n", "key 'agent.max_connections': expected a number"),
        ("[agent]\nmax_connections = true\n", "key 'agent.max_connections': expected an integer"),
        ('[agent]\nlog_level = "loud"\n', "key 'agent.log_level': expected one of"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ('[collectors]\nenabled = ["zonez"]\n', "unknown collector 'zonez'"),
        ("[collectors.nosuch]\nx = 1\n", "key 'collectors.nosuch': unknown collector"),
        ("[collectors.host]\ninterval = 5\n", "key 'collectors.host.interval': unknown setting"),
        ("[dtrace]\nscripts = { runq = 1 }\n", "key 'dtrace.scripts.runq': expected true or false"),
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
    assert str(path) in err and "agent.header_timeout" in err and "expected a number" in err
    assert main(["serve", "--listen", "localhost"]) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[collectors.plugins]\ndirectory = "/x"\ninterval = 1.0\n',
         "key 'collectors.plugins': interval and timeout must be > 0, and timeout at most"),
        ('[collectors.smf]\nquiet_states = ["online", "bogus"]\n',
         "key 'collectors.smf': quiet_states: unknown state 'bogus'"),
        ("[collectors.zone_info]\nmetadata_refresh = -1.0\n",
         "key 'collectors.zone_info': metadata_refresh must be >= 0"),
    ],
)
def test_a_collector_setting_out_of_range_is_a_config_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text + "[dtrace]\nenabled = false\n")
    with pytest.raises(ConfigError) as exc:
        build(load(path))
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_the_cli_reports_it_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[collectors.plugins]\ndirectory = "/x"\ninterval = 1.0\n')
    res = dtagent("scrape", "--config", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "collectors.plugins" in res.stderr and str(path) in res.stderr
