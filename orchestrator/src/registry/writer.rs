//! The single writer of the registry. Every command, from JetStream, NATS request/reply, HTTP or
//! the orchestrator itself, is submitted here; the writer drains what is waiting into one batch
//! and applies it in one PostgreSQL transaction (group commit): state changes, outbox rows,
//! dead letters and the processed-command ledger commit together or not at all.
//!
//! One writer means no lock contention between batches and a strict order of application.
//! Transient storage failures are retried with back-off; durable commands are never dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orch_protocol::events::{self, CommandRejectedData, EventKind, SYSTEM_SERVICE};
use orch_protocol::registry::Instance;
use orch_protocol::{ErrorCode, ProtocolError, Subjects, headers, principal};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::decision::Context;
use super::decision::Policy;
use super::leases::Leases;
use super::state::{Command, Next, Outcome, SideWrite, Status, decide};
use crate::storage::{StorageError, batch, health as health_store, instances, ledger, system};

/// What a committed batch changed, for those who keep a view of the registry in memory (the
/// health checker and tracker).
#[derive(Debug, Clone)]
pub enum Change {
    /// The instance as committed; `None`: deleted.
    Instance {
        id: String,
        now: Option<Box<Instance>>,
    },
    ServiceMaintenance {
        service: String,
        on: bool,
    },
}

/// Where a command came from, and how to remember it.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The client's id for the command (its `Nats-Msg-Id`, `Idempotency-Key`, or `seq:<n>` on the
    /// durable stream), as shown in dead letters and events.
    pub command_id: Option<String>,
    /// The command's key in the processed-command ledger: its id in the namespace of the path it
    /// came by, so ids from different paths never meet. `None`: not remembered (internal commands,
    /// requests without an id).
    pub ledger_key: Option<String>,
    /// Stable hash of subject and payload. A remembered id arriving with another fingerprint is a
    /// reuse of the id for a different command: refused, never answered with the old outcome.
    pub fingerprint: i64,
    pub subject: String,
    pub stream_seq: Option<u64>,
    /// From the durable commands stream: never dropped, dead-lettered when refused.
    pub durable: bool,
    /// The bytes as received, kept for dead letters.
    pub payload: Bytes,
    /// Who sent it, as authenticated (orch-protocol `principal`): stored with the change, its
    /// events and its dead letter.
    pub principal: String,
}

impl Meta {
    /// A command that came by `namespace` (`js`, `req`, `http`) with the client's `command_id`,
    /// from `principal`.
    pub fn new(namespace: &str, command_id: Option<String>, subject: &str, payload: Bytes, principal: String) -> Meta {
        Meta {
            principal,
            ledger_key: command_id.as_ref().map(|id| format!("{namespace}:{id}")),
            command_id,
            fingerprint: fingerprint(subject, &payload),
            subject: subject.to_string(),
            stream_seq: None,
            durable: false,
            payload,
        }
    }
}

/// FNV-1a over the subject and payload. Stored in the ledger, so it must stay the same across
/// versions and platforms, which the standard library's hasher does not promise.
pub fn fingerprint(subject: &str, payload: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in subject.as_bytes().iter().chain(&[0xff]).chain(payload) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[derive(Debug, Clone)]
// A submission lives for one batch; boxing the common variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Body {
    Command(Command),
    /// Refused before reaching the registry: malformed, invalid, too large or unknown.
    Invalid {
        error: ProtocolError,
    },
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub meta: Meta,
    pub body: Body,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// PostgreSQL did not answer in time, or the orchestrator is shutting down. Retrying is safe.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The outcome of a queued submission, once it is committed.
pub struct Pending(oneshot::Receiver<Result<Outcome, WriteError>>);

impl Pending {
    pub async fn outcome(self) -> Result<Outcome, WriteError> {
        self.0.await.unwrap_or_else(|_| Err(WriteError::Unavailable("the orchestrator is shutting down".into())))
    }
}

struct Job {
    submission: Submission,
    reply: Option<oneshot::Sender<Result<Outcome, WriteError>>>,
    /// When the job was queued: its latency runs from here to the commit.
    queued: std::time::Instant,
}

impl Job {
    fn new(submission: Submission, reply: Option<oneshot::Sender<Result<Outcome, WriteError>>>) -> Self {
        Job { submission, reply, queued: std::time::Instant::now() }
    }
}

/// Handle to submit commands; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    shards: Arc<[mpsc::Sender<Job>]>,
}

impl Writer {
    /// The shard of a submission. Every command on one instance goes to the same shard, so the
    /// commands of an instance are applied in the order they were submitted; different instances
    /// are applied in parallel by different shards.
    fn shard(&self, submission: &Submission) -> &mpsc::Sender<Job> {
        let key = match &submission.body {
            Body::Command(command) => command.shard_key(),
            Body::Invalid { .. } => submission.meta.ledger_key.as_deref().unwrap_or(""),
        };
        &self.shards[(fingerprint(key, b"") as u64 % self.shards.len() as u64) as usize]
    }

    async fn send(&self, job: Job) -> Result<(), mpsc::error::SendError<Job>> {
        self.shard(&job.submission).send(job).await
    }

    /// Submits and waits for the outcome (committed, or replayed from the ledger).
    pub async fn submit(&self, submission: Submission) -> Result<Outcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::new(submission, Some(reply)))
            .await
            .map_err(|_| WriteError::Unavailable("the orchestrator is shutting down".into()))?;
        rx.await.unwrap_or_else(|_| Err(WriteError::Unavailable("the orchestrator is shutting down".into())))
    }

    /// Queues several in order and returns where each outcome will arrive, without waiting for
    /// them, so a caller can keep the writer fed while earlier batches commit.
    pub async fn enqueue_many(&self, submissions: Vec<Submission>) -> Vec<Pending> {
        let mut receivers = Vec::with_capacity(submissions.len());
        for submission in submissions {
            let (reply, rx) = oneshot::channel();
            if self.send(Job::new(submission, Some(reply))).await.is_err() {
                break;
            }
            receivers.push(Pending(rx));
        }
        receivers
    }

    /// Submits without waiting (internal commands whose outcome nobody awaits).
    pub async fn submit_detached(&self, submission: Submission) {
        let _ = self.send(Job::new(submission, None)).await;
    }
}

/// Settings of the writer's tasks (one per shard).
#[derive(Clone)]
pub struct WriterTask {
    pub pool: PgPool,
    pub subjects: Subjects,
    pub leases: Arc<Leases>,
    pub batch_max: usize,
    /// Notified after every commit that wrote outbox rows.
    pub outbox_written: Arc<Notify>,
    pub max_payload_kept: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Parallel writers, each with its own connection and transactions.
    pub shards: usize,
    /// Which shard this task is (set by `spawn`).
    pub shard: i16,
    pub policy: Policy,
    /// Receives what every commit changed.
    pub changes: Option<mpsc::UnboundedSender<Vec<Change>>>,
}

/// The writer's own connection, kept between batches (no pool round trip per batch) and dropped
/// after a failure, so a broken one is never reused.
type HeldConnection = tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>>;

impl WriterTask {
    /// Starts one task per shard; they end when every [`Writer`] handle is dropped and their
    /// queues are drained. The handle completes when all have.
    pub fn spawn(self) -> (Writer, tokio::task::JoinHandle<()>) {
        let mut senders = Vec::with_capacity(self.shards.max(1));
        let mut tasks = Vec::with_capacity(self.shards.max(1));
        for shard in 0..self.shards.max(1) {
            let (tx, rx) = mpsc::channel(self.batch_max * 8);
            senders.push(tx);
            let task = WriterTask { shard: shard as i16, ..self.clone() };
            tasks.push(tokio::spawn(task.run(rx, HeldConnection::default())));
        }
        let handle = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (Writer { shards: senders.into() }, handle)
    }

    async fn run(self, mut rx: mpsc::Receiver<Job>, conn: HeldConnection) {
        let mut follow_ups: Vec<Job> = Vec::new();
        loop {
            let mut jobs = std::mem::take(&mut follow_ups);
            if jobs.is_empty() {
                match rx.recv().await {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            while jobs.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            follow_ups = self.process(&conn, jobs).await;
        }
        tracing::debug!("registry writer stopped");
    }

    /// Applies the batch, retrying while storage is unavailable. Returns follow-up jobs (recoveries
    /// for instances that beat while their expiry was committing).
    async fn process(&self, conn: &HeldConnection, mut jobs: Vec<Job>) -> Vec<Job> {
        let mut delay = Duration::from_millis(50);
        loop {
            // A caller that gave up (timed out) on a non-durable command no longer wants it applied.
            jobs.retain(|j| j.submission.meta.durable || j.reply.as_ref().is_none_or(|r| !r.is_closed()));
            if jobs.is_empty() {
                return Vec::new();
            }
            let submissions: Vec<&Submission> = jobs.iter().map(|j| &j.submission).collect();
            let started = std::time::Instant::now();
            match self.execute(conn, &submissions).await {
                Ok(applied) => {
                    self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(jobs.len() as f64);
                    return self.finish(jobs, applied);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, batch = jobs.len(), retry_in = ?delay, "storage unavailable; batch will be retried");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) if jobs.len() > 1 => {
                    // One command broke the whole transaction: apply them one by one to isolate it.
                    tracing::warn!(error = %e, batch = jobs.len(), "batch failed; applying its commands one by one");
                    let mut follow_ups = Vec::new();
                    for job in jobs {
                        follow_ups.extend(Box::pin(self.process(conn, vec![job])).await);
                    }
                    return follow_ups;
                }
                Err(e) => {
                    let mut job = jobs.pop().expect("one job");
                    tracing::error!(error = %e, subject = %job.submission.meta.subject, "command failed in storage");
                    if job.submission.meta.durable && !matches!(job.submission.body, Body::Invalid { .. }) {
                        // Dead-letter it rather than redelivering it forever.
                        job.submission.body = Body::Invalid {
                            error: ProtocolError::new(ErrorCode::Internal, format!("storage refused the command: {e}")),
                        };
                        jobs = vec![job];
                        continue;
                    }
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(WriteError::Internal(e.to_string())));
                    }
                    return Vec::new();
                }
            }
        }
    }

    /// After commit: update leases, answer callers, wake the relay.
    fn finish(&self, jobs: Vec<Job>, applied: Applied) -> Vec<Job> {
        let mut follow_ups = Vec::new();
        for (job, (outcome, fresh)) in jobs.into_iter().zip(applied.outcomes) {
            let kind = match &job.submission.body {
                Body::Command(command) => command.kind(),
                _ => "invalid",
            };
            let result = match (&outcome, fresh) {
                (_, false) => "replayed",
                (Outcome::Failed(_), true) => "rejected",
                (Outcome::Applied(_), true) => "applied",
            };
            self.metrics.command(kind, result, job.queued.elapsed());
            if fresh
                && let Body::Command(command) = &job.submission.body
                && let Some(recover) = self.apply_to_leases(command, &outcome)
            {
                follow_ups.push(recover);
            }
            if let Some(reply) = job.reply {
                let _ = reply.send(Ok(outcome));
            }
        }
        if applied.wrote_outbox {
            self.outbox_written.notify_one();
        }
        if let Some(changes) = &self.changes
            && !applied.changes.is_empty()
        {
            let _ = changes.send(applied.changes);
        }
        follow_ups
    }

    fn apply_to_leases(&self, command: &Command, outcome: &Outcome) -> Option<Job> {
        let status = match outcome {
            Outcome::Applied(reply) => reply.status,
            Outcome::Failed(_) => return None,
        };
        let instance = match outcome {
            Outcome::Applied(reply) => reply.instance.as_ref(),
            Outcome::Failed(_) => None,
        };
        let ttl = |i: &Instance| Duration::from_secs(u64::from(i.ttl_seconds));
        match (command, status, instance) {
            (Command::Register(_), Status::Registered, Some(i)) => self.leases.registered(&i.id, ttl(i), true),
            (Command::Register(_), Status::Updated, Some(i)) => self.leases.registered(&i.id, ttl(i), false),
            (Command::Deregister { .. } | Command::Reap { .. }, Status::Deregistered, Some(i)) => {
                self.leases.removed(&i.id)
            }
            (Command::Expire { id, .. }, Status::Expired, Some(_)) if self.leases.expired(id) => {
                return Some(Job::new(internal(Command::Recover { id: id.clone() }), None));
            }
            (Command::Expire { id, .. }, Status::Ignored, _) => self.leases.release(id),
            (Command::Recover { id }, Status::Recovered, _) => self.leases.recovered(id),
            (Command::Recover { id }, Status::Ignored, _) => self.leases.recovered(id),
            _ => {}
        }
        None
    }

    /// One transaction for the whole batch.
    async fn execute(&self, conn: &HeldConnection, batch: &[&Submission]) -> Result<Applied, StorageError> {
        let mut held = conn.lock().await;
        if held.is_none() {
            *held = Some(self.pool.acquire().await?);
        }
        let result = self.execute_on(held.as_mut().expect("connection held"), batch).await;
        if result.is_err() {
            *held = None;
        }
        result
    }

    async fn execute_on(&self, conn: &mut sqlx::PgConnection, batch: &[&Submission]) -> Result<Applied, StorageError> {
        use sqlx::Connection;
        // PostgreSQL keeps microseconds; replies and events must show what a later read returns.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let mut tx = conn.begin().await?;

        let keys: Vec<String> = batch.iter().filter_map(|s| s.meta.ledger_key.clone()).collect();
        let known = ledger::processed(&mut tx, &keys).await?;

        let touched: Vec<String> = {
            let mut seen = HashSet::new();
            batch
                .iter()
                .filter_map(|s| match &s.body {
                    Body::Command(c) => c.instance_id(),
                    Body::Invalid { .. } => None,
                })
                .filter(|id| seen.insert(*id))
                .map(String::from)
                .collect()
        };
        let mut state: HashMap<String, Option<Instance>> = touched.iter().map(|id| (id.clone(), None)).collect();
        for instance in instances::lock(&mut tx, &touched).await? {
            state.insert(instance.id.clone(), Some(instance));
        }
        let services: Vec<String> = batch
            .iter()
            .filter_map(|s| match &s.body {
                Body::Command(Command::ServiceMaintenance { service, .. }) => Some(service.clone()),
                _ => None,
            })
            .collect();
        let mut service_maintenance = health_store::lock_service_maintenance(&mut tx, &services).await?;

        let mut out = BatchWrites::default();
        let mut outcomes: Vec<(Outcome, bool)> = Vec::with_capacity(batch.len());
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (index, submission) in batch.iter().enumerate() {
            let meta = &submission.meta;
            if let Some(key) = meta.ledger_key.as_deref() {
                // Seen before, in the ledger or earlier in this batch?
                let earlier = match known.get(key) {
                    Some((fingerprint, stored)) => Some((*fingerprint, Some(stored))),
                    None => first_of.get(key).map(|&first| (batch[first].meta.fingerprint, None)),
                };
                match earlier {
                    Some((fingerprint, stored)) if fingerprint == meta.fingerprint => {
                        let outcome = match stored {
                            Some(stored) => serde_json::from_value(stored.clone()).unwrap_or_else(|e| {
                                Outcome::failed(ProtocolError::new(
                                    ErrorCode::Internal,
                                    format!("stored outcome unreadable: {e}"),
                                ))
                            }),
                            None => outcomes[first_of[key]].0.clone(),
                        };
                        outcomes.push((outcome, false));
                        continue;
                    }
                    Some(_) => {
                        let error = ProtocolError::new(
                            ErrorCode::Conflict,
                            format!(
                                "command id {:?} was already used for a different command; give each command its own id",
                                meta.command_id.as_deref().unwrap_or(key)
                            ),
                        );
                        if meta.durable {
                            self.dead_letter(&mut out, meta, &error, now);
                        }
                        outcomes.push((Outcome::failed(error), false));
                        continue;
                    }
                    None => {
                        first_of.insert(key, index);
                    }
                }
            }
            let (outcome, rejection) = match &submission.body {
                Body::Invalid { error } => (Outcome::failed(error.clone()), Some(error.clone())),
                Body::Command(command) => {
                    let current = command.instance_id().and_then(|id| state.get(id)).and_then(Option::as_ref);
                    let ctx = Context {
                        now,
                        policy: &self.policy,
                        service_maintenance: match command {
                            Command::ServiceMaintenance { service, .. } => service_maintenance.get(service),
                            _ => None,
                        },
                        principal: &meta.principal,
                    };
                    let decision = decide(command, current, &ctx);
                    if let Some(id) = command.instance_id() {
                        match decision.next {
                            Next::Put(instance) => {
                                state.insert(id.to_string(), Some(instance));
                                out.dirty.insert(id.to_string());
                            }
                            Next::Delete => {
                                state.insert(id.to_string(), None);
                                out.dirty.insert(id.to_string());
                            }
                            Next::Keep => {}
                        }
                    }
                    match decision.side {
                        Some(SideWrite::SelfPreservation { entered, data }) => {
                            let value = serde_json::json!({ "active": entered, "since": now, "data": data });
                            out.system.push((system::SELF_PRESERVATION, value));
                        }
                        Some(SideWrite::SystemHealth(data)) => {
                            let value = serde_json::json!({ "state": data.state, "since": now, "data": data });
                            out.system.push((system::HEALTH, value));
                        }
                        Some(SideWrite::ServiceHealth { service, data }) => out.service_health.push((service, data)),
                        Some(SideWrite::ServiceMaintenance { service, maintenance }) => {
                            out.changes.push(Change::ServiceMaintenance {
                                service: service.clone(),
                                on: maintenance.is_some(),
                            });
                            match &maintenance {
                                Some(m) => service_maintenance.insert(service.clone(), m.clone()),
                                None => service_maintenance.remove(&service),
                            };
                            out.service_maintenance.push((service, maintenance));
                        }
                        None => {}
                    }
                    for emit in decision.effects.events {
                        let event = events::encode(
                            &self.subjects,
                            emit.kind,
                            &emit.service,
                            &emit.subject,
                            &meta.principal,
                            now,
                            &emit.data,
                        );
                        out.outbox.push(batch::OutboxRow {
                            msg_id: event.id,
                            subject: event.subject,
                            payload: event.payload,
                            headers: None,
                        });
                    }
                    out.transitions.extend(decision.effects.transitions);
                    let rejection = decision.rejected.then(|| {
                        ProtocolError(decision.outcome.error().cloned().expect("a rejection carries an error"))
                    });
                    (decision.outcome, rejection)
                }
            };
            if let Some(error) = rejection
                && meta.durable
            {
                self.dead_letter(&mut out, meta, &error, now);
            }
            if let Some(key) = &meta.ledger_key {
                out.processed.push(batch::Processed {
                    command_id: key.clone(),
                    fingerprint: meta.fingerprint,
                    subject: meta.subject.clone(),
                    stream_seq: meta.stream_seq.map(|s| s as i64),
                    outcome: serde_json::to_string(&outcome).expect("outcome serializes"),
                });
            }
            outcomes.push((outcome, true));
        }

        let puts: Vec<&Instance> = out.dirty.iter().filter_map(|id| state.get(id).and_then(Option::as_ref)).collect();
        if self.changes.is_some() {
            out.changes.extend(
                out.dirty
                    .iter()
                    .map(|id| Change::Instance { id: id.clone(), now: state.get(id).cloned().flatten().map(Box::new) }),
            );
        }
        let deletes: Vec<String> =
            out.dirty.iter().filter(|id| state.get(*id).is_some_and(Option::is_none)).cloned().collect();
        batch::write(
            &mut tx,
            &batch::Writes {
                shard: self.shard,
                puts: &puts,
                deletes: &deletes,
                outbox: &out.outbox,
                processed: &out.processed,
                transitions: &out.transitions,
            },
        )
        .await?;
        ledger::record_dead_letters(&mut tx, &out.dead_letters).await?;
        for (key, value) in &out.system {
            system::put(&mut tx, key, value).await?;
        }
        for (service, maintenance) in &out.service_maintenance {
            health_store::put_service_maintenance(&mut tx, service, maintenance.as_ref()).await?;
        }
        for (service, data) in &out.service_health {
            health_store::put_service_health(&mut tx, service, data.as_ref(), now).await?;
        }
        tx.commit().await?;
        Ok(Applied { outcomes, wrote_outbox: !out.outbox.is_empty(), changes: out.changes })
    }

    /// A refused durable command: a dead-letter record, a message on the dead-letter stream and a
    /// `command_rejected` event, all in the batch's transaction.
    fn dead_letter(&self, out: &mut BatchWrites, meta: &Meta, error: &ProtocolError, now: DateTime<Utc>) {
        let payload = &meta.payload;
        let id = Uuid::now_v7();
        let truncated = payload.len() > self.max_payload_kept;
        let kept = payload[..payload.len().min(self.max_payload_kept)].to_vec();
        let body = error.body();
        tracing::warn!(subject = %meta.subject, command_id = ?meta.command_id, code = body.code.as_str(),
            field = ?body.field, message = %body.message, dead_letter = %id, "command rejected");
        let mut dlq_headers = serde_json::Map::new();
        dlq_headers.insert(headers::DLQ_ORIGINAL_SUBJECT.into(), meta.subject.clone().into());
        dlq_headers.insert(headers::DLQ_REASON.into(), body.code.as_str().into());
        dlq_headers.insert(headers::SERVICE_ERROR.into(), body.message.replace(['\r', '\n'], " ").into());
        out.outbox.push(batch::OutboxRow {
            msg_id: id,
            subject: self.subjects.dead_letter_for(&meta.subject),
            payload: kept.clone(),
            headers: Some(serde_json::Value::Object(dlq_headers)),
        });
        let event = events::encode(
            &self.subjects,
            EventKind::CommandRejected,
            SYSTEM_SERVICE,
            &meta.subject,
            &meta.principal,
            now,
            &CommandRejectedData {
                subject: meta.subject.clone(),
                command_id: meta.command_id.clone(),
                error: body.clone(),
                dead_letter_id: id,
            },
        );
        out.outbox.push(batch::OutboxRow {
            msg_id: event.id,
            subject: event.subject,
            payload: event.payload,
            headers: None,
        });
        out.dead_letters.push(ledger::DeadLetter {
            id,
            subject: meta.subject.clone(),
            command_id: meta.command_id.clone(),
            stream_seq: meta.stream_seq.map(|s| s as i64),
            code: body.code.as_str().to_string(),
            message: body.message.clone(),
            field: body.field.clone(),
            payload: kept,
            payload_truncated: truncated,
            principal: meta.principal.clone(),
        });
    }
}

/// A command the orchestrator issues itself.
pub fn internal(command: Command) -> Submission {
    let meta = Meta::new("internal", None, "internal", Bytes::new(), principal::ORCHESTRATOR.into());
    Submission { meta, body: Body::Command(command) }
}

#[derive(Default)]
struct BatchWrites {
    dirty: HashSet<String>,
    outbox: Vec<batch::OutboxRow>,
    dead_letters: Vec<ledger::DeadLetter>,
    processed: Vec<batch::Processed>,
    system: Vec<(&'static str, serde_json::Value)>,
    transitions: Vec<crate::storage::health::Transition>,
    service_maintenance: Vec<(String, Option<orch_protocol::health::Maintenance>)>,
    service_health: Vec<(String, Option<orch_protocol::events::ServiceChangedData>)>,
    changes: Vec<Change>,
}

struct Applied {
    /// Per submission: the outcome, and whether it was applied now (false: replayed).
    outcomes: Vec<(Outcome, bool)>,
    wrote_outbox: bool,
    changes: Vec<Change>,
}

impl From<StorageError> for WriteError {
    fn from(e: StorageError) -> Self {
        if e.is_transient() { WriteError::Unavailable(e.to_string()) } else { WriteError::Internal(e.to_string()) }
    }
}
