"""Run ``dtagent`` with a probe of its live heap: is a soak's growth held memory or free space?

RSS alone cannot tell a leak from fragmentation: memory freed in the middle of a glibc
heap stays resident (glibc reuses it but does not return it), so a process whose live
data is flat can still grow. This wrapper runs the agent's own CLI unchanged, plus one
daemon thread: when the soak creates ``<path>.go``, it appends one JSON line to
``<path>`` (``$DTAGENT_HEAP_PROBE``) with

* ``in_use_mib``: what glibc has handed out and not been given back, over all arenas
  (``mallinfo2().uordblks``);
* ``free_mib``: the free space glibc keeps inside its heaps (``fordblks``);
* ``mapped_mib``: blocks glibc mapped on their own (``hblkhd``, large allocations);
* ``python_blocks``: the blocks Python's own allocator has live
  (``sys.getallocatedblocks()``).

``struct mallinfo2`` is ten ``size_t`` fields in this order (glibc malloc/malloc.h,
since glibc 2.33; ``mallinfo2()`` sums every arena, malloc/malloc.c
``__libc_mallinfo2``). Linux with glibc only: a benchmark aid, never part of the agent
(illumos libc has no mallinfo2).

    python -m benchmarks.heap_probe serve --config live.toml
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "DTAGENT_HEAP_PROBE"
_POLL = 0.2


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


@dataclass(frozen=True)
class HeapFigures:
    in_use_mib: float
    free_mib: float
    mapped_mib: float
    python_blocks: int


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.mallinfo2.argtypes = []
    return libc


def heap_figures(libc: ctypes.CDLL | None = None) -> HeapFigures:
    """This process's heap, now."""
    info = (libc or _libc()).mallinfo2()
    mib = 1024.0 * 1024.0
    return HeapFigures(
        in_use_mib=round(info.uordblks / mib, 2),
        free_mib=round(info.fordblks / mib, 2),
        mapped_mib=round(info.hblkhd / mib, 2),
        python_blocks=sys.getallocatedblocks(),
    )


def answer_requests(path: Path) -> threading.Thread:
    """Start the thread that writes a line to ``path`` each time ``<path>.go`` appears."""
    libc = _libc()
    trigger = Path(f"{path}.go")

    def loop() -> None:
        while True:
            time.sleep(_POLL)
            if trigger.exists():
                trigger.unlink()
                with path.open("a") as out:
                    out.write(json.dumps(asdict(heap_figures(libc))) + "\n")

    thread = threading.Thread(target=loop, name="heap-probe", daemon=True)
    thread.start()
    return thread


def ask(path: Path, timeout: float = 5.0) -> HeapFigures | None:
    """Ask the probed process for its figures (the soak's side); None if it does not
    answer within ``timeout``."""
    before = len(path.read_text().splitlines()) if path.exists() else 0
    Path(f"{path}.go").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(_POLL / 2)
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > before:
            return HeapFigures(**json.loads(lines[-1]))
    return None


def main(argv: list[str]) -> int:
    where = os.environ.get(ENV)
    if where:
        answer_requests(Path(where))
    from dtagent.cli import main as dtagent_main

    return dtagent_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
