#!/usr/bin/env bash
# Install dtagent into .venv and serve a simulated SmartOS host on /metrics.
# Usage: scripts/demo.sh [--zones N] [--listen HOST:PORT]
. "$(dirname "$0")/_env.sh"
ensure_venv ""
exec "$VENV/bin/dtagent" demo "$@"
