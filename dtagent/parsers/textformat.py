"""Operators' metrics in the Prometheus text format (textfiles, plugin output), checked.

prometheus-client's parser reads the text; this module turns it into the agent's
families and refuses what would corrupt the agent's exposition: names that start with
``illumos_`` or ``dtagent_`` (the agent's own), a series given twice, an invalid name.
Counters, gauges and untyped metrics keep their type; the samples of histograms and
summaries become untyped series of the same names. Label names may differ between the
series of a family: the missing ones are written empty, which Prometheus reads as absent.
"""

from __future__ import annotations

from dtagent.metrics import MetricFamily, MetricSpec, MetricType

OWN_PREFIXES = ("illumos_", "dtagent_")
_TYPES: dict[str, MetricType] = {"counter": "counter", "gauge": "gauge", "untyped": "untyped",
                                 "unknown": "untyped"}


class TextFormatError(ValueError):
    """The text is refused; the message says why in one line."""


def parse_exposition(text: str, origin: str) -> list[MetricFamily]:
    """Families of ``text``; raises TextFormatError naming the problem."""
    # Imported when a text is first parsed: prometheus_client's package brings its
    # HTTP servers and clients (http.server, wsgiref, urllib.request, email), about
    # 1.5 MiB of a serving agent's RSS, and most hosts have no textfile or plugin.
    from prometheus_client.parser import text_string_to_metric_families

    try:
        parsed = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, TypeError) as exc:
        raise TextFormatError(f"not the text format: {exc}") from None
    out: list[MetricFamily] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    names: set[str] = set()
    for fam in parsed:
        if fam.name.startswith(OWN_PREFIXES):
            raise TextFormatError(
                f"{fam.name}: names starting with illumos_ or dtagent_ belong to the agent")
        mtype = _TYPES.get(fam.type)
        by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                raise TextFormatError(f"{s.name}: the same series twice")
            seen.add(key)
            by_name.setdefault(s.name, []).append((s.labels, s.value))
        for sample_name, samples in by_name.items():
            if sample_name in names:
                raise TextFormatError(f"{sample_name}: defined twice")
            names.add(sample_name)
            ftype: MetricType = "untyped"
            if mtype and sample_name in (fam.name, fam.name + "_total"):
                ftype = mtype
            if ftype == "counter" and not sample_name.endswith("_total"):
                ftype = "untyped"
            labels = tuple(sorted({k for lab, _ in samples for k in lab}))
            try:
                spec = MetricSpec(sample_name, ftype, fam.documentation or sample_name,
                                  labels, "", origin)
            except ValueError as exc:
                raise TextFormatError(str(exc)) from None
            mf = spec.family()
            for lab, value in samples:
                mf.add(tuple(lab.get(k, "") for k in labels), value)
            out.append(mf)
    return out
