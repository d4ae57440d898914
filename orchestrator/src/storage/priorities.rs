//! Priorities in PostgreSQL: the policy and adjustment of each service, and the audit history of
//! every change. A batch of changes is written with its events in the outbox, in one transaction,
//! so the history, the state and the announcement never disagree.

use chrono::{DateTime, Utc};
use orch_protocol::priority::{Adjustment, Change};
use sqlx::PgPool;
use sqlx::types::Json;

use super::Result;
use super::batch::OutboxRow;

/// One service's stored policy and adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPriority {
    pub service: String,
    pub baseline: Option<u8>,
    pub min: u8,
    pub max: u8,
    pub pinned: bool,
    pub adjustment: Option<Adjustment>,
    pub updated_at: DateTime<Utc>,
}

type Row = (String, Option<i16>, i16, i16, bool, Option<Json<Adjustment>>, DateTime<Utc>);

/// The priority guard's hold as stored: `held` is the priority book's own form of what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHold {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub held: serde_json::Value,
}

/// The hold that was on when the orchestrator stopped, if any.
pub async fn load_hold(pool: &PgPool) -> Result<Option<StoredHold>> {
    let row: Option<(DateTime<Utc>, DateTime<Utc>, Json<serde_json::Value>)> =
        sqlx::query_as("SELECT since, until, held FROM priority_hold").fetch_optional(pool).await?;
    Ok(row.map(|(since, until, held)| StoredHold { since, until, held: held.0 }))
}

/// Every stored priority.
pub async fn load(pool: &PgPool) -> Result<Vec<StoredPriority>> {
    let rows: Vec<Row> =
        sqlx::query_as("SELECT service, baseline, min, max, pinned, adjustment, updated_at FROM priorities")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(service, baseline, min, max, pinned, adjustment, updated_at)| StoredPriority {
            service,
            baseline: baseline.map(|b| b as u8),
            min: min as u8,
            max: max as u8,
            pinned,
            adjustment: adjustment.map(|a| a.0),
            updated_at,
        })
        .collect())
}

/// Writes the new state of changed services, the changes, their events and the hold (when it
/// changed: `Some(None)` when it ended) in one transaction.
pub async fn commit(
    pool: &PgPool,
    states: &[StoredPriority],
    changes: &[Change],
    events: &[OutboxRow],
    hold: Option<Option<&StoredHold>>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    match hold {
        None => {}
        Some(None) => {
            sqlx::query("DELETE FROM priority_hold").execute(&mut *tx).await?;
        }
        Some(Some(hold)) => {
            sqlx::query(
                "INSERT INTO priority_hold (singleton, since, until, held) VALUES (true, $1, $2, $3)
                 ON CONFLICT (singleton) DO UPDATE SET since = EXCLUDED.since, until = EXCLUDED.until,
                     held = EXCLUDED.held",
            )
            .bind(hold.since)
            .bind(hold.until)
            .bind(Json(&hold.held))
            .execute(&mut *tx)
            .await?;
        }
    }
    if !states.is_empty() {
        sqlx::query(
            "INSERT INTO priorities (service, baseline, min, max, pinned, adjustment, updated_at)
             SELECT * FROM UNNEST($1::text[], $2::smallint[], $3::smallint[], $4::smallint[], $5::bool[],
                                  $6::jsonb[], $7::timestamptz[])
             ON CONFLICT (service) DO UPDATE SET baseline = EXCLUDED.baseline, min = EXCLUDED.min,
                 max = EXCLUDED.max, pinned = EXCLUDED.pinned, adjustment = EXCLUDED.adjustment,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(states.iter().map(|s| s.service.as_str()).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.baseline.map(i16::from)).collect::<Vec<_>>())
        .bind(states.iter().map(|s| i16::from(s.min)).collect::<Vec<_>>())
        .bind(states.iter().map(|s| i16::from(s.max)).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.pinned).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.adjustment.as_ref().map(Json)).collect::<Vec<_>>())
        .bind(states.iter().map(|s| s.updated_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !changes.is_empty() {
        sqlx::query(
            "INSERT INTO priority_changes (id, service, at, action, outcome, change)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])",
        )
        .bind(changes.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.service.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.action.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.outcome.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(Json).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !events.is_empty() {
        super::outbox::insert(&mut tx, super::outbox::shard::PRIORITIES, events).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The newest `limit` changes of a service, newest first.
pub async fn history(pool: &PgPool, service: &str, limit: u32) -> Result<Vec<Change>> {
    let rows: Vec<(Json<Change>,)> =
        sqlx::query_as("SELECT change FROM priority_changes WHERE service = $1 ORDER BY at DESC, id DESC LIMIT $2")
            .bind(service)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(c,)| c.0).collect())
}

/// Names of the services in the registry: with the stored and managed ones, the services the
/// mass-change guard counts.
pub async fn registered_services(pool: &PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT DISTINCT name FROM instances").fetch_all(pool).await?)
}

/// The engine's changes that count against the guardrails' windows (accepted or held `set` and
/// `clear`, and released held changes that applied) within `within` of now, oldest first, with
/// whether each counts for the mass-change window too (held ones do not): a new leader or a
/// restarted orchestrator goes on with the windows where they were.
pub async fn recent_engine_changes(
    pool: &PgPool,
    within: std::time::Duration,
) -> Result<Vec<(String, DateTime<Utc>, bool)>> {
    let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query_as(
        "SELECT service, at, outcome <> 'held' FROM priority_changes
         WHERE at > now() - make_interval(secs => $1::double precision / 1000)
           AND ((action IN ('set', 'clear') AND outcome IN ('applied', 'clamped', 'held'))
                OR (action = 'release' AND outcome IN ('applied', 'clamped')))
         ORDER BY at",
    )
    .bind(within_ms)
    .fetch_all(pool)
    .await?)
}
