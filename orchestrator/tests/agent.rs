//! A standalone node agent (`orchestrator agent --node n2`, its own process, connected only to a
//! real nats-server) runs real processes on request: start, status, logs, stop with its signal,
//! exit reports, clear errors, and nothing left running after the agent is killed with SIGKILL.

use std::time::{Duration, Instant};

use futures::StreamExt;
use orch_protocol::Subjects;
use orch_testkit::{ShippedUsers, TempDir, eventually, process_alive as alive};
use serde_json::{Value, json};

struct Agent {
    child: std::process::Child,
    _logs: TempDir,
}

impl Agent {
    /// The agent of `node`, as its shipped user `agent-<node>`.
    fn start(nats: &ShippedUsers, node: &str) -> Agent {
        let logs = TempDir::new("agent");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", node, "--nats-url", &nats.url(&format!("agent-{node}")), "--log", "warn"])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts");
        Agent { child, _logs: logs }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
async fn standalone_agent_runs_processes_over_nats_and_leaves_nothing_behind() {
    // The orchestrator's user is the one that may send an agent requests (docs/protocol.md §14.2).
    let nats = ShippedUsers::start(&["n2"]);
    let client = nats.connect("orchestrator").await;
    let mut exits = client.subscribe("orch.agent.n2.exited").await.unwrap();
    let mut agent = Agent::start(&nats, "n2");
    eventually(Duration::from_secs(30), "the agent answers", || async {
        let subject = Subjects::default().agent("n2", "status");
        client.request(subject, "{}".into()).await.ok()
    })
    .await;

    // Start, status, logs.
    let (code, started) = request(&client, "start", sh("web", "echo serving on $PORT; sleep 1000 & sleep 1000")).await;
    assert_eq!(code, None, "{started}");
    let pid = started["pid"].as_u64().unwrap() as u32;
    let (_, status) = request(&client, "status", json!({})).await;
    assert_eq!(status["running"], json!([{"service": "web", "pid": pid}]));
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

    // SIGKILL the agent: the service and what it started in the background die with it.
    let (_, started) = request(&client, "start", sh("orphans", "sleep 1000 & echo $!; sleep 1000")).await;
    let shim = started["pid"].as_u64().unwrap() as u32;
    let logs = eventually(Duration::from_secs(10), "the background pid", || async {
        let (_, logs) = request(&client, "logs", json!({"service": "orphans"})).await;
        logs["lines"].as_array().unwrap().first().cloned()
    })
    .await;
    let background: u32 = logs.as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let group: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().nth(2).map(String::from)))
                .flatten()
                .is_some_and(|pgid| pgid == shim.to_string())
        })
        .collect();
    assert!(group.len() >= 3 && group.contains(&background), "shim, shell and sleeps: {group:?}");
    assert!(alive(background));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while group.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<&u32> = group.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "processes outlived the agent: {left:?}");
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
