"""Stand-ins for svccfg, svcadm, svcs and svcprop: one service repository in a directory.

$DTAGENT_FAKE_SMF is the directory: calls.log (each call's argv), one JSON file per
imported service (repo.json: {fmri: {"manifest", "state", "props"}}), and fail-starts
(a count: that many next starts end in maintenance, as a start method that exits would).

As strict as the real commands for what install.sh and the agent run:
* svccfg import FILE: FILE must be a service_bundle manifest (svccfg(8)); the instance
  of create_default_instance is created, enabled as the manifest says on first import
  and left as it is on a re-import; the config property group is (re)read.
* svccfg delete FMRI: deletes the service and its instances; unknown FMRI: exit 1.
* svcadm enable|disable [-s]|restart|refresh|clear FMRI (svcadm(8)): unknown: exit 1.
* svcs -H -o state FMRI: the state, or exit 1 with svcs' message when there is none.
* svcprop -p PG FMRI: "pg/prop type value" lines, values quoted as svcprop(1) says
  (empty string as "", shell metacharacters backslash-escaped); -p PG/PROP: the value.
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

DIR = os.environ.get("DTAGENT_FAKE_SMF", "")
REPO = os.path.join(DIR, "repo.json")
INSTANCE = "default"


def _load() -> dict[str, dict[str, object]]:
    if not os.path.exists(REPO):
        return {}
    with open(REPO, encoding="utf-8") as fh:
        data: dict[str, dict[str, object]] = json.load(fh)
    return data


def _save(repo: dict[str, dict[str, object]]) -> None:
    with open(REPO, "w", encoding="utf-8") as fh:
        json.dump(repo, fh, indent=1)


def _fail(cmd: str, message: str, code: int = 1) -> None:
    sys.stderr.write(f"{cmd}: {message}\n")
    sys.exit(code)


def _fmri(cmd: str, arg: str) -> str:
    """svc:/application/dtagent:default, application/dtagent, dtagent -> instance FMRI."""
    name = arg.removeprefix("svc:/")
    if ":" in name:
        name, inst = name.split(":", 1)
    else:
        inst = INSTANCE
    for fmri in _load():
        service = fmri.removeprefix("svc:/").rsplit(":", 1)[0]
        if (service == name or service.endswith("/" + name)) and fmri.endswith(":" + inst):
            return fmri
    _fail(cmd, f"Pattern '{arg}' doesn't match any instances")
    raise AssertionError


def _start(entry: dict[str, object]) -> None:
    count_file = os.path.join(DIR, "fail-starts")
    left = 0
    if os.path.exists(count_file):
        with open(count_file, encoding="utf-8") as fh:
            left = int(fh.read() or 0)
    if left > 0:
        with open(count_file, "w") as fh:
            fh.write(str(left - 1))
        entry["state"] = "maintenance"
    else:
        entry["state"] = "online"


def svccfg(args: list[str]) -> None:
    if len(args) == 2 and args[0] == "import":
        try:
            root = ET.parse(args[1]).getroot()
        except (OSError, ET.ParseError) as exc:
            _fail("svccfg", f"{args[1]}: {exc}")
        if root.tag != "service_bundle" or root.get("type") != "manifest":
            _fail("svccfg", f"{args[1]}: not a service_bundle manifest")
        repo = _load()
        for service in root.findall("service"):
            fmri = f"svc:/{service.get('name')}:{INSTANCE}"
            default = service.find("create_default_instance")
            props = {
                f"{pg.get('name')}/{pv.get('name')}": [pv.get("type"), pv.get("value")]
                for pg in service.findall("property_group")
                for pv in pg.findall("propval")
            }
            entry = repo.get(fmri)
            if entry is None:
                entry = {"state": "disabled"}
                if default is not None and default.get("enabled") == "true":
                    _start(entry)
            entry.update(manifest=os.path.abspath(args[1]), props=props)
            repo[fmri] = entry
        _save(repo)
        return
    if len(args) == 2 and args[0] == "delete":
        repo = _load()
        name = args[1].removeprefix("svc:/")
        gone = [f for f in repo if f.removeprefix("svc:/").rsplit(":", 1)[0] == name
                or f.removeprefix("svc:/") == name]
        if not gone:
            _fail("svccfg", f"Pattern '{args[1]}' doesn't match any entities")
        for f in gone:
            del repo[f]
        _save(repo)
        return
    _fail("svccfg", "usage (stand-in): svccfg import FILE | svccfg delete FMRI", 2)


def svcadm(args: list[str]) -> None:
    opts = [a for a in args[1:] if a.startswith("-")]
    rest = [a for a in args[1:] if not a.startswith("-")]
    if not args or len(rest) != 1 or any(o not in ("-s", "-t") for o in opts):
        _fail("svcadm", "usage (stand-in): svcadm enable|disable|restart|refresh|clear FMRI", 2)
    repo = _load()
    fmri = _fmri("svcadm", rest[0])
    entry = repo[fmri]
    verb = args[0]
    if verb == "enable":
        if entry["state"] == "disabled":
            _start(entry)
    elif verb == "disable":
        entry["state"] = "disabled"
    elif verb == "restart":
        if entry["state"] == "online":
            _start(entry)
    elif verb == "clear":
        if entry["state"] == "maintenance":
            _start(entry)
    elif verb != "refresh":
        _fail("svcadm", f"unknown subcommand '{verb}'", 2)
    _save(repo)


def svcs(args: list[str]) -> None:
    if args[:3] != ["-H", "-o", "state"] or len(args) != 4:
        _fail("svcs", "usage (stand-in): svcs -H -o state FMRI", 2)
    print(_load()[_fmri("svcs", args[3])]["state"])


_META = re.compile(r"""([;&()|^<>\n \t\\"'`])""")


def _quote(value: str) -> str:
    return '""' if value == "" else _META.sub(r"\\\1", value)


def svcprop(args: list[str]) -> None:
    if len(args) != 3 or args[0] != "-p":
        _fail("svcprop", "usage (stand-in): svcprop -p PG[/PROP] FMRI", 2)
    props: dict[str, list[str]] = _load()[_fmri("svcprop", args[2])]["props"]  # type: ignore[assignment]
    want = args[1]
    if "/" in want:
        if want not in props:
            _fail("svcprop", f"Couldn't find property '{want}' for instance '{args[2]}'.")
        print(_quote(props[want][1]))
        return
    rows = [(k, v) for k, v in props.items() if k.split("/")[0] == want]
    if not rows:
        _fail("svcprop", f"Couldn't find property group '{want}' for instance '{args[2]}'.")
    for key, (ptype, value) in rows:
        print(f"{key} {ptype} {_quote(value)}")


def main(cmd: str) -> None:
    if not DIR:
        _fail(cmd, "DTAGENT_FAKE_SMF is not set (stand-in)")
    with open(os.path.join(DIR, "calls.log"), "a", encoding="utf-8") as fh:
        fh.write(" ".join([cmd, *sys.argv[1:]]) + "\n")
    {"svccfg": svccfg, "svcadm": svcadm, "svcs": svcs, "svcprop": svcprop}[cmd](sys.argv[1:])
