//! What the benchmarks share: the stack they measure (nats-server, private PostgreSQL, the
//! orchestrator as a release binary), figures written as JSON, and readers of /proc and /metrics.
#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream;
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

/// The bench's nats-server: open, or locked down with the shipped users.
enum Nats {
    Open(NatsServer),
    Locked(ShippedUsers),
}

impl Nats {
    fn server(&self) -> &NatsServer {
        match self {
            Nats::Open(server) => server,
            Nats::Locked(users) => &users.nats,
        }
    }
}

pub struct Bench {
    nats: Nats,
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

pub fn orchestrator_env(nats: &NatsServer, database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ORCH_NATS_URL", nats.url()),
        ("ORCH_DATABASE_URL", database_url.to_string()),
        ("ORCH_LOG", "warn".to_string()),
    ]
}

impl Bench {
    /// Starts nats-server, a private PostgreSQL and the orchestrator (release binary) with `extra`
    /// environment on top of the defaults.
    pub async fn start(extra: &[(&'static str, String)]) -> Bench {
        Bench::start_on(Nats::Open(NatsServer::start()), extra, None).await
    }

    /// [`Bench::start`] with nats-server locked down as `make dev` runs it (the users of
    /// `scripts/nats-auth.sh`): the orchestrator connects as its user, the bench's client as
    /// `role` (naming it on its requests), other parts with [`Bench::user_url`].
    pub async fn start_locked(extra: &[(&'static str, String)], role: &str) -> Bench {
        let users = ShippedUsers::start(&[]);
        let config = users.path("orchestrator.toml").display().to_string();
        let extra = [extra.to_vec(), vec![("ORCH_CONFIG", config)]].concat();
        Bench::start_on(Nats::Locked(users), &extra, Some(role)).await
    }

    async fn start_on(nats: Nats, extra: &[(&'static str, String)], role: Option<&str>) -> Bench {
        let server = nats.server();
        let postgres = Postgres::start();
        let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
        let logs = TempDir::new("orch-bench");
        let mut orchestrator = OrchestratorProcess::start(
            env!("CARGO_BIN_EXE_orchestrator"),
            &[orchestrator_env(server, &database_url), extra.to_vec()].concat(),
            bench_dir().join("orchestrator.log"),
        );
        orchestrator.wait_ready(Duration::from_secs(120));
        let client = match (&nats, role) {
            (Nats::Locked(users), Some(role)) => users.connect(role).await,
            _ => async_nats::connect(server.url()).await.unwrap(),
        };
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
        self.nats.server()
    }

    /// The URL of `role`'s user on a locked-down server; the plain URL on an open one.
    pub fn user_url(&self, role: &str) -> String {
        match &self.nats {
            Nats::Open(server) => server.url(),
            Nats::Locked(users) => users.url(role),
        }
    }
}
