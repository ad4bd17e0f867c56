"""``dtagent check``: a preflight report of everything the agent needs on this host.

Each check gives one :class:`Finding`: ``ok``, ``warn`` (works, but something is off),
``fail`` (something the agent needs is missing) or ``skip`` (does not apply here).
The exit status is 0 when nothing failed, 1 when something needed is missing, 2 when
the config is bad. install.sh runs it before it enables the service.

Other parts of the agent add their own checks (a web-config, a control policy) with
:func:`register`, so one command covers every input.
"""

from __future__ import annotations

import ctypes
import json
import platform
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from dtagent.config import Config, ConfigError, load
from dtagent.listen import parse_listen
from dtagent.parsers.network import MAXBW_ARGV, SHOW_FLOW_ARGV
from dtagent.parsers.zones import VMADM_ARGV, ZONEADM_ARGV, zfs_list_argv
from dtagent.sources.commands import execute, passed_env

Status = Literal["ok", "warn", "fail", "skip"]
EXIT_OK, EXIT_MISSING, EXIT_CONFIG = 0, 1, 2
FMRI = "svc:/application/dtagent:default"
# privileges(7): dtrace_kernel makes every probe in every zone visible; dtrace_proc and
# dtrace_user unlock the process variables (zonename, curpsinfo) the scripts read
# (illumos-gate usr/src/uts/common/dtrace/dtrace.c, dtrace_state_create).
DTRACE_PRIVILEGES = ("dtrace_kernel", "dtrace_proc", "dtrace_user")
COMMAND_TIMEOUT = 10.0
# the installed D library that holds the csinfo_t translator (illumos-gate
# usr/src/lib/libdtrace/common/ip.d.in)
IP_D = Path("/usr/lib/dtrace/ip.d")


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str


Check = Callable[[Config], list[Finding]]
_registered: list[Check] = []


def register(check: Check) -> Check:
    """Add a check (e.g. a web-config or policy validator) to every ``dtagent check``."""
    _registered.append(check)
    return check


# ------------------------------------------------------------------ checks


def check_platform(config: Config) -> list[Finding]:
    system = platform.system()
    if system == "SunOS":
        version = platform.version()
        flavour = "SmartOS" if version.startswith("joyent_") else "illumos"
        return [Finding("platform", "ok", f"{flavour}: SunOS {platform.release()} {version}")]
    if config.get("sources", "platform") == "illumos":
        return [Finding("platform", "warn", f"{system}, not illumos: sources.platform = "
                        "'illumos' uses the libraries and commands configured (stand-ins)")]
    return [Finding("platform", "fail", f"{system} {platform.release()}: the agent's kstat, "
                    "command and DTrace sources need illumos (SmartOS, OmniOS, ...)")]


def held_privileges(names: Sequence[str]) -> dict[str, bool]:
    """Which of ``names`` are in this process's effective set, through getppriv(2) and
    priv_ismember(3C) of the process's libc. Raises OSError where they do not exist."""
    libc = ctypes.CDLL(None)
    try:
        allocset, getppriv = libc.priv_allocset, libc.getppriv
        ismember, freeset = libc.priv_ismember, libc.priv_freeset
    except AttributeError:
        raise OSError("this libc has no getppriv/priv_ismember (not illumos)") from None
    allocset.restype = ctypes.c_void_p
    allocset.argtypes = []
    getppriv.restype = ctypes.c_int
    getppriv.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    ismember.restype = ctypes.c_int  # boolean_t
    ismember.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    freeset.restype = None
    freeset.argtypes = [ctypes.c_void_p]
    pset = allocset()
    if not pset:
        raise OSError("priv_allocset failed")
    try:
        # PRIV_EFFECTIVE is "Effective" (illumos-gate usr/src/uts/common/sys/priv_names.h)
        if getppriv(b"Effective", pset) != 0:
            raise OSError(ctypes.get_errno(), "getppriv failed")
        return {n: bool(ismember(pset, n.encode())) for n in names}
    finally:
        freeset(pset)


def _dtrace_wanted(config: Config) -> bool:
    return bool(config.get("dtrace", "enabled"))


def check_privileges(config: Config) -> list[Finding]:
    if not _dtrace_wanted(config):
        return [Finding("privileges", "skip", "dtrace.enabled = false: none beyond basic")]
    try:
        held = held_privileges(DTRACE_PRIVILEGES)
    except OSError as exc:
        return [Finding("privileges", "fail", f"cannot read this process's privileges: {exc}")]
    missing = [n for n, ok in held.items() if not ok]
    if missing:
        return [Finding("privileges", "fail", "missing " + ", ".join(missing) + ": the D "
                        "scripts cannot run (the SMF manifest grants them; as a user: pfexec "
                        "or root)")]
    return [Finding("privileges", "ok", "held: " + ", ".join(DTRACE_PRIVILEGES))]


def check_libkstat(config: Config) -> list[Finding]:
    from dtagent.sources.libkstat import KstatError, Libkstat

    name = config.get("sources", "libkstat")
    try:
        lib = Libkstat(name)
        lib.close(lib.open())
    except (KstatError, OSError) as exc:
        return [Finding("libkstat", "fail", f"{name}: {exc}")]
    return [Finding("libkstat", "ok", f"{lib.path}: kstat_open works")]


def check_dtrace(config: Config) -> list[Finding]:
    if not _dtrace_wanted(config):
        return [Finding("libdtrace", "skip", "dtrace.enabled = false")]
    from dtagent.dtrace.libdtrace import DTraceError
    from dtagent.dtrace.spec import SpecError, enabled_scripts, load_scripts, script_dirs
    from dtagent.dtrace.worker import check_scripts

    errors: list[SpecError] = []
    specs = load_scripts(script_dirs(config.get("dtrace", "script_dirs")), errors)
    out = [Finding("dtrace:spec", "fail", f"not loaded: {err}") for err in errors]
    running = enabled_scripts(specs, config.get("dtrace", "scripts"))
    lib = config.get("dtrace", "libdtrace")
    try:
        results = check_scripts(lib, running)
    except (OSError, DTraceError) as exc:
        return [*out, Finding("libdtrace", "fail", f"{lib}: {exc} (DTrace needs illumos and "
                              "the dtrace_kernel privilege)")]
    out.insert(0, Finding("libdtrace", "ok", f"{lib}: dtrace_open works"))
    by_name = {s.name: s for s in running}
    for name, problem in results:
        if problem is not None:
            out.append(Finding(f"dtrace:{name}", "fail", f"does not compile: {problem} "
                               f"(turn it off with dtrace.scripts.{name} = false)"))
            continue
        spec = by_name[name]
        status: Status = "ok"
        detail = "compiles"
        if spec.variants:
            detail += f"; variant: {spec.variant or 'default'} (also: {', '.join(spec.variants)})"
        if "cs_zoneid" in spec.source:
            status, note = _zone_attribution()
            detail += "; " + note
        out.append(Finding(f"dtrace:{name}", status, detail))
    return out


def _zone_attribution() -> tuple[Status, str]:
    """Whether this image's csinfo_t translator gives a connection's zone from its
    credential (ip.d mentions ixa_cred), which the default tcpconn script needs on
    exclusive IP stacks (docs/dtrace.md, "Which one applies")."""
    try:
        text = IP_D.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "ok", f"zone attribution: cannot tell here (no {IP_D})"
    if "ixa_cred" in text:
        return "ok", ("zone attribution: cs_zoneid from the connection's credential "
                      f"({IP_D} has it): right for exclusive-stack zones")
    return "warn", (f"zone attribution: {IP_D} predates zones from credentials, so "
                    "exclusive-stack zones' connects count as global: select the netstack "
                    "variant (docs/dtrace.md)")


def _commands(config: Config) -> list[tuple[tuple[str, ...], bool]]:
    """(argv, needed): the commands the enabled collectors run, as they run them."""
    root = config.collector_settings.get("zone_dataset", {}).get("root", "zones")
    # vmadm exists on SmartOS only; elsewhere zone metadata comes from zoneadm alone
    smartos = platform.system() != "SunOS" or platform.version().startswith("joyent_")
    return [
        (ZONEADM_ARGV, True),
        (VMADM_ARGV, smartos),
        (zfs_list_argv(root), True),
        (MAXBW_ARGV, True),
        (SHOW_FLOW_ARGV, True),
    ]


def _probe(config: Config, name: str, argv: Sequence[str], needed: bool = True) -> Finding:
    """Whether one command is on sources.command_path and answers, run as the agent runs
    it: one deadline for everything, LC_ALL=C, PATH and passed variables from the config."""
    path = config.get("sources", "command_path")
    env = passed_env(config.get("sources", "command_env"))()
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        return Finding(name, "fail" if needed else "warn",
                       f"{argv[0]} not found in sources.command_path ({path})")
    res = execute(argv, timeout=COMMAND_TIMEOUT, path=path, extra_env=env)
    if res.error is not None and res.returncode in (126, 127):
        return Finding(name, "fail", f"{exe}: {res.error}")
    if res.error is not None:
        return Finding(name, "fail", f"{' '.join(argv)}: {res.error}")
    if res.returncode != 0:
        message = res.stderr.strip().splitlines()
        return Finding(name, "fail", f"{' '.join(argv)}: exit {res.returncode}"
                       + (f": {message[-1]}" if message else ""))
    return Finding(name, "ok", f"{exe} answers ({len(res.stdout.splitlines())} lines)")


def check_commands(config: Config) -> list[Finding]:
    return [_probe(config, f"command:{argv[0]}", argv, needed)
            for argv, needed in _commands(config)]


def _web_config_tls(config: Config) -> bool:
    """Whether the web-config serves TLS; ConfigError for a bad one (serve exits 2)."""
    from dtagent.webconfig import WebConfigError, load_web_config

    try:
        return load_web_config(config.get("agent", "web_config") or None).tls is not None
    except WebConfigError as exc:
        raise ConfigError(str(exc)) from None


def check_web_config(config: Config) -> list[Finding]:
    """The web-config read and checked completely (certificates and keys included), as
    ``serve`` reads it at start and at a reload."""
    path = config.get("agent", "web_config")
    if not path:
        return [Finding("web-config", "skip", "agent.web_config not set: plain HTTP, no auth")]
    tls = _web_config_tls(config)
    return [Finding("web-config", "ok", f"{path}: " + ("TLS" if tls else "no TLS"))]


def _control_wanted(config: Config) -> bool:
    """The control wing is used: its API is on, or a policy is named for ``dtagent caps``."""
    return bool(config.get("control", "enabled") or config.get("control", "policy"))


def check_policy(config: Config) -> list[Finding]:
    """The control policy loaded and checked as ``serve`` and ``dtagent caps`` load it; a
    bad one is a configuration error (exit 2), like a bad config."""
    if not _control_wanted(config):
        return [Finding("policy", "skip", "control.enabled = false and no control.policy")]
    from dtagent.control.policy import PolicyError, load_policy
    from dtagent.control.serve import check_listener, load_serving_policy

    path = config.get("control", "policy")
    if not path:
        raise ConfigError("key 'control.policy': control.enabled = true needs a policy "
                          "(see docs/control.md)")
    serving = config.get("control", "enabled")
    try:
        # serving, a policy nobody can authenticate to is refused (ConfigError)
        policy = load_serving_policy(path) if serving else load_policy(path)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    if serving and check_listener(config, _web_config_tls(config)):
        return [Finding("policy", "warn", f"{path}: control.allow_plaintext_on_network: "
                        "tokens cross the network in clear text (serve TLS: "
                        "agent.web_config)")]
    return [Finding("policy", "ok", f"{path}: {len(policy.properties)} properties, "
                    f"{len(policy.rules)} rules, {len(policy.tokens)} tokens, "
                    f"{len(policy.clients)} client certificates")]


def check_control(config: Config) -> list[Finding]:
    """Each command the control wing would run here, present and answering. The wing
    uses vmadm when it is on the command path (dtagent.control.platform.detect), else
    zoneadm, zonecfg and prctl; on a SmartOS host vmadm must be there."""
    if not _control_wanted(config):
        return [Finding("control", "skip", "control.enabled = false and no control.policy")]
    from dtagent.control.platform import preflight_argvs

    path = config.get("sources", "command_path")
    has_vmadm = shutil.which("vmadm", path=path) is not None
    out = []
    if platform.system() == "SunOS" and platform.version().startswith("joyent_"):
        smartos = True
        if has_vmadm:
            out.append(Finding("control", "ok", "SmartOS: vmadm, prctl, zfs, dladm"))
        else:
            out.append(Finding("control", "fail", "SmartOS, but vmadm is not in "
                               f"sources.command_path ({path}): the control wing would "
                               "use zonecfg instead of vmadm update"))
    else:
        smartos = has_vmadm
        out.append(Finding("control", "ok", "vmadm in sources.command_path: vmadm, prctl, "
                           "zfs, dladm" if smartos else "no vmadm in sources.command_path: "
                           "zoneadm, zonecfg, prctl, zfs, dladm (illumos without vmadm)"))
    root = config.collector_settings.get("zone_dataset", {}).get("root", "zones")
    out += [_probe(config, f"control:{argv[0]}", argv) for argv in preflight_argvs(smartos, root)]
    return out


def check_listen(config: Config) -> list[Finding]:
    address = config.get("agent", "listen")
    host, port = parse_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return [Finding("listen", "fail", f"{address}: cannot listen there ({exc.strerror})")]
    scope = "loopback only: Prometheus elsewhere cannot scrape it" \
        if host in ("127.0.0.1", "::1", "localhost") else "free"
    return [Finding("listen", "warn" if scope.startswith("loopback") else "ok",
                    f"{address}: {scope}")]


def check_smf(config: Config) -> list[Finding]:
    svcs = shutil.which("svcs")
    if svcs is None:
        return [Finding("smf", "skip", "no svcs here: not under SMF")]
    try:
        res = subprocess.run([svcs, "-H", "-o", "state", FMRI], capture_output=True,
                             text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Finding("smf", "warn", f"svcs did not answer: {exc}")]
    state = res.stdout.strip()
    if res.returncode != 0 or not state:
        return [Finding("smf", "skip", f"{FMRI} is not imported (install.sh imports it)")]
    status: Status = "warn" if state in ("maintenance", "degraded") else "ok"
    hint = " (svcs -xv dtagent; svcadm clear dtagent)" if status == "warn" else ""
    return [Finding("smf", status, f"{FMRI} is {state}{hint}")]


CHECKS: dict[str, Check] = {
    "platform": check_platform,
    "web-config": check_web_config,
    "policy": check_policy,
    "privileges": check_privileges,
    "libkstat": check_libkstat,
    "dtrace": check_dtrace,
    "commands": check_commands,
    "control": check_control,
    "listen": check_listen,
    "smf": check_smf,
}


# ------------------------------------------------------------------ report


@dataclass
class Report:
    findings: list[Finding]
    exit_code: int

    def table(self) -> str:
        width = max([len(f.check) for f in self.findings] + [5])
        lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
        lines += [f"{f.check:<{width}}  {f.status.upper():<6}  {f.detail}" for f in self.findings]
        verdict = {EXIT_OK: "ready", EXIT_MISSING: "something needed is missing",
                   EXIT_CONFIG: "the config is bad"}[self.exit_code]
        lines.append(f"result: {verdict} (exit {self.exit_code})")
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        return json.dumps({"exit": self.exit_code,
                           "findings": [asdict(f) for f in self.findings]}, indent=1) + "\n"


def run(config_path: str | None, skip: Sequence[str] = ()) -> Report:
    """Every check, in order; a bad config stops after the platform check (exit 2)."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        findings = check_platform(load(None))
        findings.append(Finding("config", "fail", str(exc)))
        return Report(findings, EXIT_CONFIG)
    findings = [Finding("config", "ok", config_path or "defaults (no --config)")]
    for name, check in [*CHECKS.items(), *((c.__name__, c) for c in _registered)]:
        if name in skip:
            findings.append(Finding(name, "skip", "skipped (--skip)"))
            continue
        try:
            findings.extend(check(config))
        except ConfigError as exc:
            findings.append(Finding(name, "fail", str(exc)))
            return Report(findings, EXIT_CONFIG)
    failed = any(f.status == "fail" for f in findings)
    return Report(findings, EXIT_MISSING if failed else EXIT_OK)
