"""Hardware VMs (KVM and bhyve zones): per-vCPU figures from the hypervisors' kstats and
each VM's size from vmadm.

* bhyve (illumos-gate usr/src/uts/intel/io/vmm/vmm_sol_dev.c ``vmm_kstat_alloc`` and
  ``vmm_kstat_init``; vmm.c ``vmm_kstat_update_vcpu``; sys/vmm_kernel.h
  ``vmm_vcpu_kstats_t``): ``vmm:<minor>:vm`` (class misc) holds ``vm_name``, and
  ``vmm:<minor>:vcpu<N>`` for N below VM_MAXCPU (32, every one of them, used or not)
  holds ``vcpu`` and the cumulative nanoseconds the vCPU spent in each microstate:
  ``time_init`` (created, never run), ``time_run`` (in guest context), ``time_idle``
  (halted), ``time_emu_kern``/``time_emu_user`` (exits emulated in the kernel or by
  the bhyve process) and ``time_sched`` (wanting to run, off CPU). They are created in
  the VM's zone and added to the global zone. A SmartOS bhyve zone names its VM
  ``SYSbhyve-<zone debug id>`` (smartos-live src/brand/bhyve ``add_vmname``), which
  vmadm's ``zonedid`` maps to the zone; only the vCPUs below the VM's ``vcpus`` are
  exported (or, when vmadm is not available, the vCPUs that ever left ``init``).
* KVM (TritonDataCenter/illumos-kvm kvm.c ``kvm_create_vm`` and kvm_x86.c
  ``kvm_arch_vcpu_create``; kvm_impl.h ``kvm_vcpu_stats_t``): ``kvm:<vcpu id>:vcpu-<vm
  id>`` (class misc) with exit counters by reason, HLT wakeups, hypercalls, guest page
  faults, instruction emulations, NMI/IRQ injections and the VM's ``zonename``.

vmadm (``vmadm lookup -j``, cached for ``metadata_refresh`` seconds) gives
``illumos_vm_info`` and the VM's vCPUs, RAM and disk sizes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers import ParseMemo
from dtagent.parsers.vms import VMADM_LOOKUP_ARGV, VmEntry, parse_vmadm_lookup
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, HostSnapshot, Kstat, KstatInput, KstatSnapshot

BHYVE_SRC = "vmm:<minor>:vcpu<N> (misc)"
KVM_SRC = "kvm:<vcpu>:vcpu-<vm> (misc)"
VMADM_SRC = " ".join(VMADM_LOOKUP_ARGV)
VCPU = ("zonename", "vcpu")
NS = 1e9

# bhyve microstates: vmm_kernel.h enum vcpu_ustate (VU_INIT ... VU_SCHED).
BHYVE_STATES = ("init", "run", "idle", "emu_kern", "emu_user", "sched")
# KVM exit reasons: kvm_vcpu_stats_t fields named <reason>-exits.
KVM_EXITS = (
    ("halt", "halt-exits"),
    ("irq", "irq-exits"),
    ("io", "io-exits"),
    ("mmio", "mmio-exits"),
    ("nmi_window", "nmi-window-exits"),
    ("irq_window", "irq-window-exits"),
    ("request_irq", "request-irq-exits"),
    ("signal", "signal-exits"),
)

TIME = MetricSpec(
    "illumos_vm_vcpu_time_seconds_total",
    "counter",
    "Time the bhyve vCPU spent in each state: init (never run), run (guest), idle "
    "(halted), emu_kern and emu_user (emulating an exit in the kernel or in the bhyve "
    "process), sched (runnable, waiting for a host CPU).",
    (*VCPU, "state"),
    "seconds",
    BHYVE_SRC + " time_*",
)
EXITS = MetricSpec(
    "illumos_vm_vcpu_exits_total",
    "counter",
    "KVM vCPU exits to the hypervisor by reason (halt, irq, io, mmio, nmi_window, "
    "irq_window, request_irq, signal).",
    (*VCPU, "reason"),
    "",
    KVM_SRC + " *-exits",
)
ALL_EXITS = MetricSpec("illumos_vm_vcpu_all_exits_total", "counter",
                       "Every KVM vCPU exit, whatever the reason.", VCPU, "", KVM_SRC + " exits")
WAKEUPS = MetricSpec("illumos_vm_vcpu_halt_wakeups_total", "counter",
                     "Wake-ups of the KVM vCPU from HLT.", VCPU, "", KVM_SRC + " halt-wakeup")
HYPERCALLS = MetricSpec("illumos_vm_vcpu_hypercalls_total", "counter",
                        "Hypercalls (VMCALL) the KVM guest made.", VCPU, "",
                        KVM_SRC + " hypercalls")
GUEST_PF = MetricSpec("illumos_vm_vcpu_guest_page_faults_total", "counter",
                      "Page faults KVM injected into the guest.", VCPU, "", KVM_SRC + " pf-guest")
FIXED_PF = MetricSpec("illumos_vm_vcpu_fixed_page_faults_total", "counter",
                      "Page faults KVM fixed in its shadow page tables.", VCPU, "",
                      KVM_SRC + " pf-fixed")
EMULATIONS = MetricSpec("illumos_vm_vcpu_instruction_emulations_total", "counter",
                        "Guest instructions KVM emulated.", VCPU, "", KVM_SRC + " insn-emulation")
INJECTIONS = MetricSpec("illumos_vm_vcpu_injections_total", "counter",
                        "Interrupts KVM injected into the vCPU, by kind (nmi, irq).",
                        (*VCPU, "kind"), "", KVM_SRC + " nmi-injections, irq-injections")
INFO = MetricSpec(
    "illumos_vm_info",
    "gauge",
    "One series per hardware VM (brand kvm or bhyve), always 1, with its alias, brand, "
    "vCPUs, RAM and total disk size.",
    ("zonename", "alias", "brand", "vcpus", "ram_bytes", "disk_bytes"),
    "",
    VMADM_SRC,
)
VCPUS = MetricSpec("illumos_vm_vcpus", "gauge", "vCPUs configured for the VM.", ("zonename",),
                   "", VMADM_SRC + " vcpus")
RAM = MetricSpec("illumos_vm_ram_bytes", "gauge", "RAM configured for the VM.", ("zonename",),
                 "bytes", VMADM_SRC + " ram")
DISK = MetricSpec("illumos_vm_disk_bytes", "gauge", "Size of each of the VM's disks.",
                  ("zonename", "disk"), "bytes", VMADM_SRC + " disks.*.size")

# the statistic of each state in BHYVE_STATES, named once
_BHYVE_TIME_STATS = tuple(f"time_{state}" for state in BHYVE_STATES)
_BHYVE_VCPU = re.compile(r"^vcpu([0-9]+)$")
_KVM_VCPU = re.compile(r"^vcpu-([0-9]+)$")
_SYSBHYVE = re.compile(r"^SYSbhyve-([0-9]+)$")


class VmCollector(Collector):
    name = "vm"
    description = (
        "KVM and bhyve guests: per-vCPU time by state (bhyve vmm kstats), exits by reason "
        "and other counters (KVM kstats), and each VM's vCPUs, RAM and disks (vmadm)"
    )
    specs = (TIME, EXITS, ALL_EXITS, WAKEUPS, HYPERCALLS, GUEST_PF, FIXED_PF, EMULATIONS,
             INJECTIONS, INFO, VCPUS, RAM, DISK)
    kstat_inputs = (KstatInput("vmm"), KstatInput("kvm"))
    kstat_modules: ClassVar[tuple[str, ...]] = ("vmm", "kvm")
    settings = {
        "metadata_refresh": duration(300.0, "seconds between runs of vmadm lookup"),
        "command_timeout": timeout(
            5.0, "seconds vmadm may take before it is killed", maximum=60.0
        ),
    }

    def __init__(self, metadata_refresh: float = 300.0, command_timeout: float = 5.0) -> None:
        super().__init__()
        self.metadata_refresh = float(metadata_refresh)
        self.command_timeout = float(command_timeout)
        self._lookup = ParseMemo(parse_vmadm_lookup)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        yield CommandRequest(
            VMADM_LOOKUP_ARGV, refresh=self.metadata_refresh, timeout=self.command_timeout
        )

    def _vms(self, snap: HostSnapshot) -> list[VmEntry]:
        res = snap.commands.get(VMADM_LOOKUP_ARGV)
        if res is None:
            return []  # not run yet
        if not res.ok:
            if res.returncode != 127:
                self.warn_once("cmd", "vmadm lookup failed; VM sizes are left out",
                               rc=res.returncode, error=res.error,
                               stderr=res.stderr.strip()[:300])
            return []
        parsed = self._lookup(res.stdout)
        if parsed.bad:
            n, text, reason = parsed.bad[0]
            self.warn_once(f"parse:{reason}", "vmadm lookup output not understood; left out",
                           count=len(parsed.bad), entry=n, text=text, reason=reason)
        return parsed.rows

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        vms = self._vms(snap)
        by_did = {vm.zonedid: vm for vm in vms if vm.zonedid is not None}
        for vm in sorted(vms, key=lambda v: v.zonename):
            z = (vm.zonename,)
            fams[INFO.name].add(
                (vm.zonename, vm.alias, vm.brand, "" if vm.vcpus is None else str(vm.vcpus),
                 "" if vm.ram_bytes is None else str(vm.ram_bytes), str(sum(vm.disk_bytes))),
                1,
            )
            if vm.vcpus is not None:
                fams[VCPUS.name].add(z, vm.vcpus)
            if vm.ram_bytes is not None:
                fams[RAM.name].add(z, vm.ram_bytes)
            for i, size in enumerate(vm.disk_bytes):
                fams[DISK.name].add((vm.zonename, f"disk{i}"), size)
        self._bhyve(snap, fams, by_did)
        self._kvm(snap, fams)
        return fams.all()

    def _bhyve(self, snap: HostSnapshot, fams: Families, by_did: dict[int, VmEntry]) -> None:
        names: dict[int, tuple[str, int | None]] = {}  # minor -> (zonename, vcpus)
        vcpus: list[tuple[int, int, Kstat]] = []
        for ks in snap.kstats.module("vmm"):
            if ks.name == "vm":
                vm_name = ks.str_stat("vm_name") or ""
                m = _SYSBHYVE.match(vm_name)
                vm = by_did.get(int(m.group(1))) if m else None
                if vm is None:
                    self.warn_once(f"vm:{vm_name}", "bhyve VM not matched to a zone; skipped",
                                   vm_name=vm_name, instance=ks.instance)
                    continue
                names[ks.instance] = (vm.zonename, vm.vcpus)
            elif (m := _BHYVE_VCPU.match(ks.name)) is not None:
                vcpus.append((ks.instance, int(m.group(1)), ks))
        seen: set[tuple[str, int]] = set()
        for minor, n, ks in sorted(vcpus, key=lambda t: (t[0], t[1])):
            if minor not in names:
                continue
            zonename, configured = names[minor]
            if configured is not None and n >= configured:
                continue  # not configured: its times are not read at all
            times = [ks.int_stat(stat) for stat in _BHYVE_TIME_STATS]
            if configured is None and not any(t for t in times[1:]):
                continue  # never left init: one of the 32 kstats of vCPUs not in use
            if (zonename, n) in seen:
                continue
            seen.add((zonename, n))
            made = snap.kstats.created(ks)
            for state, value in zip(BHYVE_STATES, times, strict=True):
                if value is not None:
                    fams[TIME.name].add((zonename, str(n), state), value / NS, made)

    def _kvm(self, snap: HostSnapshot, fams: Families) -> None:
        seen: set[tuple[str, int]] = set()
        for ks in sorted(snap.kstats.module("kvm"), key=lambda k: (k.name, k.instance)):
            if ks.ks_class != "misc" or not _KVM_VCPU.match(ks.name):
                continue
            zonename = ks.str_stat("zonename")
            if not zonename or (zonename, ks.instance) in seen:
                continue
            seen.add((zonename, ks.instance))
            labels = (zonename, str(ks.instance))
            made = snap.kstats.created(ks)
            for reason, stat in KVM_EXITS:
                value = ks.int_stat(stat)
                if value is not None:
                    fams[EXITS.name].add((*labels, reason), value, made)
            for spec, stat in ((ALL_EXITS, "exits"), (WAKEUPS, "halt-wakeup"),
                               (HYPERCALLS, "hypercalls"), (GUEST_PF, "pf-guest"),
                               (FIXED_PF, "pf-fixed"), (EMULATIONS, "insn-emulation")):
                value = ks.int_stat(stat)
                if value is not None:
                    fams[spec.name].add(labels, value, made)
            for kind in ("nmi", "irq"):
                value = ks.int_stat(f"{kind}-injections")
                if value is not None:
                    fams[INJECTIONS.name].add((*labels, kind), value, made)
