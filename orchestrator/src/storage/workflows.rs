//! Workflow definitions (with versions) and executions (with their whole state), and the events
//! of each change of an execution, written to the outbox in the change's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use super::batch::OutboxRow;

/// A stored version of a definition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredDefinition {
    pub name: String,
    pub version: i32,
    pub text: String,
    pub definition: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Stores `text` as the next version of `name` (1 for a new workflow); returns the version. The
/// same text as the latest version is not stored again: its version is returned.
pub async fn put_definition(
    pool: &PgPool,
    name: &str,
    text: &str,
    definition: &serde_json::Value,
    by: &str,
) -> Result<(i32, bool)> {
    let mut tx = pool.begin().await?;
    // One writer of a name's versions at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('workflow:' || $1))").bind(name).execute(&mut *tx).await?;
    let latest: Option<(i32, String)> =
        sqlx::query_as("SELECT version, text FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((version, latest_text)) = &latest
        && latest_text == text
    {
        tx.commit().await?;
        return Ok((*version, false));
    }
    let version = latest.map_or(1, |(v, _)| v + 1);
    sqlx::query(
        "INSERT INTO workflow_definitions (name, version, text, definition, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(version)
    .bind(text)
    .bind(sqlx::types::Json(definition))
    .bind(by)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((version, true))
}

/// Version `version` of `name`, or its latest.
pub async fn definition(pool: &PgPool, name: &str, version: Option<i32>) -> Result<Option<StoredDefinition>> {
    Ok(sqlx::query_as(
        "SELECT name, version, text, definition, created_at, created_by FROM workflow_definitions
         WHERE name = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?)
}

/// The latest version of every workflow, by name.
pub async fn definitions(pool: &PgPool) -> Result<Vec<StoredDefinition>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (name) name, version, text, definition, created_at, created_by FROM workflow_definitions
         ORDER BY name, version DESC",
    )
    .fetch_all(pool)
    .await?)
}

/// An execution as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredExecution {
    pub id: Uuid,
    pub workflow: String,
    pub version: i32,
    pub status: String,
    pub queue: String,
    pub priority: i16,
    pub state: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const EXECUTION_COLUMNS: &str = "id, workflow, version, status, queue, priority, state, created_at, created_by, started_at, finished_at, updated_at";

/// A new execution, queued.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: Uuid,
    pub workflow: &'a str,
    pub version: i32,
    pub queue: &'a str,
    pub priority: i16,
    pub state: serde_json::Value,
    pub by: &'a str,
}

pub async fn insert_execution(pool: &PgPool, new: NewExecution<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO workflow_executions (id, workflow, version, status, queue, priority, state, created_by)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7)",
    )
    .bind(new.id)
    .bind(new.workflow)
    .bind(new.version)
    .bind(new.queue)
    .bind(new.priority)
    .bind(sqlx::types::Json(&new.state))
    .bind(new.by)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores an execution's new state and status with its events, in one transaction.
pub async fn save_execution(
    pool: &PgPool,
    id: Uuid,
    status: &str,
    state: &serde_json::Value,
    started: bool,
    finished: bool,
    events: &[OutboxRow],
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE workflow_executions SET status = $2, state = $3, updated_at = now(),
             started_at = CASE WHEN $4 THEN coalesce(started_at, now()) ELSE started_at END,
             finished_at = CASE WHEN $5 THEN now() ELSE finished_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(sqlx::types::Json(state))
    .bind(started)
    .bind(finished)
    .execute(&mut *tx)
    .await?;
    if !events.is_empty() {
        super::outbox::insert(&mut tx, super::outbox::shard::WORKFLOWS, events).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn execution(pool: &PgPool, id: Uuid) -> Result<Option<StoredExecution>> {
    Ok(sqlx::query_as(&format!("SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The newest executions (of `workflow` when given), at most `limit`.
pub async fn executions(pool: &PgPool, workflow: Option<&str>, limit: i64) -> Result<Vec<StoredExecution>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE ($1::text IS NULL OR workflow = $1)
         ORDER BY created_at DESC LIMIT $2"
    ))
    .bind(workflow)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Every execution that has not ended (queued or under way), oldest first.
pub async fn active_executions(pool: &PgPool) -> Result<Vec<StoredExecution>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions
         WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await?)
}
