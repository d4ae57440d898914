//! A standalone node agent (`orchestrator agent --node n2`, its own process, connected only to a
//! real nats-server) runs real processes on request: start, status, logs, stop with its signal,
//! exit reports, clear errors; its services outlive it (SIGKILL) and the next agent adopts them,
//! and `--cleanup` leaves nothing running.

use std::time::{Duration, Instant};

use futures::StreamExt;
use orch_protocol::Subjects;
use orch_testkit::{ShippedUsers, TempDir, eventually, process_alive as alive};
use serde_json::{Value, json};

struct Agent {
    child: std::process::Child,
}

impl Agent {
    /// The agent of `node`, as its shipped user `agent-<node>`, keeping its services' logs and
    /// records in `logs`.
    fn start(nats: &ShippedUsers, node: &str, logs: &TempDir) -> Agent {
        Agent::start_binary(env!("CARGO_BIN_EXE_orchestrator").as_ref(), nats, node, logs)
    }

    /// [`Agent::start`] from another `orchestrator` binary (an upgrade replaces it).
    fn start_binary(binary: &std::path::Path, nats: &ShippedUsers, node: &str, logs: &TempDir) -> Agent {
        let child = std::process::Command::new(binary)
            .args(["agent", "--node", node, "--nats-url", &nats.url(&format!("agent-{node}")), "--log", "warn"])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts");
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an agent on `logs` left running goes when the test ends.
struct Leftovers<'a>(&'a TempDir);

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        orchestrator::agent::supervisor::kill_all(&self.0.path().join("shims"));
    }
}

async fn request(client: &async_nats::Client, verb: &str, body: Value) -> (Option<String>, Value) {
    let subject = Subjects::default().agent("n2", verb);
    let reply = client.request(subject, body.to_string().into()).await.expect("the agent answers");
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(orch_protocol::headers::SERVICE_ERROR_CODE))
        .map(|v| v.as_str().to_string());
    (code, serde_json::from_slice(&reply.payload).expect("JSON reply"))
}

fn sh(service: &str, script: &str) -> Value {
    json!({"service": service, "command": "/bin/sh", "args": ["-c", script], "grace_period": "2s"})
}

#[tokio::test]
async fn standalone_agent_runs_processes_over_nats_and_its_services_outlive_it() {
    // The orchestrator's user is the one that may send an agent requests (docs/protocol.md §14.2).
    let nats = ShippedUsers::start(&["n2"]);
    let client = nats.connect("orchestrator").await;
    let mut exits = client.subscribe("orch.agent.n2.exited").await.unwrap();
    let dir = TempDir::new("agent");
    let _leftovers = Leftovers(&dir);
    let mut agent = Agent::start(&nats, "n2", &dir);
    eventually(Duration::from_secs(30), "the agent answers", || async {
        let subject = Subjects::default().agent("n2", "status");
        client.request(subject, "{}".into()).await.ok()
    })
    .await;

    // Start, status, logs.
    let web = sh("web", "echo serving on $PORT; sleep 1000 & sleep 1000");
    let fingerprint = serde_json::from_value::<orch_protocol::agent::StartRequest>(web.clone()).unwrap().fingerprint();
    let (code, started) = request(&client, "start", web).await;
    assert_eq!(code, None, "{started}");
    let pid = started["pid"].as_u64().unwrap() as u32;
    let (_, status) = request(&client, "status", json!({})).await;
    // With what it was started from, for an orchestrator that finds it running later.
    assert_eq!(status["running"], json!([{"service": "web", "pid": pid, "ready": false, "fingerprint": fingerprint}]));
    let logs = eventually(Duration::from_secs(10), "output captured", || async {
        let (_, logs) = request(&client, "logs", json!({"service": "web", "lines": 10})).await;
        (!logs["lines"].as_array().unwrap().is_empty()).then_some(logs)
    })
    .await;
    assert!(logs["lines"][0].as_str().unwrap().contains("stdout serving on"), "{logs}");

    // Errors are clear replies.
    let (code, reply) = request(&client, "start", sh("web", "true")).await;
    assert_eq!((code.as_deref(), &reply["error"]["code"]), (Some("409"), &json!("conflict")), "{reply}");
    let (code, reply) = request(&client, "stop", json!({"service": "ghost"})).await;
    assert_eq!((code.as_deref(), &reply["error"]["field"]), (Some("404"), &json!("service")), "{reply}");
    let (code, reply) = request(&client, "start", json!({"service": "Bad Name", "command": "/bin/true"})).await;
    assert_eq!((code.as_deref(), &reply["error"]["field"]), (Some("400"), &json!("service")), "{reply}");
    let (code, reply) = request(&client, "start", json!({"service": "x", "command": "/nonexistent"})).await;
    assert_eq!(code.as_deref(), Some("400"), "{reply}");

    // Stop: the signal reaches the service; its exit is reported as requested.
    let (code, stopped) =
        request(&client, "stop", json!({"service": "web", "signal": "SIGTERM", "grace_period": "2s"})).await;
    assert_eq!(code, None, "{stopped}");
    assert_eq!(stopped["exit"], json!({"by": "signal", "signal": 15}));
    let report: Value = serde_json::from_slice(&exits.next().await.unwrap().payload).unwrap();
    assert_eq!((&report["service"], &report["stopped"]), (&json!("web"), &json!(true)));

    // A crash is reported as one.
    request(&client, "start", sh("crashy", "exit 3")).await;
    let report: Value = serde_json::from_slice(&exits.next().await.unwrap().payload).unwrap();
    assert_eq!(
        (&report["service"], &report["exit"], &report["stopped"]),
        (&json!("crashy"), &json!({"by": "code", "code": 3}), &json!(false))
    );

    // SIGKILL the agent: the service and what it started in the background keep running, and
    // a crash meanwhile is kept for the next agent.
    let (_, started) = request(&client, "start", sh("orphans", "sleep 1000 & echo $!; sleep 1000")).await;
    let pid = started["pid"].as_u64().unwrap() as u32;
    let logs_of = |service: &'static str| {
        let client = client.clone();
        async move {
            let (_, logs) = request(&client, "logs", json!({"service": service})).await;
            logs["lines"].as_array().unwrap().clone()
        }
    };
    let first = eventually(Duration::from_secs(10), "the background pid", || async {
        logs_of("orphans").await.first().cloned()
    })
    .await;
    let background: u32 = first.as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let gate = dir.path().join("crash-now");
    let crash = format!("while [ ! -e {} ]; do sleep 0.05; done; echo crashing; exit 9", gate.display());
    let (_, started) = request(&client, "start", sh("crashes-alone", &crash)).await;
    let crashing = started["pid"].as_u64().unwrap() as u32;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    std::fs::write(&gate, "").unwrap();
    eventually(Duration::from_secs(10), "the crash while no agent runs", || async { (!alive(crashing)).then_some(()) })
        .await;
    assert!(alive(pid) && alive(background), "the service outlived its agent");

    // The next agent, from a new binary (an upgrade: another file, without `orch-shim` beside
    // it), adopts it (same pid), reports the crash with its real status, and serves its log,
    // which the shim kept writing.
    let upgraded = dir.path().join("orchestrator-upgraded");
    std::fs::copy(env!("CARGO_BIN_EXE_orchestrator"), &upgraded).unwrap();
    let _agent = Agent::start_binary(&upgraded, &nats, "n2", &dir);
    let report: Value = serde_json::from_slice(&exits.next().await.unwrap().payload).unwrap();
    assert_eq!(
        (&report["service"], &report["pid"], &report["exit"], &report["stopped"]),
        (&json!("crashes-alone"), &json!(crashing), &json!({"by": "code", "code": 9}), &json!(false))
    );
    let (_, status) = request(&client, "status", json!({})).await;
    // What it was started from survives the upgrade: an orchestrator can still compare it.
    let orphans = sh("orphans", "sleep 1000 & echo $!; sleep 1000");
    let fingerprint = serde_json::from_value::<orch_protocol::agent::StartRequest>(orphans).unwrap().fingerprint();
    assert_eq!(
        status["running"],
        json!([{"service": "orphans", "pid": pid, "ready": false, "fingerprint": fingerprint}])
    );
    assert!(logs_of("crashes-alone").await.iter().any(|l| l.as_str().unwrap().ends_with("stdout crashing")));
    // What the upgraded agent starts runs under its own binary's shim (`orchestrator shim`).
    let (code, started) = request(&client, "start", sh("after-upgrade", "sleep 1000")).await;
    assert_eq!(code, None, "{started}");

    // `orchestrator agent --cleanup` stops everything of the node: nothing left.
    drop(_agent);
    let cleanup = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["agent", "--node", "n2", "--log", "warn", "--cleanup", "--log-dir"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(cleanup.success());
    let after_upgrade = started["pid"].as_u64().unwrap() as u32;
    assert!(!alive(pid) && !alive(background) && !alive(after_upgrade), "--cleanup left processes running");
    let records: Vec<_> = std::fs::read_dir(dir.path().join("shims")).unwrap().flatten().collect();
    assert!(records.is_empty(), "--cleanup left records: {records:?}");
}

/// An agent that cannot reach NATS still stops on SIGTERM: it used to wait for NATS first. The
/// signal is sent once the agent says it is connecting, which it says after its signal handlers
/// are installed.
#[test]
fn an_agent_that_cannot_reach_nats_stops_on_sigterm() {
    use std::io::BufRead;
    let logs = TempDir::new("agent-unreachable");
    let nowhere = format!("nats://127.0.0.1:{}", orch_testkit::free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["agent", "--node", "lonely", "--nats-url", &nowhere, "--log", "info", "--log-format", "json"])
        .arg("--log-dir")
        .arg(logs.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the agent starts");
    // The log is on stderr.
    let output = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = output.lines();
    lines
        .by_ref()
        .map(|line| line.unwrap())
        .find(|line| line.contains("agent connecting to NATS"))
        .expect("the agent says it is connecting");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Bounded so that a regression fails here instead of hanging the suite.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the agent did not stop within a minute of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map(|line| line.unwrap()).collect();
    assert!(rest.iter().any(|l| l.contains("agent stopped before NATS answered")), "{rest:?}");
}
