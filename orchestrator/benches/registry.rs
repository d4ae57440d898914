//! Registry benchmarks (`make bench`). Real nats-server (JetStream, file storage, default sync) and
//! a private PostgreSQL (default fsync) on this machine, the orchestrator as a release binary in
//! its own process. Prints each figure and writes it as JSON to `target/bench/<name>.json`.
//!
//! Run one part with `cargo bench -p orchestrator --bench registry -- <baseline|commands|heartbeats|cold_start>`.

mod common;

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_protocol::registry::Registration;
use orch_testkit::{OrchestratorProcess, TempDir};
use serde_json::json;

use common::{
    Bench, WINDOW, bench_dir, cpu_seconds, metric, orchestrator_env, percentile_ms, postgres_pids, rss_bytes,
    write_json,
};

/// Commands and instances of the throughput run (also the heartbeat and cold-start population).
const INSTANCES: usize = 100_000;
/// Commands of the throughput run; `ORCH_BENCH_COMMANDS` overrides it for quick experiments.
fn command_count() -> usize {
    std::env::var("ORCH_BENCH_COMMANDS").ok().and_then(|v| v.parse().ok()).unwrap_or(INSTANCES)
}

fn payload(i: usize) -> String {
    format!(
        r#"{{"id":"b-{i}","name":"svc-{}","version":"1.4.2","address":"10.1.{}.{}","port":8080,"tags":["bench","eu"],"ttl_seconds":3600}}"#,
        i % 200,
        (i / 250) % 250,
        i % 250
    )
}

/// The payload above is written out by hand on purpose: the recorded figures were measured with
/// these bytes, and the protocol type would add its defaults. It must stay a valid registration.
fn check_payload() {
    let registration: Registration = serde_json::from_str(&payload(12_345)).expect("the payload is a registration");
    registration.validate().expect("the payload is a valid registration");
    assert_eq!(serde_json::to_value(&registration).unwrap()["tags"], json!(["bench", "eu"]));
}

/// Publishes `count` messages with at most WINDOW acks outstanding; returns the elapsed time.
async fn publish_windowed(
    js: &jetstream::Context,
    count: usize,
    mut message: impl FnMut(usize) -> (String, String, String),
    mut sent: impl FnMut(usize),
) -> Duration {
    let started = Instant::now();
    let mut window = VecDeque::with_capacity(WINDOW);
    for i in 0..count {
        let (subject, id, body) = message(i);
        let ack = js
            .send_publish(subject, PublishMessage::build().payload(body.into()).message_id(id))
            .await
            .expect("publish");
        sent(i);
        window.push_back(ack.into_future());
        if window.len() >= WINDOW {
            window.pop_front().unwrap().await.expect("PubAck");
        }
    }
    for ack in window {
        ack.await.expect("PubAck");
    }
    started.elapsed()
}

/// CPU seconds used so far by the orchestrator, nats-server and PostgreSQL.
fn cpu_split(b: &Bench) -> [f64; 3] {
    [
        b.orchestrator.pid().map(cpu_seconds).unwrap_or(0.0),
        b.nats().pid().map(cpu_seconds).unwrap_or(0.0),
        postgres_pids(b._postgres.port).into_iter().map(cpu_seconds).sum(),
    ]
}

/// The one field the load generator reads from each event (a light client, so it takes little of
/// the machine's CPU away from the system under test).
#[derive(serde::Deserialize)]
struct EventSubject {
    subject: String,
}

/// Ceiling: raw JetStream async publish of the same payloads to a file-storage stream.
async fn baseline(b: &Bench) -> f64 {
    b.js.create_stream(jetstream::stream::Config {
        name: "BENCH_BASELINE".into(),
        subjects: vec!["bench.baseline".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let n = INSTANCES;
    let elapsed =
        publish_windowed(&b.js, n, |i| ("bench.baseline".into(), format!("base-{i}"), payload(i)), |_| {}).await;
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "baseline   raw JetStream async publish: {n} msgs of ~{} B in {:.2}s = {rate:.0} msg/s",
        payload(0).len(),
        elapsed.as_secs_f64()
    );
    b.js.delete_stream("BENCH_BASELINE").await.unwrap();
    write_json(
        "baseline",
        &json!({ "messages": n, "payload_bytes": payload(0).len(), "seconds": elapsed.as_secs_f64(), "msgs_per_sec": rate }),
    );
    rate
}

/// Registers `count` instances starting at `offset` through the commands stream as fast as the
/// publish window allows. Returns (elapsed until the last event, latency histogram in µs).
async fn command_run(b: &Bench, offset: usize, count: usize) -> (Duration, Histogram<u64>) {
    let mut events = b.client.subscribe(format!("{}.evt.registry.*.registered", b.subjects.prefix())).await.unwrap();
    b.client.flush().await.unwrap();
    let sent_at: std::sync::Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![None; count]));
    let receiver = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
            let mut seen = 0;
            let mut last = Instant::now();
            while seen < count {
                let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(120), events.next()).await else {
                    panic!("events stopped after {seen} of {count}");
                };
                let now = Instant::now();
                let event: EventSubject = serde_json::from_slice(&msg.payload).unwrap();
                let idx: usize = event.subject.trim_start_matches("b-").parse().unwrap();
                if let Some(Some(t0)) = sent_at.lock().unwrap().get(idx - offset) {
                    h.record(now.duration_since(*t0).as_micros().max(1) as u64).unwrap();
                }
                seen += 1;
                last = now;
            }
            (h, last)
        })
    };
    let started = Instant::now();
    // When did the writer finish committing, and the relay finish publishing?
    let port = b.orchestrator.http_port;
    let committed0 = metric(port, "orch_commands_total", Some("applied"));
    let published0 = metric(port, "orch_outbox_published_total", None);
    let progress = tokio::task::spawn_blocking(move || {
        let (mut committed_at, mut published_at) = (None, None);
        while published_at.is_none() && started.elapsed() < Duration::from_secs(300) {
            let now = started.elapsed();
            if committed_at.is_none()
                && metric(port, "orch_commands_total", Some("applied")) - committed0 >= count as f64
            {
                committed_at = Some(now);
            }
            if metric(port, "orch_outbox_published_total", None) - published0 >= count as f64 {
                published_at = Some(now);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (committed_at, published_at)
    });
    let subject = b.subjects.command("registry", "register");
    let publishing = publish_windowed(
        &b.js,
        count,
        |i| (subject.clone(), format!("cmd-{}", offset + i), payload(offset + i)),
        |i| {
            sent_at.lock().unwrap()[i] = Some(Instant::now());
        },
    )
    .await;
    println!(
        "           publishing the commands took {:.2}s ({:.0}/s accepted by JetStream while the orchestrator consumed)",
        publishing.as_secs_f64(),
        count as f64 / publishing.as_secs_f64()
    );
    let (h, last) = receiver.await.unwrap();
    let (committed_at, published_at) = progress.await.unwrap();
    println!(
        "           all committed by the writer after {:.2}s, all published by the relay after {:.2}s",
        committed_at.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
        published_at.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
    );
    (last.duration_since(started), h)
}

async fn paced_command_run(b: &Bench, offset: usize, count: usize, rate: f64) -> Histogram<u64> {
    let mut events = b.client.subscribe(format!("{}.evt.registry.*.registered", b.subjects.prefix())).await.unwrap();
    b.client.flush().await.unwrap();
    let subject = b.subjects.command("registry", "register");
    let mut sent_at = vec![Instant::now(); count];
    let start = Instant::now();
    let publisher = {
        let js = b.js.clone();
        tokio::spawn(async move {
            let mut acks = VecDeque::new();
            let mut times = Vec::with_capacity(count);
            for i in 0..count {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                times.push(Instant::now());
                let ack = js
                    .send_publish(
                        subject.clone(),
                        PublishMessage::build()
                            .payload(payload(offset + i).into())
                            .message_id(format!("cmd-{}", offset + i)),
                    )
                    .await
                    .unwrap();
                acks.push_back(ack.into_future());
                if acks.len() >= WINDOW {
                    acks.pop_front().unwrap().await.unwrap();
                }
            }
            for a in acks {
                a.await.unwrap();
            }
            times
        })
    };
    let mut received = vec![None; count];
    for _ in 0..count {
        let msg = tokio::time::timeout(Duration::from_secs(120), events.next()).await.unwrap().unwrap();
        let event: EventSubject = serde_json::from_slice(&msg.payload).unwrap();
        let idx: usize = event.subject.trim_start_matches("b-").parse().unwrap();
        received[idx - offset] = Some(Instant::now());
    }
    let times = publisher.await.unwrap();
    sent_at.copy_from_slice(&times);
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    for (t0, t1) in sent_at.iter().zip(received) {
        h.record(t1.unwrap().duration_since(*t0).as_micros().max(1) as u64).unwrap();
    }
    h
}

async fn commands(b: &Bench, baseline: Option<f64>) {
    let n = command_count();
    let cpu0 = cpu_split(b);
    let (elapsed, saturated) = command_run(b, 0, n).await;
    let cpu1 = cpu_split(b);
    let cpu: Vec<f64> = cpu0.iter().zip(cpu1).map(|(a, b)| (b - a) / elapsed.as_secs_f64() * 100.0).collect();
    let throughput = n as f64 / elapsed.as_secs_f64();
    println!(
        "commands   end to end (published -> committed in PostgreSQL -> event seen): {n} in {:.2}s = {throughput:.0} cmd/s",
        elapsed.as_secs_f64()
    );
    println!(
        "           CPU during the run (% of one core): orchestrator {:.0}, nats-server {:.0}, PostgreSQL {:.0} (2 cores = 200)",
        cpu[0], cpu[1], cpu[2]
    );
    println!(
        "           latency at saturation: p50 {:.1} ms, p99 {:.1} ms (queueing included)",
        percentile_ms(&saturated, 0.5),
        percentile_ms(&saturated, 0.99)
    );
    // Latency at a steady load well under saturation, as a client would see it.
    let paced_rate = (throughput * 0.5).clamp(100.0, 10_000.0);
    let paced_n = 20_000;
    let paced = paced_command_run(b, n, paced_n, paced_rate).await;
    println!(
        "           latency at {paced_rate:.0} cmd/s steady: p50 {:.2} ms, p99 {:.2} ms ({paced_n} commands)",
        percentile_ms(&paced, 0.5),
        percentile_ms(&paced, 0.99)
    );
    let port = b.orchestrator.http_port;
    let batches = metric(port, "orch_batch_size_count", None);
    let mean_batch = metric(port, "orch_batch_size_sum", None) / batches.max(1.0);
    let mean_commit_ms = metric(port, "orch_batch_commit_seconds_sum", None) / batches.max(1.0) * 1000.0;
    println!(
        "           writer: {batches:.0} batches, mean {mean_batch:.1} commands per batch, mean {mean_commit_ms:.2} ms to apply and commit one"
    );
    let share = baseline.map(|base| throughput / base);
    if let Some(share) = share {
        println!("           {:.1}% of the raw JetStream baseline (target >= 25%, and >= 20000 cmd/s)", share * 100.0);
    }
    write_json(
        "commands",
        &json!({
            "commands": n,
            "seconds": elapsed.as_secs_f64(),
            "commands_per_sec": throughput,
            "saturated_p50_ms": percentile_ms(&saturated, 0.5),
            "saturated_p99_ms": percentile_ms(&saturated, 0.99),
            "steady_rate_per_sec": paced_rate,
            "steady_commands": paced_n,
            "steady_p50_ms": percentile_ms(&paced, 0.5),
            "steady_p99_ms": percentile_ms(&paced, 0.99),
            "baseline_msgs_per_sec": baseline,
            "cpu_percent_orchestrator": cpu[0],
            "cpu_percent_nats_server": cpu[1],
            "cpu_percent_postgres": cpu[2],
            "writer_batches": batches,
            "writer_mean_batch": mean_batch,
            "writer_mean_commit_ms": mean_commit_ms,
            "share_of_baseline": share,
        }),
    );
}

/// Heartbeats from every live instance at the target rate, then as fast as one client can send.
async fn heartbeats(b: &Bench) {
    let port = b.orchestrator.http_port;
    let pid = b.orchestrator.pid().unwrap();
    let live = command_count();
    let mut results = Vec::new();
    for (label, rate, seconds) in [("target", Some(100_000.0), 10.0), ("max", None, 5.0)] {
        let before = metric(port, "orch_heartbeats_total", Some("renewed"));
        let unknown_before = metric(port, "orch_heartbeats_total", Some("unknown"));
        let cpu0 = cpu_seconds(pid);
        let start = Instant::now();
        let mut sent = 0usize;
        let subjects: Vec<String> = (0..live).map(|i| b.subjects.heartbeat(&format!("b-{i}"))).collect();
        while start.elapsed().as_secs_f64() < seconds {
            // 1 ms slices keep the offered rate even.
            let due = match rate {
                Some(r) => ((start.elapsed().as_secs_f64() + 0.001) * r) as usize,
                None => sent + 2000,
            };
            while sent < due {
                b.client.publish(subjects[sent % live].clone(), bytes::Bytes::new()).await.unwrap();
                sent += 1;
            }
            if rate.is_some() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        b.client.flush().await.unwrap();
        let offered_secs = start.elapsed().as_secs_f64();
        // Let the orchestrator finish what is buffered, then count.
        let mut absorbed = 0.0;
        for _ in 0..100 {
            absorbed = metric(port, "orch_heartbeats_total", Some("renewed")) - before;
            if absorbed as usize >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let unknown = metric(port, "orch_heartbeats_total", Some("unknown")) - unknown_before;
        let rate_absorbed = absorbed / offered_secs;
        println!(
            "heartbeats {label:>6}: sent {sent} in {offered_secs:.1}s ({:.0}/s) from {live} live instances; absorbed {absorbed:.0} ({rate_absorbed:.0}/s, {:.2}% of sent); orchestrator CPU {:.0}% of one core",
            sent as f64 / offered_secs,
            absorbed / sent as f64 * 100.0,
            cpu / wall * 100.0
        );
        assert_eq!(unknown, 0.0, "every heartbeat was for a registered instance");
        results.push(json!({
            "run": label, "live_instances": live, "sent": sent, "seconds": offered_secs,
            "offered_per_sec": sent as f64 / offered_secs, "absorbed": absorbed, "absorbed_per_sec": rate_absorbed,
            "orchestrator_cpu_percent_of_one_core": cpu / wall * 100.0,
        }));
    }
    write_json("heartbeats", &json!({ "runs": results }));
}

/// Time until serving with the registered instances in PostgreSQL, and memory per instance.
async fn cold_start(b: &mut Bench) {
    let count: i64 = {
        let pool = sqlx::PgPool::connect(&b.database_url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM instances").fetch_one(&pool).await.unwrap()
    };
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..3 {
        b.orchestrator.stop();
        let t0 = Instant::now();
        b.orchestrator.start_again();
        b.orchestrator.wait_ready(Duration::from_secs(120));
        times.push(t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = rss_bytes(b.orchestrator.pid().unwrap());
    }
    times.sort_by(f64::total_cmp);
    // The same binary with an empty registry, for the per-instance difference.
    let empty_db = orch_testkit::fresh_database_on(&b._postgres.url).await;
    let logs = TempDir::new("orch-bench-empty");
    let mut empty = OrchestratorProcess::start(
        env!("CARGO_BIN_EXE_orchestrator"),
        &orchestrator_env(b.users(), &empty_db),
        logs.path().join("o.log"),
    );
    empty.wait_ready(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = rss_bytes(empty.pid().unwrap());
    drop(empty);
    let per_instance = rss.saturating_sub(rss_empty) as f64 / count as f64;
    println!(
        "cold start with {count} instances in PostgreSQL: median {:.2}s to ready (runs {:?}; target < 3s); RSS {:.1} MiB vs {:.1} MiB empty = {per_instance:.0} B per instance",
        times[1],
        times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>(),
        rss as f64 / 1048576.0,
        rss_empty as f64 / 1048576.0
    );
    write_json(
        "cold_start",
        &json!({ "instances": count, "seconds_median": times[1], "seconds_runs": times, "rss_bytes": rss, "rss_empty_bytes": rss_empty, "rss_bytes_per_instance": per_instance }),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = std::fs::remove_file(bench_dir().join("orchestrator.log"));
    check_payload();
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("registry benchmarks: nats-server + PostgreSQL on this machine, JetStream file storage, default fsync");
    let mut b = Bench::start(&[]).await;
    let base = if wants("baseline") || wants("commands") { Some(baseline(&b).await) } else { None };
    // Heartbeats and cold start need the population the command run registers.
    if wants("commands") || wants("heartbeats") || wants("cold_start") {
        commands(&b, base).await;
    }
    if wants("heartbeats") {
        heartbeats(&b).await;
    }
    if wants("cold_start") {
        cold_start(&mut b).await;
    }
    println!("figures written to target/bench/*.json");
}
