"""The service's settings in SMF: the ``config`` property group of its manifest.

``dtagent serve --smf`` (what the manifest's start method runs) reads them with
``svcprop -p config $SMF_FMRI`` at start and at every refresh. svc.startd puts the
instance's FMRI in ``SMF_FMRI`` for every method it runs (smf_method(7)); svcprop reads
the running snapshot, which ``svcadm refresh`` updates before the refresh method runs
(svcprop(1)). The same names are in smf/dtagent.xml.in and install.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

PROPERTY_GROUP = "config"
# property → what it sets; "" (svcprop prints "") means: keep the config file's value
PROPERTIES = {"file": "the config file", "listen": "agent.listen", "log_level": "agent.log_level"}
SVCPROP_TIMEOUT = 10.0


class SmfError(Exception):
    """The service's properties cannot be read; the message says why."""


@dataclass(frozen=True)
class SmfSettings:
    file: str
    listen: str
    log_level: str


def fmri() -> str:
    """This process's service instance, from the environment svc.startd sets."""
    value = os.environ.get("SMF_FMRI", "")
    if not value:
        raise SmfError("--smf: SMF_FMRI is not set (not started by SMF); use --config FILE")
    return value


def unquote(text: str) -> str:
    """An astring value as svcprop(1) prints it: "" for the empty string, shell
    metacharacters (space, tab, quotes, backslash, ...) escaped with a backslash."""
    if text == '""':
        return ""
    out, escaped = [], False
    for ch in text:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def parse(output: str) -> dict[str, str]:
    """``svcprop -p config FMRI`` output: one ``config/name type value`` line each."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        designator, _, rest = line.partition(" ")
        _type, _, value = rest.partition(" ")
        group, _, name = designator.partition("/")
        if group != PROPERTY_GROUP or not name or not _type:
            raise SmfError(f"svcprop: unexpected line {line!r}")
        values[name] = unquote(value)
    return values


def read_settings(instance: str, svcprop: str | None = None) -> SmfSettings:
    """The ``config`` properties of ``instance``; a missing ``config/file`` is an error."""
    exe = svcprop or shutil.which("svcprop") or "/usr/bin/svcprop"
    try:
        res = subprocess.run([exe, "-p", PROPERTY_GROUP, instance], capture_output=True,
                             text=True, timeout=SVCPROP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SmfError(f"svcprop -p {PROPERTY_GROUP} {instance}: {exc}") from None
    if res.returncode != 0:
        message = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise SmfError(f"svcprop -p {PROPERTY_GROUP} {instance}: {message}")
    values = parse(res.stdout)
    if not values.get("file"):
        raise SmfError(f"{instance}: property {PROPERTY_GROUP}/file is not set (the config "
                       "file); reinstall the manifest with install.sh")
    return SmfSettings(values["file"], values.get("listen", ""), values.get("log_level", ""))
