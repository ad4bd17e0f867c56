#!/usr/bin/env bash
# Build the release tarball: dist/dtagent-VERSION.tar.gz, which installs offline.
#
#   dtagent-VERSION/install.sh            the installer (scripts/install.sh)
#   dtagent-VERSION/VERSION
#   dtagent-VERSION/wheels/*.whl          dtagent and its pure-Python dependencies
#   dtagent-VERSION/smf/dtagent.xml.in    the SMF manifest template
#   dtagent-VERSION/etc/dtagent.toml      the annotated example config
#   dtagent-VERSION/docs/*.md, README.md
#
# psutil, PyYAML and bcrypt have C (or Rust) code and no wheel for illumos, so they are
# not in the wheelhouse: the installer's venv takes them from pkgsrc (py311-psutil,
# py311-yaml, py311-bcrypt) through --system-site-packages.
# Usage: scripts/dist.sh [--wheels-from DIR]   (DIR: wheels to use instead of PyPI)
. "$(dirname "$0")/_env.sh"
set -o pipefail

WHEELS_FROM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels-from) WHEELS_FROM="$2"; shift 2 ;;
        *) echo "dist.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

ensure_venv
cd "$ROOT"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' dtagent/__init__.py)
NAME="dtagent-$VERSION"
STAGE="$ROOT/build/dist/$NAME"
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels" "$STAGE/smf" "$STAGE/etc" "$STAGE/docs" "$ROOT/dist"

"$VENV/bin/python" -m pip wheel -q --no-deps "$ROOT" -w "$STAGE/wheels"
# The runtime dependencies of pyproject.toml, except those pkgsrc provides.
deps=$("$VENV/bin/python" - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
binary = ("psutil", "pyyaml", "bcrypt")
print(" ".join(d for d in deps if not d.lower().startswith(binary)))
PY
)
if [ -n "$WHEELS_FROM" ]; then
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip download -q --no-index --find-links "$WHEELS_FROM" \
        --only-binary=:all: -d "$STAGE/wheels" $deps
else
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip download -q --only-binary=:all: --python-version 3.11 \
        --platform any --implementation py --abi none -d "$STAGE/wheels" $deps
fi
for w in "$STAGE"/wheels/*.whl; do
    case "$w" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
        *) echo "dist.sh: $w is not pure Python; it would not install on illumos" >&2; exit 1 ;;
    esac
done

cp scripts/install.sh "$STAGE/install.sh"
chmod 755 "$STAGE/install.sh"
echo "$VERSION" > "$STAGE/VERSION"
cp smf/dtagent.xml.in "$STAGE/smf/"
cp examples/dtagent.toml "$STAGE/etc/dtagent.toml"
cp docs/*.md "$STAGE/docs/"
cp README.md "$STAGE/"
tar -C "$ROOT/build/dist" -czf "$ROOT/dist/$NAME.tar.gz" "$NAME"
echo "$ROOT/dist/$NAME.tar.gz"
