-- Cron schedules of workflows: one row per `[[schedule]]` of a workflow's latest version, with
-- the time of its next firing. A firing commits its executions (ids derived from the workflow,
-- the schedule and the firing time) and the schedule's next time in one fenced transaction, so a
-- firing runs once: never twice across a crash or a failover, never lost (docs/workflows.md).
CREATE TABLE workflow_schedules (
    workflow     text        NOT NULL,
    idx          integer     NOT NULL,
    version      integer     NOT NULL,
    spec         jsonb       NOT NULL,
    next_fire_at timestamptz NOT NULL,
    last_fired_at timestamptz,
    PRIMARY KEY (workflow, idx)
);

-- What started an execution: `manual`, or `cron:<idx>` for a schedule's firing.
ALTER TABLE workflow_executions ADD COLUMN trigger text NOT NULL DEFAULT 'manual';
ALTER TABLE workflow_executions ADD COLUMN fire_at timestamptz;
CREATE INDEX workflow_executions_active_trigger ON workflow_executions (workflow, trigger)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_schedules
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
