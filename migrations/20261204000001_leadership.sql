-- Leadership of a group of orchestrator replicas on one database: one row, the lease. A replica
-- holds it while `expires_at` (PostgreSQL's clock, the one clock every replica shares) is in the
-- future; each new holder takes the next `term`. Every write of the leader checks its term in the
-- same transaction (and holds the row FOR SHARE until it commits), so a leader that lost the
-- lease, paused or cut off, commits nothing after a successor is elected (docs/architecture.md).
CREATE TABLE leadership (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    holder      text        NOT NULL,
    term        bigint      NOT NULL,
    since       timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
