"""Stand-ins for vmadm, zoneadm and zfs: the documented output formats, from a JSON model.

Tests put tests/fakebin first on the agent's command path. What the commands list comes
from files named by environment variables, how they behave from others:

  DTAGENT_FAKE_VMS       JSON list of zones: {"uuid", "zonename"?, "zoneid"?, "state",
                         "brand", "image_uuid", "alias", "zonepath"?} (vmadm, zoneadm)
  DTAGENT_FAKE_DATASETS  JSON list of {"name", "used", "available", "referenced",
                         "quota"} (quota 0 = none, "-" = does not apply) (zfs)
  DTAGENT_FAKE_<CMD>_MODE   ok (default) | fail | hang | truncate
                            (<CMD> = VMADM, ZONEADM, ZFS)
  DTAGENT_FAKE_HANG_SECONDS how long "hang" sleeps before answering (default 60)
  DTAGENT_FAKE_LOG       file each run appends its argv to (counts the forks)
  DTAGENT_FAKE_HOST      a state file: the commands become a stateful host that can
                         be changed (vmadm update, zfs set, ...); see _fakehost.py

Formats:
* vmadm list (smartos-live src/vm/sbin/vmadm.js outputVMListLine/formatVMList): -p joins
  the -o fields with ':' without escaping, an absent value is '' ('-' in the table), no
  header with -p or -H, trailing white space trimmed; the global zone is not listed.
* zoneadm list -cp (illumos usr/src/cmd/zoneadm/zoneadm.c zone_print, illumos-joyent):
  zoneid:zonename:state:zonepath:uuid:brand:ip-type:debugid, zoneid '-' when not
  running, ':' in the zonepath printed as '\\:'; running zones first.
* zfs list -Hp (illumos usr/src/cmd/zfs/zfs_main.c, libzfs zfs_prop_get literal): one
  line per dataset under the -r root, fields tab-separated, exact integers, quota 0 as
  '0', a property that does not apply as '-'.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _load(var: str) -> list[dict[str, object]]:
    path = os.environ.get(var)
    if not path:
        return []
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    assert isinstance(data, list)
    return data


def _opts(args: list[str], with_value: str) -> tuple[dict[str, str], list[str]]:
    """getopt-style: single-letter flags, bundled (-Hp), values for letters in with_value."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                letter = a[j]
                if letter in with_value:
                    value = a[j + 1 :] or (args[i + 1] if i + 1 < len(args) else "")
                    if not a[j + 1 :]:
                        i += 1
                    opts[letter] = value
                    break
                opts[letter] = ""
                j += 1
        else:
            rest.append(a)
        i += 1
    return opts, rest


def vmadm(args: list[str], vms: list[dict[str, object]] | None = None) -> tuple[str, str, int]:
    if not args or args[0] != "list":
        return "", "Usage: vmadm <command> [options]\n", 2
    opts, _filters = _opts(args[1:], "os")
    fields = (opts.get("o") or "uuid,type,ram,state,alias").split(",")
    parsable = "p" in opts
    header = not parsable and "H" not in opts
    lines = []
    if header:
        lines.append("  ".join(f.upper() for f in fields))
    vms = _load("DTAGENT_FAKE_VMS") if vms is None else vms
    for vm in sorted(vms, key=lambda v: str(v["uuid"])):
        if vm.get("zonename") == "global":
            continue
        values = []
        for f in fields:
            v = vm.get(f, vm["uuid"] if f == "zonename" else None)
            if v is None or v == "" or v is False:
                values.append("" if parsable else "-")
            else:
                values.append(str(v))
        lines.append((":" if parsable else "  ").join(values).rstrip())
    return "".join(line + "\n" for line in lines), "", 0


def zoneadm(args: list[str], zones: list[dict[str, object]] | None = None) -> tuple[str, str, int]:
    if not args or args[0] != "list":
        return "", "usage: zoneadm list [-cinpv]\n", 253
    opts, _ = _opts(args[1:], "")
    zones = _load("DTAGENT_FAKE_VMS") if zones is None else zones
    running = [z for z in zones if z.get("state") == "running"]
    others = [z for z in zones if z.get("state") != "running"]
    if "c" not in opts:
        others = []
    out = []
    for z in running + others:
        name = str(z.get("zonename") or z["uuid"])
        if "p" not in opts:
            out.append(name + "\n")
            continue
        zoneid = str(z["zoneid"]) if z.get("state") == "running" else "-"
        path = str(z.get("zonepath", "/" if name == "global" else f"/zones/{name}"))
        state = "installed" if z.get("state") == "stopped" else str(z.get("state"))
        uuid = "" if name == "global" else str(z["uuid"])
        brand = str(z.get("brand") or "joyent")
        iptype = "shared" if name == "global" else "excl"
        debugid = str(z.get("zoneid", "")) if name != "global" else "0"
        out.append(
            f"{zoneid}:{name}:{state}:{path.replace(':', chr(92) + ':')}:{uuid}:{brand}:"
            f"{iptype}:{debugid}\n"
        )
    return "".join(out), "", 0


def zfs(args: list[str], datasets: list[dict[str, object]] | None = None) -> tuple[str, str, int]:
    if not args or args[0] != "list":
        return "", "usage: zfs list ...\n", 2
    opts, rest = _opts(args[1:], "otsSd")
    if "H" not in opts or "p" not in opts or "r" not in opts or len(rest) != 1:
        return "", "this stand-in only knows zfs list -Hp -o ... -r ROOT\n", 2
    root = rest[0]
    fields = opts.get("o", "name,used,available,referenced,mountpoint").split(",")
    rows = [
        d for d in (_load("DTAGENT_FAKE_DATASETS") if datasets is None else datasets)
        if d["name"] == root or str(d["name"]).startswith(root + "/")
    ]
    if not any(d["name"] == root for d in rows):
        return "", f"cannot open '{root}': dataset does not exist\n", 1
    out = []
    for d in sorted(rows, key=lambda d: str(d["name"])):
        out.append("\t".join(str(d.get(f, "-")) for f in fields) + "\n")
    return "".join(out), "", 0


COMMANDS = {"vmadm": vmadm, "zoneadm": zoneadm, "zfs": zfs}


def main(cmd: str) -> None:
    if os.environ.get("DTAGENT_FAKE_HOST"):
        # The stateful mode the control wing's tests use (see _fakehost.py).
        import _fakehost

        _fakehost.main(cmd, sys.argv[1:])
    log = os.environ.get("DTAGENT_FAKE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([cmd, *sys.argv[1:]]) + "\n")
    mode = os.environ.get(f"DTAGENT_FAKE_{cmd.upper()}_MODE", "ok")
    if mode == "hang":
        time.sleep(float(os.environ.get("DTAGENT_FAKE_HANG_SECONDS", "60")))
    if mode == "fail":
        sys.stderr.write(f"{cmd}: Unable to get zone list: Cannot allocate memory\n")
        sys.exit(1)
    stdout, stderr, rc = COMMANDS[cmd](sys.argv[1:])
    if mode == "truncate":
        stdout = stdout[: max(1, len(stdout) * 2 // 3)]
        if stdout.endswith("\n"):
            stdout = stdout[:-3]
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    sys.exit(rc)
