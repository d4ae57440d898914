//! The config store's records in PostgreSQL: every change of a key with who made it and the old
//! and new value (`config_changes`, written with its event in the outbox, in one transaction), and
//! the JSON Schemas per key prefix (`config_schemas`). The values themselves live in NATS KV.

use chrono::{DateTime, Utc};
use orch_protocol::config_store::{ConfigChange, ConfigOp, ConfigSchema};
use sqlx::PgPool;

use super::Result;
use super::batch::OutboxRow;

#[derive(sqlx::FromRow)]
struct ChangeRow {
    key: String,
    op: String,
    revision: i64,
    previous: Option<serde_json::Value>,
    previous_revision: Option<i64>,
    value: Option<serde_json::Value>,
    reverted_to: Option<i64>,
    principal: String,
    at: DateTime<Utc>,
}

impl From<ChangeRow> for ConfigChange {
    fn from(r: ChangeRow) -> ConfigChange {
        ConfigChange {
            key: r.key,
            // The table's check allows only the three.
            op: ConfigOp::parse(&r.op).unwrap_or(ConfigOp::Put),
            revision: r.revision as u64,
            previous: r.previous,
            previous_revision: r.previous_revision.map(|v| v as u64),
            value: r.value,
            reverted_to: r.reverted_to.map(|v| v as u64),
            principal: r.principal,
            at: r.at,
        }
    }
}

/// Records `change` with its event, in one transaction. A change already recorded (the same key
/// and revision) is left as it is.
pub async fn record(pool: &PgPool, change: &ConfigChange, event: OutboxRow) -> Result<()> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO config_changes (key, op, revision, previous, previous_revision, value, reverted_to, principal, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key, revision) DO NOTHING",
    )
    .bind(&change.key)
    .bind(change.op.as_str())
    .bind(change.revision as i64)
    .bind(&change.previous)
    .bind(change.previous_revision.map(|v| v as i64))
    .bind(&change.value)
    .bind(change.reverted_to.map(|v| v as i64))
    .bind(&change.principal)
    .bind(change.at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        super::outbox::insert(&mut tx, super::outbox::shard::CONFIG, std::slice::from_ref(&event)).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The recorded changes of `key`, newest first, at most `limit`.
pub async fn history(pool: &PgPool, key: &str, limit: i64) -> Result<Vec<ConfigChange>> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT key, op, revision, previous, previous_revision, value, reverted_to, principal, at
         FROM config_changes WHERE key = $1 ORDER BY revision DESC LIMIT $2",
    )
    .bind(key)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(ConfigChange::from).collect())
}

/// The highest recorded revision of each key.
pub async fn recorded_revisions(pool: &PgPool) -> Result<std::collections::HashMap<String, u64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, max(revision) FROM config_changes GROUP BY key").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(k, r)| (k, r as u64)).collect())
}

#[derive(sqlx::FromRow)]
struct SchemaRow {
    prefix: String,
    schema: serde_json::Value,
    set_by: String,
    set_at: DateTime<Utc>,
}

/// Every schema, by prefix.
pub async fn schemas(pool: &PgPool) -> Result<Vec<ConfigSchema>> {
    let rows: Vec<SchemaRow> =
        sqlx::query_as("SELECT prefix, schema, set_by, set_at FROM config_schemas ORDER BY prefix")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|r| ConfigSchema { prefix: r.prefix, schema: r.schema, set_by: r.set_by, set_at: r.set_at })
        .collect())
}

/// Sets the schema of `prefix` as `set_by`.
pub async fn set_schema(pool: &PgPool, prefix: &str, schema: &serde_json::Value, set_by: &str) -> Result<ConfigSchema> {
    let row: SchemaRow = sqlx::query_as(
        "INSERT INTO config_schemas (prefix, schema, set_by, set_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (prefix) DO UPDATE SET schema = EXCLUDED.schema, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
         RETURNING prefix, schema, set_by, set_at",
    )
    .bind(prefix)
    .bind(schema)
    .bind(set_by)
    .fetch_one(pool)
    .await?;
    Ok(ConfigSchema { prefix: row.prefix, schema: row.schema, set_by: row.set_by, set_at: row.set_at })
}

/// Removes the schema of `prefix`; whether there was one.
pub async fn clear_schema(pool: &PgPool, prefix: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM config_schemas WHERE prefix = $1").bind(prefix).execute(pool).await?.rows_affected()
        == 1)
}
