//! Writes lifecycle state changes and their events to PostgreSQL off the controller's path: the
//! controller hands each change over and goes on; this task commits everything waiting in one
//! transaction (state rows and outbox events together) and wakes the outbox relay.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};

use crate::storage::{self, batch::OutboxRow, lifecycle::StateRow};

/// What the controller records: a state change with the event announcing it, or an event that
/// changes no service state (`manifest_applied`, `run_finished`).
pub enum Record {
    State(StateRow, OutboxRow),
    Event(OutboxRow),
}

/// Most records per transaction.
const BATCH: usize = 1000;

/// Runs until every sender is gone and the queue is drained.
pub async fn run(pool: PgPool, mut records: mpsc::UnboundedReceiver<Record>, outbox_written: Arc<Notify>) {
    let mut buffer = Vec::with_capacity(BATCH);
    while records.recv_many(&mut buffer, BATCH).await > 0 {
        let (mut states, mut events) = (Vec::new(), Vec::new());
        for record in buffer.drain(..) {
            match record {
                Record::State(row, event) => {
                    states.push(row);
                    events.push(event);
                }
                Record::Event(event) => events.push(event),
            }
        }
        let write = || storage::lifecycle::record(&pool, &states, &events);
        match storage::retry("recording lifecycle states", write).await {
            Ok(()) => outbox_written.notify_one(),
            Err(e) => {
                tracing::error!(error = %e, records = states.len() + events.len(), "lifecycle states not recorded")
            }
        }
    }
}
