//! The relay's side of the outbox: read the oldest rows, delete them once NATS acknowledged them.

use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::Result;

/// The outbox's shards. Each has its own commit order and its own relay cursor: the registry
/// writers own `0..n`; the lifecycle recorder and the priority task own one each, below zero, so
/// a change of the writer count never moves them.
pub mod shard {
    /// Lifecycle events (the lifecycle recorder).
    pub const LIFECYCLE: i16 = -1;
    /// Priority events (the priority task).
    pub const PRIORITIES: i16 = -2;
    /// Leadership events (written with the claim that begins a term).
    pub const CLUSTER: i16 = -3;
    /// Workflow events (the workflow executor).
    pub const WORKFLOWS: i16 = -4;
    /// Resource events: nodes joining, going down, coming back (the node tracker).
    pub const RESOURCES: i16 = -5;
    /// Config store events: a key changed or deleted (written with the change's record).
    pub const CONFIG: i16 = -6;
    /// The shards that exist whatever the number of registry writers.
    pub const FIXED: [i16; 6] = [LIFECYCLE, PRIORITIES, CLUSTER, WORKFLOWS, RESOURCES, CONFIG];
}

#[derive(Debug, FromRow)]
pub struct Pending {
    pub seq: i64,
    pub msg_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: Option<sqlx::types::Json<std::collections::BTreeMap<String, String>>>,
}

/// The next `limit` rows of one writer shard after `after`, in commit order.
pub async fn next(pool: &PgPool, shard: i16, after: i64, limit: i64) -> Result<Vec<Pending>> {
    Ok(sqlx::query_as(
        "SELECT seq, msg_id, subject, payload, headers FROM outbox
         WHERE shard = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(shard)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Shards that have rows waiting (also those of a larger shard count before a restart).
pub async fn shards_with_rows(pool: &PgPool) -> Result<Vec<i16>> {
    Ok(sqlx::query_scalar("SELECT DISTINCT shard FROM outbox").fetch_all(pool).await?)
}

pub async fn remove(pool: &PgPool, seqs: &[i64]) -> Result<()> {
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)").bind(seqs).execute(pool).await?;
    Ok(())
}

/// Adds events to the outbox of `shard` within the caller's transaction (for writers other than
/// the registry's, whose batch statement writes its own rows).
pub async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    shard: i16,
    events: &[super::batch::OutboxRow],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (shard, msg_id, subject, payload)
         SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::bytea[])",
    )
    .bind(shard)
    .bind(events.iter().map(|r| r.msg_id).collect::<Vec<_>>())
    .bind(events.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets aside a row the relay cannot publish, in one transaction: the row leaves the outbox and
/// its payload goes to the dead-letter table.
pub async fn isolate(pool: &PgPool, seq: i64, dead_letter: &super::ledger::DeadLetter) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM outbox WHERE seq = $1").bind(seq).execute(&mut *tx).await?;
    super::ledger::record_dead_letters(&mut tx, std::slice::from_ref(dead_letter)).await?;
    tx.commit().await?;
    Ok(())
}
