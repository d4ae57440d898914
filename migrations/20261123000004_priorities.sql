-- Service priorities: the operator's policy and the engine's adjustment per service, and the audit
-- history of every change, applied or not.

-- One row per service anyone set a policy or an adjustment for. Services without a row have the
-- baseline of their manifest, or 50.
CREATE TABLE priorities (
    service     text        PRIMARY KEY,
    -- The operator's baseline; NULL: the manifest's priority or 50.
    baseline    smallint    CHECK (baseline BETWEEN 0 AND 100),
    min         smallint    NOT NULL DEFAULT 0 CHECK (min BETWEEN 0 AND 100),
    max         smallint    NOT NULL DEFAULT 100 CHECK (max BETWEEN 0 AND 100),
    pinned      boolean     NOT NULL DEFAULT false,
    -- The engine's adjustment in force (orch-protocol `Adjustment`), or NULL.
    adjustment  jsonb,
    updated_at  timestamptz NOT NULL,
    CHECK (min <= max)
);

-- Every change asked for, with its outcome (applied, clamped, held, refused, expired, dropped).
-- `change` is the orch-protocol `Change`, also the data of its event.
CREATE TABLE priority_changes (
    id       uuid        PRIMARY KEY,
    service  text        NOT NULL,
    at       timestamptz NOT NULL,
    action   text        NOT NULL,
    outcome  text        NOT NULL,
    change   jsonb       NOT NULL
);
CREATE INDEX priority_changes_by_service ON priority_changes (service, at DESC, id DESC);
