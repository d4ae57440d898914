//! Periodic clean-up: forgets processed-command ids past their retention.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::storage::ledger;

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(pool: PgPool, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        match ledger::prune_processed(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned processed-command ids past retention"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning processed-command ids failed; will retry")
            }
        }
    }
}
