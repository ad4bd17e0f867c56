"""Every bad input of the command line gets one line on stderr and the documented exit
status (2 usage or configuration, 1 at run time), never a traceback, and what is served
says what it is (live, replayed or simulated; what DTrace really ran)."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
from pathlib import Path

import pytest

from dtagent import cli
from dtagent.bundle import Frame, write_bundle
from dtagent.snapshot import Kstat
from tests.helpers import dtagent, free_port, start_dtagent, wait_http

HEADER = json.dumps({"format": "dtagent-bundle", "version": 1})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """The CLI in this process: (exit status, stderr lines)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.splitlines()


def one_line(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def raw_bundle(path: Path, *frames: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join([HEADER, *frames]) + "\n")
    return path


def zone_frame(zonename: str = "web") -> str:
    return json.dumps(
        {"t": 1.0, "kstats": [{"m": "zones", "i": 1, "n": "web", "c": "zone_misc", "t": 1,
                               "s": 5, "d": {"zonename": zonename, "nsec_user": 1}}]}
    ).replace("SURROGATE", "\\udcff")


# --------------------------------------------------------------- import-kstat


def test_import_kstat_refuses_random_binary_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(random.Random(10).randbytes(64 * 1024))
    out = tmp_path / "x.bundle"
    code, err = run(capsys, "import-kstat", str(junk), "--out", str(out))
    assert code == 2
    assert re.fullmatch(
        rf"dtagent import-kstat: {re.escape(str(junk))}:\d+: (binary data \(a NUL byte\)|not "
        r"UTF-8 text \(byte 0x[0-9a-f]{2}\)).*not kstat.*output",
        one_line(err),
    )
    assert not out.exists()


def test_import_kstat_refuses_text_without_kstat_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\nthis is not kstat output\n")
    code, err = run(capsys, "import-kstat", str(text), "--out", str(tmp_path / "x.bundle"))
    assert code == 2
    assert one_line(err) == (
        f"dtagent import-kstat: {text}: no module:instance:name:statistic lines "
        "(kstat -p output); line 1 is 'hello'"
    )


def test_import_kstat_reports_unrepresentable_values_with_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "big.txt"
    dump.write_text(
        "zfs:0:arcstats:hits\t12\n"
        f"zfs:0:arcstats:misses\t{'9' * 5000}\n"
        "zfs:0:arcstats:size\t18446744073709551616\n"
        "zfs:0:arcstats:c\t1e999\n"
        f"zfs:{'1' * 20}:arcstats:p\t1\n"
    )
    out = tmp_path / "x.bundle"
    code, err = run(capsys, "import-kstat", str(dump), "--out", str(out))
    assert code == 2
    assert err == [
        f"dtagent import-kstat: {dump}:2: 999999999999999999999999... (5000 characters) does "
        "not fit in a 64-bit integer",
        f"dtagent import-kstat: {dump}:3: 18446744073709551616 does not fit in a 64-bit integer",
        f"dtagent import-kstat: {dump}:4: 1e999 overflows a double",
        f"dtagent import-kstat: {dump}:5: instance 11111111111111111111 does not fit in an int",
        f"dtagent import-kstat: {dump}: 4 values no kstat can hold; nothing written",
    ]
    assert not out.exists()


def test_import_kstat_missing_file_and_unwritable_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], samples_dir: Path
) -> None:
    missing = tmp_path / "none.txt"
    code, err = run(capsys, "import-kstat", str(missing), "--out", str(tmp_path / "x.bundle"))
    assert (code, one_line(err)) == (2, f"dtagent import-kstat: {missing}: no such file")
    sample = str(samples_dir / "kstat_p_memory_cap_smartos_ngz.txt")
    code, err = run(capsys, "import-kstat", sample, "--out", "/proc/nope/x.bundle")
    assert (code, one_line(err)) == (
        2, "dtagent import-kstat: --out /proc/nope/x.bundle: no such directory '/proc/nope'"
    )


# --------------------------------------------------------------- simulate, scrape


def test_simulate_to_an_unwritable_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "simulate", "--zones", "2", "--out", "/proc/nope/x.bundle")
    assert (code, one_line(err)) == (
        2, "dtagent simulate: --out /proc/nope/x.bundle: no such directory '/proc/nope'"
    )
    code, err = run(capsys, "simulate", "--zones", "2", "--out", str(tmp_path))
    assert (code, one_line(err)) == (
        2, f"dtagent simulate: --out {tmp_path}: is a directory; give a file name"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--zones", "x", "--out", "a"], "argument --zones: expected a whole number"),
        (["simulate", "--zones", "2", "--out", "a", "--step", "nan"], "expected seconds above 0"),
        (["scrape", "--frame", "-1"], "argument --frame: expected a frame number from 0"),
        (["scrape", "--frame", "\u0661"], "argument --frame: expected a frame number from 0"),
        (["scrape", "--bogus"], "unrecognized arguments: --bogus"),
        (["nosuchcommand"], "argument COMMAND: invalid choice: 'nosuchcommand'"),
        (["serve", "--replay-speed", "fast"], "argument --replay-speed: expected a number"),
    ],
)
def test_argument_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, err = run(capsys, *argv)
    assert code == 2
    assert message in one_line(err)


def test_frame_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = raw_bundle(tmp_path / "b.bundle", zone_frame(), zone_frame())
    code, err = run(capsys, "scrape", "--frame", "0")
    assert (code, one_line(err)) == (
        2, "dtagent scrape: --frame needs a bundle (--replay BUNDLE or sources.replay)"
    )
    code, err = run(capsys, "scrape", "--replay", str(bundle), "--frame", "2")
    assert (code, one_line(err)) == (
        2, f"dtagent: bundle error: {bundle}: no frame 2: it has 2 (0 to 1)"
    )


def test_missing_bundle_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.bundle"
    code, err = run(capsys, "scrape", "--replay", str(missing))
    assert (code, one_line(err)) == (2, f"dtagent: bundle error: {missing}: no such bundle")
    code, err = run(capsys, "scrape", "--replay", str(tmp_path))
    assert (code, one_line(err)) == (
        2, f"dtagent: bundle error: {tmp_path}: is a directory, not a bundle"
    )


def test_a_bad_bundle_is_refused_before_anything_is_served(tmp_path: Path) -> None:
    # The lone surrogate once passed the check and failed every /metrics with a 500.
    bundle = raw_bundle(tmp_path / "s.bundle", zone_frame("SURROGATE"))
    expected = (
        f"dtagent: bundle error: {bundle}: frame 0 (line 2): field kstats[0].d.zonename: "
        "not valid UTF-8 text (lone surrogate U+DCFF)"
    )
    res = dtagent("scrape", "--replay", str(bundle))
    assert (res.returncode, res.stdout, res.stderr.strip()) == (1, "", expected)
    res = dtagent("serve", "--replay", str(bundle), "--listen", f"127.0.0.1:{free_port()}",
                  timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == expected


# --------------------------------------------------------------- tracebacks


def test_an_unexpected_error_is_one_line_unless_debugging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("something went wrong\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "scrape", broken)
    code, err = run(capsys, "scrape")
    assert (code, one_line(err)) == (
        1,
        "dtagent scrape: RuntimeError: something went wrong (--log-level debug shows the "
        "traceback)",
    )
    code, err = run(capsys, "scrape", "--log-level", "debug")
    assert code == 1
    assert err[0] == "Traceback (most recent call last):"
    assert err[-2:] == ["RuntimeError: something went wrong", "second line"]


def test_an_os_error_names_the_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(args: object) -> int:
        raise OSError(28, "No space left on device", "/var/tmp/x.bundle")

    monkeypatch.setitem(cli.COMMANDS, "simulate", full)
    code, err = run(capsys, "simulate", "--zones", "1", "--out", "x")
    assert (code, one_line(err)) == (
        1,
        "dtagent simulate: /var/tmp/x.bundle: No space left on device (--log-level debug "
        "shows the traceback)",
    )


# --------------------------------------------------------------- what is served


def test_an_imported_bundle_says_replay_and_that_no_dtrace_ran(
    tmp_path: Path, samples_dir: Path
) -> None:
    bundle = tmp_path / "imported.bundle"
    sample = samples_dir / "omnios_kstat_zones_zone_misc_decoded.txt"
    assert dtagent("import-kstat", str(sample), "--out", str(bundle)).returncode == 0
    out = dtagent("scrape", "--replay", str(bundle))
    assert out.returncode == 0, out.stderr
    assert 'dtagent_source_info{mode="replay"} 1' in out.stdout
    assert not re.search(r"^dtagent_dtrace_worker_up ", out.stdout, re.M)  # no worker ran
    enabled = re.findall(r"^dtagent_dtrace_script_enabled\{script=\"(\w+)\"\} (\S+)$",
                         out.stdout, re.M)
    assert len(enabled) >= 7 and all(value == "0" for _, value in enabled), enabled


def test_a_simulated_bundle_says_simulated(tmp_path: Path) -> None:
    bundle = tmp_path / "sim.bundle"
    write_bundle(bundle, [Frame(time=1.0, kstats=[Kstat("zones", 0, "global",
                                                          data={"zonename": "global"})])],
                 source="simulate")
    out = dtagent("scrape", "--replay", str(bundle))
    assert 'dtagent_source_info{mode="simulated"} 1' in out.stdout


def test_live_says_live() -> None:
    out = dtagent("scrape")
    assert out.returncode == 0
    assert 'dtagent_source_info{mode="live"} 1' in out.stdout


def test_demo_says_simulated_first_and_removes_its_bundle() -> None:
    port = free_port()
    proc = start_dtagent("demo", "--zones", "2", "--listen", f"127.0.0.1:{port}")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("dtagent demo: serving a SIMULATED SmartOS host (2 zones")
        body = wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60).decode()
        assert 'dtagent_source_info{mode="simulated"} 1' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    written = [json.loads(ln) for ln in err.splitlines() if '"simulated host written"' in ln]
    assert len(written) == 1
    bundle = Path(written[0]["bundle"])
    assert not bundle.exists() and not bundle.parent.exists()
    assert os.path.basename(bundle.parent).startswith("dtagent-demo-")
