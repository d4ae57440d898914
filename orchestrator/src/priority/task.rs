//! The task that owns the priority book: it takes what is waiting in one go, decides each input,
//! stores the batch's changes with their events in one transaction, and only then answers. A
//! runaway engine's flood thus costs one transaction per batch, not one per change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use orch_protocol::events::{self, EventKind, SYSTEM_SERVICE};
use orch_protocol::priority::{ChangeReply, ReleaseReply};
use orch_protocol::{ErrorCode, ProtocolError, principal};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, watch};

use super::book::{Book, By, Effects};
use super::{Config, Effective, Input};
use crate::shutdown::Shutdown;
use crate::storage::{self, batch::OutboxRow, priorities::StoredPriority};

/// Most inputs decided per transaction.
const BATCH: usize = 1024;
/// How often the registry's service names are re-read (the mass-change guard counts them).
const REGISTERED_EVERY: Duration = Duration::from_secs(5);
/// How long a batch may wait for PostgreSQL before its callers are told to retry.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch this large means a flood: the next one is gathered for [`FLOOD_PACE`] first, so that a
/// flood costs at most about 100 commits per second whatever its rate. Each commit is a WAL flush
/// that the registry's writers wait behind too; a caller of a quiet moment is not delayed.
const FLOOD_BATCH: usize = 64;
const FLOOD_PACE: Duration = Duration::from_millis(10);

pub(super) struct Task {
    pub config: Config,
    pub pool: PgPool,
    pub book: Book,
    pub effective: watch::Sender<Effective>,
    pub outbox_written: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// An answer held back until its batch is stored.
// Answers live for one batch; boxing the common variant would only add an allocation each.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Change(tokio::sync::oneshot::Sender<Result<ChangeReply, ProtocolError>>, Result<ChangeReply, ProtocolError>),
    Release(tokio::sync::oneshot::Sender<Result<ReleaseReply, ProtocolError>>, ReleaseReply),
}

impl Task {
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut defaults: watch::Receiver<BTreeMap<String, u8>>,
        mut shutdown: Shutdown,
    ) {
        let mut buffer = Vec::with_capacity(BATCH);
        let mut registered = tokio::time::interval(REGISTERED_EVERY);
        registered.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.book.next_deadline(Instant::now(), Utc::now());
            tokio::select! {
                n = inputs.recv_many(&mut buffer, BATCH) => if n == 0 { break },
                _ = shutdown.requested() => break,
                changed = defaults.changed() => {
                    if changed.is_ok() {
                        let manifest = defaults.borrow_and_update().clone();
                        self.book.set_defaults(manifest);
                        self.effective.send_replace(Arc::new(self.book.effective_map()));
                    }
                    continue;
                }
                _ = sleep_until(deadline), if deadline.is_some() => {}
                _ = registered.tick() => {
                    match storage::priorities::registered_services(&self.pool).await {
                        Ok(names) => self.book.set_registered(names),
                        Err(e) => tracing::debug!(error = %e, "could not read the registry's services"),
                    }
                    continue;
                }
            }
            let (now, at) = (Instant::now(), Utc::now());
            self.book.tick(now, at);
            let flood = buffer.len() >= FLOOD_BATCH;
            let mut answers = Vec::new();
            for input in buffer.drain(..) {
                match input {
                    Input::Engine(request, reply) => {
                        let service = request.service.clone();
                        let result = self.book.engine(request, now, at);
                        let result = result.map(|change| ChangeReply { change, priority: self.book.view(&service) });
                        answers.push(Answer::Change(reply, result));
                    }
                    Input::Policy(request, principal, reply) => {
                        let result = self.book.policy(&request, &principal, at);
                        let result =
                            result.map(|change| ChangeReply { change, priority: self.book.view(&request.service) });
                        answers.push(Answer::Change(reply, result));
                    }
                    Input::Release(request, principal, reply) => {
                        let by = By { principal: &principal, source: &request.source, reason: &request.reason };
                        let changes = self.book.release(by, request.apply, now, at);
                        answers.push(Answer::Release(reply, ReleaseReply { changes, guard: self.book.guard(now) }));
                    }
                    Input::View(service, reply) => {
                        let _ = reply.send(self.book.view(&service));
                    }
                    Input::List(reply) => {
                        let _ = reply.send(orch_protocol::priority::ListReply {
                            priorities: self.book.views(),
                            guard: self.book.guard(now),
                        });
                    }
                }
            }
            let effects = self.book.take_effects();
            let moved = !effects.dirty.is_empty();
            let wrote = !(effects.changes.is_empty() && effects.system.is_empty() && !effects.hold_changed);
            let stored = !wrote || self.store(&effects).await;
            if stored {
                self.book.committed();
            } else {
                self.book.rollback(effects);
            }
            if moved {
                self.effective.send_replace(Arc::new(self.book.effective_map()));
            }
            for answer in answers {
                let unavailable = || {
                    ProtocolError::new(
                        ErrorCode::Unavailable,
                        "the change could not be stored: PostgreSQL is unavailable; retry later",
                    )
                };
                match answer {
                    Answer::Change(reply, result) => {
                        let _ = reply.send(if stored { result } else { Err(unavailable()) });
                    }
                    Answer::Release(reply, result) => {
                        let _ = reply.send(if stored { Ok(result) } else { Err(unavailable()) });
                    }
                }
            }
            if flood && wrote {
                tokio::time::sleep(FLOOD_PACE).await;
            }
        }
        // Refusals still being counted are recorded before the task goes.
        self.book.flush_tallies(Instant::now(), Utc::now(), true);
        let effects = self.book.take_effects();
        if (!effects.changes.is_empty() || effects.hold_changed) && !self.store(&effects).await {
            tracing::warn!(
                records = effects.changes.len(),
                "the last counts of refused priority requests could not be stored"
            );
        }
        tracing::debug!("priority task stopped");
    }

    /// Stores the batch: the new state of each changed service, the changes and their events.
    async fn store(&self, effects: &Effects) -> bool {
        let subjects = &self.config.subjects;
        let mut events: Vec<OutboxRow> = effects
            .changes
            .iter()
            .map(|c| {
                let kind = EventKind::Priority(c.outcome);
                events::encode_with_id(subjects, c.id, kind, &c.service, &c.service, &c.principal, c.at, c).into()
            })
            .collect();
        events.extend(effects.system.iter().map(|(kind, data)| {
            // The guard's own doing; the changes that led to it name their senders.
            let by = principal::ORCHESTRATOR;
            OutboxRow::from(events::encode(subjects, *kind, SYSTEM_SERVICE, "priority", by, Utc::now(), data))
        }));
        let states: Vec<StoredPriority> = effects.dirty.iter().filter_map(|s| self.book.stored(s)).collect();
        let hold = effects.hold_changed.then(|| self.book.stored_hold());
        let hold = hold.as_ref().map(Option::as_ref);
        let write = || storage::priorities::commit(&self.pool, &states, &effects.changes, &events, hold);
        match tokio::time::timeout(COMMIT_TIMEOUT, storage::retry("storing priority changes", write)).await {
            Ok(Ok(())) => {
                self.outbox_written.notify_one();
                self.metrics.priority_changes(&effects.changes);
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, changes = effects.changes.len(), "priority changes not stored");
                false
            }
            Err(_) => {
                tracing::error!(
                    changes = effects.changes.len(),
                    "priority changes not stored within {COMMIT_TIMEOUT:?}"
                );
                false
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
