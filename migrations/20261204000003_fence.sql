-- The fence of a leader's writes, on every table. A replica's connections name the lease they
-- write under (the session setting `orch.fence` = '<holder>:<term>', set when the pool connects);
-- before any statement that changes a table, this checks that the lease is still held with that
-- term and locks its row (FOR SHARE) until the transaction ends, so no successor is elected
-- between the check and the commit. A connection without the setting (one orchestrator, no
-- replicas; migrations; tools) is not fenced. A refused statement fails with SQLSTATE OR001.
CREATE FUNCTION orch_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fence text := current_setting('orch.fence', true);
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM leadership
        WHERE holder || ':' || term = fence AND expires_at > statement_timestamp()
        FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease % is no longer held: another replica leads', fence
            USING ERRCODE = 'OR001';
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema() AND tablename NOT IN ('leadership', '_sqlx_migrations')
    LOOP
        EXECUTE format('CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION orch_fence()', t);
    END LOOP;
END $$;
