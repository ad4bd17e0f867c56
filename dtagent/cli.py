"""The ``dtagent`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from dtagent import __version__
from dtagent import log as logsetup
from dtagent.bundle import BundleError, Frame, write_bundle
from dtagent.config import Config, ConfigError, load

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

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

'dtagent COMMAND --help' tells more. Exit status: 0 ok, 1 runtime error, 2 bad usage or config.
"""


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (see examples/dtagent.toml)")


def _add_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", metavar="BUNDLE", help="serve a recorded or simulated host")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtagent",
        description="SmartOS/illumos telemetry for Prometheus: per-zone DTrace latency "
        "histograms, zone caps and usage, ZFS and Crossbow statistics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dtagent {__version__}")
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
        type=float,
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
        type=int,
        default=-1,
        metavar="N",
        help="with --replay: the frame to show (default: the last)",
    )

    p = sub.add_parser(
        "simulate",
        help="write a synthetic SmartOS host as a bundle",
        description="Write a bundle of a simulated SmartOS host. "
        "Example: dtagent simulate --zones 50 --out sim.bundle --seed 7",
    )
    p.add_argument("--zones", type=int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="BUNDLE")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument(
        "--duration",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="simulated time (default 3600)",
    )
    p.add_argument(
        "--step", type=float, default=5.0, metavar="SECONDS", help="time between frames (default 5)"
    )

    p = sub.add_parser(
        "demo",
        help="simulate a host and serve it",
        description="Simulate a SmartOS host and serve it on /metrics. "
        "Example: dtagent demo --zones 12",
    )
    p.add_argument("--zones", type=int, default=12, metavar="N")
    p.add_argument("--listen", default="127.0.0.1:9718", metavar="HOST:PORT")
    p.add_argument("--seed", type=int, default=1, metavar="S")
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
    p.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                   help="time between frames (default 10)")
    p.add_argument("--count", type=int, default=30, metavar="N",
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
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time between frames when the dumps carry no snaptime (default 10)",
    )

    try:
        from dtagent.dtrace.cli import register
    except ImportError:  # pragma: no cover - the engine ships with the package
        pass
    else:
        register(sub)
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
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load_config(args)
    logsetup.setup(config.get("agent", "log_level"), config.get("agent", "log_format"))
    # a reload (SIGHUP) reads the same sources again: the file, SMF properties, flags
    return _serve(config, load=lambda: _load_config(args))


def _serve(config: Config, announce: bool = False,
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
        return EXIT_ERROR
    serve.run(announce="dtagent demo: open" if announce else None)
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
    frame = args.frame if config.get("sources", "replay") else None
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

    logsetup.setup("info", "auto")
    try:
        n = simulate(args.out, args.zones, seed=args.seed, duration=args.duration, step=args.step)
    except ValueError as exc:
        print(f"dtagent simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    structlog.get_logger("dtagent").info(
        "bundle written", out=args.out, zones=args.zones, frames=n, seed=args.seed
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dtagent.simulate import simulate

    logsetup.setup("info", "auto")
    if args.zones < 1:
        print("dtagent demo: --zones must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or os.path.join(tempfile.mkdtemp(prefix="dtagent-demo-"), "demo.bundle")
    frames = simulate(out, args.zones, seed=args.seed)
    structlog.get_logger("dtagent").info("simulated host written", bundle=out, frames=frames)
    config = load(None)
    config.set("agent", "listen", args.listen, "--listen")
    config.set("sources", "replay", out, "demo")
    return _serve(config, announce=True)


def cmd_capture(args: argparse.Namespace) -> int:
    from dtagent.capture import capture
    from dtagent.runtime import build

    config = _load_config(args)
    logsetup.setup(config.get("agent", "log_level"), config.get("agent", "log_format"))
    if args.interval <= 0 or args.count < 1:
        print("dtagent capture: --interval must be positive and --count at least 1",
              file=sys.stderr)
        return EXIT_USAGE
    if config.get("sources", "replay"):
        print("dtagent capture: records a live host; drop sources.replay", file=sys.stderr)
        return EXIT_USAGE
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
        frames = capture(runtime, raw, interval=args.interval, count=args.count, stop=stop)
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


def cmd_import_kstat(args: argparse.Namespace) -> int:
    from dtagent.kstat_text import parse

    frames: list[Frame] = []
    for i, name in enumerate(args.files):
        try:
            with open(name, encoding="utf-8", errors="replace") as fh:
                result = parse(fh)
        except OSError as exc:
            print(f"dtagent import-kstat: {name}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
        if not result.kstats:
            print(f"dtagent import-kstat: {name}: no kstat data found", file=sys.stderr)
            return EXIT_ERROR
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = handler(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dtagent: config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except BundleError as exc:
        print(f"dtagent: bundle error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
