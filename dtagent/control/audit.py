"""The audit log: one JSON object a line, fsync'ed, rotated by size.

Every request is written before anything is applied and again before it is reported
done; a write that fails (disk full, permission, read-only file system) raises
:class:`AuditError` and the caller does not act. The log is also the control wing's
memory: cooldowns, the hourly limit, Alertmanager idempotency and ``caps revert`` read
it, so a CLI change and a daemon change see each other, and a restart forgets nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5


class AuditError(OSError):
    """The audit record could not be written durably; the action must not be taken."""


@dataclass
class AuditCounters:
    """dtagent_control_actions_total by result, for the metrics endpoint."""

    by_result: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, result: str) -> None:
        with self._lock:
            self.by_result[result] = self.by_result.get(result, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_result)


class AuditLog:
    """Appends records to ``path``; at ``max_bytes`` it becomes ``path.1`` (``keep`` kept)."""

    def __init__(
        self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the log's lock file: check-then-write is one step across processes."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise AuditError(exc.errno, f"cannot open {lock_path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it (and the directory when the file is new)."""
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        try:
            self._rotate_if_needed(len(line))
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(28, "short write (No space left on device)")
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                self._fsync_dir()
        except OSError as exc:
            raise AuditError(
                exc.errno, f"cannot write audit log {self.path}: {exc.strerror or exc}"
            ) from None

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if not self.path.is_file() or size + incoming <= self.max_bytes or size == 0:
            return
        for i in range(self.keep - 1, 0, -1):
            older = self._numbered(i)
            if older.exists():
                os.replace(older, self._numbered(i + 1))
        os.replace(self.path, self._numbered(1))
        self._fsync_dir()

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self, generations: int = 1) -> Iterator[dict[str, Any]]:
        """Records oldest first, from ``generations`` rotated files and the current one.

        A line that is not JSON (a torn write from a crash) is skipped: the log is
        append-only, so what follows it is still good.
        """
        paths = [self._numbered(i) for i in range(generations, 0, -1)] + [self.path]
        for path in paths:
            if not path.is_file():
                continue  # only regular files: a device (say /dev/full) never ends
            try:
                fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError:
                continue
            with fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict):
                        yield rec
