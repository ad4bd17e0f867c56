"""Command outputs the zone collectors read (vmadm, zoneadm, zfs), as SmartOS prints them."""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.simulate.model import SimHost


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Record the zone metadata commands (filled in with the zone collectors)."""
