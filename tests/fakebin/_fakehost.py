"""A stateful stand-in host for the control wing: vmadm, prctl, zonecfg, dladm and zfs
reading and changing one JSON state file, as the real commands change one host.

This is a *mode* of the stand-ins: the commands use it only when DTAGENT_FAKE_HOST names
a state file; otherwise they keep their read-only behaviour (_fakecmd.py, dladm), which
the collector tests rely on.

State file (tests write it with tests/control_host.py)::

  {"zones": {ZONENAME: {
       "uuid", "alias", "brand", "state" ("running"|"stopped"), "zoneid",
       "processes": true,            # false: a running zone with no process (prctl fails)
       "tags": {...}, "customer_metadata": {...},
       "config": {cpu_cap, cpu_shares, max_physical_memory, max_swap,
                  max_locked_memory, max_lwps, zfs_io_priority},  # vmadm units (MiB)
       "rctls": {"zone.cpu-shares": N, ...},   # live privileged values, raw units;
                                               # absent = no privileged value
       "zonecfg": {...},                       # the persistent config off SmartOS
       "links": {"net0": {"maxbw": bits_per_second or 0}},
       "dataset": "zones/UUID"}},
   "datasets": {NAME: {"quota": bytes, "used": bytes, "available": bytes,
                            "reservation": bytes (optional)}}}

Behaviour, with the public source each follows:

* vmadm (smartos-live src/vm/sbin/vmadm.js, src/vm/node_modules/VM.js, vmadm.8.md):
  ``update UUID`` reads a JSON payload on stdin (refused when stdin is a tty); the UUID
  must look like one ("Invalid or missing UUID for update", exit 2); an unknown VM is
  "VM UUID not found" (exit 1). VM.js normalises the payload: a new max_physical_memory
  without max_locked_memory/max_swap moves them keeping the old deltas (swap never below
  MINIMUM_MAX_SWAP = 256), max_locked_memory above max_physical_memory is clamped and
  max_swap below it is *raised* (a warning, not an error, on update); then it writes the
  persistent config and, for each changed rctl, runs ``prctl -n RCTL -v V -t privileged
  -r -i zone ZONENAME`` (retrying with -s when there is nothing to replace; cpu_cap=0
  deletes the rctl). A failing prctl is only logged (log.warn): vmadm still succeeds.
  Success is "Successfully updated VM UUID" on stderr (console.error), exit 0.
  ``lookup -j -o FIELDS`` prints a JSON array of objects with those fields.
* prctl (illumos-gate usr/src/cmd/prctl/prctl.c): -P output is, for each zone operand,
  the heading ``zone: ID: NAME`` (a blank line before it after the first) then, for each
  rctl with a value of the asked privilege (-t), ``RCTL usage N - - -`` and ``RCTL PRIV
  VALUE FLAG ACTION PID`` lines, values raw; an operand that cannot be grabbed is named
  on stderr and the next one is tried, the exit status is the last operand's; an rctl
  the kernel does not have ("rctl_names" in the state: illumos-joyent's by default) is
  "failed to get resource control for RCTL: Invalid argument" (with usage, exit 2, when
  changing); -P with an operation is a usage error (exit 2); an unknown zone is
  "prctl: NAME: unknown zone"; a zone without a controllable process is "prctl: NAME: No
  controllable process found in task, project, or zone." (exit 1, for reading too: prctl
  reads rctls through a grabbed process); -r with no value of that privilege fails with
  "no matching resource control to replace", -s over an existing one with "resource
  control already exists"; a value above the system limit is a usage error.
* zonecfg (zonecfg(8); illumos-gate usr/src/cmd/zonecfg/zonecfg.c): ``-z ZONE info
  [RESOURCE]`` prints aliased properties as ``[cpu-shares: 100]`` and resources as
  ``capped-cpu:`` / ``\t[ncpus: 0.50]``, ``capped-memory:`` / ``\t[physical: 256M]``;
  commands separated by ';' in one argument: ``set PROP=V``, ``select|add|remove
  RESOURCE``, ``end``. Selecting a resource that does not exist is an error. ``zonecfg
  help`` answers (exit 0) without a zone. prctl knows the global zone without a state
  entry.
* dladm (dladm(8), libdladm linkprop.c): ``set-linkprop [-t] [-z ZONE] -p maxbw=V LINK``
  (V in Mbit/s by default, K/M/G suffixes; below 1.2 Mbit/s refused), ``reset-linkprop
  [-t] [-z ZONE] -p maxbw LINK``, ``show-linkprop [-z ZONE] -c -o link,value -p maxbw``
  (value printed as dladm_bw2str does, empty when unset).
* zfs (zfs(8)): ``set quota=V DATASET`` (bytes, suffixes, or none), ``get -Hp -o value
  quota DATASET`` (0 for none), ``list -Hp -o ... -r ROOT``, and ``list -H -o
  name,mountpoint -t filesystem PATH``: the file system the path is in (libzfs
  zfs_path_to_zhandle), "'PATH': not a ZFS filesystem" when none; a dataset's
  ``mountpoint`` is /NAME unless the state says otherwise.

The kernel's view (``"kstat_feed": {"sim": PATH, "out": PATH}`` in the state): the zone's
``caps:ZONEID:cpucaps_zone_ZONEID`` kstat follows its live ``zone.cpu-cap`` as the kernel
keeps it (illumos uts/common/disp/cpucaps.c: the kstat exists only while a cap is set,
``value`` and ``effective`` are the cap). Whoever changes the state (a stand-in command, or
the test writing a new simulated frame to ``sim``) rewrites ``out``, the libkstat
stand-in's feed (tests/native/libkstat_stub.c), while it holds the state's lock: a change
a command made is in the very next kstat read.

DTAGENT_FAKE_<CMD>_MODE=hang (CMD = VMADM, PRCTL, ZONECFG, DLADM, ZFS) sleeps
DTAGENT_FAKE_HANG_SECONDS first; DTAGENT_FAKE_PRCTL_MODE=failset makes every prctl
change fail after grabbing the process (reads still work), as when the process lacks
the privilege; DTAGENT_FAKE_LOG gets each argv.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

MINIMUM_MAX_SWAP = 256  # MiB; VM.js
MIB = 1024 * 1024
UINT64_MAX = 2**64 - 1
# System limits of the zone rctls (illumos-joyent uts/common/os/zone.c zone_init,
# FSS_MAXSHARES; zone.zfs-io-priority max 16384).
RCTL_MAX = {"zone.cpu-shares": 65535, "zone.zfs-io-priority": 16384}
# vmadm property -> (rctl, factor) as VM.js applies them live.
VMADM_RCTLS = {
    "cpu_shares": ("zone.cpu-shares", 1),
    "zfs_io_priority": ("zone.zfs-io-priority", 1),
    "max_lwps": ("zone.max-lwps", 1),
    "max_physical_memory": ("zone.max-physical-memory", MIB),
    "max_locked_memory": ("zone.max-locked-memory", MIB),
    "max_swap": ("zone.max-swap", MIB),
    "cpu_cap": ("zone.cpu-cap", 1),
}
RCTL_ACTION = {"zone.cpu-shares": "none", "zone.zfs-io-priority": "none"}
# What prctl prints after the reason of a usage error (prctl.c USAGE, abridged).
USAGE = (
    "usage:\n    Report resource control values and actions:\n"
    "\tprctl [-P] [-t [basic | privileged | system]\n"
    "\t[-n name] [-i process | task | project | zone] id ...\n"
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LISTABLE = (
    "uuid",
    "zonename",
    "alias",
    "brand",
    "state",
    "zoneid",
    "tags",
    "customer_metadata",
    "zfs_filesystem",
    "quota",
    "nics",
)


class Host:
    """The state file, locked for the length of one command."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - held until save
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self.state: dict[str, Any] = json.load(self._fh)

    def zone(self, name: str) -> dict[str, Any] | None:
        zones: dict[str, dict[str, Any]] = self.state["zones"]
        return zones.get(name)

    def zone_by_uuid(self, uuid: str) -> tuple[str, dict[str, Any]] | None:
        for name, z in self.state["zones"].items():
            if z["uuid"] == uuid:
                return name, z
        return None

    def save(self) -> None:
        self._fh.seek(0)
        self._fh.truncate()
        json.dump(self.state, self._fh, indent=1, sort_keys=True)
        self._fh.flush()
        write_feed(self.state)

    def close(self) -> None:
        self._fh.close()  # and with it the lock


# --- the kernel's kstats ---------------------------------------------------------


def _cpucaps_block(zid: int, name: str, cap: int) -> list[str]:
    """A cpucaps_zone_N kstat the simulator has not written yet (a cap just set)."""
    return [
        f"k\tcaps\t{zid}\tcpucaps_zone_{zid}\tzone_caps\t1",
        f"u\tvalue\t{cap}",
        f"u\teffective\t{cap}",
        "u\tusage\t0",
        f"s\tzonename\t{name}",
    ]


def compose_feed(sim_text: str, state: dict[str, Any]) -> str:
    """The simulated frame's feed with every running zone's cpucaps kstat as its live
    zone.cpu-cap says (dropped when there is no cap, added when the frame has none)."""
    caps: dict[int, tuple[str, int | None]] = {}
    for name, z in state["zones"].items():
        if z.get("state") == "running" and z.get("zoneid") is not None:
            caps[int(z["zoneid"])] = (name, z.get("rctls", {}).get("zone.cpu-cap"))
    out: list[str] = []
    seen: set[int] = set()
    zid: int | None = None  # the zone of the cpucaps block being copied
    for line in sim_text.splitlines():
        fields = line.split("\t")
        if fields[0] == "k":
            zid = None
            if fields[1] == "caps" and fields[3] == f"cpucaps_zone_{fields[2]}":
                zid = int(fields[2])
                seen.add(zid)
        if zid is not None and zid in caps:
            cap = caps[zid][1]
            if cap is None:
                continue  # no cap: no cpucaps kstat
            if fields[0] == "u" and fields[1] in ("value", "effective"):
                line = f"u\t{fields[1]}\t{cap}"
        out.append(line)
    for zid, (name, cap) in sorted(caps.items()):
        if zid not in seen and cap is not None and sim_text:
            out += _cpucaps_block(zid, name, cap)
    return "\n".join(out) + "\n"


def write_feed(state: dict[str, Any]) -> None:
    feed = state.get("kstat_feed")
    if not feed:
        return
    try:
        with open(feed["sim"], encoding="utf-8") as fh:
            sim_text = fh.read()
    except FileNotFoundError:
        return  # no frame yet
    tmp = feed["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(compose_feed(sim_text, state))
    os.replace(tmp, feed["out"])  # the stand-in reloads a file replaced whole


Result = tuple[str, str, int]


# --- prctl -----------------------------------------------------------------------


# The global zone (id 0) always exists and always has processes (init, the caller
# itself), so prctl can grab one of them (prctl.c grab_process_by_id); no zone in the
# state file stands for it.
GLOBAL_ZONE: dict[str, Any] = {"zoneid": 0, "state": "running", "processes": True}


def _prctl_grab(host: Host, name: str) -> tuple[dict[str, Any] | None, str]:
    if name == "global":
        return json.loads(json.dumps(GLOBAL_ZONE)), ""
    z = host.zone(name)
    if z is None:
        return None, f"prctl: {name}: unknown zone\n"
    if z.get("state") != "running" or not z.get("processes", True):
        return None, (f"prctl: {name}: No controllable process found in task, project, or zone.\n")
    return z, ""


def _rctl_usage(z: dict[str, Any], rctl: str) -> int:
    return int(z.get("usage", {}).get(rctl, 0))


def prctl(host: Host, args: list[str]) -> Result:
    opts: dict[str, str] = {}
    ops = ""
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "-v", "-t", "-i", "-p", "-e", "-d"):
            if i + 1 >= len(args):
                return "", f"prctl: option requires an argument -- {a[1]}\n", 2
            opts[a[1]] = args[i + 1]
            i += 2
            continue
        if a in ("-s", "-r", "-x"):
            ops += a[1]
        elif a == "-P":
            opts["P"] = ""
        elif a.startswith("-"):
            return "", "prctl: unknown option\n", 2
        else:
            rest.append(a)
        i += 1
    if "v" in opts and not ops:
        ops = "s"
    if len(ops) > 1:
        return "", "prctl: options -s, -r, and -x are exclusive\n", 2
    if opts.get("i") not in ("zone", "zoneid") or not rest:
        return "", "prctl (stand-in): only '-i zone ZONENAME...' is emulated\n", 2
    # the rctls this kernel has (illumos-joyent's by default; illumos-gate has no
    # zone.zfs-io-priority)
    known = host.state.get("rctl_names", VMADM_RCTL_NAMES)
    if not ops:
        return _prctl_report(host, opts, rest, known)
    if len(rest) != 1:
        return "", "prctl (stand-in): one zone per change\n", 2
    name = rest[0]
    rctl = opts.get("n")
    if ops:
        if "P" in opts:
            return "", "prctl: -P not valid when manipulating resource control values\n", 2
        if rctl is None:
            return "", "prctl: -n is required with -s, -r, -x, -e, or -d\n", 2
        if rctl not in known:
            # main() reads the rctl's system value first (getrctl), then prints usage
            return "", (
                f"prctl: failed to get resource control for {rctl}: Invalid argument\n"
                + USAGE
            ), 2
        if opts.get("t") not in ("privileged", "priv"):
            return "", "prctl (stand-in): only -t privileged changes are emulated\n", 2
        value = None
        if ops in "sr":
            text = opts.get("v", "")
            if not text.isdigit():
                return "", f"prctl: invalid -v value {text}\n", 2
            value = int(text)
            if value > RCTL_MAX.get(rctl, UINT64_MAX):
                return (
                    "",
                    (f"prctl: -v value {text} exceeds system limit for resource control: {rctl}\n"),
                    2,
                )
        z, err = _prctl_grab(host, name)
        if z is None:
            return "", err, 1
        rctls = z.setdefault("rctls", {})
        pid = int(z.get("zoneid", 1)) * 1000 + 1
        psargs = "/sbin/init"
        if ops == "r" and rctl not in rctls:
            return "", (f"{pid}:\t{psargs}\nprctl: no matching resource control to replace\n"), 1
        if ops == "s" and rctl in rctls:
            return "", f"{pid}:\t{psargs}\nprctl: resource control already exists\n", 1
        if ops == "x" and rctl not in rctls:
            return (
                "",
                (f"{pid}:\t{psargs}\nprctl: no matching resource control found for deletion\n"),
                1,
            )
        if os.environ.get("DTAGENT_FAKE_PRCTL_MODE") == "failset":
            return (
                "",
                (
                    f"{pid}:\t{psargs}\nprctl: failed to delete resource control {rctl} for "
                    f"pid {pid}: Not owner\n"
                ),
                1,
            )
        if ops == "x":
            del rctls[rctl]
        else:
            rctls[rctl] = value
        host.save()
        return "", "", 0
    return "", "", 0  # not reached: no operation is report mode


def _prctl_report(
    host: Host, opts: dict[str, str], zones: list[str], known: list[str]
) -> Result:
    """prctl.c report mode: one heading per operand (a blank line before each after the
    first; no heading when no rctl has a value of that privilege), each rctl that has a
    value of the asked privilege with its usage first; an
    operand whose zone has no process is named on stderr and the next one is tried; the
    exit status is the last operand's (``errflg`` is reset for each)."""
    if "P" not in opts:
        return "", "prctl (stand-in): only -P output is emulated\n", 2
    rctl = opts.get("n")
    priv = opts.get("t")
    if priv not in (None, "privileged", "priv", "system"):
        return "", "prctl (stand-in): only -t privileged or system is emulated\n", 2
    out: list[str] = []
    err: list[str] = []
    rc = 0
    printed = False
    for name in zones:
        z, problem = _prctl_grab(host, name)
        if z is None:
            err.append(problem)
            rc = 1
            continue
        rc = 0
        if rctl is not None and rctl not in known:
            # store_rctls: pr_getrctl fails; the error is printed and prctl stops
            err.append(f"prctl: failed to get resource control for {rctl}: Invalid argument\n")
            return "".join(out), "".join(err), 1
        names = [rctl] if rctl is not None else [r for r in known if r.startswith("zone.")]
        lines: list[str] = []
        for r in names:
            action = RCTL_ACTION.get(r, "deny")
            values = []
            if r in z.get("rctls", {}) and priv in (None, "privileged", "priv"):
                values.append(f"{r} privileged {z['rctls'][r]} - {action} -\n")
            if priv in (None, "system"):
                flag = "inf" if r == "zone.cpu-cap" else "max"
                values.append(f"{r} system {RCTL_MAX.get(r, UINT64_MAX)} {flag} {action} -\n")
            if values:  # an rctl with no value of that privilege is not listed at all
                lines.append(f"{r} usage {_rctl_usage(z, r)} - - -\n")
                lines += values
        if printed:
            out.append("\n")
        if lines:  # print_rctls returns before its heading when no rctl was stored
            out.append(f"zone: {z.get('zoneid', 0)}: {name}\n")
            out += lines
        printed = True
    return "".join(out), "".join(err), rc


VMADM_RCTL_NAMES = sorted(r for r, _ in VMADM_RCTLS.values())


def _set_rctl_live(host: Host, name: str, rctl: str, value: int) -> str | None:
    """What VM.js setRctl does: -r, then -s when nothing matched; the error or None."""
    args = ["-n", rctl, "-v", str(value), "-t", "privileged", "-r", "-i", "zone", name]
    _out, err, rc = prctl(host, args)
    if rc != 0 and "no matching resource control to replace" in err:
        args[args.index("-r")] = "-s"
        _out, err, rc = prctl(host, args)
    return err if rc != 0 else None


# --- vmadm -----------------------------------------------------------------------


def _vm_object(name: str, z: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "uuid": z["uuid"],
        "zonename": name,
        "alias": z.get("alias"),
        "brand": z.get("brand", "joyent"),
        "state": z.get("state", "running"),
        "zoneid": z.get("zoneid") if z.get("state") == "running" else None,
        "tags": z.get("tags", {}),
        "customer_metadata": z.get("customer_metadata", {}),
        "zfs_filesystem": z.get("dataset", f"zones/{z['uuid']}"),
        "nics": [{"interface": link} for link in sorted(z.get("links", {}))],
    }
    obj.update(z.get("config", {}))
    ds = host_datasets.get(obj["zfs_filesystem"], {})
    obj["quota"] = int(ds.get("quota", 0)) // (1024**3)
    obj = {k: v for k, v in obj.items() if v is not None}
    if fields:
        obj = {k: obj[k] for k in fields if k in obj}
    return obj


host_datasets: dict[str, Any] = {}


def vmadm(host: Host, args: list[str]) -> Result:
    global host_datasets
    host_datasets = host.state.get("datasets", {})
    if not args:
        return "", "Usage: vmadm <command> [options]\n", 2
    cmd = args[0]
    if cmd == "lookup":
        fields: list[str] | None = None
        as_json = False
        i = 1
        while i < len(args):
            if args[i] == "-j":
                as_json = True
            elif args[i] == "-o" and i + 1 < len(args):
                fields = args[i + 1].split(",")
                i += 1
            else:
                return "", "vmadm (stand-in): only 'lookup -j [-o fields]' is emulated\n", 2
            i += 1
        if not as_json:
            return "", "vmadm (stand-in): only 'lookup -j' is emulated\n", 2
        vms = [
            _vm_object(n, z, fields)
            for n, z in sorted(host.state["zones"].items(), key=lambda kv: kv[1]["uuid"])
        ]
        return json.dumps(vms, indent=2) + "\n", "", 0
    if cmd == "get":
        if len(args) != 2 or not UUID_RE.match(args[1]):
            return "", "Invalid or missing UUID for get\n", 2
        found = host.zone_by_uuid(args[1])
        if found is None:
            return "", f"VM {args[1]} not found\n", 1
        return json.dumps(_vm_object(found[0], found[1], None), indent=2) + "\n", "", 0
    if cmd != "update":
        return "", f"vmadm (stand-in): {cmd} is not emulated\n", 2
    if len(args) < 2 or not UUID_RE.match(args[1]):
        return "", "Invalid or missing UUID for update\n", 2
    if len(args) > 2:
        return "", "vmadm (stand-in): only a JSON payload on stdin is emulated\n", 2
    if sys.stdin.isatty():
        return "", "Will not update from stdin when stdin is a tty.\n", 2
    try:
        payload = json.loads(sys.stdin.read())
    except ValueError as exc:
        return "", f"Invalid JSON payload: {exc}\n", 1
    if not isinstance(payload, dict):
        return "", "Invalid payload: not an object\n", 1
    found = host.zone_by_uuid(args[1])
    if found is None:
        return "", f"VM {args[1]} not found\n", 1
    name, z = found
    unknown = sorted(set(payload) - set(VMADM_RCTLS))
    if unknown:
        return "", f"vmadm (stand-in): cannot update {', '.join(unknown)}\n", 1
    for k, v in payload.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return "", f"Invalid value for {k}: {v!r}\n", 1
    old = z.setdefault("config", {})
    warnings: list[str] = []
    # VM.js normalizeMemoryCaps (update): keep the old deltas when only physical moves.
    if "max_physical_memory" in payload:
        phys = payload["max_physical_memory"]
        if "max_locked_memory" not in payload and "max_locked_memory" in old:
            payload["max_locked_memory"] = phys - (
                old["max_physical_memory"] - old["max_locked_memory"]
            )
        if "max_swap" not in payload and "max_swap" in old:
            if old["max_swap"] == MINIMUM_MAX_SWAP and phys >= MINIMUM_MAX_SWAP:
                payload["max_swap"] = phys
            else:
                payload["max_swap"] = phys + (old["max_swap"] - old["max_physical_memory"])
            payload["max_swap"] = max(payload["max_swap"], MINIMUM_MAX_SWAP)
    phys_now = payload.get("max_physical_memory", old.get("max_physical_memory"))
    if (
        "max_locked_memory" in payload
        and phys_now is not None
        and (payload["max_locked_memory"] > phys_now)
    ):
        warnings.append(f"max_locked_memory ({payload['max_locked_memory']}) clamped")
        payload["max_locked_memory"] = phys_now
    if "max_swap" in payload and phys_now is not None and payload["max_swap"] < phys_now:
        warnings.append(
            f"max_swap ({payload['max_swap']}) < max_physical_memory ({phys_now}) "
            f"raising to {phys_now}"
        )
        payload["max_swap"] = phys_now
    old.update(payload)
    host.save()
    if z.get("state") == "running":
        for prop, value in payload.items():
            rctl, factor = VMADM_RCTLS[prop]
            if prop == "cpu_cap" and value == 0:
                _o, err, rc = prctl(
                    host, ["-n", rctl, "-x", "-t", "privileged", "-i", "zone", name]
                )
                problem = err if rc else None
            else:
                problem = _set_rctl_live(host, name, rctl, value * factor)
            if problem:
                warnings.append(f"failed to set rctl: {prop}: {problem.strip()}")
    log = "".join(json.dumps({"name": "VM", "level": 40, "msg": w}) + "\n" for w in warnings)
    return "", log + f"Successfully updated VM {z['uuid']}\n", 0


# --- zonecfg ---------------------------------------------------------------------

ZONECFG_GLOBAL = ("cpu-shares", "max-lwps", "zfs-io-priority")
ZONECFG_RESOURCES = {"capped-cpu": ("ncpus",), "capped-memory": ("physical", "swap", "locked")}


def _units(n: int) -> str:
    """zonecfg's bytes_to_units, for the whole-MiB values the stand-in keeps."""
    for suffix, size in (("G", 1024**3), ("M", MIB), ("K", 1024)):
        if n % size == 0 and n >= size:
            return f"{n // size}{suffix}"
    return str(n)


def _parse_size(text: str) -> int | None:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "k": 1024, "m": MIB, "g": 1024**3}[m.group(2).lower()]


# zonecfg.c helptab: the subcommands `zonecfg help` lists
ZONECFG_SUBCOMMANDS = ("add", "cancel", "clear", "commit", "create", "delete", "end", "exit",
                       "export", "help", "info", "remove", "revert", "select", "set",
                       "verify")


def zonecfg(host: Host, args: list[str]) -> Result:
    if args[:1] == ["help"]:
        # zonecfg.c main(): "help" as the first argument is answered before any option
        # or zone is looked at, exit Z_OK (0)
        return "".join(f"{c}\n" for c in ZONECFG_SUBCOMMANDS), "", 0
    if len(args) < 3 or args[0] != "-z":
        return "", "usage: zonecfg -z <zone> [subcommand]\n", 253
    name, commands = args[1], args[2:]
    z = host.zone(name)
    if z is None:
        return "", f"{name}: No such zone configured\n", 1
    cfg = z.setdefault("zonecfg", {})
    if commands[0] == "info":
        want = commands[1] if len(commands) > 1 else None
        out = [] if want else [f"zonename: {name}\n"]
        for prop in ZONECFG_GLOBAL:
            if want in (None, prop) and prop in cfg:
                out.append(f"[{prop}: {cfg[prop]}]\n")
        for res, props in ZONECFG_RESOURCES.items():
            if want in (None, res) and res in cfg:
                out.append(f"{res}:\n")
                for p in props:
                    if p in cfg[res]:
                        v = cfg[res][p]
                        shown = f"{v / 100:.2f}" if p == "ncpus" else _units(v)
                        out.append(f"\t[{p}: {shown}]\n")
        return "".join(out), "", 0
    script = " ".join(commands)
    current: str | None = None
    new = json.loads(json.dumps(cfg))
    for raw in script.split(";"):
        words = raw.split()
        if not words:
            continue
        verb = words[0]
        if verb in ("select", "add", "remove") and len(words) == 2:
            res = words[1]
            if res not in ZONECFG_RESOURCES:
                return "", f"zonecfg:{name}> {raw.strip()}: unknown resource type\n", 1
            if verb == "select":
                if res not in new:
                    return "", f"{res}: No such resource with that id\n", 1
                current = res
            elif verb == "add":
                if res in new:
                    return "", f"{res}: cannot add: only one is allowed\n", 1
                new[res] = {}
                current = res
            else:
                new.pop(res, None)
        elif verb == "end" and current is not None:
            if not new[current]:
                return "", f"{current}: incomplete resource\n", 1
            current = None
        elif verb == "set" and len(words) == 2 and "=" in words[1]:
            prop, _, value = words[1].partition("=")
            if current is None:
                # zfs-io-priority is a property of illumos-joyent's zonecfg only: illumos-gate
                # usr/src/cmd/zonecfg/zonecfg_lex.l has no such token (and its kernel no
                # zone.zfs-io-priority rctl), so it is as unknown as any other name there
                known = host.state.get("rctl_names", VMADM_RCTL_NAMES)
                joyent = "zone.zfs-io-priority" in known
                if (prop not in ZONECFG_GLOBAL or not value.isdigit()
                        or (prop == "zfs-io-priority" and not joyent)):
                    return "", f"set {prop}: invalid property or value\n", 1
                new[prop] = int(value)
            elif prop == "ncpus" and current == "capped-cpu":
                try:
                    new[current][prop] = round(float(value) * 100)
                except ValueError:
                    return "", f"{value}: invalid ncpus\n", 1
            elif prop in ZONECFG_RESOURCES[current]:
                size = _parse_size(value)
                if size is None:
                    return "", f"{value}: invalid size\n", 1
                new[current][prop] = size
            else:
                return "", f"{prop}: invalid property for {current}\n", 1
        else:
            return "", f"zonecfg:{name}> {raw.strip()}: syntax error\n", 1
    if current is not None:
        return "", f"{current}: resource not ended (missing 'end')\n", 1
    z["zonecfg"] = new
    host.save()
    return "", "", 0


# --- dladm -----------------------------------------------------------------------


def _bw2str(bps: int) -> str:
    """libdladm dladm_bw2str: Mbit/s as %5u or %5u.%03u (leading spaces)."""
    mbps, kbps = divmod(bps // 1000, 1000)
    return f"{mbps:5d}" if kbps == 0 else f"{mbps:5d}.{kbps:03d}"


def _str2bw(text: str) -> int | None:
    """libdladm dladm_str2bw: a number, Mbit/s unless K/M/G follows."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text)
    if not m:
        return None
    scale = {"k": 1000, "m": 10**6, "": 10**6, "g": 10**9}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def dladm(host: Host, args: list[str]) -> Result:
    if not args:
        return "", "usage: dladm <subcommand> <args> ...\n", 1
    sub, rest = args[0], args[1:]
    zone = None
    temporary = False
    prop = None
    fields = None
    parsable = False
    operands: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("-z", "-p", "-o") and i + 1 < len(rest):
            if a == "-z":
                zone = rest[i + 1]
            elif a == "-p":
                prop = rest[i + 1]
            else:
                fields = rest[i + 1]
            i += 2
            continue
        if a == "-t":
            temporary = True
        elif a == "-c":
            parsable = True
        elif a.startswith("-"):
            return "", f"dladm: unrecognized option '{a}'\n", 1
        else:
            operands.append(a)
        i += 1
    zones = host.state["zones"]
    if zone is not None and zone not in zones:
        return "", f"dladm: invalid zone '{zone}'\n", 1
    if sub == "show-linkprop":
        if not parsable or fields != "link,value" or prop != "maxbw":
            return (
                "",
                "dladm (stand-in): only 'show-linkprop [-z Z] -c -o link,value -p maxbw'\n",
                2,
            )
        out = []
        for zname, z in sorted(zones.items()):
            if zone is not None and zname != zone:
                continue
            for link, props in sorted(z.get("links", {}).items()):
                bw = int(props.get("maxbw", 0))
                value = _bw2str(bw) if bw else ""
                shown = link if zone is not None else f"z{z.get('zoneid', 0)}_{link}"
                out.append(f"{shown}:{value}\n")
        return "".join(out), "", 0
    if sub not in ("set-linkprop", "reset-linkprop"):
        return "", f"dladm: unknown subcommand '{sub}'\n", 1
    if len(operands) != 1 or prop is None:
        return "", f"usage: dladm {sub} [-t] [-z zone] -p <prop>[=<value>] <link>\n", 1
    if not temporary:
        return "", "dladm (stand-in): VNICs of zones are temporary; use -t\n", 2
    link = operands[0]
    target = zones.get(zone) if zone is not None else None
    if target is None or link not in target.get("links", {}):
        return (
            "",
            f"dladm: cannot {sub.split('-')[0]} link properties on '{link}': object not found\n",
            1,
        )
    name, _, value = prop.partition("=")
    if name != "maxbw":
        return "", f"dladm (stand-in): property {name} is not emulated\n", 2
    if sub == "reset-linkprop":
        target["links"][link]["maxbw"] = 0
    else:
        bw = _str2bw(value)
        if bw is None or (bw != 0 and bw < 1_200_000):
            return (
                "",
                f"dladm: warning: cannot set link property 'maxbw' on '{link}': invalid argument\n",
                1,
            )
        target["links"][link]["maxbw"] = bw
    host.save()
    return "", "", 0


# --- zfs -------------------------------------------------------------------------


def zfs(host: Host, args: list[str]) -> Result:
    datasets: dict[str, dict[str, Any]] = host.state.setdefault("datasets", {})
    if args[:1] == ["set"] and len(args) == 3:
        prop, _, value = args[1].partition("=")
        if prop != "quota":
            return "", f"zfs (stand-in): property {prop} is not emulated\n", 2
        name = args[2]
        if name not in datasets:
            return "", f"cannot open '{name}': dataset does not exist\n", 1
        if value == "none":
            quota = 0
        else:
            m = re.fullmatch(r"(\d+)([KMGT]?)", value)
            if not m:
                return "", f"cannot set property for '{name}': bad numeric value '{value}'\n", 1
            quota = (
                int(m.group(1))
                * {"": 1, "K": 1024, "M": MIB, "G": 1024**3, "T": 1024**4}[m.group(2)]
            )
        # dsl_dir.c dsl_dir_set_quota_check (illumos-gate uts/common/fs/zfs): ENOSPC
        # below the space used or below the dataset's reservation (dd_reserved)
        used = int(datasets[name].get("used", 0))
        reserved = int(datasets[name].get("reservation", 0))
        if quota and (quota < used or quota < reserved):
            return (
                "",
                f"cannot set property for '{name}': size is less than current "
                "used or reserved space\n",
                1,
            )
        datasets[name]["quota"] = quota
        host.save()
        return "", "", 0
    if args[:1] == ["get"]:
        if args[1:5] != ["-Hp", "-o", "value", "quota"] or len(args) != 6:
            return "", "zfs (stand-in): only 'get -Hp -o value quota DATASET'\n", 2
        name = args[5]
        if name not in datasets:
            return "", f"cannot open '{name}': dataset does not exist\n", 1
        return f"{int(datasets[name].get('quota', 0))}\n", "", 0
    return "", "zfs (stand-in, host mode): only set quota= and get quota\n", 2


COMMANDS: dict[str, Callable[[Host, list[str]], Result]] = {
    "vmadm": vmadm,
    "prctl": prctl,
    "zonecfg": zonecfg,
    "dladm": dladm,
    "zfs": zfs,
}


def _inventory(host: Host) -> list[dict[str, object]]:
    """The zones as _fakecmd's read-only vmadm list and zoneadm list print them."""
    out: list[dict[str, object]] = []
    for name, z in host.state["zones"].items():
        vm = {k: v for k, v in z.items() if k in ("uuid", "alias", "brand", "state", "zonepath")}
        vm["zonename"] = name
        if z.get("state") == "running":
            vm["zoneid"] = z.get("zoneid")
        vm["image_uuid"] = z.get("image_uuid", "")
        vm.update(z.get("config", {}))  # vmadm list -o cpu_shares,... (listable: yes)
        out.append(vm)
    return out


def _mountpoint(name: str, ds: dict[str, Any]) -> str:
    return str(ds.get("mountpoint", "/" + name))  # zfs's default: /POOL/PATH


def _zfs_list(host: Host, args: list[str]) -> Result:
    import _fakecmd

    datasets: dict[str, dict[str, Any]] = host.state.get("datasets", {})
    if args[-1:] and args[-1].startswith("/"):
        # a path names the file system it is in (libzfs zfs_path_to_zhandle: the mnttab
        # entry of the path's device; zfs_main.c zfs_do_list takes paths)
        if args[1:-1] != ["-H", "-o", "name,mountpoint", "-t", "filesystem"]:
            return "", "zfs (stand-in): only 'list -H -o name,mountpoint -t filesystem PATH'\n", 2
        path = args[-1].rstrip("/") or "/"
        pools = {n.partition("/")[0] for n in datasets}
        known = {n: _mountpoint(n, d) for n, d in datasets.items()}
        known.update({p: "/" + p for p in pools if p not in known})
        holders = [
            (mp, n)
            for n, mp in known.items()
            if path == mp or path.startswith(mp.rstrip("/") + "/")
        ]
        if not holders:
            return "", f"'{path}': not a ZFS filesystem\n", 1
        mp, name = max(holders)
        return f"{name}\t{mp}\n", "", 0
    rows = [{"name": n, **d} for n, d in datasets.items()]
    return _fakecmd.zfs(args, rows)


def main(cmd: str, argv: list[str]) -> None:
    log = os.environ.get("DTAGENT_FAKE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([cmd, *argv]) + "\n")
    if os.environ.get(f"DTAGENT_FAKE_{cmd.upper()}_MODE") == "hang":
        time.sleep(float(os.environ.get("DTAGENT_FAKE_HANG_SECONDS", "60")))
    host = Host(os.environ["DTAGENT_FAKE_HOST"])
    if cmd in ("vmadm", "zoneadm") and argv[:1] == ["list"]:
        import _fakecmd

        stdout, stderr, rc = getattr(_fakecmd, cmd)(argv, _inventory(host))
    elif cmd == "zfs" and argv[:1] == ["list"]:
        stdout, stderr, rc = _zfs_list(host, argv)
    elif cmd == "zoneadm":
        stdout, stderr, rc = "", "usage: zoneadm list [-cinpv]\n", 253
    else:
        stdout, stderr, rc = COMMANDS[cmd](host, argv)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.exit(rc)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1], sys.argv[2:])
