"""Reading and changing a zone's caps on the host: the only control code that runs commands.

Every command goes through the agent's :class:`~dtagent.sources.commands.CommandRunner`
(``run_now``: argv lists, a timeout that kills the whole process group, bounded output, never a
shell). Two platforms:

* SmartOS (``vmadm`` on the command path): ``vmadm lookup -j -o ...`` lists every zone
  with its configured caps in one fork; ``vmadm update UUID`` takes the change as JSON on
  stdin and changes both the persistent config and the live rctls (smartos-live
  src/vm/man/vmadm.8.md "update"; src/vm/node_modules/VM.js applies each rctl with
  ``prctl -n RCTL -v V -t privileged -r -i zone ZONENAME`` and only *warns* when that
  fails, so a vmadm success proves nothing about the live value).
* illumos without vmadm: ``zoneadm list -cp`` for the zones, ``prctl`` for the live
  value (the same argv VM.js uses, with its retry as ``-s`` when there is no privileged
  value to replace, and ``-x`` to remove a cpu-cap) and ``zonecfg -z ZONE`` for the
  persistent one (zonecfg(8): ``set cpu-shares=``, ``set max-lwps=``, the
  ``capped-cpu`` ``ncpus`` and ``capped-memory`` ``physical``/``swap``/``locked``
  resources).

Both read the live values back with ``prctl -P -t privileged -i zone ZONENAME``
(illumos-gate usr/src/cmd/prctl/prctl.c print_rctls: ``RCTL usage N - - -`` and ``RCTL
privileged N FLAG ACTION PID``, raw numbers). prctl works through a process of the zone
(prctl.c grab_process_by_id), so a running zone with no process cannot be read or
changed live: that is reported, never guessed.

The dataset quota is ``zfs set quota=NG DATASET`` / ``zfs get -Hp -o value quota DATASET``
(zfs(8); 0 is none) on the zone's dataset: vmadm's ``zfs_filesystem``, or off SmartOS the
file system mounted at the zonepath (``zfs list -H -o name,mountpoint -t filesystem
ZONEPATH``, as zoneadm finds it); a VNIC's cap ``dladm set-linkprop -t -z ZONE -p maxbw=NM LINK`` /
``dladm reset-linkprop -t -z ZONE -p maxbw LINK``, read with ``dladm show-linkprop -z ZONE
-c -o link,value -p maxbw`` (dladm(8); ``-t`` because SmartOS re-creates a zone's VNICs
at every boot: vmadm has no maxbw property, so the cap does not survive a zone reboot).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from dtagent.control.properties import GIB, PROPERTIES, RCTL_PROPERTIES
from dtagent.parsers.network import parse_maxbw
from dtagent.parsers.zones import parse_zoneadm_list
from dtagent.snapshot import CommandResult

VMADM_FIELDS = (
    "uuid",
    "zonename",
    "alias",
    "brand",
    "state",
    "tags",
    "customer_metadata",
    "zfs_filesystem",
    "nics",
    "cpu_cap",
    "cpu_shares",
    "max_physical_memory",
    "max_swap",
    "max_locked_memory",
    "max_lwps",
    "zfs_io_priority",
)
RCTL_KEYS: dict[str, str] = {p.rctl: p.name for p in RCTL_PROPERTIES if p.rctl is not None}
# prctl's message for a zone it finds no process of (prctl.c grab_process_by_id).
NO_PROCESS = "No controllable process found"


class Runner(Protocol):
    """What the control wing needs of the command source: one bounded run, now."""

    def run_now(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        name: str = "",
        stdin: bytes | None = None,
    ) -> CommandResult: ...


class PlatformError(Exception):
    """A command the control wing needs failed (the message says which and why)."""


@dataclass
class ZoneCaps:
    """One zone's identity and caps. Values are in the units of
    :mod:`dtagent.control.properties`; None: not set (no cap) or not known."""

    zonename: str
    uuid: str = ""
    alias: str = ""
    brand: str = ""
    state: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    customer_metadata: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    zonepath: str = ""  # off SmartOS: where the zone's dataset is found
    no_dataset: str = ""  # why the zone has no dataset a quota could go on
    links: tuple[str, ...] = ()
    configured: dict[str, int | None] = field(default_factory=dict)
    live: dict[str, int | None] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    live_known: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    def current(self, key: str) -> int | None:
        """The value in effect: live when known, else configured."""
        if key in self.live:
            return self.live[key]
        return self.configured.get(key)

    def values(self) -> dict[str, int | None]:
        keys = (
            [p.name for p in RCTL_PROPERTIES] + ["quota"] + [f"maxbw.{link}" for link in self.links]
        )
        return {k: self.current(k) for k in keys}

    def to_json(self) -> dict[str, object]:
        return {
            "zonename": self.zonename,
            "uuid": self.uuid,
            "alias": self.alias,
            "brand": self.brand,
            "state": self.state,
            "caps": self.values(),
            "configured": dict(self.configured),
            "usage": dict(self.usage),
            "problems": list(self.problems),
        }


def _describe(r: CommandResult) -> str:
    what = " ".join(r.argv[:2])
    if r.error:
        return f"{what}: {r.error}"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    # prctl prints its usage after the reason of a usage error (prctl.c usage()): the
    # reason is the last line that names the program
    named = [ln for ln in lines if ln.startswith(f"{r.argv[0]}:")]
    line = (named or lines or ["no message"])[-1]
    return f"{what}: exit {r.returncode}: {line[:200]}"


def parse_prctl(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """``prctl -P -t privileged -i zone Z`` → (privileged values, usage) by rctl name."""
    values: dict[str, int] = {}
    usage: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or not parts[0].startswith("zone.") or not parts[2].isdigit():
            continue
        if parts[1] == "usage":
            usage[parts[0]] = int(parts[2])
        elif parts[1] == "privileged":
            values.setdefault(parts[0], int(parts[2]))
    return values, usage


def _to_unit(rctl: str, raw: int | None) -> int | None:
    if raw is None:
        return None
    prop = PROPERTIES[RCTL_KEYS[rctl]]
    return raw // prop.factor


def command_name(argv: Sequence[str]) -> str:
    """The ``command`` label of a control command's ``dtagent_command_*`` series: the
    wing's own (``control prctl set``), apart from the collectors' commands, whose runs
    and failures are counted by the same runner when ``serve`` shares it."""
    program = argv[0]
    if program == "prctl":
        what = "get" if "-P" in argv else "set"
    elif program == "zonecfg":
        what = "info" if argv[3:4] == ["info"] else "set"
    else:
        what = argv[1] if len(argv) > 1 else ""
    return f"control {program} {what}".rstrip()


def _wanted(keys: Collection[str] | None) -> set[str]:
    if keys is None:
        return {"rctl", "quota", "maxbw"}
    names = {k.partition(".")[0] for k in keys}
    out = {n for n in names if n in ("quota", "maxbw")}
    if names - out:
        out.add("rctl")
    return out


class Platform:
    """What the SmartOS and illumos platforms share: prctl, zfs and dladm."""

    name = "platform"
    # Properties this platform has no way to change: the reason, refused (422) before
    # any command runs.
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, runner: Runner, timeout: float = 30.0) -> None:
        self.runner = runner
        self.timeout = timeout

    def _run(self, argv: list[str], stdin: bytes | None = None) -> CommandResult:
        return self.runner.run_now(
            argv, timeout=self.timeout, stdin=stdin, name=command_name(argv)
        )

    def inventory(self) -> list[ZoneCaps]:
        raise NotImplementedError

    def read(self, zone: ZoneCaps, keys: Collection[str] | None = None) -> ZoneCaps:
        """The zone with its live values (prctl), quota (zfs) and maxbw (dladm) filled in;
        with ``keys``, only the commands those properties need run."""
        want = _wanted(keys)
        if zone.running and "rctl" in want:
            r = self._run(["prctl", "-P", "-t", "privileged", "-i", "zone", zone.zonename])
            if r.ok:
                values, usage = parse_prctl(r.stdout)
                for rctl, key in RCTL_KEYS.items():
                    zone.live[key] = _to_unit(rctl, values.get(rctl))
                zone.usage = usage
                zone.live_known = True
            else:
                zone.problems.append(f"live values unknown: {_describe(r)}")
        if zone.dataset and "quota" in want:
            r = self._run(["zfs", "get", "-Hp", "-o", "value", "quota", zone.dataset])
            text = r.stdout.strip()
            if r.ok and text.isdigit():
                zone.live["quota"] = int(text) // GIB
            else:
                zone.problems.append(f"quota unknown: {_describe(r)}")
        if zone.links and zone.running and "maxbw" in want:
            r = self._run(
                [
                    "dladm",
                    "show-linkprop",
                    "-z",
                    zone.zonename,
                    "-c",
                    "-o",
                    "link,value",
                    "-p",
                    "maxbw",
                ]
            )
            table = parse_maxbw(r.stdout) if r.ok else None
            if table is None or table.problems:
                zone.problems.append(f"maxbw unknown: {_describe(r)}")
            else:
                for link in zone.links:
                    bw = table.bw.get(link)
                    zone.live[f"maxbw.{link}"] = 0 if bw is None else bw // 1_000_000
        return zone

    def apply_rctls(self, zone: ZoneCaps, changes: dict[str, int]) -> list[str]:
        raise NotImplementedError

    def apply(self, zone: ZoneCaps, changes: dict[str, int]) -> list[str]:
        """Apply the changes; the problems met (empty when every command succeeded)."""
        problems = self.apply_rctls(
            zone, {k: v for k, v in changes.items() if k in RCTL_KEYS.values()}
        )
        if "quota" in changes:
            if not zone.dataset:
                problems.append(f"quota: {zone.no_dataset or 'the zone has no known dataset'}")
            else:
                q = changes["quota"]
                r = self._run(["zfs", "set", f"quota={q}G" if q else "quota=none", zone.dataset])
                if not r.ok:
                    problems.append(_describe(r))
        for key, value in changes.items():
            if not key.startswith("maxbw."):
                continue
            link = key.partition(".")[2]
            if value:
                argv = [
                    "dladm",
                    "set-linkprop",
                    "-t",
                    "-z",
                    zone.zonename,
                    "-p",
                    f"maxbw={value}M",
                    link,
                ]
            else:
                argv = ["dladm", "reset-linkprop", "-t", "-z", zone.zonename, "-p", "maxbw", link]
            r = self._run(argv)
            if not r.ok:
                problems.append(_describe(r))
        return problems

    def _prctl_set(self, zone: ZoneCaps, key: str, value: int) -> str | None:
        prop = PROPERTIES[key]
        assert prop.rctl is not None
        if key == "cpu_cap" and value == 0:
            # A cpu-cap of 0 cannot be set; vmadm removes the rctl instead (VM.js).
            r = self._run(
                ["prctl", "-n", prop.rctl, "-x", "-t", "privileged", "-i", "zone", zone.zonename]
            )
            if not r.ok and "no matching resource control" in r.stderr:
                return None
            return None if r.ok else _describe(r)
        argv = [
            "prctl",
            "-n",
            prop.rctl,
            "-v",
            str(value * prop.factor),
            "-t",
            "privileged",
            "-r",
            "-i",
            "zone",
            zone.zonename,
        ]
        r = self._run(argv)
        if not r.ok and "no matching resource control to replace" in r.stderr:
            argv[argv.index("-r")] = "-s"
            r = self._run(argv)
        return None if r.ok else _describe(r)


def _str_map(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


class SmartOS(Platform):
    name = "smartos"

    def inventory(self) -> list[ZoneCaps]:
        r = self._run(["vmadm", "lookup", "-j", "-o", ",".join(VMADM_FIELDS)])
        if not r.ok:
            raise PlatformError(_describe(r))
        try:
            vms = json.loads(r.stdout)
        except ValueError as exc:
            raise PlatformError(f"vmadm lookup: not JSON ({exc})") from None
        if not isinstance(vms, list):
            raise PlatformError("vmadm lookup: expected a JSON array")
        zones = []
        for vm in vms:
            if not isinstance(vm, dict) or not isinstance(vm.get("zonename"), str):
                continue
            raw_nics = vm.get("nics")
            nics: list[object] = raw_nics if isinstance(raw_nics, list) else []
            links = tuple(
                str(n["interface"])
                for n in nics
                if isinstance(n, dict) and isinstance(n.get("interface"), str)
            )
            configured: dict[str, int | None] = {}
            for p in RCTL_PROPERTIES:
                v = vm.get(p.name)
                configured[p.name] = v if isinstance(v, int) and not isinstance(v, bool) else None
            if configured.get("cpu_cap") is None:
                configured["cpu_cap"] = 0  # vmadm leaves cpu_cap out when there is no cap
            zones.append(
                ZoneCaps(
                    zonename=vm["zonename"],
                    uuid=str(vm.get("uuid", "")),
                    alias=str(vm.get("alias") or ""),
                    brand=str(vm.get("brand", "")),
                    state=str(vm.get("state", "")),
                    tags=_str_map(vm.get("tags")),
                    customer_metadata=_str_map(vm.get("customer_metadata")),
                    dataset=vm.get("zfs_filesystem")
                    if isinstance(vm.get("zfs_filesystem"), str)
                    else None,
                    links=links,
                    configured=configured,
                )
            )
        return zones

    def apply_rctls(self, zone: ZoneCaps, changes: dict[str, int]) -> list[str]:
        if not changes:
            return []
        payload = json.dumps(changes, sort_keys=True).encode()
        r = self._run(["vmadm", "update", zone.uuid], stdin=payload)
        return [] if r.ok else [_describe(r)]


_INFO_PROP = re.compile(r"^\s*\[([a-z-]+): ([^\]]*)\]\s*$")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)")


def _size_mib(text: str) -> int | None:
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        return None
    scale = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m[2]]
    return round(float(m[1]) * scale)


def parse_zonecfg_info(text: str) -> dict[str, int | None]:
    """``zonecfg -z Z info``: the caps it configures (zonecfg.c output_prop/pcap/mcap)."""
    out: dict[str, int | None] = {}
    resource = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            resource = line.rstrip(":") if line.endswith(":") else None
        m = _INFO_PROP.match(line)
        if m is None:
            continue
        prop, value = m[1], m[2]
        if resource is None and prop in ("cpu-shares", "max-lwps", "zfs-io-priority"):
            if value.isdigit():
                out[prop.replace("-", "_")] = int(value)
        elif resource == "capped-cpu" and prop == "ncpus":
            with contextlib.suppress(ValueError):
                out["cpu_cap"] = round(float(value) * 100)
        elif resource == "capped-memory":
            key = {
                "physical": "max_physical_memory",
                "swap": "max_swap",
                "locked": "max_locked_memory",
            }.get(prop)
            if key:
                out[key] = _size_mib(value)
    out.setdefault("cpu_cap", 0)
    return out


class Illumos(Platform):
    name = "illumos"
    # illumos-gate's zone_init (usr/src/uts/common/os/zone.c) registers no
    # zone.max-physical-memory (illumos-joyent's does): a zone's physical-memory cap is
    # zonecfg's capped-memory "physical", which the kernel keeps as ZONE_ATTR_PHYS_MCAP
    # (zone.c zone_set_phys_mcap) and rcapd enforces by paging the zone out
    # (usr/src/cmd/rcap/rcapd/rcapd_collection_zone.c reads it with zone_getattr), so
    # prctl can neither set nor read it.
    unsupported: ClassVar[dict[str, str]] = {
        "max_physical_memory": (
            "max_physical_memory cannot be changed on illumos without vmadm: there is no "
            "zone.max-physical-memory resource control; the cap is zonecfg's capped-memory "
            "physical, enforced by rcapd (set it with zonecfg and rcapadm -z)"
        )
    }

    def inventory(self) -> list[ZoneCaps]:
        r = self._run(["zoneadm", "list", "-cp"])
        if not r.ok:
            raise PlatformError(_describe(r))
        zones = []
        for row in parse_zoneadm_list(r.stdout).rows:
            if row.zonename == "global":
                continue
            zones.append(
                ZoneCaps(
                    zonename=row.zonename,
                    uuid=row.uuid,
                    brand=row.brand,
                    state="running" if row.zoneid is not None else row.state,
                    zonepath=row.zonepath,
                )
            )
        return zones

    def read(self, zone: ZoneCaps, keys: Collection[str] | None = None) -> ZoneCaps:
        want = _wanted(keys)
        if "rctl" in want:
            r = self._run(["zonecfg", "-z", zone.zonename, "info"])
            if r.ok:
                zone.configured = parse_zonecfg_info(r.stdout)
            else:
                zone.problems.append(f"configuration unknown: {_describe(r)}")
        if "quota" in want and zone.dataset is None and zone.zonepath:
            zone.dataset = self._zonepath_dataset(zone)
        super().read(zone, keys)
        # no rctl to read it live (see unsupported): the cap is what zonecfg configures
        zone.live.pop("max_physical_memory", None)
        return zone

    def _zonepath_dataset(self, zone: ZoneCaps) -> str | None:
        """The ZFS file system mounted at the zonepath, as zoneadm finds it (illumos-gate
        usr/src/cmd/zoneadm/zfs.c mount2zhandle/match_mountpoint: the mounted file system
        whose mountpoint is the zonepath). ``zfs list`` takes a path and names the file
        system the path is in (zfs_main.c zfs_do_list ZFS_ITER_ARGS_CAN_BE_PATHS, libzfs
        zfs_path_to_zhandle); only when that one is mounted at the zonepath itself is it
        the zone's, else a quota would cap whatever holds the zonepath."""
        r = self._run(
            ["zfs", "list", "-H", "-o", "name,mountpoint", "-t", "filesystem", zone.zonepath]
        )
        fields = r.stdout.rstrip("\n").split("\t") if r.ok else []
        if len(fields) != 2:
            zone.no_dataset = f"no dataset for the zonepath {zone.zonepath}: {_describe(r)}"
        elif fields[1] != zone.zonepath:
            zone.no_dataset = (
                f"the zonepath {zone.zonepath} is not a ZFS file system of its own (it is "
                f"in {fields[0]}, mounted at {fields[1]}), so it can have no quota"
            )
        else:
            return fields[0]
        zone.problems.append(zone.no_dataset)
        return None

    def apply_rctls(self, zone: ZoneCaps, changes: dict[str, int]) -> list[str]:
        problems: list[str] = []
        no_process = False
        if zone.running:
            for key, value in changes.items():
                problem = self._prctl_set(zone, key, value)
                if problem:
                    problems.append(problem)
                    no_process = no_process or NO_PROCESS in problem
            if problems and not (no_process and all(NO_PROCESS in p for p in problems)):
                return problems  # the persistent config is left as it was
        script = self._zonecfg_script(zone, changes)
        if script:
            r = self._run(["zonecfg", "-z", zone.zonename, script])
            if not r.ok:
                problems.append(_describe(r))
            elif no_process:
                # prctl acts through a process of the zone (prctl.c grab_process_by_id):
                # with none, only the persistent value could be written.
                problems.append("zonecfg written: the value takes effect at the next boot")
        return problems

    @staticmethod
    def _zonecfg_script(zone: ZoneCaps, changes: dict[str, int]) -> str:
        cmds: list[str] = []
        for key in ("cpu_shares", "max_lwps", "zfs_io_priority"):
            if key in changes:
                cmds.append(f"set {key.replace('_', '-')}={changes[key]}")
        if "cpu_cap" in changes:
            had = bool(zone.configured.get("cpu_cap"))
            cap = changes["cpu_cap"]
            if cap == 0:
                if had:
                    cmds.append("remove capped-cpu")
            else:
                cmds += [
                    f"{'select' if had else 'add'} capped-cpu",
                    f"set ncpus={cap / 100:.2f}",
                    "end",
                ]
        mem = {"max_physical_memory": "physical", "max_swap": "swap", "max_locked_memory": "locked"}
        if any(k in changes for k in mem):
            had = any(zone.configured.get(k) is not None for k in mem)
            cmds.append(f"{'select' if had else 'add'} capped-memory")
            cmds += [f"set {name}={changes[k]}m" for k, name in mem.items() if k in changes]
            cmds.append("end")
        return "; ".join(cmds)


def preflight_argvs(smartos: bool, dataset_root: str) -> list[tuple[str, ...]]:
    """Each command the control wing runs on this platform, as a call that changes
    nothing, for ``dtagent check``: present and answering. prctl reads the global zone,
    which always has a process to grab (prctl.c grab_process_by_id); ``zonecfg help`` is
    answered before any zone is looked at, and only in the global zone (illumos-gate
    usr/src/cmd/zonecfg/zonecfg.c main)."""
    common = [
        ("prctl", "-P", "-t", "privileged", "-i", "zone", "global"),
        ("zfs", "get", "-Hp", "-o", "value", "quota", dataset_root),
        ("dladm", "show-linkprop", "-c", "-o", "link,value", "-p", "maxbw"),
    ]
    if smartos:
        return [("vmadm", "lookup", "-j", "-o", ",".join(VMADM_FIELDS)), *common]
    return [("zoneadm", "list", "-cp"), ("zonecfg", "help"), *common]


def detect(runner: Runner, command_path: str | None, timeout: float = 30.0) -> Platform:
    """SmartOS when vmadm is on the command path, else plain illumos."""
    import shutil

    if shutil.which("vmadm", path=command_path) is not None:
        return SmartOS(runner, timeout)
    return Illumos(runner, timeout)
