//! The bounds of the tables that grow with use: rows past their age go, and beyond a count the
//! oldest go. Deletes run a bounded chunk at a time so they never hold long locks.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use super::Result;

/// Rows deleted per statement.
const CHUNK: i64 = 10_000;

/// A table with a time column whose oldest rows may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aged {
    DeadLetters,
    PriorityChanges,
    StartupRuns,
}

impl Aged {
    /// `(table, key, time column)`.
    fn spelling(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Aged::DeadLetters => ("dead_letters", "id", "received_at"),
            Aged::PriorityChanges => ("priority_changes", "id", "at"),
            Aged::StartupRuns => ("startup_runs", "id", "started_at"),
        }
    }
}

/// Removes the rows of `table` older than `max_age`, then all but the newest `max_rows`.
/// Returns how many rows went.
pub async fn prune(pool: &PgPool, table: Aged, max_age: Option<Duration>, max_rows: i64) -> Result<u64> {
    let (name, key, at) = table.spelling();
    let mut removed = 0;
    if let Some(max_age) = max_age {
        let cutoff = Utc::now() - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let sql = format!("DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {name} WHERE {at} < $1 LIMIT {CHUNK})");
        removed += in_chunks(|| sqlx::query(&sql).bind(cutoff).execute(pool)).await?;
    }
    let sql = format!(
        "DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {name} ORDER BY {at} DESC, {key} DESC OFFSET $1 LIMIT {CHUNK})"
    );
    removed += in_chunks(|| sqlx::query(&sql).bind(max_rows).execute(pool)).await?;
    Ok(removed)
}

/// Keeps the newest `keep` manifest versions (the current one is the newest, so it always stays).
pub async fn prune_manifests(pool: &PgPool, keep: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM manifests WHERE version <= (SELECT version FROM manifests ORDER BY version DESC OFFSET $1 LIMIT 1)",
    )
    .bind(keep.max(1))
    .execute(pool)
    .await?
    .rows_affected())
}

/// The rows of each bounded table, for the metrics: `(table, rows)`.
pub async fn sizes(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT 'dead_letters', count(*) FROM dead_letters
         UNION ALL SELECT 'priority_changes', count(*) FROM priority_changes
         UNION ALL SELECT 'manifests', count(*) FROM manifests
         UNION ALL SELECT 'startup_runs', count(*) FROM startup_runs
         UNION ALL SELECT 'health_transitions', count(*) FROM health_transitions
         UNION ALL SELECT 'processed_commands', count(*) FROM processed_commands",
    )
    .fetch_all(pool)
    .await?)
}

async fn in_chunks<F, Fut>(mut delete: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<sqlx::postgres::PgQueryResult, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?.rows_affected();
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}
