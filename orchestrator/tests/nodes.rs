//! The node inventory against real servers and agents: the embedded agent and a standalone one
//! (its own process) report their node's capacity, reservation and labels; the inventory shows
//! them over HTTP and NATS; a node whose agent is killed goes `down` and comes back `up` when a
//! new agent reports, each step an event.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::Stack;
use common::http::{assert_error, call};
use orch_testkit::eventually;
use serde_json::{Value, json};

struct Agent(std::process::Child);

impl Agent {
    fn start(stack: &Stack, logs: &orch_testkit::TempDir) -> Agent {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", "n2", "--nats-url", &stack.nats.url("agent-n2"), "--log", "warn"])
            .args(["--node-heartbeat", "100ms", "--label", "zone=b", "--label", "disk=ssd"])
            .args(["--node-cpu", "1500", "--node-memory", "2048", "--reserve-cpu", "0", "--reserve-memory", "128"])
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

async fn node(stack: &Stack, name: &str) -> Value {
    let (status, body) = call(stack, "GET", &format!("/api/v1/nodes/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn node_events(events: &[Value], kind: &str, node: &str) -> usize {
    events.iter().filter(|e| e["type"] == format!("io.orch.resource.{kind}.v1") && e["data"]["node"] == node).count()
}

#[tokio::test]
async fn nodes_report_capacity_and_labels_and_go_down_and_up_with_their_agent() {
    let stack = Stack::start_with(|s| {
        s.nodes.down_after = Duration::from_secs(2);
        let agent = s.agent.as_mut().unwrap();
        agent.node_report.interval = Duration::from_millis(100);
        agent.node_report.labels = [("zone".to_string(), "a".to_string())].into();
    })
    .await;
    let logs = orch_testkit::TempDir::new("agent-n2");
    let _leftovers = common::KillServicesOf(logs.path().to_path_buf());
    let mut agent = Agent::start(&stack, &logs);

    let list = eventually(Duration::from_secs(30), "both nodes are in the inventory", || async {
        let (_, body) = call(&stack, "GET", "/api/v1/nodes", None).await;
        let ready = body["nodes"].as_array()?.iter().filter(|n| n["status"] == "ready").count();
        (ready == 2).then_some(body)
    })
    .await;
    let names: Vec<&str> = list["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["local", "n2"], "by name");
    let n2 = node(&stack, "n2").await;
    assert_eq!(n2["capacity"], json!({"cpu": 1500, "memory": 2048}), "{n2}");
    assert_eq!(n2["reserved"], json!({"cpu": 0, "memory": 128}));
    assert_eq!(n2["allocatable"], json!({"cpu": 1500, "memory": 1920}));
    assert_eq!(n2["free"], n2["allocatable"], "nothing runs there");
    assert_eq!(n2["labels"], json!({"zone": "b", "disk": "ssd"}));
    assert!(n2["enforcement"].is_string(), "{n2}");
    let local = node(&stack, "local").await;
    assert_eq!(local["labels"], json!({"zone": "a"}));
    assert!(local["capacity"]["cpu"].as_u64().unwrap() >= 1000, "measured: {local}");

    // The same over NATS, and a clear error for a node that never reported.
    let (code, body) = stack.request_on("resource", "nodes", "").await;
    assert_eq!(code, None, "{body}");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 2);
    let (code, body) = stack.request_on("resource", "node", r#"{"name": "n2"}"#).await;
    assert_eq!(code, None, "{body}");
    assert_eq!(body["labels"]["disk"], "ssd");
    let (code, body) = stack.request_on("resource", "node", r#"{"name": "ghost"}"#).await;
    assert!(code.is_some(), "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert_eq!(body["error"]["field"], "name");
    let (code, body) = stack.request_on("resource", "node", r#"{"name": "Bad Name"}"#).await;
    assert!(code.is_some(), "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");
    assert_error(
        &call(&stack, "GET", "/api/v1/nodes/ghost", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("name"),
    );

    stack.wait_events(1, "n2 joined", |e| node_events(std::slice::from_ref(e), "node_joined", "n2") == 1).await;

    // Killed, the agent stops reporting: the node goes down, once.
    let downs_before = node_events(&stack.events().await, "node_down", "n2");
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let events = stack
        .wait_events(downs_before + 1, "n2 down", |e| node_events(std::slice::from_ref(e), "node_down", "n2") == 1)
        .await;
    let down = events.last().unwrap();
    assert!(down["data"]["reason"].as_str().unwrap().contains("silent for"), "{down}");
    assert_eq!(down["data"]["status"], "down");
    assert_eq!(down["subject"], "n2");
    assert_eq!(node(&stack, "n2").await["status"], "down");

    // A new agent reports: the node is up again.
    let ups_before = node_events(&stack.events().await, "node_up", "n2");
    let _agent = Agent::start(&stack, &logs);
    stack.wait_events(ups_before + 1, "n2 up", |e| node_events(std::slice::from_ref(e), "node_up", "n2") == 1).await;
    eventually(Duration::from_secs(10), "n2 shows ready", || async {
        (node(&stack, "n2").await["status"] == "ready").then_some(())
    })
    .await;
    // Stored, so a replica that takes over knows it.
    assert_eq!(stack.count("SELECT count(*) FROM nodes WHERE status = 'ready'").await, 2);
}
