"""dtagent dtrace list / check, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, dtagent
from tests.native.dtrace_stub import Scenario, library

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"


def config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "dtagent.toml"
    cfg.write_text(f"[dtrace]\nscript_dirs = [{json.dumps(str(FIXTURES))}]\n"
                   "scripts = { other = false }\n" + extra)
    return cfg


def test_list_shows_state_reason_providers_metrics_options(tmp_path: Path) -> None:
    res = dtagent("dtrace", "list", "--config", str(config(tmp_path)))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "every: enabled (default)" in out
    assert "other: disabled (off in the config: dtrace.scripts)" in out
    assert "providers: fbt; fbt: yes" in out
    assert "metric: test_syscall_latency_seconds (histogram; @lat = llquantize(); " \
           "labels: zonename)" in out
    assert "dynvarsize=8m" in out and "handle options (all enabled scripts)" in out


def test_list_reports_scripts_that_do_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "oops.d").write_text("@x = count();")
    (bad / "oops.toml").write_text('description = "x"\n')
    cfg = tmp_path / "c2.toml"
    cfg.write_text(f"[dtrace]\nscript_dirs = [{json.dumps(str(bad))}]\n")
    res = dtagent("dtrace", "list", "--config", str(cfg))
    assert res.returncode == 1
    assert "not loaded:" in res.stdout and "oops.toml: key 'aggregation'" in res.stdout


def test_check_elsewhere_says_it_needs_illumos() -> None:
    res = dtagent("dtrace", "check")
    assert res.returncode == 1
    assert "needs illumos" in res.stdout and "dtagent dtrace list" in res.stdout


def _check(tmp_path: Path, *args: str, scenario: str = "") -> subprocess.CompletedProcess[str]:
    sc = Scenario(tmp_path).write(
        "compile_fail stub:broken probe description fbt::no_such_function:entry does not "
        "match any probes\n" + scenario
    )
    cfg = config(tmp_path, f'libdtrace = {json.dumps(str(library()))}\n'
                           '[sources]\nplatform = "illumos"\n')
    return subprocess.run(
        [sys.executable, "-m", "dtagent", "dtrace", "check", *args, "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env=dict(sc.env(), PYTHONPATH=str(REPO)),
    )


def test_check_compiles_without_enabling(tmp_path: Path) -> None:
    res = _check(tmp_path)
    assert res.returncode == 1
    assert "every: ok" in res.stdout and "other: ok" in res.stdout
    assert "broken: failed: probe description fbt::no_such_function:entry does not match" \
        in res.stdout
    calls = Scenario(tmp_path).calls()
    assert not any(c.startswith(("exec", "go")) for c in calls)  # nothing enabled
    assert calls[-1] == "close"
    ok = _check(tmp_path, "every")
    assert ok.returncode == 0 and ok.stdout.strip() == "every: ok"
    missing = _check(tmp_path, "nope")
    assert missing.returncode == 2 and "no D script named 'nope'" in missing.stdout
    assert os.path.exists(library())


def test_check_compiles_as_the_worker_does(tmp_path: Path) -> None:
    """A missing optional probe does not fail the check (the worker runs the script);
    a missing required one does."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    optional = _check(tmp_path / "a", "optional", scenario="no_probe fbt::optional_fn:entry\n")
    assert optional.returncode == 0 and optional.stdout.strip() == "optional: ok"
    required = _check(tmp_path / "b", "optional", scenario="no_probe fbt::required_fn:entry\n")
    assert required.returncode == 1
    assert "fbt::required_fn:entry does not match any probes" in required.stdout
