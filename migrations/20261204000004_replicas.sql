-- The replicas of a group (`serve --replica NAME`) and where each answers HTTP: a standby forwards
-- what it does not serve itself to the leader's `http_url`, and `GET /api/v1/cluster` lists them.
-- Each replica refreshes its row (`seen_at`) while it runs; a row not refreshed for a while is a
-- replica that is gone (the view says so; the row stays as a record until it comes back).
CREATE TABLE replicas (
    name        text        PRIMARY KEY,
    http_url    text        NOT NULL,
    version     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL
);

-- Fenced like every other table (migration `fence`); replicas write their rows over connections
-- that name no lease, which the fence lets through.
CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON replicas
    FOR EACH STATEMENT EXECUTE FUNCTION orch_fence();
