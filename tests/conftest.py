"""Shared fixtures: where the public sample outputs and the SMF DTD are, and a fresh bin dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = FIXTURES / "samples"
SMF_DTD = FIXTURES / "smf" / "service_bundle.dtd.1"
FAKEBIN = Path(__file__).resolve().parent / "fakebin"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """tests/fixtures/samples: real, published illumos/SmartOS command outputs (sources in
    its README)."""
    return SAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _stand_in_runners_closed() -> Iterator[None]:
    """Command runners a test made on the stand-ins stop with the test."""
    yield
    from tests.helpers import close_stand_in_runners

    close_stand_in_runners()


@pytest.fixture(autouse=True)
def _keep_logging_config() -> Iterator[None]:
    """A test that runs the CLI in this process configures structlog onto its captured
    stderr; put back what was there, so later tests do not log to a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
