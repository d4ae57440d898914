//! Managed services in PostgreSQL: applied manifests with their version, the state of each managed
//! service, and start-up runs with their profile. State changes are written with their lifecycle
//! events in the outbox, in one transaction, so the record and the announcement never disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct StoredManifest {
    pub version: i64,
    #[serde(skip)]
    pub body: String,
    pub source: String,
    /// Who applied it, as authenticated (orch-protocol `principal`); `None` for a version stored
    /// before principals were recorded.
    pub principal: Option<String>,
    pub desired: String,
    pub applied_at: DateTime<Utc>,
}

/// Stores a manifest applied by `principal` as the desired stack (`up`) and returns it with its
/// version.
pub async fn insert_manifest(pool: &PgPool, body: &str, source: &str, principal: &str) -> Result<StoredManifest> {
    Ok(sqlx::query_as(
        "INSERT INTO manifests (body, source, principal, desired) VALUES ($1, $2, $3, 'up')
         RETURNING version, body, source, principal, desired, applied_at",
    )
    .bind(body)
    .bind(source)
    .bind(principal)
    .fetch_one(pool)
    .await?)
}

/// The newest manifest: the desired stack.
pub async fn latest_manifest(pool: &PgPool) -> Result<Option<StoredManifest>> {
    Ok(sqlx::query_as(
        "SELECT version, body, source, principal, desired, applied_at FROM manifests ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}

/// The manifest stored as `version`.
pub async fn manifest_version(pool: &PgPool, version: i64) -> Result<Option<StoredManifest>> {
    Ok(sqlx::query_as("SELECT version, body, source, principal, desired, applied_at FROM manifests WHERE version = $1")
        .bind(version)
        .fetch_optional(pool)
        .await?)
}

/// Up to `limit` versions older than `before` (all when `None`), newest first.
pub async fn manifest_versions(pool: &PgPool, before: Option<i64>, limit: i64) -> Result<Vec<StoredManifest>> {
    Ok(sqlx::query_as(
        "SELECT version, body, source, principal, desired, applied_at FROM manifests
         WHERE $1::bigint IS NULL OR version < $1 ORDER BY version DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Marks the stack of `version` as wanted up or down.
pub async fn set_desired(pool: &PgPool, version: i64, up: bool) -> Result<()> {
    sqlx::query("UPDATE manifests SET desired = $2 WHERE version = $1")
        .bind(version)
        .bind(if up { "up" } else { "down" })
        .execute(pool)
        .await?;
    Ok(())
}

/// One state change of a managed service, with the event announcing it.
#[derive(Debug, Clone)]
pub struct StateRow {
    pub name: String,
    pub manifest_version: i64,
    pub node: String,
    pub state: String,
    pub reason: Option<String>,
    pub pid: Option<i64>,
    pub restarts: i32,
    pub since: DateTime<Utc>,
}

/// Writes state changes (the last of each service wins) and lifecycle events, in their order, in
/// one transaction.
pub async fn record(pool: &PgPool, rows: &[StateRow], events: &[super::batch::OutboxRow]) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Later rows of the same service overwrite earlier ones within one statement only when they
    // are distinct; keep the last per service.
    let mut last: std::collections::BTreeMap<&str, &StateRow> = Default::default();
    for row in rows {
        last.insert(&row.name, row);
    }
    let states: Vec<&StateRow> = last.into_values().collect();
    if !states.is_empty() {
        upsert_states(&mut tx, &states).await?;
    }
    if !events.is_empty() {
        super::outbox::insert(&mut tx, super::outbox::shard::LIFECYCLE, events).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn upsert_states(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, states: &[&StateRow]) -> Result<()> {
    sqlx::query(
        "INSERT INTO managed_services (name, manifest_version, node, state, reason, pid, restarts, since, updated_at)
         SELECT *, now() FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                                     $7::int[], $8::timestamptz[])
         ON CONFLICT (name) DO UPDATE SET manifest_version = EXCLUDED.manifest_version, node = EXCLUDED.node,
             state = EXCLUDED.state, reason = EXCLUDED.reason, pid = EXCLUDED.pid,
             restarts = EXCLUDED.restarts, since = EXCLUDED.since, updated_at = now()",
    )
    .bind(states.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.manifest_version).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.node.as_str()).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.pid).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.restarts).collect::<Vec<_>>())
    .bind(states.iter().map(|r| r.since).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The node each managed service was last recorded on (services not placed yet have none).
pub async fn placed_nodes(pool: &PgPool) -> Result<std::collections::BTreeMap<String, String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, node FROM managed_services WHERE node <> ''").fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}

/// Forgets the state of services no longer in the stack.
pub async fn retain_services(pool: &PgPool, names: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM managed_services WHERE NOT (name = ANY($1))").bind(names).execute(pool).await?;
    Ok(())
}

pub async fn insert_run(pool: &PgPool, id: Uuid, version: i64, started_at: DateTime<Utc>) -> Result<()> {
    sqlx::query("INSERT INTO startup_runs (id, manifest_version, started_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(version)
        .bind(started_at)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn finish_run(pool: &PgPool, id: Uuid, outcome: &str, profile: &serde_json::Value) -> Result<()> {
    sqlx::query("UPDATE startup_runs SET finished_at = now(), outcome = $2, profile = $3 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .bind(profile)
        .execute(pool)
        .await?;
    Ok(())
}
