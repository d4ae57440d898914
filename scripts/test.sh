#!/usr/bin/env bash
# "make test" (and CI): runs the workspace tests against a shared, throw-away
# PostgreSQL in $ORCH_LOCAL/test/pg. Tests that need NATS start their own
# servers from $ORCH_NATS_SERVER; tests that need a private PostgreSQL call
# scripts/pg.sh themselves.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/test.sh [RUNNER ARGS...]

Checks dependencies (scripts/deps.sh), starts the shared test PostgreSQL,
builds the Python bridge crate (orch-bridge) and runs
  cargo nextest run --workspace --no-fail-fast [RUNNER ARGS...]
or, without cargo-nextest,
  cargo test --workspace [RUNNER ARGS...]
then builds and installs the Python bridge's wheel (scripts/bridge.sh) and runs its
tests with pytest (bridge-py/tests) against the orchestrator binary, then builds the
dashboard and runs its browser tests in headless Chromium (scripts/browser-test.sh), and
last the test of the optional OTLP export, in a build with the cargo feature otlp.
With RUNNER ARGS, only the Rust tests run, unless ORCH_TEST_PYTHON=1 or ORCH_TEST_BROWSER=1.
The exit status is non-zero if any test failed. The test PostgreSQL is stopped on exit.

Exported to the tests:
  ORCH_TEST_DATABASE_URL  postgres://orch@127.0.0.1:PORT/orch (shared cluster)
  ORCH_NATS_SERVER        path of the nats-server binary
  ORCH_OPENAPI_VALIDATOR  path of openapi-spec-validator (tests/openapi.rs)
  ORCH_SCHEMATHESIS       path of schemathesis (tests/api_fuzz.rs)
  ORCH_TOOLS_PYTHON       the venv's Python, with prometheus-client (tests/metrics.rs)
  ORCH_LOCAL              <repo>/.local unless set
  ORCH_PG_FAST            1 unless set (no fsync: test data only)

Environment:
  ORCH_TEST_PG_PORT       port of the shared test PostgreSQL [55433]
  ORCH_TEST_PYTHON        1: run the Python tests even with RUNNER ARGS; 0: never
  ORCH_TEST_BROWSER       1: run the browser tests even with RUNNER ARGS; 0: never
  PYTEST_ARGS             extra arguments for pytest, e.g. "-k durable"
  ORCH_TEST_LOG           the log filter of the orchestrators the Rust tests start [warn],
                          e.g. "info" with "-E 'test(NAME)' --no-capture" to follow one test
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
esac

PG_DIR="$ORCH_LOCAL/test/pg"
PG_PORT="${ORCH_TEST_PG_PORT:-55433}"
SCRIPTS="$ROOT/scripts"

"$SCRIPTS/deps.sh"

# A CI run builds once from a fresh clone: incremental compilation state would only take disk
# (gigabytes of it) that a small CI machine may not have.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

# Test data is disposable: skip fsync (also inherited by private clusters the
# tests start through pg.sh).
export ORCH_PG_FAST="${ORCH_PG_FAST:-1}"
export ORCH_LOCAL

# shellcheck disable=SC2317 # invoked by the trap below
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    "$SCRIPTS/pg.sh" stop "$PG_DIR" || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ORCH_TEST_DATABASE_URL="$("$SCRIPTS/pg.sh" start "$PG_DIR" "$PG_PORT")"
export ORCH_TEST_DATABASE_URL
export ORCH_NATS_SERVER="$NATS_SERVER"
export ORCH_OPENAPI_VALIDATOR="$OPENAPI_VALIDATOR"
export ORCH_SCHEMATHESIS="$SCHEMATHESIS"
export ORCH_TOOLS_PYTHON="$VENV/bin/python"
log "ORCH_TEST_DATABASE_URL=$ORCH_TEST_DATABASE_URL"
log "ORCH_NATS_SERVER=$ORCH_NATS_SERVER"

cd "$ROOT"

# orch-bridge (pyo3) is not in default-members; build it explicitly, before
# the tests, so that the runner's summary stays the last thing printed.
log "building orch-bridge"
cargo build -p orch-bridge

rc=0
if cargo nextest --version >/dev/null 2>&1; then
    log "running: cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@" || rc=$?
else
    log "cargo-nextest not installed (cargo install cargo-nextest); using cargo test"
    log "running: cargo test --workspace $*"
    cargo test --workspace "$@" || rc=$?
fi

python="${ORCH_TEST_PYTHON:-}"
[ -n "$python" ] || { [ $# -eq 0 ] && python=1 || python=0; }
if [ "$python" = 1 ]; then
    "$SCRIPTS/bridge.sh"
    # The tests run the orchestrator and orch-sleeper binaries (target/debug).
    cargo build -p orchestrator --bins
    log "running: pytest bridge-py/tests ${PYTEST_ARGS:-}"
    # shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
    "$BRIDGE_PYTHON" -m pytest bridge-py/tests ${PYTEST_ARGS:-} || rc=$?
fi

browser="${ORCH_TEST_BROWSER:-}"
[ -n "$browser" ] || { [ $# -eq 0 ] && browser=1 || browser=0; }
if [ "$browser" = 1 ]; then
    # The dashboard in headless Chromium against the orchestrator binary (target/debug).
    cargo build -p orchestrator --bins
    log "running: scripts/browser-test.sh"
    "$SCRIPTS/browser-test.sh" || rc=$?
fi

# The optional OTLP export is a cargo feature, so its test needs a build with it. Last, because
# that build replaces target/debug/orchestrator, which the suites above run.
if [ $# -eq 0 ]; then
    log "running: the OTLP export test (cargo feature otlp)"
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run -p orchestrator --features otlp --test otlp || rc=$?
    else
        cargo test -p orchestrator --features otlp --test otlp || rc=$?
    fi
fi
exit "$rc"
