"""Parsers of platform command output (pure functions of text; no OS access)."""

from __future__ import annotations


def complete_lines(text: str) -> tuple[list[tuple[int, str]], tuple[int, str] | None]:
    """(line number, line) of the non-empty lines, and a last line that has no newline.

    Commands end their output with a newline; a last line without one was cut off (a
    command killed at its timeout, a short read), so it must not be read as complete:
    ``net0:  10`` may have been ``net0:  1000``.
    """
    parts = text.split("\n")
    tail = parts.pop()  # "" when the text ends with a newline
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(parts, start=1) if line.strip()]
    return lines, ((len(parts) + 1, tail) if tail.strip() else None)
