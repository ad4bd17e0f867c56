"""The control wing driven through the stateful stand-in host (tests/fakebin, host mode):
real commands run by the real CommandRunner, the state file shows what changed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from dtagent.cli import main
from dtagent.config import load
from dtagent.control.audit import AuditLog
from dtagent.control.cli import build_service
from dtagent.control.policy import (
    PolicyError,
    ZoneInfo,
    check_change,
    hash_token,
    load_policy,
)
from dtagent.control.service import ControlService, Requester
from tests.control_host import DB, FAKEBIN, GIB, IDLE, MIB, OTHER, POLICY, WEB, Host
from tests.helpers import stand_in_runner

ME = Requester("test", "cli")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI points structlog at the stderr of its test; later tests must not log there."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(tmp_path)
    for k, v in h.env().items():
        monkeypatch.setenv(k, v)
    return h


def service(
    host: Host, policy: str = POLICY, audit: Path | None = None, extra: str = ""
) -> ControlService:
    cfg = host.write_config(host.write_policy(policy), audit, extra)
    svc: ControlService = build_service(load(cfg))
    return svc


def updates(host: Host) -> list[list[str]]:
    return [
        c
        for c in host.commands()
        if c[:2] in (["vmadm", "update"], ["zfs", "set"])
        or c[:2] == ["dladm", "set-linkprop"]
        or "-v" in c
        or "-x" in c
    ]


# --- applying and reading back --------------------------------------------------------


def test_change_is_applied_read_back_and_audited_twice(host: Host) -> None:
    svc = service(host)
    out = svc.change(
        "web-1", {"cpu_cap": 300, "maxbw.net0": 100, "quota": 20}, ME, reason="ticket 7"
    )
    assert (out.status, out.result) == (200, "applied"), out.reason
    assert out.before == {"cpu_cap": 200, "maxbw.net0": 0, "quota": 10}
    state = host.load()["zones"][WEB]
    assert state["config"]["cpu_cap"] == 300 and state["rctls"]["zone.cpu-cap"] == 300
    assert state["links"]["net0"]["maxbw"] == 100_000_000
    assert host.load()["datasets"][f"zones/{WEB}"]["quota"] == 20 * GIB
    update = next(c for c in host.commands() if c[:2] == ["vmadm", "update"])
    assert update == ["vmadm", "update", WEB]  # the payload went on stdin, not argv
    records = list(svc.audit.records())
    assert [r["phase"] for r in records] == ["request", "done"]
    assert records[0]["result"] == "pending" and records[1]["result"] == "applied"
    assert records[1]["after"] == {"cpu_cap": 300, "maxbw.net0": 100, "quota": 20}
    assert records[0]["reason"] == "ticket 7" and records[0]["id"] == out.id
    assert svc.counters.snapshot() == {"applied": 1}


def test_memory_moves_swap_and_locked_as_vmadm_does_and_the_audit_says_so(host: Host) -> None:
    svc = service(host)
    out = svc.change("web-1", {"max_physical_memory": 2048}, ME)
    assert out.result == "applied", out.reason
    cfg = host.load()["zones"][WEB]["config"]
    # VM.js keeps the old deltas: swap 2048-1024 above, locked 1024-1024 below.
    assert (cfg["max_swap"], cfg["max_locked_memory"]) == (3072, 2048)
    done = next(r for r in svc.audit.records() if r["phase"] == "done")
    assert done["also_changed"] == {"max_swap": 3072, "max_locked_memory": 2048}


def test_vmadm_success_with_a_failed_live_prctl_is_a_failure(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTAGENT_FAKE_PRCTL_MODE", "failset")
    svc = service(host)
    out = svc.change("web-1", {"cpu_cap": 300}, ME)
    assert (out.status, out.result) == (500, "failed")
    assert out.differences == {"cpu_cap": {"asked": 300, "live": 200}}
    zone = host.load()["zones"][WEB]
    assert zone["config"]["cpu_cap"] == 300  # vmadm wrote the config and only warned
    assert zone["rctls"]["zone.cpu-cap"] == 200  # but the live cap did not move
    done = next(r for r in svc.audit.records() if r["phase"] == "done")
    assert done["result"] == "failed" and "not in effect" in done["problems"][0]
    assert svc.counters.snapshot() == {"failed": 1}


def test_a_zone_without_processes_cannot_be_verified_live(host: Host) -> None:
    out = service(host).change("idle-1", {"cpu_shares": 200}, ME)
    assert out.result == "failed"
    assert "No controllable process found" in out.reason


def test_unknown_zone_is_404_and_runs_nothing_that_changes(host: Host) -> None:
    svc = service(host)
    out = svc.change("no-such-zone", {"cpu_cap": 100}, ME)
    assert (out.status, out.result) == (404, "not_found")
    assert updates(host) == []
    assert next(iter(svc.audit.records()))["result"] == "refused"


def test_the_stand_ins_refuse_an_unknown_zone_like_the_real_commands(host: Host) -> None:
    runner = stand_in_runner()
    r = runner.run_now(
        ["vmadm", "update", "00000000-0000-0000-0000-000000000000"],
        timeout=10,
        stdin=b'{"cpu_cap": 100}',
    )
    assert r.returncode == 1 and "not found" in r.stderr
    r = runner.run_now(["vmadm", "update", "web-1"], timeout=10, stdin=b"{}")
    assert r.returncode == 2 and "Invalid or missing UUID" in r.stderr
    r = runner.run_now(["prctl", "-P", "-i", "zone", "nope"], timeout=10)
    assert r.returncode == 1 and r.stderr == "prctl: nope: unknown zone\n"
    r = runner.run_now(
        ["prctl", "-P", "-n", "zone.cpu-cap", "-v", "1", "-i", "zone", WEB], timeout=10
    )
    assert r.returncode == 2  # -P with an operation is a usage error (prctl.c)


def test_vmadm_raises_a_swap_below_memory_so_the_wing_refuses_it_first(host: Host) -> None:
    runner = stand_in_runner()
    r = runner.run_now(["vmadm", "update", WEB], timeout=10, stdin=b'{"max_swap": 512}')
    assert r.returncode == 0 and "raising to 1024" in r.stderr
    assert host.load()["zones"][WEB]["config"]["max_swap"] == 1024
    out = service(host).change("web-1", {"max_swap": 600}, ME)
    assert (out.status, out.result) == (422, "invalid")
    assert "must not be below max_physical_memory" in out.reason
    assert [c for c in host.commands() if c[:2] == ["vmadm", "update"]] == [
        ["vmadm", "update", WEB]  # only the direct call above
    ]


def test_a_hanging_command_is_killed_at_the_timeout_and_nothing_changes(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTAGENT_FAKE_ZFS_MODE", "hang")
    svc = service(host, extra="command_timeout = 1\n")
    out = svc.change("web-1", {"quota": 20}, ME)  # the stand-in zfs never ends by itself
    assert out.result == "failed" and "timed out" in out.reason
    assert host.load()["datasets"][f"zones/{WEB}"]["quota"] == 10 * GIB


def test_a_quota_below_what_the_dataset_uses_is_refused_by_zfs_and_said_so(host: Host) -> None:
    """ZFS refuses a quota under the space used (dsl_dir_set_quota_check: ENOSPC, which
    libzfs zfs_setprop_error words "size is less than current used or reserved space"):
    the change fails with zfs' reason, the quota stays as it was."""
    state = host.load()
    state["datasets"][f"zones/{WEB}"]["used"] = 6 * GIB
    host.save(state)
    out = service(host).change("web-1", {"quota": 5}, ME)
    assert out.result == "failed"
    assert (
        f"zfs set: exit 1: cannot set property for 'zones/{WEB}': size is less than current "
        "used or reserved space" in out.reason
    )
    assert (out.before, out.after) == ({"quota": 10}, {"quota": 10})
    assert host.load()["datasets"][f"zones/{WEB}"]["quota"] == 10 * GIB
    # below the dataset's reservation too (dd_reserved), though above what it uses
    state = host.load()
    state["datasets"][f"zones/{WEB}"].update(used=1 * GIB, reservation=8 * GIB)
    host.save(state)
    out = service(host).change("web-1", {"quota": 7}, ME)
    assert out.result == "failed" and "less than current used or reserved space" in out.reason
    assert host.load()["datasets"][f"zones/{WEB}"]["quota"] == 10 * GIB


def test_dry_run_audits_and_applies_nothing(host: Host) -> None:
    svc = service(host)
    out = svc.change("web-1", {"cpu_cap": 400}, ME, dry_run=True)
    assert (out.result, out.dry_run) == ("dry_run", True)
    assert updates(host) == []
    assert [r["result"] for r in svc.audit.records()] == ["dry_run"]


def test_revert_restores_the_before_values_through_the_policy(host: Host) -> None:
    svc = service(host)
    first = svc.change("web-1", {"cpu_cap": 400, "cpu_shares": 200}, ME)
    assert first.result == "applied", first.reason
    back = svc.revert(first.id, Requester("test", "revert"))
    assert back.result == "applied", back.reason
    cfg = host.load()["zones"][WEB]["config"]
    assert (cfg["cpu_cap"], cfg["cpu_shares"]) == (200, 100)
    assert svc.revert("c-nonexistent", ME).status == 404


def test_cpu_cap_zero_removes_the_rctl(host: Host) -> None:
    policy = POLICY.replace("cooldown_seconds = 0\n", "cooldown_seconds = 0\nallow_none = true\n")
    out = service(host, policy).change("web-1", {"cpu_cap": 0}, ME)
    assert out.result == "applied", out.reason
    assert "zone.cpu-cap" not in host.load()["zones"][WEB]["rctls"]


def test_the_stand_in_kernels_cpucaps_kstat_follows_the_live_cap(host: Host) -> None:
    """The stand-in host's kstat feed: cpucaps_zone_N carries the live zone.cpu-cap, is
    gone when the cap is removed and back when one is set (cpucaps.c creates it with the
    cap and deletes it without), rewritten by the very command that changed the cap."""
    from dtagent.simulate.model import make_host
    from tests.control_host import KernelFeed

    sim = make_host(1, 3, 1_790_000_000.0, 1.0, 60.0)
    web = sim.zones[0]
    state = host.load()
    state["zones"] = {web.uuid: dict(state["zones"][WEB], uuid=web.uuid, zoneid=web.zoneid)}
    state["datasets"] = {}
    host.save(state)
    feed = KernelFeed(host, sim)
    feed.write_frame()
    cpucaps = f"k\tcaps\t{web.zoneid}\tcpucaps_zone_{web.zoneid}\tzone_caps\t1"

    def block() -> list[str]:
        lines = feed.path.read_text().splitlines()
        if cpucaps not in lines:
            return []
        i = lines.index(cpucaps) + 1
        out = []
        while i < len(lines) and not lines[i].startswith("k\t"):
            out.append(lines[i])
            i += 1
        return out

    assert "u\tvalue\t200" in block() and "u\teffective\t200" in block()
    policy = POLICY.replace('aliases = ["web-*", "db-*", "idle-*"]', f'names = ["{web.uuid}"]')
    assert service(host, policy).change(web.uuid, {"cpu_cap": 300}, ME).result == "applied"
    assert "u\tvalue\t300" in block() and "u\teffective\t300" in block()
    assert any(line.startswith("u\tabove_sec\t") for line in block())  # the rest kept
    runner = stand_in_runner()
    prctl = ["prctl", "-n", "zone.cpu-cap", "-t", "privileged"]
    assert runner.run_now([*prctl, "-x", "-i", "zone", web.uuid], timeout=10).ok
    assert block() == []
    assert runner.run_now([*prctl, "-v", "150", "-s", "-i", "zone", web.uuid], timeout=10).ok
    assert "u\tvalue\t150" in block()
    feed.write_frame()  # the next simulated frame: the zone now runs under 150
    assert "u\tvalue\t150" in block() and any(x.startswith("u\tusage") for x in block())


def _illumos_bin(tmp_path: Path) -> Path:
    """The stand-ins of an illumos host without vmadm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("prctl", "zonecfg", "zoneadm", "zfs", "dladm", "_fakecmd.py", "_fakehost.py"):
        if not (bin_dir / name).exists():
            os.symlink(FAKEBIN / name, bin_dir / name)
    return bin_dir


def test_the_prctl_stand_in_prints_every_zone_operand_as_prctl_does(host: Host) -> None:
    """prctl.c main/print_rctls: one heading per operand, a blank line between them, only
    rctls with a value of the asked privilege (with their usage), a zone without a
    process named on stderr, the exit status of the last operand."""
    runner = stand_in_runner()
    argv = ["prctl", "-P", "-t", "privileged", "-i", "zone"]
    r = runner.run_now([*argv, DB, IDLE, WEB], timeout=10)
    assert r.returncode == 0  # the last operand's status
    assert r.stderr == f"prctl: {IDLE}: No controllable process found in task, project, or zone.\n"
    chunks = r.stdout.split("\n\n")
    assert [c.splitlines()[0] for c in chunks] == [f"zone: 6: {DB}", f"zone: 5: {WEB}"]
    db = chunks[0].splitlines()
    assert not any(line.startswith("zone.cpu-cap ") for line in db)  # no cap: not listed
    assert "zone.cpu-shares usage 0 - - -" in db
    assert "zone.cpu-shares privileged 100 - none -" in db
    assert "zone.max-lwps privileged 2000 - deny -" in db
    r = runner.run_now([*argv, WEB, IDLE], timeout=10)
    assert r.returncode == 1 and r.stdout.startswith(f"zone: 5: {WEB}\n")
    # print_rctls prints nothing, not even the heading, for a zone with no privileged
    # value; main still writes the blank line that separates operands
    state = host.load()
    state["zones"][DB]["rctls"] = {}
    host.save(state)
    r = runner.run_now([*argv, DB, WEB], timeout=10)
    assert r.ok and r.stdout.startswith(f"\nzone: 5: {WEB}\n") and DB not in r.stdout
    # a kernel without zone.zfs-io-priority (illumos-gate): never listed, not settable
    state = host.load()
    state["rctl_names"] = sorted(
        n for n in {r for z in state["zones"].values() for r in z["rctls"]}
        if n != "zone.zfs-io-priority"
    )
    host.save(state)
    r = runner.run_now([*argv, WEB], timeout=10)
    assert r.ok and "zone.zfs-io-priority" not in r.stdout and "zone.cpu-shares" in r.stdout
    r = runner.run_now(
        ["prctl", "-n", "zone.zfs-io-priority", "-v", "200", "-t", "privileged", "-r", "-i",
         "zone", WEB], timeout=10)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith(
        "prctl: failed to get resource control for zone.zfs-io-priority: Invalid argument\n"
        "usage:"
    )


def test_illumos_quota_goes_on_the_file_system_mounted_at_the_zonepath(
    host: Host, tmp_path: Path
) -> None:
    """Off SmartOS the zone's dataset is the one zoneadm would find: mounted at the
    zonepath. A zonepath that is only a directory of a larger file system gets no quota
    (it would cap that whole file system)."""
    state = host.load()
    state["zones"][WEB]["zonepath"] = f"/zones/{WEB}"
    state["zones"][DB]["zonepath"] = "/export/zones/db"
    state["datasets"]["rpool/export"] = {"quota": 0, "used": 5 * GIB, "mountpoint": "/export"}
    host.save(state)
    policy = POLICY.replace('aliases = ["web-*", "db-*", "idle-*"]', f'names = ["{WEB}", "{DB}"]')
    cfg = host.write_config(host.write_policy(policy))
    cfg.write_text(cfg.read_text().replace(str(FAKEBIN), str(_illumos_bin(tmp_path))))
    svc = build_service(load(cfg))
    assert svc.platform.name == "illumos"
    zone = svc.show(WEB)
    assert (zone.dataset, zone.current("quota")) == (f"zones/{WEB}", 10)
    out = svc.change(WEB, {"quota": 20}, ME)
    assert out.result == "applied", out.reason
    assert (out.before, out.after) == ({"quota": 10}, {"quota": 20})
    assert host.load()["datasets"][f"zones/{WEB}"]["quota"] == 20 * GIB
    ran = host.commands()
    lookup = ["zfs", "list", "-H", "-o", "name,mountpoint", "-t", "filesystem"]
    assert [*lookup, f"/zones/{WEB}"] in ran
    assert ["zfs", "set", "quota=20G", f"zones/{WEB}"] in ran
    assert ["zfs", "get", "-Hp", "-o", "value", "quota", f"zones/{WEB}"] in ran
    # DB's zonepath is a directory in rpool/export: refused before anything is set
    out = svc.change(DB, {"quota": 20}, ME)
    assert (out.status, out.result) == (422, "invalid")
    assert "/export/zones/db is not a ZFS file system of its own" in out.reason
    assert "rpool/export" in out.reason
    assert not [c for c in host.commands() if c[:2] == ["zfs", "set"] and DB in c[-1]]
    assert host.load()["datasets"]["rpool/export"]["quota"] == 0
    # illumos-gate has no zone.zfs-io-priority: prctl's reason, nothing configured
    state = host.load()
    state["rctl_names"] = ["zone.cpu-cap", "zone.cpu-shares", "zone.max-lwps"]
    host.save(state)
    out = svc.change(WEB, {"zfs_io_priority": 200}, ME)
    assert out.result == "failed"
    assert (
        "failed to get resource control for zone.zfs-io-priority: Invalid argument"
        in out.reason
    )
    assert "zfs-io-priority" not in host.load()["zones"][WEB].get("zonecfg", {})
    # nor does illumos-gate's zonecfg know the property (zonecfg_lex.l)
    done = stand_in_runner().run_now(["zonecfg", "-z", WEB, "set zfs-io-priority=200"],
                                     timeout=10)
    assert done.returncode == 1 and "zfs-io-priority" in done.stderr
    assert "zfs-io-priority" not in host.load()["zones"][WEB].get("zonecfg", {})


def test_zone_settings_off_smartos_come_from_one_prctl_for_all_running_zones(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without vmadm, cpu_shares, max_lwps and zfs_io_priority are the live values, read
    through the agent's command source with one prctl for every running zone; a zone
    without a process, and an rctl the kernel does not have, have no series."""
    from dtagent.runtime import build
    from dtagent.snapshot import Kstat
    from tests.native import build_shared
    from tests.native.kstat_stub import load_kstats, open_stub

    lib = open_stub()
    lib.stub_reset()
    zones = [(0, "global"), (5, WEB), (6, DB), (7, IDLE)]
    load_kstats(lib, [Kstat("zones", i, n[:30], "zone_misc", data={"zonename": n})
                      for i, n in zones])  # fmt: skip
    state = host.load()
    state["zones"][DB]["rctls"]["zone.cpu-shares"] = 300
    state["zones"][DB]["rctls"]["zone.max-lwps"] = 4000
    host.save(state)
    cfg = host.write_config(host.write_policy())
    cfg.write_text(
        '[collectors]\nenabled = ["zone_settings"]\n[dtrace]\nenabled = false\n'
        + cfg.read_text()
        .replace(str(FAKEBIN), str(_illumos_bin(tmp_path)))
        .replace(
            "[sources]\n",
            '[sources]\nplatform = "illumos"\n'
            f"libkstat = {json.dumps(str(build_shared('libkstat_stub.c')))}\n",
        )
    )

    def collect() -> dict[str, float]:
        runtime = build(load(cfg))
        try:
            runtime.agent.settle(10)
            out: dict[str, float] = {}
            for fam in runtime.agent.collect(fresh=True):
                for labels, value in fam.samples:
                    if fam.name.startswith("illumos_zone_"):
                        out[f"{fam.name} {labels[0]}"] = value
            return out
        finally:
            runtime.close()

    try:
        got = collect()
        assert got == {
            f"illumos_zone_cpu_shares {WEB}": 100,
            f"illumos_zone_cpu_shares {DB}": 300,
            f"illumos_zone_zfs_io_priority {WEB}": 100,
            f"illumos_zone_zfs_io_priority {DB}": 100,
            f"illumos_zone_lwps_cap {WEB}": 2000,
            f"illumos_zone_lwps_cap {DB}": 4000,
        }
        prctls = [c for c in host.commands() if c[0] == "prctl"]
        assert prctls == [["prctl", "-P", "-t", "privileged", "-i", "zone", WEB, DB, IDLE]]
        # illumos-gate: no zone.zfs-io-priority rctl, no series for it
        state = host.load()
        state["rctl_names"] = ["zone.cpu-cap", "zone.cpu-shares", "zone.max-lwps",
                               "zone.max-locked-memory", "zone.max-swap"]  # fmt: skip
        host.save(state)
        got = collect()
        assert not [k for k in got if "zfs_io_priority" in k]
        assert got[f"illumos_zone_cpu_shares {DB}"] == 300
    finally:
        lib.stub_reset()


def test_illumos_without_vmadm_uses_prctl_live_and_zonecfg(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _illumos_bin(tmp_path)
    state = host.load()
    state["zones"][WEB]["zonecfg"] = {"cpu-shares": 100, "capped-cpu": {"ncpus": 200}}
    host.save(state)
    # zoneadm knows no aliases: the policy names the zones.
    policy = POLICY.replace('aliases = ["web-*", "db-*", "idle-*"]', f'names = ["{WEB}", "{IDLE}"]')
    cfg = host.write_config(host.write_policy(policy))
    cfg.write_text(cfg.read_text().replace(str(FAKEBIN), str(bin_dir)))
    svc = build_service(load(cfg))
    assert svc.platform.name == "illumos"
    out = svc.change(WEB, {"cpu_cap": 300, "cpu_shares": 150, "max_swap": 4096}, ME)
    assert out.result == "applied", out.reason
    zone = host.load()["zones"][WEB]
    assert zone["rctls"]["zone.cpu-cap"] == 300 and zone["rctls"]["zone.cpu-shares"] == 150
    assert zone["rctls"]["zone.max-swap"] == 4096 * MIB
    assert zone["zonecfg"]["capped-cpu"] == {"ncpus": 300}
    assert zone["zonecfg"]["cpu-shares"] == 150
    assert zone["zonecfg"]["capped-memory"] == {"swap": 4096 * MIB}
    # illumos-gate has no zone.max-physical-memory rctl (zone.c zone_init; rcapd enforces
    # capped-memory physical): refused before any command runs, dry run or not
    ran = len(host.commands())
    for dry_run in (True, False):
        out = svc.change(WEB, {"max_physical_memory": 2048}, ME, dry_run=dry_run)
        assert (out.status, out.result) == (422, "invalid")
        assert "no zone.max-physical-memory resource control" in out.reason
        assert "rcapadm" in out.reason
    assert {c[0] for c in host.commands()[ran:]} == {"zoneadm"}  # the zone lookup only
    assert "physical" not in host.load()["zones"][WEB]["zonecfg"]["capped-memory"]
    # the cap in effect is the configured one (an illumos-gate kernel lists no such rctl)
    state = host.load()
    state["zones"][WEB]["zonecfg"]["capped-memory"]["physical"] = 1024 * MIB
    state["rctl_names"] = ["zone.cpu-cap", "zone.cpu-shares", "zone.max-locked-memory",
                           "zone.max-lwps", "zone.max-swap"]  # fmt: skip
    host.save(state)
    assert svc.show(WEB).current("max_physical_memory") == 1024
    # No process: prctl cannot set it live (a failure, said so), but the persistent
    # value is written for the next boot, as vmadm writes its config before prctl.
    out = svc.change(IDLE, {"cpu_shares": 150}, ME)
    assert out.result == "failed" and "No controllable process" in out.reason
    assert "takes effect at the next boot" in out.reason
    assert host.load()["zones"][IDLE]["zonecfg"]["cpu-shares"] == 150
    assert host.load()["zones"][IDLE]["rctls"]["zone.cpu-shares"] == 100
    # Any other prctl failure leaves the persistent config as it was.
    monkeypatch.setenv("DTAGENT_FAKE_PRCTL_MODE", "failset")
    out = svc.change(WEB, {"cpu_shares": 175}, ME)
    assert out.result == "failed" and "Not owner" in out.reason
    assert host.load()["zones"][WEB]["zonecfg"]["cpu-shares"] == 150


# --- policy ---------------------------------------------------------------------------


def _policy(tmp_path: Path, text: str, mode: int = 0o644, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[zones]\nnames = [1]\n", "key 'zones.names': expected a list of strings"),
        ("[limits]\nchanges_per_hour = -1\n", "key 'limits.changes_per_hour'"),
        ("[limits]\nbogus = 1\n", "key 'limits.bogus': unknown key"),
        ("[properties.cpu_cap]\nmin = 10\n", "key 'properties.cpu_cap.max': required"),
        (
            "[properties.cpu_cap]\nmin = 900\nmax = 800\n",
            "'properties.cpu_cap.min': expected at most",
        ),
        ("[properties.nope]\nmin = 1\nmax = 2\n", "key 'properties.nope': unknown key"),
        ("[properties.cpu_shares]\nmin = 0\nmax = 10\n", "'properties.cpu_shares.min'"),
        ("[properties.cpu_cap]\nmin = 1\nmax = 2\nmax_step_ratio = 0.5\n", "max_step_ratio"),
        ("[properties.max_lwps]\nmin = 1\nmax = 2\nallow_none = true\n", "no 'none' value"),
        (
            "[[rules]]\nalertname = 'A'\nproperty = 'cpu_cap'\nchange = '+5%'\n",
            "a property the policy allows",
        ),
        (
            "[properties.cpu_cap]\nmin = 1\nmax = 2\n[[rules]]\nalertname = 'A'\n"
            "property = 'cpu_cap'\nchange = 'double'\n",
            "key 'rules[0].change'",
        ),
        ("[[tokens]]\nid = 'x'\nsha256 = 'abc'\nscopes = ['read']\n", "key 'tokens[0].sha256'"),
        (
            "[[tokens]]\nid = 'x'\nsha256 = '" + "a" * 64 + "'\nscopes = ['root']\n",
            "key 'tokens[0].scopes'",
        ),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_policy_problems_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _policy(tmp_path, text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_policy_and_token_file_modes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="writable by group or others"):
        load_policy(_policy(tmp_path, "", 0o664))
    _policy(
        tmp_path,
        "[[tokens]]\nid = 'a'\nsha256 = '" + "b" * 64 + "'\nscopes = ['read']\n",
        0o644,
        "tokens.toml",
    )
    with pytest.raises(PolicyError, match=r"tokens.toml: readable by group or others"):
        load_policy(_policy(tmp_path, "tokens_file = 'tokens.toml'\n"))
    (tmp_path / "tokens.toml").chmod(0o600)
    policy = load_policy(_policy(tmp_path, "tokens_file = 'tokens.toml'\n"))
    assert [t.id for t in policy.tokens] == ["a"]


def test_a_bad_policy_is_exit_2_from_the_cli(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = host.write_config(host.write_policy("[limits]\nconcurrent = 0\n"))
    assert main(["caps", "set", "web-1", "cpu_cap=300", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "policy error" in err and "key 'limits.concurrent'" in err


RULES = """
[zones]
names = ["z1"]
aliases = ["web-*"]
tags = { role = "db", tier = "1" }

[properties.cpu_cap]
min = 100
max = 800
max_step_ratio = 2.0
cooldown_seconds = 600
"""


@pytest.mark.parametrize(
    ("zone", "allowed"),
    [
        (ZoneInfo("z1"), True),
        (ZoneInfo("z2"), False),
        (ZoneInfo("z2", alias="web-7"), True),
        (ZoneInfo("z2", alias="webby"), False),
        (ZoneInfo("z2", tags={"role": "db", "tier": "1"}), True),
        (ZoneInfo("z2", tags={"role": "db"}), False),  # every tag must match
    ],
)
def test_zones_by_name_alias_glob_and_tags(tmp_path: Path, zone: ZoneInfo, allowed: bool) -> None:
    policy = load_policy(_policy(tmp_path, RULES))
    refusal = check_change(policy, zone, "cpu_cap", 200, 300, None)
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize(
    ("before", "asked", "age", "status"),
    [
        (200, 100, None, None),  # at the minimum
        (200, 99, None, 422),  # below it
        (400, 800, None, None),  # at the maximum, and a step of exactly ×2
        (400, 801, None, 422),  # above it
        (300, 601, None, 422),  # a step just over ×2 up
        (400, 200, None, None),  # ÷2 down exactly
        (401, 200, None, 422),  # just over ÷2
        (200, 300, 600.0, None),  # cooldown just over
        (200, 300, 599.0, 409),  # still cooling down
        (200, 0, None, 422),  # removing the cap is not allowed by default
        (None, 300, None, None),  # no cap before: no step to measure
    ],
)
def test_bounds_steps_and_cooldown_at_and_across_their_edges(
    tmp_path: Path, before: int | None, asked: int, age: float | None, status: int | None
) -> None:
    policy = load_policy(_policy(tmp_path, RULES))
    refusal = check_change(policy, ZoneInfo("z1"), "cpu_cap", before, asked, age)
    assert (None if refusal is None else refusal.status) == status


def test_a_property_the_policy_does_not_name_is_forbidden(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, RULES))
    refusal = check_change(policy, ZoneInfo("z1"), "cpu_shares", 100, 200, None)
    assert refusal is not None and refusal.status == 403


def test_cooldown_and_hourly_limit_come_from_the_audit_log(host: Host) -> None:
    policy = POLICY.replace("changes_per_hour = 50", "changes_per_hour = 2").replace(
        "max = 1000\n", "max = 1000\ncooldown_seconds = 3600\n", 1
    )
    svc = service(host, policy)
    assert svc.change("web-1", {"cpu_shares": 200}, ME).result == "applied"
    # Another service (another process, say the CLI) sees the cooldown in the log.
    again = service(host, policy).change("web-1", {"cpu_shares": 300}, ME)
    assert (again.status, again.result) == (409, "refused") and "cooldown" in again.reason
    assert svc.change("db-1", {"cpu_shares": 200}, ME).result == "applied"
    third = svc.change("web-1", {"max_lwps": 3000}, ME)
    assert (third.status, third.result) == (429, "refused") and "last hour" in third.reason
    assert host.load()["zones"][WEB]["config"]["max_lwps"] == 2000


def test_the_concurrency_limit_refuses_with_429(host: Host) -> None:
    svc = service(host)
    for _ in range(svc.policy.concurrent):
        assert svc._slots.acquire(blocking=False)
    out = svc.change("web-1", {"cpu_shares": 200}, ME)
    assert (out.status, out.result) == (429, "refused")
    assert updates(host) == []


def test_zones_outside_the_policy_are_refused_and_audited(host: Host) -> None:
    svc = service(host)
    out = svc.change("other-1", {"cpu_cap": 300}, ME)
    assert (out.status, out.result) == (403, "refused")
    assert updates(host) == [] and svc.counters.snapshot() == {"refused": 1}


# --- audit ----------------------------------------------------------------------------


def test_a_full_disk_refuses_the_action_and_applies_nothing(host: Host) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to inject ENOSPC")
    audit = host.dir / "audit.log"
    audit.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    svc = service(host, audit=audit)
    out = svc.change("web-1", {"cpu_cap": 300}, ME)
    assert (out.status, out.result) == (503, "unaudited")
    assert "No space left on device" in out.reason
    assert updates(host) == []
    assert host.load()["zones"][WEB]["config"]["cpu_cap"] == 200
    assert svc.counters.snapshot() == {"unaudited": 1}


def test_an_audit_log_that_cannot_be_opened_refuses_the_action(host: Host, tmp_path: Path) -> None:
    out = service(host, audit=tmp_path / "missing-dir" / "audit.log").change(
        "web-1", {"cpu_cap": 300}, ME
    )
    assert out.status == 503 and updates(host) == []


def test_the_audit_log_rotates_by_size_and_is_read_across_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", max_bytes=200, keep=2)
    for i in range(12):
        log.write({"n": i, "pad": "x" * 40})
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert names == ["a.log", "a.log.1", "a.log.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    seen = [r["n"] for r in log.records(generations=2)]
    assert seen == sorted(seen) and seen[-1] == 11
    assert (tmp_path / "a.log").stat().st_mode & 0o077 == 0


# --- CLI ------------------------------------------------------------------------------


def test_cli_show_set_and_revert(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(host.write_config(host.write_policy()))
    assert main(["caps", "show", "web-1", "--json", "--config", cfg]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["zonename"] == WEB and shown["caps"]["cpu_cap"] == 200
    assert shown["usage"]["zone.max-lwps"] == 120
    assert (
        main(["caps", "set", "web-1", "cpu_cap=250", "--reason", "load", "--json", "--config", cfg])
        == 0
    )
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["result"] == "applied" and outcome["after"]["cpu_cap"] == 250
    assert main(["caps", "revert", outcome["id"], "--config", cfg]) == 0
    assert host.load()["zones"][WEB]["config"]["cpu_cap"] == 200
    assert main(["caps", "set", "web-1", "cpu_cap=lots", "--config", cfg]) == 2
    assert "expected a whole number" in capsys.readouterr().err
    assert main(["caps", "set", "web-1", "nonsense", "--config", cfg]) == 2
    assert main(["caps", "show", "db-1", "--config", cfg]) == 0
    assert DB in capsys.readouterr().out
    assert main(["caps", "show", "nope", "--config", cfg]) == 1


def test_cli_token_prints_a_tokens_entry_the_policy_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["caps", "token", "am", "--scope", "alertmanager"]) == 0
    captured = capsys.readouterr()
    token = captured.err.strip().rsplit(" ", 1)[1]
    policy = load_policy(_policy(tmp_path, captured.out))
    found = policy.token(token)
    assert found is not None and found.id == "am" and found.scopes == {"alertmanager"}
    assert found.sha256 == hash_token(token) and policy.token(token + "x") is None


def test_the_stand_in_commands_keep_their_read_only_behaviour_without_host_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DTAGENT_FAKE_HOST", raising=False)
    vms = tmp_path / "vms.json"
    vms.write_text(
        json.dumps(
            [{"uuid": OTHER, "state": "running", "brand": "joyent", "image_uuid": "", "alias": "x"}]
        )
    )
    monkeypatch.setenv("DTAGENT_FAKE_VMS", str(vms))
    r = stand_in_runner().run_now(["vmadm", "list", "-p", "-o", "uuid,alias"], timeout=10)
    assert r.stdout == f"{OTHER}:x\n"
    assert shutil.which("prctl", path=str(FAKEBIN)) is not None


# --- every settable property is a metric ----------------------------------------------


def test_cpu_shares_and_zfs_io_priority_are_exported_from_vmadm(host: Host) -> None:
    from dtagent.collectors.zone_settings import ZoneSettingsCollector
    from tests.helpers import collected

    runner = stand_in_runner()
    state = host.load()
    state["zones"][WEB]["config"].update(cpu_shares=250, zfs_io_priority=300)
    host.save(state)
    samples = collected(ZoneSettingsCollector(), [], runner)
    assert samples[("illumos_zone_cpu_shares", (WEB,))] == 250
    assert samples[("illumos_zone_zfs_io_priority", (WEB,))] == 300
    assert samples[("illumos_zone_cpu_shares", (DB,))] == 100
    assert samples[("illumos_zone_lwps_cap", (WEB,))] == 2000
    # Cached: a second scrape within the refresh forks nothing.
    collector = ZoneSettingsCollector(refresh=60)
    snap_runner = stand_in_runner()
    collected(collector, [], snap_runner)
    collected(collector, [], snap_runner)
    assert snap_runner.forks == 1


def test_zone_settings_parser_refuses_garbage_lines() -> None:
    from dtagent.collectors.zone_settings import parse

    rows, bad = parse(f"{WEB}:{WEB}:100:200:2000\n{DB}::x:1:1\ngarbage\n{IDLE}:{IDLE}:::\n")
    assert rows == {WEB: (100, 200, 2000), IDLE: (None, None, None)}
    assert len(bad) == 2
