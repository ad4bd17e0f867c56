"""The shape of the CLI's command groups (``dtagent caps ...``, ``dtagent dtrace ...``),
so that every group behaves the same when its subcommand is missing."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def command_group(sub: Any, name: str, *, help: str, description: str) -> Any:
    """Add ``dtagent NAME SUBCOMMAND`` to the CLI's subparsers ``sub`` and return the
    subparsers of its subcommands; ``dtagent NAME`` alone prints its help and exits with
    the usage status. The chosen subcommand is ``args.NAME_command``."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def seconds(text: str) -> float:
    """An argparse type for an interval: seconds above 0, at most a year (NaN and
    infinity are refused too), so a bad value is a usage error naming the option."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, at most a year, got {text!r}")
    return value
