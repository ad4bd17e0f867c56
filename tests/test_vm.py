"""KVM and bhyve guests: the vmm and kvm kstat layouts (illumos-gate vmm_sol_dev.c,
illumos-kvm kvm_x86.c), the vmadm lookup mapping, and the simulated host's VMs."""

from __future__ import annotations

import json

from dtagent.collectors.vm import VmCollector
from dtagent.parsers.vms import VMADM_LOOKUP_ARGV, parse_vmadm_lookup
from dtagent.simulate import frames, make_host
from dtagent.snapshot import Kstat
from tests.helpers import Answers, collected

UUID = "4016eeb3-1bfa-c883-becd-e1a96543ad77"
# Fields of the real SmartOS bhyve VM in smartos-live issue 947 (vmadm get, cut down to
# the fields vmadm lookup -o asks for; zonedid added).
LOOKUP = json.dumps([
    {"uuid": UUID, "zonename": UUID, "alias": "Win2012", "brand": "bhyve", "vcpus": 2,
     "ram": 32768, "zonedid": 17,
     "disks": [{"path": f"/dev/zvol/rdsk/zones/{UUID}/disk0", "size": 131072}]},
    {"uuid": "a0", "zonename": "a0", "alias": "web", "brand": "joyent", "zonedid": 3},
])


def bhyve_kstats(minor: int, name: str, used: int) -> list[Kstat]:
    out = [Kstat("vmm", minor, "vm", "misc", data={"vm_name": name})]
    for n in range(32):
        busy = n < used
        out.append(Kstat("vmm", minor, f"vcpu{n}", "misc", data={
            "vcpu": n, "time_init": 1000, "time_run": 5_000_000_000 if busy else 0,
            "time_idle": 2_500_000_000 if busy else 0, "time_emu_kern": 1 if busy else 0,
            "time_emu_user": 0, "time_sched": 250_000_000 if busy else 0}))
    return out


def test_bhyve_vcpus_mapped_by_debug_id_and_limited_to_the_configured_count() -> None:
    got = collected(VmCollector(), bhyve_kstats(5, "SYSbhyve-17", 2),
                    Answers(lambda argv: LOOKUP if argv == VMADM_LOOKUP_ARGV else ""))
    times = {k[1]: v for k, v in got.items() if k[0] == "illumos_vm_vcpu_time_seconds_total"}
    assert {(z, n) for z, n, _ in times} == {(UUID, "0"), (UUID, "1")}
    assert times[(UUID, "0", "run")] == 5.0 and times[(UUID, "1", "sched")] == 0.25
    assert got[("illumos_vm_ram_bytes", (UUID,))] == 32768 << 20
    assert got[("illumos_vm_disk_bytes", (UUID, "disk0"))] == 131072 << 20
    assert got[("illumos_vm_info", (UUID, "Win2012", "bhyve", "2", str(32768 << 20),
                                    str(131072 << 20)))] == 1
    assert ("illumos_vm_vcpus", ("a0",)) not in got  # not a hardware VM


def test_bhyve_without_vmadm_skips_unknown_vm_names() -> None:
    got = collected(VmCollector(), bhyve_kstats(1, "myvm", 1) + bhyve_kstats(2, "SYSbhyve-9", 1))
    assert got == {}


def test_kvm_vcpu_counters_by_reason() -> None:
    data: dict[str, int | float | str] = {"pid": 812, "exits": 900, "halt-exits": 100,
                                          "io-exits": 300, "mmio-exits": 7, "halt-wakeup": 90,
                                          "hypercalls": 4, "pf-guest": 11, "pf-fixed": 22,
                                          "insn-emulation": 5, "nmi-injections": 0,
                                          "irq-injections": 42, "zonename": UUID}
    kstats = [Kstat("kvm", 3, "vm", "misc", data={"pid": 812, "zonename": UUID}),
              Kstat("kvm", 0, "vcpu-3", "misc", data=data),
              Kstat("kvm", 1, "vcpu-3", "misc", data={**data, "io-exits": "garbage"})]
    got = collected(VmCollector(), kstats)
    assert got[("illumos_vm_vcpu_exits_total", (UUID, "0", "io"))] == 300
    assert got[("illumos_vm_vcpu_all_exits_total", (UUID, "0"))] == 900
    assert got[("illumos_vm_vcpu_injections_total", (UUID, "0", "irq"))] == 42
    assert ("illumos_vm_vcpu_exits_total", (UUID, "1", "io")) not in got  # bad value only
    assert got[("illumos_vm_vcpu_exits_total", (UUID, "1", "halt"))] == 100


def test_vmadm_lookup_bad_output() -> None:
    assert parse_vmadm_lookup(LOOKUP[:50]).bad  # truncated JSON
    parsed = parse_vmadm_lookup(json.dumps([{"brand": "kvm", "zonename": "z", "ram": -1},
                                            {"brand": "kvm", "zonename": "k", "vcpus": 1}]))
    assert [r.zonename for r in parsed.rows] == ["k"] and len(parsed.bad) == 1


def test_simulated_host_has_kvm_and_bhyve_guests_whose_counters_grow() -> None:
    host = make_host(12, 1, 1_790_000_000.0, 5.0, 3600.0)
    collector = VmCollector()
    runs = []
    history: dict[tuple[str, ...], str] = {}
    for frame in frames(host, 3):
        for res in frame.commands:
            history[res.argv] = res.stdout
        runs.append(collected(collector, frame.kstats, Answers(lambda a: history.get(a, ""))))
    brands = {k[1][2] for k in runs[-1] if k[0] == "illumos_vm_info"}
    assert brands == {"kvm", "bhyve"}
    assert any(k[0] == "illumos_vm_vcpu_time_seconds_total" for k in runs[-1])
    assert any(k[0] == "illumos_vm_vcpu_exits_total" for k in runs[-1])
    for key, value in runs[-1].items():
        if key[0].endswith("_total") and key in runs[0]:
            assert value >= runs[0][key], key
