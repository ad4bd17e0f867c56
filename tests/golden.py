"""The golden exposition: a small fixed bundle and the /metrics text the agent serves
for it, both committed, so that a renamed metric, a changed label or a lost series
shows up as a diff in review (node_exporter's e2e-output files are the model).

``make golden`` (``python -m tests.golden``) rewrites the .prom file from the bundle;
``python -m tests.golden --new-bundle`` first writes a new bundle from the simulator
(9 zones: every brand, a running KVM guest; one frame), needed when a collector or a
D script reads something the committed bundle does not hold.
tests/test_golden.py fails while the committed file differs from what the agent
serves.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dtagent.bundle import write_bundle
from dtagent.config import load
from dtagent.exposition import render
from dtagent.runtime import build
from dtagent.simulate import EPOCH, frames, make_host

HERE = Path(__file__).resolve().parent / "fixtures" / "golden"
BUNDLE = HERE / "small-host.bundle"
PROM = HERE / "small-host.prom"

# The agent's own figures that differ from run to run: their series stay in the file
# (names and labels are what matter), with NaN for the value and no version.
VARYING = frozenset(
    {
        "dtagent_build_info",
        "dtagent_collector_duration_seconds",
        "dtagent_dtrace_last_delta_age_seconds",
        "dtagent_process_cpu_seconds_total",
        "dtagent_process_resident_memory_bytes",
        "dtagent_process_start_time_seconds",
        "dtagent_scrape_duration_seconds",
    }
)
HEADER = (
    "# Golden exposition of tests/fixtures/golden/small-host.bundle (its one frame), written\n"
    "# by `make golden`; the values of the agent's run-dependent series are NaN.\n"
)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")


def exposition(bundle: Path = BUNDLE) -> str:
    """What ``dtagent scrape --replay BUNDLE --frame -1`` serves, the varying values masked."""
    config = load(None)
    config.set("sources", "replay", str(bundle))
    config.set("dtrace", "scripts", {"syscall_by_name": True})  # every shipped script
    runtime = build(config, replay_frame=-1)
    try:
        text = render(runtime.agent.collect()).decode()
    finally:
        runtime.close()
    lines = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is not None and m["name"] in VARYING:
            labels = re.sub(r'(version|python)="[^"]*"', r'\1=""', m["labels"] or "")
            line = f"{m['name']}{labels} NaN"
        lines.append(line)
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-bundle", action="store_true", help="simulate the bundle anew")
    args = parser.parse_args()
    if args.new_bundle:
        # the first frame of a 9-zone host: every brand, a running KVM guest
        host = make_host(9, seed=12, start=EPOCH, step=10.0, duration=10.0)
        write_bundle(BUNDLE, frames(host, 1), source="simulate", zones=9, seed=12)
        print(f"wrote {BUNDLE}")
    PROM.write_text(exposition())
    print(f"wrote {PROM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
