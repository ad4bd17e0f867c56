"""Shared fixtures: where the project's reference samples are, and a fresh bin dir."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples"
FAKEBIN = Path(__file__).resolve().parent / "fakebin"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """../shared/samples: real illumos/SmartOS command outputs used as fixtures."""
    if not SAMPLES.is_dir():
        pytest.fail(f"the reference samples are expected beside the repository: {SAMPLES}")
    return SAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
