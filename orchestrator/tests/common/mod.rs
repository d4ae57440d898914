//! Shared helpers of the integration tests: a real nats-server and a fresh PostgreSQL database per
//! test, the orchestrator started in-process (or as a child process), and readers for what it
//! wrote to JetStream and PostgreSQL.
#![allow(dead_code)]

pub mod http;
pub mod lifecycle;
pub mod load;
pub mod workflows;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use clap::Parser;
use futures::StreamExt;
use orch_protocol::Subjects;
use orch_testkit::ShippedUsers;
use orchestrator::Settings;
use orchestrator::config::{Cli, Command};
use serde_json::Value;

pub use orch_testkit::eventually;

/// Settings of a test orchestrator: this NATS and database, an ephemeral HTTP port, and the
/// embedded agent's services under the real binary's shim.
pub fn settings(nats_url: &str, database_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.nats.url = nats_url.into();
    settings.database.url = database_url.into();
    settings.http.addr = ([127, 0, 0, 1], 0).into();
    settings.agent.as_mut().expect("an embedded agent by default").shim = Some(env!("CARGO_BIN_EXE_orch-shim").into());
    settings
}

/// The orchestrator as `make dev` runs it against `users`' server: its own shipped user, and
/// `checks` for its nats health checks.
pub fn as_shipped(settings: &mut Settings, users: &ShippedUsers) {
    settings.nats.url = users.servers_url();
    settings.nats.credentials = orchestrator::nats::Credentials::UserPassword {
        user: "orchestrator".into(),
        password: users.password("orchestrator"),
    };
    settings.health.nats_user = Some(("checks".into(), users.password("checks")));
}

/// The settings `orchestrator serve FLAGS…` makes, or the error it reports: for the tests of the
/// command line itself.
pub fn settings_from_flags(flags: &[&str]) -> Result<Settings, String> {
    let args = [&["orchestrator", "serve"], flags].concat();
    match Cli::try_parse_from(args).map_err(|e| e.to_string())?.command {
        Command::Serve(args) => args.settings(),
        _ => unreachable!("serve"),
    }
}

/// The nodes a test runs a standalone agent on, beside the orchestrator's own: each has its
/// shipped `agent-<node>` user.
pub const AGENT_NODES: &[&str] = &["n2", "n3"];

/// One NATS server locked down with the shipped users, one database, one orchestrator. The
/// orchestrator runs as the shipped `orchestrator` user (its nats checks as `checks`), so every test
/// also proves that its permissions are enough; the test's own connection is the `harness` user.
pub struct Stack {
    pub nats: ShippedUsers,
    pub database_url: String,
    pub orchestrator: Option<orchestrator::Running>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub pool: sqlx::PgPool,
    pub subjects: Subjects,
    /// The embedded agent's service logs.
    pub agent_logs: orch_testkit::TempDir,
    /// What the test changed in the settings, applied again at each (re)start.
    configure: std::sync::Arc<dyn Fn(&mut Settings) + Send + Sync>,
}

/// The orchestrator's log in tests: warnings and errors, or the filter in `ORCH_TEST_LOG`
/// (e.g. `ORCH_TEST_LOG=info`) to follow what a failing test did.
pub fn init_logs() {
    orchestrator::telemetry::init(
        &std::env::var("ORCH_TEST_LOG").unwrap_or("warn".into()),
        orchestrator::telemetry::LogFormat::Human,
    );
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(|_| {}).await
    }

    /// A stack whose orchestrator runs with the test settings as `configure` changes them.
    pub async fn start_with(configure: impl Fn(&mut Settings) + Send + Sync + 'static) -> Stack {
        init_logs();
        let nats = ShippedUsers::start_with_harness(AGENT_NODES);
        let database_url = orch_testkit::fresh_database().await;
        let client = nats.connect("harness").await;
        let js = jetstream::new(client.clone());
        let pool = sqlx::PgPool::connect(&database_url).await.expect("connect test pool");
        let mut stack = Stack {
            nats,
            database_url,
            orchestrator: None,
            client,
            js,
            pool,
            subjects: Subjects::default(),
            agent_logs: orch_testkit::TempDir::new("orch-agent-logs"),
            configure: std::sync::Arc::new(configure),
        };
        stack.start_orchestrator().await;
        stack
    }

    pub fn settings(&self) -> Settings {
        let mut settings = settings(&self.nats.nats.url(), &self.database_url);
        as_shipped(&mut settings, &self.nats);
        settings.agent.as_mut().expect("an embedded agent").log_dir = self.agent_logs.path().to_path_buf();
        (self.configure)(&mut settings);
        settings
    }

    pub async fn start_orchestrator(&mut self) {
        let running = orchestrator::start(self.settings()).await.expect("orchestrator starts");
        self.orchestrator = Some(running);
    }

    pub async fn stop_orchestrator(&mut self) {
        if let Some(running) = self.orchestrator.take() {
            running.shutdown().await;
        }
    }

    pub fn running(&self) -> &orchestrator::Running {
        self.orchestrator.as_ref().expect("orchestrator running")
    }

    pub fn http_port(&self) -> u16 {
        self.running().http_addr.port()
    }

    /// Publishes a command to JetStream with an optional `Nats-Msg-Id`; returns after the PubAck.
    pub async fn publish_command(&self, verb: &str, payload: &str, msg_id: Option<&str>) {
        let subject = self.subjects.command("registry", verb);
        publish_raw(&self.js, &subject, payload.as_bytes(), msg_id).await;
    }

    /// Sends a registry request and returns (error code header, parsed body).
    pub async fn request(&self, verb: &str, payload: &str) -> (Option<String>, Value) {
        self.request_on("registry", verb, payload).await
    }

    /// Sends a request on `<prefix>.req.<domain>.<verb>` and returns (error code header, parsed body).
    pub async fn request_on(&self, domain: &str, verb: &str, payload: &str) -> (Option<String>, Value) {
        let reply = self
            .client
            .request(self.subjects.request(domain, verb), payload.to_string().into())
            .await
            .expect("request answered");
        let code = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(orch_protocol::headers::SERVICE_ERROR_CODE))
            .map(|v| v.as_str().to_string());
        (code, serde_json::from_slice(&reply.payload).expect("reply is JSON"))
    }

    /// Every event on the events stream so far, as JSON, in stream order.
    pub async fn events(&self) -> Vec<Value> {
        read_stream(&self.js, &self.subjects.events_stream(), None).await
    }

    /// Waits until the events stream holds at least `n` events matching `filter` and returns them.
    pub async fn wait_events(&self, n: usize, what: &str, filter: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(Duration::from_secs(20), what, || async {
            let found: Vec<Value> = self.events().await.into_iter().filter(|e| filter(e)).collect();
            (found.len() >= n).then_some(found)
        })
        .await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count query")
    }
}

/// Services outlive their agent (and the orchestrator that embeds it): what a test started goes
/// when the test ends.
impl Drop for Stack {
    fn drop(&mut self) {
        kill_services(self.agent_logs.path());
    }
}

/// Kills, when dropped, what a standalone agent on this log directory left running.
pub struct KillServicesOf(pub std::path::PathBuf);

impl Drop for KillServicesOf {
    fn drop(&mut self) {
        kill_services(&self.0);
    }
}

/// Kills every service the agent on `log_dir` left running (its shims' run directory).
pub fn kill_services(log_dir: &std::path::Path) {
    orchestrator::agent::supervisor::kill_all(&log_dir.join("shims"));
}

pub async fn publish_raw(js: &jetstream::Context, subject: &str, payload: &[u8], msg_id: Option<&str>) {
    let mut publish = jetstream::message::PublishMessage::build().payload(payload.to_vec().into());
    if let Some(id) = msg_id {
        publish = publish.message_id(id);
    }
    js.send_publish(subject.to_string(), publish).await.expect("publish").await.expect("PubAck");
}

/// Reads a whole stream (or one subject filter) with an ephemeral ordered consumer.
pub async fn read_stream(js: &jetstream::Context, stream: &str, filter: Option<&str>) -> Vec<Value> {
    read_stream_raw(js, stream, filter)
        .await
        .into_iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap_or(Value::Null))
        .collect()
}

pub async fn read_stream_raw(js: &jetstream::Context, stream: &str, filter: Option<&str>) -> Vec<async_nats::Message> {
    let stream_handle = js.get_stream(stream).await.expect("stream exists");
    let mut info = stream_handle.clone();
    let total = info.info().await.expect("stream info").state.messages;
    if total == 0 {
        return Vec::new();
    }
    // In a cluster that has just lost a member, a JetStream request can time out while the
    // consumer's placement is agreed on: asked again, as any client does. The bounds below guard
    // against a hang, they measure nothing: generous, so a busy machine does not trip them.
    let config = jetstream::consumer::pull::OrderedConfig {
        deliver_policy: DeliverPolicy::All,
        filter_subject: filter.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let asked_until = tokio::time::Instant::now() + Duration::from_secs(120);
    let consumer = loop {
        match stream_handle.create_consumer(config.clone()).await {
            Ok(consumer) => break consumer,
            Err(e) if tokio::time::Instant::now() < asked_until => {
                eprintln!("reading {stream}: making the consumer failed ({e}); asking again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reading {stream}: no ordered consumer within 120s: {e}"),
        }
    };
    // How many messages match, as the server counted them when the consumer was made: read
    // exactly those, however long the machine takes to deliver them, rather than stopping at the
    // first pause (which on a busy machine silently returned part of the stream).
    let expected = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(expected as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while (out.len() as u64) < expected {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(m))) => out.push(m.message.clone()),
            // An ordered consumer recreates itself after a hiccup; it goes on from where it was.
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("the consumer of {stream} ended after {} of {expected} messages", out.len()),
            Err(_) => panic!("reading {stream}: {} of {expected} messages after 120s", out.len()),
        }
    }
    out
}

/// The `data` of events of one type.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// A registration payload.
pub fn registration(id: &str, name: &str, ttl: u32) -> String {
    serde_json::json!({ "id": id, "name": name, "address": "127.0.0.1", "port": 8080, "ttl_seconds": ttl }).to_string()
}

/// A replica `name` of a group (`serve --replica`) on the shipped users' NATS and `database_url`,
/// with a lease of `ttl`, logging to `<dir>/<name>.log`. Replicas on one machine share the agent
/// log dir (`<dir>/agent-logs`): their embedded agents all act as node `local`.
pub fn replica(
    name: &str,
    users: &orch_testkit::ShippedUsers,
    database_url: &str,
    dir: &orch_testkit::TempDir,
    ttl: &str,
) -> orch_testkit::OrchestratorProcess {
    let env = [
        ("ORCH_NATS_URL", users.nats.url()),
        ("ORCH_CONFIG", users.path("orchestrator.toml").display().to_string()),
        ("ORCH_DATABASE_URL", database_url.to_string()),
        ("ORCH_REPLICA", name.to_string()),
        ("ORCH_LEASE_TTL", ttl.to_string()),
        ("ORCH_LOG", "info".to_string()),
        ("ORCH_AGENT_LOG_DIR", dir.path().join("agent-logs").display().to_string()),
    ];
    orch_testkit::OrchestratorProcess::start(
        env!("CARGO_BIN_EXE_orchestrator"),
        &env,
        dir.path().join(format!("{name}.log")),
    )
}

/// The replica that holds a live lease, and its term (`None` also before the first replica
/// made the tables).
pub async fn leader(pool: &sqlx::PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT holder, term FROM leadership WHERE expires_at > now()")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Runs the command line against `stack`'s HTTP API and returns what it printed; fails the test
/// on a non-zero exit. A child process awaited, not waited for: the orchestrator answering it
/// runs on the test's own runtime.
pub async fn cli(stack: &Stack, args: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{}", stack.http_port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .args(["--api-url", &url])
        .output()
        .await
        .expect("the command line runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}
