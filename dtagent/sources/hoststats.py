"""Host-wide CPU, memory, swap and load through psutil, as plain data."""

from __future__ import annotations

import os

import psutil

from dtagent.snapshot import HostStats


def read_host_stats() -> HostStats:
    cpu = psutil.cpu_times()
    fields = {k: float(v) for k, v in cpu._asdict().items()}
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return HostStats(
        cpu_seconds=fields,
        memory_total=int(vm.total),
        memory_available=int(vm.available),
        swap_total=int(sw.total),
        swap_used=int(sw.used),
        load=os.getloadavg(),
        boot_time=float(psutil.boot_time()),
        ncpus=psutil.cpu_count() or 1,
    )
