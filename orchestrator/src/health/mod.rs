//! Health monitoring: the checker runs the declared checks, the tracker aggregates instances into
//! service and system health, and [`run`] keeps both current from the registry's committed changes.
//! Every state change goes through the registry writer, so it is stored, recorded in the history
//! and announced exactly like any other change.

pub mod checker;
pub mod probe;
pub mod thresholds;
pub mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use orch_protocol::EventKind;
use orch_protocol::events::CheckerLagData;
use orch_protocol::health::Aggregate;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::registry::check_targets::CheckTargets;
use crate::registry::decision::Policy;
use crate::registry::writer::internal;
use crate::registry::{Change, Command, Registry};
use crate::shutdown::Shutdown;
pub use checker::Checker;
pub use tracker::{ServiceView, SystemView, Tracker};

/// How often the tracker looks for instances to deregister or to settle.
const DUE_EVERY: Duration = Duration::from_secs(1);
/// How often the checker's drift is judged.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How checks run and how health changes are judged.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    /// Run `exec` checks. Off by default: an exec check runs a command, declared by whoever may
    /// register, on the orchestrator's host.
    pub exec_enabled: bool,
    /// Most check runs in flight at once; runs beyond it wait, which shows as drift.
    pub concurrency: usize,
    /// Drift (99th percentile over a report window) above which the checker reports lagging.
    pub max_drift: Duration,
    /// An instance whose health changes more than this many times within `flap_window` is
    /// flapping; its health events are held back until it is stable for a whole window.
    pub flap_threshold: usize,
    pub flap_window: Duration,
    /// The system is critical while any of these services is.
    pub critical_services: Vec<String>,
    /// An instance critical for this long is deregistered (instances in maintenance are kept).
    pub deregister_critical_after: Duration,
    /// Where checks may reach beyond their instance's own address and port.
    pub targets: Arc<CheckTargets>,
    /// A NATS user and password of their own, over whose connection `nats` checks are sent;
    /// `None`: over the orchestrator's connection (limited only by what registration admits).
    pub nats_user: Option<(String, String)>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        let policy = Policy::default();
        HealthSettings {
            exec_enabled: policy.exec_enabled,
            concurrency: 4096,
            max_drift: Duration::from_millis(250),
            flap_threshold: policy.flap_threshold,
            flap_window: policy.flap_window,
            critical_services: Vec::new(),
            deregister_critical_after: Duration::from_secs(600),
            targets: policy.targets,
            nats_user: None,
        }
    }
}

impl HealthSettings {
    /// What the registry's writer applies to each health change.
    pub fn policy(&self) -> Policy {
        Policy {
            flap_threshold: self.flap_threshold,
            flap_window: self.flap_window,
            exec_enabled: self.exec_enabled,
            targets: self.targets.clone(),
        }
    }
}

/// The checker's own health: whether it keeps its schedule.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CheckerView {
    pub checks: usize,
    pub lagging: bool,
    /// Figures of the last report window.
    pub runs: usize,
    pub drift_p99_ms: f64,
    pub drift_max_ms: f64,
    pub skipped: u64,
}

/// What the API reads of the health runtime.
pub struct Monitor {
    pub checker: Arc<Checker>,
    tracker: Mutex<Tracker>,
    checker_view: Mutex<CheckerView>,
}

impl Monitor {
    pub fn new(checker: Arc<Checker>, tracker: Tracker) -> Monitor {
        Monitor { checker, tracker: Mutex::new(tracker), checker_view: Mutex::default() }
    }

    pub fn service(&self, name: &str) -> Option<ServiceView> {
        self.tracker.lock().expect("tracker lock").service(name)
    }

    pub fn system(&self) -> SystemView {
        self.tracker.lock().expect("tracker lock").system()
    }

    pub fn checker_view(&self) -> CheckerView {
        CheckerView { checks: self.checker.len(), ..self.checker_view.lock().expect("checker view lock").clone() }
    }
}

/// The health of the whole system as the API answers it (HTTP and NATS alike).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SystemReport {
    #[serde(flatten)]
    pub system: SystemView,
    pub checker: CheckerView,
    pub self_preservation: bool,
}

/// An instance as a service's health lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceHealth {
    pub id: String,
    pub health: orch_protocol::registry::Health,
    pub lease: orch_protocol::registry::Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<orch_protocol::health::Maintenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flapping_since: Option<chrono::DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_since: Option<chrono::DateTime<Utc>>,
    pub checks: Vec<CheckStatus>,
}

/// A check's status in a service's health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckStatus {
    pub id: String,
    pub status: orch_protocol::registry::Health,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// The health of one service as the API answers it (HTTP and NATS alike).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceReport {
    #[serde(flatten)]
    pub view: ServiceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<orch_protocol::health::Maintenance>,
    /// Its instances, at most 1000.
    pub instances: Vec<InstanceHealth>,
}

impl Monitor {
    pub fn system_report(&self, registry: &Registry) -> SystemReport {
        SystemReport {
            system: self.system(),
            checker: self.checker_view(),
            self_preservation: registry.self_preservation(),
        }
    }

    /// `None` when the service is not tracked (no instance, not marked critical).
    pub async fn service_report(
        &self,
        pool: &sqlx::PgPool,
        name: &str,
    ) -> crate::storage::Result<Option<ServiceReport>> {
        use crate::storage::instances::{self, Filter, PAGE_MAX};
        let Some(view) = self.service(name) else { return Ok(None) };
        let filter = Filter { name: Some(name.to_string()), limit: PAGE_MAX, ..Default::default() };
        let found = instances::list(pool, &filter).await?;
        let maintenance = crate::storage::health::service_maintenance(pool, Some(name)).await?.remove(name);
        let instances = found
            .into_iter()
            .map(|i| InstanceHealth {
                id: i.id,
                health: i.health,
                lease: i.lease,
                maintenance: i.maintenance,
                flapping_since: i.flapping_since,
                critical_since: i.critical_since,
                checks: i
                    .checks
                    .into_iter()
                    .map(|c| CheckStatus { id: c.spec.id, status: c.status, output: c.output })
                    .collect(),
            })
            .collect();
        Ok(Some(ServiceReport { view, maintenance, instances }))
    }
}

/// Runs until `shutdown`: applies committed changes to the checker and the tracker, records
/// aggregate transitions, deregisters and settles instances when due, and reports checker lag.
pub async fn run(
    monitor: Arc<Monitor>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    config: HealthSettings,
    mut changes: mpsc::UnboundedReceiver<Vec<Change>>,
    mut shutdown: Shutdown,
) {
    let mut due = tokio::time::interval(DUE_EVERY);
    due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report.tick().await;
    let reap_after = chrono::Duration::from_std(config.deregister_critical_after).unwrap_or(chrono::Duration::MAX);
    // Announce what changed while the orchestrator was down before anything else.
    let startup = monitor.tracker.lock().expect("tracker lock").publish();
    submit_all(&registry, startup).await;
    loop {
        let commands = tokio::select! {
            batch = changes.recv() => {
                let Some(first) = batch else { break };
                let mut tracker = monitor.tracker.lock().expect("tracker lock");
                // What else is waiting is applied too, so a burst of registrations is one publish.
                let mut next = Some(first);
                while let Some(batch) = next {
                    for change in &batch {
                        if let Change::Instance { id, now } = change {
                            monitor.checker.sync(id, now.as_deref());
                        }
                        tracker.apply(change);
                    }
                    next = changes.try_recv().ok();
                }
                tracker.publish()
            }
            _ = due.tick() => {
                let now = Utc::now();
                let reap_before = (!registry.self_preservation()).then(|| now - reap_after);
                monitor.tracker.lock().expect("tracker lock").due(now, reap_before, config.flap_window)
            }
            _ = report.tick() => {
                report_lag(&monitor, &metrics, &config).into_iter().collect()
            }
            _ = shutdown.requested() => break,
        };
        // A writer stalled by a database outage must not hold up a stop; what is not submitted
        // is derived again at the next start.
        tokio::select! {
            _ = submit_all(&registry, commands) => {}
            _ = shutdown.requested() => break,
        }
    }
    monitor.checker.stop();
}

async fn submit_all(registry: &Registry, commands: Vec<Command>) {
    for command in commands {
        registry.writer.submit_detached(internal(command)).await;
    }
}

/// Judges the last window of drift; returns an event command when the checker starts or stops
/// lagging.
fn report_lag(monitor: &Monitor, metrics: &Metrics, config: &HealthSettings) -> Option<Command> {
    let (runs, p99, max, skipped) = monitor.checker.drift.take();
    let max_drift_ms = config.max_drift.as_secs_f64() * 1000.0;
    let lagging = p99 > max_drift_ms || skipped > 0;
    let checks = monitor.checker.len();
    let mut view = monitor.checker_view.lock().expect("checker view lock");
    let was = view.lagging;
    *view = CheckerView { checks, lagging, runs, drift_p99_ms: p99, drift_max_ms: max, skipped };
    metrics.checker_lagging.set(i64::from(lagging));
    if lagging == was {
        return None;
    }
    let message = if lagging {
        format!(
            "the checker cannot keep its schedule: runs started {p99:.0} ms late (p99) and {skipped} runs were \
             skipped in the last {}s with {checks} checks; lower the number of checks, raise their intervals or \
             --health-concurrency",
            REPORT_EVERY.as_secs()
        )
    } else {
        format!("the checker keeps its schedule again: drift p99 {p99:.1} ms with {checks} checks")
    };
    if lagging {
        tracing::error!(drift_p99_ms = p99, skipped, checks, "{message}");
    } else {
        tracing::warn!(drift_p99_ms = p99, checks, "{message}");
    }
    let data = CheckerLagData { checks, drift_p99_ms: p99, drift_max_ms: max, skipped, max_drift_ms, message };
    Some(Command::Announce {
        kind: if lagging { EventKind::CheckerLagging } else { EventKind::CheckerRecovered },
        data: serde_json::to_value(data).expect("lag data serializes"),
    })
}

/// Reads what the tracker needs at start-up.
pub async fn load_tracker(
    pool: &sqlx::PgPool,
    summaries: &[crate::storage::instances::Summary],
    critical_services: &[String],
) -> crate::storage::Result<Tracker> {
    use crate::storage::{self, health as store, system};
    let maintenance = storage::retry("reading service maintenance", || store::service_maintenance(pool, None)).await?;
    let recorded = storage::retry("reading service health", || store::service_health(pool)).await?;
    let system_state = storage::retry("reading system health", || system::get(pool, system::HEALTH)).await?;
    let recorded_system: Option<Aggregate> =
        system_state.and_then(|v| v.get("state").cloned()).and_then(|s| serde_json::from_value(s).ok());
    let mut tracker = Tracker::new(critical_services.iter().cloned());
    let recorded: HashMap<String, Aggregate> = recorded.into_iter().map(|(k, (state, _))| (k, state)).collect();
    tracker.load(summaries, maintenance.into_keys(), recorded, recorded_system);
    Ok(tracker)
}

/// One check of an instance as the API lists it: the lease first, then the declared checks, each
/// with its committed state and, from memory, its last run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckView {
    pub id: String,
    pub kind: orch_protocol::health::CheckKind,
    pub status: orch_protocol::registry::Health,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// When the check took its status (declared checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<Utc>>,
    /// The declaration (declared checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<orch_protocol::health::CheckSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<checker::LiveView>,
    /// The lease: last heartbeat and when it runs out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::registry::LeaseView>,
}

impl Monitor {
    /// The checks of `instance`, lease first.
    pub fn checks(&self, registry: &Registry, instance: &orch_protocol::registry::Instance) -> Vec<CheckView> {
        let lease = CheckView {
            id: orch_protocol::health::LEASE_CHECK.to_string(),
            kind: orch_protocol::health::CheckKind::Lease,
            status: instance.lease,
            output: format!("TTL {}s, renewed by heartbeats", instance.ttl_seconds),
            since: None,
            spec: None,
            live: None,
            lease: registry.leases.view(&instance.id),
        };
        std::iter::once(lease)
            .chain(instance.checks.iter().map(|c| CheckView {
                id: c.spec.id.clone(),
                kind: c.spec.kind,
                status: c.status,
                output: c.output.clone(),
                since: Some(c.since),
                spec: Some(c.spec.clone()),
                live: self.checker.live(&instance.id, &c.spec.id),
                lease: None,
            }))
            .collect()
    }
}
