//! Small keyed system state, such as whether self-preservation is active.

use sqlx::{PgPool, Postgres, Transaction};

use super::Result;

pub const SELF_PRESERVATION: &str = "self_preservation";
/// The last aggregated health of the whole system.
pub const HEALTH: &str = "health";

pub async fn get(pool: &PgPool, key: &str) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar("SELECT value FROM system_state WHERE key = $1").bind(key).fetch_optional(pool).await?)
}

pub async fn put(tx: &mut Transaction<'_, Postgres>, key: &str, value: &serde_json::Value) -> Result<()> {
    sqlx::query(
        "INSERT INTO system_state (key, value, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .bind(key)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
