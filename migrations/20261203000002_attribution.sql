-- Who made each change: the authenticated principal (orch-protocol `principal`), set by the
-- orchestrator from how the caller authenticated and kept apart from the free-text `source`.
-- Priority changes and adjustments carry it inside their JSON (`change`, `adjustment`).
ALTER TABLE instances ADD COLUMN changed_by text;
ALTER TABLE dead_letters ADD COLUMN principal text;
ALTER TABLE manifests ADD COLUMN principal text;
