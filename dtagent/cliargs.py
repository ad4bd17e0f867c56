"""The shape of the CLI's command groups (``dtagent caps ...``, ``dtagent dtrace ...``),
so that every group behaves the same when its subcommand is missing."""

from __future__ import annotations

from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def command_group(sub: Any, name: str, *, help: str, description: str) -> Any:
    """Add ``dtagent NAME SUBCOMMAND`` to the CLI's subparsers ``sub`` and return the
    subparsers of its subcommands; ``dtagent NAME`` alone prints its help and exits with
    the usage status. The chosen subcommand is ``args.NAME_command``."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
