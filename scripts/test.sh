#!/usr/bin/env bash
# Install everything the tests need (Debian packages when missing, .venv with the test
# extras) and run the whole suite: ruff, mypy and pytest.
# Usage: scripts/test.sh [pytest arguments]
. "$(dirname "$0")/_env.sh"

missing=""
command -v gcc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v prometheus >/dev/null 2>&1 || case "$missing" in *prometheus*) ;; *) missing="$missing prometheus" ;; esac
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v xmllint >/dev/null 2>&1 || missing="$missing libxml2-utils"
# shellcheck disable=SC2086
apt_install $missing

ensure_venv test
cd "$ROOT"
echo "== ruff" >&2
"$VENV/bin/ruff" check dtagent tests benchmarks
echo "== mypy" >&2
"$VENV/bin/mypy"
echo "== pytest" >&2
exec "$VENV/bin/pytest" "$@"
