"""The ``dtagent`` command line."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import structlog

from dtagent import __version__
from dtagent import log as logsetup
from dtagent.cliargs import seconds
from dtagent.config import Config, ConfigError, load

if TYPE_CHECKING:
    from dtagent.bundle import Checkpoints

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """A command line that cannot be run as given (exit 2); the message is one line."""


class Parser(argparse.ArgumentParser):
    """argparse, with every usage error on one line (exit 2) instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        # an argument may hold a newline or other control characters: escape them
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        print(f"{self.prog}: error: {shown} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _frame_index(text: str) -> int:
    """--frame N: a frame number from 0 (argparse reports the ValueError as one line)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise argparse.ArgumentTypeError(f"expected a frame number from 0, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def _speed(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None

EPILOG = """\
commands (each with an example):
  serve          dtagent serve --config /opt/dtagent/etc/dtagent.toml --listen 10.0.0.5:9718
  scrape         dtagent scrape --replay host.bundle
  simulate       dtagent simulate --zones 50 --out sim.bundle --seed 7
  demo           dtagent demo --zones 12 --listen 127.0.0.1:9718
  import-kstat   dtagent import-kstat kstat-p.txt --out myhost.bundle
  capture        dtagent capture --out myhost.bundle --interval 10 --count 30 --anonymize
  anonymize      dtagent anonymize myhost.bundle --out myhost-anon.bundle
  dtrace list    dtagent dtrace list
  check          dtagent check --config /opt/dtagent/etc/dtagent.toml --json
  caps set       dtagent caps set web-1 cpu_cap=400 --reason 'ticket 12' --dry-run

'dtagent COMMAND --help' tells more. Exit status: 0 ok, 1 runtime error, 2 bad usage or config.
"""


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (see examples/dtagent.toml)")


def _add_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", metavar="BUNDLE", help="serve a recorded or simulated host")


def _add_log_level(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="log level (overrides agent.log_level); debug also shows tracebacks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dtagent",
        description="SmartOS/illumos telemetry for Prometheus: per-zone DTrace latency "
        "histograms, zone caps and usage, ZFS and Crossbow statistics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dtagent {__version__}")
    _add_log_level(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="serve /metrics (the SMF service runs this)",
        description="Serve /metrics and /healthz. Example: dtagent serve --config dtagent.toml",
    )
    _add_config(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    p.add_argument("--smf", action="store_true",
                   help="take config/file, config/listen and config/log_level from the SMF "
                   "service's properties (svcprop -p config $SMF_FMRI), at start and at "
                   "every refresh: what the SMF manifest runs")
    p.add_argument(
        "--web-config",
        metavar="FILE",
        help="exporter-toolkit web-config.yml (TLS, basic auth); see docs/security.md",
    )
    _add_replay(p)
    p.add_argument(
        "--replay-speed",
        type=_speed,
        metavar="X",
        help="bundle seconds per second of wall time (default 1)",
    )

    p = sub.add_parser(
        "scrape",
        help="collect once and print the exposition",
        description="Collect once and print the metrics to stdout. "
        "Example: dtagent scrape --replay host.bundle --frame 0",
    )
    _add_config(p)
    _add_replay(p)
    p.add_argument(
        "--frame",
        type=_frame_index,
        metavar="N",
        help="with --replay: the frame to show, from 0 (default: the last)",
    )

    p = sub.add_parser(
        "simulate",
        help="write a synthetic SmartOS host as a bundle",
        description="Write a bundle of a simulated SmartOS host. "
        "Example: dtagent simulate --zones 50 --out sim.bundle --seed 7",
    )
    p.add_argument("--zones", type=_count, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="BUNDLE")
    p.add_argument("--seed", type=_count, default=1, metavar="S")
    p.add_argument(
        "--duration",
        type=seconds,
        default=3600.0,
        metavar="SECONDS",
        help="simulated time (default 3600)",
    )
    p.add_argument(
        "--step", type=seconds, default=5.0, metavar="SECONDS",
        help="time between frames (default 5)",
    )

    p = sub.add_parser(
        "demo",
        help="simulate a host and serve it",
        description="Simulate a SmartOS host and serve it on /metrics. "
        "Example: dtagent demo --zones 12",
    )
    p.add_argument("--zones", type=_count, default=12, metavar="N")
    p.add_argument("--listen", default="127.0.0.1:9718", metavar="HOST:PORT")
    p.add_argument("--seed", type=_count, default=1, metavar="S")
    p.add_argument("--out", metavar="BUNDLE", help="keep the simulated bundle here")

    p = sub.add_parser(
        "capture", help="record this host's sources into a bundle",
        description="Record the live host's kstats, command outputs and DTrace deltas, "
        "frame by frame, "
        "into a bundle that replays anywhere. "
        "Example: dtagent capture --out myhost.bundle --interval 10 --count 30",
    )
    _add_config(p)
    p.add_argument("--out", required=True, metavar="BUNDLE")
    p.add_argument("--interval", type=seconds, default=10.0, metavar="SECONDS",
                   help="time between frames (default 10)")
    p.add_argument("--count", type=_count, default=30, metavar="N",
                   help="frames to record (default 30)")
    p.add_argument("--anonymize", action="store_true",
                   help="replace zone names, aliases, host names and dataset names by stable "
                   "hashes (docs/bundle.md), to attach the bundle to a bug report")

    p = sub.add_parser(
        "anonymize", help="anonymize a bundle for a bug report",
        description="Write BUNDLE with zone names, aliases, host names and dataset names "
        "replaced by stable hashes (docs/bundle.md). "
        "Example: dtagent anonymize myhost.bundle --out myhost-anon.bundle",
    )
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--out", required=True, metavar="BUNDLE")

    p = sub.add_parser(
        "check",
        help="preflight: is everything the agent needs here?",
        description="Check the platform, privileges, libkstat, libdtrace and each enabled D "
        "script, the commands, the config, the listen address and the SMF service. Exit "
        "status 0: ready; 1: something needed is missing; 2: bad config. "
        "Example: dtagent check --config /opt/dtagent/etc/dtagent.toml",
    )
    _add_config(p)
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help="leave a check out (repeatable), e.g. --skip listen while the "
                   "service holds the address")

    p = sub.add_parser(
        "import-kstat",
        help="turn kstat -p dumps into a bundle",
        description="Turn one or more 'kstat -p' text dumps into a bundle, one frame per file "
        "in the order given. Example: dtagent import-kstat before.txt after.txt --out h.bundle",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--out", required=True, metavar="BUNDLE")
    p.add_argument(
        "--interval",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="time between frames when the dumps carry no snaptime (default 10)",
    )

    for command in sub.choices.values():
        _add_log_level(command, argparse.SUPPRESS)

    try:
        from dtagent.dtrace.cli import register
    except ImportError:  # pragma: no cover - the engine ships with the package
        pass
    else:
        register(sub)
    from dtagent.control.cli import register as register_control

    register_control(sub)
    return parser


def _load_config(args: argparse.Namespace) -> Config:
    if getattr(args, "smf", False):
        return _load_smf_config(args)
    config = load(getattr(args, "config", None))
    if getattr(args, "listen", None) and args.command == "serve":
        config.set("agent", "listen", args.listen, "--listen")
    if getattr(args, "web_config", None):
        config.set("agent", "web_config", args.web_config, "--web-config")
    if getattr(args, "replay", None):
        config.set("sources", "replay", args.replay, "--replay")
    if getattr(args, "replay_speed", None) is not None:
        config.set("sources", "replay_speed", args.replay_speed, "--replay-speed")
    if getattr(args, "log_level", None):
        config.set("agent", "log_level", args.log_level, "--log-level")
    return config


def _load_smf_config(args: argparse.Namespace) -> Config:
    """The config file the service's properties name, with their listen and log level."""
    from dtagent import smf

    if args.config:
        raise ConfigError("--smf takes the config file from config/file; drop --config")
    try:
        settings = smf.read_settings(smf.fmri())
    except smf.SmfError as exc:
        raise ConfigError(str(exc)) from None
    config = load(settings.file)
    origin = f"SMF property {smf.PROPERTY_GROUP}/"
    if settings.listen:
        config.set("agent", "listen", settings.listen, origin + "listen")
    if settings.log_level:
        config.set("agent", "log_level", settings.log_level, origin + "log_level")
    if args.listen:
        config.set("agent", "listen", args.listen, "--listen")
    if getattr(args, "log_level", None):
        config.set("agent", "log_level", args.log_level, "--log-level")
    return config


def _check_out(path: str, flag: str = "--out") -> None:
    """A bundle can be written at ``path``: its directory exists and is writable, and
    the path is not a directory (checked before any work is done)."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {str(parent)!r} (permission denied)")


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load_config(args)
    logsetup.setup(config.get("agent", "log_level"), config.get("agent", "log_format"))
    # a reload (SIGHUP) reads the same sources again: the file, SMF properties, flags
    return _serve(config, load=lambda: _load_config(args))


def _serve(config: Config, announce: str = "",
           load: Callable[[], Config] | None = None) -> int:
    from dtagent.serve import Serve
    from dtagent.webconfig import WebConfigError, load_web_config

    log = structlog.get_logger("dtagent")
    try:
        # checked before anything starts: a bad web-config is exit 2
        load_web_config(config.get("agent", "web_config") or None)
    except WebConfigError as exc:
        print(f"dtagent: web-config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        serve = Serve(config, load)
    except WebConfigError as exc:  # changed in between: still one line, exit 2
        print(f"dtagent: web-config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        log.error("cannot listen", listen=config.get("agent", "listen"), error=exc.strerror)
        print(
            f"dtagent: cannot listen on {config.get('agent', 'listen')}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    serve.run(announce=f"{announce}: open" if announce else None)
    return EXIT_OK


# The longest ``dtagent scrape`` waits for the commands' first results.
SCRAPE_COMMAND_WAIT = 15.0


def cmd_scrape(args: argparse.Namespace) -> int:
    from dtagent.exposition import render
    from dtagent.runtime import build

    config = _load_config(args)
    logsetup.setup(
        config.get("agent", "log_level"),
        "json"
        if config.get("agent", "log_format") == "auto"
        else config.get("agent", "log_format"),
    )
    if args.frame is not None and not config.get("sources", "replay"):
        raise UsageError("--frame needs a bundle (--replay BUNDLE or sources.replay)")
    frame = (-1 if args.frame is None else args.frame) if config.get("sources", "replay") else None
    runtime = build(config, replay_frame=frame)
    try:
        # one scrape: let the commands run once first (each is bounded by its timeout)
        runtime.agent.settle(SCRAPE_COMMAND_WAIT)
        sys.stdout.buffer.write(render(runtime.agent.collect()))
        sys.stdout.flush()
    finally:
        runtime.close()
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from dtagent.simulate import simulate

    logsetup.setup(args_level(args), "auto")
    _check_out(args.out)
    try:
        n = simulate(args.out, args.zones, seed=args.seed, duration=args.duration, step=args.step,
                     checkpoints=_checkpointer(None))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    structlog.get_logger("dtagent").info(
        "bundle written", out=args.out, zones=args.zones, frames=n, seed=args.seed
    )
    return EXIT_OK


def args_level(args: argparse.Namespace) -> str:
    return getattr(args, "log_level", None) or "info"


DEMO_BANNER = (
    "dtagent demo: serving a SIMULATED SmartOS host ({zones} zones, seed {seed}), "
    "not this machine's data"
)


def cmd_demo(args: argparse.Namespace) -> int:
    from dtagent.simulate import simulate

    if args.zones < 1:
        raise UsageError("--zones must be at least 1")
    if args.out:
        _check_out(args.out)
    config = load(None)
    config.set("agent", "listen", args.listen, "--listen")
    print(DEMO_BANNER.format(zones=args.zones, seed=args.seed), flush=True)
    logsetup.setup(args_level(args), "auto")
    tmpdir = None if args.out else tempfile.mkdtemp(prefix="dtagent-demo-")
    out = args.out or os.path.join(str(tmpdir), "demo.bundle")
    try:
        frames = simulate(out, args.zones, seed=args.seed, checkpoints=_checkpointer(None))
        structlog.get_logger("dtagent").info("simulated host written", bundle=out, frames=frames)
        config.set("sources", "replay", out, "demo")
        return _serve(config, announce="dtagent demo (simulated host)")
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _checkpointer(config: Config | None) -> Checkpoints | None:
    """The DTrace checkpoints a bundle writer saves, for a replay under ``config``'s
    ``[dtrace]`` settings (None: the defaults); none when DTrace is off."""
    from dtagent.dtrace.provider import Checkpointer, DTraceSettings
    from dtagent.runtime import dtrace_settings

    if config is None:
        return Checkpointer(DTraceSettings())
    if not config.get("dtrace", "enabled"):
        return None
    return Checkpointer(dtrace_settings(config))


def cmd_capture(args: argparse.Namespace) -> int:
    from dtagent.capture import capture
    from dtagent.runtime import build

    config = _load_config(args)
    logsetup.setup(config.get("agent", "log_level"), config.get("agent", "log_format"))
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if config.get("sources", "replay"):
        raise UsageError("capture records a live host; drop sources.replay / --replay")
    _check_out(args.out)
    runtime = build(config)
    if runtime.mode != "live":
        runtime.close()
        print(f"dtagent capture: needs a live illumos host; this is {runtime.mode}",
              file=sys.stderr)
        return EXIT_ERROR
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # anonymized: recorded to a private file beside the output, rewritten, removed
    raw = args.out + ".raw" if args.anonymize else args.out
    try:
        frames = capture(runtime, raw, interval=args.interval, count=args.count, stop=stop,
                         checkpoints=_checkpointer(config))
    finally:
        runtime.close()
    if args.anonymize:
        from dtagent.anonymize import anonymize_bundle, local_hostnames

        try:
            anon = anonymize_bundle(raw, args.out, hostnames=local_hostnames())
        finally:
            Path(raw).unlink(missing_ok=True)
        print(f"wrote {args.out} ({frames} frames, {len(anon.mapping)} names replaced)",
              file=sys.stderr)
        return EXIT_OK
    print(f"wrote {args.out} ({frames} frames)", file=sys.stderr)
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from dtagent.anonymize import anonymize_bundle

    if Path(args.bundle).resolve() == Path(args.out).resolve():
        print("dtagent anonymize: --out must differ from the bundle", file=sys.stderr)
        return EXIT_USAGE
    try:
        anon = anonymize_bundle(args.bundle, args.out)
    except OSError as exc:
        print(f"dtagent anonymize: {args.bundle}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.out} ({len(anon.mapping)} names replaced)", file=sys.stderr)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from dtagent.check import CHECKS, run

    unknown = [name for name in args.skip if name not in CHECKS]
    if unknown:
        print(f"dtagent check: --skip {unknown[0]!r}: not a check; known: "
              + ", ".join(CHECKS), file=sys.stderr)
        return EXIT_USAGE
    logsetup.setup("error", "json")
    report = run(args.config, skip=args.skip)
    sys.stdout.write(report.json() if args.json else report.table())
    return report.exit_code


# Most unrepresentable values listed before the rest are only counted.
MAX_LISTED = 10


def _read_text(name: str) -> list[str]:
    """A dump's lines; a missing file or one that is not text is a UsageError."""
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a directory, not a kstat dump") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot read ({exc.strerror})") from None
    if (nul := data.find(b"\0")) >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UsageError(f"{name}:{line}: binary data (a NUL byte), not kstat text output")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(
            f"{name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); not kstat output"
        ) from None
    return text.split("\n")


def cmd_import_kstat(args: argparse.Namespace) -> int:
    from dtagent.bundle import Frame, write_bundle
    from dtagent.kstat_text import parse

    _check_out(args.out)
    frames: list[Frame] = []
    for i, name in enumerate(args.files):
        result = parse(_read_text(name))
        if result.problems:
            listed = result.problems[:MAX_LISTED]
            for lineno, problem in listed:
                print(f"dtagent import-kstat: {name}:{lineno}: {problem}", file=sys.stderr)
            more = len(result.problems) - len(listed)
            raise UsageError(
                f"{name}: {len(result.problems)} values no kstat can hold"
                + (f" ({more} more not listed)" if more else "")
                + "; nothing written"
            )
        if not result.kstats:
            first = next(iter(result.skipped), None)
            shown = f"; line {first[0]} is {first[1][:60]!r}" if first else " (it is empty)"
            raise UsageError(
                f"{name}: no module:instance:name:statistic lines (kstat -p output){shown}"
            )
        snaptimes = [k.snaptime for k in result.kstats if k.snaptime]
        t = max(snaptimes) / 1e9 if snaptimes else i * args.interval
        if frames and t <= frames[-1].time:
            t = frames[-1].time + args.interval
        frames.append(Frame(time=t, kstats=result.kstats))
        print(
            f"{name}: {len(result.kstats)} kstats, "
            f"{sum(len(k.data) for k in result.kstats)} statistics, "
            f"{len(result.skipped)} other lines skipped",
            file=sys.stderr,
        )
    write_bundle(args.out, frames, source="import-kstat", files=[Path(f).name for f in args.files])
    print(f"wrote {args.out} ({len(frames)} frames)", file=sys.stderr)
    return EXIT_OK


COMMANDS = {
    "serve": cmd_serve,
    "scrape": cmd_scrape,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
    "import-kstat": cmd_import_kstat,
    "capture": cmd_capture,
    "check": cmd_check,
    "anonymize": cmd_anonymize,
}


def _known_error(exc: Exception) -> int | None:
    """The exit code for a bundle or policy error, after saying what went wrong; None
    for anything else. Looked up in sys.modules rather than imported, so that `serve`
    does not load the bundle and policy modules (about 3.5 MiB of RSS) it never uses:
    an error of theirs can only come from a command that already imported them."""
    bundle = sys.modules.get("dtagent.bundle")
    if bundle is not None and isinstance(exc, bundle.BundleError):
        print(f"dtagent: bundle error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, bundle.BundleUsageError) else EXIT_ERROR
    policy = sys.modules.get("dtagent.control.policy")
    if policy is not None and isinstance(exc, policy.PolicyError):
        print(f"dtagent: policy error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error is one line on stderr and an exit status: 2 for
    usage and configuration, 1 at run time. A traceback is shown only with
    ``--log-level debug``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    prog = f"dtagent {args.command}"
    try:
        result: int = handler(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dtagent: config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        known = _known_error(exc)
        if known is not None:
            return known
        if getattr(args, "log_level", None) == "debug":
            traceback.print_exc()
        else:
            print(f"{prog}: {_describe(exc)} (--log-level debug shows the traceback)",
                  file=sys.stderr)
        return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    """One line for an unexpected error: an OSError names the file and the reason."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
