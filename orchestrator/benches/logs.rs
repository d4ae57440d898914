//! Log throughput (`make bench PARTS=logs`): 100 managed services (the replicas of one service)
//! on one standalone agent (its own process, so its CPU is its own), each writing LINES lines of
//! about 100 bytes as fast as it can. Measured:
//! - **follow**: the lines the agent publishes on `orch.log.<node>.<unit>` as received by a plain
//!   NATS subscriber, and by the orchestrator's HTTP follow of the whole service (all 100 units
//!   merged): lines per second and how many of those written arrived;
//! - **the agent's CPU** while the services write (share of one core);
//! - **search**: ten searches over what is retained, each for the one line of one unit with a
//!   given text, through the orchestrator's HTTP route for the service (so each scans the whole
//!   log of all 100 units: the worst case of a search without a time range): latency p50/p99 and
//!   bytes scanned per second.
//!
//! Real nats-server, a private PostgreSQL, the orchestrator as a release binary.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_client::stack::StackClient;
use orch_testkit::TempDir;
use serde_json::{Value, json};

use common::{Bench, cpu_seconds, percentile_ms, write_json};

const UNITS: usize = 100;
const LINES: usize = 20_000;
const NODE: &str = "n1";
/// Searches made; each scans every unit's log (the service's route asks all of them).
const SEARCHES: usize = 10;

struct Agent {
    child: std::process::Child,
    logs: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        orchestrator::agent::supervisor::kill_all(&self.logs.path().join("shims"));
    }
}

#[tokio::main]
async fn main() {
    println!("logs: {UNITS} services x {LINES} lines of ~100 bytes on one standalone agent");
    let b = Bench::start_with_nodes(&[NODE], &[("ORCH_NO_AGENT", "true".into())]).await;
    let http = format!("http://127.0.0.1:{}", b.orchestrator.http_port);
    let api = StackClient::new(&http, None).expect("HTTP client");
    let logs = TempDir::new("bench-logs-agent");
    let agent = Agent {
        child: std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", NODE, "--nats-url", &b.user_url(&format!("agent-{NODE}")), "--log", "warn"])
            .args(["--node-cpu", "64000", "--node-memory", "65536"])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts"),
        logs,
    };
    let started = Instant::now();
    while !api.nodes().await.map(|n| n.nodes.iter().any(|n| n.name == NODE)).unwrap_or(false) {
        assert!(started.elapsed() < Duration::from_secs(60), "the agent never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each unit waits for a go file, so every subscriber is in place before the first line.
    let go = TempDir::new("bench-logs-go");
    let go_file = go.path().join("go");
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; \
         yes \"$ORCH_REPLICA_NAME $(printf '%080d' 0) needle-$ORCH_REPLICA_NAME-\" | head -n {LINES} | \
         awk '{{ print $0 NR }}'; exec sleep 100000",
        go = go_file.display()
    );
    let manifest = format!(
        "max_parallel = 100\n[services.svc]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\ngrace_period = \"1s\"\n\
         count = {UNITS}\nnode = \"{NODE}\"\nlogs = {{ max_bytes = \"64MiB\" }}\n"
    );
    api.apply(manifest, "bench").await.unwrap_or_else(|e| panic!("PUT /stack: {e}"));
    loop {
        let stack = api.stack().await.expect("GET /stack");
        if stack.services.len() == UNITS && stack.services.iter().all(|s| s.state.as_str() == "ready") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "the services never all ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Subscribers: the agent's subjects directly, and the orchestrator's HTTP follow.
    let mut raw = b.client.subscribe("orch.log.>".to_string()).await.unwrap();
    b.client.flush().await.unwrap();
    let follow = tokio::spawn(reqwest_follow(format!("{http}/api/v1/stack/services/svc/logs/follow")));
    tokio::time::sleep(Duration::from_millis(500)).await; // the follow's subscriptions in place
    let agent_pid = agent.child.id();
    let cpu_before = cpu_seconds(agent_pid);
    let total = UNITS * LINES;
    let t0 = Instant::now();
    std::fs::write(&go_file, b"go").unwrap();
    let mut received = 0usize;
    let mut last = t0;
    let quiet = Duration::from_secs(5);
    // Until every line came, or nothing more for a while (what was lost stays lost).
    while let Ok(Some(message)) = tokio::time::timeout(quiet, raw.next()).await {
        let batch: Value = serde_json::from_slice(&message.payload).unwrap();
        received += batch["lines"].as_array().map_or(0, Vec::len);
        last = Instant::now();
        if received >= total {
            break;
        }
    }
    let wall = last.duration_since(t0);
    let cpu = cpu_seconds(agent_pid) - cpu_before;
    let (followed, follow_wall) = follow.await.unwrap();
    let raw_rate = received as f64 / wall.as_secs_f64();
    println!(
        "  follow (NATS subscriber):   {received} of {total} lines in {:.2} s: {raw_rate:.0} lines/s",
        wall.as_secs_f64()
    );
    println!(
        "  follow (HTTP, 100 merged):  {followed} of {total} lines in {:.2} s: {:.0} lines/s",
        follow_wall.as_secs_f64(),
        followed as f64 / follow_wall.as_secs_f64().max(1e-9)
    );
    println!(
        "  agent CPU while writing:    {:.2} s over {:.2} s = {:.0}% of one core",
        cpu,
        wall.as_secs_f64(),
        100.0 * cpu / wall.as_secs_f64()
    );

    // Search: one per unit, for the one line that has its needle and number LINES / 2.
    let client = reqwest::Client::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let mut scanned = 0u64;
    let mut found = 0usize;
    let s0 = Instant::now();
    for i in (0..UNITS).step_by(UNITS / SEARCHES) {
        let q = format!("needle-svc-{i}-{}", LINES / 2);
        let url = format!("{http}/api/v1/stack/services/svc/logs?q={q}&limit=10");
        let t = Instant::now();
        let body = client.get(&url).send().await.unwrap().bytes().await.unwrap();
        let reply: Value = serde_json::from_slice(&body).unwrap();
        latency.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        found += reply["lines"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|l| l["text"].as_str().unwrap_or("").ends_with(&q)).count());
        scanned +=
            reply["units"].as_array().map_or(0, |u| u.iter().map(|u| u["scanned_bytes"].as_u64().unwrap_or(0)).sum());
    }
    let search_wall = s0.elapsed();
    println!(
        "  search ({SEARCHES} searches, each over all {UNITS} units' logs): found {found} of {SEARCHES}; p50 {:.1} ms, p99 {:.1} ms; {:.0} MB/s scanned",
        percentile_ms(&latency, 50.0),
        percentile_ms(&latency, 99.0),
        scanned as f64 / 1e6 / search_wall.as_secs_f64()
    );
    write_json(
        "logs",
        &json!({
            "units": UNITS, "lines_per_unit": LINES, "lines_written": total,
            "follow_nats_lines": received, "follow_nats_lines_per_s": raw_rate, "follow_nats_wall_s": wall.as_secs_f64(),
            "follow_http_lines": followed, "follow_http_wall_s": follow_wall.as_secs_f64(),
            "agent_cpu_s": cpu, "agent_cpu_share": cpu / wall.as_secs_f64(),
            "searches": SEARCHES, "search_found": found,
            "search_p50_ms": percentile_ms(&latency, 50.0), "search_p99_ms": percentile_ms(&latency, 99.0),
            "search_scanned_bytes": scanned, "search_wall_s": search_wall.as_secs_f64(),
        }),
    );
    drop(agent);
    println!("figures written to target/bench/logs.json");
}

/// Reads the HTTP follow stream until it is quiet for 5 s after its first line: how many lines,
/// and the time from the first to the last.
async fn reqwest_follow(url: String) -> (usize, Duration) {
    let response = reqwest::Client::new().get(&url).send().await.expect("follow starts");
    assert!(response.status().is_success(), "follow: {}", response.status());
    let mut body = response.bytes_stream();
    let (mut lines, mut first, mut last) = (0usize, None, Instant::now());
    loop {
        let wait = if first.is_some() { Duration::from_secs(5) } else { Duration::from_secs(120) };
        match tokio::time::timeout(wait, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                lines += chunk.iter().filter(|b| **b == b'\n').count();
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
            }
            _ => break,
        }
    }
    (lines, first.map_or(Duration::ZERO, |f| last.duration_since(f)))
}
