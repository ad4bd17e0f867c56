"""Anonymizing a bundle (``dtagent capture --anonymize``) so it can go with a bug report.

Zone names, zone aliases, host names and dataset names are replaced everywhere they
occur (kstat names and values, command argv and output, DTrace records and checkpoints,
the header) by stable keyed hashes: the same name gets the same replacement throughout
the bundle, so
it replays to the same metrics with other names (a zone's kstats, its vmadm line, its
datasets and its `dladm -z` queries still belong together). The key is random and never
written, so the names cannot be recovered by hashing candidate names. A SmartOS zone
name (a UUID) stays UUID-shaped, kstat names stay cut to 30 characters as the kernel
cuts them, and the global zone, the pool's root dataset and numbers stay as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from dtagent.bundle import BundleWriter, Frame, iter_frames, read_header
from dtagent.snapshot import CommandResult
from dtagent.zonemap import GLOBAL_ZONENAME

KSTAT_NAME_MAX = 30  # the kernel cuts kstat names (KSTAT_STRLEN - 1)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# names that are structure, not identity: never replaced
KEEP = frozenset({GLOBAL_ZONENAME, "", "-", "zones"})
_EDGE = r"A-Za-z0-9_.-"


class Anonymizer:
    """Learns the names in a bundle's frames, then rewrites the frames."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self.mapping: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    # -------------------------------------------------------------- naming

    def _digest(self, kind: str, name: str) -> str:
        return hmac.new(self._key, f"{kind}\0{name}".encode(), hashlib.sha256).hexdigest()

    def _add(self, kind: str, name: str) -> None:
        if name in KEEP or name in self.mapping or name.isdigit():
            return
        h = self._digest(kind, name)
        if kind == "zone" and _UUID.match(name):
            new = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
        else:
            new = f"{kind}-{h[:12]}"
        self.mapping[name] = new
        self._pattern = None
        if kind == "zone" and len(name) > KSTAT_NAME_MAX:
            # the kstat name of a zone is its name cut to 30 characters
            self.mapping.setdefault(name[:KSTAT_NAME_MAX], new[:KSTAT_NAME_MAX])

    def learn(self, frames: Iterable[Frame], hostnames: Iterable[str] = ()) -> None:
        """Collect every zone name, alias, host name and dataset name in ``frames``."""
        for name in hostnames:
            self._add("host", name)
        for frame in frames:
            for ks in frame.kstats:
                zonename = ks.data.get("zonename")
                if isinstance(zonename, str):
                    self._add("zone", zonename)
            for res in frame.commands:
                self._learn_command(res)

    def _learn_command(self, res: CommandResult) -> None:
        """Names from the outputs whose formats say where the names are (the parsers'
        argv); any other output is only rewritten."""
        argv, out = tuple(res.argv), res.stdout
        if res.returncode != 0 or len(argv) < 2:
            return
        lines = [line for line in out.splitlines() if line.strip()]
        if argv[:2] == ("vmadm", "list") and "-o" in argv:
            fields = argv[argv.index("-o") + 1].split(",")
            for line in lines:
                self._learn_vm(dict(zip(fields, line.split(":"), strict=False)))
        elif argv[:2] == ("vmadm", "lookup") and "-j" in argv:
            try:
                vms = json.loads(out)
            except ValueError:
                return
            for vm in vms if isinstance(vms, list) else []:
                if isinstance(vm, dict):
                    self._learn_vm({k: v for k, v in vm.items() if isinstance(v, str)})
        elif argv[:2] == ("zoneadm", "list"):
            # zoneid:zonename:state:zonepath:uuid:brand:ip-type
            for line in lines:
                parts = line.split(":")
                if len(parts) > 4:
                    self._add("zone", parts[1])
                    self._add("zone", parts[4])
        elif argv[:2] == ("zfs", "list"):
            for line in lines:
                self._add_dataset(line.split("\t", 1)[0])

    def _learn_vm(self, vm: dict[str, str]) -> None:
        for f in ("uuid", "zonename"):
            if vm.get(f):
                self._add("zone", vm[f])
        if vm.get("alias"):
            self._add("alias", vm["alias"])
        if vm.get("hostname"):
            self._add("host", vm["hostname"])

    def _add_dataset(self, name: str) -> None:
        """A dataset is replaced as a whole path: its pool stays, a component that is a
        zone's name becomes that zone's replacement (zones/<zonename> must keep naming
        the zone), every other component is hashed."""
        parts = name.split("/")
        if len(parts) < 2 or name in self.mapping:
            return
        new = [parts[0]]
        for comp in parts[1:]:
            if _UUID.match(comp[:36]):
                # <uuid> or <uuid>-disk0 (a bhyve zone's volume): keep the suffix
                self._add("zone", comp[:36])
                new.append(self.mapping.get(comp[:36], comp[:36]) + comp[36:])
            else:
                new.append("ds-" + self._digest("ds", comp)[:12])
        self.mapping[name] = "/".join(new)
        self._pattern = None

    # ------------------------------------------------------------- rewriting

    def text(self, value: str) -> str:
        """``value`` with every learnt name replaced (whole names, not inside others)."""
        if not self.mapping or not value:
            return value
        if self._pattern is None:
            names = sorted(self.mapping, key=len, reverse=True)
            self._pattern = re.compile(
                f"(?<![{_EDGE}])(?:" + "|".join(map(re.escape, names)) + f")(?![{_EDGE}])")
        return self._pattern.sub(lambda m: self.mapping[m.group(0)], value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        return value

    def frame(self, frame: Frame) -> Frame:
        kstats = [replace(ks, name=self.text(ks.name),
                          data={k: self.text(v) if isinstance(v, str) else v
                                for k, v in ks.data.items()})
                  for ks in frame.kstats]
        commands = [replace(res, argv=tuple(self.text(a) for a in res.argv),
                            stdout=self.text(res.stdout), stderr=self.text(res.stderr))
                    for res in frame.commands]
        plugins = None if frame.plugins is None else [
            replace(run, stdout=self.text(run.stdout), stderr=self.text(run.stderr))
            for run in frame.plugins]
        textfiles = None if frame.textfiles is None else replace(
            frame.textfiles, files=tuple(replace(f, text=self.text(f.text))
                                         for f in frame.textfiles.files))
        return Frame(time=frame.time, kstats=kstats, commands=commands,
                     dtrace=[self.value(rec) for rec in frame.dtrace],
                     plugins=plugins, textfiles=textfiles,
                     checkpoint=self.checkpoint(frame.checkpoint))

    def checkpoint(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """A DTrace checkpoint rewritten as the frames' records are (its zone map, the
        series' labels and zone names, status messages), so it holds what a replay of
        the rewritten frames accumulates; its ``basis`` (a digest of the D scripts and
        settings, no name) is kept, or no replay would take it."""
        if record is None:
            return None
        return {k: v if k == "basis" else self.value(v) for k, v in record.items()}


def anonymize_bundle(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                     hostnames: Iterable[str] = (), key: bytes | None = None) -> Anonymizer:
    """Write ``src`` to ``dst`` anonymized (two passes: learn every name, then rewrite)."""
    header = read_header(src)
    anon = Anonymizer(key)
    names = [*hostnames]
    if isinstance(header.get("hostname"), str):
        names.append(header["hostname"])
    anon.learn(iter_frames(src), names)
    new_header = {k: anon.value(v) for k, v in header.items() if k not in ("format", "version")}
    new_header["anonymized"] = True
    with BundleWriter(dst, **new_header) as writer:
        for frame in iter_frames(src):
            writer.write(anon.frame(frame))
    return anon


def local_hostnames() -> list[str]:
    """This host's names, which may turn up in command output."""
    name = socket.gethostname()
    return [name, name.split(".", 1)[0]] if name else []

