"""Builds the C stand-ins for illumos libraries that the tests drive through ctypes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent.parent / "build" / "native"


def build_shared(source: str, *, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile tests/native/<source> into a shared library and return its path.

    The output name carries a hash of the source, so an edited stand-in is rebuilt and
    parallel test runs never overwrite a library another one has loaded.
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("gcc is needed to build the libkstat/libdtrace stand-ins")
    src = HERE / source
    digest = hashlib.sha256(src.read_bytes() + " ".join(extra_flags).encode()).hexdigest()[:12]
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / f"{src.stem}-{digest}.so"
    if not out.exists():
        tmp = out.with_suffix(".tmp.so")
        subprocess.run(
            [cc, "-shared", "-fPIC", "-O1", "-g", "-Wall", "-Werror", "-std=c11",
             *extra_flags, "-o", str(tmp), str(src)],
            check=True,
        )
        tmp.replace(out)
    return out
