"""Shared helpers of the zone collector tests (no tests here).

Scrapes go through the real code paths: a bundle replayed by the agent built from a
config (``sources.replay``), or collectors run on a snapshot whose commands are run by
the real CommandRunner against the stand-in executables in tests/fakebin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dtagent.collectors.base import Collector
from dtagent.config import load
from dtagent.exposition import render
from dtagent.metrics import MetricFamily
from dtagent.runtime import build
from dtagent.snapshot import CommandSource, Kstat
from tests.helpers import snapshot_of

FAKEBIN = Path(__file__).resolve().parent / "fakebin"
ZONE_COLLECTORS = ("zone_info", "zone_cpu", "zone_memory", "zone_processes", "zone_vfs",
                   "zone_dataset")  # fmt: skip

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_text(text: str) -> Series:
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def families_series(families: Iterable[MetricFamily]) -> Series:
    """Render families with the agent's renderer and parse them back."""
    return parse_text(render(list(families)).decode())


def replay_scrape(bundle: Path, frame: int, collectors: Sequence[str] = ZONE_COLLECTORS) -> Series:
    """Scrape frame ``frame`` of a bundle through the agent, as ``dtagent scrape`` does."""
    config = load(None)
    config.set("sources", "replay", str(bundle))
    config.set("dtrace", "enabled", False)
    config.set("collectors", "enabled", list(collectors))
    runtime = build(config, replay_frame=frame)
    try:
        return parse_text(render(runtime.agent.collect()).decode())
    finally:
        runtime.close()


def collect(
    collectors: Iterable[Collector],
    kstats: Iterable[Kstat],
    commands: CommandSource,
    time: float = 1_790_000_000.0,
) -> Series:
    collectors = list(collectors)
    snap = snapshot_of(collectors, kstats, commands, time)
    families: list[MetricFamily] = []
    for c in collectors:
        families.extend(c.collect(snap))
    return families_series(families)


def by_metric(series: Series, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (name, labels), v in series.items() if name == metric}


def zones_of(series: Series, metric: str) -> set[str]:
    return {dict(labels)["zonename"] for labels in by_metric(series, metric)}


def value(series: Series, metric: str, **labels: str) -> float:
    key = (metric, tuple(sorted(labels.items())))
    assert key in series, f"no {metric}{labels}"
    return series[key]


def fake_env(
    monkeypatch: object, tmp_path: Path, vms: list[dict[str, object]] | None = None,
    datasets: list[dict[str, object]] | None = None, **modes: str,
) -> Path:
    """Point the stand-in commands at a zone and dataset model; returns the fork log."""
    mp = monkeypatch
    if vms is not None:
        (tmp_path / "vms.json").write_text(json.dumps(vms))
        mp.setenv("DTAGENT_FAKE_VMS", str(tmp_path / "vms.json"))  # type: ignore[attr-defined]
    if datasets is not None:
        (tmp_path / "datasets.json").write_text(json.dumps(datasets))
        mp.setenv("DTAGENT_FAKE_DATASETS", str(tmp_path / "datasets.json"))  # type: ignore[attr-defined]
    for cmd, mode in modes.items():
        mp.setenv(f"DTAGENT_FAKE_{cmd.upper()}_MODE", mode)  # type: ignore[attr-defined]
    log = tmp_path / "forks.log"
    mp.setenv("DTAGENT_FAKE_LOG", str(log))  # type: ignore[attr-defined]
    return log


def forks(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def fakebin_path() -> str:
    return str(FAKEBIN) + os.pathsep + "/usr/bin:/bin"
