//! Node loss (`make bench PARTS=node_loss`): three standalone agents (each its own process, on
//! node names of this one machine), 60 replicas of a service spread over them, then one agent
//! SIGKILLed. Measured from the kill: until the orchestrator marks the node down (its agent's
//! silence passing `--node-down-after`), and until every replica that ran there is ready on
//! another node. Real nats-server, a private PostgreSQL, the orchestrator as a release binary.
//!
//! The agents report every 500 ms and a node is down after 2 s of silence (the defaults are 2 s
//! and 10 s): the figure is the detection time chosen plus the reaction, printed apart.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use orch_client::stack::StackClient;
use orch_testkit::TempDir;
use serde_json::json;

use common::{Bench, write_json};

const SLEEPER: &str = env!("CARGO_BIN_EXE_orch-sleeper");
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const REPLICAS: usize = 60;
const DOWN_AFTER: &str = "2s";
const HEARTBEAT: &str = "500ms";
const POLL: Duration = Duration::from_millis(20);

struct Agent {
    child: std::process::Child,
    logs: TempDir,
}

impl Agent {
    fn start(b: &Bench, node: &str) -> Agent {
        let logs = TempDir::new(&format!("bench-agent-{node}"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", node, "--nats-url", &b.user_url(&format!("agent-{node}")), "--log", "warn"])
            .args([
                "--node-heartbeat",
                HEARTBEAT,
                "--node-cpu",
                "4000",
                "--node-memory",
                "8192",
                "--label",
                "pool=bench",
            ])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts");
        Agent { child, logs }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        orchestrator::agent::supervisor::kill_all(&self.logs.path().join("shims"));
    }
}

/// Each replica's (node, state).
async fn replicas(api: &StackClient) -> BTreeMap<String, (String, String)> {
    let stack = api.stack().await.expect("GET /stack");
    stack.services.into_iter().map(|s| (s.name, (s.node.unwrap_or_default(), s.state.as_str().to_string()))).collect()
}

#[tokio::main]
async fn main() {
    println!("node loss: 3 standalone agents, {REPLICAS} replicas; one agent SIGKILLed");
    let b = Bench::start_with_nodes(
        &NODES,
        &[("ORCH_NODE_DOWN_AFTER", DOWN_AFTER.into()), ("ORCH_NO_AGENT", "true".into())],
    )
    .await;
    let api = StackClient::new(&format!("http://127.0.0.1:{}", b.orchestrator.http_port), None).expect("HTTP client");
    let mut agents: Vec<Agent> = NODES.iter().map(|n| Agent::start(&b, n)).collect();
    let started = Instant::now();
    loop {
        let nodes = api.nodes().await.expect("GET /nodes");
        let ready = nodes.nodes.iter().filter(|n| n.status == orch_protocol::resources::NodeStatus::Ready).count();
        if ready == NODES.len() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the agents' nodes never all reported: {nodes:?}");
        tokio::time::sleep(POLL).await;
    }
    let manifest = format!(
        "max_parallel = 64\n[services.svc]\ncommand = \"{SLEEPER}\"\nargs = [\"--ready-after\", \"0ms\"]\n\
         grace_period = \"2s\"\ncount = {REPLICAS}\nresources = {{ cpu = 100, memory = 32 }}\n\
         constraints = [\"pool == bench\"]\nrestart = {{ policy = \"always\" }}\n"
    );
    api.apply(manifest, "bench").await.unwrap_or_else(|e| panic!("PUT /stack: {e}"));
    let up = Instant::now();
    let placed = loop {
        let all = replicas(&api).await;
        if all.len() == REPLICAS && all.values().all(|(_, state)| state == "ready") {
            break all;
        }
        assert!(up.elapsed() < Duration::from_secs(120), "the replicas never all became ready");
        tokio::time::sleep(POLL).await;
    };
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (node, _) in placed.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    println!("  {REPLICAS} replicas ready in {:.2} s, per node {per_node:?}", up.elapsed().as_secs_f64());

    let victim = "n3";
    let on_victim: Vec<String> =
        placed.iter().filter(|(_, (node, _))| node == victim).map(|(name, _)| name.clone()).collect();
    let mut downs = b.client.subscribe(format!("orch.evt.resource.{victim}.node_down")).await.unwrap();
    b.client.flush().await.unwrap();
    let killed = Instant::now();
    agents[2].child.kill().unwrap();
    agents[2].child.wait().unwrap();
    let down_at = tokio::select! {
        _ = downs.next() => killed.elapsed(),
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("{victim} never went down"),
    };
    let elsewhere = loop {
        let all = replicas(&api).await;
        let moved =
            on_victim.iter().all(|r| all.get(r).is_some_and(|(node, state)| node != victim && state == "ready"));
        if moved {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "the lost replicas never ran elsewhere");
        tokio::time::sleep(POLL).await;
    };
    let reaction = elsewhere.saturating_sub(down_at);
    println!("  replicas on {victim}:             {}", on_victim.len());
    println!(
        "  kill -> node down:           {:>8.0} ms (node-down time {DOWN_AFTER}, heartbeat {HEARTBEAT})",
        down_at.as_secs_f64() * 1000.0
    );
    println!("  node down -> all ready elsewhere: {:>8.0} ms", reaction.as_secs_f64() * 1000.0);
    println!("  kill -> all ready elsewhere: {:>8.0} ms", elsewhere.as_secs_f64() * 1000.0);
    write_json(
        "node_loss",
        &json!({
            "replicas": REPLICAS,
            "nodes": NODES.len(),
            "lost_replicas": on_victim.len(),
            "node_down_after": DOWN_AFTER,
            "heartbeat": HEARTBEAT,
            "kill_to_node_down_ms": down_at.as_secs_f64() * 1000.0,
            "node_down_to_ready_elsewhere_ms": reaction.as_secs_f64() * 1000.0,
            "kill_to_ready_elsewhere_ms": elsewhere.as_secs_f64() * 1000.0,
        }),
    );
    drop(agents);
    println!("figures written to target/bench/node_loss.json");
}
