//! The relay's side of the outbox: read the oldest rows, delete them once NATS acknowledged them.

use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

#[derive(Debug, FromRow)]
pub struct Pending {
    pub seq: i64,
    pub msg_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: Option<sqlx::types::Json<std::collections::BTreeMap<String, String>>>,
}

/// The oldest `limit` rows in commit order.
pub async fn oldest(pool: &PgPool, limit: i64) -> Result<Vec<Pending>> {
    Ok(sqlx::query_as("SELECT seq, msg_id, subject, payload, headers FROM outbox ORDER BY seq LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

pub async fn remove(pool: &PgPool, seqs: &[i64]) -> Result<()> {
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)").bind(seqs).execute(pool).await?;
    Ok(())
}

/// Rows waiting to be published (exported as outbox lag).
pub async fn backlog(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await?)
}
