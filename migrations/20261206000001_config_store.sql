-- The config store (docs/protocol.md §18): values live in the NATS KV bucket <PREFIX>_CONFIG;
-- every change is recorded here with who made it and the old and new value, and JSON Schemas per
-- key prefix say what values are allowed.
CREATE TABLE config_changes (
    id                bigserial   PRIMARY KEY,
    key               text        NOT NULL,
    op                text        NOT NULL CHECK (op IN ('put', 'delete', 'revert')),
    revision          bigint      NOT NULL,
    previous          jsonb,
    previous_revision bigint,
    value             jsonb,
    reverted_to       bigint,
    principal         text        NOT NULL,
    at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (key, revision)
);
CREATE INDEX config_changes_by_key ON config_changes (key, revision DESC);

CREATE TABLE config_schemas (
    prefix text        PRIMARY KEY,
    schema jsonb       NOT NULL,
    set_by text        NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON config_changes
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON config_schemas
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
