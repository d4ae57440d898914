-- Quotas (docs/resources.md): the CPU (millicores) and memory (MiB) that all the managed
-- services of one group may ask for together. Set by admins; a manifest over a quota is refused.
CREATE TABLE quotas (
    name   text        PRIMARY KEY,
    cpu    bigint      NOT NULL CHECK (cpu >= 0),
    memory bigint      NOT NULL CHECK (memory >= 0),
    set_by text        NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON quotas
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
