"""Running platform commands (vmadm, zoneadm, zfs, dladm, flowadm): argv lists, timeouts,
a cache, never a shell.

Commands are slow and some (vmadm) take locks, so every output is cached: a collector
says how old an answer may be (``max_age``) and what invalidates it (``generation``,
for example the set of running zone ids). A command that hangs is killed at its
timeout and reported as an error; the previous good output, if any, is not reused
past its age, so stale data is never presented as fresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from dtagent.snapshot import CommandResult

log = structlog.get_logger("dtagent.commands")

# Keep captured output bounded: a runaway command must not eat the agent's memory.
MAX_OUTPUT = 16 * 1024 * 1024


@dataclass(slots=True)
class _Entry:
    result: CommandResult
    at: float
    generation: object


class CommandRunner:
    """A :class:`~dtagent.snapshot.CommandSource` that runs real processes.

    ``path`` replaces PATH for finding commands (tests point it at stand-ins); the
    child's environment is otherwise the agent's, with LC_ALL=C so output formats do
    not depend on the locale.
    """

    def __init__(
        self,
        path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._clock = clock
        self._cache: dict[tuple[str, ...], _Entry] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        self.forks = 0

    def _lock_for(self, key: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult:
        key = tuple(argv)
        if not key:
            raise ValueError("empty argv")
        # One runner per argv at a time: concurrent scrapes share one fork.
        with self._lock_for(key):
            now = self._clock()
            entry = self._cache.get(key)
            if entry is not None and now - entry.at <= max_age and entry.generation == generation:
                r = entry.result
                return CommandResult(
                    r.argv, r.returncode, r.stdout, r.stderr, r.error, age=now - entry.at
                )
            result = self._execute(key, timeout)
            self._cache[key] = _Entry(result, self._clock(), generation)
            return result

    def run_once(
        self, argv: Sequence[str], *, timeout: float = 10.0, stdin: bytes | None = None
    ) -> CommandResult:
        """Run a command that changes something: never cached, ``stdin`` fed to it.

        The control wing uses this for ``vmadm update`` (a JSON payload on stdin),
        ``prctl``, ``zonecfg``, ``dladm set-linkprop`` and ``zfs set``, and for the
        read-back right after, which must not be an answer from before the change.
        """
        key = tuple(argv)
        if not key:
            raise ValueError("empty argv")
        with self._lock_for(key):
            return self._execute(key, timeout, stdin)

    def _execute(
        self, argv: tuple[str, ...], timeout: float, stdin: bytes | None = None
    ) -> CommandResult:
        exe = shutil.which(argv[0], path=self.path) if "/" not in argv[0] else argv[0]
        if exe is None:
            return CommandResult(argv, 127, error=f"{argv[0]}: command not found")
        env = dict(os.environ, LC_ALL="C", LANG="C")
        if self.path is not None:
            env["PATH"] = self.path + os.pathsep + env.get("PATH", "")
        self.forks += 1
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return CommandResult(argv, 126, error=f"{argv[0]}: cannot run ({exc.strerror})")
        try:
            out, err = proc.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            log.warning("command timed out", argv=list(argv), timeout_s=timeout)
            return CommandResult(argv, -9, error=f"timed out after {timeout:g}s")
        elapsed = time.monotonic() - started
        stdout = out[:MAX_OUTPUT].decode("utf-8", "replace")
        stderr = err[:4096].decode("utf-8", "replace")
        if proc.returncode != 0:
            log.warning(
                "command failed",
                argv=list(argv),
                rc=proc.returncode,
                stderr=stderr.strip()[:500],
                duration_s=round(elapsed, 3),
            )
        else:
            log.debug("command ran", argv=list(argv), duration_s=round(elapsed, 3))
        return CommandResult(argv, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and anything it started (it runs in its own session)."""
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class NoCommands:
    """A CommandSource for hosts where platform commands do not exist (not illumos)."""

    def run_once(
        self, argv: Sequence[str], *, timeout: float = 10.0, stdin: bytes | None = None
    ) -> CommandResult:
        return CommandResult(tuple(argv), 127, error="not available on this platform")

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult:
        return CommandResult(tuple(argv), 127, error="not available on this platform")
