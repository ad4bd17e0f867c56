"""A host where `dtagent check` passes: the stand-in libraries and commands, the
privileges the SMF manifest grants, and a config that points at them all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import FAKEBIN
from tests.helpers import free_port
from tests.native import build_shared
from tests.native.dtrace_stub import Scenario
from tests.native.dtrace_stub import library as libdtrace

MANIFEST_PRIVILEGES = "basic,dtrace_kernel,dtrace_proc,dtrace_user"
# What the stand-in commands read from their environment (tests/fakebin).
STAND_IN_SETTINGS = [
    "DTAGENT_FAKE_DIR", "DTAGENT_FAKE_VMS", "DTAGENT_FAKE_DATASETS", "DTAGENT_FAKE_LOG",
    "DTAGENT_FAKE_HANG_SECONDS", "DTAGENT_FAKE_HOST",
    *(f"DTAGENT_FAKE_{c}_MODE" for c in
      ("VMADM", "ZONEADM", "ZFS", "DLADM", "FLOWADM", "PRCTL", "ZONECFG")),
]  # fmt: skip


def ready_config(tmp_path: Path, *, listen: str | None = None, extra: str = "") -> str:
    """The text of a config that uses the stand-ins."""
    listen = listen or f"127.0.0.1:{free_port()}"
    return (
        f'[agent]\nlisten = "{listen}"\n'
        "[sources]\n"
        'platform = "illumos"\n'
        f"libkstat = {json.dumps(str(build_shared('libkstat_stub.c')))}\n"
        f"command_path = {json.dumps(str(FAKEBIN) + ':/usr/bin:/bin')}\n"
        # the commands get a fixed environment: the stand-ins' settings are passed on
        f"command_env = {json.dumps(STAND_IN_SETTINGS)}\n"
        "[dtrace]\n"
        f"libdtrace = {json.dumps(str(libdtrace()))}\n" + extra
    )


def ready_env(tmp_path: Path, privileges: str = MANIFEST_PRIVILEGES) -> dict[str, str]:
    """The environment: libdtrace scenario, fake command data, the privilege stand-in."""
    fake = tmp_path / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "vms.json").write_text("[]")
    # the pool's root dataset, which `zfs list -r zones` needs to exist
    (fake / "datasets.json").write_text(json.dumps([
        {"name": "zones", "used": 1 << 30, "available": 1 << 40, "referenced": 1 << 20,
         "quota": 0}]))
    sc = Scenario(tmp_path)
    if not sc.path.exists():
        sc.write("")
    env = dict(
        sc.env(),
        DTAGENT_FAKE_DIR=str(fake),
        DTAGENT_FAKE_VMS=str(fake / "vms.json"),
        DTAGENT_FAKE_DATASETS=str(fake / "datasets.json"),
        DTAGENT_STUB_PRIVILEGES=privileges,
        LD_PRELOAD=str(build_shared("libpriv_stub.c")),
    )
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    return env
