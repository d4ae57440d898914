//! Prometheus metrics, exposed at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Heartbeats received, by `renewed`, `recovering` or `unknown`.
    pub heartbeats: Family<ResultLabel, Counter>,
    /// Commands handled by the writer, by `applied`, `rejected` or `replayed`.
    pub commands: Family<ResultLabel, Counter>,
    /// Time to apply and commit one batch.
    pub batch_seconds: Histogram,
    /// Commands per committed batch.
    pub batch_size: Histogram,
    /// Events and dead letters published by the outbox relay.
    pub outbox_published: Counter,
    /// Instances with a lease (set at scrape time).
    pub instances: Gauge,
    /// Declared checks the checker runs or watches (set at scrape time).
    pub checks: Gauge,
    /// Check runs by result (`passing`, `warning`, `critical`).
    pub check_runs: Family<ResultLabel, Counter>,
    /// How late each check run started against its schedule.
    pub checker_drift: Histogram,
    /// Runs skipped because a check fell more than a whole interval behind.
    pub checker_skipped: Counter,
    /// 1 while the checker cannot keep its schedule.
    pub checker_lagging: Gauge,
    /// Priority changes stored, by outcome (`applied`, `clamped`, `held`, `refused`, ...).
    pub priority_changes: Family<ResultLabel, Counter>,
    /// Sheddable services stopped under node pressure, and restored after it.
    pub shed_steps: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("orch");
        let heartbeats = Family::<ResultLabel, Counter>::default();
        registry.register("heartbeats", "Heartbeats received", heartbeats.clone());
        let commands = Family::<ResultLabel, Counter>::default();
        registry.register("commands", "Registry commands handled", commands.clone());
        let batch_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "batch_commit_seconds",
            "Time to apply and commit one batch of commands",
            batch_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("batch_size", "Commands per committed batch", batch_size.clone());
        let outbox_published = Counter::default();
        registry.register("outbox_published", "Messages published by the outbox relay", outbox_published.clone());
        let instances = Gauge::default();
        registry.register("instances", "Registered instances", instances.clone());
        let checks = Gauge::default();
        registry.register("checks", "Declared health checks scheduled", checks.clone());
        let check_runs = Family::<ResultLabel, Counter>::default();
        registry.register("check_runs", "Health check runs by result", check_runs.clone());
        let checker_drift = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "checker_drift_seconds",
            "How late check runs started against their schedule",
            checker_drift.clone(),
        );
        let checker_skipped = Counter::default();
        registry.register(
            "checker_skipped",
            "Check runs skipped because the checker fell behind",
            checker_skipped.clone(),
        );
        let checker_lagging = Gauge::default();
        registry.register("checker_lagging", "1 while the checker cannot keep its schedule", checker_lagging.clone());
        let priority_changes = Family::<ResultLabel, Counter>::default();
        registry.register("priority_changes", "Priority changes stored, by outcome", priority_changes.clone());
        let shed_steps = Family::<ResultLabel, Counter>::default();
        registry.register("shed_steps", "Load-shedding steps, by `shed` or `restored`", shed_steps.clone());
        Metrics {
            registry,
            priority_changes,
            shed_steps,
            heartbeats,
            commands,
            batch_seconds,
            batch_size,
            outbox_published,
            instances,
            checks,
            check_runs,
            checker_drift,
            checker_skipped,
            checker_lagging,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn heartbeat(&self, result: &'static str) {
        self.heartbeats.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn check_run(&self, result: &'static str) {
        self.check_runs.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn priority_changes(&self, changes: &[orch_protocol::priority::Change]) {
        for change in changes {
            self.priority_changes.get_or_create(&ResultLabel { result: change.outcome.as_str() }).inc();
        }
    }

    pub fn command(&self, result: &'static str) {
        self.commands.get_or_create(&ResultLabel { result }).inc();
    }
}
