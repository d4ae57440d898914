#!/usr/bin/env bash
# "make dev": runs the orchestrator locally against its own NATS (JetStream)
# and PostgreSQL, both kept in $ORCH_LOCAL/dev so data survives restarts.
# Ctrl-C stops the orchestrator, then NATS and PostgreSQL; managed services keep running
# under their shims, and the next "make dev" adopts them ("make stop" stops them).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/dev.sh [--help]

Installs/checks dependencies (scripts/deps.sh), starts NATS and PostgreSQL
under .local/dev, builds the orchestrator and runs "orchestrator serve" in the
foreground. Ctrl-C stops the orchestrator, NATS and PostgreSQL; managed
services keep running and the next run adopts them ("make stop" stops them).
Running it again reuses the data.

Environment (defaults in brackets):
  ORCH_DEV_NATS_PORT      NATS client port [4222]
  ORCH_NATS_MONITOR_PORT  NATS HTTP monitoring port [8222]
  ORCH_DEV_PG_PORT        PostgreSQL port [55432]
  ORCH_HTTP_PORT          orchestrator HTTP API/dashboard port [8080]
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") ;;
*) usage >&2; die "unexpected argument: $1" ;;
esac

NATS_PORT="${ORCH_DEV_NATS_PORT:-4222}"
PG_PORT="${ORCH_DEV_PG_PORT:-55432}"
HTTP_PORT="${ORCH_HTTP_PORT:-8080}"
export ORCH_NATS_MONITOR_PORT="${ORCH_NATS_MONITOR_PORT:-8222}"
DEV_DIR="$ORCH_LOCAL/dev"
NATS_DIR="$DEV_DIR/nats"
PG_DIR="$DEV_DIR/pg"
SCRIPTS="$ROOT/scripts"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/orchestrator"

"$SCRIPTS/deps.sh"

ORCH_PID=""
# Runs once on any exit (normal, error, Ctrl-C, kill): stop the orchestrator
# first (it may flush to NATS/PostgreSQL while shutting down), then the servers.
# shellcheck disable=SC2317 # invoked by the trap below
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$ORCH_PID" ] && kill -0 "$ORCH_PID" 2>/dev/null; then
        log "stopping orchestrator (pid $ORCH_PID)"
        stop_pid "$ORCH_PID" orchestrator 20
        wait "$ORCH_PID" 2>/dev/null || true
    fi
    "$SCRIPTS/nats.sh" stop "$NATS_DIR" || true
    "$SCRIPTS/pg.sh" stop "$PG_DIR" || true
    log "everything stopped (data kept in $DEV_DIR)"
    exit "$rc"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap runs with a telling status.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# NATS refuses anonymous clients: a user per role, made once and kept with the dev data.
AUTH_DIR="$DEV_DIR/nats-auth"
"$SCRIPTS/nats-auth.sh" "$AUTH_DIR" "127.0.0.1:$NATS_PORT"
nats_url="$(ORCH_NATS_CONFIG="$AUTH_DIR/nats-auth.conf" "$SCRIPTS/nats.sh" start "$NATS_DIR" "$NATS_PORT")"
pg_url="$("$SCRIPTS/pg.sh" start "$PG_DIR" "$PG_PORT")"

log "building the orchestrator"
(cd "$ROOT" && cargo build -p orchestrator --bin orchestrator --bin orch-shim --bin orch-sleeper)
"$SCRIPTS/dashboard.sh"

# A development admin token, made once and kept with the dev data, so a dashboard tab or a
# script keeps working across restarts. The API requires it like production would.
TOKEN_FILE="$DEV_DIR/admin-token"
if [ ! -s "$TOKEN_FILE" ]; then
    (umask 077 && python3 -c 'import secrets; print("dev-" + secrets.token_urlsafe(32))' >"$TOKEN_FILE")
fi
DEV_TOKEN="$(cat "$TOKEN_FILE")"

cat <<EOF

  Orchestrator (development)
    Dashboard             http://127.0.0.1:$HTTP_PORT/#token=$DEV_TOKEN
    API reference         http://127.0.0.1:$HTTP_PORT/api-docs/
    Admin token           $DEV_TOKEN   (kept in $TOKEN_FILE)
    NATS                  $nats_url   (monitor http://127.0.0.1:$ORCH_NATS_MONITOR_PORT)
                          anonymous clients are refused; a user per role, URLs with passwords in
                          $AUTH_DIR/{service,engine,observer,operator}.url
    PostgreSQL            $pg_url
    Data                  $NATS_DIR
                          $PG_DIR
  Try it (in another terminal):
    export ORCH_API_TOKEN=$DEV_TOKEN
    curl -s -X POST http://127.0.0.1:$HTTP_PORT/api/v1/services \\
         -H "authorization: Bearer \$ORCH_API_TOKEN" -H 'content-type: application/json' \\
         -d '{"name":"web","address":"127.0.0.1","port":9000}'
    curl -s -H "authorization: Bearer \$ORCH_API_TOKEN" http://127.0.0.1:$HTTP_PORT/api/v1/services
    $BIN events --nats-url "\$(cat $AUTH_DIR/observer.url)" --all
  Managed services (a demo stack of stand-in services):
    $BIN up -f examples/demo.toml --api-url http://127.0.0.1:$HTTP_PORT
    $BIN profile --api-url http://127.0.0.1:$HTTP_PORT
    $BIN down --api-url http://127.0.0.1:$HTTP_PORT
  Ctrl-C stops the orchestrator, NATS and PostgreSQL. Managed services keep running
  (as they do across a crash or an upgrade of the orchestrator) and the next
  "make dev" adopts them; "make stop" (or "$BIN down" first) stops them.

EOF

# Not exec'd, and run in the background + wait, so that the trap above runs
# and a signal sent to this script is handled at once (bash defers traps
# while a foreground child runs). The binary applies migrations itself.
ORCH_NATS_URL="$nats_url" \
    ORCH_NATS_USER=orchestrator \
    ORCH_NATS_PASSWORD="$(cat "$AUTH_DIR/orchestrator.password")" \
    ORCH_CHECK_NATS_USER=checks \
    ORCH_CHECK_NATS_PASSWORD="$(cat "$AUTH_DIR/checks.password")" \
    ORCH_DATABASE_URL="$pg_url" \
    ORCH_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
    ORCH_AGENT_LOG_DIR="${ORCH_AGENT_LOG_DIR:-$DEV_DIR/agent-logs}" \
    ORCH_LOG_FORMAT="${ORCH_LOG_FORMAT:-human}" \
    ORCH_DASHBOARD_DIR="$ROOT/dashboard/dist" \
    ORCH_API_KEYS="admin:dev-admin:$DEV_TOKEN" \
    "$BIN" serve &
ORCH_PID=$!
rc=0
wait "$ORCH_PID" || rc=$?
ORCH_PID=""
log "orchestrator exited with status $rc"
exit "$rc"
