-- Workflows (docs/workflows.md): each stored definition keeps its versions; each execution keeps
-- its whole state (the state machine's `Execution`, as JSON) next to the columns that are
-- queried. Every change of an execution commits with its events in the outbox (shard -4).
CREATE TABLE workflow_definitions (
    name        text        NOT NULL,
    version     integer     NOT NULL,
    text        text        NOT NULL,
    definition  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE workflow_executions (
    id          uuid        PRIMARY KEY,
    workflow    text        NOT NULL,
    version     integer     NOT NULL,
    status      text        NOT NULL,
    queue       text        NOT NULL,
    priority    smallint    NOT NULL,
    state       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (workflow, version) REFERENCES workflow_definitions (name, version)
);

CREATE INDEX workflow_executions_active ON workflow_executions (queue, priority DESC, created_at)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX workflow_executions_by_workflow ON workflow_executions (workflow, created_at DESC);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_executions
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
