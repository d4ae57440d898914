-- Managed services: every applied manifest with its version, the current state of each managed
-- service, and the profile of each start-up run.

-- Every manifest ever applied. The newest row is the desired stack; `desired` says whether it
-- should run ('up') or was taken down ('down'), so a restarted orchestrator knows what to do.
CREATE TABLE manifests (
    version     bigserial   PRIMARY KEY,
    body        text        NOT NULL,
    source      text        NOT NULL,
    desired     text        NOT NULL CHECK (desired IN ('up', 'down')),
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The last known state of each managed service (one row per service of the current stack).
CREATE TABLE managed_services (
    name              text        PRIMARY KEY,
    manifest_version  bigint      NOT NULL,
    node              text        NOT NULL,
    state             text        NOT NULL,
    reason            text,
    pid               bigint,
    restarts          integer     NOT NULL DEFAULT 0,
    since             timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per start-up run; `profile` is filled in when the run ends.
CREATE TABLE startup_runs (
    id                uuid        PRIMARY KEY,
    manifest_version  bigint      NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    outcome           text,
    profile           jsonb
);
CREATE INDEX startup_runs_started_at ON startup_runs (started_at);
