#!/usr/bin/env bash
# Starts/stops a local NATS server with JetStream (loopback only) in a given
# directory, using the nats-server that scripts/deps.sh installs.
#
# Only the URL goes to stdout (last line of "start"); every message goes to
# stderr, so callers can do: url="$(scripts/nats.sh start DIR PORT)".
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage:
  scripts/nats.sh start DIR PORT   start nats-server (JetStream on) on 127.0.0.1:PORT
                                   in the background, wait until it is ready,
                                   print nats://127.0.0.1:PORT
  scripts/nats.sh stop  DIR        stop it (SIGTERM, SIGKILL after 15 s); no error
                                   if it is not running

Files in DIR: jetstream/ (stream storage), nats.pid, nats.log.
The HTTP monitor listens on 127.0.0.1:$ORCH_NATS_MONITOR_PORT, default PORT+10000
(none if that is above 65535, or if ORCH_NATS_MONITOR_PORT=0).

Environment:
  ORCH_NATS_MONITOR_PORT  HTTP monitoring port (scripts/dev.sh uses 8222)
  ORCH_NATS_CONFIG        a configuration file for the server, e.g. the users of
                          scripts/nats-auth.sh (scripts/dev.sh sets it)
  ORCH_LOCAL              where deps.sh put the venv (default: <repo>/.local)
EOF
}

cmd="${1:-}"
case "$cmd" in
-h | --help | help) usage; exit 0 ;;
start | stop) ;;
"") usage >&2; die "missing command" ;;
*) usage >&2; die "unknown command: $cmd" ;;
esac
[ $# -ge 2 ] || { usage >&2; die "$cmd: missing DIR"; }
DIR="$(abspath "$2")"
PID_FILE="$DIR/nats.pid"
LOG_FILE="$DIR/nats.log"

# Pid of our running nats-server, if any. The pid file may be stale (crash,
# reboot) and its pid reused by another program, so check the process name.
running_pid() {
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    case "$(ps -o comm= -p "$pid" 2>/dev/null)" in
    *nats-server*) printf '%s\n' "$pid" ;;
    *) return 1 ;;
    esac
}

# True once the server accepts TCP connections on 127.0.0.1:$1 (bash's
# /dev/tcp, so no extra tool is needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
    local port="${1:-}"
    if [ -z "$port" ] || ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        usage >&2
        die "start: missing or invalid PORT: '$port'"
    fi
    [ -x "$NATS_SERVER" ] || die "$NATS_SERVER not found; run scripts/deps.sh first"
    mkdir -p "$DIR"

    local pid
    if pid="$(running_pid)"; then
        local old_port
        old_port="$(cat "$DIR/nats.port" 2>/dev/null || echo "?")"
        [ "$old_port" = "$port" ] ||
            die "already running (pid $pid) on port $old_port, not $port; stop it first: scripts/nats.sh stop $DIR"
        log "already running (pid $pid) on port $port"
        echo "nats://127.0.0.1:$port"
        return 0
    fi

    local monitor="${ORCH_NATS_MONITOR_PORT:-$((port + 10000))}"
    [ "$monitor" -le 65535 ] || monitor=0
    local args=(-js -a 127.0.0.1 -p "$port" -sd "$DIR/jetstream" --pid "$PID_FILE" -l "$LOG_FILE")
    [ "$monitor" = 0 ] || args+=(-m "$monitor")
    [ -z "${ORCH_NATS_CONFIG:-}" ] || args+=(-c "$ORCH_NATS_CONFIG")

    # Fail early on a busy port: otherwise the readiness check below could
    # be answered by whatever already listens there.
    local p
    for p in "$port" "$monitor"; do
        [ "$p" = 0 ] || ! port_open "$p" ||
            die "port $p on 127.0.0.1 is already in use (another nats-server? see scripts/nats.sh stop)"
    done

    rm -f "$PID_FILE"
    echo "$port" >"$DIR/nats.port"
    log "starting nats-server on 127.0.0.1:$port (monitor port ${monitor/#0/none}, dir $DIR)"
    # Detach all standard streams: a caller capturing our stdout, e.g.
    # $(nats.sh start ...), must not wait for the server to close them.
    "$NATS_SERVER" "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1 &
    local child=$!

    # Ready = JetStream healthy on the monitor port (curl), or else the client
    # port accepting connections. Give up after 30 s or if the server exits.
    local ready=0 i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$child" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2 || true
            die "nats-server exited during start-up (port $port or $monitor in use? see $LOG_FILE)"
        fi
        if [ "$monitor" != 0 ] && command -v curl >/dev/null 2>&1; then
            curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" 2>/dev/null && ready=1
        else
            port_open "$port" && ready=1
        fi
        [ "$ready" = 0 ] || break
        sleep 0.1
    done
    if [ "$ready" = 0 ]; then
        kill "$child" 2>/dev/null || true
        tail -n 20 "$LOG_FILE" >&2 || true
        die "nats-server did not become ready within 30 s (see $LOG_FILE)"
    fi
    log "ready (pid $child, log $LOG_FILE)"
    echo "nats://127.0.0.1:$port"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running ($DIR)"
        rm -f "$PID_FILE"
        return 0
    fi
    stop_pid "$pid" nats-server 15
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

shift 2
cmd_"$cmd" "$@"
