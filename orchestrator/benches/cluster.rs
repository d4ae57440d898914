//! Cluster benchmarks (`make bench PARTS="failover upgrade"`): real nats-server and PostgreSQL,
//! the orchestrator as release binaries in their own processes, managed services as real
//! processes under their shims. Prints each figure and writes it as JSON to
//! `target/bench/<name>.json`.
//!
//! - `failover`: three replicas (`serve --replica`); 10,000 instances heartbeating every second
//!   and a steady load of durable commands; the leader is killed (SIGKILL) again and again. Each
//!   trial times the first command the new leader commits and the first HTTP write answered
//!   through the replica that stays a standby. Across all trials: commands lost or applied twice,
//!   instances wrongly expired, managed processes restarted.
//! - `upgrade`: one orchestrator with 200 managed services; its binary is replaced and it is
//!   started again: services restarted (target 0) and the time until all are adopted and ready.
//!
//! `ORCH_BENCH_FAILOVER_TRIALS` changes the number of trials (default 20).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_client::Request;
use orch_protocol::Subjects;
use orch_protocol::registry::Registration;
use orch_testkit::{OrchestratorProcess, Postgres, ShippedUsers, TempDir};
use serde_json::{Value, json};

use common::{bench_dir, orchestrator_env, percentile_ms, read_all, write_json};

const SLEEPER: &str = env!("CARGO_BIN_EXE_orch-sleeper");
/// Live instances heartbeating through the failovers.
const INSTANCES: usize = 10_000;
/// Their lease: ten missed beats.
const INSTANCE_TTL: u32 = 10;
/// Durable commands per second while the leader is killed.
const COMMAND_RATE: u64 = 200;
/// Managed services running through the failovers.
const MANAGED: usize = 10;
/// Managed services of the upgrade.
const UPGRADE_SERVICES: usize = 200;

fn trials() -> usize {
    std::env::var("ORCH_BENCH_FAILOVER_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// A manifest of `n` sleepers named `<prefix>-<i>`, each listening on its own port once ready.
fn manifest(prefix: &str, n: usize) -> (String, BTreeSet<u16>) {
    let mut text = String::new();
    let mut ports = BTreeSet::new();
    for i in 0..n {
        // Distinct ports: a free port may be handed out twice by the kernel, and two services
        // on one port would crash each other.
        let port = loop {
            let port = orch_testkit::free_port();
            if ports.insert(port) {
                break port;
            }
        };
        text.push_str(&format!(
            "[services.{prefix}-{i}]\ncommand = \"{SLEEPER}\"\nargs = [\"--ready-after\", \"0ms\"]\nport = {port}\n\
             readiness = {{ kind = \"tcp\", interval = \"1s\" }}\ngrace_period = \"5s\"\n\n"
        ));
    }
    (text, ports)
}

/// `(name, state, pid, restarts)` of every managed service.
async fn managed(pool: &sqlx::PgPool) -> Vec<(String, String, Option<i64>, i32)> {
    sqlx::query_as("SELECT name, state, pid, restarts FROM managed_services ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

async fn all_ready(pool: &sqlx::PgPool, n: usize, timeout: Duration) -> Vec<(String, String, Option<i64>, i32)> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = managed(pool).await;
        if rows.len() == n && rows.iter().all(|(_, state, pid, _)| state == "ready" && pid.is_some()) {
            return rows;
        }
        assert!(Instant::now() < deadline, "managed services not all ready after {timeout:?}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(pool: &sqlx::PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT holder, term FROM leadership WHERE expires_at > now()")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

struct Group {
    replicas: Vec<OrchestratorProcess>,
    names: Vec<String>,
}

impl Group {
    fn index_of(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).expect("a replica of the group")
    }
}

/// Three replicas, then 10,000 heartbeating instances, a steady command load and ten managed
/// services; the leader killed `trials()` times.
async fn failover() {
    let trials = trials();
    println!(
        "failover: 3 replicas, {INSTANCES} instances heartbeating every 1s, {COMMAND_RATE} durable commands/s, \
         {MANAGED} managed services; the leader killed (SIGKILL) {trials} times"
    );
    let users = ShippedUsers::start_with_harness(&[]);
    let postgres = Postgres::start();
    let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
    let dir = TempDir::new("orch-bench-failover");
    let agent_logs = dir.path().join("agent-logs");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let start = |name: &str| {
        let env = [
            orchestrator_env(&users, &database_url),
            vec![
                ("ORCH_REPLICA", name.to_string()),
                ("ORCH_AGENT_LOG_DIR", agent_logs.display().to_string()),
                ("ORCH_LOG", "info".to_string()),
            ],
        ]
        .concat();
        OrchestratorProcess::start(
            env!("CARGO_BIN_EXE_orchestrator"),
            &env,
            bench_dir().join(format!("replica-{name}.log")),
        )
    };
    let mut group = Group { replicas: Vec::new(), names: names.clone() };
    for name in &names {
        let mut replica = start(name);
        replica.wait_ready(Duration::from_secs(120));
        group.replicas.push(replica);
    }
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let client = users.connect("harness").await;
    let subjects = Subjects::default();
    let orch = orch_client::Client::from_nats_as(client.clone(), subjects.clone(), Duration::from_secs(30), None);
    let js = jetstream::new(client.clone());
    orchestrator::tls::install_crypto_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let (first, _) = leader(&pool).await.expect("a leader");
    let api = format!("http://127.0.0.1:{}", group.replicas[group.index_of(&first)].http_port);

    // Ten managed services, through the leader's API.
    let (text, _ports) = manifest("svc", MANAGED);
    let stack = orch_client::stack::StackClient::new(&api, None).expect("HTTP client");
    stack.apply(text, "bench").await.expect("PUT /api/v1/stack");
    let before = all_ready(&pool, MANAGED, Duration::from_secs(120)).await;

    // 10,000 instances, then their heartbeats, spread over each second.
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..INSTANCES).map(|i| {
        let registration = Registration {
            id: Some(format!("s-{i}")),
            ttl_seconds: INSTANCE_TTL,
            ..Registration::new(format!("svc-{}", i % 100), "127.0.0.1", 8080)
        };
        let request = Request::register(&registration).expect("a valid registration");
        let orch = orch.clone();
        async move { orch.call(&request, None).await.map(|_| ()) }
    }))
    .buffer_unordered(256);
    while let Some(r) = pending.next().await {
        r.expect("register");
    }
    println!("  registered {INSTANCES} instances in {:.1}s", started.elapsed().as_secs_f64());
    let beats = tokio::spawn({
        let client = client.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut round = 0usize;
            loop {
                tick.tick().await;
                for i in (round % 10..INSTANCES).step_by(10) {
                    let _ = client.publish(format!("orch.hb.s-{i}"), "".into()).await;
                }
                round += 1;
            }
        }
    });

    // The command load: registrations of new instances as durable commands, each acknowledged
    // by JetStream (an acknowledged command is one the orchestrator must apply exactly once).
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = tokio::spawn({
        let (js, acknowledged) = (js.clone(), acknowledged.clone());
        let subject = subjects.command("registry", "register");
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / COMMAND_RATE));
            for n in 0.. {
                tick.tick().await;
                let id = format!("load-{n}");
                let body =
                    json!({ "id": id, "name": "load", "address": "127.0.0.1", "port": 9000, "ttl_seconds": 3600 });
                let publish = jetstream::message::PublishMessage::build()
                    .payload(serde_json::to_vec(&body).unwrap().into())
                    .message_id(id.clone());
                // Published again until acknowledged (the message id de-duplicates).
                loop {
                    if let Ok(ack) = js.send_publish(subject.clone(), publish.clone()).await
                        && let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), ack).await
                    {
                        break;
                    }
                }
                acknowledged.lock().unwrap().push(id);
            }
        }
    });
    // Commits, as their `registered` events say (the CloudEvents time is the commit's).
    let commits: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let mut events = client.subscribe("orch.evt.registry.load.registered").await.unwrap();
    let watcher = tokio::spawn({
        let commits = commits.clone();
        async move {
            while let Some(m) = events.next().await {
                let event: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if let Some(time) = event["time"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok()) {
                    commits.lock().unwrap().push(time);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut to_commit = Histogram::<u64>::new(3).unwrap();
    let mut to_standby_write = Histogram::<u64>::new(3).unwrap();
    let mut to_leader_write = Histogram::<u64>::new(3).unwrap();
    let mut rows = Vec::new();
    for trial in 0..trials {
        let (old, term) = leader(&pool).await.expect("a leader before the kill");
        let survivors: Vec<(String, u16)> = group
            .names
            .iter()
            .zip(&group.replicas)
            .filter(|(n, _)| **n != old)
            .map(|(n, r)| (n.clone(), r.http_port))
            .collect();
        let killed_at = Utc::now();
        let killed = Instant::now();
        let index = group.index_of(&old);
        group.replicas[index].kill();
        // An HTTP write sent through each survivor until one is answered 2xx.
        let writes: Vec<_> = survivors
            .iter()
            .map(|(name, port)| {
                let (http, url) = (http.clone(), format!("http://127.0.0.1:{port}/api/v1/services"));
                let id = format!("probe-{trial}-{name}");
                tokio::spawn(async move {
                    loop {
                        let body = json!({ "id": id, "name": "probe", "address": "127.0.0.1", "port": 1, "ttl_seconds": 3600 });
                        if let Ok(r) = http.post(&url).header("content-type", "application/json").body(body.to_string()).send().await
                            && r.status().is_success()
                        {
                            return killed.elapsed();
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        // The first command committed after the kill (by the new leader: the old one is dead).
        let deadline = Instant::now() + Duration::from_secs(60);
        let first_commit = loop {
            let after = commits.lock().unwrap().iter().filter(|t| **t > killed_at).min().copied();
            if let Some(t) = after {
                break (t - killed_at).to_std().unwrap_or_default();
            }
            assert!(Instant::now() < deadline, "trial {trial}: no command committed within 60 s of the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut write_times = Vec::new();
        for write in writes {
            write_times
                .push(tokio::time::timeout(Duration::from_secs(60), write).await.expect("a write answered").unwrap());
        }
        let (new, new_term) = leader(&pool).await.expect("a leader after the failover");
        let mut standby_write = Duration::ZERO;
        for ((name, _), took) in survivors.iter().zip(&write_times) {
            if *name == new {
                to_leader_write.record(took.as_micros() as u64).unwrap();
            } else {
                standby_write = *took;
                to_standby_write.record(took.as_micros() as u64).unwrap();
            }
        }
        to_commit.record(first_commit.as_micros() as u64).unwrap();
        println!(
            "  trial {:>2}: {old} (term {term}) killed; {new} leads (term {new_term}); first commit after {:>6.1} ms, \
             HTTP write via the standby after {:>6.1} ms",
            trial + 1,
            first_commit.as_secs_f64() * 1e3,
            standby_write.as_secs_f64() * 1e3
        );
        rows.push(json!({ "trial": trial + 1, "killed": old, "elected": new, "term": new_term,
            "first_commit_ms": first_commit.as_secs_f64() * 1e3, "standby_write_ms": standby_write.as_secs_f64() * 1e3 }));
        // The killed replica comes back as a standby before the next trial.
        group.replicas[index].start_again();
        group.replicas[index].wait_ready(Duration::from_secs(120));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Stop the load, let every acknowledged command be applied and published, then count.
    load.abort();
    let _ = load.await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = js.get_stream(subjects.commands_stream()).await.unwrap().info().await.unwrap().state.messages;
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.unwrap();
        if waiting == 0 && outbox == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "commands or events still pending after 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    beats.abort();
    watcher.abort();
    let stored: BTreeSet<String> = sqlx::query_scalar("SELECT id FROM instances WHERE id LIKE 'load-%'")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost = acknowledged.iter().filter(|id| !stored.contains(*id)).count();
    let registered = read_all(&js, &subjects.events_stream(), "orch.evt.registry.load.registered").await;
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for e in &registered {
        *per_id.entry(e["subject"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let twice = per_id.values().filter(|n| **n > 1).count();
    let unpublished = acknowledged.iter().filter(|id| !per_id.contains_key(*id)).count();
    let expired = read_all(&js, &subjects.events_stream(), "orch.evt.registry.*.expired").await;
    let wrongly_expired = expired.iter().filter(|e| e["subject"].as_str().is_some_and(|s| s.starts_with("s-"))).count();
    let after = managed(&pool).await;
    let restarted = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.2 != a.2 || a.3 != 0 || !a.2.is_some_and(|pid| orch_testkit::process_alive(pid as u32)))
        .count();

    let p = |h: &Histogram<u64>, q: f64| percentile_ms(h, q);
    println!(
        "  first commit by the new leader: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(&to_commit, 0.5),
        p(&to_commit, 0.99),
        to_commit.max() as f64 / 1e3
    );
    println!(
        "  HTTP write answered via a standby: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (on the new leader itself: p50 {:.1} ms, p99 {:.1} ms)",
        p(&to_standby_write, 0.5),
        p(&to_standby_write, 0.99),
        to_standby_write.max() as f64 / 1e3,
        p(&to_leader_write, 0.5),
        p(&to_leader_write, 0.99)
    );
    println!("  target: p99 under 2000 ms");
    println!(
        "  across {trials} failovers: {} commands acknowledged, {lost} lost, {twice} applied twice, {unpublished} without \
         their event; {wrongly_expired} of {INSTANCES} heartbeating instances expired; {restarted} of {MANAGED} managed \
         processes restarted or gone",
        acknowledged.len()
    );
    write_json(
        "failover",
        &json!({
            "trials": trials, "instances": INSTANCES, "command_rate": COMMAND_RATE, "managed_services": MANAGED,
            "first_commit_ms": { "p50": p(&to_commit, 0.5), "p99": p(&to_commit, 0.99), "max": to_commit.max() as f64 / 1e3 },
            "standby_write_ms": { "p50": p(&to_standby_write, 0.5), "p99": p(&to_standby_write, 0.99), "max": to_standby_write.max() as f64 / 1e3 },
            "leader_write_ms": { "p50": p(&to_leader_write, 0.5), "p99": p(&to_leader_write, 0.99) },
            "commands_acknowledged": acknowledged.len(), "lost": lost, "applied_twice": twice, "unpublished": unpublished,
            "wrongly_expired": wrongly_expired, "managed_restarted": restarted, "rows": rows,
        }),
    );
    orchestrator::agent::supervisor::kill_all(&agent_logs.join("shims"));
    drop(group);
}

/// One orchestrator with 200 managed services; its binary replaced (a copy at another path, as a
/// package upgrade leaves it) and started again.
async fn upgrade() {
    println!(
        "upgrade: {UPGRADE_SERVICES} managed services; the orchestrator stopped, its binary replaced, started again"
    );
    let users = ShippedUsers::start_with_harness(&[]);
    let postgres = Postgres::start();
    let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
    let dir = TempDir::new("orch-bench-upgrade");
    let agent_logs = dir.path().join("agent-logs");
    let env = [
        orchestrator_env(&users, &database_url),
        vec![("ORCH_AGENT_LOG_DIR", agent_logs.display().to_string()), ("ORCH_LOG", "info".to_string())],
    ]
    .concat();
    let old = dir.path().join("orchestrator-old");
    std::fs::copy(env!("CARGO_BIN_EXE_orchestrator"), &old).unwrap();
    let mut orchestrator = OrchestratorProcess::start(old.to_str().unwrap(), &env, bench_dir().join("upgrade-old.log"));
    orchestrator.wait_ready(Duration::from_secs(120));
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let api = format!("http://127.0.0.1:{}", orchestrator.http_port);
    let (text, _ports) = manifest("up", UPGRADE_SERVICES);
    let stack = orch_client::stack::StackClient::new(&api, None).expect("HTTP client");
    stack.apply(text, "bench").await.expect("PUT /api/v1/stack");
    let before = all_ready(&pool, UPGRADE_SERVICES, Duration::from_secs(300)).await;
    println!("  {UPGRADE_SERVICES} services ready");

    // The upgrade: stop (SIGTERM, as a package manager's restart does), replace, start.
    let stopped_at = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = orchestrator.stop();
        (orchestrator, status)
    });
    let (orchestrator, status) = status.await.unwrap();
    let stop_took = stopped_at.elapsed();
    drop(orchestrator);
    let new = dir.path().join("orchestrator-new");
    std::fs::copy(env!("CARGO_BIN_EXE_orchestrator"), &new).unwrap();
    let started = Instant::now();
    let mut upgraded = OrchestratorProcess::start(new.to_str().unwrap(), &env, bench_dir().join("upgrade-new.log"));
    upgraded.wait_ready(Duration::from_secs(120));
    let serving = started.elapsed();
    // Fully reconciled: the new agent has adopted every service (its log says so for each) and
    // the rows say ready under the same pids. The rows alone would not tell: they are unchanged
    // from before the upgrade until the controller looks.
    let log = bench_dir().join("upgrade-new.log");
    let deadline = Instant::now() + Duration::from_secs(300);
    let after = loop {
        let adopted = std::fs::read_to_string(&log).unwrap_or_default().matches("adopted a running service").count();
        let rows = managed(&pool).await;
        let same = rows.len() == before.len()
            && rows.iter().zip(&before).all(|(a, b)| a.1 == "ready" && a.2 == b.2 && a.3 == 0);
        if (adopted >= UPGRADE_SERVICES && same) || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reconciled = started.elapsed();
    let restarted = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.2 != a.2 || a.3 != 0 || !a.2.is_some_and(|pid| orch_testkit::process_alive(pid as u32)))
        .count();
    println!(
        "  stopped in {:.2} s ({status:?}); the new binary served after {:.2} s and had adopted all {UPGRADE_SERVICES} \
         services, ready under the same pids, after {:.2} s; restarted: {restarted} (target 0)",
        stop_took.as_secs_f64(),
        serving.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    write_json(
        "upgrade",
        &json!({ "services": UPGRADE_SERVICES, "stop_s": stop_took.as_secs_f64(), "serving_s": serving.as_secs_f64(),
                 "reconciled_s": reconciled.as_secs_f64(), "restarted": restarted }),
    );
    drop(upgraded);
    orchestrator::agent::supervisor::kill_all(&agent_logs.join("shims"));
}

#[tokio::main]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("cluster benchmarks: nats-server + PostgreSQL on this machine, orchestrator release binaries");
    let _ = bench_dir();
    if wants("failover") {
        failover().await;
    }
    if wants("upgrade") {
        upgrade().await;
    }
    println!("figures written to target/bench/*.json");
}
