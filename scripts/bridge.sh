#!/usr/bin/env bash
# Builds the Python bridge (bridge-py, package orch_bridge) as a wheel with maturin and installs
# that wheel into the project's venv, the way a user would: "pip install <wheel>". Also installs
# the pinned Python tools its tests, example and benchmarks use.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/bridge.sh [--release]

Builds bridge-py into a wheel (target/wheels/) with maturin==$MATURIN_VERSION and installs it
into $VENV, with pytest==$PYTEST_VERSION and nats-py==$NATS_PY_VERSION (the pure-Python
client the benchmarks compare against).

  --release   optimised build (benchmarks); the default is a debug build (tests)

Afterwards: $BRIDGE_PYTHON -c 'import orch_bridge'
EOF
}

profile=debug
case "${1:-}" in
-h | --help) usage; exit 0 ;;
--release) profile=release ;;
"") ;;
*) usage >&2; die "unexpected argument: $1" ;;
esac

"$ROOT/scripts/deps.sh"

# The Python tools, pinned; pip is only called when one is missing or at another version.
want=("maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION" "nats-py==$NATS_PY_VERSION")
missing=()
for spec in "${want[@]}"; do
    name="${spec%%==*}"
    version="${spec##*==}"
    dist="${name//-/_}"
    compgen -G "$VENV/lib/python*/site-packages/$dist-$version.dist-info" >/dev/null || missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${missing[@]}" ||
        die "pip install ${missing[*]} failed (is the PyPI registry reachable?)"
fi

cd "$ROOT"
wheels="$ROOT/target/wheels/$profile"
rm -rf "$wheels"
args=(build --manifest-path bridge-py/Cargo.toml --out "$wheels" --interpreter "$BRIDGE_PYTHON")
[ "$profile" = release ] && args+=(--release)
log "building the orch_bridge wheel ($profile)"
"$VENV/bin/maturin" "${args[@]}" >&2 || die "maturin build failed (see above)"
wheel="$(compgen -G "$wheels/orch_bridge-*.whl" | head -1)"
[ -n "$wheel" ] || die "maturin built no wheel into $wheels"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel" ||
    die "pip install $wheel failed"
"$BRIDGE_PYTHON" -c 'import orch_bridge' || die "the installed wheel does not import"
log "installed $(basename "$wheel") into $VENV"
