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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabel {
    pub health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// `route` is the matched template (`/api/v1/services/{id}`), never the raw path, so the number
/// of series stays bounded; unmatched requests count under `unmatched`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Shortest time between two reads of the figures [`Metrics::collect`] takes from PostgreSQL and
/// JetStream.
pub const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Metrics {
    registry: Registry,
    /// When the figures read from PostgreSQL and JetStream were last read (see [`Metrics::collect`]).
    collected_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Heartbeats received, by `renewed`, `recovering` or `unknown`.
    pub heartbeats: Family<ResultLabel, Counter>,
    /// Commands handled by the writer, by kind and by `applied`, `rejected` or `replayed`.
    pub commands: Family<CommandLabels, Counter>,
    /// Time from a command's arrival at the writer to its commit, by kind.
    pub command_seconds: Family<KindLabel, Histogram>,
    /// Instances by health, from PostgreSQL at scrape time.
    pub instances_by_health: Family<HealthLabel, Gauge>,
    /// Committed events not yet published by the outbox relay, and the age of the oldest.
    pub outbox_pending: Gauge,
    pub outbox_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Messages of a JetStream consumer not yet delivered, and delivered but not acknowledged.
    pub consumer_pending: Family<ConsumerLabel, Gauge>,
    pub consumer_ack_pending: Family<ConsumerLabel, Gauge>,
    /// Scrapes that could not read PostgreSQL or NATS (their gauges keep the last values).
    pub scrape_errors: Counter,
    /// HTTP requests by method, route and status, and their durations by route.
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram>,
    /// Live-feed clients connected, and clients dropped for falling behind.
    pub ws_clients: Gauge,
    pub ws_dropped: Counter,
    /// Time to apply and commit one batch.
    pub batch_seconds: Histogram,
    /// Commands per committed batch.
    pub batch_size: Histogram,
    /// Events and dead letters published by the outbox relay.
    pub outbox_published: Counter,
    /// Outbox rows set aside (dead-lettered) because JetStream kept refusing them.
    pub outbox_isolated: Counter,
    /// Rows of each bounded table (set at each maintenance round).
    pub table_rows: Family<TableLabel, Gauge>,
    /// Bytes and messages each stream holds (set at scrape time).
    pub stream_bytes: Family<StreamLabel, Gauge>,
    pub stream_messages: Family<StreamLabel, Gauge>,
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
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register("commands", "Registry commands handled, by kind and result", commands.clone());
        let command_seconds = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 16))
        });
        registry.register(
            "command_seconds",
            "Time from a command's arrival at the writer to its commit, by kind",
            command_seconds.clone(),
        );
        let instances_by_health = Family::<HealthLabel, Gauge>::default();
        registry.register("instances_by_health", "Registered instances by health", instances_by_health.clone());
        let outbox_pending = Gauge::default();
        registry.register("outbox_pending", "Committed events not yet published to NATS", outbox_pending.clone());
        let outbox_lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "outbox_lag_seconds",
            "Age of the oldest committed event not yet published (0 when none waits)",
            outbox_lag_seconds.clone(),
        );
        let consumer_pending = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "consumer_pending",
            "Messages a JetStream consumer has not yet delivered",
            consumer_pending.clone(),
        );
        let consumer_ack_pending = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "consumer_ack_pending",
            "Messages a JetStream consumer delivered but not yet acknowledged",
            consumer_ack_pending.clone(),
        );
        let scrape_errors = Counter::default();
        registry.register("scrape_errors", "Scrapes that could not read PostgreSQL or NATS", scrape_errors.clone());
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", http_requests.clone());
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register("http_request_seconds", "HTTP request durations by route", http_seconds.clone());
        let ws_clients = Gauge::default();
        registry.register("ws_clients", "Live-feed (WebSocket) clients connected", ws_clients.clone());
        let ws_dropped = Counter::default();
        registry.register("ws_dropped", "Live-feed clients dropped for falling behind", ws_dropped.clone());
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
        let table_rows = Family::<TableLabel, Gauge>::default();
        registry.register(
            "table_rows",
            "Rows of each table with a bound, at the last maintenance round",
            table_rows.clone(),
        );
        let stream_bytes = Family::<StreamLabel, Gauge>::default();
        registry.register("stream_bytes", "Bytes each JetStream stream holds", stream_bytes.clone());
        let stream_messages = Family::<StreamLabel, Gauge>::default();
        registry.register("stream_messages", "Messages each JetStream stream holds", stream_messages.clone());
        let outbox_isolated = Counter::default();
        registry.register(
            "outbox_isolated",
            "Outbox rows set aside to the dead-letter table because JetStream kept refusing them",
            outbox_isolated.clone(),
        );
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
            collected_at: tokio::sync::Mutex::new(None),
            priority_changes,
            shed_steps,
            heartbeats,
            commands,
            command_seconds,
            instances_by_health,
            outbox_pending,
            outbox_lag_seconds,
            consumer_pending,
            consumer_ack_pending,
            scrape_errors,
            http_requests,
            http_seconds,
            ws_clients,
            ws_dropped,
            batch_seconds,
            batch_size,
            outbox_published,
            outbox_isolated,
            table_rows,
            stream_bytes,
            stream_messages,
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

    pub fn command(&self, kind: &'static str, result: &'static str, latency: std::time::Duration) {
        self.commands.get_or_create(&CommandLabels { kind, result }).inc();
        self.command_seconds.get_or_create(&KindLabel { kind }).observe(latency.as_secs_f64());
    }

    /// The rows of a bounded table.
    pub fn table_rows(&self, table: String, rows: i64) {
        self.table_rows.get_or_create(&TableLabel { table }).set(rows);
    }

    /// One HTTP request answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: std::time::Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        self.http_seconds
            .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
            .observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&HttpLabels { method, route, status }).inc();
    }

    /// Reads what lives outside the process at scrape time: instances by health and the outbox
    /// from PostgreSQL, the commands consumer from JetStream. Each source gets a short deadline,
    /// so a scrape during an outage answers with the last values instead of hanging. They are read
    /// at most once per [`COLLECT_EVERY`], one scrape at a time: however often `/metrics` is
    /// called, it costs PostgreSQL and JetStream no more than that.
    pub async fn collect(
        &self,
        pool: &sqlx::PgPool,
        js: &async_nats::jetstream::Context,
        subjects: &orch_protocol::Subjects,
    ) {
        const DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
        let mut collected_at = self.collected_at.lock().await;
        if collected_at.is_some_and(|at| at.elapsed() < COLLECT_EVERY) {
            return;
        }
        *collected_at = Some(std::time::Instant::now());
        let database = async {
            let by_health: Vec<(String, i64)> =
                sqlx::query_as("SELECT health, count(*) FROM instances GROUP BY health").fetch_all(pool).await?;
            let outbox: (i64, Option<f64>) =
                sqlx::query_as("SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox")
                    .fetch_one(pool)
                    .await?;
            Ok::<_, sqlx::Error>((by_health, outbox))
        };
        match tokio::time::timeout(DEADLINE, database).await {
            Ok(Ok((by_health, (pending, lag)))) => {
                for health in ["passing", "warning", "critical"] {
                    let count = by_health.iter().find(|(h, _)| h == health).map_or(0, |(_, n)| *n);
                    self.instances_by_health.get_or_create(&HealthLabel { health }).set(count);
                }
                self.outbox_pending.set(pending);
                self.outbox_lag_seconds.set(lag.unwrap_or(0.0).max(0.0));
            }
            _ => {
                self.scrape_errors.inc();
            }
        }
        for name in [subjects.commands_stream(), subjects.events_stream(), subjects.dead_letter_stream()] {
            let state = async {
                let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((info.state.bytes, info.state.messages))
            };
            match tokio::time::timeout(DEADLINE, state).await {
                Ok(Ok((bytes, messages))) => {
                    let label = StreamLabel { stream: name };
                    self.stream_bytes.get_or_create(&label).set(bytes as i64);
                    self.stream_messages.get_or_create(&label).set(messages as i64);
                }
                _ => {
                    self.scrape_errors.inc();
                }
            }
        }
        let consumer = async {
            let stream = js.get_stream(subjects.commands_stream()).await.map_err(|e| e.to_string())?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(&subjects.commands_consumer()).await.map_err(|e| e.to_string())?;
            let info = consumer.info().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((info.num_pending, info.num_ack_pending))
        };
        match tokio::time::timeout(DEADLINE, consumer).await {
            Ok(Ok((pending, ack_pending))) => {
                let label = ConsumerLabel { consumer: subjects.commands_consumer() };
                self.consumer_pending.get_or_create(&label).set(pending as i64);
                self.consumer_ack_pending.get_or_create(&label).set(ack_pending as i64);
            }
            _ => {
                self.scrape_errors.inc();
            }
        }
    }
}
