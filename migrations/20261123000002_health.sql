-- Health monitoring: the lease health apart from the aggregate, declared checks with their state,
-- maintenance and flap damping on instances; service-level maintenance and aggregates; and the
-- history of every health transition.

-- Until now `health` was the lease alone; from now on it is the worst of the lease and the checks.
ALTER TABLE instances
    ADD COLUMN lease          text NOT NULL DEFAULT 'passing' CHECK (lease IN ('passing', 'warning', 'critical')),
    ADD COLUMN checks         jsonb,
    ADD COLUMN maintenance    jsonb,
    ADD COLUMN flapping_since timestamptz,
    ADD COLUMN health_changes jsonb;
UPDATE instances SET lease = health;

-- Maintenance of a whole service: its instances are hidden from discovery, not deregistered.
CREATE TABLE service_maintenance (
    service     text        PRIMARY KEY,
    reason      text        NOT NULL,
    since       timestamptz NOT NULL
);

-- The last aggregated state of each service with instances (or marked critical), so a restarted
-- orchestrator announces only real transitions.
CREATE TABLE service_health (
    service     text        PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('healthy', 'degraded', 'critical')),
    counts      jsonb       NOT NULL,
    since       timestamptz NOT NULL
);

-- Every transition of a check, an instance, a service or the system, kept for the configured
-- retention. `damped`: the transition happened while the instance was flapping, so no event was
-- published for it.
CREATE TABLE health_transitions (
    seq         bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL,
    level       text        NOT NULL CHECK (level IN ('check', 'instance', 'service', 'system')),
    service     text,
    instance_id text,
    check_id    text,
    previous    text,
    state       text        NOT NULL,
    output      text,
    damped      boolean     NOT NULL DEFAULT false,
    detail      jsonb
);
CREATE INDEX health_transitions_instance ON health_transitions (instance_id, seq) WHERE instance_id IS NOT NULL;
CREATE INDEX health_transitions_service ON health_transitions (service, seq);
CREATE INDEX health_transitions_at ON health_transitions USING brin (at);
