-- Webhook triggers of workflows (docs/workflows.md, "Webhooks"): one row per `[[webhook]]` of a
-- workflow's latest version (a hook's name is unique among all workflows), and each hook's
-- secret, kept apart so that a new version of the workflow keeps it. The secret is never shown
-- by the API (like checks' sensitive headers, it is stored as given: protect the database).
CREATE TABLE workflow_hooks (
    name     text    PRIMARY KEY,
    workflow text    NOT NULL,
    idx      integer NOT NULL,
    version  integer NOT NULL,
    spec     jsonb   NOT NULL
);

CREATE TABLE workflow_hook_secrets (
    name   text        PRIMARY KEY,
    secret text        NOT NULL,
    set_by text        NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_hooks
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_hook_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
