#!/bin/sh
# NATS users for every role, made once and kept in DIR (never committed): "make dev" and the
# docker-compose stack start NATS with DIR/nats-auth.conf, so it refuses anonymous clients and
# gives each role only what docs/protocol.md §14.2 lists (subject prefix $PREFIX, "orch" unless given).
#
#   [PREFIX=orch] scripts/nats-auth.sh DIR [HOST:PORT [NODE...]]
#
# PREFIX is the orchestrator's --subject-prefix (streams are named after it: ORCH_EVENTS, ...).
# Writes (mode 0600; running it again keeps the passwords):
#   DIR/<role>.password    orchestrator, checks, service, engine, observer, operator, and
#                          agent-<NODE> for each NODE
#   DIR/nats-auth.conf     the server's authorization block (include it, or pass it with -c)
#   DIR/orchestrator.toml  the orchestrator's NATS user and the one its nats health checks are
#                          sent as, for --config / ORCH_CONFIG
#   DIR/<role>.url         nats://<role>:<password>@HOST:PORT for clients (service, engine,
#                          observer, operator, agent-<NODE>): the CLI, the bridge,
#                          and `orchestrator agent --node NODE --nats-url "$(cat DIR/agent-NODE.url)"`
# A standalone agent's user may only take its own node's requests and report its own node's
# process ends, pressure and readiness notifications: it cannot start anything, here or on
# another node.
# With OWNER=uid:gid set, DIR is handed to that user (the orchestrator's, in a container).
# POSIX sh: it also runs in the NATS image.
set -eu

DIR="${1:?usage: scripts/nats-auth.sh DIR [HOST:PORT [NODE...]]}"
ENDPOINT="${2:-127.0.0.1:4222}"
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
NODES="$*"
P="${PREFIX:-orch}"
case "$P" in
"" | *[!A-Za-z0-9_-]*) echo "nats-auth.sh: PREFIX $P: 1-32 letters, digits, '_' or '-'" >&2; exit 2 ;;
esac
[ "${#P}" -le 32 ] || { echo "nats-auth.sh: PREFIX $P: longer than 32 characters" >&2; exit 2; }
# The streams' names: the prefix in capitals, '-' as '_' (ORCH_COMMANDS, ORCH_EVENTS).
S="$(printf '%s' "$P" | tr 'a-z-' 'A-Z_')"
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
for role in orchestrator checks service engine observer operator $AGENTS; do
    [ -s "$DIR/$role.password" ] || secret >"$DIR/$role.password"
done
pw() { cat "$DIR/$1.password"; }
# A standalone agent on node $1: its node's requests, answered; its node's reports.
agent_user() {
    cat <<AGENT
    # The node agent of $1: takes its node's requests (start, stop, status, logs) and answers
    # them; reports its node's process ends, pressure, heartbeat and its services' readiness
    # notifications. Nothing for another node.
    { user: agent-$1, password: "$(pw "agent-$1")",
      permissions: {
        publish:   { allow: ["$P.agent.$1.exited", "$P.agent.$1.pressure", "$P.agent.$1.node",
                             "$P.agent.$1.notify", "$P.log.$1.*"] }
        subscribe: { allow: ["$P.agent.$1.*"] }
        allow_responses: true } }
AGENT
}

cat >"$DIR/nats-auth.conf" <<EOF
# Made by scripts/nats-auth.sh: one user per role, least privilege (docs/protocol.md §14.2).
# Anonymous clients are refused: every connection must name one of these users. Requests and
# durable commands end with the sender's user name ($P.req.<domain>.<verb>.<user>), and each
# user may publish only subjects that end with its own: so the orchestrator records who asked.
authorization {
  users = [
    # The orchestrator: its streams and consumer, requests and heartbeats, the node agents,
    # events and dead letters, nats checks on the service API, outcomes on $P.replies, the
    # calls of workflow steps on $P.call.> (add other subjects here to call services there), and
    # the writes of the config store's KV bucket (only the orchestrator writes it).
    { user: orchestrator, password: "$(pw orchestrator)",
      permissions: {
        publish:   { allow: ["\$JS.API.>", "\$JS.ACK.${S}_COMMANDS.>", "$P.evt.>", "$P.dlq.>",
                             "$P.agent.>", "\$SRV.>", "$P.replies.>", "$P.call.>", "$P.log.>",
                             "\$KV.${S}_CONFIG.>"] }
        subscribe: { allow: ["$P.req.>", "$P.hb.>", "$P.agent.>", "_INBOX.>", "$P.log.>"] }
        allow_responses: true } }
    # The orchestrator's nats health checks, on a connection of their own: the NATS service API
    # only. Add the subjects of --check-allow-nats-subjects here when you allow more.
    { user: checks, password: "$(pw checks)",
      permissions: {
        publish:   { allow: ["\$SRV.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    # A service that registers itself, beats and reports its ttl checks, answers workflow calls
    # on $P.call.>, and answers the NATS service API (\$SRV.PING..., which nats checks request).
    # Its own endpoints are its own business: add their subjects to subscribe.
    { user: service, password: "$(pw service)",
      permissions: {
        publish:   { allow: ["$P.req.registry.*.service", "$P.req.health.ttl.service", "$P.hb.>",
                             "$P.cmd.registry.*.service", "\$JS.API.STREAM.INFO.${S}_COMMANDS"] }
        subscribe: { allow: ["_INBOX.>", "$P.replies.service.>", "\$SRV.>", "$P.call.>"] }
        allow_responses: true } }
    # The AI engine: reads events and the config store, sets and clears adjustments, restarts and
    # starts workflows (a remediation); not config writes, policy, pins, bounds, the release of a
    # hold, cancelling executions or deciding approvals, which are the operator's.
    { user: engine, password: "$(pw engine)",
      permissions: {
        publish:   { allow: ["$P.req.priority.set.engine", "$P.req.priority.clear.engine",
                             "$P.req.priority.get.engine", "$P.req.priority.list.engine",
                             "$P.req.registry.list.engine", "$P.req.registry.get.engine",
                             "$P.req.registry.discover.engine", "$P.req.health.system.engine",
                             "$P.req.health.service.engine", "$P.req.lifecycle.status.engine",
                             "$P.req.lifecycle.versions.engine", "$P.req.lifecycle.version.engine",
                             "$P.req.lifecycle.diff.engine",
                             "$P.req.lifecycle.restart.engine", "$P.req.cluster.status.engine",
                             "$P.req.workflow.run.engine", "$P.req.workflow.get.engine",
                             "$P.req.workflow.list.engine", "$P.req.workflow.schedules.engine",
                             "$P.req.workflow.queues.engine", "$P.req.resource.nodes.engine",
                             "$P.req.resource.node.engine", "$P.req.config.get.engine",
                             "$P.req.config.list.engine", "$P.req.config.history.engine",
                             "$P.req.config.schemas.engine",
                             "\$JS.API.INFO", "\$JS.API.STREAM.INFO.${S}_EVENTS", "\$JS.API.CONSUMER.*.${S}_EVENTS",
                             "\$JS.API.CONSUMER.*.${S}_EVENTS.>", "\$JS.API.CONSUMER.DURABLE.CREATE.${S}_EVENTS.>",
                             "\$JS.API.CONSUMER.MSG.NEXT.${S}_EVENTS.>", "\$JS.ACK.${S}_EVENTS.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    # An operator's tools over NATS (the CLI, scripts, an operator's bridge): every request,
    # priority policy and hold releases, stack apply and down included; durable commands; the
    # events and their replies. Not the orchestrator's own subjects (agents, publishing events).
    { user: operator, password: "$(pw operator)",
      permissions: {
        publish:   { allow: ["$P.req.*.*.operator", "$P.cmd.*.*.operator", "$P.hb.>",
                             "\$JS.API.INFO", "\$JS.API.STREAM.INFO.${S}_COMMANDS", "\$JS.API.STREAM.INFO.${S}_EVENTS",
                             "\$JS.API.CONSUMER.*.${S}_EVENTS", "\$JS.API.CONSUMER.*.${S}_EVENTS.>",
                             "\$JS.API.CONSUMER.DURABLE.CREATE.${S}_EVENTS.>",
                             "\$JS.API.CONSUMER.MSG.NEXT.${S}_EVENTS.>", "\$JS.ACK.${S}_EVENTS.>"] }
        subscribe: { allow: ["_INBOX.>", "$P.replies.operator.>", "$P.log.>"] } } }
    # A read-only observer: reads, and follows the events and the services' output.
    { user: observer, password: "$(pw observer)",
      permissions: {
        publish:   { allow: ["$P.req.registry.list.observer", "$P.req.registry.get.observer",
                             "$P.req.registry.discover.observer", "$P.req.health.system.observer",
                             "$P.req.health.service.observer", "$P.req.lifecycle.status.observer",
                             "$P.req.lifecycle.versions.observer", "$P.req.lifecycle.version.observer",
                             "$P.req.lifecycle.diff.observer",
                             "$P.req.priority.get.observer", "$P.req.priority.list.observer",
                             "$P.req.cluster.status.observer", "$P.req.workflow.get.observer",
                             "$P.req.workflow.list.observer", "$P.req.workflow.schedules.observer",
                             "$P.req.workflow.queues.observer", "$P.req.resource.nodes.observer",
                             "$P.req.resource.node.observer", "$P.req.lifecycle.logs.observer",
                             "$P.req.config.get.observer", "$P.req.config.list.observer",
                             "$P.req.config.history.observer", "$P.req.config.schemas.observer",
                             "\$JS.API.INFO", "\$JS.API.STREAM.INFO.${S}_EVENTS", "\$JS.API.CONSUMER.*.${S}_EVENTS",
                             "\$JS.API.CONSUMER.*.${S}_EVENTS.>", "\$JS.API.CONSUMER.MSG.NEXT.${S}_EVENTS.>"] }
        subscribe: { allow: ["_INBOX.>", "$P.log.>"] } } }
$(for node in $NODES; do agent_user "$node"; done)
  ]
}
EOF

printf 'nats-user = "orchestrator"\nnats-password = "%s"\ncheck-nats-user = "checks"\ncheck-nats-password = "%s"\n' \
    "$(pw orchestrator)" "$(pw checks)" >"$DIR/orchestrator.toml"
for role in service engine observer operator $AGENTS; do
    printf 'nats://%s:%s@%s\n' "$role" "$(pw "$role")" "$ENDPOINT" >"$DIR/$role.url"
done
if [ -n "${OWNER:-}" ]; then
    chown -R "$OWNER" "$DIR"
fi
