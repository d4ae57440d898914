//! Priority benchmarks (`make bench`): a runaway engine against the registry. Real nats-server,
//! locked down with the users `make dev` runs (scripts/nats-auth.sh), a private PostgreSQL, the
//! orchestrator as a release binary in its own process.
//!
//! `runaway_engine`: registry commands (`orch.req.registry.register.service`, each an update
//! committed to PostgreSQL, sent as the `service` user) at a steady rate, one at a time, measuring
//! each round trip; first alone, then while an engine (the `engine` user) floods
//! `orch.req.priority.set.engine` at 10,000 requests per second over 1,000 services. The
//! guardrails refuse most of the flood; every request is answered, every change audited in
//! PostgreSQL and emitted as an event, refusals counted per service and window (protocol.md
//! §13.4): that is the load. Target: registry p99 under the flood at most 1.5x the p99 alone.
//!
//! A third phase floods a subject nobody subscribes to, as the machine's own share of the
//! slowdown. `ORCH_BENCH_VOID_SUBJECT` names another subject for it, sent as the user
//! `ORCH_BENCH_VOID_ROLE`: `orch.req.priority.nothing.operator` as `operator` measures the request
//! path alone (an unknown verb is answered at once, nothing is decided).
//!
//! The engine is a process of its own (this binary again), as a real engine would be.
//! `ORCH_BENCH_TRACE=1` prints each probe round trip slower than 3 ms with its time in the phase
//! (is the slowdown a burst or spread out?).
//!
//! Run it alone with `cargo bench -p orchestrator --bench priority -- runaway_engine`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_client::Request;
use orch_protocol::error::ErrorReply;
use orch_protocol::priority::{ChangeReply, SetRequest};
use orch_protocol::registry::Registration;
use orch_protocol::subjects::verbs;
use serde_json::json;

use common::{Bench, bench_dir, cpu_seconds, metric, percentile_ms, write_json};

/// Registry commands per second while measuring, and how long each phase lasts.
const PROBE_RATE: f64 = 200.0;
const PHASE: Duration = Duration::from_secs(20);
/// The runaway engine's rate and the services it spreads its changes over.
const FLOOD_RATE: u64 = 10_000;
const FLOOD_SERVICES: usize = 1_000;
const TARGET_RATIO: f64 = 1.5;

/// Registry round trips at `PROBE_RATE` for `phase`, one request at a time.
async fn probe(b: &Bench, round: usize, phase: Duration) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let interval = Duration::from_secs_f64(1.0 / PROBE_RATE);
    let mut next = Instant::now();
    let end = Instant::now() + phase;
    let mut i = 0usize;
    while Instant::now() < end {
        next += interval;
        let registration = Registration {
            id: Some(format!("probe-{}", i % 100)),
            version: format!("1.{round}.{i}"),
            ttl_seconds: 3600,
            ..Registration::new("probe", "10.0.0.1", 8080)
        };
        let request = Request::register(&registration).expect("a valid registration");
        let t0 = Instant::now();
        let reply = b.orch.call(&request, None).await;
        h.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
        if std::env::var("ORCH_BENCH_TRACE").is_ok() && t0.elapsed() > Duration::from_millis(3) {
            eprintln!("slow round {round} at {:.3}s: {:?}", (end - phase).elapsed().as_secs_f64(), t0.elapsed());
        }
        if let Err(e) = reply {
            panic!("registry error: {e}");
        }
        i += 1;
        tokio::time::sleep_until(next.into()).await;
    }
    h
}

/// What an engine process reports when it stops.
#[derive(serde::Serialize, serde::Deserialize)]
struct Flooded {
    sent: u64,
    outcomes: BTreeMap<String, u64>,
}

/// A runaway engine in a process of its own (this binary again, with `ENGINE_ENV` set), as a
/// real engine would be: in the probe's process its tasks would share the probe's runtime, and
/// reading 10,000 replies a second there delays the probe's own replies, which measures the
/// bench, not the orchestrator. It floods until its standard input closes.
struct Engine {
    child: std::process::Child,
}

/// Set (to the subject to flood) in the engine's process.
const ENGINE_ENV: &str = "ORCH_BENCH_ENGINE_SUBJECT";

impl Engine {
    fn start(b: &Bench, role: &str, subject: &str) -> Engine {
        use std::process::{Command, Stdio};
        let child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(ENGINE_ENV, subject)
            .env("ORCH_BENCH_ENGINE_URL", b.user_url(role))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the engine process starts");
        Engine { child }
    }

    /// Stops the flood and waits for the engine's last replies and its report.
    fn stop(mut self) -> Flooded {
        drop(self.child.stdin.take());
        let output = self.child.wait_with_output().expect("the engine process ends");
        assert!(output.status.success(), "the engine process failed: {}", output.status);
        serde_json::from_slice(&output.stdout).expect("the engine's report")
    }
}

/// The engine process: floods priority requests on `subject` at `FLOOD_RATE` until standard
/// input closes, counts replies by outcome, and prints a [`Flooded`] report.
async fn engine_main(url: String, subject: String) {
    let client = common::connect_url(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    // A reply subject per request, as a client's requests have: NATS lets the orchestrator answer
    // each request once (`allow_responses`), and a reply subject shared by requests in flight
    // would have most answers refused.
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(format!("{inbox}.*")).await.unwrap();
    let replies = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outcomes = BTreeMap::new();
            loop {
                let message = tokio::select! {
                    m = sub.next() => m,
                    _ = tokio::time::sleep(Duration::from_secs(2)), if stop.load(Ordering::Relaxed) => None,
                };
                let Some(message) = message else { break };
                let outcome = match (
                    serde_json::from_slice::<ChangeReply>(&message.payload),
                    serde_json::from_slice::<ErrorReply>(&message.payload),
                ) {
                    (Ok(reply), _) => reply.change.outcome.as_str().to_string(),
                    (_, Ok(error)) => error.error.code.as_str().to_string(),
                    _ => "unreadable".to_string(),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
            outcomes
        })
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let per_tick = FLOOD_RATE / 1000;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        for _ in 0..per_tick {
            let request = Request::set_priority(&SetRequest {
                service: format!("svc-{}", rng.usize(0..FLOOD_SERVICES)),
                value: rng.i64(0..=100),
                source: "engine:runaway".into(),
                reason: "bench flood".into(),
                ttl_seconds: None,
            })
            .expect("a valid priority change");
            // Sent without waiting for the reply: the flood is paced by the clock, not by the
            // orchestrator's answers.
            client.publish_with_reply(subject.clone(), format!("{inbox}.{sent}"), request.body.into()).await.unwrap();
            sent += 1;
        }
    }
    client.flush().await.unwrap();
    let outcomes = replies.await.unwrap();
    println!("{}", serde_json::to_string(&Flooded { sent, outcomes }).unwrap());
}

/// The subject of the void phase: `ORCH_BENCH_VOID_SUBJECT`, or one that nobody reads and the
/// orchestrator's user may publish (outcomes go under `orch.replies.`; the void engine connects as
/// `ORCH_BENCH_VOID_ROLE`, `orchestrator` by default).
fn void_subject() -> String {
    std::env::var("ORCH_BENCH_VOID_SUBJECT").unwrap_or("orch.replies.bench-void".into())
}

async fn runaway_engine(b: &Bench) {
    let port = b.orchestrator.http_port;
    // Warm up: connections, prepared statements, the probe's instances.
    probe(b, 0, Duration::from_secs(3)).await;
    let alone = probe(b, 1, PHASE).await;
    println!(
        "runaway_engine  registry round trips alone at {PROBE_RATE:.0}/s: p50 {:.2} ms, p99 {:.2} ms ({} commands)",
        percentile_ms(&alone, 0.5),
        percentile_ms(&alone, 0.99),
        alone.len()
    );
    let changes0 = metric(port, "orch_priority_changes_total", None);
    let cpu0 = cpu_seconds(b.orchestrator.pid().unwrap());
    let started = Instant::now();
    let engine = Engine::start(b, "engine", &b.subjects.request_as(verbs::PRIORITY, verbs::SET, Some("engine")));
    let flooded = probe(b, 2, PHASE).await;
    let elapsed = started.elapsed().as_secs_f64();
    let Flooded { sent, outcomes } = engine.stop();
    let cpu = (cpu_seconds(b.orchestrator.pid().unwrap()) - cpu0) / elapsed * 100.0;
    let stored = metric(port, "orch_priority_changes_total", None) - changes0;
    let answered: u64 = outcomes.values().sum();
    println!(
        "                under a runaway engine ({:.0} requests/s sent): p50 {:.2} ms, p99 {:.2} ms ({} commands)",
        sent as f64 / elapsed,
        percentile_ms(&flooded, 0.5),
        percentile_ms(&flooded, 0.99),
        flooded.len()
    );
    println!(
        "                engine: {sent} sent, {answered} answered, {stored:.0} changes audited ({:.0}/s); outcomes {outcomes:?}; orchestrator CPU {cpu:.0}% of one core",
        stored / elapsed
    );
    let ratio = percentile_ms(&flooded, 0.99) / percentile_ms(&alone, 0.99);
    println!(
        "                p99 ratio {ratio:.2} (target <= {TARGET_RATIO}): {}",
        if ratio <= TARGET_RATIO { "met" } else { "NOT met" }
    );
    // Baseline: the same flood on a subject nobody subscribes to. The machine's two cores still
    // carry the engine's client and nats-server's work, but the orchestrator does none: what is
    // left of the slowdown is the machine's, not the orchestrator's.
    let engine =
        Engine::start(b, &std::env::var("ORCH_BENCH_VOID_ROLE").unwrap_or("orchestrator".into()), &void_subject());
    let void = probe(b, 3, PHASE).await;
    engine.stop();
    let void_ratio = percentile_ms(&void, 0.99) / percentile_ms(&alone, 0.99);
    println!(
        "                baseline, the same flood to a subject nobody reads: p50 {:.2} ms, p99 {:.2} ms (p99 ratio {void_ratio:.2})",
        percentile_ms(&void, 0.5),
        percentile_ms(&void, 0.99),
    );
    write_json(
        "runaway_engine",
        &json!({
            "probe_rate_per_sec": PROBE_RATE,
            "phase_seconds": PHASE.as_secs_f64(),
            "alone_p50_ms": percentile_ms(&alone, 0.5),
            "alone_p99_ms": percentile_ms(&alone, 0.99),
            "flooded_p50_ms": percentile_ms(&flooded, 0.5),
            "flooded_p99_ms": percentile_ms(&flooded, 0.99),
            "p99_ratio": ratio,
            "void_flood_p50_ms": percentile_ms(&void, 0.5),
            "void_flood_p99_ms": percentile_ms(&void, 0.99),
            "void_flood_p99_ratio": void_ratio,
            "target_ratio": TARGET_RATIO,
            "flood_sent": sent,
            "flood_sent_per_sec": sent as f64 / elapsed,
            "flood_answered": answered,
            "flood_outcomes": outcomes,
            "changes_audited": stored,
            "orchestrator_cpu_percent": cpu,
        }),
    );
}

#[tokio::main]
async fn main() {
    if let Ok(subject) = std::env::var(ENGINE_ENV) {
        return engine_main(std::env::var("ORCH_BENCH_ENGINE_URL").expect("the engine's NATS URL"), subject).await;
    }
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("priority benchmarks: nats-server + PostgreSQL on this machine, orchestrator release binary");
    let _ = bench_dir();
    let b = Bench::start_locked(&[], "service").await;
    if wants("runaway_engine") {
        runaway_engine(&b).await;
    }
    println!("figures written to target/bench/*.json");
}
