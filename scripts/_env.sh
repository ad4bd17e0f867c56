# Shared set-up for scripts/demo.sh and scripts/test.sh: a virtual environment in .venv
# with the agent installed, and (for the tests) the Debian packages they drive.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="${DTAGENT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else
        echo "dtagent: need root to run: $*" >&2
        exit 1
    fi
}

apt_install() {
    # Install the named Debian packages (only called with the missing ones).
    [ $# -gt 0 ] || return 0
    echo "dtagent: installing Debian packages: $*" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_python() {
    if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        echo "dtagent: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=...)" >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
}

ensure_venv() {
    # $1: the pip extras to install ("" or "test")
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    stamp="$VENV/.dtagent-installed-${1:-base}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        if [ -n "${1:-}" ]; then
            "$VENV/bin/python" -m pip install -q -e "$ROOT[$1]"
        else
            "$VENV/bin/python" -m pip install -q -e "$ROOT"
        fi
        touch "$stamp"
    fi
}
