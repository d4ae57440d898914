//! Periodic clean-up: forgets processed-command ids and health transitions past their retention.

use std::time::Duration;

use sqlx::PgPool;

use crate::shutdown::Shutdown;
use crate::storage::{health, ledger};

const EVERY: Duration = Duration::from_secs(3600);

/// How long each kind of record is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// How long the ids of processed commands are remembered for exactly-once handling.
    pub processed: Duration,
    /// How long the history of health transitions is kept.
    pub health_history: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        Retention { processed: week, health_history: week }
    }
}

pub async fn run(pool: PgPool, retention: Retention, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.requested() => return,
        }
        match ledger::prune_processed(&pool, retention.processed).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned processed-command ids past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning processed-command ids failed; will retry"),
        }
        match health::prune_history(&pool, retention.health_history).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned health transitions past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning health transitions failed; will retry"),
        }
    }
}
