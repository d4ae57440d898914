//! The node inventory in PostgreSQL (`nodes`): each node's last stored report and status, written
//! with the events announcing the change in one transaction (outbox shard `RESOURCES`).

use chrono::{DateTime, Utc};
use orch_protocol::resources::{NodeReport, NodeStatus};
use sqlx::PgPool;
use sqlx::types::Json;

use super::Result;
use super::batch::OutboxRow;
use crate::resources::inventory::StoredNode;

#[derive(sqlx::FromRow)]
struct Row {
    status: String,
    since: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    report: Json<NodeReport>,
}

/// Every stored node, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<StoredNode>> {
    let rows: Vec<Row> =
        sqlx::query_as("SELECT status, since, last_seen, report FROM nodes ORDER BY name").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredNode {
            report: r.report.0,
            status: NodeStatus::from_stored(&r.status),
            since: r.since,
            last_seen: r.last_seen,
        })
        .collect())
}

/// Stores the nodes (the last of each name wins) and their events, in one transaction.
pub async fn record(pool: &PgPool, nodes: &[StoredNode], events: &[OutboxRow]) -> Result<()> {
    let mut last: std::collections::BTreeMap<&str, &StoredNode> = Default::default();
    for node in nodes {
        last.insert(&node.report.node, node);
    }
    let nodes: Vec<&StoredNode> = last.into_values().collect();
    let mut tx = pool.begin().await?;
    if !nodes.is_empty() {
        sqlx::query(
            "INSERT INTO nodes (name, status, since, last_seen, report, updated_at)
             SELECT *, now() FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::jsonb[])
             ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, since = EXCLUDED.since,
                 last_seen = EXCLUDED.last_seen, report = EXCLUDED.report, updated_at = now()",
        )
        .bind(nodes.iter().map(|n| n.report.node.as_str()).collect::<Vec<_>>())
        .bind(nodes.iter().map(|n| n.status.as_str()).collect::<Vec<_>>())
        .bind(nodes.iter().map(|n| n.since).collect::<Vec<_>>())
        .bind(nodes.iter().map(|n| n.last_seen).collect::<Vec<_>>())
        .bind(nodes.iter().map(|n| Json(&n.report)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !events.is_empty() {
        super::outbox::insert(&mut tx, super::outbox::shard::RESOURCES, events).await?;
    }
    tx.commit().await?;
    Ok(())
}
