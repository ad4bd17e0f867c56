"""Parser for ``vmadm lookup -j -o uuid,zonename,alias,brand,vcpus,ram,zonedid,disks``:
the hardware VMs (brand ``kvm`` or ``bhyve``) of a SmartOS host.

Format (vmadm(8), smartos-live src/vm/sbin/vmadm.js ``lookup``): with ``-j`` a JSON
array of one object per zone holding the ``-o`` fields; ``ram`` is MiB, each disk's
``size`` is MiB (vmadm(8) "disks.*.size"), ``zonedid`` is the zone's debug id, which a
bhyve VM's name carries (``SYSbhyve-<zonedid>``, smartos-live src/brand/bhyve boot
``add_vmname``). Objects of other brands are ignored; a VM object with a field of the
wrong type is refused alone; output that is not a JSON array (a truncated answer) is
refused whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VM_FIELDS = ("uuid", "zonename", "alias", "brand", "vcpus", "ram", "zonedid", "disks")
VMADM_LOOKUP_ARGV = ("vmadm", "lookup", "-j", "-o", ",".join(VM_FIELDS))
VM_BRANDS = ("kvm", "bhyve")
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class VmEntry:
    zonename: str
    brand: str
    alias: str
    vcpus: int | None
    ram_bytes: int | None
    zonedid: int | None
    disk_bytes: tuple[int, ...] = ()


@dataclass(slots=True)
class VmsParsed:
    rows: list[VmEntry] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is not a non-negative integer")
    return value


def parse_vmadm_lookup(text: str) -> VmsParsed:
    """The kvm and bhyve VMs of ``vmadm lookup -j -o ...``."""
    out = VmsParsed()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        out.bad.append((1, text[:80], f"not JSON ({exc.msg}); truncated?"))
        return out
    if not isinstance(data, list):
        out.bad.append((1, text[:80], "expected a JSON array"))
        return out
    for n, obj in enumerate(data, start=1):
        if not isinstance(obj, dict) or obj.get("brand") not in VM_BRANDS:
            continue
        try:
            name = obj.get("zonename") or obj.get("uuid")
            if not isinstance(name, str) or not name:
                raise ValueError("no zonename or uuid")
            disks = obj.get("disks") or []
            if not isinstance(disks, list):
                raise ValueError("disks is not a list")
            sizes = tuple(
                s * MiB for d in disks if isinstance(d, dict) and (s := _int(d, "size")) is not None
            )
            ram = _int(obj, "ram")
            alias = obj.get("alias") if isinstance(obj.get("alias"), str) else ""
            out.rows.append(
                VmEntry(
                    name,
                    str(obj["brand"]),
                    str(alias),
                    _int(obj, "vcpus"),
                    None if ram is None else ram * MiB,
                    _int(obj, "zonedid"),
                    sizes,
                )
            )
        except ValueError as exc:
            out.bad.append((n, json.dumps(obj)[:120], str(exc)))
    return out
