"""The agent's own health: build info, per-collector success and duration, CPU and RSS.

These are read by the agent about itself (not about the platform), so they live here
rather than in a collector.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Protocol

import psutil

from dtagent import __version__
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import CommandStatus

SRC = "the agent itself"

BUILD_INFO = MetricSpec(
    "dtagent_build_info",
    "gauge",
    "Version of the running agent; always 1.",
    ("version", "python"),
    "",
    SRC,
)
SUCCESS = MetricSpec(
    "dtagent_collector_success",
    "gauge",
    "1 if the collector's last run succeeded, 0 if it failed (see the log).",
    ("collector",),
    "",
    SRC,
)
DURATION = MetricSpec(
    "dtagent_collector_duration_seconds",
    "gauge",
    "How long the collector's last run took.",
    ("collector",),
    "seconds",
    SRC,
)
AVAILABLE = MetricSpec(
    "dtagent_collector_available",
    "gauge",
    "1 if the collector can run on this host, 0 if not (the reason is logged at start).",
    ("collector",),
    "",
    SRC,
)
CPU = MetricSpec(
    "dtagent_process_cpu_seconds_total",
    "counter",
    "CPU time used by the agent process (user + system).",
    (),
    "seconds",
    SRC,
)
RSS = MetricSpec(
    "dtagent_process_resident_memory_bytes",
    "gauge",
    "Resident memory of the agent process.",
    (),
    "bytes",
    SRC,
)
START = MetricSpec(
    "dtagent_process_start_time_seconds",
    "gauge",
    "When the agent process started, Unix time.",
    (),
    "seconds",
    SRC,
)
SOURCE_INFO = MetricSpec(
    "dtagent_source_info",
    "gauge",
    "Where the served data comes from; always 1. mode is live (this host), replay (a "
    "recorded or imported bundle) or simulated (a bundle of a simulated host).",
    ("mode",),
    "",
    SRC,
)
SOURCE_MODES = ("live", "replay", "simulated")
SCRAPE = MetricSpec(
    "dtagent_scrape_duration_seconds",
    "gauge",
    "How long the last collection of all collectors took.",
    (),
    "seconds",
    SRC,
)

KSTAT_REOPENS = MetricSpec(
    "dtagent_kstat_reopens_total",
    "counter",
    "Times the libkstat handle was closed because kstat_chain_update failed; a new one "
    "is opened at the next collection (that collection has no kstats).",
    (),
    "",
    SRC,
)
KSTAT_SKIPPED = MetricSpec(
    "dtagent_kstat_reads_skipped_total",
    "counter",
    "kstats left out of a collection: vanished (gone after the chain update, e.g. a "
    "zone halting), invalid (still in the invalid state after a bounded wait), error.",
    ("reason",),
    "",
    SRC,
)

COMMAND_SRC = "the agent's command source (dtagent.sources.commands)"
COMMAND_AGE = MetricSpec(
    "dtagent_command_age_seconds",
    "gauge",
    "Age of the oldest result of the command that the last collection had; a result "
    "older than dtagent_command_max_age_seconds is not used.",
    ("command",),
    "seconds",
    COMMAND_SRC,
)
COMMAND_LIMIT = MetricSpec(
    "dtagent_command_max_age_seconds",
    "gauge",
    "The oldest a result of the command may be and still be used.",
    ("command",),
    "seconds",
    COMMAND_SRC,
)
COMMAND_RUNS = MetricSpec(
    "dtagent_command_runs_total",
    "counter",
    "Runs of the command (every argv of it, e.g. each zone's dladm); under serve the "
    "control wing's commands are counted too, as control PROGRAM ACTION.",
    ("command",),
    "",
    COMMAND_SRC,
)
COMMAND_FAILURES = MetricSpec(
    "dtagent_command_failures_total",
    "counter",
    "Runs of the command that failed: not installed, non-zero exit, timed out or output "
    "over the cap (the log says which).",
    ("command",),
    "",
    COMMAND_SRC,
)

SPECS = (
    BUILD_INFO,
    SOURCE_INFO,
    SUCCESS,
    DURATION,
    AVAILABLE,
    CPU,
    RSS,
    START,
    SCRAPE,
    KSTAT_REOPENS,
    KSTAT_SKIPPED,
    COMMAND_AGE,
    COMMAND_LIMIT,
    COMMAND_RUNS,
    COMMAND_FAILURES,
)


class KstatHealthLike(Protocol):
    """The live kstat source's counters (dtagent.sources.libkstat.KstatHealth)."""

    @property
    def reopens(self) -> int: ...
    @property
    def vanished(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def errors(self) -> int: ...


class SelfMonitor:
    """Builds the agent's own families from the last collection's outcome."""

    def __init__(self, source_mode: str = "live") -> None:
        if source_mode not in SOURCE_MODES:
            raise ValueError(f"source mode {source_mode!r} is not one of {SOURCE_MODES}")
        self.source_mode = source_mode
        self._proc = psutil.Process()
        self._start = self._proc.create_time()

    def families(
        self,
        results: dict[str, tuple[bool, float]],
        available: dict[str, bool],
        scrape_seconds: float,
        kstat_health: KstatHealthLike | None = None,
        commands: Sequence[CommandStatus] = (),
    ) -> list[MetricFamily]:
        build = BUILD_INFO.family()
        build.add((__version__, platform.python_version()), 1)
        source = SOURCE_INFO.family()
        source.add((self.source_mode,), 1)
        success, duration, avail = SUCCESS.family(), DURATION.family(), AVAILABLE.family()
        for name, (ok, secs) in sorted(results.items()):
            success.add((name,), 1 if ok else 0)
            duration.add((name,), secs)
        for name, is_available in sorted(available.items()):
            avail.add((name,), 1 if is_available else 0)
        cpu, rss, start, scrape = CPU.family(), RSS.family(), START.family(), SCRAPE.family()
        with self._proc.oneshot():
            times = self._proc.cpu_times()
            cpu.add((), float(times.user + times.system))
            rss.add((), int(self._proc.memory_info().rss))
        start.add((), self._start)
        scrape.add((), scrape_seconds)
        out = [build, source, success, duration, avail, cpu, rss, start, scrape]
        if kstat_health is not None:  # the live kstat source only
            reopens, skipped = KSTAT_REOPENS.family(), KSTAT_SKIPPED.family()
            reopens.add((), kstat_health.reopens)
            skipped.add(("vanished",), kstat_health.vanished)
            skipped.add(("invalid",), kstat_health.invalid)
            skipped.add(("error",), kstat_health.errors)
            out += [reopens, skipped]
        age, limit = COMMAND_AGE.family(), COMMAND_LIMIT.family()
        runs, failures = COMMAND_RUNS.family(), COMMAND_FAILURES.family()
        for status in commands:
            labels = (status.command,)
            if status.age is not None:
                age.add(labels, status.age)
            if status.limit is not None:
                limit.add(labels, status.limit)
            runs.add(labels, status.runs)
            failures.add(labels, status.failures)
        return out + [f for f in (age, limit, runs, failures) if len(f)]
