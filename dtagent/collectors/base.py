"""What every collector is: a named, pure function of a host snapshot.

A collector never touches the OS. It declares what it reads: the kstats
(``kstat_inputs``; the kstat source reads the union of every enabled collector's),
the commands (``commands()``, run by the command source on their own schedule) and
the operator's plugin and textfile directories (``plugins()``, ``textfiles()``); it
reads a :class:`~dtagent.snapshot.HostSnapshot` holding those and returns metric
families built from the specs it declares in ``specs``, which are also what
docs/metrics.md is generated from.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import structlog

from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.settings import Setting
from dtagent.snapshot import (
    CommandRequest,
    HostSnapshot,
    KstatInput,
    KstatSnapshot,
    PluginRequest,
    TextfileRequest,
)


class Collector(ABC):
    """Base class for collectors; subclasses are discovered automatically.

    ``name`` is what the config and ``dtagent_collector_success{collector}`` use.
    ``illumos_only`` collectors are skipped (and reported unavailable) on a host that
    is neither illumos nor a replayed bundle.

    ``settings`` declares the collector's ``[collectors.NAME]`` settings
    (:mod:`dtagent.settings`); the config loader checks them, so the constructor, which
    takes each as a keyword argument with the declared default, need not.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    specs: ClassVar[tuple[MetricSpec, ...]] = ()
    illumos_only: ClassVar[bool] = True
    kstat_inputs: ClassVar[tuple[KstatInput, ...]] = ()
    settings: ClassVar[Mapping[str, Setting]] = {}

    @classmethod
    def settings_problems(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Problems between settings (each valid on its own), by key: what was expected.
        ``values`` holds every declared setting; most collectors have no such rule."""
        return {}

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        _check_declared_settings(cls)

    def __init__(self) -> None:
        self.log = structlog.get_logger("dtagent.collector").bind(collector=self.name)
        self._warned: set[str] = set()

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        """The commands this collector reads, given this moment's kstats (which zones run).

        Called at every collection before :meth:`collect`; the results arrive in
        ``snap.commands`` (see dtagent.sources.commands for the schedule).
        """
        return ()

    def plugins(self) -> Iterable[PluginRequest]:
        """The plugin directories this collector reads; the plugin source runs them on
        their own interval and the runs arrive in ``snap.plugins[request]``."""
        return ()

    def textfiles(self) -> Iterable[TextfileRequest]:
        """The textfile directories this collector reads; the textfile source reads them
        at each collection and the files arrive in ``snap.textfiles[request]``."""
        return ()

    @abstractmethod
    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        """Families for this snapshot. Raising marks the collector failed for it."""

    def warn_once(self, key: str, event: str, **kw: object) -> None:
        """Log a data problem the first time it is seen, not at every scrape."""
        if key in self._warned:
            return
        self._warned.add(key)
        self.log.warning(event, **kw)


def _check_declared_settings(cls: type[Collector]) -> None:
    """The constructor's keyword parameters are exactly the declared settings, with the
    declared defaults: one source of truth, enforced when the class is defined."""
    params = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    declared = {name: setting.default for name, setting in cls.settings.items()}
    if params != declared:
        raise TypeError(
            f"{cls.__name__}: constructor parameters {params} differ from the declared "
            f"settings {declared}"
        )


class Families(dict[str, MetricFamily]):
    """A collector's families for one scrape, created lazily from its specs.

    A dict whose missing keys are made from the specs (``__missing__``), so the lookup
    a collector does for every sample is the dict's own, not a Python method call;
    families come out in the order they were first asked for.
    """

    __slots__ = ("_specs",)

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        super().__init__()
        self._specs = {s.name: s for s in specs}

    def __missing__(self, name: str) -> MetricFamily:
        fam = self[name] = self._specs[name].family()
        return fam

    def all(self) -> list[MetricFamily]:
        return [f for f in self.values() if len(f)]
