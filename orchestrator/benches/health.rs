//! Health benchmarks (`make bench`): failure detection through the TTL lease and through HTTP
//! checks, false positives and checker throughput at 10,000 checks. Real nats-server and a private
//! PostgreSQL, the orchestrator as a release binary in its own process; check targets and
//! heartbeating processes are real too. Prints each figure and writes it as JSON to
//! `target/bench/<name>.json`.
//!
//! Run one part with `cargo bench -p orchestrator --bench health -- <ttl_detection|http_detection|scale>`.
//! `ORCH_BENCH_HEALTH_SECONDS` shortens the two-minute scale run for quick experiments.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_client::Request;
use orch_protocol::health::{CheckKind, CheckSpec};
use orch_protocol::registry::Registration;
use orch_testkit::http_get;
use serde_json::{Value, json};

use common::{Bench, bench_dir, cpu_seconds, metric, percentile_ms, write_json};

/// Trials of each detection benchmark.
const TRIALS: usize = 50;
/// Heartbeat period of the killed processes, and misses before critical (ttl = 3 s).
const BEAT: Duration = Duration::from_secs(1);
const MISSES: u32 = 3;
/// Checks (and heartbeating instances) of the scale run.
const SCALE: usize = 10_000;

/// Environment variable that turns this binary into a heartbeating child: `<nats url> <instance id>`.
const HEARTBEATER: &str = "ORCH_BENCH_HEARTBEATER";

fn scale_seconds() -> u64 {
    std::env::var("ORCH_BENCH_HEALTH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(120)
}

/// The child: beats every second until killed.
async fn heartbeater(spec: &str) {
    let (url, id) = spec.split_once(' ').expect("url and id");
    let client = common::connect_url(url).await;
    let subject = format!("orch.hb.{id}");
    let mut tick = tokio::time::interval(BEAT);
    loop {
        tick.tick().await;
        client.publish(subject.clone(), "".into()).await.expect("heartbeat");
        client.flush().await.expect("flush");
    }
}

/// An HTTP target: `GET /h/<i>` answers the status set for `i` (200 by default).
struct Target {
    port: u16,
    codes: Arc<Vec<AtomicU16>>,
}

impl Target {
    async fn start(paths: usize) -> Target {
        let codes: Arc<Vec<AtomicU16>> = Arc::new((0..paths).map(|_| AtomicU16::new(200)).collect());
        let shared = codes.clone();
        let app = axum::Router::new().route(
            "/h/{i}",
            axum::routing::get(move |axum::extract::Path(i): axum::extract::Path<usize>| {
                let code = shared.get(i).map(|c| c.load(Ordering::Relaxed)).unwrap_or(404);
                async move { axum::http::StatusCode::from_u16(code).unwrap() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Target { port, codes }
    }
}

/// An instance `id` of `name` on 127.0.0.1:`port` with a lease of `ttl_seconds`.
fn instance(id: String, name: impl Into<String>, port: u32, ttl_seconds: u32) -> Registration {
    Registration { id: Some(id), ttl_seconds, ..Registration::new(name, "127.0.0.1", port) }
}

/// An HTTP check of `url` every second, critical after `failures` failed runs.
fn http_check(url: &str, failures: u32) -> CheckSpec {
    CheckSpec {
        url: Some(url.to_string()),
        interval: Duration::from_secs(1),
        failures_before_critical: failures,
        ..CheckSpec::new(CheckKind::Http)
    }
}

async fn register(b: &Bench, registration: Registration) {
    let request = Request::register(&registration).expect("a valid registration");
    if let Err(e) = b.orch.call(&request, None).await {
        panic!("registration refused: {e}");
    }
}

/// Records, per instance id (CloudEvents subject), when the first event on `subject` arrived
/// whose data matches `pick`.
fn watch(
    b: &Bench,
    subject: &'static str,
    pick: fn(&Value) -> bool,
) -> (Arc<Mutex<HashMap<String, Instant>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (client, shared) = (b.client.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let mut sub = client.subscribe(subject).await.unwrap();
        while let Some(m) = sub.next().await {
            let at = Instant::now();
            let Ok(event) = serde_json::from_slice::<Value>(&m.payload) else { continue };
            if pick(&event["data"]) {
                let id = event["subject"].as_str().unwrap_or_default().to_string();
                shared.lock().unwrap().entry(id).or_insert(at);
            }
        }
    });
    (seen, task)
}

fn report(name: &str, latencies: &Histogram<u64>, target_ms: f64, extra: Value) {
    let (p50, p99, max) =
        (percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), latencies.max() as f64 / 1000.0);
    let met = if p99 <= target_ms { "met" } else { "NOT MET" };
    println!(
        "  {name}: {} trials, p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (target p99 <= {target_ms:.0} ms: {met})",
        latencies.len()
    );
    let mut value = json!({ "trials": latencies.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "target_p99_ms": target_ms, "met": p99 <= target_ms });
    if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
        v.extend(e.clone());
    }
    write_json(name, &value);
}

/// SIGKILL a process that heartbeats every second, TTL three beats: time from the kill until the
/// `expired` event (published after the commit) arrives.
async fn ttl_detection(b: &Bench) {
    println!("ttl_detection: {TRIALS} processes beating every {BEAT:?}, ttl {MISSES} beats, each SIGKILLed");
    let ttl = BEAT * MISSES;
    // A population of healthy instances beating from here, so ten deaths in a round are a small
    // share of the live instances and never look like a mass expiry (self-preservation).
    let population = 1000;
    for i in 0..population {
        register(b, instance(format!("pop-{i}"), "population", 1, 30)).await;
    }
    let client = b.client.clone();
    let beats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        loop {
            tick.tick().await;
            for i in 0..population {
                let _ = client.publish(format!("orch.hb.pop-{i}"), "".into()).await;
            }
        }
    });
    let (expired, watcher) = watch(b, "orch.evt.registry.*.expired", |_| true);
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let exe = std::env::current_exe().unwrap();
    let batch = 10;
    for round in 0..TRIALS.div_ceil(batch) {
        let mut children = Vec::new();
        for k in 0..batch {
            let id = format!("ttl-{round}-{k}");
            register(b, instance(id.clone(), "beater", 1, ttl.as_secs() as u32)).await;
            let child = std::process::Command::new(&exe)
                .env(HEARTBEATER, format!("{} {id}", b.user_url("service")))
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn heartbeater");
            children.push((id, child));
        }
        // Let them beat steadily, then kill each at a random moment within one beat.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut killed = Vec::new();
        for (id, mut child) in children {
            tokio::time::sleep(BEAT.mul_f64(fastrand::f64() / batch as f64)).await;
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let at = Instant::now();
            let _ = child.wait();
            killed.push((id, at));
        }
        let deadline = Instant::now() + ttl * 3;
        while Instant::now() < deadline && killed.iter().any(|(id, _)| !expired.lock().unwrap().contains_key(id)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = expired.lock().unwrap();
        for (id, at) in &killed {
            match seen.get(id) {
                Some(t) => latencies.record(t.duration_since(*at).as_micros() as u64).unwrap(),
                None => println!("  {id}: no expired event within {:?}", ttl * 3),
            }
        }
    }
    watcher.abort();
    beats.abort();
    let target = (ttl.as_secs_f64() * 1000.0) + 250.0;
    report("ttl_detection", &latencies, target, json!({ "beat_ms": BEAT.as_millis(), "ttl_ms": ttl.as_millis() }));
}

/// An HTTP target switches to 500; checks every second, three failures to critical: time from the
/// switch until the check's `critical` event arrives.
async fn http_detection(b: &Bench) {
    println!("http_detection: {TRIALS} HTTP checks every 1s, 3 failures to critical, each target switched to 500");
    let target = Target::start(TRIALS).await;
    for i in 0..TRIALS {
        let url = format!("http://127.0.0.1:{}/h/{i}", target.port);
        register(
            b,
            Registration {
                checks: vec![http_check(&url, MISSES)],
                ..instance(format!("http-{i}"), "checked", target.port.into(), 3600)
            },
        )
        .await;
    }
    // All passing before the trials start.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(b.orchestrator.http_port, "/api/v1/services/checked/health").unwrap();
        let body: Value = serde_json::from_str(&body).unwrap_or_default();
        if body["counts"]["passing"] == TRIALS {
            break;
        }
        assert!(Instant::now() < deadline, "checks never all passed: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (critical, watcher) = watch(b, "orch.evt.health.checked.check_changed", |d| d["status"] == "critical");
    let mut switched = Vec::new();
    for i in 0..TRIALS {
        // Spread the switches over the check phase.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..250))).await;
        target.codes[i].store(500, Ordering::Relaxed);
        switched.push((format!("http-{i}"), Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && switched.iter().any(|(id, _)| !critical.lock().unwrap().contains_key(id)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let seen = critical.lock().unwrap();
    for (id, at) in &switched {
        match seen.get(id) {
            Some(t) => latencies.record(t.duration_since(*at).as_micros() as u64).unwrap(),
            None => println!("  {id}: no critical event within 15s"),
        }
    }
    report("http_detection", &latencies, 3_000.0 + 100.0, json!({ "interval_ms": 1000, "failures": MISSES }));
}

/// 10,000 instances heartbeating every second, each with an HTTP check every second, all healthy,
/// for two minutes: wrong critical transitions, check throughput and scheduling drift.
async fn scale(b: &Bench) {
    let seconds = scale_seconds();
    println!("scale: {SCALE} instances heartbeating every 1s and {SCALE} HTTP checks every 1s, {seconds}s");
    let target = Target::start(1).await;
    let url = format!("http://127.0.0.1:{}/h/0", target.port);
    let started = Instant::now();
    let mut pending = futures::stream::iter((0..SCALE).map(|i| {
        let registration = Registration {
            checks: vec![http_check(&url, 1)],
            ..instance(format!("s-{i}"), format!("svc-{}", i % 100), target.port.into(), 3)
        };
        let request = Request::register(&registration).expect("a valid registration");
        let client = b.orch.clone();
        async move { client.call(&request, None).await.map(|_| ()) }
    }))
    .buffer_unordered(256);
    while let Some(r) = pending.next().await {
        r.expect("register");
    }
    println!("  registered {SCALE} instances with checks in {:.1}s", started.elapsed().as_secs_f64());

    // Heartbeats for every instance, spread over each second.
    let client = b.client.clone();
    let beats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut round = 0usize;
        loop {
            tick.tick().await;
            let slice = round % 10;
            for i in (slice..SCALE).step_by(10) {
                let _ = client.publish(format!("orch.hb.s-{i}"), "".into()).await;
            }
            round += 1;
        }
    });

    // Warm-up: every check has passed once.
    let port = b.orchestrator.http_port;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let passing = (0..100)
            .map(|s| {
                let (_, body) = http_get(port, &format!("/api/v1/services/svc-{s}/health")).unwrap();
                serde_json::from_str::<Value>(&body).unwrap_or_default()["counts"]["passing"].as_u64().unwrap_or(0)
            })
            .sum::<u64>();
        if passing as usize == SCALE {
            break;
        }
        assert!(Instant::now() < deadline, "only {passing} of {SCALE} instances passing after warm-up");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  all {SCALE} passing after {:.1}s; measuring", started.elapsed().as_secs_f64());

    // Any critical transition from now on is a false positive.
    let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
    let (client, shared) = (b.client.clone(), wrong.clone());
    let watcher = tokio::spawn(async move {
        let mut sub = client.subscribe("orch.evt.>").await.unwrap();
        while let Some(m) = sub.next().await {
            let Ok(e) = serde_json::from_slice::<Value>(&m.payload) else { continue };
            let ty = e["type"].as_str().unwrap_or_default();
            let critical = ty == "io.orch.registry.expired.v1"
                || (ty == "io.orch.health.check_changed.v1" && e["data"]["status"] == "critical")
                || (ty == "io.orch.health.instance_changed.v1" && e["data"]["health"] == "critical");
            if critical {
                shared.lock().unwrap().push(format!("{ty} {}", e["subject"]));
            }
        }
    });
    let runs0 = metric(port, "orch_check_runs_total", None);
    let pid = b.orchestrator.pid().unwrap();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut drift_p99 = Vec::new();
    let mut lagging_windows = 0;
    let mut skipped = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, body) = http_get(port, "/api/v1/health").unwrap();
        let checker = serde_json::from_str::<Value>(&body).unwrap_or_default()["checker"].clone();
        drift_p99.push(checker["drift_p99_ms"].as_f64().unwrap_or(0.0));
        lagging_windows += usize::from(checker["lagging"] == true);
        skipped += checker["skipped"].as_u64().unwrap_or(0);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let runs = metric(port, "orch_check_runs_total", None) - runs0;
    let cpu = (cpu_seconds(pid) - cpu0) / elapsed;
    beats.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    let wrong = wrong.lock().unwrap().clone();
    drift_p99.sort_by(f64::total_cmp);
    let worst = drift_p99.last().copied().unwrap_or(0.0);
    let median = drift_p99.get(drift_p99.len() / 2).copied().unwrap_or(0.0);
    let rate = runs / elapsed;
    println!(
        "  false positives: {} wrong critical transitions in {elapsed:.0}s (target 0: {})",
        wrong.len(),
        if wrong.is_empty() { "met" } else { "NOT MET" }
    );
    for w in wrong.iter().take(10) {
        println!("    {w}");
    }
    println!(
        "  throughput: {rate:.0} checks/s sustained ({SCALE} checks at 1s); drift p99 per 5s window: median \
         {median:.1} ms, worst {worst:.1} ms; {lagging_windows} lagging windows, {skipped} runs skipped; \
         orchestrator CPU {:.0}% of one core",
        cpu * 100.0
    );
    write_json(
        "health_scale",
        &json!({ "checks": SCALE, "seconds": elapsed, "false_positives": wrong.len(), "false_positive_samples": wrong,
            "checks_per_second": rate, "drift_p99_ms_median": median, "drift_p99_ms_worst": worst,
            "lagging_windows": lagging_windows, "skipped": skipped, "orchestrator_cpu_cores": cpu }),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(spec) = std::env::var(HEARTBEATER) {
        heartbeater(&spec).await;
        return;
    }
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("health benchmarks: nats-server + PostgreSQL on this machine, orchestrator release binary");
    let _ = bench_dir();
    if wants("ttl_detection") || wants("http_detection") {
        let b = Bench::start(&[]).await;
        if wants("ttl_detection") {
            ttl_detection(&b).await;
        }
        if wants("http_detection") {
            http_detection(&b).await;
        }
    }
    if wants("scale") {
        // A fresh stack, so the detection runs leave nothing behind.
        let b = Bench::start(&[("ORCH_HEALTH_CONCURRENCY", "4096".to_string())]).await;
        scale(&b).await;
    }
    println!("figures written to target/bench/*.json");
}
