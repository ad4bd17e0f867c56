"""The benchmark's plot: CPU per scrape and RSS against zones (matplotlib, bench extra only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _median(d: dict[str, Any], key: str) -> float:
    v = d.get(key) or {}
    return float(v.get("median", float("nan")))


def plot(results: dict[str, Any], out: Path) -> None:
    live = results["live"]
    replay = results.get("replay") or []
    fig, (cpu_ax, mem_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    if live:
        zones = [r["zones"] for r in live]
        cpu_ax.plot(zones, [_median(r["scrapes"], "interval_cpu_ms") for r in live], "o-",
                    label="dtagent serve, live (CPU per scrape interval)")
        cpu_ax.plot(zones, [_median(r["node_exporter"]["scrapes"], "request_cpu_ms")
                            for r in live], "s-", label="node_exporter textfile")
        cpu_ax.plot(zones, [_median(r["generate_latest"], "cpu_ms") for r in live], "^-",
                    label="prometheus-client generate_latest")
        mem_ax.plot(zones, [r["own_rss_mib"] for r in live], "o-",
                    label="dtagent serve, live: own RSS (less the stand-in kernel)")
        mem_ax.plot(zones, [r["rss_mib"] for r in live], "o:",
                    label="dtagent live: process RSS")
        mem_ax.plot(zones, [r["hwm_mib"] for r in live], "o--", label="dtagent live: high-water")
        mem_ax.plot(zones, [r["node_exporter"]["rss_mib"] for r in live], "s-",
                    label="node_exporter textfile: RSS")
    if replay:
        rz = [r["zones"] for r in replay]
        cpu_ax.plot(rz, [_median(r["scrapes"], "interval_cpu_ms") for r in replay], "x:",
                    label="dtagent serve --replay")
        mem_ax.plot(rz, [r["rss_mib"] for r in replay], "x:", label="dtagent --replay: RSS")
    cpu_ax.set(xlabel="zones", ylabel="CPU ms per scrape", title="CPU per scrape")
    mem_ax.set(xlabel="zones", ylabel="MiB", title="Memory")
    mem_ax.axhline(100, color="grey", lw=0.8, ls="--")
    for ax in (cpu_ax, mem_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
    m = results["machine"]
    fig.suptitle(f"{m['cores']}-core {m['cpu']}, shared machine: compare within the run",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
