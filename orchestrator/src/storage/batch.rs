//! The writes of one batch in a single statement: instance upserts and deletes, outbox rows and the
//! processed-command ledger, as data-modifying CTEs. One round trip instead of four keeps the
//! writer's transaction short, which is what bounds command throughput.

use orch_protocol::registry::Instance;

use super::health::Transition;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{Result, StorageError};

/// One processed command to remember.
pub struct Processed {
    /// The ledger key (the command id in its path's namespace).
    pub command_id: String,
    pub fingerprint: i64,
    pub subject: String,
    pub stream_seq: Option<i64>,
    pub outcome: String,
}

/// One message for the relay to publish after commit.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub msg_id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Extra NATS headers, as a JSON object of strings.
    pub headers: Option<serde_json::Value>,
}

/// Everything a batch writes besides dead letters and system state.
pub struct Writes<'a> {
    /// The writer shard committing the batch (recorded on outbox rows).
    pub shard: i16,
    pub puts: &'a [&'a Instance],
    pub deletes: &'a [String],
    pub outbox: &'a [OutboxRow],
    pub processed: &'a [Processed],
    /// Health history rows.
    pub transitions: &'a [Transition],
}

/// An instance as its row stores it: the instance's JSON, whose checks show sensitive header
/// values redacted, and those values apart (`check_secrets`), so the checks still send them.
#[derive(serde::Serialize)]
struct Stored<'a> {
    #[serde(flatten)]
    instance: &'a Instance,
    check_secrets: Option<std::collections::BTreeMap<&'a str, std::collections::BTreeMap<String, String>>>,
}

impl<'a> Stored<'a> {
    fn of(instance: &'a Instance) -> Stored<'a> {
        let secrets: std::collections::BTreeMap<_, _> = instance
            .checks
            .iter()
            .map(|c| (c.spec.id.as_str(), c.spec.sensitive_headers()))
            .filter(|(_, values)| !values.is_empty())
            .collect();
        Stored { instance, check_secrets: (!secrets.is_empty()).then_some(secrets) }
    }
}

/// Applies the writes. Fails with [`StorageError::ConcurrentCommand`] when another transaction
/// recorded one of the commands first, so the caller re-runs the batch and finds it processed.
pub async fn write(tx: &mut Transaction<'_, Postgres>, w: &Writes<'_>) -> Result<()> {
    let conn: &mut PgConnection = tx;
    let recorded: i64 = sqlx::query_scalar(
        "WITH
           put AS (
             INSERT INTO instances SELECT * FROM jsonb_populate_recordset(NULL::instances, $1)
             ON CONFLICT (id) DO UPDATE SET
               name = EXCLUDED.name, version = EXCLUDED.version, address = EXCLUDED.address,
               port = EXCLUDED.port, protocol = EXCLUDED.protocol, tags = EXCLUDED.tags,
               metadata = EXCLUDED.metadata, dependencies = EXCLUDED.dependencies,
               weight = EXCLUDED.weight, ttl_seconds = EXCLUDED.ttl_seconds, health = EXCLUDED.health,
               registered_at = EXCLUDED.registered_at, updated_at = EXCLUDED.updated_at,
               critical_since = EXCLUDED.critical_since, revision = EXCLUDED.revision,
               lease = EXCLUDED.lease, checks = EXCLUDED.checks, maintenance = EXCLUDED.maintenance,
               flapping_since = EXCLUDED.flapping_since, health_changes = EXCLUDED.health_changes,
               check_secrets = EXCLUDED.check_secrets, changed_by = EXCLUDED.changed_by
             RETURNING 1),
           del AS (DELETE FROM instances WHERE id = ANY($2) RETURNING 1),
           evt AS (
             INSERT INTO outbox (shard, msg_id, subject, payload, headers)
             SELECT $12, id, subject, payload, headers::jsonb
               FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::text[]) WITH ORDINALITY
                 AS t(id, subject, payload, headers, ord)
             ORDER BY ord
             RETURNING 1),
           done AS (
             INSERT INTO processed_commands (command_id, fingerprint, subject, stream_seq, outcome)
             SELECT id, fingerprint, subject, seq, outcome::json
               FROM unnest($7::text[], $8::int8[], $9::text[], $10::int8[], $11::text[])
                 AS t(id, fingerprint, subject, seq, outcome)
             ON CONFLICT (command_id) DO NOTHING
             RETURNING 1),
           hist AS (
             INSERT INTO health_transitions
               (at, level, service, instance_id, check_id, previous, state, output, damped, detail)
             SELECT at, level, service, instance_id, check_id, previous, state, output, damped, detail
               FROM jsonb_to_recordset($13) AS t(at timestamptz, level text, service text, instance_id text,
                 check_id text, previous text, state text, output text, damped boolean, detail jsonb)
             RETURNING 1)
         SELECT count(*) FROM done",
    )
    .bind(Json(w.puts.iter().map(|i| Stored::of(i)).collect::<Vec<_>>()))
    .bind(w.deletes)
    .bind(w.outbox.iter().map(|r| r.msg_id).collect::<Vec<_>>())
    .bind(w.outbox.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>())
    .bind(w.outbox.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>())
    .bind(w.outbox.iter().map(|r| r.headers.as_ref().map(|h| h.to_string())).collect::<Vec<_>>())
    .bind(w.processed.iter().map(|r| r.command_id.as_str()).collect::<Vec<_>>())
    .bind(w.processed.iter().map(|r| r.fingerprint).collect::<Vec<_>>())
    .bind(w.processed.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>())
    .bind(w.processed.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
    .bind(w.processed.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
    .bind(w.shard)
    .bind(Json(w.transitions))
    .fetch_one(conn)
    .await?;
    if recorded != w.processed.len() as i64 {
        return Err(StorageError::ConcurrentCommand);
    }
    Ok(())
}

impl From<orch_protocol::events::Encoded> for OutboxRow {
    fn from(encoded: orch_protocol::events::Encoded) -> Self {
        OutboxRow { msg_id: encoded.id, subject: encoded.subject, payload: encoded.payload, headers: None }
    }
}
