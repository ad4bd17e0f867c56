#!/usr/bin/env bash
# Benchmarks (not part of the tests): scrape CPU at 500 zones, renderer vs
# prometheus-client, RSS at 1,000 zones with churn.
. "$(dirname "$0")/_env.sh"
ensure_venv test
cd "$ROOT"
"$VENV/bin/python" -m benchmarks.bench_scrape --zones 500 --frames 5
"$VENV/bin/python" -m benchmarks.bench_scrape --zones 1000 --frames 3 --churn 160
