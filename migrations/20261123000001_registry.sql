-- The registry: instances, the idempotency ledger of commands, the transactional outbox,
-- dead letters, and small system state (self-preservation).

CREATE TABLE instances (
    id              text        PRIMARY KEY,
    name            text        NOT NULL,
    version         text        NOT NULL,
    address         text        NOT NULL,
    port            integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol        text        NOT NULL,
    tags            jsonb       NOT NULL DEFAULT '[]',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    dependencies    jsonb       NOT NULL DEFAULT '[]',
    weight          integer     NOT NULL,
    ttl_seconds     integer     NOT NULL,
    health          text        NOT NULL CHECK (health IN ('passing', 'warning', 'critical')),
    registered_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    critical_since  timestamptz,
    revision        bigint      NOT NULL
);
-- Only the name is indexed: lookups and discovery go by name, and every extra index is paid on
-- each registration, the hot path. Tag and metadata filters scan (acceptable for listings).
CREATE INDEX instances_name ON instances (name, id);

-- One row per command ever applied or rejected: the key of exactly-once handling. A redelivered
-- command finds its row and is answered with the stored outcome instead of being applied again.
-- `command_id` is namespaced by the path it came by (js:, js-seq:, req:, http:); `fingerprint`
-- hashes subject and payload, so an id reused for a different command is refused, not replayed.
CREATE TABLE processed_commands (
    command_id      text        PRIMARY KEY,
    fingerprint     bigint      NOT NULL,
    subject         text        NOT NULL,
    stream_seq      bigint,
    outcome         json        NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now()
);
-- BRIN: rows arrive in time order, so a tiny block-range index serves the retention prune
-- without a B-tree insert per command.
CREATE INDEX processed_commands_processed_at ON processed_commands USING brin (processed_at);

-- Messages written in the same transaction as the state change they announce, and published to
-- NATS by the relay afterwards. `msg_id` becomes the Nats-Msg-Id, so a re-publish is de-duplicated.
-- `shard` is the writer shard that committed the row: within one shard rows commit in `seq` order,
-- so the relay reads each shard from a cursor (`seq > last published`) and never walks the dead
-- rows of published messages at the head of the table.
CREATE TABLE outbox (
    seq             bigserial   PRIMARY KEY,
    shard           smallint    NOT NULL,
    msg_id          uuid        NOT NULL,
    subject         text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_shard_seq ON outbox (shard, seq);

-- Commands that could not be applied, with the reason. Also published to the dead-letter stream.
CREATE TABLE dead_letters (
    id                  uuid        PRIMARY KEY,
    received_at         timestamptz NOT NULL DEFAULT now(),
    subject             text        NOT NULL,
    command_id          text,
    stream_seq          bigint,
    code                text        NOT NULL,
    message             text        NOT NULL,
    field               text,
    payload             bytea       NOT NULL,
    payload_truncated   boolean     NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

CREATE TABLE system_state (
    key         text        PRIMARY KEY,
    value       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
