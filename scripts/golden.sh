#!/usr/bin/env bash
# Rewrite the golden exposition (tests/fixtures/golden/small-host.prom) from its bundle;
# review the diff and commit it when the change is meant. Arguments go to
# `python -m tests.golden` (--new-bundle simulates the bundle anew).
. "$(dirname "$0")/_env.sh"
ensure_venv test
cd "$ROOT"
exec "$VENV/bin/python" -m tests.golden "$@"
