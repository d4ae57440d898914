//! Quotas in PostgreSQL (`quotas`): per group of managed services, the CPU and memory they may
//! ask for together, with who set it and when.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredQuota {
    pub name: String,
    pub cpu: i64,
    pub memory: i64,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// Every quota, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<StoredQuota>> {
    Ok(sqlx::query_as("SELECT name, cpu, memory, set_by, set_at FROM quotas ORDER BY name").fetch_all(pool).await?)
}

/// Sets the quota of `name` (a new one, or a change) as `set_by`.
pub async fn set(pool: &PgPool, name: &str, cpu: u64, memory: u64, set_by: &str) -> Result<StoredQuota> {
    Ok(sqlx::query_as(
        "INSERT INTO quotas (name, cpu, memory, set_by, set_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (name) DO UPDATE SET cpu = EXCLUDED.cpu, memory = EXCLUDED.memory,
             set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
         RETURNING name, cpu, memory, set_by, set_at",
    )
    .bind(name)
    .bind(cpu as i64)
    .bind(memory as i64)
    .bind(set_by)
    .fetch_one(pool)
    .await?)
}

/// Removes the quota of `name`; whether there was one.
pub async fn clear(pool: &PgPool, name: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM quotas WHERE name = $1").bind(name).execute(pool).await?.rows_affected() > 0)
}
