-- Event triggers of workflows (docs/workflows.md, "Event triggers"): one row per `[[on_event]]`
-- of a workflow's latest version; the count windows under way, by trigger and group; and how far
-- the events stream has been read. A firing's execution has an id derived from the event that
-- completed the window, and is stored before the window and the position are, so reading the
-- events again after a crash or a failover starts nothing twice and loses nothing.
CREATE TABLE workflow_event_triggers (
    workflow text    NOT NULL,
    idx      integer NOT NULL,
    version  integer NOT NULL,
    spec     jsonb   NOT NULL,
    -- When this version was stored: a trigger counts the events published since.
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, idx)
);

CREATE TABLE workflow_event_windows (
    workflow  text    NOT NULL,
    idx       integer NOT NULL,
    group_key text    NOT NULL,
    -- The times (ms since the epoch) of the events counted, oldest first.
    times     jsonb   NOT NULL,
    PRIMARY KEY (workflow, idx, group_key)
);

-- One row: the sequence, in the events stream, of the last event the triggers have taken.
CREATE TABLE workflow_event_position (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    stream_seq bigint  NOT NULL
);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_event_triggers
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_event_windows
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_event_position
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
