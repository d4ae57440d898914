//! Periodic clean-up, at start and then hourly: every table that grows with use is held to its
//! bound (docs/architecture.md, "Bounded growth"), and the sizes are set in the metrics.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::storage::retention::{self, Aged};
use crate::storage::{health, ledger};

const EVERY: Duration = Duration::from_secs(3600);

/// How long, or how many, of each kind of record are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// How long the ids of processed commands are remembered for exactly-once handling.
    pub processed: Duration,
    /// How long the history of health transitions is kept.
    pub health_history: Duration,
    /// Dead letters: at most this old, and at most this many (the newest).
    pub dead_letters: Duration,
    pub dead_letters_max: i64,
    /// The history of priority changes: at most this old, and at most this many.
    pub priority_changes: Duration,
    pub priority_changes_max: i64,
    /// Manifest versions kept (the newest; the current one always).
    pub manifests: i64,
    /// Start-up runs kept (the newest).
    pub startup_runs: i64,
}

impl Default for Retention {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        Retention {
            processed: week,
            health_history: week,
            dead_letters: 4 * week,
            dead_letters_max: 100_000,
            priority_changes: 4 * week,
            priority_changes_max: 1_000_000,
            manifests: 100,
            startup_runs: 100,
        }
    }
}

pub async fn run(pool: PgPool, retention: Retention, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.requested() => return,
        }
        once(&pool, &retention, &metrics).await;
    }
}

/// One round of clean-up; a failure is logged and retried at the next round.
async fn once(pool: &PgPool, retention: &Retention, metrics: &Metrics) {
    report("processed-command ids", ledger::prune_processed(pool, retention.processed).await);
    report("health transitions", health::prune_history(pool, retention.health_history).await);
    let dead = retention::prune(pool, Aged::DeadLetters, Some(retention.dead_letters), retention.dead_letters_max);
    report("dead letters", dead.await);
    let changes =
        retention::prune(pool, Aged::PriorityChanges, Some(retention.priority_changes), retention.priority_changes_max);
    report("priority changes", changes.await);
    report("manifest versions", retention::prune_manifests(pool, retention.manifests).await);
    report("start-up runs", retention::prune(pool, Aged::StartupRuns, None, retention.startup_runs).await);
    match retention::sizes(pool).await {
        Ok(sizes) => {
            for (table, rows) in sizes {
                metrics.table_rows(table, rows);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the bounded tables' rows"),
    }
}

fn report(what: &str, outcome: crate::storage::Result<u64>) {
    match outcome {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "pruned {what} past their bound"),
        Err(e) => tracing::warn!(error = %e, "pruning {what} failed; will retry"),
    }
}
