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
        Metrics { registry, heartbeats, commands, batch_seconds, batch_size, outbox_published, instances }
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

    pub fn command(&self, result: &'static str) {
        self.commands.get_or_create(&ResultLabel { result }).inc();
    }
}
