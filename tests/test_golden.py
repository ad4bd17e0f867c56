"""The committed golden exposition is what the agent serves for the committed bundle."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from dtagent.collectors.host import HostCollector
from dtagent.collectors.plugins import PluginsCollector
from dtagent.collectors.textfile import TextfileCollector
from dtagent.docgen import all_metric_names
from tests.golden import BUNDLE, PROM, exposition


def test_the_golden_exposition_is_current() -> None:
    assert BUNDLE.is_file() and PROM.is_file()
    assert exposition() == PROM.read_text(), (
        "the /metrics output for tests/fixtures/golden/small-host.bundle changed: review "
        "the diff of `make golden` and commit it if the change is meant"
    )


# Metrics a one-frame replay cannot show.
NOT_IN_REPLAY = {
    **{name: "host figures come from psutil on the live host" for name in
       (s.name for s in HostCollector.specs)},
    "illumos_link_maxbw_usage_ratio": "traffic between two collections; the golden is one",
    **{s.name: "the golden bundle records no operator plugins or textfiles" for s in
       (*TextfileCollector.specs, *PluginsCollector.specs)},
    **{name: "the HTTP front adds its own series as it serves" for name in
       all_metric_names() if name.startswith("dtagent_http_")},
    "dtagent_kstat_reopens_total": "a counter of the live libkstat reader",
    "dtagent_kstat_reads_skipped_total": "a counter of the live libkstat reader",
}  # fmt: skip


def test_the_golden_exposition_has_every_metric() -> None:
    """A new collector metric or D script aggregation is missing here until the bundle
    and the .prom file are rewritten (``./scripts/golden.sh --new-bundle``)."""
    have = set(re.findall(r"^# TYPE (\S+)", PROM.read_text(), re.MULTILINE))
    missing = all_metric_names() - have - NOT_IN_REPLAY.keys()
    assert not missing, f"not in {PROM.name}: {sorted(missing)}"
    assert not NOT_IN_REPLAY.keys() & have, "an exemption is no longer needed"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_the_golden_exposition_passes_promtool() -> None:
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=PROM.read_text(), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
