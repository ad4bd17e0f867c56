"""Logging: structlog, JSON lines on stderr (SMF keeps stderr in the service log), or a
readable console format when stderr is a terminal."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the process. ``fmt`` is auto, json or console."""
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info,
            structlog.processors.UnicodeDecoder(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library (asyncio, ssl): route them into the
    # same JSON lines, and report an exception nobody caught as one line too, so
    # nothing ever writes a bare traceback into the SMF log.
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(max(LEVELS[level], logging.WARNING) if level != "debug" else logging.DEBUG)
    threading.excepthook = _thread_exception
    sys.excepthook = _uncaught


class _ToStructlog(logging.Handler):
    """A stdlib logging handler that writes each record as one structlog event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, object] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                fields["error"] = f"{type(exc).__name__}: {exc}"
            level = record.levelname.lower()
            method = level if level in LEVELS else "warning"
            getattr(structlog.get_logger(record.name), method)(record.getMessage(), **fields)
        except Exception:  # a log line must never take the agent down
            pass


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    structlog.get_logger("dtagent").error(
        "uncaught exception in a thread",
        thread=args.thread.name if args.thread else None,
        error=f"{args.exc_type.__name__}: {args.exc_value}",
    )


def _uncaught(exc_type: type[BaseException], exc: BaseException, _tb: object) -> None:
    structlog.get_logger("dtagent").error(
        "uncaught exception", error=f"{exc_type.__name__}: {exc}"
    )
