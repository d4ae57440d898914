-- The node inventory (docs/resources.md): one row per node whose agent ever reported, with its
-- last stored report (capacity, reservation, labels, enforcement), whether it is heard from and
-- since when. Written when a node joins, goes down, comes back or describes itself differently,
-- not at every heartbeat; a replica that takes over resumes from it.
CREATE TABLE nodes (
    name       text        PRIMARY KEY,
    status     text        NOT NULL,
    since      timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    report     jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
