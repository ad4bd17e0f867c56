"""How much of the agent's RSS is the libkstat stand-in's simulated kernel.

    python -m benchmarks.standin_memory LIBKSTAT   # with KSTAT_STUB_FEED set

On illumos the kstats live in the kernel; a process running libkstat holds only what
the library allocates: a ``kstat_t`` header per kstat on its chain and a copy of each
kstat's data it read (usr/src/lib/libkstat/common/kstat.c: kstat_chain_update
allocates the headers, kstat_read the ks_data buffers). The stand-in (tests/native/
libkstat_stub.c) also keeps, in the agent's process, the "kernel" side it serves from:
every kstat and statistic of its feed file. This opens the stand-in on the same feed
in a fresh process, reads every kstat through libkstat's calls alone (no Python
object per kstat is kept), and prints as JSON the RSS it took, the part a real
libkstat would hold too (headers and ks_data), and the rest: the simulated kernel,
which the benchmark reports apart from the agent's own RSS.
"""

from __future__ import annotations

import ctypes
import json
import sys

from dtagent.sources.libkstat import Libkstat, kstat_t

KSTAT_HEADER_SIZE = ctypes.sizeof(kstat_t)  # 184 on LP64 (sys/kstat.h; the stand-in asserts it)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(library: str) -> dict[str, float]:
    lib = Libkstat(library)
    before = _rss_mib()
    kc = lib.open()
    lib.chain_update(kc)
    kstats = data = 0
    addr = ctypes.cast(kc.contents.kc_chain, ctypes.c_void_p).value or 0
    while addr:
        header = kstat_t.from_address(addr)
        lib.read(kc, header, 0.0)
        kstats += 1
        data += header.ks_data_size
        addr = ctypes.cast(header.ks_next, ctypes.c_void_p).value or 0
    taken = _rss_mib() - before
    library_side = (kstats * KSTAT_HEADER_SIZE + data) / 2**20
    return {"kstats": kstats, "rss_taken_mib": round(taken, 1),
            "library_side_mib": round(library_side, 1),
            "simulated_kernel_mib": round(max(0.0, taken - library_side), 1)}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
