"""Hardware VM kstats and ``vmadm lookup -j`` of the simulated host's KVM and bhyve zones.

* bhyve: ``vmm:<minor>:vm`` with ``vm_name`` ``SYSbhyve-<zonedid>`` and, as the kernel
  does, ``vmm:<minor>:vcpu0`` .. ``vcpu31`` for every VM whatever its vCPU count
  (illumos-gate usr/src/uts/intel/io/vmm/vmm_sol_dev.c ``vmm_kstat_alloc``); vCPUs the
  guest does not use stay in ``init``. Times are cumulative nanoseconds.
* KVM: ``kvm:<vm id>:vm`` and ``kvm:<vcpu>:vcpu-<vm id>`` with the kvm_vcpu_stats_t
  counters and the zone's name (TritonDataCenter/illumos-kvm kvm.c, kvm_x86.c); the VM id
  is new at every boot, as the kernel's counter is.
* ``vmadm lookup -j -o uuid,zonename,alias,brand,vcpus,ram,zonedid,disks``: a JSON array
  (vmadm.js), ram and disk sizes in MiB, recorded when it changes or every ``REFRESH``.

The kstats of a VM exist while its zone runs, created at its boot (``crtime``).
Counters come from the zone's running totals and a per-zone stream, never the host's.
"""

from __future__ import annotations

import json
import random
import zlib

from dtagent.bundle import Frame
from dtagent.parsers.vms import VMADM_LOOKUP_ARGV
from dtagent.simulate.model import SimHost, SimZone
from dtagent.snapshot import CommandResult, Kstat

REFRESH = 300.0
VM_MAXCPU = 32  # illumos-gate usr/src/uts/intel/sys/vmm.h
BHYVE_STATES = ("init", "run", "idle", "emu_kern", "emu_user", "sched")
KVM_COUNTERS = (
    "nmi-injections", "irq-injections", "fpu-reload", "host-state-reload", "insn-emulation",
    "inst-emulation-fail", "exits", "halt-exits", "irq-exits", "io-exits", "mmio-exits",
    "nmi-window-exits", "irq-window-exits", "request-irq-exits", "signal-exits",
    "halt-wakeup", "invlpg", "pf-guest", "pf-fixed", "hypercalls",
)


def vcpus_of(zone: SimZone) -> int:
    return (1, 2, 4)[zlib.crc32(zone.uuid.encode()) % 3]


def ram_mib(zone: SimZone) -> int:
    return (zone.mem_cap or 2 << 30) >> 20


def vmadm_lookup(host: SimHost) -> str:
    vms = []
    for z in sorted(host.zones, key=lambda z: z.uuid):
        obj: dict[str, object] = {"uuid": z.uuid, "zonename": z.uuid, "alias": z.alias,
                                  "brand": z.brand, "zonedid": z.zonedid}
        if z.brand in ("kvm", "bhyve"):
            size = (10, 20, 50)[zlib.crc32(z.uuid.encode()) % 3] * 1024
            obj.update(vcpus=vcpus_of(z), ram=ram_mib(z),
                       disks=[{"path": f"/dev/zvol/rdsk/zones/{z.uuid}-disk0", "size": size,
                               "model": "virtio", "boot": True}])
        vms.append(obj)
    return json.dumps(vms, indent=2) + "\n"


def _grow(zone: SimZone, key: str, amount: float) -> int:
    zone.acc[key] = zone.acc.get(key, 0.0) + amount
    return int(zone.acc[key])


def _crtime(host: SimHost, zone: SimZone) -> int:
    """The kstats' creation time in hrtime ns: the zone's boot, counted from the host's."""
    # set by simulate.frames; parts driven on their own get the same default uptime
    boot = host.acc.setdefault("host_boot", host.time - 12 * 86400.0)
    return int((zone.boot_time - boot) * 1e9)


def _bhyve(host: SimHost, zone: SimZone, minor: int, rng: random.Random, frame: Frame) -> None:
    crtime = _crtime(host, zone)
    frame.kstats.append(Kstat("vmm", minor, "vm", "misc", crtime=crtime,
                              data={"vm_name": f"SYSbhyve-{zone.zonedid}"}))
    used = vcpus_of(zone)
    busy = 0.7 if "busy" in zone.profile else 0.15
    for n in range(VM_MAXCPU):
        data: dict[str, int | float | str] = {"vcpu": n}
        if n < used:
            step = host.step * 1e9
            run = step * busy * rng.uniform(0.8, 1.2)
            sched = step * 0.02 * rng.uniform(0.5, 1.5)
            emu_k, emu_u = step * 0.03, step * 0.01
            idle = max(0.0, step - run - sched - emu_k - emu_u)
            parts = (0.0, run, idle, emu_k, emu_u, sched)
            for state, amount in zip(BHYVE_STATES, parts, strict=True):
                data[f"time_{state}"] = _grow(zone, f"bhyve_{n}_{state}", amount)
            data["time_init"] = 2_000_000
        else:
            data.update({f"time_{s}": 0 for s in BHYVE_STATES})
            data["time_init"] = int(host.time - zone.boot_time) * 1_000_000_000
        frame.kstats.append(Kstat("vmm", minor, f"vcpu{n}", "misc", crtime=crtime, data=data))


def _kvm(host: SimHost, zone: SimZone, rng: random.Random, frame: Frame) -> None:
    crtime = _crtime(host, zone)
    vmid = int(zone.zoneid or 0)
    frame.kstats.append(Kstat("kvm", vmid, "vm", "misc", crtime=crtime, data={
        "pid": 4000 + vmid, "mmu-pte-write": _grow(zone, "kvm_pte", rng.uniform(100, 900)),
        "mmu-pte-updated": 0, "mmu-pte-zapped": 0, "mmu-flooded": 0, "mmu-cache-miss": 0,
        "mmu-recycled": 0, "remote-tlb-flush": _grow(zone, "kvm_tlb", rng.uniform(1, 40)),
        "lpages": 512, "mmu-unsync-page": 0, "zonename": zone.uuid,
    }))
    for n in range(vcpus_of(zone)):
        data: dict[str, int | float | str] = {"pid": 4000 + vmid}
        for stat in KVM_COUNTERS:
            rate = 2000 if stat.endswith("exits") else 150
            data[stat] = _grow(zone, f"kvm_{n}_{stat}", rate * host.step * rng.uniform(0.5, 1.5))
        data["exits"] = sum(int(v) for k, v in data.items()
                            if isinstance(v, int) and k.endswith("-exits")) + 17 * int(
                                zone.acc.get("kvm_frames", 0))
        data["zonename"] = zone.uuid
        frame.kstats.append(Kstat("kvm", n, f"vcpu-{vmid}", "misc", crtime=crtime, data=data))
    zone.acc["kvm_frames"] = zone.acc.get("kvm_frames", 0) + 1


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """vmm and kvm kstats of the running VMs; vmadm lookup when it changes or is due."""
    minor = 1
    for zone in sorted(host.zones, key=lambda z: z.zonedid):
        if not zone.running or zone.brand not in ("bhyve", "kvm"):
            continue
        zrng = random.Random(zlib.crc32(f"{zone.uuid}:{frame.time}".encode()))
        if zone.brand == "bhyve":
            _bhyve(host, zone, minor, zrng, frame)
            minor += 1
        else:
            _kvm(host, zone, zrng, frame)
    text = vmadm_lookup(host)
    crc = float(zlib.crc32(text.encode()))
    last = host.acc.get("cmd_lookup_at")
    if last is None or host.acc.get("cmd_lookup_crc") != crc or host.time - last >= REFRESH:
        frame.commands.append(CommandResult(VMADM_LOOKUP_ARGV, 0, text, ""))
        host.acc["cmd_lookup_crc"] = crc
        host.acc["cmd_lookup_at"] = host.time
