"""Parsers of platform command output (pure functions of text; no OS access)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


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


class ParseMemo(Generic[T]):
    """The parse of each command's last output, made again only when the text changes.

    A collector is handed the same output at every scrape until its command runs again
    (svcs -Z every minute, one dladm per zone every five), and the command often
    prints the same text when it does: parsing it anew at every scrape was about 2% of
    a 1,000-zone scrape's CPU. What is kept is what the last parse made, which a scrape
    had alive anyway. A key not asked for during a whole collection (a halted zone's
    command) is forgotten at the next :meth:`rotate`. The parse is shared from one
    collection to the next: callers only read it.
    """

    def __init__(self, parse: Callable[[str], T]) -> None:
        self._parse = parse
        self._now: dict[Hashable, tuple[str, T]] = {}
        self._was: dict[Hashable, tuple[str, T]] = {}

    def __call__(self, text: str, key: Hashable = None) -> T:
        known = self._now.get(key) or self._was.get(key)
        # the same string while the command has not run again; == when it printed the
        # same (a comparison of the bytes, far cheaper than a parse)
        if known is not None and (known[0] is text or known[0] == text):
            self._now[key] = known
            return known[1]
        parsed = self._parse(text)
        self._now[key] = (text, parsed)
        return parsed

    def rotate(self) -> None:
        """Start a collection: keys not asked for since the last call are let go."""
        self._was, self._now = self._now, {}
