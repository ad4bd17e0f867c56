#!/bin/sh
# Install, upgrade or remove dtagent in a SmartOS (or illumos) global zone.
#
#   ./install.sh [options]                 install (a second run changes nothing)
#   ./install.sh --upgrade [options]       install this release over an older one
#   ./install.sh --uninstall [--purge]     remove it (keeps etc/ unless --purge)
#
# Options:
#   --root DIR         install under DIR instead of / (for tests and image builds)
#   --prefix DIR       where the agent lives (default /opt/dtagent)
#   --python PATH      Python 3.11+ to build the venv with (default: pkgsrc's
#                      /opt/tools/bin/python3.11, else python3.11 or python3 on PATH)
#   --listen ADDR      HOST:PORT to serve /metrics on, written into the SMF manifest
#                      (config/listen); default: agent.listen of the config file
#   --log-level LEVEL  debug, info, warning or error (config/log_level)
#   --privileges SET   the service's privilege set (default: basic plus the three
#                      DTrace privileges; "all" for the control hooks)
#   --force            enable the service even when 'dtagent check' finds a problem
#   --no-enable        install everything but do not import or enable the service
#   --print-manifest   print the SMF manifest this install would write, and stop
#
# Works from the release tarball (wheels/ beside this script: no network needed) and
# from a checkout (pip installs the checkout; its dependencies come from PyPI unless
# they are installed already).
#
# What it needs: root (unless --root), a Python 3.11 or newer with the venv module
# (on SmartOS: pkgsrc-setup, then 'pkgin install python311'), and psutil, PyYAML and
# bcrypt for that Python where the wheelhouse has none for this platform ('pkgin install
# py311-psutil py311-yaml py311-bcrypt'): the venv sees the system's packages
# (--system-site-packages).
#
# Layout (docs/install-smartos.md): PREFIX/lib/dtagent-VERSION (a venv), PREFIX/venv
# (a link to the running one), PREFIX/bin/dtagent, PREFIX/etc/dtagent.toml (never
# overwritten), PREFIX/var (the service's working directory), PREFIX/share (docs),
# /opt/custom/smf/dtagent.xml (imported at every boot).
set -eu

FMRI="svc:/application/dtagent:default"
ROOT=""
PREFIX="/opt/dtagent"
PYTHON=""
LISTEN=""
LOG_LEVEL=""
PRIVILEGES="basic,dtrace_kernel,dtrace_proc,dtrace_user"
MODE="install"
PURGE=0
FORCE=0
ENABLE=1
ONLINE_WAIT="${DTAGENT_ONLINE_WAIT:-60}"

say() { echo "dtagent install: $*" >&2; }
die() { echo "dtagent install: error: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
        --listen) LISTEN="${2:?--listen needs HOST:PORT}"; shift 2 ;;
        --log-level) LOG_LEVEL="${2:?--log-level needs a level}"; shift 2 ;;
        --privileges) PRIVILEGES="${2:?--privileges needs a set}"; shift 2 ;;
        --upgrade) MODE="upgrade"; shift ;;
        --uninstall) MODE="uninstall"; shift ;;
        --purge) PURGE=1; shift ;;
        --force) FORCE=1; shift ;;
        --no-enable) ENABLE=0; shift ;;
        --print-manifest) MODE="print-manifest"; shift ;;
        -h|--help) usage ;;
        *) echo "dtagent install: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, not $PREFIX" ;; esac
case "$LOG_LEVEL" in ""|debug|info|warning|error) ;;
    *) echo "dtagent install: --log-level must be debug, info, warning or error" >&2; exit 2 ;;
esac
case "$LISTEN" in ""|*:[0-9]*) ;;
    *) echo "dtagent install: --listen must be HOST:PORT, not $LISTEN" >&2; exit 2 ;;
esac
case "$LISTEN" in
    *:[0-9]|*:[0-9][0-9]|*:[0-9][0-9][0-9]|*:10[0-1][0-9]|*:102[0-3])
        # a port below 1024 needs net_privaddr (privileges(7))
        case "$PRIVILEGES" in all|*net_privaddr*) ;; *) PRIVILEGES="$PRIVILEGES,net_privaddr" ;; esac ;;
esac
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
elif [ "$(id -u)" != 0 ] && [ "$MODE" != print-manifest ]; then
    die "run as root (it writes $PREFIX and /opt/custom/smf and runs svccfg/svcadm)"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
if [ -d "$HERE/wheels" ]; then
    SOURCE="release"; TEMPLATE="$HERE/smf/dtagent.xml.in"; EXAMPLE="$HERE/etc/dtagent.toml"
    DOCS="$HERE/docs"
elif [ -f "$HERE/../pyproject.toml" ]; then
    SOURCE="checkout"; CHECKOUT=$(cd "$HERE/.." && pwd)
    TEMPLATE="$CHECKOUT/smf/dtagent.xml.in"; EXAMPLE="$CHECKOUT/examples/dtagent.toml"
    DOCS="$CHECKOUT/docs"
else
    die "run me from the release directory (with wheels/) or from a checkout"
fi

DEST="$ROOT$PREFIX"
SMF_DIR="$ROOT/opt/custom/smf"
MANIFEST="$SMF_DIR/dtagent.xml"
CONFIG="$DEST/etc/dtagent.toml"
CHANGED=0

# ------------------------------------------------------------------ helpers

svc_state() {
    # The instance's state (online, maintenance, ...), or "absent".
    svcs -H -o state "$FMRI" 2>/dev/null || echo absent
}

find_python() {
    if [ -n "$PYTHON" ]; then echo "$PYTHON"; return; fi
    for p in /opt/tools/bin/python3.11 /opt/tools/bin/python3.12 /opt/tools/bin/python3.13; do
        if [ -x "$p" ]; then echo "$p"; return; fi
    done
    for p in python3.11 python3.12 python3.13 python3; do
        if command -v "$p" >/dev/null 2>&1; then command -v "$p"; return; fi
    done
    die "no Python found. On SmartOS: run pkgsrc-setup, then 'pkgin install python311 py311-psutil py311-yaml py311-bcrypt', or pass --python PATH"
}

check_python() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null ||
        die "$1 is not Python 3.11 or newer (pkgin install python311, or --python PATH)"
    "$1" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$1 has no venv/ensurepip module (install the full Python package)"
}

release_version() {
    if [ "$SOURCE" = release ]; then
        cat "$HERE/VERSION"
    else
        sed -n 's/^__version__ = "\(.*\)"/\1/p' "$CHECKOUT/dtagent/__init__.py"
    fi
}

installed_version() {
    # The version the venv link points at, or "".
    if [ -L "$DEST/venv" ]; then
        basename "$(readlink "$DEST/venv")" | sed 's/^dtagent-//'
    fi
}

pip_in() {
    # Run pip for the venv $1 (the remaining arguments are pip's). The venv has no pip
    # of its own (ensurepip copies one in, which is slow and needs nothing else): the
    # system's pip seen through --system-site-packages, else the pip wheel Python
    # bundles in ensurepip (a wheel runs as a zip: python pip.whl/pip), else ensurepip.
    venv="$1"; shift
    if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python" -m pip "$@"
        return
    fi
    whl=$("$venv/bin/python" -c 'import ensurepip, pathlib
print(next(iter(sorted((pathlib.Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))), ""))' 2>/dev/null || true)
    if [ -n "$whl" ]; then
        "$venv/bin/python" "$whl/pip" "$@"
        return
    fi
    "$venv/bin/python" -m ensurepip -q >/dev/null
    "$venv/bin/python" -m pip "$@"
}

build_venv() {
    # $1: the venv directory to create and fill with this release.
    py=$(find_python)
    check_python "$py"
    "$py" -m venv --without-pip --system-site-packages "$1"
    if [ "$SOURCE" = release ]; then
        # the dependencies with C code come from pkgsrc: wheel, module, pkgsrc package
        for dep in psutil:psutil:py311-psutil PyYAML:yaml:py311-yaml bcrypt:bcrypt:py311-bcrypt; do
            wheel=${dep%%:*}; rest=${dep#*:}; module=${rest%%:*}; pkg=${rest#*:}
            if ! ls "$HERE"/wheels/"$wheel"-*.whl >/dev/null 2>&1 &&
                    ! "$1/bin/python" -c "import $module" 2>/dev/null; then
                rm -rf "$1"
                die "$wheel is missing for $py: 'pkgin install $pkg' (the venv uses the system's packages)"
            fi
        done
        pip_in "$1" install -q --no-index --find-links "$HERE/wheels" "dtagent==$VERSION" ||
            { rm -rf "$1"; die "pip could not install dtagent from $HERE/wheels"; }
    else
        pip_in "$1" install -q "$CHECKOUT" ||
            { rm -rf "$1"; die "pip could not install $CHECKOUT"; }
    fi
}

render_manifest() {
    # The manifest for this install, on stdout.
    sed -e "s|@@PREFIX@@|$PREFIX|g" -e "s|@@LISTEN@@|$LISTEN|g" \
        -e "s|@@LOG_LEVEL@@|$LOG_LEVEL|g" -e "s|@@PRIVILEGES@@|$PRIVILEGES|g" "$TEMPLATE"
}

write_if_changed() {
    # $1: file; stdin: its wanted content. Sets CHANGED=1 when it differs.
    tmp="$1.new.$$"
    cat > "$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$1"
    CHANGED=1
    return 0
}

run_check() {
    # $1: the venv; extra arguments go to dtagent check. Prints its report.
    venv="$1"; shift
    # With the service's own privilege set where ppriv(1) can give it (not under --root):
    # what passes here is what the service will be allowed to do.
    as_service=""
    if [ -z "$ROOT" ] && [ "$PRIVILEGES" != all ] && command -v ppriv >/dev/null 2>&1; then
        as_service="ppriv -e -s A=$PRIVILEGES"
    fi
    say "checking: $as_service $venv/bin/dtagent check --config $CONFIG $*"
    # -I: only the venv's own dtagent, whatever the current directory or PYTHONPATH hold
    # shellcheck disable=SC2086
    if $as_service "$venv/bin/python" -I -m dtagent check --config "$CONFIG" "$@" >&2; then
        return 0
    fi
    return 1
}

install_docs() {
    mkdir -p "$DEST/share/doc"
    for f in "$DOCS"/*.md; do
        [ -f "$f" ] || continue
        if ! cmp -s "$f" "$DEST/share/doc/$(basename "$f")" 2>/dev/null; then
            cp "$f" "$DEST/share/doc/"
            CHANGED=1
        fi
    done
}

install_config() {
    if [ -f "$CONFIG" ]; then
        return
    fi
    mkdir -p "$DEST/etc"
    cp "$EXAMPLE" "$CONFIG"
    chmod 644 "$CONFIG"
    CHANGED=1
    say "wrote $CONFIG (from the example; edit it, then 'svcadm refresh dtagent')"
}

link_venv() {
    # Point PREFIX/venv and PREFIX/bin/dtagent at lib/dtagent-$1. rename(2) replaces
    # the link itself in one step (mv would move the new link into the directory the
    # old one points at, and illumos and GNU ln -n mean different things).
    ln -s "lib/dtagent-$1" "$DEST/venv.tmp.$$"
    "$DEST/lib/dtagent-$1/bin/python" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' \
        "$DEST/venv.tmp.$$" "$DEST/venv"
    mkdir -p "$DEST/bin"
    [ -L "$DEST/bin/dtagent" ] || ln -s ../venv/bin/dtagent "$DEST/bin/dtagent"
}

import_and_enable() {
    if [ "$ENABLE" = 0 ]; then
        say "not enabling (--no-enable): svccfg import $PREFIX/../custom/smf/dtagent.xml when ready"
        return
    fi
    state=$(svc_state)
    if [ "$CHANGED" = 0 ] && [ "$state" = online ]; then
        return
    fi
    svccfg import "$MANIFEST"
    if [ "$state" = online ]; then
        # new settings: the agent re-reads config/* on refresh, keeping its counters
        svcadm refresh "$FMRI"
    else
        svcadm enable "$FMRI"
    fi
    say "service $FMRI enabled (logs: svcs -L dtagent)"
}

wait_online() {
    # 0 when the instance is online within ONLINE_WAIT seconds.
    waited=0
    while [ "$waited" -lt "$ONLINE_WAIT" ]; do
        case "$(svc_state)" in
            online) return 0 ;;
            maintenance) return 1 ;;
        esac
        sleep 1
        waited=$((waited + 1))
    done
    return 1
}

# -------------------------------------------------------------------- modes

do_install() {
    VERSION=$(release_version)
    current=$(installed_version)
    if [ -n "$current" ] && [ "$current" != "$VERSION" ]; then
        die "dtagent $current is installed; use --upgrade to install $VERSION over it"
    fi
    mkdir -p "$DEST/lib" "$DEST/var" "$SMF_DIR"
    if [ ! -x "$DEST/lib/dtagent-$VERSION/bin/python" ]; then
        say "installing dtagent $VERSION into $PREFIX"
        build_venv "$DEST/lib/dtagent-$VERSION"
        CHANGED=1
    fi
    [ "$(readlink "$DEST/venv" 2>/dev/null || true)" = "lib/dtagent-$VERSION" ] ||
        { link_venv "$VERSION"; CHANGED=1; }
    install_config
    install_docs
    render_manifest | write_if_changed "$MANIFEST" || true
    if ! run_check "$DEST/venv"; then
        if [ "$FORCE" = 0 ]; then
            die "'dtagent check' found a problem (above); fix it and run me again, or --force"
        fi
        say "enabling anyway (--force)"
    fi
    import_and_enable
    if [ "$CHANGED" = 0 ]; then
        say "dtagent $VERSION is installed; nothing to change"
    fi
}

do_upgrade() {
    VERSION=$(release_version)
    current=$(installed_version)
    [ -n "$current" ] || die "dtagent is not installed under $PREFIX; run me without --upgrade"
    if [ "$current" = "$VERSION" ]; then
        do_install
        return
    fi
    new="$DEST/lib/dtagent-$VERSION"
    rm -rf "$new"
    say "upgrading dtagent $current to $VERSION (config kept: $CONFIG)"
    build_venv "$new"
    # the running agent holds the listen address: that one is checked after the restart
    if ! run_check "$new" --skip listen; then
        rm -rf "$new"
        die "dtagent $VERSION fails its check (above); $current left in place and running"
    fi
    cp -p "$MANIFEST" "$MANIFEST.previous" 2>/dev/null || true
    link_venv "$VERSION"
    install_docs
    render_manifest | write_if_changed "$MANIFEST" || true
    svccfg import "$MANIFEST"
    svcadm restart "$FMRI"
    if wait_online; then
        rm -rf "$DEST/lib/dtagent-$current" "$MANIFEST.previous"
        say "upgraded to dtagent $VERSION"
        return
    fi
    say "dtagent $VERSION did not come online (state: $(svc_state)); rolling back to $current"
    link_venv "$current"
    if [ -f "$MANIFEST.previous" ]; then
        mv -f "$MANIFEST.previous" "$MANIFEST"
    fi
    svccfg import "$MANIFEST"
    svcadm restart "$FMRI"
    svcadm clear "$FMRI" 2>/dev/null || true
    rm -rf "$new"
    die "upgrade to $VERSION rolled back; $current is running again (see svcs -L dtagent)"
}

do_uninstall() {
    if [ "$(svc_state)" != absent ]; then
        # smartos-docs smf-quick-reference.md, "Removing Services"
        svcadm disable -s "$FMRI" || true
        svccfg delete svc:/application/dtagent || true
    fi
    rm -f "$MANIFEST" "$MANIFEST.previous"
    rm -rf "$DEST/lib" "$DEST/venv" "$DEST/bin" "$DEST/share"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$DEST"
        say "removed $PREFIX and its config"
    else
        rmdir "$DEST/var" 2>/dev/null || true
        say "removed dtagent; kept $PREFIX/etc (--purge removes it too)"
    fi
}

case "$MODE" in
    print-manifest) render_manifest ;;
    install) do_install ;;
    upgrade) do_upgrade ;;
    uninstall) do_uninstall ;;
esac
