#!/usr/bin/env bash
# The dashboard's browser tests (dashboard/tests/*.test.mjs, node:test + playwright-core) in
# headless Chromium, against a real orchestrator with its own nats-server and a fresh database.
# "make test" runs it after the other suites.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/browser-test.sh [NODE TEST ARGS...]

Makes sure Chromium is installed (/usr/bin/chromium; as root it is installed with apt-get when
missing), builds the dashboard (scripts/dashboard.sh, which also installs the pinned
playwright-core), then runs
  node --test [NODE TEST ARGS...] dashboard/tests/
Each run starts its own nats-server, creates a fresh database in the test PostgreSQL (dropped
at the end) and runs the orchestrator with an admin and a viewer API key; everything is stopped
at the end, also on failure.

Environment:
  ORCH_TEST_DATABASE_URL  postgres URL of the test cluster (scripts/test.sh sets it); when unset,
                          the shared test PostgreSQL in $ORCH_LOCAL/test/pg is used (started, and
                          stopped at the end, when it is not running)
  ORCH_NATS_SERVER        nats-server binary [the one scripts/deps.sh installs]
  ORCH_BIN                orchestrator binary [target/debug/orchestrator]
  ORCH_TEST_PG_PORT       port of the test PostgreSQL when this script starts it [55433]
  ORCH_KEEP_TEST_DIR=1    keep the servers' logs (the path is printed)
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
esac

CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        log "installing Chromium (apt-get install chromium)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends chromium >&2 || die "apt-get install chromium failed"
        [ -x "$CHROMIUM" ] || die "chromium was installed but $CHROMIUM is missing"
    else
        die "Chromium is needed at $CHROMIUM for the browser tests. Install it:
    Debian/Ubuntu (as root): apt-get install --no-install-recommends chromium"
    fi
fi
log "using $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"

command -v psql >/dev/null 2>&1 || die "psql not found (the tests create their database with it): apt-get install postgresql-client"

"$ROOT/scripts/dashboard.sh"

export ORCH_NATS_SERVER="${ORCH_NATS_SERVER:-$NATS_SERVER}"
[ -x "$ORCH_NATS_SERVER" ] || die "nats-server not found at $ORCH_NATS_SERVER; run scripts/deps.sh"
export ORCH_BIN="${ORCH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/orchestrator}"
[ -x "$ORCH_BIN" ] || die "orchestrator binary not found at $ORCH_BIN; build it: cargo build -p orchestrator --bins"

PG_DIR="$ORCH_LOCAL/test/pg"
started_pg=0
# shellcheck disable=SC2317 # invoked by the trap below
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    [ "$started_pg" = 0 ] || "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -z "${ORCH_TEST_DATABASE_URL:-}" ]; then
    "$ROOT/scripts/deps.sh"
    export ORCH_PG_FAST="${ORCH_PG_FAST:-1}"
    # Stopped at the end only if this run started it (another run may be using it).
    "$ROOT/scripts/pg.sh" status "$PG_DIR" >/dev/null 2>&1 || started_pg=1
    ORCH_TEST_DATABASE_URL="$("$ROOT/scripts/pg.sh" start "$PG_DIR" "${ORCH_TEST_PG_PORT:-55433}")"
    export ORCH_TEST_DATABASE_URL
fi
log "ORCH_TEST_DATABASE_URL=$ORCH_TEST_DATABASE_URL"
log "ORCH_NATS_SERVER=$ORCH_NATS_SERVER"
log "ORCH_BIN=$ORCH_BIN"

cd "$ROOT"
log "running: node --test ${*:+$* }dashboard/tests/"
node --test "$@" dashboard/tests/
