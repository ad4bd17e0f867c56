#!/usr/bin/env bash
# Benchmarks (not part of the tests): `dtagent serve` scraped over HTTP on the live path
# (libkstat and libdtrace stand-ins, stand-in commands) and from a replayed bundle, at
# 100, 500, 1,000 and 2,000 zones, beside node_exporter's textfile collector and
# prometheus-client's generate_latest on the same samples. Writes build/bench/
# (results.md, results.json, bench.png). Extra arguments go to the benchmark, e.g.
#   ./scripts/bench.sh --zones 1000 --soak 600 --no-replay
. "$(dirname "$0")/_env.sh"
ensure_venv "test,bench"
command -v gcc >/dev/null 2>&1 || apt_install gcc
command -v prometheus-node-exporter >/dev/null 2>&1 || apt_install prometheus-node-exporter
cd "$ROOT"
exec "$VENV/bin/python" -m benchmarks.bench_serve "$@"
