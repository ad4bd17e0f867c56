"""Plain-data snapshots of a host: what sources produce and collectors consume.

Sources (libkstat, commands, replay) are the only code that touches the OS. They hand
collectors these objects, which hold no OS handles, so every collector runs the same on
a live SmartOS host, a recorded bundle and a simulated host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
    data: dict[str, StatValue] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.module, self.instance, self.name)

    def int_stat(self, stat: str) -> int | None:
        """The statistic as an int, or None when it is absent or not an integer.

        Collectors use this so that a missing statistic, or one of an unexpected
        type, removes only its own series.
        """
        value = self.data.get(stat)
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


class KstatSnapshot:
    """All kstats read at one moment, indexed by module, class and full key."""

    __slots__ = ("_boot", "_by_class", "_by_key", "_by_module", "time")

    def __init__(self, kstats: Iterable[Kstat] = (), time: float = 0.0) -> None:
        self.time = time
        self._by_key: dict[tuple[str, int, str], Kstat] = {}
        self._by_module: dict[str, list[Kstat]] = {}
        self._by_class: dict[str, list[Kstat]] = {}
        self._boot: float | None = None
        for ks in kstats:
            self.add(ks)

    def add(self, ks: Kstat) -> None:
        self._boot = None
        old = self._by_key.get(ks.key)
        if old is not None:
            self._by_module[old.module].remove(old)
            self._by_class[old.ks_class].remove(old)
        self._by_key[ks.key] = ks
        self._by_module.setdefault(ks.module, []).append(ks)
        self._by_class.setdefault(ks.ks_class, []).append(ks)

    def __iter__(self) -> Iterator[Kstat]:
        return iter(self._by_key.values())

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
        if ks.crtime <= 0:
            return None
        boot = self.boot_time()
        return None if boot is None else boot + ks.crtime / 1e9

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, module: str, instance: int, name: str) -> Kstat | None:
        return self._by_key.get((module, instance, name))

    def module(self, module: str) -> list[Kstat]:
        return self._by_module.get(module, [])

    def klass(self, ks_class: str) -> list[Kstat]:
        return self._by_class.get(ks_class, [])

    def select(self, module: str | None = None, ks_class: str | None = None) -> list[Kstat]:
        """kstats matching module and/or class (None is a wildcard)."""
        if module is not None:
            found = self.module(module)
            if ks_class is not None:
                found = [ks for ks in found if ks.ks_class == ks_class]
            return found
        if ks_class is not None:
            return self.klass(ks_class)
        return list(self)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of running one command (live or recorded).

    ``error`` is set when the command could not produce usable output: it was not
    found, it timed out, or the output was not recorded in a bundle. ``age`` is how
    many seconds old the output is (commands are cached).
    """

    argv: tuple[str, ...]
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    age: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0


class CommandSource(Protocol):
    """Runs (or replays) the platform commands collectors need, with caching.

    ``max_age`` is how old a cached output may be; ``generation`` is any hashable
    token whose change forces a refresh (for example the set of running zone ids,
    so zone metadata is re-read when a zone boots or halts).
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        max_age: float = 0.0,
        timeout: float = 10.0,
        generation: object = None,
    ) -> CommandResult: ...


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
    the machine doing the replay would be misleading.
    """

    kstats: KstatSnapshot
    commands: CommandSource
    time: float
    illumos: bool = True
    host: HostStats | None = None
