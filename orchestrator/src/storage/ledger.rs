//! What a batch writes besides instances: the processed-command ledger (exactly-once handling),
//! outbox rows (events to publish) and dead letters. All inside the batch's transaction.

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Result;

/// Fingerprints and outcomes already stored for any of these ledger keys.
pub async fn processed(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<HashMap<String, (i64, serde_json::Value)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64, serde_json::Value)> =
        sqlx::query_as("SELECT command_id, fingerprint, outcome FROM processed_commands WHERE command_id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().map(|(id, fingerprint, outcome)| (id, (fingerprint, outcome))).collect())
}

/// A rejected command, kept for inspection.
pub struct DeadLetter {
    pub id: Uuid,
    pub subject: String,
    pub command_id: Option<String>,
    pub stream_seq: Option<i64>,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub payload: Vec<u8>,
    pub payload_truncated: bool,
    /// Who sent it (orch-protocol `principal`).
    pub principal: String,
}

pub async fn record_dead_letters(tx: &mut Transaction<'_, Postgres>, rows: &[DeadLetter]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO dead_letters (id, subject, command_id, stream_seq, code, message, field, payload, payload_truncated,
                                   principal)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[],
                              $8::bytea[], $9::bool[], $10::text[])",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.command_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.code.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.message.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.field.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.payload_truncated).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.principal.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets processed commands older than `retention`, a bounded chunk at a time so the delete
/// never holds long locks. Returns how many rows went.
pub async fn prune_processed(pool: &PgPool, retention: std::time::Duration) -> Result<u64> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM processed_commands WHERE command_id IN
               (SELECT command_id FROM processed_commands WHERE processed_at < $1 LIMIT 10000)",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}
