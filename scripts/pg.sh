#!/usr/bin/env bash
# Manages a private, loopback-only PostgreSQL cluster in a given directory
# (used by scripts/dev.sh, scripts/test.sh and the Rust test kit).
#
# The cluster uses trust authentication: anyone who can reach 127.0.0.1 on
# this machine can connect as the superuser "orch" without a password. That
# is acceptable for a throw-away dev/test cluster that listens on loopback
# only; never use this for anything that holds real data.
#
# Only the URL goes to stdout (last line of "start"); every message goes to
# stderr, so callers can do: url="$(scripts/pg.sh start DIR PORT)".
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage:
  scripts/pg.sh start  DATADIR PORT  initialise (if needed) and start the cluster,
                                     create database "orch", print its URL
  scripts/pg.sh stop   DATADIR       stop the cluster (fast shutdown); no error if
                                     it is not running or not initialised
  scripts/pg.sh status DATADIR       print the state; exit 0 running, 3 stopped,
                                     4 not initialised
  scripts/pg.sh url    DATADIR [PORT] print postgres://orch@127.0.0.1:PORT/orch
                                     (PORT defaults to the running server's port)
  scripts/pg.sh remove DATADIR       stop the cluster and delete its data (also a
                                     relocated cluster, see below)

The server listens on 127.0.0.1:PORT only, superuser "orch", trust
authentication (dev/test only!), UTF8. The server log is DATA/server.log.

Running as root: PostgreSQL refuses to run as root, so the cluster is owned by
and run as the user "postgres" (or "nobody" if there is none). If that user
cannot reach DATADIR (e.g. it is under /root, mode 700), the cluster is placed
in /var/tmp/orch-pg/<hash of DATADIR> and DATADIR only holds a file
"orch-pg-location" pointing there. Use "remove" to delete such a cluster.

Environment:
  ORCH_PG_BINDIR  directory with initdb/pg_ctl/postgres (default: auto-detect)
  ORCH_PG_FAST=1  tests only: initdb --no-sync and fsync/synchronous_commit off
                  (data may be lost on a machine crash)
EOF
}

PG_SUPERUSER=orch
PG_DATABASE=orch
# In DATADIR when the real cluster lives elsewhere (root + unreachable DATADIR).
REDIRECT_FILE=orch-pg-location
REDIRECT_BASE=/var/tmp/orch-pg

# ---------------------------------------------------------------------------
# Arguments

cmd="${1:-}"
case "$cmd" in
-h | --help | help) usage; exit 0 ;;
start | stop | status | url | remove) ;;
"") usage >&2; die "missing command" ;;
*) usage >&2; die "unknown command: $cmd" ;;
esac
[ $# -ge 2 ] || { usage >&2; die "$cmd: missing DATADIR"; }
DATADIR="$(abspath "$2")"
PORT="${3:-}"
if [ -n "$PORT" ]; then
    if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
        die "invalid PORT: $PORT"
    fi
fi
[ "$cmd" != start ] || [ -n "$PORT" ] || { usage >&2; die "start: missing PORT"; }

BINDIR="$(find_pg_bindir)"
PSQL="$BINDIR/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "psql not found (install the PostgreSQL client)"

# ---------------------------------------------------------------------------
# Which user runs PostgreSQL

RUN_USER="" # empty: the invoking user
if is_root; then
    if id -u postgres >/dev/null 2>&1; then RUN_USER=postgres; else RUN_USER=nobody; fi
    if command -v runuser >/dev/null 2>&1; then
        SWITCH_USER=(runuser -u "$RUN_USER" --)
    elif command -v setpriv >/dev/null 2>&1; then
        SWITCH_USER=(setpriv "--reuid=$RUN_USER" "--regid=$(id -g "$RUN_USER")" --init-groups --)
    else
        die "running as root, but neither runuser nor setpriv is available to switch to user $RUN_USER; run as an ordinary user"
    fi
fi

# Run a command as the cluster owner. "cd /" because PostgreSQL programs call
# getcwd() and fail when the caller's directory (e.g. under /root) is not
# readable by that user. fd 9 (our lock) is closed so that the postmaster
# does not inherit it and keep the lock held forever.
as_pg() {
    if [ -n "$RUN_USER" ]; then
        (cd / && "${SWITCH_USER[@]}" "$@") 9>&-
    else
        (cd / && "$@") 9>&-
    fi
}

# Give a path we created as root to the cluster owner.
give_to_pg() {
    [ -z "$RUN_USER" ] || chown "$RUN_USER:$(id -gn "$RUN_USER")" "$@"
}

# ---------------------------------------------------------------------------
# Helpers

# Serialise start/stop/remove for the same DATADIR (e.g. several test
# processes starting one shared cluster); different DATADIRs never contend.
# The lock file sits next to DATADIR. Without flock (macOS) we skip locking.
take_lock() {
    command -v flock >/dev/null 2>&1 || return 0
    [ -d "$(dirname "$DATADIR")" ] || return 0
    LOCK_FILE="$DATADIR.lock"
    exec 9>>"$LOCK_FILE"
    flock -w 120 9 || die "timed out after 120 s waiting for another pg.sh on $DATADIR (lock $LOCK_FILE)"
}

# The real data directory: DATADIR itself, or where its redirect file points.
pgdata_of() {
    if [ -f "$DATADIR/$REDIRECT_FILE" ]; then
        cat "$DATADIR/$REDIRECT_FILE"
    else
        printf '%s\n' "$DATADIR"
    fi
}

is_initialised() { [ -f "$PGDATA/PG_VERSION" ]; }
is_running() { is_initialised && as_pg "$BINDIR/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
# Line 4 of postmaster.pid is the port the running server listens on.
running_port() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null; }

# Unix socket paths are limited to ~107 bytes including "/.s.PGSQL.<port>",
# so use the data directory only when its path is short.
socket_dir() {
    if [ "${#PGDATA}" -le 80 ]; then
        printf '%s\n' "$PGDATA"
    else
        printf '/tmp/orch-pg-%s\n' "$(short_hash "$PGDATA")"
    fi
}

url() { printf 'postgres://%s@127.0.0.1:%s/%s\n' "$PG_SUPERUSER" "$1" "$PG_DATABASE"; }

# Decide where the cluster lives (sets PGDATA) and create that directory.
prepare_datadir() {
    PGDATA="$(pgdata_of)"
    is_initialised && return 0
    if [ "$PGDATA" != "$DATADIR" ]; then
        # Redirect file but no cluster (e.g. /var/tmp was cleaned): start over.
        rm -f "$DATADIR/$REDIRECT_FILE"
        PGDATA="$DATADIR"
    fi
    if [ -d "$DATADIR" ] && [ -n "$(ls -A "$DATADIR")" ]; then
        die "$DATADIR exists, is not empty and is not a PostgreSQL data directory"
    fi
    mkdir -p "$DATADIR"
    [ -n "$RUN_USER" ] || return 0

    # As root: the cluster owner must be able to traverse every parent
    # directory. "test -x" on the parent checks exactly that (access(2)
    # needs search permission on every component of the path).
    if as_pg test -x "$(dirname "$DATADIR")"; then
        give_to_pg "$DATADIR"
        chmod 700 "$DATADIR"
        return 0
    fi

    # Not reachable: put the cluster in a world-traversable place. We never
    # chmod the caller's directories (e.g. a home directory).
    PGDATA="$REDIRECT_BASE/$(short_hash "$DATADIR")"
    log "$RUN_USER cannot reach $DATADIR; the cluster lives in $PGDATA"
    mkdir -p "$REDIRECT_BASE"
    chmod 755 "$REDIRECT_BASE"
    if [ -e "$PGDATA" ]; then
        # Left over from an earlier DATADIR at the same path that was deleted
        # without "pg.sh remove" (e.g. a previous CI clone): discard it.
        log "removing stale cluster $PGDATA"
        if as_pg "$BINDIR/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
            as_pg "$BINDIR/pg_ctl" -D "$PGDATA" stop -m immediate -w -t 30 >&2 || true
        fi
        rm -rf "$PGDATA"
    fi
    mkdir -m 700 "$PGDATA"
    give_to_pg "$PGDATA"
}

init_cluster() {
    log "initialising cluster in $PGDATA"
    local args=(-D "$PGDATA" -U "$PG_SUPERUSER" --auth=trust -E UTF8 --locale=C)
    # --no-sync skips fsync of the new cluster: only for throw-away test data.
    [ "${ORCH_PG_FAST:-0}" != 1 ] || args+=(--no-sync)
    local out
    if ! out="$(as_pg "$BINDIR/initdb" "${args[@]}" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "initdb failed for $PGDATA"
    fi
    # Our settings live in orch.conf (rewritten at every start, so a new PORT
    # takes effect); included last so they override the defaults.
    printf "\n# Added by scripts/pg.sh\ninclude_if_exists = 'orch.conf'\n" >>"$PGDATA/postgresql.conf"
    # Only now record the relocation, so a failed initdb leaves no pointer.
    if [ "$PGDATA" != "$DATADIR" ]; then
        printf '%s\n' "$PGDATA" >"$DATADIR/$REDIRECT_FILE"
    fi
}

# Single quotes in postgresql.conf strings are doubled.
conf_quote() { printf "'%s'" "${1//\'/\'\'}"; }

write_conf() {
    local sock
    sock="$(socket_dir)"
    if [ "$sock" != "$PGDATA" ]; then
        [ -d "$sock" ] || mkdir -m 700 "$sock"
        give_to_pg "$sock"
    fi
    {
        echo "# Written by scripts/pg.sh at every start: edits are overwritten."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PORT"
        echo "unix_socket_directories = $(conf_quote "$sock")"
        # Tests open many pools in parallel.
        echo "max_connections = 200"
        if [ "${ORCH_PG_FAST:-0}" = 1 ]; then
            echo "# ORCH_PG_FAST=1: throw-away test data, durability off for speed"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } >"$PGDATA/orch.conf"
    give_to_pg "$PGDATA/orch.conf"
}

psql_orch() {
    PGCONNECT_TIMEOUT=10 as_pg "$PSQL" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PORT" -U "$PG_SUPERUSER" -d postgres "$@"
}

stop_server() {
    is_running || { log "not running ($PGDATA)"; return 0; }
    if ! as_pg "$BINDIR/pg_ctl" -D "$PGDATA" stop -m fast -w -t 60 >&2; then
        warn "fast shutdown did not finish in 60 s; using immediate shutdown"
        as_pg "$BINDIR/pg_ctl" -D "$PGDATA" stop -m immediate -w -t 30 >&2
    fi
}

# ---------------------------------------------------------------------------
# Commands

cmd_start() {
    mkdir -p "$(dirname "$DATADIR")"
    take_lock
    prepare_datadir
    is_initialised || init_cluster

    if is_running; then
        local p
        p="$(running_port)"
        [ "$p" = "$PORT" ] ||
            die "already running on port $p, not $PORT ($PGDATA); stop it first: scripts/pg.sh stop $DATADIR"
        log "already running on port $PORT ($PGDATA)"
    else
        write_conf
        log "starting PostgreSQL on 127.0.0.1:$PORT (data $PGDATA, log $PGDATA/server.log)"
        if ! as_pg "$BINDIR/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >&2; then
            tail -n 20 "$PGDATA/server.log" >&2 2>/dev/null || true
            die "PostgreSQL did not start (port $PORT in use? see $PGDATA/server.log)"
        fi
    fi

    local exists
    exists="$(psql_orch -Atc "select 1 from pg_database where datname = '$PG_DATABASE'")" ||
        die "cannot connect to PostgreSQL on 127.0.0.1:$PORT"
    if [ "$exists" != 1 ]; then
        log "creating database $PG_DATABASE"
        psql_orch -c "create database $PG_DATABASE" >&2
    fi
    url "$PORT"
}

cmd_stop() {
    PGDATA="$(pgdata_of)"
    is_initialised || { log "not initialised ($DATADIR); nothing to stop"; return 0; }
    take_lock
    stop_server
}

cmd_status() {
    PGDATA="$(pgdata_of)"
    if ! is_initialised; then
        echo "not initialised ($DATADIR)"
        exit 4
    elif is_running; then
        echo "running on 127.0.0.1:$(running_port) (pid $(sed -n 1p "$PGDATA/postmaster.pid"), data $PGDATA)"
    else
        echo "stopped (data $PGDATA)"
        exit 3
    fi
}

cmd_url() {
    if [ -z "$PORT" ]; then
        PGDATA="$(pgdata_of)"
        is_running || die "url: no PORT given and the cluster in $DATADIR is not running"
        PORT="$(running_port)"
    fi
    url "$PORT"
}

cmd_remove() {
    take_lock
    PGDATA="$(pgdata_of)"
    if is_initialised; then stop_server; fi
    local sock
    sock="$(socket_dir)"
    [ "$sock" = "$PGDATA" ] || rm -rf "$sock"
    [ "$PGDATA" = "$DATADIR" ] || rm -rf "$PGDATA"
    rm -rf "$DATADIR"
    rm -f "${LOCK_FILE:-}"
    log "removed $DATADIR"
}

"cmd_$cmd"
