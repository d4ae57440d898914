//! The `instances` table: set-based reads and writes, so a batch of any size costs a fixed number
//! of round trips.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orch_protocol::health::{Check, Maintenance};
use orch_protocol::registry::{Health, Instance};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};

use super::Result;

const COLUMNS: &str = "id, name, version, address, port, protocol, tags, metadata, dependencies, weight, \
                       ttl_seconds, health, lease, checks, maintenance, flapping_since, health_changes, \
                       registered_at, updated_at, critical_since, revision, check_secrets, changed_by";

#[derive(FromRow)]
struct Row {
    id: String,
    name: String,
    version: String,
    address: String,
    port: i32,
    protocol: String,
    tags: Json<Vec<String>>,
    metadata: Json<BTreeMap<String, String>>,
    dependencies: Json<Vec<String>>,
    weight: i32,
    ttl_seconds: i32,
    health: String,
    lease: String,
    checks: Option<Json<Vec<Check>>>,
    maintenance: Option<Json<Maintenance>>,
    flapping_since: Option<DateTime<Utc>>,
    health_changes: Option<Json<Vec<DateTime<Utc>>>>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    critical_since: Option<DateTime<Utc>>,
    revision: i64,
    check_secrets: Option<Json<BTreeMap<String, BTreeMap<String, String>>>>,
    changed_by: Option<String>,
}

impl From<Row> for Instance {
    fn from(r: Row) -> Self {
        let mut checks: Vec<Check> = r.checks.map(|c| c.0).unwrap_or_default();
        for (check, values) in r.check_secrets.map(|s| s.0).unwrap_or_default() {
            if let Some(check) = checks.iter_mut().find(|c| c.spec.id == check) {
                check.spec.headers.extend(values);
            }
        }
        Instance {
            id: r.id,
            name: r.name,
            version: r.version,
            address: r.address,
            port: r.port as u32,
            protocol: r.protocol,
            tags: r.tags.0,
            metadata: r.metadata.0,
            dependencies: r.dependencies.0,
            weight: r.weight as u32,
            ttl_seconds: r.ttl_seconds as u32,
            // The column has a CHECK constraint, so anything else cannot be stored.
            health: Health::parse(&r.health).unwrap_or(Health::Critical),
            lease: Health::parse(&r.lease).unwrap_or(Health::Critical),
            checks,
            maintenance: r.maintenance.map(|m| m.0),
            flapping_since: r.flapping_since,
            health_changes: r.health_changes.map(|c| c.0).unwrap_or_default(),
            registered_at: r.registered_at,
            updated_at: r.updated_at,
            critical_since: r.critical_since,
            revision: r.revision,
            changed_by: r.changed_by,
        }
    }
}

/// Locks and returns the instances with these ids (those that exist).
pub async fn lock(tx: &mut Transaction<'_, Postgres>, ids: &[String]) -> Result<Vec<Instance>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM instances WHERE id = ANY($1) FOR UPDATE"))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(Instance::from).collect())
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Instance>> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM instances WHERE id = $1")).bind(id).fetch_optional(pool).await?;
    Ok(row.map(Instance::from))
}

/// Most instances one page returns; the default page is 100.
pub const PAGE_MAX: i64 = 1000;
pub const PAGE_DEFAULT: i64 = 100;

/// Filters of a listing; every present filter must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub name: Option<String>,
    /// Every tag listed must be present.
    pub tags: Vec<String>,
    pub health: Option<Health>,
    /// Every key must have exactly this value.
    pub metadata: BTreeMap<String, String>,
    /// Keyset pagination: only ids greater than this.
    pub after: Option<String>,
    pub limit: i64,
    /// Only instances discovery may hand out: not in maintenance, nor their service.
    pub discoverable: bool,
}

/// Instances matching `filter`, ordered by id.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Instance>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {COLUMNS} FROM instances WHERE true"));
    if let Some(name) = &filter.name {
        q.push(" AND name = ").push_bind(name);
    }
    if !filter.tags.is_empty() {
        q.push(" AND tags @> ").push_bind(Json(&filter.tags));
    }
    if let Some(health) = filter.health {
        q.push(" AND health = ").push_bind(health.as_str());
    }
    if !filter.metadata.is_empty() {
        q.push(" AND metadata @> ").push_bind(Json(&filter.metadata));
    }
    if let Some(after) = &filter.after {
        q.push(" AND id > ").push_bind(after);
    }
    if filter.discoverable {
        q.push(
            " AND maintenance IS NULL \
             AND NOT EXISTS (SELECT 1 FROM service_maintenance m WHERE m.service = instances.name)",
        );
    }
    q.push(" ORDER BY id LIMIT ").push_bind(filter.limit);
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(Instance::from).collect())
}

/// What the lease table and the health tracker need of every instance at start-up.
#[derive(Debug, Clone, FromRow)]
pub struct Summary {
    pub id: String,
    pub name: String,
    pub ttl_seconds: i32,
    pub lease: String,
    pub health: String,
    pub critical_since: Option<DateTime<Utc>>,
    pub in_maintenance: bool,
    pub flapping_since: Option<DateTime<Utc>>,
    /// The latest health change, for flap settling.
    pub last_change: Option<DateTime<Utc>>,
}

pub async fn all_summaries(pool: &PgPool) -> Result<Vec<Summary>> {
    Ok(sqlx::query_as(
        "SELECT id, name, ttl_seconds, lease, health, critical_since, maintenance IS NOT NULL AS in_maintenance,
                flapping_since, (health_changes ->> -1)::timestamptz AS last_change
           FROM instances",
    )
    .fetch_all(pool)
    .await?)
}

/// Every instance that declares checks, for the health checker at start-up.
pub async fn all_with_checks(pool: &PgPool) -> Result<Vec<Instance>> {
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM instances WHERE checks IS NOT NULL")).fetch_all(pool).await?;
    Ok(rows.into_iter().map(Instance::from).collect())
}
