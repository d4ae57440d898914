#!/bin/sh
# NATS users for every role, made once and kept in DIR (never committed): "make dev" and the
# docker-compose stack start NATS with DIR/nats-auth.conf, so it refuses anonymous clients and
# gives each role only what docs/protocol.md §14.2 lists (subject prefix "orch").
#
#   scripts/nats-auth.sh DIR [HOST:PORT [NODE...]]
#
# Writes (mode 0600; running it again keeps the passwords):
#   DIR/<role>.password    orchestrator, checks, service, engine, observer, and agent-<NODE> for
#                          each NODE
#   DIR/nats-auth.conf     the server's authorization block (include it, or pass it with -c)
#   DIR/orchestrator.toml  the orchestrator's NATS user and the one its nats health checks are
#                          sent as, for --config / ORCH_CONFIG
#   DIR/<role>.url         nats://<role>:<password>@HOST:PORT for clients: the CLI, the bridge,
#                          and `orchestrator agent --node NODE --nats-url "$(cat DIR/agent-NODE.url)"`
# A standalone agent's user may only take its own node's requests and report its own node's
# process ends and pressure: it cannot start anything, here or on another node.
# With OWNER=uid:gid set, DIR is handed to that user (the orchestrator's, in a container).
# POSIX sh: it also runs in the NATS image.
set -eu

DIR="${1:?usage: scripts/nats-auth.sh DIR [HOST:PORT [NODE...]]}"
ENDPOINT="${2:-127.0.0.1:4222}"
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
NODES="$*"
for node in $NODES; do
    case "$node" in
    *[!a-z0-9_-]*) echo "nats-auth.sh: node $node: a node name is 1-63 of lower-case letters, digits, '-' or '_'" >&2; exit 2 ;;
    esac
    [ "${#node}" -le 63 ] || { echo "nats-auth.sh: node $node: longer than 63 characters" >&2; exit 2; }
done
AGENTS="$(for node in $NODES; do printf 'agent-%s ' "$node"; done)"
umask 077
mkdir -p "$DIR"

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for role in orchestrator checks service engine observer $AGENTS; do
    [ -s "$DIR/$role.password" ] || secret >"$DIR/$role.password"
done
pw() { cat "$DIR/$1.password"; }
# A standalone agent on node $1: its node's requests, answered; its node's reports.
agent_user() {
    cat <<AGENT
    # The node agent of $1: takes its node's requests (start, stop, status, logs) and answers
    # them; reports its node's process ends and pressure. Nothing for another node.
    { user: agent-$1, password: "$(pw "agent-$1")",
      permissions: {
        publish:   { allow: ["orch.agent.$1.exited", "orch.agent.$1.pressure"] }
        subscribe: { allow: ["orch.agent.$1.*"] }
        allow_responses: true } }
AGENT
}

cat >"$DIR/nats-auth.conf" <<EOF
# Made by scripts/nats-auth.sh: one user per role, least privilege (docs/protocol.md §14.2).
# Anonymous clients are refused: every connection must name one of these users.
authorization {
  users = [
    # The orchestrator: its streams and consumer, requests and heartbeats, the node agents,
    # events and dead letters, nats checks on the service API, outcomes on orch.replies.
    { user: orchestrator, password: "$(pw orchestrator)",
      permissions: {
        publish:   { allow: ["\$JS.API.>", "\$JS.ACK.ORCH_COMMANDS.>", "orch.evt.>", "orch.dlq.>",
                             "orch.agent.>", "\$SRV.>", "orch.replies.>"] }
        subscribe: { allow: ["orch.req.>", "orch.hb.>", "orch.agent.>", "_INBOX.>"] }
        allow_responses: true } }
    # The orchestrator's nats health checks, on a connection of their own: the NATS service API
    # only. Add the subjects of --check-allow-nats-subjects here when you allow more.
    { user: checks, password: "$(pw checks)",
      permissions: {
        publish:   { allow: ["\$SRV.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    # A service that registers itself, beats and reports its ttl checks.
    { user: service, password: "$(pw service)",
      permissions: {
        publish:   { allow: ["orch.req.registry.>", "orch.req.health.ttl", "orch.hb.>",
                             "orch.cmd.registry.>", "\$JS.API.STREAM.INFO.ORCH_COMMANDS"] }
        subscribe: { allow: ["_INBOX.>", "orch.replies.service.>"] } } }
    # The AI engine: reads events, sets and clears adjustments; not policy, pins, bounds or
    # the release of a hold, which are the operator's.
    { user: engine, password: "$(pw engine)",
      permissions: {
        publish:   { allow: ["orch.req.priority.set", "orch.req.priority.clear", "orch.req.priority.get",
                             "orch.req.priority.list", "orch.req.registry.list", "orch.req.registry.get",
                             "orch.req.registry.discover", "orch.req.health.system", "orch.req.health.service",
                             "orch.req.lifecycle.status", "orch.req.lifecycle.restart",
                             "\$JS.API.INFO", "\$JS.API.STREAM.INFO.ORCH_EVENTS", "\$JS.API.CONSUMER.*.ORCH_EVENTS",
                             "\$JS.API.CONSUMER.*.ORCH_EVENTS.>", "\$JS.API.CONSUMER.DURABLE.CREATE.ORCH_EVENTS.>",
                             "\$JS.API.CONSUMER.MSG.NEXT.ORCH_EVENTS.>", "\$JS.ACK.ORCH_EVENTS.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    # A read-only observer: reads, and follows the events.
    { user: observer, password: "$(pw observer)",
      permissions: {
        publish:   { allow: ["orch.req.registry.list", "orch.req.registry.get", "orch.req.registry.discover",
                             "orch.req.health.system", "orch.req.health.service", "orch.req.lifecycle.status",
                             "orch.req.priority.get", "orch.req.priority.list",
                             "\$JS.API.INFO", "\$JS.API.STREAM.INFO.ORCH_EVENTS", "\$JS.API.CONSUMER.*.ORCH_EVENTS",
                             "\$JS.API.CONSUMER.*.ORCH_EVENTS.>", "\$JS.API.CONSUMER.MSG.NEXT.ORCH_EVENTS.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
$(for node in $NODES; do agent_user "$node"; done)
  ]
}
EOF

printf 'nats-user = "orchestrator"\nnats-password = "%s"\ncheck-nats-user = "checks"\ncheck-nats-password = "%s"\n' \
    "$(pw orchestrator)" "$(pw checks)" >"$DIR/orchestrator.toml"
for role in service engine observer $AGENTS; do
    printf 'nats://%s:%s@%s\n' "$role" "$(pw "$role")" "$ENDPOINT" >"$DIR/$role.url"
done
if [ -n "${OWNER:-}" ]; then
    chown -R "$OWNER" "$DIR"
fi
