#!/usr/bin/env bash
# "make dev-ha": the orchestrator as a group of three replicas (a, b, c) on this machine, against a
# 3-node NATS cluster (JetStream on each, every stream replicated on all three) and one
# PostgreSQL, all kept in $ORCH_LOCAL/dev-ha so data survives restarts. One replica leads (a
# lease in PostgreSQL), the others stand by and forward HTTP to it; kill the leader and another
# takes over. Ctrl-C stops the replicas, then NATS and PostgreSQL; managed services keep running
# under their shims and the next leader adopts them ("make stop" stops them).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/dev-ha.sh [--help | stop]

  (no argument)  Installs/checks dependencies (scripts/deps.sh), starts a 3-node NATS
                 cluster and PostgreSQL under .local/dev-ha, builds the orchestrator and
                 runs three replicas of "orchestrator serve --replica NAME" (a, b, c), then
                 stays in the foreground, printing each change of leader. Ctrl-C stops the
                 replicas (standbys first), NATS and PostgreSQL; managed services keep
                 running and the next leader adopts them. Running it again reuses the data.
  stop           Stops what a run left behind (after its terminal was closed or it was
                 killed): the replicas, the managed services, NATS and PostgreSQL.
                 "make stop" does it.

Replica a starts first, so it leads at first; b and c stand by. Every replica
answers HTTP: a standby forwards what it does not answer itself to the leader,
so a client may use any of them. The embedded node agent of whichever replica
leads runs the managed services (all act as node "local" and share one agent
directory, so the next leader adopts what the last one started).

NATS refuses anonymous clients (the users of scripts/nats-auth.sh, as "make dev"
makes them) and the cluster's route port refuses servers without the route
password. Everything listens on 127.0.0.1 only.

Environment (defaults in brackets; a "first" port is used by the first node or
replica, the next two ports by the other two):
  ORCH_DEV_HA_NATS_PORT     first NATS client port [4223]
  ORCH_DEV_HA_CLUSTER_PORT  first NATS cluster (route) port [6223]
  ORCH_DEV_HA_MONITOR_PORT  first NATS HTTP monitoring port [8223]
  ORCH_DEV_HA_PG_PORT       PostgreSQL port [55434]
  ORCH_DEV_HA_HTTP_PORT     first replica's HTTP API/dashboard port [8080]
  ORCH_DEV_HA_LEASE_TTL     the replicas' --lease-ttl [5s]
  ORCH_AGENT_LOG_DIR        the shared agent directory [.local/dev-ha/agent-logs]
  ORCH_LOG_FORMAT           the replicas' log format [human]

Files in .local/dev-ha: logs/ (every process's log), nats-auth/ (users and
passwords), nats-1..3/ and pg/ (data), run/ (the replicas' pids), admin-token.
EOF
}

MODE=run
case "${1:-}" in
-h | --help) usage; exit 0 ;;
stop) MODE=stop ;;
"") ;;
*) usage >&2; die "unexpected argument: $1" ;;
esac

HA_DIR="$ORCH_LOCAL/dev-ha"
AUTH_DIR="$HA_DIR/nats-auth"
PG_DIR="$HA_DIR/pg"
LOG_DIR="$HA_DIR/logs"
RUN_DIR="$HA_DIR/run"
SCRIPTS="$ROOT/scripts"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/orchestrator"
REPLICAS=(a b c)
NODES=(1 2 3)

# A first port: it and the next two must be valid.
first_port() {
    local name=$1 value=$2
    if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$value" -lt 1 ] || [ "$value" -gt 65533 ]; then
        die "$name=$value: a port from 1 to 65533 (it and the next two are used)"
    fi
    printf '%s\n' "$value"
}

# True once something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp, no extra tool).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid of replica $1 if it runs. The pid file may be stale (crash, reboot) and its pid reused
# by another program, so check the process name too.
replica_pid() {
    local pid
    pid="$(cat "$RUN_DIR/$1.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    case "$(ps -o comm= -p "$pid" 2>/dev/null)" in
    *orchestrator*) printf '%s\n' "$pid" ;;
    *) return 1 ;;
    esac
}

# The role replica $1 reports on /readyz (public, no token needed): leader, standby, or nothing
# while it is not ready.
replica_role() {
    local port
    port="$(cat "$RUN_DIR/$1.port" 2>/dev/null)" || return 0
    curl -fsS -m 2 "http://127.0.0.1:$port/readyz" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get("role", ""))' 2>/dev/null || true
}

# Stops replicas $2... (their role in $1) at once and waits for each: the group takes the time of
# its slowest.
stop_group() {
    local role=$1 name pid pids=()
    shift
    for name in "$@"; do
        pid="$(replica_pid "$name")" || continue
        log "stopping replica $name (pid $pid, $role)"
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        stop_pid "$pid" orchestrator 20
        # Reap it when it is our child (a run's cleanup), so no zombie is left for the shell.
        wait "$pid" 2>/dev/null || true
    done
}

# Stops the running replicas: the standbys first, then the leader. Stopped the other way round,
# a standby would be elected as the leader lets go of the lease, and start all the work only to
# stop it again.
stop_replicas() {
    local leaders=() standbys=() name
    for name in "${REPLICAS[@]}"; do
        replica_pid "$name" >/dev/null || continue
        if [ "$(replica_role "$name")" = leader ]; then leaders+=("$name"); else standbys+=("$name"); fi
    done
    stop_group standby ${standbys[@]+"${standbys[@]}"}
    stop_group leader ${leaders[@]+"${leaders[@]}"}
    for name in "${REPLICAS[@]}"; do rm -f "$RUN_DIR/$name.pid"; done
}

stop_servers() {
    local i pids=()
    # The nodes all at once: stopped one by one, the last ones would elect new stream leaders
    # among themselves for nothing, and each stop waits its turn.
    for i in "${NODES[@]}"; do
        "$SCRIPTS/nats.sh" stop "$HA_DIR/nats-$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    "$SCRIPTS/pg.sh" stop "$PG_DIR" || true
}

# The agent directory of the last run (ORCH_AGENT_LOG_DIR may have named another one).
agent_log_dir() {
    cat "$HA_DIR/agent-log-dir" 2>/dev/null || printf '%s\n' "$HA_DIR/agent-logs"
}

if [ "$MODE" = stop ]; then
    [ -d "$HA_DIR" ] || { log "nothing to stop ($HA_DIR does not exist)"; exit 0; }
    stop_replicas
    # Managed services outlive the replicas; only now, with no leader left to restart them, can
    # they be stopped for good.
    if [ -x "$BIN" ] && [ -d "$(agent_log_dir)" ]; then
        log "stopping the managed services (orchestrator agent --cleanup --log-dir $(agent_log_dir))"
        "$BIN" agent --cleanup --log warn --log-dir "$(agent_log_dir)" || true
    fi
    stop_servers
    log "everything stopped (data kept in $HA_DIR)"
    exit 0
fi

NATS_PORT="$(first_port ORCH_DEV_HA_NATS_PORT "${ORCH_DEV_HA_NATS_PORT:-4223}")"
CLUSTER_PORT="$(first_port ORCH_DEV_HA_CLUSTER_PORT "${ORCH_DEV_HA_CLUSTER_PORT:-6223}")"
MONITOR_PORT="$(first_port ORCH_DEV_HA_MONITOR_PORT "${ORCH_DEV_HA_MONITOR_PORT:-8223}")"
HTTP_PORT="$(first_port ORCH_DEV_HA_HTTP_PORT "${ORCH_DEV_HA_HTTP_PORT:-8080}")"
PG_PORT="${ORCH_DEV_HA_PG_PORT:-55434}"
LEASE_TTL="${ORCH_DEV_HA_LEASE_TTL:-5s}"
AGENT_LOG_DIR="$(abspath "${ORCH_AGENT_LOG_DIR:-$HA_DIR/agent-logs}")"

for name in "${REPLICAS[@]}"; do
    if pid="$(replica_pid "$name")"; then
        die "replica $name of an earlier run still runs (pid $pid); stop that run first: scripts/dev-ha.sh stop"
    fi
done
# Fail before the build rather than when a replica cannot bind its port.
for ((i = 0; i < ${#REPLICAS[@]}; i++)); do
    ! port_open $((HTTP_PORT + i)) ||
        die "port $((HTTP_PORT + i)) on 127.0.0.1 is already in use (make dev? set ORCH_DEV_HA_HTTP_PORT)"
done

# Each replica and NATS node runs in a session of its own where setsid exists, so that Ctrl-C in
# the terminal reaches this script only and the cleanup below stops them in order: the standbys,
# the leader (while NATS and PostgreSQL still take its last writes), then the servers. pg_ctl
# detaches PostgreSQL by itself.
SETSID=()
if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); fi

"$SCRIPTS/deps.sh"
mkdir -p "$LOG_DIR" "$RUN_DIR"
# The terminal's stderr, kept for messages while bash's own notices are silenced (the loop at the end).
exec 4>&2

# Runs once on any exit (normal, error, Ctrl-C, kill): the replicas first (the leader may flush to
# NATS/PostgreSQL while it shuts down), then the servers.
# shellcheck disable=SC2317 # invoked by the trap below
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    # Messages to the terminal again, wherever the signal came (see the loop at the end).
    exec 2>&4
    stop_replicas
    stop_servers
    log "everything stopped (data kept in $HA_DIR, logs in $LOG_DIR)"
    exit "$rc"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap runs with a telling status.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# NATS refuses anonymous clients: a user per role, as "make dev" makes them, kept with the data.
# The client URLs name the first node; clients learn the others from it.
"$SCRIPTS/nats-auth.sh" "$AUTH_DIR" "127.0.0.1:$NATS_PORT"
# The cluster's routes authenticate too: an open route port would let any local process join as a
# server and see every message, whatever the users' permissions say.
if [ ! -s "$AUTH_DIR/route.password" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$AUTH_DIR/route.password")
fi
ROUTE_PASSWORD="$(cat "$AUTH_DIR/route.password")"

routes=""
for i in "${NODES[@]}"; do
    routes+="    nats-route://route:$ROUTE_PASSWORD@127.0.0.1:$((CLUSTER_PORT + i - 1))"$'\n'
done
nats_urls=()
for i in "${NODES[@]}"; do
    dir="$HA_DIR/nats-$i"
    mkdir -p "$dir"
    # The node's configuration, rewritten at every start so changed ports take effect. Its name,
    # cluster and routes are here (scripts/nats.sh gives the client and monitoring ports, the
    # store and JetStream as flags); the users come from nats-auth.conf, one copy for all nodes.
    (umask 077 && cat >"$dir/nats.conf" <<EOF
# Written by scripts/dev-ha.sh at every start: edits are overwritten.
server_name: nats-$i
include "../nats-auth/nats-auth.conf"
cluster {
  name: orch-dev-ha
  listen: "127.0.0.1:$((CLUSTER_PORT + i - 1))"
  authorization { user: route, password: "$ROUTE_PASSWORD" }
  # Every member, this one included (a server skips its own route).
  routes: [
$routes  ]
}
EOF
    )
    # Each node waits only for its own JetStream: the cluster forms once all three run (below).
    url="$(ORCH_NATS_CONFIG="$dir/nats.conf" ORCH_NATS_MONITOR_PORT=$((MONITOR_PORT + i - 1)) \
        ${SETSID[@]+"${SETSID[@]}"} "$SCRIPTS/nats.sh" start "$dir" $((NATS_PORT + i - 1)))"
    nats_urls+=("$url")
    ln -sfn "$dir/nats.log" "$LOG_DIR/nats-$i.log"
done
# The cluster is ready once it has a JetStream meta leader: full /healthz on every node.
log "waiting for the NATS cluster to elect its JetStream leader"
for i in "${NODES[@]}"; do
    for ((t = 0; t < 600; t++)); do
        curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$((MONITOR_PORT + i - 1))/healthz" 2>/dev/null && break
        sleep 0.1
    done
    [ "$t" -lt 600 ] || die "NATS node $i has no healthy JetStream after 60 s (see $LOG_DIR/nats-$i.log)"
done
NATS_URL="$(IFS=,; printf '%s' "${nats_urls[*]}")"

pg_url="$("$SCRIPTS/pg.sh" start "$PG_DIR" "$PG_PORT")"
# pg.sh may keep the cluster elsewhere (as root, when its user cannot reach this directory).
pg_data="$(cat "$PG_DIR/orch-pg-location" 2>/dev/null || printf '%s' "$PG_DIR")"
ln -sfn "$pg_data/server.log" "$LOG_DIR/postgres.log"

log "building the orchestrator"
(cd "$ROOT" && cargo build -p orchestrator --bin orchestrator --bin orch-shim --bin orch-sleeper)
"$SCRIPTS/dashboard.sh"

# A development admin token, made once and kept with the data, so a dashboard tab or a script
# keeps working across restarts. The API requires it like production would, on every replica.
TOKEN_FILE="$HA_DIR/admin-token"
if [ ! -s "$TOKEN_FILE" ]; then
    (umask 077 && python3 -c 'import secrets; print("dev-" + secrets.token_urlsafe(32))' >"$TOKEN_FILE")
fi
DEV_TOKEN="$(cat "$TOKEN_FILE")"
mkdir -p "$AGENT_LOG_DIR"
printf '%s\n' "$AGENT_LOG_DIR" >"$HA_DIR/agent-log-dir"

PIDS=()
# Starts replica number $1 (0, 1, 2) in the background, its output to its log.
start_replica() {
    local i=$1 name=${REPLICAS[$1]} port=$((HTTP_PORT + $1))
    printf '%s\n' "$port" >"$RUN_DIR/$name.port"
    printf '\n--- %s: scripts/dev-ha.sh starts replica %s\n' "$(date '+%F %T')" "$name" >>"$LOG_DIR/$name.log"
    # Not exec'd, and run in the background, so that the trap above runs and a signal sent to this
    # script is handled at once. Every replica applies migrations itself (they take a lock).
    # NO_COLOR: the human log format without terminal colours, since it goes to a file.
    ORCH_NATS_URL="$NATS_URL" \
        ORCH_NATS_USER=orchestrator \
        ORCH_NATS_PASSWORD="$(cat "$AUTH_DIR/orchestrator.password")" \
        ORCH_CHECK_NATS_USER=checks \
        ORCH_CHECK_NATS_PASSWORD="$(cat "$AUTH_DIR/checks.password")" \
        ORCH_STREAM_REPLICAS=3 \
        ORCH_DATABASE_URL="$pg_url" \
        ORCH_REPLICA="$name" \
        ORCH_LEASE_TTL="$LEASE_TTL" \
        ORCH_HTTP_ADDR="127.0.0.1:$port" \
        ORCH_ADVERTISE_URL="http://127.0.0.1:$port" \
        ORCH_AGENT_LOG_DIR="$AGENT_LOG_DIR" \
        ORCH_LOG_FORMAT="${ORCH_LOG_FORMAT:-human}" \
        NO_COLOR=1 \
        ORCH_DASHBOARD_DIR="$ROOT/dashboard/dist" \
        ORCH_API_KEYS="admin:dev-admin:$DEV_TOKEN" \
        ${SETSID[@]+"${SETSID[@]}"} "$BIN" serve </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    PIDS[i]=$!
    printf '%s\n' "${PIDS[i]}" >"$RUN_DIR/$name.pid"
}

# Waits until replica number $1 answers /readyz with 200 (as the leader when $2 says so).
wait_ready() {
    local i=$1 want=${2:-} name=${REPLICAS[$1]} role t
    for ((t = 0; t < 1200; t++)); do
        if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            die "replica $name exited during start-up (see $LOG_DIR/$name.log)"
        fi
        role="$(replica_role "$name")"
        if [ -n "$role" ] && { [ -z "$want" ] || [ "$role" = "$want" ]; }; then
            log "replica $name ready ($role, pid ${PIDS[i]})"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$LOG_DIR/$name.log" >&2 || true
    die "replica $name not ready after 120 s (see $LOG_DIR/$name.log)"
}

# The group as GET /api/v1/cluster shows it, from the first replica that answers:
# "LEADER TERM" on the first line ("- -" with none), then "NAME ROLE" per replica.
cluster_view() {
    local i body
    for ((i = 0; i < ${#REPLICAS[@]}; i++)); do
        body="$(curl -fsS -m 2 -H "authorization: Bearer $DEV_TOKEN" \
            "http://127.0.0.1:$((HTTP_PORT + i))/api/v1/cluster" 2>/dev/null)" || continue
        python3 -c '
import json, sys
view = json.load(sys.stdin)
leader = view.get("leader") or {}
print(leader.get("replica", "-"), leader.get("term", "-"))
for replica in view.get("replicas", []):
    print(replica["name"], replica["role"])
' <<<"$body" 2>/dev/null && return 0
    done
    return 1
}

# Replica a first, alone until it leads: so the group starts the same way every time, with a
# leader that is known before the others join.
log "starting replica a"
start_replica 0
wait_ready 0 leader
log "starting replicas b and c"
start_replica 1
start_replica 2
wait_ready 1
wait_ready 2

view="$(cluster_view)" || die "no replica answers GET /api/v1/cluster"
read -r LEADER TERM <<<"$(head -n1 <<<"$view")"
standing_by="$(awk 'NR > 1 && $2 == "standby" { printf "%s%s", sep, $1; sep = ", " }' <<<"$view")"
leader_pid="$(cat "$RUN_DIR/$LEADER.pid" 2>/dev/null || echo '?')"

replica_lines=""
for ((i = 0; i < ${#REPLICAS[@]}; i++)); do
    url="http://127.0.0.1:$((HTTP_PORT + i))"
    replica_lines+="    Replica ${REPLICAS[i]}             $url   (pid ${PIDS[i]}, log $LOG_DIR/${REPLICAS[i]}.log)
                          dashboard $url/#token=$DEV_TOKEN
"
done
nats_lines=""
for i in "${NODES[@]}"; do
    nats_lines+="    NATS node nats-$i      ${nats_urls[i - 1]}   (monitor http://127.0.0.1:$((MONITOR_PORT + i - 1)), routes 127.0.0.1:$((CLUSTER_PORT + i - 1)))
"
done

cat <<EOF

  Orchestrator replicas (development, high availability)
$replica_lines    Leader                $LEADER (term $TERM, pid $leader_pid); standing by: ${standing_by:-none}
                          any replica answers; a standby forwards to the leader
    Admin token           $DEV_TOKEN   (kept in $TOKEN_FILE)
$nats_lines                          one JetStream cluster, every stream on all three nodes (--stream-replicas 3);
                          anonymous clients are refused; a user per role, URLs with passwords in
                          $AUTH_DIR/{service,engine,observer,operator}.url
    PostgreSQL            $pg_url
    Managed services      the leader's embedded agent, node "local", records and logs in
                          $AGENT_LOG_DIR (shared: the next leader adopts them)
    Logs                  $LOG_DIR/{a,b,c,nats-1,nats-2,nats-3,postgres}.log
    Data                  $HA_DIR
  Try it (in another terminal):
    export ORCH_API_TOKEN=$DEV_TOKEN
    curl -s -H "authorization: Bearer \$ORCH_API_TOKEN" http://127.0.0.1:$((HTTP_PORT + 1))/api/v1/cluster
    $BIN up -f examples/demo.toml --api-url http://127.0.0.1:$((HTTP_PORT + 2))
  A failover: kill the leader's process; another replica leads within a second or so (this
  terminal says which), and the managed services keep running:
    kill -9 \$(cat $RUN_DIR/$LEADER.pid)
  Ctrl-C stops the replicas, NATS and PostgreSQL. Managed services keep running and the next
  "make dev-ha" adopts them; "make stop" (or "$BIN down" first) stops them.

EOF

# Stay in the foreground: report replicas that exit and each change of leader, until Ctrl-C.
# Polled, with the sleep in the background + wait, so a signal is handled at once (bash defers
# traps while a foreground child runs). The loop's stderr goes nowhere and its messages to the
# terminal (fd 4): a replica killed by a signal (the failover to try) would otherwise have bash
# print its "Killed" notice with the whole command line that started it.
last="$LEADER $TERM"
while :; do
    alive=0
    for ((i = 0; i < ${#REPLICAS[@]}; i++)); do
        [ -n "${PIDS[i]}" ] || continue
        if kill -0 "${PIDS[i]}" 2>/dev/null; then
            alive=$((alive + 1))
            continue
        fi
        rc=0
        wait "${PIDS[i]}" 2>/dev/null || rc=$?
        log "replica ${REPLICAS[i]} (pid ${PIDS[i]}) exited with status $rc (log $LOG_DIR/${REPLICAS[i]}.log)" 2>&4
        PIDS[i]=""
        rm -f "$RUN_DIR/${REPLICAS[i]}.pid"
    done
    [ "$alive" -gt 0 ] || die "every replica has exited (logs in $LOG_DIR)" 2>&4
    if view="$(cluster_view)"; then
        now="$(head -n1 <<<"$view")"
        if [ "$now" != "$last" ]; then
            read -r LEADER TERM <<<"$now"
            if [ "$LEADER" = - ]; then
                log "no leader at the moment" 2>&4
            else
                log "leader: $LEADER (term $TERM, pid $(cat "$RUN_DIR/$LEADER.pid" 2>/dev/null || echo '?'))" 2>&4
            fi
            last="$now"
        fi
    fi
    sleep 1 &
    wait $! || true
done 2>/dev/null
