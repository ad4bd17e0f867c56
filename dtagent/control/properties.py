"""The zone properties the control wing can change, their units and hard limits.

Units are the ones operators already type: vmadm's (smartos-live src/vm/man/vmadm.8.md)
for the rctl-backed caps (cpu_cap in % of one CPU, memory in MiB), GiB for the dataset
quota (vmadm's ``quota``), Mbit/s for a VNIC's maxbw (dladm's default unit, dladm(8)).
The hard limits are the platform's: a value outside them is refused before the policy
is even asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB
MINIMUM_MAX_SWAP = 256  # MiB: VM.js MINIMUM_MAX_SWAP; vmadm.8.md max_swap "nor ... lower than 256"


@dataclass(frozen=True, slots=True)
class Property:
    """One settable property.

    ``rctl`` is the zone resource control that enforces it live (illumos-joyent
    uts/common/os/zone.c zone_init) and ``factor`` converts our unit to the rctl's
    (MiB → bytes), as VM.js does when it applies an update live with prctl.
    """

    name: str
    unit: str
    minimum: int
    maximum: int
    doc: str
    rctl: str | None = None
    factor: int = 1
    zero_means_none: bool = False


PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property(
            "cpu_cap",
            "percent of one CPU",
            0,
            100 * 1024,
            "CPU cap (100 = one CPU; 0 = no cap)",
            "zone.cpu-cap",
            zero_means_none=True,
        ),
        # FSS_MAXSHARES = 65535 (zone.cpu-shares system limit).
        Property(
            "cpu_shares", "shares", 1, 65535, "fair-share scheduler shares", "zone.cpu-shares"
        ),
        Property(
            "max_physical_memory",
            "MiB",
            1,
            1 << 30,
            "physical memory cap",
            "zone.max-physical-memory",
            MIB,
        ),
        Property(
            "max_swap",
            "MiB",
            MINIMUM_MAX_SWAP,
            1 << 30,
            "virtual memory (swap) cap; at least max_physical_memory",
            "zone.max-swap",
            MIB,
        ),
        Property(
            "max_locked_memory",
            "MiB",
            0,
            1 << 30,
            "locked memory cap; at most max_physical_memory",
            "zone.max-locked-memory",
            MIB,
        ),
        Property("max_lwps", "LWPs", 1, 2**31 - 1, "lightweight processes", "zone.max-lwps"),
        # zone.zfs-io-priority: system limit 16384 (zone.c).
        Property(
            "zfs_io_priority",
            "relative priority",
            0,
            16384,
            "ZFS I/O throttle priority",
            "zone.zfs-io-priority",
        ),
        Property(
            "quota",
            "GiB",
            0,
            1 << 20,
            "quota of the zone's dataset (0 = none)",
            zero_means_none=True,
        ),
        # dladm: maxbw below MRP_MAXBW_MINVAL (1.2 Mbit/s) is refused, so 2 is the least
        # whole Mbit/s; 0 resets the property (no cap).
        Property(
            "maxbw",
            "Mbit/s",
            0,
            400_000,
            "bandwidth cap of one VNIC (0 = none)",
            zero_means_none=True,
        ),
    )
}

RCTL_PROPERTIES = tuple(p for p in PROPERTIES.values() if p.rctl is not None)

# A zonename: ZONENAME_MAX is 64 with the NUL (usr/src/uts/common/sys/zone.h), and
# zonecfg accepts letters, digits, '-', '_' and '.' after a leading alphanumeric
# (zonecfg(8) "zonename"). Checked before the name reaches any command.
ZONENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# A datalink name: letters then a number (dladm(8) "LINK NAMES"), at most MAXLINKNAMELEN-1.
LINKNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,29}[0-9]")


class ValidationError(ValueError):
    """A request that names something unknown or a value outside the platform's limits."""


def valid_zonename(text: str) -> bool:
    return ZONENAME.fullmatch(text) is not None


def split_key(key: str) -> tuple[Property, str | None]:
    """``cpu_cap`` → (cpu_cap, None); ``maxbw.net0`` → (maxbw, "net0")."""
    name, dot, link = key.partition(".")
    prop = PROPERTIES.get(name)
    if prop is None:
        raise ValidationError(
            f"unknown property {key[:40]!r}; known: {', '.join(PROPERTIES)} (maxbw as maxbw.LINK)"
        )
    if name == "maxbw":
        if not dot or LINKNAME.fullmatch(link) is None:
            raise ValidationError(f"maxbw needs a link name, like maxbw.net0 (got {key[:40]!r})")
        return prop, link
    if dot:
        raise ValidationError(f"unknown property {key[:40]!r}")
    return prop, None


def check_value(key: str, value: object) -> int:
    """The value as an int within the property's hard limits, or ValidationError."""
    prop, _link = split_key(key)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value):
            value = int(value)
        else:
            raise ValidationError(
                f"{key}: expected a whole number of {prop.unit}, got {value!r:.40}"
            )
    assert isinstance(value, int)
    if not prop.minimum <= value <= prop.maximum:
        raise ValidationError(
            f"{key}: {value} is outside {prop.minimum}..{prop.maximum} {prop.unit}"
        )
    if prop.name == "maxbw" and value == 1:
        raise ValidationError(f"{key}: dladm refuses a maxbw below 1.2 Mbit/s (0 = no cap)")
    return value


def check_changes(changes: dict[str, object]) -> dict[str, int]:
    """Every key known and every value in range; at least one change."""
    if not changes:
        raise ValidationError("no change asked")
    if len(changes) > 32:
        raise ValidationError("too many changes in one request (at most 32)")
    return {str(k): check_value(str(k), v) for k, v in changes.items()}


def check_memory(after: dict[str, int | None]) -> None:
    """vmadm's rules between the memory caps, on the values a change would leave.

    vmadm.8.md: max_swap "cannot be lower than max_physical_memory"; max_locked_memory
    "cannot be higher than max_physical_memory". On update VM.js quietly raises or
    clamps instead of refusing (the read-back would then differ), so the control wing
    refuses such a change itself, before anything runs.
    """
    phys = after.get("max_physical_memory")
    swap = after.get("max_swap")
    locked = after.get("max_locked_memory")
    if phys is not None and swap is not None and swap < phys:
        raise ValidationError(
            f"max_swap ({swap} MiB) must not be below max_physical_memory ({phys} MiB)"
        )
    if phys is not None and locked is not None and locked > phys:
        raise ValidationError(
            f"max_locked_memory ({locked} MiB) must not be above max_physical_memory ({phys} MiB)"
        )
