#!/usr/bin/env bash
# Builds the web dashboard (dashboard/, TypeScript + Vite) into dashboard/dist, which the
# orchestrator serves at "/" (--dashboard-dir). Installs the pinned npm packages with "npm ci"
# only when node_modules is missing or package-lock.json changed, and skips the build when dist
# is newer than every source file, docs/openapi.json (the source of its wire types) included.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: scripts/dashboard.sh [--force] [--help]

  1. npm ci in dashboard/ when dashboard/node_modules is missing or dashboard/package-lock.json
     changed since the last install (versions are pinned in package.json and the lock file);
  2. npm run build: the wire types generated from docs/openapi.json (openapi-typescript, into
     dashboard/src/generated/), the type check (tsc) against them, the DOM safety check
     (tools/check-dom.mjs), vite build into dashboard/dist (the app and the API reference page
     dist/api-docs/), then the check of the built pages. Skipped when dist is newer than every
     source file and docs/openapi.json.

  --force   build even when dist looks up to date

Needs Node.js 20.19+ or 22.12+ (Vite 7) with npm.
EOF
}

force=0
case "${1:-}" in
-h | --help) usage; exit 0 ;;
--force) force=1 ;;
"") ;;
*) usage >&2; die "unexpected argument: $1" ;;
esac

DASH="$ROOT/dashboard"
DIST="$DASH/dist"
LOCK="$DASH/package-lock.json"
# Hash of the lock file that node_modules was installed from.
STAMP="$DASH/node_modules/.orch-lock-sha256"

node_hint="Install Node.js 20.19+ (or 22.12+) with npm:
    Debian/Ubuntu: apt-get install nodejs npm   (check: node --version)
    macOS:         brew install node"
command -v node >/dev/null 2>&1 || die "node not found. $node_hint"
command -v npm >/dev/null 2>&1 || die "npm not found. $node_hint"
node_version="$(node --version)"
# Vite 7 needs ^20.19.0 || >=22.12.0.
node -e '
const [maj, min] = process.versions.node.split(".").map(Number);
process.exit((maj === 20 && min >= 19) || (maj === 22 && min >= 12) || maj > 22 ? 0 : 1);
' || die "node $node_version is too old for Vite 7 (needs 20.19+ or 22.12+). $node_hint"

lock_hash() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$LOCK" | cut -d' ' -f1
    else # macOS
        shasum -a 256 "$LOCK" | cut -d' ' -f1
    fi
}

[ -f "$LOCK" ] || die "$LOCK is missing"
want="$(lock_hash)"
if [ ! -d "$DASH/node_modules" ]; then
    log "installing the dashboard's npm packages (npm ci): node_modules is missing"
    install=1
elif [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    log "installing the dashboard's npm packages (npm ci): package-lock.json changed"
    install=1
else
    log "npm packages up to date (node $node_version, npm $(npm --version 2>/dev/null))"
    install=0
fi
if [ "$install" = 1 ]; then
    # No install scripts: none is needed (esbuild's binary comes as a platform package), and
    # swagger-ui-dist's dependency would otherwise report the install to a third party.
    (cd "$DASH" && npm ci --ignore-scripts --no-audit --no-fund >&2) || die "npm ci failed in $DASH (is the npm registry reachable?)"
    printf '%s\n' "$want" >"$STAMP"
    force=1
fi

# Every file the build reads (paths from dashboard/; the wire types come from docs/openapi.json);
# dist is stale when any is newer than dist/index.html.
SOURCES=(index.html package.json package-lock.json tsconfig.json vite.config.js src public tools ../docs/openapi.json)
sources() {
    (cd "$DASH" && find "${SOURCES[@]}" -type f)
}
if [ "$force" = 0 ] && [ -f "$DIST/index.html" ] && [ -f "$DIST/api-docs/index.html" ]; then
    newer="$(cd "$DASH" && find "${SOURCES[@]}" -type f -newer "$DIST/index.html" -print -quit)"
    if [ -z "$newer" ]; then
        log "dashboard/dist is up to date ($(sources | wc -l | tr -d ' ') source files older than it); build skipped"
        exit 0
    fi
    log "rebuilding: $newer changed since the last build"
else
    log "building the dashboard"
fi

(cd "$DASH" && npm run --silent build >&2) || die "the dashboard build failed (see above)"
log "built $DIST ($(find "$DIST" -type f | wc -l | tr -d ' ') files)"
