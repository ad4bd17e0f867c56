"""The agent's metric model: declared specs and the families collectors fill.

Every metric the agent can export is declared once as a :class:`MetricSpec` (name,
type, help, unit, labels, source). Collectors create :class:`MetricFamily` objects
from their specs, so docs/metrics.md is generated from the same declarations the code
uses and cannot drift from it.

The model is deliberately smaller than prometheus-client's: a family is a list of
(label values, value) tuples, which the renderer in :mod:`dtagent.exposition` turns
into text without per-sample objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram", "untyped"]

# The Prometheus data model's metric and label names (prometheus.io/docs/concepts/
# data_model); label names starting with __ are reserved. Used for every metric the
# agent declares, D script specs included.
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def suffix_problem(metric_type: str, name: str) -> str | None:
    """What is wrong with a name's ``_total`` suffix for its type (the naming guide:
    counters end in ``_total``, nothing else does), or None."""
    if metric_type == "counter" and not name.endswith("_total"):
        return "a counter name ending in _total"
    if metric_type != "counter" and name.endswith("_total"):
        return f"a {metric_type} name not ending in _total"
    return None


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """Declaration of one exported metric family.

    ``name`` is the full exposition name (counters end in ``_total``, info metrics in
    ``_info``). ``unit`` and ``source`` are for the metrics reference: the unit in
    words, and the kstat or command the values come from.
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    source: str = ""
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not METRIC_NAME_RE.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        for label in self.labels:
            if not LABEL_NAME_RE.match(label) or label.startswith("__"):
                raise ValueError(f"{self.name}: invalid label name {label!r}")
        # Counters must end in _total. The other half of the rule (nothing else does)
        # is for the names the agent declares (D script specs are checked with it at
        # load, collectors by a test); operators' textfile and plugin gauges keep
        # whatever name they have, as node_exporter's textfile collector does.
        problem = suffix_problem(self.type, self.name) if self.type == "counter" else None
        if problem:
            raise ValueError(f"{self.name}: expected {problem}")
        if self.type == "histogram":
            if "le" in self.labels:
                raise ValueError(f"{self.name}: 'le' is reserved for histograms")
            if list(self.buckets) != sorted(set(self.buckets)) or not self.buckets:
                raise ValueError(f"{self.name}: buckets must be sorted and unique")

    def family(self) -> MetricFamily:
        """A new, empty family for this spec."""
        return MetricFamily(self)


@dataclass(slots=True)
class MetricFamily:
    """Samples of one spec collected in one scrape.

    For counters, gauges and untyped: ``samples`` holds (label values, value).
    For histograms: ``hist_samples`` holds (label values, cumulative bucket counts
    aligned with ``spec.buckets`` and without +Inf, sum, count); the +Inf bucket is
    the count.
    """

    spec: MetricSpec
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    hist_samples: list[tuple[tuple[str, ...], Sequence[float], float, float]] = field(
        default_factory=list
    )
    # Start time (Unix seconds) of a counter or histogram series, by label values: the
    # creation time of the kstat it comes from. Only the OpenMetrics exposition shows it
    # (as ``_created``); series without one are simply not in the dict.
    created: dict[tuple[str, ...], float] = field(default_factory=dict)
    # from the spec, once: add() runs for every sample of a scrape
    _width: int = field(init=False, repr=False, compare=False)
    _counter: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._width = len(self.spec.labels)
        self._counter = self.spec.type == "counter"

    @property
    def name(self) -> str:
        return self.spec.name

    def add(
        self, labelvalues: tuple[str, ...], value: float, created: float | None = None
    ) -> None:
        """Add one sample; the label values follow ``spec.labels`` in order.

        ``created`` is when the series started counting (Unix time), for counters.
        Called for every sample of a scrape, so it does no more than it must: the
        tuple (every caller builds one; mypy checks that) is kept as it is, and only
        its length is checked, against the spec's, which catches a collector's bug.
        """
        if len(labelvalues) != self._width:
            raise ValueError(
                f"{self.spec.name}: expected labels {self.spec.labels}, got {labelvalues}"
            )
        self.samples.append((labelvalues, value))
        if created is not None and self._counter:
            self.created[labelvalues] = created

    def add_histogram(
        self,
        labelvalues: Sequence[str],
        cumulative: Sequence[float],
        sum_value: float,
        count: float,
    ) -> None:
        """Add one histogram: cumulative counts for each finite bound, sum, count."""
        if len(labelvalues) != self._width:
            raise ValueError(
                f"{self.spec.name}: expected labels {self.spec.labels}, got {tuple(labelvalues)}"
            )
        if len(cumulative) != len(self.spec.buckets):
            raise ValueError(
                f"{self.spec.name}: {len(cumulative)} bucket counts for "
                f"{len(self.spec.buckets)} bounds"
            )
        self.hist_samples.append((tuple(labelvalues), cumulative, sum_value, count))

    def __len__(self) -> int:
        return len(self.samples) + len(self.hist_samples)
