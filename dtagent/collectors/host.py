"""Host-wide CPU time, memory, swap, load and boot time (psutil figures).

Works on Linux too, so ``dtagent serve`` is useful (and testable) off illumos.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.snapshot import HostSnapshot

SRC = "psutil (host-wide)"

CPU = MetricSpec(
    "illumos_host_cpu_seconds_total",
    "counter",
    "CPU time of all CPUs of the host, by mode.",
    ("mode",),
    "seconds",
    SRC,
)
MEM_TOTAL = MetricSpec(
    "illumos_host_memory_total_bytes", "gauge", "Physical memory of the host.", (), "bytes", SRC
)
MEM_AVAIL = MetricSpec(
    "illumos_host_memory_available_bytes",
    "gauge",
    "Memory available to new work without swapping.",
    (),
    "bytes",
    SRC,
)
SWAP_TOTAL = MetricSpec(
    "illumos_host_swap_total_bytes", "gauge", "Swap space of the host.", (), "bytes", SRC
)
SWAP_USED = MetricSpec(
    "illumos_host_swap_used_bytes", "gauge", "Swap space in use.", (), "bytes", SRC
)
LOAD = MetricSpec(
    "illumos_host_load_average",
    "gauge",
    "Run-queue load average of the host over the window.",
    ("window",),
    "",
    SRC,
)
BOOT = MetricSpec(
    "illumos_host_boot_time_seconds",
    "gauge",
    "When the host booted, Unix time.",
    (),
    "seconds",
    SRC,
)
CPUS = MetricSpec("illumos_host_cpus", "gauge", "Logical CPUs of the host.", (), "", SRC)


class HostCollector(Collector):
    name = "host"
    description = "Host CPU time, memory, swap, load and boot time"
    specs = (CPU, MEM_TOTAL, MEM_AVAIL, SWAP_TOTAL, SWAP_USED, LOAD, BOOT, CPUS)
    illumos_only = False

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        h = snap.host
        if h is None:
            return []
        fams = Families(self.specs)
        for mode, secs in sorted(h.cpu_seconds.items()):
            fams[CPU.name].add((mode,), secs)
        fams[MEM_TOTAL.name].add((), h.memory_total)
        fams[MEM_AVAIL.name].add((), h.memory_available)
        fams[SWAP_TOTAL.name].add((), h.swap_total)
        fams[SWAP_USED.name].add((), h.swap_used)
        for window, value in zip(("1m", "5m", "15m"), h.load, strict=True):
            fams[LOAD.name].add((window,), value)
        fams[BOOT.name].add((), h.boot_time)
        fams[CPUS.name].add((), h.ncpus)
        return fams.all()
