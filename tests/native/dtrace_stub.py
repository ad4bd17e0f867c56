"""Python side of the libdtrace stand-in: building it, its layout table, scenarios."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.native import build_shared


def library() -> Path:
    return build_shared("libdtrace_stub.c")


def layouts() -> dict[tuple[str, str], tuple[int, int]]:
    """(C type, field) → (offset, size); field "" is the whole struct."""
    lib = ctypes.CDLL(str(library()))
    lib.stub_layout_count.restype = ctypes.c_size_t
    for name in ("stub_layout_type", "stub_layout_field"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_size_t]
    for name in ("stub_layout_offset", "stub_layout_size"):
        getattr(lib, name).restype = ctypes.c_size_t
        getattr(lib, name).argtypes = [ctypes.c_size_t]
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for i in range(lib.stub_layout_count()):
        key = (lib.stub_layout_type(i).decode(), lib.stub_layout_field(i).decode())
        out[key] = (lib.stub_layout_offset(i), lib.stub_layout_size(i))
    return out


@dataclass
class Scenario:
    """A scenario file, its call log and run counter (see libdtrace_stub.c)."""

    dir: Path

    @property
    def path(self) -> Path:
        return self.dir / "scenario.txt"

    @property
    def log_path(self) -> Path:
        return self.dir / "calls.log"

    def write(self, text: str) -> Scenario:
        self.path.write_text(text)
        return self

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            DTRACE_STUB_SCENARIO=str(self.path),
            DTRACE_STUB_LOG=str(self.log_path),
            DTRACE_STUB_RUNS=str(self.dir / "runs"),
        )

    def apply(self, monkeypatch: Any) -> None:
        """Point this process's stand-in at the scenario (for in-process tests)."""
        monkeypatch.setenv("DTRACE_STUB_SCENARIO", str(self.path))
        monkeypatch.setenv("DTRACE_STUB_LOG", str(self.log_path))
        monkeypatch.setenv("DTRACE_STUB_RUNS", str(self.dir / "runs"))

    def calls(self) -> list[str]:
        """Every call, in order (without its process and handle)."""
        return [call for _, call in self.handle_calls()]

    def handle_calls(self) -> list[tuple[str, str]]:
        """(handle, call) for every call; a handle is "PID/hN", N its dtrace_open."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            pid, handle, call = line.split(" ", 2)
            out.append((f"{pid}/{handle}", call))
        return out
