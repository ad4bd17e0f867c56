"""Plain-data snapshots of a host: what sources produce and collectors consume.

Sources (libkstat, commands, plugins, textfiles, replay) are the only code that touches
the OS. They hand collectors these objects, which hold no OS handles, so every collector
runs the same on a live SmartOS host, a recorded bundle and a simulated host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar, overload

# kstat types, from illumos usr/src/uts/common/sys/kstat.h.
KSTAT_TYPE_RAW = 0
KSTAT_TYPE_NAMED = 1
KSTAT_TYPE_INTR = 2
KSTAT_TYPE_IO = 3
KSTAT_TYPE_TIMER = 4

KSTAT_TYPE_NAMES = {
    KSTAT_TYPE_RAW: "raw",
    KSTAT_TYPE_NAMED: "named",
    KSTAT_TYPE_INTR: "intr",
    KSTAT_TYPE_IO: "io",
    KSTAT_TYPE_TIMER: "timer",
}

# A statistic's value: integers for every integer kstat data type, float for
# KSTAT_DATA_FLOAT/DOUBLE, str for KSTAT_DATA_CHAR/STRING.
StatValue = int | float | str

_T = TypeVar("_T")
_D = TypeVar("_D")


class StatRow(Mapping[str, StatValue]):
    """A kstat's statistics as one read decoded them: that read's values beside the
    name-to-position index every kstat of the same layout shares (every zone's
    ``memory_cap``, every link).

    A read-only mapping like the dict other sources give, in about half the memory:
    the live reader makes one per kstat at each collection, 15,000 at 1,000 zones,
    where a dict of a dozen statistics is about 370 bytes and this is the values'
    tuple and a small object, about 200. The index must not change once shared.
    """

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: Sequence[StatValue]) -> None:
        if len(index) != len(values):
            raise ValueError(f"{len(values)} values for {len(index)} statistic names")
        self._index = index
        self._values = tuple(values)

    def __getitem__(self, stat: str) -> StatValue:
        return self._values[self._index[stat]]

    @overload
    def get(self, stat: str, /) -> StatValue | None: ...

    @overload
    def get(self, stat: str, /, default: StatValue | _D) -> StatValue | _D: ...

    def get(self, stat: str, /, default: object = None) -> object:
        position = self._index.get(stat)
        return default if position is None else self._values[position]

    def __contains__(self, stat: object) -> bool:
        return stat in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"StatRow({dict(zip(self._index, self._values, strict=True))!r})"

    def __reduce__(self) -> tuple[type[dict[str, StatValue]], tuple[dict[str, StatValue]]]:
        return (dict, (dict(zip(self._index, self._values, strict=True)),))


@dataclass(slots=True)
class Kstat:
    """One kstat as read: its identity and its statistics by name.

    For KSTAT_TYPE_IO the statistics are the kstat_io_t fields (nread, nwritten,
    reads, writes, wtime, wlentime, wlastupdate, rtime, rlentime, rlastupdate,
    wcnt, rcnt); for KSTAT_TYPE_TIMER, the kstat_timer_t fields.
    """

    module: str
    instance: int
    name: str
    ks_class: str = ""
    ks_type: int = KSTAT_TYPE_NAMED
    snaptime: int = 0
    crtime: int = 0
    data: Mapping[str, StatValue] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.module, self.instance, self.name)

    def int_stat(self, stat: str) -> int | None:
        """The statistic as an int, or None when it is absent or not an integer.

        Collectors use this so that a missing statistic, or one of an unexpected
        type, removes only its own series.
        """
        value = self.data.get(stat)
        if type(value) is int:  # the common case: one check (bool is a subclass)
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value

    def num_stat(self, stat: str) -> float | None:
        """The statistic as a number (int or float), or None."""
        value = self.data.get(stat)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value

    def str_stat(self, stat: str) -> str | None:
        """The statistic as a string, or None when absent or not a string."""
        value = self.data.get(stat)
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class KstatInput:
    """kstats a collector reads: a module, and within it one class (None: every class).

    The kstat sources read the union of what the enabled collectors declare and
    nothing else, so a collector that reads a module it does not declare gets
    nothing, on a live host and in replay alike.
    """

    module: str
    ks_class: str | None = None

    def matches(self, ks: Kstat) -> bool:
        return ks.module == self.module and (self.ks_class is None or ks.ks_class == self.ks_class)


def modules_of(inputs: Iterable[KstatInput]) -> frozenset[str]:
    """The kstat modules to read for ``inputs``."""
    return frozenset(i.module for i in inputs)


class KstatSnapshot:
    """All kstats read at one moment, indexed by module and class; by full key when
    asked for."""

    __slots__ = ("_boot", "_by_class", "_by_key", "_by_module", "_derived", "_in_module",
                 "_kstats", "time")

    def __init__(self, kstats: Iterable[Kstat] = (), time: float = 0.0) -> None:
        self.time = time
        self._derived: dict[Callable[[KstatSnapshot], object], object] = {}
        self._kstats: list[Kstat] = []  # each key once, in the order first seen
        # By full key: made at the first add(). The reader's snapshots never need it (at
        # 1,000 zones it would be 1.5 MiB a collection); get() indexes only the module
        # it is asked about (unix has hundreds of kmem cache kstats on a real host).
        self._by_key: dict[tuple[str, int, str], Kstat] | None = None
        self._in_module: dict[str, dict[tuple[int, str], Kstat]] = {}
        self._by_module: dict[str, list[Kstat]] = {}
        self._by_class: dict[str, list[Kstat]] = {}
        self._boot: float | None = None
        for ks in kstats:
            self.add(ks)

    @classmethod
    def of(cls, kstats: Sequence[Kstat], time: float = 0.0) -> KstatSnapshot:
        """The snapshot of ``kstats``, the same as ``KstatSnapshot(kstats, time)``.

        Built in one pass for what a reader produces (every key once): nothing to look
        up or remove per kstat. Duplicate keys take the general path (the last wins).
        """
        snap = cls(time=time)
        if len({(ks.module, ks.instance, ks.name) for ks in kstats}) != len(kstats):
            for ks in kstats:
                snap.add(ks)
            return snap
        by_module: dict[str, list[Kstat]] = {}
        by_class: dict[str, list[Kstat]] = {}
        for ks in kstats:
            in_module = by_module.get(ks.module)
            if in_module is None:
                by_module[ks.module] = [ks]
            else:
                in_module.append(ks)
            in_class = by_class.get(ks.ks_class)
            if in_class is None:
                by_class[ks.ks_class] = [ks]
            else:
                in_class.append(ks)
        snap._kstats, snap._by_module, snap._by_class = list(kstats), by_module, by_class
        return snap

    def _keyed(self) -> dict[tuple[str, int, str], Kstat]:
        if self._by_key is None:
            self._by_key = {ks.key: ks for ks in self._kstats}
        return self._by_key

    def add(self, ks: Kstat) -> None:
        """Add ``ks``; a kstat of the same key is replaced (in its place when iterated)."""
        self._boot = None
        self._derived.clear()
        if self._in_module:
            self._in_module = {}  # get() uses the full index from now on
        by_key = self._keyed()
        key = ks.key
        old = by_key.get(key)
        if old is None:
            self._kstats.append(ks)
        else:
            # by identity: list.index would compare every kstat before it field by field
            at = next(i for i, seen in enumerate(self._kstats) if seen is old)
            self._kstats[at] = ks
            self._by_module[old.module].remove(old)
            self._by_class[old.ks_class].remove(old)
        by_key[key] = ks
        self._by_module.setdefault(ks.module, []).append(ks)
        self._by_class.setdefault(ks.ks_class, []).append(ks)

    def __iter__(self) -> Iterator[Kstat]:
        return iter(self._kstats)

    def derived(self, make: Callable[[KstatSnapshot], _T]) -> _T:
        """``make(self)``, made once per snapshot and shared by every caller.

        For what several collectors derive from the same kstats (the running zones): a
        pure function of the snapshot, computed at its first call instead of once per
        collector. The value is shared, so callers must not change it.
        """
        derived = self._derived
        if make in derived:
            return derived[make]  # type: ignore[return-value]
        value = derived[make] = make(self)
        return value

    def boot_time(self) -> float | None:
        """When the host booted (Unix time), from ``unix:0:system_misc`` ``boot_time``."""
        if self._boot is None:
            ks = self.get("unix", 0, "system_misc")
            boot = ks.int_stat("boot_time") if ks is not None else None
            self._boot = float(boot) if boot else 0.0
        return self._boot or None

    def created(self, ks: Kstat) -> float | None:
        """The kstat's creation time as Unix time: ``ks_crtime`` (hrtime, nanoseconds
        since boot) after the boot time; None when either is unknown."""
        crtime = ks.crtime
        if crtime <= 0:
            return None
        boot = self._boot  # asked for every counter kstat: the boot time once
        if boot is None:
            boot = self.boot_time()
        return boot + crtime / 1e9 if boot else None

    def __len__(self) -> int:
        return len(self._kstats)

    def get(self, module: str, instance: int, name: str) -> Kstat | None:
        """The kstat of this key, or None: through the full index when add() made it,
        else through an index of this module alone, made at its first get()."""
        if self._by_key is not None:
            return self._by_key.get((module, instance, name))
        keyed = self._in_module.get(module)
        if keyed is None:
            keyed = self._in_module[module] = {
                (ks.instance, ks.name): ks for ks in self._by_module.get(module, ())
            }
        return keyed.get((instance, name))

    def module(self, module: str) -> list[Kstat]:
        return self._by_module.get(module, [])

    def klass(self, ks_class: str) -> list[Kstat]:
        return self._by_class.get(ks_class, [])

    def only(self, inputs: Iterable[KstatInput]) -> KstatSnapshot:
        """The kstats matching any of ``inputs`` (what a source declared to read)."""
        wanted = tuple(inputs)
        return KstatSnapshot((ks for ks in self if any(i.matches(ks) for i in wanted)), self.time)


class _RunOutcome:
    """Whether a run of a command or a plugin is usable, and why not: its error (it could
    not run, timed out, ...), else a non-zero exit status."""

    __slots__ = ()
    returncode: int
    stderr: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0

    @property
    def reason(self) -> str:
        """Why the run is not usable, in a few words ("" when it is)."""
        if self.error is not None:
            return self.error
        if self.returncode != 0:
            return f"exit status {self.returncode}: {self.stderr.strip()[:200]}"
        return ""


@dataclass(frozen=True, slots=True)
class CommandResult(_RunOutcome):
    """The outcome of running one command (live or recorded).

    ``error`` is set when the command could not produce usable output: it was not
    found, it timed out, its output passed the cap (``truncated``), the result is older
    than its request allows, or the output was not recorded in a bundle. ``finished``
    is when the run ended on its source's clock; ``age`` is how old the result was
    when the snapshot holding it was taken.
    """

    argv: tuple[str, ...]
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    age: float = 0.0
    truncated: bool = False
    finished: float = 0.0


# How long a failed run waits before it is tried again, at most (a command that works
# again should not stay failed for a whole refresh interval).
FAILED_RETRY = 30.0
# No command runs more often than this, whatever its refresh (0 means "as often as
# that"): the source must never spin on a command that fails at once.
MIN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One command a collector reads, and the schedule it runs on.

    Collectors return these from :meth:`~dtagent.collectors.base.Collector.commands`;
    the command source runs each on its own schedule, off the scrape path, and the
    collector reads the result from ``snap.commands.get(argv)`` at a later scrape.

    * ``refresh``: seconds between runs while the ``generation`` stays the same.
    * ``generation``: any hashable value; when it changes (the set of running zone ids,
      a zone's id after a reboot) the command is due at once.
    * ``timeout``: the deadline of one run; the child's process group is killed then.
    * ``max_age``: a result older than this is not served (the collector gets an error
      result saying so); by default two refresh intervals plus the timeout.
    * ``fallbacks``: argvs tried in order when the one before is not installed
      (``vmadm``, else ``zoneadm``); the result's ``argv`` says which one answered.
    * ``name``: the ``command`` label of the agent's ``dtagent_command_*`` series;
      by default the program and its subcommand (``dladm show-linkprop``), so the
      per-zone variants of one command share a series.
    """

    argv: tuple[str, ...]
    refresh: float
    timeout: float = 5.0
    generation: Hashable = None
    max_age: float | None = None
    fallbacks: tuple[tuple[str, ...], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        for argv in (self.argv, *self.fallbacks):
            if not argv or not all(isinstance(a, str) and a for a in argv):
                raise ValueError(f"a command is a non-empty tuple of strings, got {argv!r}")
        if self.refresh < 0 or self.timeout <= 0:
            raise ValueError(f"{self.argv!r}: refresh must be >= 0 and timeout > 0")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"{self.argv!r}: max_age must be > 0")

    @property
    def limit(self) -> float:
        """The oldest a result may be and still be served."""
        if self.max_age is not None:
            return self.max_age
        return 2 * self.refresh + self.timeout

    @property
    def command(self) -> str:
        return self.name or " ".join(self.argv[:2])

    def interval(self, last: CommandResult) -> float:
        """Seconds from ``last`` to the next run (sooner after a failure)."""
        wait = self.refresh if last.ok else min(self.refresh, FAILED_RETRY)
        return max(wait, MIN_INTERVAL)

    def due_at(self, last: CommandResult | None, ran_for: Hashable) -> float:
        """When the command falls due (on the clock of ``last.finished``), given its
        latest result and the generation that result was run for: ``-inf`` when it
        never ran or ran for another generation (due at once, before any other)."""
        if last is None or ran_for != self.generation:
            return -math.inf
        return last.finished + self.interval(last)

    def due(self, last: CommandResult | None, ran_for: Hashable, now: float) -> bool:
        """Whether the command should run now (see :meth:`due_at`)."""
        return now >= self.due_at(last, ran_for)


@dataclass(frozen=True, slots=True)
class CommandStatus:
    """How one command (a request ``name``) is doing, for the agent's own metrics."""

    command: str
    age: float | None  # of the oldest result served or dropped; None before any run
    limit: float | None  # None: run on demand (run_now), never served to a collector
    runs: int = 0
    failures: int = 0


class CommandResults:
    """The command results one snapshot holds, by the argv they were requested with.

    Built by :meth:`select` from what a source has; collectors only call :meth:`get`.
    """

    __slots__ = ("_by_argv", "status")

    def __init__(
        self,
        results: Mapping[tuple[str, ...], CommandResult] | None = None,
        status: Sequence[CommandStatus] = (),
    ) -> None:
        self._by_argv = dict(results or {})
        self.status = tuple(status)

    def get(self, argv: Sequence[str]) -> CommandResult | None:
        """The result for ``argv`` (as requested), or None when it has not run yet."""
        return self._by_argv.get(tuple(argv))

    def __iter__(self) -> Iterator[CommandResult]:
        return iter(self._by_argv.values())

    def __len__(self) -> int:
        return len(self._by_argv)

    @classmethod
    def select(
        cls,
        requests: Iterable[CommandRequest],
        latest: Callable[[CommandRequest], tuple[CommandResult | None, CommandResult | None]],
        now: float,
        counts: Mapping[str, tuple[int, int]] | None = None,
    ) -> CommandResults:
        """Serve each request from its source's (latest, latest successful) results.

        The latest successful result is served while it is younger than the request's
        limit, even when a later run failed; past the limit it is dropped and the
        collector gets an error result saying how old it was, never the old output.
        ``counts`` are (runs, failures) by command name; a name no request has (a
        command run on demand) gets a status with its counts only.
        """
        served: dict[tuple[str, ...], CommandResult] = {}
        ages: dict[str, float | None] = {}
        limits: dict[str, float] = {}
        for req in requests:
            last, last_ok = latest(req)
            name = req.command
            limits[name] = max(limits.get(name, 0.0), req.limit)
            ages.setdefault(name, None)
            chosen = last_ok if last_ok is not None else last
            if chosen is None:
                continue
            age = max(0.0, now - chosen.finished)
            prev = ages[name]
            ages[name] = age if prev is None else max(prev, age)
            if chosen.ok and age > req.limit:
                served[req.argv] = replace(
                    chosen,
                    stdout="",
                    stderr="",
                    age=age,
                    error=f"the latest good result is {age:.0f} s old "
                    f"(older than its limit of {req.limit:g} s)",
                )
            else:
                served[req.argv] = replace(chosen, age=age)
        counts = counts or {}
        status = [
            CommandStatus(name, ages[name], limits[name], *counts.get(name, (0, 0)))
            for name in sorted(limits)
        ]
        # commands run on demand (the control wing's, through run_now) have counts only
        status += [
            CommandStatus(name, None, None, *counts[name])
            for name in sorted(set(counts) - set(limits))
        ]
        return cls(served, status)


class CommandSource(Protocol):
    """Runs (or replays) the platform commands collectors need.

    ``results`` is called once per collection with every request of every collector:
    it records what is wanted (a live source runs what is due in the background) and
    returns the results at hand at once; it never waits for a command.
    """

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults: ...

    def settle(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every wanted command that is due has run;
        True when none is left. For one-shot uses only: a scrape never waits."""
        ...


# Operators' own inputs: executable plugins and *.prom textfiles. Like commands, a
# collector declares the directory it reads; the plugin source runs the plugins on
# their own interval in the background and the textfile source reads the files, and
# the snapshot carries what they found: the text, raw, for the collector to parse.

# The most a plugin may print, and the default size limit of a textfile.
PLUGIN_MAX_OUTPUT = 4 * 1024 * 1024
TEXTFILE_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PluginRequest:
    """A directory of executable plugins a collector reads, and how they run.

    ``directory`` "" means none is configured: nothing runs on this host, but a
    replayed bundle that recorded plugin runs still serves them.
    """

    directory: str
    interval: float = 60.0
    timeout: float = 10.0
    max_output: int = PLUGIN_MAX_OUTPUT


@dataclass(frozen=True, slots=True)
class PluginRun(_RunOutcome):
    """The latest run of one plugin (live or recorded): what it printed and how it went.

    ``error`` is set when its output is not usable for a reason of the run: it could
    not be started, timed out, printed more than allowed or printed bytes that are not
    UTF-8. ``finished`` is Unix time; ``duration`` is in seconds.
    """

    name: str
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    duration: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True, slots=True)
class TextfileRequest:
    """A directory of ``*.prom`` files a collector reads ("": none configured, as for
    :class:`PluginRequest`), and the largest file it accepts."""

    directory: str
    max_bytes: int = TEXTFILE_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Textfile:
    """One ``*.prom`` file as read: its text, or why it was refused (``error``: cannot
    be read, not a regular file, larger than allowed, not UTF-8). ``mtime`` is Unix
    time, None when the file could not even be looked at."""

    name: str
    mtime: float | None = None
    text: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TextfileListing:
    """The ``*.prom`` files of a directory, by name; ``error`` when the directory itself
    could not be listed (then there are no files)."""

    files: tuple[Textfile, ...] = ()
    error: str | None = None


class PluginSource(Protocol):
    """Runs (or replays) the plugin directories collectors declare.

    ``plugin_runs`` is called once per collection with every request: it records what
    is wanted (a live source starts, retunes or stops its background runs) and returns
    at once, for each request, the latest run of each plugin; a request whose plugins
    have not run yet is absent. It never waits for a plugin.
    """

    def plugin_runs(
        self, requests: Sequence[PluginRequest]
    ) -> Mapping[PluginRequest, tuple[PluginRun, ...]]: ...

    def settle(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every wanted directory has been run once;
        True when none is left. For one-shot uses only: a scrape never waits."""
        ...


class TextfileSource(Protocol):
    """Reads (or replays) the textfile directories collectors declare, each file
    bounded in size; a request with nothing to serve is absent."""

    def textfiles(
        self, requests: Sequence[TextfileRequest]
    ) -> Mapping[TextfileRequest, TextfileListing]: ...


@dataclass(frozen=True, slots=True)
class HostStats:
    """Host-wide figures read through psutil (works on illumos and Linux alike)."""

    cpu_seconds: dict[str, float]
    memory_total: int
    memory_available: int
    swap_total: int
    swap_used: int
    load: tuple[float, float, float]
    boot_time: float
    ncpus: int


@dataclass(slots=True)
class HostSnapshot:
    """Everything a collector may look at during one scrape.

    ``host`` is None when the kstats come from a replayed bundle: the host figures of
    the machine doing the replay would be misleading. ``plugins`` and ``textfiles``
    hold, for each request a collector declared, what the plugin and textfile sources
    have for it.
    """

    kstats: KstatSnapshot
    commands: CommandResults
    time: float
    illumos: bool = True
    host: HostStats | None = None
    plugins: Mapping[PluginRequest, tuple[PluginRun, ...]] = field(default_factory=dict)
    textfiles: Mapping[TextfileRequest, TextfileListing] = field(default_factory=dict)
