"""Who a datalink kstat (``link:0:<name>``, class net) belongs to, and the name its
owner sees: shared by the link and flow collectors.

In a SmartOS global zone a VNIC that zone N sees as ``net0`` has the kstat
``link:0:zN_net0`` and a ``zonename`` statistic (illumos-joyent
usr/src/uts/common/io/dls/dls_mgmt.c ``dls_devnet_stat_create``, dls_stat.c); N changes
at every zone boot. On illumos-gate (OmniOS) there is no zonename statistic and the
VNIC keeps its own name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dtagent.snapshot import Kstat

_ZONE_PREFIX = re.compile(r"^z(\d+)_(.+)$")


@dataclass(frozen=True, slots=True)
class LinkId:
    """Who a link kstat belongs to and the name its owner sees."""

    link: str
    zonename: str  # "" when the platform does not say (illumos-gate)
    zoneid: int | None  # from the z<N>_ prefix of a SmartOS zone VNIC

    @property
    def zone_owned(self) -> bool:
        return self.zoneid is not None


def identify(ks: Kstat) -> LinkId:
    """The owner and the owner's name of a link kstat (see the module docstring)."""
    zonename = ks.str_stat("zonename")
    if zonename and zonename != "global":
        m = _ZONE_PREFIX.match(ks.name)
        if m is not None:
            return LinkId(m[2], zonename, int(m[1]))
        return LinkId(ks.name, zonename, None)
    return LinkId(ks.name, zonename or "", None)
