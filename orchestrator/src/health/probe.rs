//! One run of an active health check (`http`, `tcp`, `nats` or `exec`) against a real target.
//! The scheduler decides when to run a check and what a result means for the instance; this
//! module only performs a run, bounded by the check's timeout, and says how it went. A run never
//! fails as a call: whatever goes wrong becomes a critical result whose output says what happened.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::{RequestErrorKind, client::Request};
use orch_protocol::headers;
use orch_protocol::health::{CheckKind, CheckSpec, cap_output, limits};
use orch_protocol::registry::Health;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::time::Instant;

use crate::registry::check_targets::CheckTargets;

/// How much of an HTTP response body is read to look for `expect_body`: enough for any health
/// page, bounded so a large or endless body cannot hold a check or the orchestrator's memory.
const BODY_READ_MAX: usize = 64 * 1024;

/// Redirects an HTTP check follows, on the same host and port only: a health endpoint behind one
/// or two redirects still works, a loop fails fast, and a redirect never leads a check elsewhere.
const REDIRECTS_MAX: usize = 3;

/// How long an unused HTTP connection is kept. Longer than the default check interval, so checks
/// of the same host keep reusing their connections instead of opening one per run.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long to wait for a killed exec child to be reaped before leaving it to tokio's reaper.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// The command-line flag that enables exec checks, named in the output of a disabled exec check.
pub const EXEC_ENABLE_FLAG: &str = "--health-exec-enabled";

/// The environment variable that enables exec checks.
pub const EXEC_ENABLE_ENV: &str = "ORCH_HEALTH_EXEC_ENABLED";

/// Where a check points by default: the instance's own address.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub service: &'a str,
    pub instance_id: &'a str,
    pub address: &'a str,
    pub port: u32,
    /// The instance's registered protocol: a path-only HTTP check uses `https://` when it is
    /// `https`, `http://` otherwise.
    pub protocol: &'a str,
}

/// One run's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// What this run says about the check; the scheduler applies the thresholds.
    pub status: Health,
    /// What the run saw, at most [`limits::OUTPUT_MAX`] bytes.
    pub output: String,
}

impl ProbeResult {
    fn new(status: Health, output: String) -> ProbeResult {
        ProbeResult { status, output: cap_output(output) }
    }

    fn critical(output: String) -> ProbeResult {
        ProbeResult::new(Health::Critical, output)
    }
}

/// The ADR-32 ping subject of an instance, which a `nats` check requests by default.
pub fn ping_subject(service: &str, instance_id: &str) -> String {
    format!("$SRV.PING.{service}.{instance_id}")
}

/// Runs checks. Cheap to clone: the HTTP clients and the NATS client share their connections.
#[derive(Clone)]
pub struct Prober {
    /// Verifies certificates against the platform's roots.
    http: reqwest::Client,
    /// Accepts any certificate, for checks with `tls_skip_verify`.
    http_insecure: reqwest::Client,
    nats: async_nats::Client,
    exec_enabled: bool,
    /// Which addresses a check's host name may resolve to when it runs.
    targets: Arc<CheckTargets>,
}

impl Prober {
    /// `exec_enabled`: exec checks run only when the operator enabled them. `targets`: the
    /// addresses checks may connect to (link-local and metadata ones only when allowed).
    pub fn new(nats: async_nats::Client, exec_enabled: bool, targets: Arc<CheckTargets>) -> anyhow::Result<Prober> {
        crate::tls::install_crypto_provider();
        Ok(Prober {
            http: http_client(false, &targets).context("building the HTTP client of health checks")?,
            http_insecure: http_client(true, &targets)
                .context("building the HTTP client of tls_skip_verify health checks")?,
            nats,
            exec_enabled,
            targets,
        })
    }

    /// The HTTP client of checks (certificates verified; addresses limited to the allowed
    /// targets, redirects to the same origin only), for other calls to registered instances:
    /// the workflows' HTTP steps.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs one check of kind http, tcp, nats or exec, bounded by `spec.timeout()`. Never panics;
    /// every failure is a critical result with an output saying what happened.
    pub async fn run(&self, spec: &CheckSpec, target: &Target<'_>) -> ProbeResult {
        let timeout = spec.timeout();
        match spec.kind {
            CheckKind::Http => self.http(spec, target, timeout).await,
            CheckKind::Tcp => tcp(spec, target, timeout, &self.targets).await,
            CheckKind::Nats => self.nats(spec, target, timeout).await,
            CheckKind::Exec => self.exec(spec, timeout).await,
            CheckKind::Ttl | CheckKind::Lease => ProbeResult::critical(format!(
                "{} checks are passive (the service reports them); they are not probed",
                spec.kind.as_str()
            )),
        }
    }

    async fn http(&self, spec: &CheckSpec, target: &Target<'_>, timeout: Duration) -> ProbeResult {
        let url = http_url(spec.url.as_deref(), target);
        let method = spec.method.as_deref().unwrap_or("GET");
        let head = format!("HTTP {method} {url}");
        let method = match reqwest::Method::from_bytes(method.as_bytes()) {
            Ok(method) => method,
            Err(_) => return ProbeResult::critical(format!("{head}: invalid method")),
        };
        let client = if spec.tls_skip_verify { &self.http_insecure } else { &self.http };
        let mut request = client.request(method, &url);
        for (name, value) in &spec.headers {
            request = request.header(name, value);
        }
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status();
            // Read what fits; the rest is not needed to judge the check. A body cut off by an
            // error still leaves the status to judge by, as Consul does.
            let mut body = Vec::new();
            let mut body_error = None;
            while body.len() < BODY_READ_MAX {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = BODY_READ_MAX - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        body_error = Some(error_chain(&e.without_url()));
                        break;
                    }
                }
            }
            Ok::<_, reqwest::Error>((status, body, body_error))
        };
        let (status, body, body_error) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return ProbeResult::critical(format!("{head}: {}", timed_out(timeout))),
            Ok(Err(e)) => return ProbeResult::critical(format!("{head}: {}", error_chain(&e.without_url()))),
            Ok(Ok(exchange)) => exchange,
        };
        let body = String::from_utf8_lossy(&body);
        let mut health = match status.as_u16() {
            200..=299 => Health::Passing,
            429 => Health::Warning,
            _ => Health::Critical,
        };
        let mut output = format!("{head}: {status}");
        if health == Health::Passing
            && let Some(expected) = &spec.expect_body
            && !body.contains(expected.as_str())
        {
            health = Health::Critical;
            let _ = write!(output, ", but the body does not contain {expected:?}");
        }
        if let Some(e) = body_error {
            let _ = write!(output, " (reading the body failed: {e})");
        }
        if !body.is_empty() {
            let _ = write!(output, " Output: {body}");
        }
        ProbeResult::new(health, output)
    }

    async fn nats(&self, spec: &CheckSpec, target: &Target<'_>, timeout: Duration) -> ProbeResult {
        let subject = spec.subject.clone().unwrap_or_else(|| ping_subject(target.service, target.instance_id));
        let request = Request::new().timeout(Some(timeout));
        // The client's own timeout answers first; the outer one also bounds the wait to write
        // the request while the connection is down.
        let reply = match tokio::time::timeout(timeout, self.nats.send_request(subject.clone(), request)).await {
            Err(_) => return ProbeResult::critical(format!("NATS request {subject}: {}", timed_out(timeout))),
            Ok(Err(e)) => {
                let what = match e.kind() {
                    RequestErrorKind::NoResponders => format!("no responders on {subject}"),
                    RequestErrorKind::TimedOut => format!("NATS request {subject}: {}", timed_out(timeout)),
                    _ => format!("NATS request {subject}: {}", error_chain(&e)),
                };
                return ProbeResult::critical(what);
            }
            Ok(Ok(reply)) => reply,
        };
        let payload = String::from_utf8_lossy(&reply.payload).into_owned();
        let error = reply.headers.as_ref().and_then(|h| h.get(headers::SERVICE_ERROR)).map(|v| v.as_str().to_string());
        match error {
            Some(error) => {
                let code = reply.headers.as_ref().and_then(|h| h.get(headers::SERVICE_ERROR_CODE));
                let code = code.map(|c| format!(" {}", c.as_str())).unwrap_or_default();
                ProbeResult::critical(format!("NATS request {subject}: service error{code}: {error}"))
            }
            None => ProbeResult::new(Health::Passing, payload),
        }
    }

    async fn exec(&self, spec: &CheckSpec, timeout: Duration) -> ProbeResult {
        if !self.exec_enabled {
            return ProbeResult::critical(format!(
                "exec checks are disabled on this orchestrator; the operator enables them with \
                 {EXEC_ENABLE_FLAG} (or {EXEC_ENABLE_ENV}=true)"
            ));
        }
        let Some((program, args)) = spec.command.split_first() else {
            return ProbeResult::critical("exec check without a command".to_string());
        };
        run_command(program, args, timeout).await
    }
}

fn http_client(accept_invalid_certs: bool, targets: &Arc<CheckTargets>) -> reqwest::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        // Checks target instances directly; a proxy from the environment would test the proxy.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
        .dns_resolver(GuardedResolver(targets.clone()))
        // Thousands of checks a second may target the same host: keep every connection for reuse.
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(concat!("orchestrator-health-check/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(accept_invalid_certs)
        .build()
}

/// Follows a redirect only to the same host and port, at most [`REDIRECTS_MAX`] times.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first().cloned();
    let same = first.as_ref().is_some_and(|first| {
        first.host_str() == attempt.url().host_str()
            && first.port_or_known_default() == attempt.url().port_or_known_default()
    });
    if !same {
        let to = attempt.url().to_string();
        attempt.error(format!("redirect to another host or port refused ({to})"))
    } else if attempt.previous().len() > REDIRECTS_MAX {
        attempt.error("too many redirects")
    } else {
        attempt.follow()
    }
}

/// Resolves check host names with the system resolver, keeping only addresses a check may
/// connect to: a name that resolves to a metadata address is refused when the check runs.
struct GuardedResolver(Arc<CheckTargets>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let targets = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_allowed(&host, 0, &targets).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses of `host`:`port` a check may connect to; an error naming the host when none.
async fn resolve_allowed(host: &str, port: u16, targets: &CheckTargets) -> std::io::Result<Vec<std::net::SocketAddr>> {
    let all: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let allowed: Vec<_> = all.iter().copied().filter(|a| targets.may_connect(a.ip())).collect();
    if allowed.is_empty() && !all.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{host} resolves only to link-local or metadata addresses, which checks may not reach"),
        ));
    }
    Ok(allowed)
}

/// The URL of an http check: `url` when absolute, else a path on the instance's address.
fn http_url(url: Option<&str>, target: &Target<'_>) -> String {
    let url = url.unwrap_or("/");
    if url.starts_with("http://") || url.starts_with("https://") {
        return url.to_string();
    }
    let slash = if url.starts_with('/') { "" } else { "/" };
    let scheme = if target.protocol == "https" { "https" } else { "http" };
    format!("{scheme}://{}:{}{slash}{url}", url_host(target.address), target.port)
}

/// An address as the host part of a URL or of `host:port`: IPv6 addresses go in brackets.
fn url_host(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') { format!("[{address}]") } else { address.to_string() }
}

async fn tcp(spec: &CheckSpec, target: &Target<'_>, timeout: Duration, targets: &CheckTargets) -> ProbeResult {
    let address = spec.address.as_deref().unwrap_or(target.address);
    let port = spec.port.unwrap_or(target.port);
    let head = format!("TCP connect {}:{port}", url_host(address));
    let Ok(port) = u16::try_from(port) else {
        return ProbeResult::critical(format!("{head}: the port is out of range"));
    };
    // A bracketed IPv6 address would not resolve; the brackets only belong in `host:port`.
    let host = address.trim_start_matches('[').trim_end_matches(']');
    let connect = async {
        let addrs = resolve_allowed(host, port, targets).await?;
        TcpStream::connect(addrs.as_slice()).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => ProbeResult::critical(format!("{head}: {}", timed_out(timeout))),
        Ok(Err(e)) => ProbeResult::critical(format!("{head}: {e}")),
        Ok(Ok(_)) => ProbeResult::new(Health::Passing, format!("{head}: success")),
    }
}

/// Runs `program` in its own process group with stdout and stderr on one pipe: exit 0 passing,
/// 1 warning, anything else critical. On timeout the whole group is killed, so a check script
/// cannot leave children behind; its leftover background processes are killed when it ends too.
async fn run_command(program: &str, args: &[String], timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return ProbeResult::critical(format!("could not create a pipe for {program}: {e}")),
    };
    let spawned = {
        // The command holds the write ends; it is dropped at the end of this block, so the pipe
        // reaches end-of-file once the child (and whatever inherited it) is gone.
        let stderr = match writer.try_clone() {
            Ok(stderr) => stderr,
            Err(e) => return ProbeResult::critical(format!("could not create a pipe for {program}: {e}")),
        };
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return ProbeResult::critical(format!("could not start {program}: {e}")),
    };
    // The child leads its group, so the group id is its pid.
    let group = ProcessGroup(child.id());
    let mut output = Vec::new();
    let finished = async {
        let drain = async {
            match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
                Ok(mut receiver) => drain_into(&mut receiver, &mut output).await,
                Err(e) => Err(e),
            }
        };
        tokio::join!(child.wait(), drain)
    };
    let outcome = tokio::time::timeout_at(deadline, finished).await;
    let text = String::from_utf8_lossy(&output).into_owned();
    match outcome {
        Err(_) => {
            group.kill();
            if tokio::time::timeout(REAP_GRACE, child.wait()).await.is_err() {
                tracing::warn!(program, "an exec check's process did not exit after SIGKILL; left to the reaper");
            }
            let mut message = format!("{program} timed out after {}; its process group was killed", human(timeout));
            if !text.is_empty() {
                let _ = write!(message, ". Output: {text}");
            }
            ProbeResult::critical(message)
        }
        Ok((Err(e), _)) => {
            group.kill();
            ProbeResult::critical(format!("waiting for {program} failed: {e}"))
        }
        Ok((Ok(status), drained)) => {
            let mut result = judge_exit(program, status, text);
            if let Err(e) = drained {
                let _ = write!(result.output, " (reading the output failed: {e})");
                result.output = cap_output(result.output);
            }
            result
        }
    }
}

/// Reads until end-of-file, keeping the first [`limits::OUTPUT_MAX`] bytes and discarding the
/// rest, so a chatty child never blocks on a full pipe.
async fn drain_into(receiver: &mut pipe::Receiver, kept: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = receiver.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = limits::OUTPUT_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn judge_exit(program: &str, status: ExitStatus, text: String) -> ProbeResult {
    match (status.code(), status.signal()) {
        (Some(0), _) => ProbeResult::new(Health::Passing, text),
        (Some(1), _) => ProbeResult::new(Health::Warning, text),
        // The program's own words come first; an empty output still says why it failed.
        (Some(code), _) if text.is_empty() => ProbeResult::critical(format!("{program} exited with code {code}")),
        (Some(_), _) => ProbeResult::critical(text),
        (None, Some(signal)) => {
            let mut message = format!("{program} was killed by signal {signal}");
            if !text.is_empty() {
                let _ = write!(message, ". Output: {text}");
            }
            ProbeResult::critical(message)
        }
        (None, None) => ProbeResult::critical(format!("{program} ended without an exit code")),
    }
}

/// The process group of an exec check; killed when the run ends or is dropped, so no process of
/// the check outlives it. After a normal exit the leader is already reaped: while leftovers remain
/// in the group its id stays reserved, and once the group is empty kill(2) finds nothing (ESRCH).
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            crate::process::signal_group(pgid, libc::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", human(timeout))
}

/// An error and its sources on one line: reqwest's and hyper's top-level messages alone do not
/// say what failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their source in their own message.
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::Router;
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::response::Redirect;
    use axum::routing::{any, get};
    use futures::StreamExt as _;

    use super::*;

    const SLOW: Duration = Duration::from_secs(30);
    /// Generous: only proves a run does not wait for a slow target.
    const PROMPT: Duration = Duration::from_secs(10);

    /// A client that never reaches a server, for the checks that do not use NATS.
    async fn offline_nats() -> async_nats::Client {
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect("nats://127.0.0.1:1").await.unwrap()
    }

    async fn prober(exec_enabled: bool) -> Prober {
        Prober::new(offline_nats().await, exec_enabled, Arc::default()).unwrap()
    }

    fn target(port: u16) -> Target<'static> {
        Target { service: "web", instance_id: "web-1", address: "127.0.0.1", port: port.into(), protocol: "http" }
    }

    fn spec(kind: CheckKind, timeout: Duration) -> CheckSpec {
        let mut spec = CheckSpec::new(kind);
        spec.timeout = Some(timeout);
        spec
    }

    fn http_spec(url: &str) -> CheckSpec {
        let mut spec = spec(CheckKind::Http, Duration::from_secs(5));
        spec.url = Some(url.to_string());
        spec
    }

    fn exec_spec(script: &str, timeout: Duration) -> CheckSpec {
        let mut spec = spec(CheckKind::Exec, timeout);
        spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        spec
    }

    /// A port nothing listens on (bound, then released; a small race with other processes is accepted).
    fn closed_port() -> u16 {
        orch_testkit::free_port()
    }

    async fn http_server() -> SocketAddr {
        let app = Router::new()
            .route("/health", get(|| async { "all good" }))
            .route("/busy", get(|| async { (StatusCode::TOO_MANY_REQUESTS, "slow down") }))
            .route("/broken", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database unreachable") }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(SLOW).await;
                    "late"
                }),
            )
            .route("/big", get(|| async { "x".repeat(100_000) }))
            .route(
                "/echo",
                any(|method: Method, headers: HeaderMap| async move {
                    let probe = headers.get("x-probe").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    format!("{method} x-probe={probe}")
                }),
            )
            .route("/moved", get(|| async { Redirect::temporary("/health") }))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[track_caller]
    fn assert_result(result: &ProbeResult, status: Health, contains: &[&str]) {
        assert_eq!(result.status, status, "{result:?}");
        for text in contains {
            assert!(result.output.contains(text), "{text:?} not in {:?}", result.output);
        }
    }

    #[tokio::test]
    async fn http_status_decides_health() {
        let addr = http_server().await;
        let prober = prober(false).await;
        let target = target(addr.port());

        let ok = prober.run(&http_spec("/health"), &target).await;
        assert_eq!(
            ok,
            ProbeResult {
                status: Health::Passing,
                output: format!("HTTP GET http://{addr}/health: 200 OK Output: all good"),
            }
        );
        let busy = prober.run(&http_spec("/busy"), &target).await;
        assert_result(&busy, Health::Warning, &["429 Too Many Requests", "Output: slow down"]);
        let broken = prober.run(&http_spec("/broken"), &target).await;
        assert_result(&broken, Health::Critical, &["500 Internal Server Error", "database unreachable"]);

        // Without a url the check asks for `/` on the instance's address.
        let root = prober.run(&spec(CheckKind::Http, Duration::from_secs(5)), &target).await;
        assert_result(&root, Health::Critical, &[&format!("HTTP GET http://{addr}/: 404 Not Found")]);
    }

    #[tokio::test]
    async fn http_expect_body() {
        let addr = http_server().await;
        let prober = prober(false).await;
        let mut found = http_spec("/health");
        found.expect_body = Some("good".into());
        assert_result(&prober.run(&found, &target(addr.port())).await, Health::Passing, &["200 OK"]);

        let mut missing = http_spec("/health");
        missing.expect_body = Some("ready".into());
        let result = prober.run(&missing, &target(addr.port())).await;
        assert_result(&result, Health::Critical, &["200 OK", "does not contain \"ready\"", "Output: all good"]);
    }

    #[tokio::test]
    async fn http_full_url_method_and_headers() {
        let addr = http_server().await;
        let prober = prober(false).await;
        let mut spec = http_spec(&format!("http://{addr}/echo"));
        spec.method = Some("POST".into());
        spec.headers.insert("X-Probe".into(), "yes".into());
        // The target's port is ignored for an absolute URL.
        let result = prober.run(&spec, &target(closed_port())).await;
        assert_result(
            &result,
            Health::Passing,
            &[&format!("HTTP POST http://{addr}/echo: 200 OK"), "POST x-probe=yes"],
        );
    }

    #[tokio::test]
    async fn http_timeout_and_refused_connection() {
        let addr = http_server().await;
        let prober = prober(false).await;
        let mut slow = http_spec("/slow");
        slow.timeout = Some(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let result = prober.run(&slow, &target(addr.port())).await;
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
        assert_result(&result, Health::Critical, &[&format!("HTTP GET http://{addr}/slow: timed out after 200ms")]);

        let port = closed_port();
        let result = prober.run(&http_spec("/health"), &target(port)).await;
        assert_result(&result, Health::Critical, &[&format!("HTTP GET http://127.0.0.1:{port}/health: ")]);
        assert!(result.output.to_lowercase().contains("refused"), "{}", result.output);
    }

    #[tokio::test]
    async fn http_redirects_body_limit_and_output_cap() {
        let addr = http_server().await;
        let prober = prober(false).await;
        let target = target(addr.port());
        assert_result(&prober.run(&http_spec("/moved"), &target).await, Health::Passing, &["Output: all good"]);
        let looping = prober.run(&http_spec("/loop"), &target).await;
        assert_result(&looping, Health::Critical, &["redirect"]);

        let big = prober.run(&http_spec("/big"), &target).await;
        assert_result(&big, Health::Passing, &["200 OK Output: xxx"]);
        assert_eq!(big.output.len(), limits::OUTPUT_MAX);
    }

    #[tokio::test]
    async fn a_redirect_never_leads_a_check_to_another_host_or_port() {
        let elsewhere = http_server().await;
        let app = Router::new()
            .route("/away", get(move || async move { Redirect::temporary(&format!("http://{elsewhere}/health")) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let result = prober(false).await.run(&http_spec("/away"), &target(addr.port())).await;
        assert_result(&result, Health::Critical, &["redirect to another host or port refused"]);
        assert!(!result.output.contains("all good"), "{result:?}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_metadata_address_is_not_reached() {
        // The guard judges what a name resolves to when the check runs; an address literal goes
        // through the same step, so a metadata address shows it without a DNS server.
        let targets = CheckTargets::default();
        let loopback = resolve_allowed("127.0.0.1", 80, &targets).await.unwrap();
        assert_eq!(loopback.len(), 1, "loopback is allowed");
        let refused = resolve_allowed("169.254.169.254", 80, &targets).await.unwrap_err();
        assert!(refused.to_string().contains("link-local or metadata"), "{refused}");
        let opened = CheckTargets { networks: vec!["169.254.0.0/16".parse().unwrap()], ..CheckTargets::default() };
        assert_eq!(resolve_allowed("169.254.169.254", 80, &opened).await.unwrap().len(), 1);
        let tcp_spec = CheckSpec { address: Some("169.254.169.254".into()), ..spec(CheckKind::Tcp, SLOW) };
        let result = prober(false).await.run(&tcp_spec, &target(80)).await;
        assert_result(&result, Health::Critical, &["link-local or metadata"]);
    }

    #[test]
    fn http_url_forms() {
        let v4 = target(8080);
        assert_eq!(http_url(None, &v4), "http://127.0.0.1:8080/");
        assert_eq!(http_url(Some("/health?full=1"), &v4), "http://127.0.0.1:8080/health?full=1");
        assert_eq!(http_url(Some("https://db.internal/ping"), &v4), "https://db.internal/ping");
        let v6 = Target { address: "::1", ..v4 };
        assert_eq!(http_url(Some("/health"), &v6), "http://[::1]:8080/health");
        let named = Target { address: "web-1.internal", ..v4 };
        assert_eq!(http_url(Some("/health"), &named), "http://web-1.internal:8080/health");
        let tls = Target { protocol: "https", ..v4 };
        assert_eq!(http_url(Some("/health"), &tls), "https://127.0.0.1:8080/health");
    }

    /// An HTTPS server with a self-signed certificate that answers every request with `secure`.
    fn tls_server() -> u16 {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (Ok(stream), Ok(conn)) = (stream, rustls::ServerConnection::new(config.clone())) else { continue };
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure");
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_verifies_certificates_unless_told_not_to() {
        let port = tls_server();
        let prober = prober(false).await;
        let url = format!("https://127.0.0.1:{port}/health");
        let verified = prober.run(&http_spec(&url), &target(port)).await;
        assert_result(&verified, Health::Critical, &[&format!("HTTP GET {url}: ")]);
        assert!(verified.output.to_lowercase().contains("certificate"), "{}", verified.output);

        let mut skip = http_spec(&url);
        skip.tls_skip_verify = true;
        let result = prober.run(&skip, &target(port)).await;
        assert_eq!(
            result,
            ProbeResult { status: Health::Passing, output: format!("HTTP GET {url}: 200 OK Output: secure") }
        );
    }

    #[tokio::test]
    async fn tcp_connects_to_the_target_or_the_given_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let prober = prober(false).await;
        let tcp = spec(CheckKind::Tcp, Duration::from_secs(5));
        let result = prober.run(&tcp, &target(port)).await;
        assert_eq!(
            result,
            ProbeResult { status: Health::Passing, output: format!("TCP connect 127.0.0.1:{port}: success") }
        );

        let mut explicit = tcp.clone();
        explicit.address = Some("127.0.0.1".into());
        explicit.port = Some(port.into());
        let elsewhere = Target { address: "192.0.2.1", ..target(closed_port()) };
        assert_result(&prober.run(&explicit, &elsewhere).await, Health::Passing, &["success"]);

        let closed = closed_port();
        let result = prober.run(&tcp, &target(closed)).await;
        assert_result(&result, Health::Critical, &[&format!("TCP connect 127.0.0.1:{closed}: ")]);
        assert!(result.output.to_lowercase().contains("refused"), "{}", result.output);

        let mut out_of_range = tcp.clone();
        out_of_range.port = Some(70_000);
        assert_result(&prober.run(&out_of_range, &target(port)).await, Health::Critical, &["out of range"]);
    }

    #[tokio::test]
    async fn nats_request_reply() {
        let server = orch_testkit::NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let prober = Prober::new(client.clone(), false, Arc::default()).unwrap();
        let target = target(closed_port());

        // An ADR-32 responder on the default subject.
        let mut pings = client.subscribe(ping_subject("web", "web-1")).await.unwrap();
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = pings.next().await {
                let reply = msg.reply.unwrap();
                responder
                    .publish(reply, r#"{"type":"io.nats.micro.v1.ping_response","name":"web"}"#.into())
                    .await
                    .unwrap();
            }
        });
        // A responder that reports an error.
        let mut failing = client.subscribe("web.health.db").await.unwrap();
        let responder = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = failing.next().await {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(headers::SERVICE_ERROR, "database unreachable");
                headers.insert(headers::SERVICE_ERROR_CODE, "503");
                responder.publish_with_headers(msg.reply.unwrap(), headers, "".into()).await.unwrap();
            }
        });
        // A subscriber that never answers.
        let _silent = client.subscribe("web.health.silent").await.unwrap();
        client.flush().await.unwrap();

        let nats = spec(CheckKind::Nats, Duration::from_secs(5));
        let result = prober.run(&nats, &target).await;
        assert_eq!(
            result,
            ProbeResult {
                status: Health::Passing,
                output: r#"{"type":"io.nats.micro.v1.ping_response","name":"web"}"#.to_string()
            }
        );

        let mut error = nats.clone();
        error.subject = Some("web.health.db".into());
        let result = prober.run(&error, &target).await;
        assert_result(&result, Health::Critical, &["web.health.db", "503", "database unreachable"]);

        let mut nobody = nats.clone();
        nobody.subject = Some("web.health.nobody".into());
        let result = prober.run(&nobody, &target).await;
        assert_eq!(result, ProbeResult::critical("no responders on web.health.nobody".into()));

        let mut silent = spec(CheckKind::Nats, Duration::from_millis(200));
        silent.subject = Some("web.health.silent".into());
        let started = std::time::Instant::now();
        let result = prober.run(&silent, &target).await;
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
        assert_result(&result, Health::Critical, &["web.health.silent", "timed out after 200ms"]);
    }

    #[tokio::test]
    async fn exec_exit_codes() {
        let prober = prober(true).await;
        let t = target(0);
        let timeout = Duration::from_secs(10);
        let ok = prober.run(&exec_spec("echo ready; exit 0", timeout), &t).await;
        assert_eq!(ok, ProbeResult { status: Health::Passing, output: "ready\n".into() });
        let warn = prober.run(&exec_spec("echo 'disk 85% full'; exit 1", timeout), &t).await;
        assert_eq!(warn, ProbeResult { status: Health::Warning, output: "disk 85% full\n".into() });
        let crit = prober.run(&exec_spec("echo 'disk full' >&2; exit 3", timeout), &t).await;
        assert_eq!(crit, ProbeResult { status: Health::Critical, output: "disk full\n".into() });
        let silent = prober.run(&exec_spec("exit 3", timeout), &t).await;
        assert_eq!(silent, ProbeResult::critical("/bin/sh exited with code 3".into()));
        let killed = prober.run(&exec_spec("echo dying; kill -TERM $$", timeout), &t).await;
        assert_result(&killed, Health::Critical, &["/bin/sh was killed by signal 15", "Output: dying"]);
    }

    #[tokio::test]
    async fn exec_output_is_merged_and_capped() {
        let prober = prober(true).await;
        let t = target(0);
        let timeout = Duration::from_secs(10);
        let merged = prober.run(&exec_spec("echo out; echo err >&2; echo out again", timeout), &t).await;
        assert_eq!(merged, ProbeResult { status: Health::Passing, output: "out\nerr\nout again\n".into() });

        // Far more than a pipe holds: the child finishes only if the rest is read and discarded.
        let chatty = prober.run(&exec_spec("head -c 1000000 /dev/zero | tr '\\0' x; exit 1", timeout), &t).await;
        assert_eq!(chatty, ProbeResult { status: Health::Warning, output: "x".repeat(limits::OUTPUT_MAX) });
    }

    /// Live (not zombie) processes in a process group, from /proc.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // Fields after the parenthesised command: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                members.push(stat);
            }
        }
        members
    }

    #[track_caller]
    fn assert_group_gone(pgid: i32) {
        let deadline = std::time::Instant::now() + PROMPT;
        while !live_members(pgid).is_empty() {
            assert!(std::time::Instant::now() < deadline, "still running: {:?}", live_members(pgid));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_process_group() {
        let prober = prober(true).await;
        // The shell leads the group and prints its id; `sleep` runs in the same group.
        let spec = exec_spec("echo $$; sleep 30; echo never", Duration::from_millis(300));
        let started = std::time::Instant::now();
        let result = prober.run(&spec, &target(0)).await;
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
        assert_result(&result, Health::Critical, &["/bin/sh timed out after 300ms", "process group was killed"]);
        assert!(!result.output.contains("never"), "{}", result.output);
        let pgid: i32 = result.output.rsplit("Output: ").next().unwrap().trim().parse().unwrap();
        // The shell was our child: reaped, not a zombie.
        assert!(!std::path::Path::new(&format!("/proc/{pgid}")).exists(), "the shell was not reaped");
        assert_group_gone(pgid);
    }

    #[tokio::test]
    async fn exec_leftover_background_processes_are_killed() {
        let prober = prober(true).await;
        let spec = exec_spec("sleep 30 >/dev/null 2>&1 & echo $$", Duration::from_secs(10));
        let result = prober.run(&spec, &target(0)).await;
        assert_eq!(result.status, Health::Passing, "{result:?}");
        assert_group_gone(result.output.trim().parse().unwrap());
    }

    #[tokio::test]
    async fn exec_refusals() {
        let t = target(0);
        let disabled = prober(false).await.run(&exec_spec("exit 0", Duration::from_secs(10)), &t).await;
        assert_result(&disabled, Health::Critical, &["disabled", "--health-exec-enabled", "ORCH_HEALTH_EXEC_ENABLED"]);

        let mut missing = spec(CheckKind::Exec, Duration::from_secs(10));
        missing.command = vec!["/nonexistent/check".into()];
        let result = prober(true).await.run(&missing, &t).await;
        assert_result(&result, Health::Critical, &["could not start /nonexistent/check", "No such file"]);
    }

    #[tokio::test]
    async fn passive_kinds_are_not_probed() {
        let prober = prober(true).await;
        for kind in [CheckKind::Ttl, CheckKind::Lease] {
            let result = prober.run(&CheckSpec::new(kind), &target(0)).await;
            assert_result(&result, Health::Critical, &[kind.as_str(), "not probed"]);
        }
    }
}
