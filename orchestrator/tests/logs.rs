//! Services' output across nodes, against a real nats-server (locked down with the shipped users),
//! PostgreSQL, a standalone agent as a second node and real processes: a replicated service's
//! output is searched (time range, stream, text, regular expression, bounded) and followed over
//! HTTP and NATS, merged across its replicas on both nodes in time order; retention set in the
//! manifest reaches the shim.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Stack;
use common::http::{assert_error, call};
use common::lifecycle::*;
use futures::StreamExt;
use orch_testkit::eventually;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tower::ServiceExt;

/// A standalone agent on `node`, as its shipped NATS user.
struct Agent(std::process::Child);

impl Agent {
    fn start(stack: &Stack, node: &str, logs: &orch_testkit::TempDir) -> Agent {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", node, "--nats-url", &stack.nats.url(&format!("agent-{node}")), "--log", "warn"])
            .args(["--node-heartbeat", "100ms", "--node-cpu", "4000", "--node-memory", "4096"])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two replicas that each print a numbered line on stdout and on stderr every 50 ms.
const TICKER: &str = r#"
[services.ticker]
command = "/bin/sh"
args = ["-c", "i=0; while true; do i=$((i+1)); echo \"tick $i of $ORCH_REPLICA_NAME\"; echo \"oops $i\" >&2; sleep 0.05; done"]
count = 2
resources = { cpu = 100, memory = 16 }
grace_period = "2s"
logs = { max_bytes = "1MiB", keep = 2, max_age = "1h" }
"#;

async fn nodes_ready(stack: &Stack, names: &[&str]) {
    eventually(Duration::from_secs(30), "the agents' nodes are ready", || async {
        let (_, body) = call(stack, "GET", "/api/v1/nodes", None).await;
        let ready: Vec<&str> = body["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "ready")
            .filter_map(|n| n["name"].as_str())
            .collect();
        names.iter().all(|n| ready.contains(n)).then_some(())
    })
    .await;
}

fn units_of(lines: &Value) -> Vec<(String, String)> {
    let mut units: Vec<(String, String)> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["unit"].as_str().unwrap().to_string(), l["node"].as_str().unwrap().to_string()))
        .collect();
    units.sort();
    units.dedup();
    units
}

#[tokio::test]
async fn follow_and_search_logs_across_two_nodes() {
    let stack = Stack::start_with(|s| {
        s.agent.as_mut().unwrap().node_report.interval = Duration::from_millis(100);
    })
    .await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let logs2 = orch_testkit::TempDir::new("agent-n2");
    let _left2 = common::KillServicesOf(logs2.path().to_path_buf());
    let _n2 = Agent::start(&stack, "n2", &logs2);
    nodes_ready(&stack, &["local", "n2"]).await;

    apply(&stack, TICKER).await;
    let view = wait_for(&stack, &[("ticker-0", "ready"), ("ticker-1", "ready")]).await;
    let mut nodes = [service(&view, "ticker-0")["node"].clone(), service(&view, "ticker-1")["node"].clone()];
    nodes.sort_by_key(|n| n.to_string());
    assert_eq!(nodes, [Value::from("local"), Value::from("n2")], "spread over both nodes: {view}");
    // The retention of the manifest reached the shims.
    let shims = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let shims = String::from_utf8_lossy(&shims.stdout);
    assert!(
        shims.lines().any(|l| l.contains("--service ticker-1")
            && l.contains("--log-max-bytes 1048576 --log-keep 2 --log-max-age 3600")),
        "{shims}"
    );

    // Follow over HTTP: subscribed once the answer's head is there; lines of both replicas come.
    let request = Request::builder()
        .uri("/api/v1/stack/services/ticker/logs/follow?stream=stdout&q=tick")
        .body(Body::empty())
        .unwrap();
    let response = stack.running().router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body().into_data_stream();
    let mut followed: Vec<Value> = Vec::new();
    let mut pending = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while units_of(&Value::from(followed.clone())).len() < 2 {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                followed.push(serde_json::from_slice(&line).unwrap());
            }
        }
    })
    .await
    .expect("lines of both replicas followed");
    assert!(
        followed.iter().all(|l| l["stream"] == "stdout" && l["text"].as_str().unwrap().starts_with("tick ")),
        "{followed:?}"
    );
    assert_eq!(
        units_of(&Value::from(followed.clone())),
        [
            ("ticker-0".to_string(), service(&view, "ticker-0")["node"].as_str().unwrap().to_string()),
            ("ticker-1".to_string(), service(&view, "ticker-1")["node"].as_str().unwrap().to_string())
        ]
    );
    drop(body);

    // Search: merged from both nodes in time order, each line naming its unit and node.
    let found = eventually(Duration::from_secs(30), "lines of both replicas found", || async {
        let (status, found) = call(&stack, "GET", "/api/v1/stack/services/ticker/logs?limit=200", None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        (units_of(&found["lines"]).len() == 2).then_some(found)
    })
    .await;
    let lines = found["lines"].as_array().unwrap();
    let times: Vec<&str> = lines.iter().map(|l| l["time"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "in time order: {times:?}");
    assert_eq!(found["units"].as_array().unwrap().len(), 2, "{found}");
    assert!(lines.iter().any(|l| l["stream"] == "stderr"));

    // Filters: stream, text, regular expression, time range.
    let (_, errors) = call(&stack, "GET", "/api/v1/stack/services/ticker/logs?stream=stderr&limit=20", None).await;
    let errors = errors["lines"].as_array().unwrap();
    assert!(
        !errors.is_empty()
            && errors.iter().all(|l| l["stream"] == "stderr" && l["text"].as_str().unwrap().starts_with("oops"))
    );
    let (_, one) = call(&stack, "GET", "/api/v1/stack/services/ticker/logs?q=of%20ticker-1&limit=5", None).await;
    let one = one["lines"].as_array().unwrap();
    assert!(!one.is_empty() && one.iter().all(|l| l["unit"] == "ticker-1"), "{one:?}");
    let (_, re) = call(
        &stack,
        "GET",
        "/api/v1/stack/services/ticker/logs?regex=%5Etick%20%5B0-9%5D%2B%20of%20ticker-0%24&limit=5",
        None,
    )
    .await;
    let re = re["lines"].as_array().unwrap();
    assert!(!re.is_empty() && re.iter().all(|l| l["unit"] == "ticker-0" && l["stream"] == "stdout"), "{re:?}");
    let (since, until) = (&times[times.len() / 4], &times[times.len() * 3 / 4]);
    let uri = format!("/api/v1/stack/services/ticker/logs?since={since}&until={until}&limit=10000");
    let (_, ranged) = call(&stack, "GET", &uri, None).await;
    let ranged = ranged["lines"].as_array().unwrap();
    let (since, until): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        (since.parse().unwrap(), until.parse().unwrap());
    assert!(!ranged.is_empty());
    assert!(ranged.iter().all(|l| {
        let t: chrono::DateTime<chrono::Utc> = l["time"].as_str().unwrap().parse().unwrap();
        t >= since && t < until
    }));
    // A bounded scan says it was cut.
    let (_, bounded) =
        call(&stack, "GET", "/api/v1/stack/services/ticker/logs?q=no%20such%20text&scan_bytes=1", None).await;
    assert_eq!(bounded["truncated"], true, "{bounded}");
    assert!(bounded["lines"].as_array().unwrap().is_empty());

    // The same over NATS.
    eventually(Duration::from_secs(30), "ten lines on stderr", || async {
        let (code, reply) =
            stack.request_on("lifecycle", "logs", r#"{"service": "ticker", "limit": 10, "stream": "stderr"}"#).await;
        assert_eq!(code, None, "{reply}");
        let lines = reply["lines"].as_array().unwrap();
        assert!(lines.len() <= 10 && lines.iter().all(|l| l["stream"] == "stderr"), "{reply}");
        (lines.len() == 10).then_some(())
    })
    .await;
    let (code, reply) = stack.request_on("lifecycle", "logs", r#"{"service": "ticker", "regex": "("}"#).await;
    assert_eq!(code.as_deref(), Some("400"), "{reply}");
    assert_eq!(reply["error"]["field"], "regex", "{reply}");

    // Following over NATS: each unit's subject, from the agent of its node.
    let mut sub = stack.client.subscribe(stack.subjects.logs_of("ticker-1")).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), sub.next()).await.expect("a batch").unwrap();
    let batch: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(batch["service"], "ticker-1");
    assert_eq!(message.subject.as_str(), format!("orch.log.{}.ticker-1", batch["node"].as_str().unwrap()));

    // The command line: the last lines, then followed, each `<time> <unit>@<node> <stream> <text>`.
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["logs", "ticker", "-n", "6", "--stream", "stderr", "--api-url", &api])
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(printed.lines().count(), 6, "{printed}");
    assert!(printed.lines().all(|l| l.contains(" stderr oops ") && l.contains("ticker-")), "{printed}");
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["logs", "ticker", "-f", "-n", "1", "--grep", "tick", "--api-url", &api])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut units = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while units.len() < 2 {
            let line = out.next_line().await.unwrap().expect("the command follows");
            let unit = line.split(' ').nth(1).unwrap().to_string();
            assert!(line.contains(" stdout tick "), "{line}");
            units.insert(unit);
        }
    })
    .await
    .expect("lines of both replicas followed by the command");
    let want: std::collections::BTreeSet<String> = ["ticker-0", "ticker-1"]
        .iter()
        .map(|u| format!("{u}@{}", service(&view, u)["node"].as_str().unwrap()))
        .collect();
    assert_eq!(units, want);
    follow.kill().await.unwrap();

    // Bad parameters are named.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("stream=stdin", "stream"),
        ("limit=0", "limit"),
        ("q=a&regex=b", "regex"),
        ("regex=(", "regex"),
        ("scan_bytes=-1", "scan_bytes"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("colour=red", "colour"),
    ] {
        let reply = call(&stack, "GET", &format!("/api/v1/stack/services/ticker/logs?{query}"), None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some(field));
    }
    let reply = call(&stack, "GET", "/api/v1/stack/services/ticker/logs/follow?limit=5", None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("limit"));
    let reply = call(&stack, "GET", "/api/v1/stack/services/nobody/logs/follow", None).await;
    assert_eq!(reply.0, StatusCode::NOT_FOUND, "{:?}", reply.1);

    call(&stack, "DELETE", "/api/v1/stack", None).await;
}
