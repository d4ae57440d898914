//! What the benchmarks share: the stack they measure (nats-server, private PostgreSQL, the
//! orchestrator as a release binary), figures written as JSON, and readers of /proc and /metrics.
#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_protocol::Subjects;
use orch_testkit::{NatsServer, OrchestratorProcess, Postgres, ShippedUsers, TempDir, http_get};
use serde_json::{Value, json};

/// Un-acknowledged publishes in flight.
pub const WINDOW: usize = 4096;

/// `target/bench`: JSON figures and the orchestrator's log of the last run.
pub fn bench_dir() -> std::path::PathBuf {
    let dir = orch_testkit::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    dir
}

pub fn write_json(name: &str, value: &Value) {
    let dir = bench_dir();
    let mut value = value.clone();
    value["benchmark"] = json!(name);
    value["recorded_at"] = json!(chrono::Utc::now().to_rfc3339());
    value["cores"] = json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&value).unwrap())
        .expect("write bench json");
}

pub fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// CPU time (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A counter from the orchestrator's /metrics (summed over labels).
pub fn metric(port: u16, name: &str, label: Option<&str>) -> f64 {
    let (_, text) = http_get(port, "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && label.is_none_or(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A connection to `url`, as the user its credentials name (async-nats leaves a URL's
/// credentials alone: they are taken here, as the client crate does).
pub async fn connect_url(url: &str) -> async_nats::Client {
    let options = match orch_client::url_credentials(url) {
        Some((user, Some(password))) => async_nats::ConnectOptions::with_user_and_password(user, password),
        _ => async_nats::ConnectOptions::new(),
    };
    options.connect(orch_client::without_credentials(url)).await.unwrap_or_else(|e| panic!("connect: {e}"))
}

pub struct Bench {
    nats: ShippedUsers,
    pub _postgres: Postgres,
    pub database_url: String,
    pub orchestrator: OrchestratorProcess,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
    /// The typed client over the same connection: requests with checked replies.
    pub orch: orch_client::Client,
    pub subjects: Subjects,
    pub _logs: TempDir,
}

/// The orchestrator's environment against `nats` (as its shipped user, its nats checks as
/// `checks`) and `database_url`.
pub fn orchestrator_env(nats: &ShippedUsers, database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ORCH_NATS_URL", nats.nats.url()),
        ("ORCH_CONFIG", nats.path("orchestrator.toml").display().to_string()),
        ("ORCH_DATABASE_URL", database_url.to_string()),
        ("ORCH_LOG", "warn".to_string()),
    ]
}

impl Bench {
    /// Starts nats-server locked down as `make dev` runs it (the users of `scripts/nats-auth.sh`),
    /// a private PostgreSQL and the orchestrator (release binary, as its shipped user) with
    /// `extra` environment on top of the defaults. The bench's own client is the `harness` user,
    /// which may do anything (publish durable commands on the plain subjects, read every stream).
    pub async fn start(extra: &[(&'static str, String)]) -> Bench {
        Bench::start_on(ShippedUsers::start_with_harness(&[]), extra, None).await
    }

    /// [`Bench::start`] with a shipped agent user (`agent-<node>`) for each of `nodes`, for
    /// standalone agents ([`Bench::user_url`]).
    pub async fn start_with_nodes(nodes: &[&str], extra: &[(&'static str, String)]) -> Bench {
        Bench::start_on(ShippedUsers::start_with_harness(nodes), extra, None).await
    }

    /// [`Bench::start`] with the bench's client as the shipped user `role` (naming it on its
    /// requests), other parts with [`Bench::user_url`].
    pub async fn start_locked(extra: &[(&'static str, String)], role: &str) -> Bench {
        Bench::start_on(ShippedUsers::start_with_harness(&[]), extra, Some(role)).await
    }

    async fn start_on(nats: ShippedUsers, extra: &[(&'static str, String)], role: Option<&str>) -> Bench {
        let postgres = Postgres::start();
        let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
        let logs = TempDir::new("orch-bench");
        let mut orchestrator = OrchestratorProcess::start(
            env!("CARGO_BIN_EXE_orchestrator"),
            &[orchestrator_env(&nats, &database_url), extra.to_vec()].concat(),
            bench_dir().join("orchestrator.log"),
        );
        orchestrator.wait_ready(Duration::from_secs(120));
        let client = nats.connect(role.unwrap_or("harness")).await;
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(WINDOW * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Bench {
            nats,
            _postgres: postgres,
            database_url,
            orchestrator,
            js,
            orch: orch_client::Client::from_nats_as(
                client.clone(),
                Subjects::default(),
                Duration::from_secs(30),
                role.map(str::to_string),
            ),
            client,
            subjects: Subjects::default(),
            _logs: logs,
        }
    }

    /// The bench's nats-server.
    pub fn nats(&self) -> &NatsServer {
        &self.nats.nats
    }

    /// The bench's NATS users (for [`orchestrator_env`]).
    pub fn users(&self) -> &ShippedUsers {
        &self.nats
    }

    /// The URL of `role`'s shipped user (`harness` for one without limits).
    pub fn user_url(&self, role: &str) -> String {
        self.nats.url(role)
    }
}

/// Pids of every PostgreSQL server process of the cluster listening on `port`.
pub fn postgres_pids(port: u16) -> Vec<u32> {
    let needle = format!("-p {port}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if comm.trim() == "postgres" && (cmdline.contains(&needle) || cmdline.starts_with("postgres:")) {
            pids.push(pid);
        }
    }
    pids
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Every message of `stream` on `filter`, read with an ordered consumer.
pub async fn read_all(js: &jetstream::Context, stream: &str, filter: &str) -> Vec<Value> {
    let stream = js.get_stream(stream).await.expect("stream");
    let config = jetstream::consumer::pull::OrderedConfig {
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        filter_subject: filter.to_string(),
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.expect("ordered consumer");
    let expected = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(expected as usize);
    while (out.len() as u64) < expected {
        match tokio::time::timeout(Duration::from_secs(60), messages.next()).await {
            Ok(Some(Ok(m))) => out.push(serde_json::from_slice(&m.payload).unwrap_or(Value::Null)),
            Ok(Some(Err(_))) => continue,
            other => panic!("reading events: {} of {expected}, then {:?}", out.len(), other.map(|_| ())),
        }
    }
    out
}
