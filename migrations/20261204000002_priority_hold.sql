-- The priority guard's mass-change hold, so that it survives a restart of the orchestrator (or
-- a change of leader): one row while a hold is on, none otherwise. `held` is the latest held
-- request per service, as the priority book writes it.
CREATE TABLE priority_hold (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    since      timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    held       jsonb       NOT NULL
);
