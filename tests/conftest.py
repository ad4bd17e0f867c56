"""Shared fixtures: where the public sample outputs and the SMF DTD are, and a fresh bin dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings

# Property tests run the same examples on every run and every machine: a failure in CI
# fails the same way on a laptop, and re-running the test reproduces it (derandomize:
# the examples come from a hash of the test, not from a random seed; no example
# database, so nothing a previous run saved changes what runs). No deadline and no
# too-slow check: a loaded machine makes one example slow, which says nothing of the
# code (speed is measured by the benchmarks). HYPOTHESIS_PROFILE=explore runs random,
# more numerous examples to look for new failures; a failure prints its seed.
settings.register_profile(
    "repeatable",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "explore",
    parent=settings.get_profile("repeatable"),
    derandomize=False,
    max_examples=1000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

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
