"""``dtagent dtrace list`` and ``dtagent dtrace check [SCRIPT]``."""

from __future__ import annotations

import argparse
import platform
from typing import Any

from dtagent.cliargs import EXIT_ERROR, EXIT_OK, EXIT_USAGE, command_group
from dtagent.config import load
from dtagent.dtrace.spec import (
    ScriptSpec,
    SpecError,
    load_scripts,
    merge_options,
    script_dirs,
)


def register(sub: Any) -> None:
    """Add the ``dtrace`` command to the CLI's subparsers."""
    dsub = command_group(
        sub,
        "dtrace",
        help="the D scripts: list them, check that they compile",
        description="The D scripts (scripts/d and [dtrace] script_dirs). "
        "Example: dtagent dtrace list",
    )
    lp = dsub.add_parser(
        "list",
        help="each script: enabled or not and why, providers, metrics, options",
        description="Load and check every script spec and show each script: enabled or "
        "not and why, providers, metrics, DTrace options. Exit status 1 if a script "
        "fails to load. Example: dtagent dtrace list --config dtagent.toml",
    )
    lp.add_argument("--config", metavar="FILE", help="TOML config (see examples/dtagent.toml)")
    lp.set_defaults(handler=cmd_list)
    cp = dsub.add_parser(
        "check",
        help="compile the scripts without enabling them (needs DTrace)",
        description="Compile each script (or only SCRIPT) with libdtrace without enabling "
        "any probe, and report libdtrace's message for each one that fails. Needs a host "
        "with DTrace and the privileges to open it. Example: dtagent dtrace check runq",
    )
    cp.add_argument("script", nargs="?", metavar="SCRIPT", help="only this script")
    cp.add_argument("--config", metavar="FILE", help="TOML config (see examples/dtagent.toml)")
    cp.set_defaults(handler=cmd_check)


def _load(args: argparse.Namespace) -> tuple[Any, list[ScriptSpec], list[SpecError]]:
    config = load(getattr(args, "config", None))
    errors: list[SpecError] = []
    specs = load_scripts(script_dirs(config.get("dtrace", "script_dirs")), errors)
    return config, specs, errors


def _state(spec: ScriptSpec, overrides: dict[str, bool], engine_on: bool) -> str:
    if not engine_on:
        return "disabled (dtrace.enabled = false)"
    if spec.name in overrides:
        return "enabled (on in the config)" if overrides[spec.name] else \
            "disabled (off in the config: dtrace.scripts)"
    return "enabled (default)" if spec.enabled else \
        "disabled (off by default; enable with dtrace.scripts)"


def cmd_list(args: argparse.Namespace) -> int:
    config, specs, errors = _load(args)
    overrides: dict[str, bool] = config.get("dtrace", "scripts")
    engine_on = bool(config.get("dtrace", "enabled"))
    for spec in specs:
        print(f"{spec.name}: {_state(spec, overrides, engine_on)}")
        print(f"  {spec.description}")
        fbt = "yes (may break on other platform images)" if spec.fbt else "no"
        print(f"  providers: {', '.join(spec.providers) or '-'}; fbt: {fbt}")
        if spec.probes:
            print(f"  probes: {', '.join(spec.probes)}")
        for agg in spec.aggregations:
            labels = ", ".join(agg.labels) or "-"
            print(f"  metric: {agg.metric} ({agg.type}; @{agg.name} = {agg.function}(); "
                  f"labels: {labels})")
        print("  options: " + ", ".join(f"{k}={v}" for k, v in sorted(spec.options.items())))
        if spec.overhead:
            print(f"  overhead: {spec.overhead}")
        if spec.caveats:
            print(f"  caveats: {spec.caveats}")
        print(f"  file: {spec.path}")
    for err in errors:
        print(f"not loaded: {err}")
    running = [s for s in specs if engine_on and overrides.get(s.name, s.enabled)]
    if running:
        merged = merge_options(running)
        print("handle options (all enabled scripts): "
              + ", ".join(f"{k}={v}" for k, v in sorted(merged.items())))
    if not specs and not errors:
        print("no D scripts found in " + ", ".join(
            str(d) for d in script_dirs(config.get("dtrace", "script_dirs"))))
    return EXIT_ERROR if errors else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    config, specs, errors = _load(args)
    for err in errors:
        print(f"not loaded: {err}")
    if args.script:
        specs = [s for s in specs if s.name == args.script]
        if not specs:
            print(f"dtagent: no D script named {args.script!r} "
                  "(see 'dtagent dtrace list')")
            return EXIT_USAGE
    system = platform.system()
    if system != "SunOS" and config.get("sources", "platform") != "illumos":
        print(f"dtagent: 'dtrace check' compiles with libdtrace, which needs illumos; this "
              f"host runs {system}. 'dtagent dtrace list' checks the specs anywhere.")
        return EXIT_ERROR
    from dtagent.dtrace.libdtrace import DTraceError
    from dtagent.dtrace.worker import check_scripts

    lib = config.get("dtrace", "libdtrace")
    try:
        results = check_scripts(lib, specs)
    except (OSError, DTraceError) as exc:
        print(f"dtagent: cannot use libdtrace {lib}: {exc} (DTrace needs the "
              "dtrace_kernel privilege)")
        return EXIT_ERROR
    failed = 0
    for name, problem in results:
        if problem is None:
            print(f"{name}: ok")
        else:
            failed += 1
            print(f"{name}: failed: {problem}")
    return EXIT_ERROR if failed or errors else EXIT_OK
