"""The agent: sources in, metric families out, one collection at a time.

A scrape takes a kstat snapshot (libkstat or a replayed bundle), asks every enabled
collector which commands and plugin directories it reads and hands those requests to
the command and plugin sources (which run them in the background and answer at once
with the results they have), has the textfile source read the declared textfiles, runs
every collector on the snapshot, adds the DTrace families and the agent's own health,
and returns the families. Collections are serialised (libkstat handles are not thread-safe and
collectors remember what they already logged); scrapes that arrive while one runs wait
for it and share its result.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import Protocol

import structlog

from dtagent.collectors.base import Collector
from dtagent.metrics import MetricFamily
from dtagent.selfmon import SelfMonitor
from dtagent.snapshot import (
    CommandRequest,
    CommandResults,
    CommandSource,
    HostSnapshot,
    HostStats,
    KstatSnapshot,
    PluginRequest,
    PluginRun,
    PluginSource,
    TextfileListing,
    TextfileRequest,
    TextfileSource,
)

log = structlog.get_logger("dtagent.agent")


class KstatProvider(Protocol):
    """Where kstat snapshots come from: libkstat, a replayed bundle, or nothing."""

    def kstats(self) -> KstatSnapshot: ...


class DTraceProvider(Protocol):
    """The DTrace side of a scrape: cumulative histograms and counters.

    It gets the scrape's snapshot so zone ids map to the zone names of that moment,
    and may do its work as the families are drawn: the agent lets the snapshot go
    before it draws them, and draws them all.
    """

    def families(self, snap: HostSnapshot) -> Iterable[MetricFamily]: ...


def dtrace_script_metrics(dtrace: DTraceProvider | None) -> dict[str, frozenset[str]]:
    """D script name → the metric names its aggregations export (for ``collect[]``)."""
    accumulator = getattr(dtrace, "accumulator", None)
    scripts = getattr(accumulator, "scripts", None) or {}
    return {
        name: frozenset(agg.metric for agg in spec.aggregations)
        for name, spec in scripts.items()
    }


# Called with each collection's snapshot (``dtagent capture`` records them).
Observer = Callable[[HostSnapshot], None]


class NoKstats:
    """The kstat provider on a host without libkstat (Linux): always empty."""

    def kstats(self) -> KstatSnapshot:
        return KstatSnapshot()


class Agent:
    """Runs collectors over one snapshot per scrape and reports on itself."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        kstats: KstatProvider,
        commands: CommandSource,
        *,
        illumos: bool,
        host_stats: Callable[[], HostStats] | None = None,
        dtrace: DTraceProvider | None = None,
        unavailable: dict[str, str] | None = None,
        reuse_within: float = 1.0,
        clock: Callable[[], float] = time.time,
        source_mode: str = "live",
        plugins: PluginSource | None = None,
        textfiles: TextfileSource | None = None,
    ) -> None:
        self.collectors = list(collectors)
        self.kstat_provider = kstats
        self.commands = commands
        self.plugins = plugins
        self.textfiles = textfiles
        self.illumos = illumos
        self.host_stats = host_stats
        self.dtrace = dtrace
        self.unavailable = dict(unavailable or {})
        self.reuse_within = reuse_within
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, weakref.ref[_Families]] | None = None
        self._failing: dict[str, str] = {}
        self.selfmon = SelfMonitor(source_mode)
        self.collections = 0
        self._observers: list[Observer] = []
        self._gc = ScrapeGC()

    def set_collectors(self, collectors: Sequence[Collector]) -> None:
        """Run these from the next collection on (a config reload). The sources follow
        the declarations at that collection: a plugin directory no collector declares
        any more stops running."""
        with self._lock:
            self.collectors = list(collectors)
            self._last = None

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` with the snapshot of every collection from now on."""
        self._observers.append(observer)

    def collect(self, *, fresh: bool = False) -> list[MetricFamily]:
        """All families for one scrape, shared by calls less than ``reuse_within``
        after its collection started (unless ``fresh``) while a caller still holds
        them: the agent keeps only a weak reference, so a scrape's families go as soon
        as its body is rendered, not at the next collection."""
        with self._lock:
            now = time.monotonic()
            if not fresh and self._last is not None and now - self._last[0] < self.reuse_within:
                held = self._last[1]()
                if held is not None:
                    return held
            self._last = None
            with self._gc:
                families = _Families(self._collect())
            self._last = (now, weakref.ref(families))
            return families

    def stream(self) -> Iterator[MetricFamily]:
        """All families of one scrape, each collector's drawn as the caller renders:
        what the server serves. Only one collector's families and the snapshot are
        alive at a time, never a whole scrape's samples (at 1,000 zones those were
        30 MiB beside the text rendered from them). The collection holds the agent
        until the last family is drawn or the iterator is dropped."""
        with self._lock:
            self._last = None
            with self._gc:
                yield from self._families()

    def names(self) -> list[str]:
        """What ``collect[]`` can name: the collectors that run and the D scripts."""
        return sorted({c.name for c in self.collectors} | set(dtrace_script_metrics(self.dtrace)))

    def collect_only(self, names: frozenset[str]) -> list[MetricFamily]:
        """Families of the named collectors and D scripts only (``collect[]``), plus the
        agent's own health. Not shared with full scrapes: the server shares it among
        scrapes with the same filter."""
        with self._lock:
            return self._collect(names)

    def settle(self, timeout: float) -> bool:
        """Declare this moment's command requests and plugin directories and wait (at
        most ``timeout``) until they have run: for one-shot collections (``dtagent
        scrape``, a capture's first frame). Serving never calls it (``serve`` calls it
        with 0 so the runs start before the first scrape)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self.commands.results(self._requests(self._kstats()))
            if self.plugins is not None:
                self.plugins.plugin_runs(self._plugin_requests())
        settled = self.commands.settle(timeout)
        if self.plugins is not None:
            settled = self.plugins.settle(max(0.0, deadline - time.monotonic())) and settled
        return settled

    def _kstats(self) -> KstatSnapshot:
        try:
            return self.kstat_provider.kstats()
        except Exception as exc:  # a broken kstat chain must not take /metrics down
            log.error("reading kstats failed", error=str(exc))
            return KstatSnapshot()

    def _requests(self, kstats: KstatSnapshot) -> list[CommandRequest]:
        """Every collector's command requests for this moment (a collector that fails
        to say is reported failed by its collection). Every collector's, also for a
        ``collect[]`` scrape: the requests the command source keeps are the union."""
        requests: list[CommandRequest] = []
        for collector in self.collectors:
            try:
                requests.extend(collector.commands(kstats))
            except Exception as exc:
                self._report_failure(collector.name, exc)
        return requests

    def _plugin_requests(self) -> list[PluginRequest]:
        """Every collector's plugin directories (all, also for a ``collect[]`` scrape:
        a directory no request names stops running)."""
        requests: list[PluginRequest] = []
        for collector in self.collectors:
            try:
                requests.extend(collector.plugins())
            except Exception as exc:
                self._report_failure(collector.name, exc)
        return requests

    def _plugin_runs(self) -> Mapping[PluginRequest, tuple[PluginRun, ...]]:
        if self.plugins is None:
            return {}
        try:
            return self.plugins.plugin_runs(self._plugin_requests())
        except Exception as exc:
            log.error("reading plugin runs failed", error=str(exc))
            return {}

    def _textfiles(
        self, only: frozenset[str] | None
    ) -> Mapping[TextfileRequest, TextfileListing]:
        """The textfiles of the collectors that run in this collection (read now)."""
        if self.textfiles is None:
            return {}
        requests: list[TextfileRequest] = []
        for collector in self.collectors:
            if only is not None and collector.name not in only:
                continue
            try:
                requests.extend(collector.textfiles())
            except Exception as exc:
                self._report_failure(collector.name, exc)
        if not requests:
            return {}
        try:
            return self.textfiles.textfiles(requests)
        except Exception as exc:
            log.error("reading textfiles failed", error=str(exc))
            return {}

    def _collect(self, only: frozenset[str] | None = None) -> list[MetricFamily]:
        return list(self._families(only))

    def _families(self, only: frozenset[str] | None = None) -> Iterator[MetricFamily]:
        """One collection's families, collector by collector, then DTrace's and the
        agent's own health (which times every part before it)."""
        started = time.perf_counter()
        self.collections += 1
        kstats = self._kstats()
        try:
            commands = self.commands.results(self._requests(kstats))
        except Exception as exc:
            log.error("reading command results failed", error=str(exc))
            commands = CommandResults()
        host: HostStats | None = None
        if self.host_stats is not None:
            try:
                host = self.host_stats()
            except Exception as exc:
                log.error("reading host figures failed", error=str(exc))
        snap = HostSnapshot(
            kstats=kstats,
            commands=commands,
            time=kstats.time or self._clock(),
            illumos=self.illumos,
            host=host,
            plugins=self._plugin_runs(),
            textfiles=self._textfiles(only),
        )
        results: dict[str, tuple[bool, float]] = {}
        for collector in self.collectors:
            if only is not None and collector.name not in only:
                continue
            t0 = time.perf_counter()
            ok = True
            try:
                out = list(collector.collect(snap))
            except Exception as exc:
                ok = False
                out = []
                self._report_failure(collector.name, exc)
            else:
                if collector.name in self._failing:
                    del self._failing[collector.name]
                    log.info("collector recovered", collector=collector.name)
            results[collector.name] = (ok, time.perf_counter() - t0)
            paused = time.perf_counter()
            yield from out  # the caller renders them now: not the collection's time
            started += time.perf_counter() - paused
            del out
        dtrace_families: Iterator[MetricFamily] = iter(())
        ok, dtrace_taken = True, 0.0
        if self.dtrace is not None:
            t0 = time.perf_counter()
            try:
                # taken at every scrape, filtered or not: the deltas are cumulative
                dtrace_families = iter(self.dtrace.families(snap))
                if only is not None:
                    script_metrics = dtrace_script_metrics(self.dtrace)
                    wanted = set().union(*(script_metrics.get(n, ()) for n in only))
                    every = set().union(*script_metrics.values())
                    dtrace_families = (
                        f for f in dtrace_families if f.name in wanted or f.name not in every
                    )
                ok = True
            except Exception as exc:
                self._report_failure("dtrace", exc)
                ok, dtrace_families = False, iter(())
            dtrace_taken = time.perf_counter() - t0
        # The observers have the snapshot now, and it goes before the DTrace deltas
        # are applied (when the first family is drawn) and the families, most of the
        # body, are made and rendered: the kstats read need not sit beside them.
        if only is None and self._observers:
            if self.dtrace is not None and ok:
                # what they record includes the deltas this collection applies
                t0 = time.perf_counter()
                try:
                    dtrace_families = chain(list(islice(dtrace_families, 1)),
                                            dtrace_families)
                except Exception as exc:
                    self._report_failure("dtrace", exc)
                    ok, dtrace_families = False, iter(())
                dtrace_taken += time.perf_counter() - t0
            paused = time.perf_counter()
            for observer in self._observers:
                observer(snap)
            started += time.perf_counter() - paused  # not the collection's time either
        del snap, kstats
        if self.dtrace is not None:
            t0 = time.perf_counter() - dtrace_taken
            # the families are made as they are drawn: the time making them is the
            # collection's, the time the caller spends on each (rendering) is not
            while True:
                try:
                    family = next(dtrace_families)
                except StopIteration:
                    break
                except Exception as exc:
                    self._report_failure("dtrace", exc)
                    ok = False
                    break
                paused = time.perf_counter()
                yield family
                del family
                resumed = time.perf_counter()
                started += resumed - paused
                t0 += resumed - paused
            results["dtrace"] = (ok, time.perf_counter() - t0)
        available = {c.name: True for c in self.collectors}
        available.update({name: False for name in self.unavailable})
        health = getattr(self.kstat_provider, "health", None)  # the live source has one
        yield from self.selfmon.families(
            results,
            available,
            time.perf_counter() - started,
            health() if callable(health) else None,
            commands.status,
        )

    def _report_failure(self, name: str, exc: Exception) -> None:
        """Log a failing collector when it starts failing or fails differently."""
        message = f"{type(exc).__name__}: {exc}"
        if self._failing.get(name) != message:
            self._failing[name] = message
            log.error("collector failed", collector=name, error=message, exc_info=exc)


class _Families(list[MetricFamily]):
    """A scrape's families: a list the agent can hold a weak reference to."""


class ScrapeGC:
    """Keeps the cyclic garbage collector off a scrape's objects.

    A scrape of a large host builds about a million short-lived objects (samples,
    label tuples) and keeps them until the next scrape; left to the collector, they
    survive its young generations, reach the oldest and make it traverse every
    object of the process at each scrape, a cost that grows with the host. They hold
    no reference cycles (reference counting frees them), so while a collection runs
    the collector is off, and afterwards everything alive is frozen (gc.freeze: never
    traversed again, still freed when unreferenced). Every ``full_every`` collections
    the process is unfrozen and collected once, so a cycle made anywhere is still
    freed.
    """

    def __init__(self, full_every: int = 60) -> None:
        self.full_every = full_every
        self.count = 0
        self._was_enabled = True

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        self.count += 1
        if self.count % self.full_every == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        if self._was_enabled:
            gc.enable()
