//! Health tables: service-wide maintenance, the last aggregate of each service, and the history of
//! transitions with its retention.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::events::{ServiceChangedData, SystemChangedData};
use orch_protocol::health::{Aggregate, Counts, Maintenance};
use orch_protocol::registry::{Health, Instance};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, Transaction};

use super::Result;

/// Locks and returns the maintenance of these services (those in maintenance).
pub async fn lock_service_maintenance(
    tx: &mut Transaction<'_, Postgres>,
    services: &[String],
) -> Result<HashMap<String, Maintenance>> {
    if services.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT service, reason, since FROM service_maintenance WHERE service = ANY($1) FOR UPDATE")
            .bind(services)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().map(|(service, reason, since)| (service, Maintenance { reason, since })).collect())
}

pub async fn put_service_maintenance(
    tx: &mut Transaction<'_, Postgres>,
    service: &str,
    maintenance: Option<&Maintenance>,
) -> Result<()> {
    match maintenance {
        Some(m) => {
            sqlx::query(
                "INSERT INTO service_maintenance (service, reason, since) VALUES ($1, $2, $3)
                 ON CONFLICT (service) DO UPDATE SET reason = EXCLUDED.reason",
            )
            .bind(service)
            .bind(&m.reason)
            .bind(m.since)
            .execute(&mut **tx)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM service_maintenance WHERE service = $1").bind(service).execute(&mut **tx).await?
        }
    };
    Ok(())
}

/// The services in maintenance: every one, or only `only`.
pub async fn service_maintenance(pool: &PgPool, only: Option<&str>) -> Result<HashMap<String, Maintenance>> {
    let rows: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT service, reason, since FROM service_maintenance WHERE $1::text IS NULL OR service = $1")
            .bind(only)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(service, reason, since)| (service, Maintenance { reason, since })).collect())
}

pub async fn put_service_health(
    tx: &mut Transaction<'_, Postgres>,
    service: &str,
    data: Option<&ServiceChangedData>,
    now: DateTime<Utc>,
) -> Result<()> {
    match data {
        Some(d) => {
            sqlx::query(
                "INSERT INTO service_health (service, state, counts, since) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service) DO UPDATE SET state = EXCLUDED.state, counts = EXCLUDED.counts,
                   since = EXCLUDED.since",
            )
            .bind(service)
            .bind(d.state.as_str())
            .bind(Json(d.counts))
            .bind(now)
            .execute(&mut **tx)
            .await?
        }
        None => sqlx::query("DELETE FROM service_health WHERE service = $1").bind(service).execute(&mut **tx).await?,
    };
    Ok(())
}

/// The last recorded aggregate of every tracked service.
pub async fn service_health(pool: &PgPool) -> Result<HashMap<String, (Aggregate, Counts)>> {
    let rows: Vec<(String, String, Json<Counts>)> =
        sqlx::query_as("SELECT service, state, counts FROM service_health").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(service, state, counts)| {
            let state = match state.as_str() {
                "healthy" => Aggregate::Healthy,
                "degraded" => Aggregate::Degraded,
                "critical" => Aggregate::Critical,
                _ => return None,
            };
            Some((service, (state, counts.0)))
        })
        .collect())
}

/// One recorded transition, as the history endpoints return it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub damped: bool,
    /// Service level: the counts of the service's instances; system level: the change of the system.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

/// Which transitions to list: newest first, older than `before` (a `seq`) when given.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub instance_id: Option<String>,
    pub service: Option<String>,
    pub level: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

pub async fn history(pool: &PgPool, f: &HistoryFilter) -> Result<Vec<HistoryEntry>> {
    Ok(sqlx::query_as(
        "SELECT seq, at, level, service, instance_id, check_id, previous, state, output, damped, detail
           FROM health_transitions
          WHERE ($1::text IS NULL OR instance_id = $1)
            AND ($2::text IS NULL OR service = $2)
            AND ($3::text IS NULL OR level = $3)
            AND ($4::bigint IS NULL OR seq < $4)
          ORDER BY seq DESC
          LIMIT $5",
    )
    .bind(&f.instance_id)
    .bind(&f.service)
    .bind(&f.level)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await?)
}

/// Forgets transitions older than `retention`. Returns how many.
pub async fn prune_history(pool: &PgPool, retention: Duration) -> Result<u64> {
    let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    Ok(sqlx::query("DELETE FROM health_transitions WHERE at < $1").bind(cutoff).execute(pool).await?.rows_affected())
}

/// One row of the health history (`health_transitions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    /// `check`, `instance`, `service` or `system`.
    pub level: &'static str,
    pub service: Option<String>,
    pub instance_id: Option<String>,
    pub check_id: Option<String>,
    pub previous: Option<String>,
    pub state: String,
    pub output: Option<String>,
    /// No event was published for it: the instance was flapping.
    pub damped: bool,
    pub detail: Option<serde_json::Value>,
}

impl Transition {
    pub fn check(
        inst: &Instance,
        check: &str,
        previous: Health,
        status: Health,
        output: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Transition {
            at,
            level: "check",
            service: Some(inst.name.clone()),
            instance_id: Some(inst.id.clone()),
            check_id: Some(check.to_string()),
            previous: Some(previous.as_str().to_string()),
            state: status.as_str().to_string(),
            output: (!output.is_empty()).then(|| output.to_string()),
            damped: false,
            detail: None,
        }
    }

    pub fn service(data: &ServiceChangedData, at: DateTime<Utc>) -> Self {
        let detail = serde_json::to_value(data.counts).ok();
        Transition::aggregate("service", Some(data.service.clone()), data.previous, data.state, detail, at)
    }

    pub fn system(data: &SystemChangedData, at: DateTime<Utc>) -> Self {
        Transition::aggregate("system", None, data.previous, data.state, serde_json::to_value(data).ok(), at)
    }

    fn aggregate(
        level: &'static str,
        service: Option<String>,
        previous: Option<Aggregate>,
        state: Aggregate,
        detail: Option<serde_json::Value>,
        at: DateTime<Utc>,
    ) -> Self {
        Transition {
            at,
            level,
            service,
            instance_id: None,
            check_id: None,
            previous: previous.map(|p| p.as_str().to_string()),
            state: state.as_str().to_string(),
            output: None,
            damped: false,
            detail,
        }
    }
}
