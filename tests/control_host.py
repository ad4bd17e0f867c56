"""A stand-in host for the control wing's tests: a state file the stateful stand-ins
(tests/fakebin/_fakehost.py) read and change, and the config and policy to drive it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.standin_host import STAND_IN_SETTINGS

FAKEBIN = Path(__file__).resolve().parent / "fakebin"
MIB = 1024 * 1024
GIB = 1024 * MIB

WEB = "b1c9a0f2-7e1d-4c55-9f3e-0a4a7a3c2e11"
DB = "c2d8b1e3-8f2e-4d66-a04f-1b5b8b4d3f22"
IDLE = "d3e7c2f4-9a3f-4e77-b150-2c6c9c5e4a33"  # running, but no process (prctl fails)
OTHER = "e4f6d3a5-ab40-4f88-c261-3d7dad6f5b44"  # not in the policy's zones


def zone(
    uuid: str,
    alias: str,
    zoneid: int,
    *,
    cpu_cap: int = 200,
    shares: int = 100,
    phys: int = 1024,
    swap: int = 2048,
    locked: int = 1024,
    lwps: int = 2000,
    io: int = 100,
    state: str = "running",
    processes: bool = True,
    tags: dict[str, str] | None = None,
    maxbw: int = 0,
) -> dict[str, Any]:
    config = {
        "cpu_cap": cpu_cap,
        "cpu_shares": shares,
        "max_physical_memory": phys,
        "max_swap": swap,
        "max_locked_memory": locked,
        "max_lwps": lwps,
        "zfs_io_priority": io,
    }
    rctls = {
        "zone.cpu-shares": shares,
        "zone.max-physical-memory": phys * MIB,
        "zone.max-swap": swap * MIB,
        "zone.max-locked-memory": locked * MIB,
        "zone.max-lwps": lwps,
        "zone.zfs-io-priority": io,
    }
    if cpu_cap:
        rctls["zone.cpu-cap"] = cpu_cap
    return {
        "uuid": uuid,
        "alias": alias,
        "brand": "joyent",
        "state": state,
        "zoneid": zoneid,
        "processes": processes,
        "tags": tags or {},
        "customer_metadata": {},
        "config": config,
        "rctls": rctls if state == "running" else {},
        "usage": {"zone.max-lwps": 120, "zone.max-physical-memory": 300 * MIB},
        "dataset": f"zones/{uuid}",
        "links": {"net0": {"maxbw": maxbw}},
    }


def default_state() -> dict[str, Any]:
    zones = {
        WEB: zone(WEB, "web-1", 5, tags={"role": "web"}),
        DB: zone(DB, "db-1", 6, cpu_cap=0, tags={"role": "db"}),
        IDLE: zone(IDLE, "idle-1", 7, processes=False, tags={"role": "web"}),
        OTHER: zone(OTHER, "other-1", 8),
    }
    datasets = {
        f"zones/{u}": {
            "quota": 10 * GIB,
            "used": 2 * GIB,
            "available": 8 * GIB,
            "referenced": 2 * GIB,
        }
        for u in zones
    }
    return {"zones": zones, "datasets": datasets}


POLICY = """
[zones]
aliases = ["web-*", "db-*", "idle-*"]

[limits]
changes_per_hour = 50
concurrent = 2
automatic_dry_run = false

[properties.cpu_cap]
min = 50
max = 800
max_step_ratio = 2.0
cooldown_seconds = 0

[properties.cpu_shares]
min = 1
max = 1000

[properties.max_physical_memory]
min = 256
max = 8192
max_step_ratio = 2.0

[properties.max_swap]
min = 256
max = 16384

[properties.max_locked_memory]
min = 0
max = 8192

[properties.max_lwps]
min = 100
max = 10000

[properties.zfs_io_priority]
min = 1
max = 1000

[properties.quota]
min = 1
max = 100

[properties.maxbw]
min = 10
max = 10000
allow_none = true
"""


class Host:
    """The state file plus the environment that makes the stand-ins use it."""

    def __init__(self, tmp: Path, state: dict[str, Any] | None = None) -> None:
        self.dir = tmp
        self.state_path = tmp / "host.json"
        self.log_path = tmp / "commands.log"
        self.save(state or default_state())

    def save(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state, indent=1))

    def load(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_path.read_text())
        return data

    def env(self) -> dict[str, str]:
        return {"DTAGENT_FAKE_HOST": str(self.state_path), "DTAGENT_FAKE_LOG": str(self.log_path)}

    def commands(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def write_policy(self, text: str = POLICY, name: str = "policy.toml") -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def write_config(self, policy: Path, audit: Path | None = None, extra: str = "") -> Path:
        audit = audit or self.dir / "audit.log"
        path = self.dir / "dtagent.toml"
        path.write_text(
            f"[sources]\ncommand_path = {json.dumps(str(FAKEBIN) + ':/usr/bin:/bin')}\n"
            # the commands get a fixed environment: the stand-ins' settings are passed on
            f"command_env = {json.dumps(STAND_IN_SETTINGS)}\n\n"
            f'[control]\npolicy = "{policy}"\naudit_log = "{audit}"\n'
            + (extra if "command_timeout" in extra else f"command_timeout = 5\n{extra}")
        )
        return path


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fakehost_module() -> Any:
    """tests/fakebin/_fakehost.py, the stand-ins' own code (not a package: loaded by path)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_fakehost", FAKEBIN / "_fakehost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_fakehost", module)
    spec.loader.exec_module(module)
    return module


class KernelFeed:
    """The kernel of the stand-in host: a simulated host's kstats, one frame per
    ``step`` seconds, fed to the libkstat stand-in (``KSTAT_STUB_FEED``), with each
    zone's CPU cap as the stand-in host's live ``zone.cpu-cap`` says.

    The frame is written under the state file's lock, the lock the stand-in commands
    hold while they change the state (and rewrite the feed), so a cap that vmadm or
    prctl changed is in the agent's next kstat read, and the simulated zone then runs
    under its new cap.
    """

    def __init__(self, host: Host, sim: Any, step: float = 1.0) -> None:
        import threading

        self.host = host
        self.sim = sim
        self.step = step
        self.path = host.dir / "kstat.feed"
        self.sim_path = host.dir / "kstat.sim"
        self._fakehost = _fakehost_module()
        state = host.load()
        state["kstat_feed"] = {"sim": str(self.sim_path), "out": str(self.path)}
        host.save(state)
        from dtagent.simulate import frames

        self._frames = frames(sim, 10**9)
        self._epoch = sim.time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernel-feed", daemon=True)
        self.frames = 0

    def env(self) -> dict[str, str]:
        return {"KSTAT_STUB_FEED": str(self.path)}

    def write_frame(self) -> None:
        from benchmarks.live_host import feed_text, hrtime

        locked = self._fakehost.Host(str(self.host.state_path))
        try:
            by_name = {z.uuid: z for z in self.sim.zones}
            for name, z in locked.state["zones"].items():
                if name in by_name and z.get("state") == "running":
                    by_name[name].cpu_cap = z.get("rctls", {}).get("zone.cpu-cap")
            frame = next(self._frames)
            text = feed_text(frame.kstats, hrtime(frame, self._epoch))
            tmp = self.sim_path.with_name(self.sim_path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.sim_path)
            self._fakehost.write_feed(locked.state)
            self.frames += 1
        finally:
            locked.close()

    def _run(self) -> None:
        while not self._stop.wait(self.step):
            self.write_frame()

    def start(self) -> None:
        self.write_frame()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
