"""Simulated DTrace aggregation deltas for the shipped D scripts."""

from __future__ import annotations

import random

from dtagent.bundle import Frame
from dtagent.simulate.model import SimHost


def contribute(host: SimHost, frame: Frame, rng: random.Random) -> None:
    """Append this frame's DTrace deltas (filled in with the D scripts)."""
