//! The record of start-up runs in PostgreSQL, off the controller's path: one task writes a run's
//! beginning and its end in the order they were asked, so the end (an update of the run's row)
//! never overtakes the beginning (its insert) when a run is over within moments.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::storage;

/// What the controller records of a run.
pub(super) enum RunWrite {
    Started {
        id: Uuid,
        version: i64,
        started_at: DateTime<Utc>,
    },
    /// The outcome, and the profile as JSON.
    Finished {
        id: Uuid,
        outcome: &'static str,
        profile: serde_json::Value,
    },
}

pub(super) fn spawn_run_recorder(pool: PgPool) -> mpsc::UnboundedSender<RunWrite> {
    let (tx, mut rx) = mpsc::unbounded_channel::<RunWrite>();
    tokio::spawn(async move {
        while let Some(write) = rx.recv().await {
            match write {
                RunWrite::Started { id, version, started_at } => {
                    let insert = || storage::lifecycle::insert_run(&pool, id, version, started_at);
                    if let Err(e) = storage::retry("recording a start-up run", insert).await {
                        tracing::warn!(error = %e, "start-up run not recorded");
                    }
                }
                RunWrite::Finished { id, outcome, profile } => {
                    let finish = || storage::lifecycle::finish_run(&pool, id, outcome, &profile);
                    if let Err(e) = storage::retry("recording a start-up profile", finish).await {
                        tracing::warn!(error = %e, "start-up profile not recorded");
                    }
                }
            }
        }
    });
    tx
}
