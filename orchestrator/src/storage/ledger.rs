//! What a batch writes besides instances: the processed-command ledger (exactly-once handling),
//! outbox rows (events to publish) and dead letters. All inside the batch's transaction.

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Result, StorageError};

/// Outcomes already stored for any of these command ids.
pub async fn processed(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<HashMap<String, serde_json::Value>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT command_id, outcome FROM processed_commands WHERE command_id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// One processed command to remember.
pub struct Processed {
    pub command_id: String,
    pub subject: String,
    pub stream_seq: Option<i64>,
    pub outcome: String,
}

/// Records processed commands. Fails with [`StorageError::ConcurrentCommand`] when another
/// transaction recorded one of them first, so the caller re-runs the batch and finds it processed.
pub async fn record_processed(tx: &mut Transaction<'_, Postgres>, rows: &[Processed]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.command_id.as_str()).collect();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let seqs: Vec<Option<i64>> = rows.iter().map(|r| r.stream_seq).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    let inserted = sqlx::query(
        "INSERT INTO processed_commands (command_id, subject, stream_seq, outcome)
         SELECT id, subject, seq, outcome::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
           AS t(id, subject, seq, outcome)
         ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&seqs)
    .bind(&outcomes)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted != rows.len() as u64 {
        return Err(StorageError::ConcurrentCommand);
    }
    Ok(())
}

/// One message for the relay to publish after commit.
pub struct OutboxRow {
    pub msg_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Extra NATS headers, as a JSON object of strings.
    pub headers: Option<serde_json::Value>,
}

pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, rows: &[OutboxRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.msg_id).collect();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let headers: Vec<Option<String>> = rows.iter().map(|r| r.headers.as_ref().map(|h| h.to_string())).collect();
    sqlx::query(
        "INSERT INTO outbox (msg_id, subject, payload, headers)
         SELECT id, subject, payload, headers::jsonb
           FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY
             AS t(id, subject, payload, headers, ord)
         ORDER BY ord",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&payloads)
    .bind(&headers)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
}

pub async fn record_dead_letters(tx: &mut Transaction<'_, Postgres>, rows: &[DeadLetter]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO dead_letters (id, subject, command_id, stream_seq, code, message, field, payload, payload_truncated)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[],
                              $8::bytea[], $9::bool[])",
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
