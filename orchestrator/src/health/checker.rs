//! The checker: one task per declared check. Active checks (http, tcp, nats, exec) run on their
//! interval; `ttl` checks wait for updates and turn critical when one is overdue. A result only
//! reaches PostgreSQL when it moves the check's status past its thresholds; the output of every
//! run stays in memory for the API.
//!
//! Every run records how late it started against its schedule (drift). A run that is due while
//! the previous one is still late is skipped and counted, never silently dropped: the reporter
//! turns lasting drift or skips into a `checker_lagging` event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::health::{CheckKind, CheckSpec, cap_output};
use orch_protocol::registry::{Health, Instance};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{ProbeResult, Prober, Target};
use super::thresholds::Thresholds;
use crate::metrics::Metrics;
use crate::registry::writer::internal;
use crate::registry::{Command, Outcome, Registry, WriteError};

/// What the API shows of a check beyond its committed state.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LiveView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// Status of the last run (or update), before thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
    /// Consecutive failing results so far.
    pub failures: u32,
    /// TTL checks: when the next update is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

/// Shared between a check's task, the checker and the API.
struct Slot {
    spec: CheckSpec,
    /// Where the check points by default; follows re-registrations.
    target: Mutex<TargetOwned>,
    /// The status stored in PostgreSQL, as the last commit left it.
    committed: Mutex<Health>,
    live: Mutex<LiveView>,
    /// TTL checks: woken by every update.
    updated: Notify,
    /// TTL checks: the deadline of the next update.
    deadline: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone)]
struct TargetOwned {
    service: String,
    instance_id: String,
    address: String,
    port: u32,
    protocol: String,
}

/// A check on the schedule: its slot and the task that runs it.
struct ScheduledCheck {
    slot: Arc<Slot>,
    task: JoinHandle<()>,
}

/// Drift of the runs since the last report, in microseconds, and runs skipped.
#[derive(Default)]
pub struct DriftWindow {
    samples: Mutex<Vec<u32>>,
    skipped: AtomicU64,
}

impl DriftWindow {
    fn record(&self, drift: Duration) {
        self.samples.lock().expect("drift lock").push(drift.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Takes the window: (runs, p99 ms, max ms, skipped).
    pub fn take(&self) -> (usize, f64, f64, u64) {
        let mut samples = std::mem::take(&mut *self.samples.lock().expect("drift lock"));
        let skipped = self.skipped.swap(0, Ordering::Relaxed);
        if samples.is_empty() {
            return (0, 0.0, 0.0, skipped);
        }
        samples.sort_unstable();
        let p99 = samples[((samples.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(samples.len() - 1)];
        let max = *samples.last().expect("not empty");
        (samples.len(), f64::from(p99) / 1000.0, f64::from(max) / 1000.0, skipped)
    }
}

/// Why a TTL update was refused.
#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    #[error("instance {0:?} has no check {1:?}")]
    NotFound(String, String),
    #[error("check {check:?} is a {kind} check; only ttl checks take updates")]
    NotTtl { check: String, kind: &'static str },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The reply to a TTL update.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TtlReply {
    /// The check's status after the update (as committed).
    pub status: Health,
    /// True when the update changed the committed status.
    pub changed: bool,
    pub due_at: DateTime<Utc>,
}

pub struct Checker {
    prober: Prober,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    checks: Mutex<HashMap<String, HashMap<String, ScheduledCheck>>>,
    pub drift: Arc<DriftWindow>,
}

impl Checker {
    pub fn new(prober: Prober, registry: Arc<Registry>, metrics: Arc<Metrics>, concurrency: usize) -> Checker {
        Checker {
            prober,
            registry,
            metrics,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            checks: Mutex::new(HashMap::new()),
            drift: Arc::default(),
        }
    }

    /// Active checks scheduled now.
    pub fn len(&self) -> usize {
        self.checks.lock().expect("checker lock").values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the tasks of instance `id` in line with its committed state: starts new checks,
    /// restarts changed ones, stops removed ones (all of them when the instance is gone).
    pub fn sync(self: &Arc<Self>, id: &str, instance: Option<&Instance>) {
        let mut all = self.checks.lock().expect("checker lock");
        let Some(inst) = instance.filter(|i| !i.checks.is_empty()) else {
            if let Some(removed) = all.remove(id) {
                for running in removed.into_values() {
                    running.task.abort();
                }
            }
            return;
        };
        let target = TargetOwned {
            service: inst.name.clone(),
            instance_id: inst.id.clone(),
            address: inst.address.clone(),
            port: inst.port,
            protocol: inst.protocol.clone(),
        };
        let tasks = all.entry(id.to_string()).or_default();
        tasks.retain(|check_id, running| {
            let keep = inst.checks.iter().any(|c| &c.spec.id == check_id && c.spec == running.slot.spec);
            if !keep {
                running.task.abort();
            }
            keep
        });
        for check in &inst.checks {
            match tasks.get(&check.spec.id) {
                Some(running) => {
                    *running.slot.committed.lock().expect("slot lock") = check.status;
                    *running.slot.target.lock().expect("slot lock") = target.clone();
                }
                None => {
                    let slot = Arc::new(Slot {
                        spec: check.spec.clone(),
                        target: Mutex::new(target.clone()),
                        committed: Mutex::new(check.status),
                        live: Mutex::new(LiveView::default()),
                        updated: Notify::new(),
                        deadline: Mutex::new(None),
                    });
                    let this = self.clone();
                    let task_slot = slot.clone();
                    let task = tokio::spawn(async move {
                        if task_slot.spec.kind == CheckKind::Ttl {
                            this.watch_ttl(task_slot).await
                        } else {
                            this.run_active(task_slot).await
                        }
                    });
                    tasks.insert(check.spec.id.clone(), ScheduledCheck { slot, task });
                }
            }
        }
    }

    /// What the API shows of a check beyond its committed state.
    pub fn live(&self, id: &str, check: &str) -> Option<LiveView> {
        let all = self.checks.lock().expect("checker lock");
        all.get(id)?.get(check).map(|r| r.slot.live.lock().expect("slot lock").clone())
    }

    /// Stops every task (shutdown).
    pub fn stop(&self) {
        for (_, tasks) in self.checks.lock().expect("checker lock").drain() {
            for running in tasks.into_values() {
                running.task.abort();
            }
        }
    }

    fn slot(&self, id: &str, check: &str) -> Option<Arc<Slot>> {
        let all = self.checks.lock().expect("checker lock");
        all.get(id)?.get(check).map(|r| r.slot.clone())
    }

    /// A TTL update from the service: renews the deadline, and commits the status if it changed.
    pub async fn ttl_update(
        self: &Arc<Self>,
        id: &str,
        check: &str,
        status: Health,
        output: String,
    ) -> Result<TtlReply, TtlError> {
        let not_found = || TtlError::NotFound(id.to_string(), check.to_string());
        let slot = match self.slot(id, check) {
            Some(slot) => slot,
            None => {
                // Registered a moment ago: the commit is there, the change stream not yet here.
                let instance = self.registry.get(id).await.map_err(|e| TtlError::Write(e.into()))?;
                let instance = instance.ok_or_else(not_found)?.instance;
                self.sync(id, Some(&instance));
                self.slot(id, check).ok_or_else(not_found)?
            }
        };
        if slot.spec.kind != CheckKind::Ttl {
            return Err(TtlError::NotTtl { check: check.to_string(), kind: slot.spec.kind.as_str() });
        }
        let ttl = slot.spec.ttl.unwrap_or(Duration::from_secs(30));
        *slot.deadline.lock().expect("slot lock") = Some(Instant::now() + ttl);
        let output = cap_output(output);
        let now = Utc::now();
        let due_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        {
            let mut live = slot.live.lock().expect("slot lock");
            live.last_run_at = Some(now);
            live.last_result = Some(status);
            live.last_output = Some(output.clone());
            live.due_at = Some(due_at);
        }
        slot.updated.notify_one();
        let committed = *slot.committed.lock().expect("slot lock");
        if committed == status {
            return Ok(TtlReply { status, changed: false, due_at });
        }
        if !self.commit(&slot, status, output).await? {
            return Err(not_found());
        }
        Ok(TtlReply { status, changed: true, due_at })
    }

    /// Submits a status change and waits for its commit. False: the registry refused it (the
    /// instance or the check is gone).
    async fn commit(&self, slot: &Slot, status: Health, output: String) -> Result<bool, WriteError> {
        let (id, service) = {
            let t = slot.target.lock().expect("slot lock");
            (t.instance_id.clone(), t.service.clone())
        };
        let command = Command::CheckResult { id: id.clone(), check: slot.spec.id.clone(), status, output };
        match self.registry.submit(internal(command)).await? {
            Outcome::Applied(_) => {
                // The change stream confirms it too; setting it here keeps the next run from
                // submitting the same change while the stream catches up.
                *slot.committed.lock().expect("slot lock") = status;
                tracing::info!(service = %service, instance = %id, check = %slot.spec.id, status = status.as_str(), "check changed");
                Ok(true)
            }
            Outcome::Failed(e) => {
                tracing::debug!(instance = %id, check = %slot.spec.id, error = %e.error.message, "check result not applied");
                Ok(false)
            }
        }
    }

    async fn run_active(self: Arc<Self>, slot: Arc<Slot>) {
        let spec = &slot.spec;
        let interval = spec.interval;
        let mut thresholds = Thresholds::new(spec, *slot.committed.lock().expect("slot lock"));
        // A random phase spreads checks declared together over the interval.
        let phase = interval.mul_f64(fastrand::f64());
        let mut due = Instant::now() + spec.initial_delay + phase;
        loop {
            tokio::time::sleep_until(due).await;
            let Ok(permit) = self.permits.acquire().await else { return };
            let started = Instant::now();
            let drift = started.saturating_duration_since(due);
            self.drift.record(drift);
            self.metrics.checker_drift.observe(drift.as_secs_f64());
            let target = slot.target.lock().expect("slot lock").clone();
            let ProbeResult { status: result, output } = self
                .prober
                .run(
                    spec,
                    &Target {
                        service: &target.service,
                        instance_id: &target.instance_id,
                        address: &target.address,
                        port: target.port,
                        protocol: &target.protocol,
                    },
                )
                .await;
            drop(permit);
            self.metrics.check_run(result.as_str());
            let committed = *slot.committed.lock().expect("slot lock");
            let status = thresholds.observe(result);
            {
                let mut live = slot.live.lock().expect("slot lock");
                live.last_run_at = Some(Utc::now());
                live.last_result = Some(result);
                live.failures = if result == Health::Passing { 0 } else { live.failures.saturating_add(1) };
                live.last_output = Some(output.clone());
            }
            if status != committed
                && let Err(e) = self.commit(&slot, status, output).await
            {
                tracing::warn!(instance = %target.instance_id, check = %spec.id, error = %e, "check change not committed; retried at the next run");
            }
            due += interval;
            let now = Instant::now();
            if due + interval < now {
                // More than a whole interval behind: the runs in between are skipped, and said so.
                // (A run only a little late starts at once and shows as drift.)
                let missed = ((now - due).as_nanos() / interval.as_nanos()) as u32;
                self.drift.skipped.fetch_add(u64::from(missed), Ordering::Relaxed);
                self.metrics.checker_skipped.inc_by(u64::from(missed));
                due += interval * missed;
            }
        }
    }

    async fn watch_ttl(self: Arc<Self>, slot: Arc<Slot>) {
        let ttl = slot.spec.ttl.unwrap_or(Duration::from_secs(30));
        let first = Instant::now() + slot.spec.initial_delay + ttl;
        slot.deadline.lock().expect("slot lock").get_or_insert(first);
        loop {
            let deadline = slot.deadline.lock().expect("slot lock").unwrap_or(first);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = slot.updated.notified() => continue,
            }
            if *slot.deadline.lock().expect("slot lock") != Some(deadline) {
                continue;
            }
            let committed = *slot.committed.lock().expect("slot lock");
            if committed != Health::Critical {
                let output = format!("TTL of {} expired without an update", humantime::format_duration(ttl));
                slot.live.lock().expect("slot lock").last_output = Some(output.clone());
                if let Err(e) = self.commit(&slot, Health::Critical, output).await {
                    tracing::warn!(check = %slot.spec.id, error = %e, "ttl expiry not committed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            // Wait for the next update.
            slot.updated.notified().await;
        }
    }
}
