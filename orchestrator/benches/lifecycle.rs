//! Lifecycle benchmarks (`make bench`): start-up runs of managed services through the HTTP API,
//! with real processes (`orch-sleeper`, each under its shim) run by the embedded agent. Real
//! nats-server and a private PostgreSQL, the orchestrator as a release binary in its own process.
//! Prints each figure and writes it as JSON to `target/bench/<name>.json`.
//!
//! Run one part with
//! `cargo bench -p orchestrator --bench lifecycle -- <dag_startup|dag_startup_notify|independent_launches>`.
//! `dag_startup_notify` is `dag_startup` with services that notify their readiness (`notify =
//! true`, `sd_notify`'s `READY=1`) instead of being probed.
//! The orchestrator inherits this process's environment, so `ORCH_STARTUP_PROBE_INTERVAL=5ms`
//! measures another start-up probe interval than the default 5 ms.
//!
//! Times come from the orchestrator's own start-up profile (`GET /api/v1/stack/profile`, polled
//! every 50 ms): `started_ms` is when the launch was asked of the agent, `ready_ms` when the
//! readiness check first passed (or the service's `READY=1` was taken), both from the start of
//! the run.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use orch_client::stack::StackClient;
use orch_protocol::stack::RunProfile;
use orch_testkit::TempDir;
use serde_json::{Value, json};
use uuid::Uuid;

use common::{Bench, bench_dir, cpu_seconds, write_json};

const SLEEPER: &str = env!("CARGO_BIN_EXE_orch-sleeper");

/// The graph of `dag_startup`: `LEVELS` levels of `WIDTH` services, each service of a level
/// needing 1-3 services of the level before it to be healthy.
const LEVELS: usize = 10;
const WIDTH: usize = 20;
const DEPENDENCIES: RangeInclusive<usize> = 1..=3;
/// Each service's start-up time (`--ready-after`) is drawn from this range.
const READY_AFTER_MS: RangeInclusive<u64> = 50..=400;
/// The same graph and durations in every run.
const SEED: u64 = 20_260_101;
/// Services of `independent_launches`.
const INDEPENDENT: usize = 500;
/// How often the profile is read while a run goes on.
const POLL: Duration = Duration::from_millis(50);
/// Targets of the issue.
const TARGET_RATIO: f64 = 1.05;
const TARGET_OVERHEAD_MS: f64 = 2.0;

/// One service of a synthetic stack.
struct Spec {
    name: String,
    ready_after_ms: u64,
    /// Indices of the services it needs healthy (always earlier in the list).
    deps: Vec<usize>,
}

/// The DAG of `dag_startup`, level by level (so in dependency order).
fn dag() -> Vec<Spec> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut specs = Vec::with_capacity(LEVELS * WIDTH);
    for level in 0..LEVELS {
        for i in 0..WIDTH {
            let deps = if level == 0 {
                Vec::new()
            } else {
                let mut previous: Vec<usize> = ((level - 1) * WIDTH..level * WIDTH).collect();
                rng.shuffle(&mut previous);
                previous.truncate(rng.usize(DEPENDENCIES));
                previous.sort_unstable();
                previous
            };
            specs.push(Spec { name: format!("d{level:02}-{i:02}"), ready_after_ms: rng.u64(READY_AFTER_MS), deps });
        }
    }
    specs
}

/// `count` distinct free ports: all bound at once, so none is handed out twice.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// How the services of a stack say they are ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// A TCP readiness check, polled every start-up probe interval until the sleeper listens.
    Probe,
    /// The sleeper sends `READY=1` to its `NOTIFY_SOCKET` (`notify = true`); nothing is polled.
    Notify,
}

impl Readiness {
    fn describe(self) -> String {
        match self {
            Readiness::Probe => format!("tcp readiness probed every {}", probe_interval()),
            Readiness::Notify => "readiness by notification (sd_notify READY=1)".into(),
        }
    }
}

/// The manifest of `specs`, service `i` on port `ports[i]` (registered once ready; the sleeper
/// listens there, or, notifying, only carries it on its command line).
fn manifest(specs: &[Spec], ports: &[u16], max_parallel: usize, readiness: Readiness) -> String {
    let mut text = format!("max_parallel = {max_parallel}\n");
    for (spec, port) in specs.iter().zip(ports) {
        let deps: Vec<String> = spec.deps.iter().map(|&d| format!("\"{}\" = \"healthy\"", specs[d].name)).collect();
        let (notify_arg, ready) = match readiness {
            Readiness::Probe => ("", r#"readiness = { kind = "tcp", interval = "1s" }"#),
            Readiness::Notify => (r#", "--notify""#, "notify = true"),
        };
        text.push_str(&format!(
            r#"
[services.{name}]
command = "{SLEEPER}"
args = ["--ready-after", "{ms}ms", "--port", "{port}"{notify_arg}]
port = {port}
{ready}
grace_period = "5s"
depends_on = {{ {deps} }}
"#,
            name = spec.name,
            ms = spec.ready_after_ms,
            deps = deps.join(", "),
        ));
    }
    text
}

/// The longest path through the graph weighted by the configured start-up times: its length in
/// ms and its services, first to last.
fn known_critical_path(specs: &[Spec]) -> (u64, Vec<usize>) {
    // (length of the longest path ending here, the dependency it comes through)
    let mut best: Vec<(u64, Option<usize>)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let before = spec.deps.iter().map(|&d| (best[d].0, Some(d))).max().unwrap_or((0, None));
        best.push((before.0 + spec.ready_after_ms, before.1));
    }
    let Some(mut at) = (0..specs.len()).max_by_key(|&i| best[i].0) else { return (0, Vec::new()) };
    let length = best[at].0;
    let mut path = vec![at];
    while let Some(previous) = best[at].1 {
        path.push(previous);
        at = previous;
    }
    path.reverse();
    (length, path)
}

/// The orchestrator's HTTP API, through the client crate.
struct Api(StackClient);

impl Api {
    fn new(port: u16) -> Api {
        Api(StackClient::new(&format!("http://127.0.0.1:{port}"), None).expect("HTTP client"))
    }

    /// Applies `manifest`; returns the id of the start-up run it began.
    async fn apply(&self, manifest: String) -> Uuid {
        self.0.apply(manifest, "bench").await.unwrap_or_else(|e| panic!("PUT /stack: {e}")).run_id
    }

    /// Polls the profile until run `run_id` has finished, for at most `timeout`.
    async fn finished(&self, run_id: Uuid, timeout: Duration) -> Option<RunProfile> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(profile) = self.0.profile().await
                && profile.run_id == run_id
                && profile.finished
            {
                return Some(profile);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// (run id, service, state) of a lifecycle transition.
type TransitionKey = (String, String, String);

/// When each lifecycle transition of a run happened, from the lifecycle events (their `time` is
/// taken by the controller at the transition): the first one of each key.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<HashMap<TransitionKey, DateTime<Utc>>>>);

impl Transitions {
    async fn watch(b: &Bench) -> Transitions {
        let transitions = Transitions::default();
        let mut events =
            b.client.subscribe(format!("{}.evt.lifecycle.*.*", b.subjects.prefix())).await.expect("subscribe");
        let seen = transitions.0.clone();
        tokio::spawn(async move {
            while let Some(m) = events.next().await {
                let Ok(event) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                let data = &event["data"];
                let (Some(run), Some(service), Some(state), Some(time)) = (
                    data["run_id"].as_str(),
                    data["service"].as_str(),
                    data["state"].as_str(),
                    event["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                ) else {
                    continue;
                };
                let key = (run.to_string(), service.to_string(), state.to_string());
                seen.lock().unwrap().entry(key).or_insert(time.with_timezone(&Utc));
            }
        });
        transitions
    }

    /// Milliseconds from `service`'s transition to `from` until the one to `to` in run `run`.
    fn between(&self, run: &str, service: &str, from: &str, to: &str) -> Option<f64> {
        let seen = self.0.lock().unwrap();
        let at = |state: &str| seen.get(&(run.to_string(), service.to_string(), state.to_string())).copied();
        Some((at(to)? - at(from)?).num_microseconds()? as f64 / 1000.0)
    }

    /// Waits (at most 10 s: events leave through the outbox after the commit) until every one of
    /// `services` has its `ready` event of run `run`.
    async fn settle(&self, run: &str, services: &[Spec]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let missing = {
                let seen = self.0.lock().unwrap();
                services.iter().any(|s| !seen.contains_key(&(run.to_string(), s.name.clone(), "ready".to_string())))
            };
            if !missing {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A duration in milliseconds, as the profile shows it.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What one start-up run measured.
struct Run {
    run_id: Uuid,
    profile: RunProfile,
    /// From sending the PUT until a poll saw the run finished.
    observed: Duration,
    /// Orchestrator CPU over the same span, in seconds.
    cpu: f64,
}

impl Run {
    fn wall_ms(&self) -> f64 {
        ms(self.profile.profile.wall)
    }

    /// `field` of the service's timing: `queued_ms`, `started_ms` or `ready_ms`.
    fn timing(&self, service: &str, field: &str) -> Option<f64> {
        let timing = self.profile.profile.services.get(service)?;
        match field {
            "queued_ms" => Some(ms(timing.queued)),
            "started_ms" => timing.started.map(ms),
            "ready_ms" => timing.ready.map(ms),
            other => panic!("no timing {other}"),
        }
    }
}

/// Applies `manifest` and waits until its start-up run has finished. `None` (and the reason
/// printed) when the run did not end with every service ready.
async fn start_up(b: &Bench, api: &Api, manifest: String, timeout: Duration) -> Option<Run> {
    let pid = b.orchestrator.pid().expect("orchestrator running");
    let (t0, cpu0) = (Instant::now(), cpu_seconds(pid));
    let run_id = api.apply(manifest).await;
    let Some(profile) = api.finished(run_id, timeout).await else {
        println!("  the start-up run did not finish within {timeout:?}");
        return None;
    };
    let run = Run { run_id, observed: t0.elapsed(), cpu: cpu_seconds(pid) - cpu0, profile };
    if run.profile.outcome.as_deref() != Some("ready") {
        let counts = api.0.stack().await.map(|view| view.counts).unwrap_or_default();
        println!("  the start-up run ended {:?} instead of ready; services by state: {counts:?}", run.profile.outcome);
        return None;
    }
    Some(run)
}

/// Pids of the orch-sleeper processes told to listen on one of `ports`.
fn sleepers(ports: &BTreeSet<u16>) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        // The shim's own command line names the sleeper too, but not as its program.
        if !args.first().is_some_and(|a| a.ends_with("orch-sleeper")) || !orch_testkit::process_alive(pid) {
            continue;
        }
        let port = args.iter().position(|a| a == "--port").and_then(|i| args.get(i + 1)?.parse::<u16>().ok());
        if port.is_some_and(|p| ports.contains(&p)) {
            pids.push(pid);
        }
    }
    pids
}

/// `DELETE /stack` (answered once everything has stopped), then checks that none of the
/// sleepers on `ports` still runs. Returns (services stopped, seconds, sleepers left).
async fn take_down(api: &Api, ports: &[u16]) -> (u64, f64, usize) {
    let started = Instant::now();
    let reply = api.0.down().await.unwrap_or_else(|e| panic!("DELETE /stack: {e}"));
    let took = started.elapsed().as_secs_f64();
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    // The agent answers a stop once the process has ended; a little slack for the shims.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = sleepers(&ports);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = sleepers(&ports);
    }
    let stopped = reply.stopped as u64;
    let verdict =
        if left.is_empty() { "none".to_string() } else { format!("{} NOT STOPPED: pids {left:?}", left.len()) };
    line(
        "teardown",
        format!("DELETE stopped {stopped} services in {took:.2} s; orch-sleeper processes left: {verdict}"),
    );
    (stopped, took, left.len())
}

/// One aligned `name: value` line of a part's figures.
fn line(name: &str, value: impl Display) {
    println!("  {:<42}{value}", format!("{name}:"));
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT MET" }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The nearest-rank quantile `q` of `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `mean m, p50 a, p99 b` in ms.
fn summary(values: &[f64]) -> String {
    format!("mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms", mean(values), quantile(values, 0.5), quantile(values, 0.99))
}

fn probe_interval() -> String {
    std::env::var("ORCH_STARTUP_PROBE_INTERVAL")
        .map(|v| format!("{v} (ORCH_STARTUP_PROBE_INTERVAL)"))
        .unwrap_or_else(|_| "5ms (default)".into())
}

/// The overhead of each service of a run, in ms, and its parts.
struct Overheads {
    /// From the moment it could start until its launch was asked of the agent: when its last
    /// dependency was ready (the start of the run for those without), or, one at a time, when
    /// the service before it was ready, whichever came later.
    dispatch: Vec<f64>,
    /// From then until ready, less its own start-up time.
    to_ready: Vec<f64>,
    /// Of `to_ready`: from the launch asked until the agent confirmed the process (its pid)...
    to_pid: Vec<f64>,
    /// ... and from then until ready, less its own start-up time (the process starting under its
    /// shim, and the readiness check noticing it listens).
    pid_to_ready: Vec<f64>,
}

impl Overheads {
    fn of(specs: &[Spec], run: &Run, transitions: &Transitions, one_at_a_time: bool) -> Overheads {
        let readies: Vec<f64> = specs.iter().filter_map(|s| run.timing(&s.name, "ready_ms")).collect();
        let mut o =
            Overheads { dispatch: Vec::new(), to_ready: Vec::new(), to_pid: Vec::new(), pid_to_ready: Vec::new() };
        for spec in specs {
            let (Some(started), Some(ready)) =
                (run.timing(&spec.name, "started_ms"), run.timing(&spec.name, "ready_ms"))
            else {
                continue;
            };
            let mut met = spec.deps.iter().filter_map(|&d| run.timing(&specs[d].name, "ready_ms")).fold(0.0, f64::max);
            if one_at_a_time {
                met = readies.iter().copied().filter(|&r| r <= started).fold(met, f64::max);
            }
            o.dispatch.push(started - met);
            o.to_ready.push(ready - started - spec.ready_after_ms as f64);
            if let Some(to_pid) = transitions.between(&run.run_id.to_string(), &spec.name, "starting", "started") {
                o.to_pid.push(to_pid);
            }
            if let Some(pid_to_ready) = transitions.between(&run.run_id.to_string(), &spec.name, "started", "ready") {
                o.pid_to_ready.push(pid_to_ready - spec.ready_after_ms as f64);
            }
        }
        o
    }

    fn total(&self) -> Vec<f64> {
        self.dispatch.iter().zip(&self.to_ready).map(|(d, r)| d + r).collect()
    }

    fn print(&self) {
        line("  could start -> launch asked", summary(&self.dispatch));
        line("  launch asked -> ready, less start-up", summary(&self.to_ready));
        line("    launch asked -> pid from the agent", summary(&self.to_pid));
        line("    pid -> ready, less start-up", summary(&self.pid_to_ready));
    }
}

/// 200 sleepers in a DAG with known start-up times, as parallel as the graph allows; then the
/// same graph one service at a time as the serial baseline. `readiness` says how they are found
/// ready; the figures go to `target/bench/<part>.json`.
async fn dag_startup(b: &Bench, api: &Api, transitions: &Transitions, part: &str, readiness: Readiness) {
    let specs = dag();
    let n = specs.len();
    let edges: usize = specs.iter().map(|s| s.deps.len()).sum();
    let (known_ms, path) = known_critical_path(&specs);
    let serial_sum_ms: u64 = specs.iter().map(|s| s.ready_after_ms).sum();
    println!(
        "{part}: {n} orch-sleeper processes in {LEVELS} levels of {WIDTH}, each needing {}-{} of the level \
         before healthy ({edges} edges), ready after {}-{} ms (seed {SEED}); max_parallel {n}; {}",
        DEPENDENCIES.start(),
        DEPENDENCIES.end(),
        READY_AFTER_MS.start(),
        READY_AFTER_MS.end(),
        readiness.describe()
    );
    let ports = free_ports(n);
    let Some(parallel) = start_up(b, api, manifest(&specs, &ports, n, readiness), Duration::from_secs(120)).await
    else {
        take_down(api, &ports).await;
        return;
    };
    transitions.settle(&parallel.run_id.to_string(), &specs).await;
    let wall = parallel.wall_ms();
    let ratio = wall / known_ms as f64;
    let parts = Overheads::of(&specs, &parallel, transitions, false);
    let overhead = parts.total();
    let names: Vec<&str> = path.iter().map(|&i| specs[i].name.as_str()).collect();
    let chain: Vec<&str> = parallel.profile.profile.chain.iter().map(|l| l.service.as_str()).collect();
    line(
        "wall (profile)",
        format!(
            "{:.3} s ({:.3} s from the PUT until a poll saw the run finished)",
            wall / 1000.0,
            parallel.observed.as_secs_f64()
        ),
    );
    line(
        "known critical path",
        format!("{:.3} s through {} services: {}", known_ms as f64 / 1000.0, names.len(), names.join(" -> ")),
    );
    line(
        "wall / known critical path",
        format!("{ratio:.3} (target <= {TARGET_RATIO}: {})", met(ratio <= TARGET_RATIO)),
    );
    line(
        "orchestrator's critical path",
        format!(
            "{:.3} s, efficiency {:.3}; its chain {} the known one",
            parallel.profile.profile.critical_path.as_secs_f64(),
            parallel.profile.profile.efficiency,
            if chain == names { "is" } else { "differs from" }
        ),
    );
    line(
        "overhead per service",
        format!(
            "{} over {} services (target < {TARGET_OVERHEAD_MS} ms: {})",
            summary(&overhead),
            overhead.len(),
            met(mean(&overhead) < TARGET_OVERHEAD_MS)
        ),
    );
    parts.print();
    line(
        "orchestrator CPU",
        format!(
            "{:.2} s over the run ({:.0}% of one core)",
            parallel.cpu,
            parallel.cpu / parallel.observed.as_secs_f64() * 100.0
        ),
    );
    take_down(api, &ports).await;

    let ports = free_ports(n);
    let Some(serial) = start_up(b, api, manifest(&specs, &ports, 1, readiness), Duration::from_secs(300)).await else {
        take_down(api, &ports).await;
        return;
    };
    transitions.settle(&serial.run_id.to_string(), &specs).await;
    let serial_wall = serial.wall_ms();
    let speedup = serial_wall / wall;
    let serial_parts = Overheads::of(&specs, &serial, transitions, true);
    line(
        "serial baseline (max_parallel 1)",
        format!(
            "{:.3} s wall; the start-up times add up to {:.3} s, so {:.2} ms per service beyond them",
            serial_wall / 1000.0,
            serial_sum_ms as f64 / 1000.0,
            (serial_wall - serial_sum_ms as f64) / n as f64
        ),
    );
    line("overhead per service, serial", summary(&serial_parts.total()));
    serial_parts.print();
    line("speed-up", format!("{speedup:.1}x (serial wall / parallel wall)"));
    let (_, _, left) = take_down(api, &ports).await;

    let ready_after: serde_json::Map<String, Value> =
        specs.iter().map(|s| (s.name.clone(), json!(s.ready_after_ms))).collect();
    write_json(
        part,
        &json!({
            "services": n, "levels": LEVELS, "width": WIDTH, "edges": edges, "seed": SEED,
            "readiness": readiness.describe(),
            "startup_probe_interval": probe_interval(),
            "wall_ms": wall, "observed_ms": parallel.observed.as_secs_f64() * 1000.0,
            "known_critical_path_ms": known_ms, "known_critical_path": names,
            "wall_over_known_critical_path": ratio, "target_ratio": TARGET_RATIO,
            "orchestrator_critical_path_ms": ms(parallel.profile.profile.critical_path),
            "orchestrator_efficiency": parallel.profile.profile.efficiency,
            "overhead_mean_ms": mean(&overhead), "overhead_p50_ms": quantile(&overhead, 0.5),
            "overhead_p99_ms": quantile(&overhead, 0.99), "target_overhead_ms": TARGET_OVERHEAD_MS,
            "dispatch_mean_ms": mean(&parts.dispatch), "dispatch_p99_ms": quantile(&parts.dispatch, 0.99),
            "launch_to_ready_mean_ms": mean(&parts.to_ready), "launch_to_ready_p99_ms": quantile(&parts.to_ready, 0.99),
            "launch_to_pid_mean_ms": mean(&parts.to_pid), "launch_to_pid_p99_ms": quantile(&parts.to_pid, 0.99),
            "orchestrator_cpu_seconds": parallel.cpu,
            "serial_wall_ms": serial_wall, "serial_sum_of_startup_ms": serial_sum_ms, "speedup": speedup,
            "serial_overhead_mean_ms": mean(&serial_parts.total()),
            "serial_launch_to_pid_mean_ms": mean(&serial_parts.to_pid),
            "sleepers_left": left,
            "ready_after_ms": ready_after,
            "profiles": { "parallel": parallel.profile, "serial": serial.profile },
        }),
    );
}

/// 500 sleepers without dependencies, ready at once: how fast the orchestrator and its agent
/// launch processes.
async fn independent_launches(b: &Bench, api: &Api, transitions: &Transitions) {
    let specs: Vec<Spec> =
        (0..INDEPENDENT).map(|i| Spec { name: format!("i{i:03}"), ready_after_ms: 0, deps: Vec::new() }).collect();
    println!(
        "independent_launches: {INDEPENDENT} orch-sleeper processes without dependencies, ready at once, tcp \
         readiness; max_parallel {INDEPENDENT} (set explicitly); start-up probe every {}",
        probe_interval()
    );
    let ports = free_ports(INDEPENDENT);
    let Some(run) =
        start_up(b, api, manifest(&specs, &ports, INDEPENDENT, Readiness::Probe), Duration::from_secs(120)).await
    else {
        take_down(api, &ports).await;
        return;
    };
    transitions.settle(&run.run_id.to_string(), &specs).await;
    let wall = run.wall_ms();
    let times = |field: &str| -> Vec<f64> { specs.iter().filter_map(|s| run.timing(&s.name, field)).collect() };
    let (started, ready) = (times("started_ms"), times("ready_ms"));
    let took: Vec<f64> = ready.iter().zip(&started).map(|(r, s)| r - s).collect();
    let parts = Overheads::of(&specs, &run, transitions, false);
    let rate = INDEPENDENT as f64 / (wall / 1000.0);
    let quantiles = |v: &[f64]| {
        format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0))
    };
    line(
        "wall (profile)",
        format!(
            "{:.3} s ({:.3} s from the PUT until a poll saw the run finished)",
            wall / 1000.0,
            run.observed.as_secs_f64()
        ),
    );
    line("launches per second", format!("{rate:.0} ({INDEPENDENT} / wall, until all were ready)"));
    line("ready_ms", quantiles(&ready));
    line("started_ms (launch asked)", quantiles(&started));
    line("launch asked -> ready", quantiles(&took));
    line("  launch asked -> pid from the agent", quantiles(&parts.to_pid));
    line("  pid -> ready", quantiles(&parts.pid_to_ready));
    line(
        "orchestrator CPU",
        format!("{:.2} s over the run ({:.0}% of one core)", run.cpu, run.cpu / run.observed.as_secs_f64() * 100.0),
    );
    let (_, _, left) = take_down(api, &ports).await;
    write_json(
        "independent_launches",
        &json!({
            "services": INDEPENDENT, "max_parallel": INDEPENDENT, "startup_probe_interval": probe_interval(),
            "wall_ms": wall, "observed_ms": run.observed.as_secs_f64() * 1000.0, "launches_per_second": rate,
            "ready_p50_ms": quantile(&ready, 0.5), "ready_p99_ms": quantile(&ready, 0.99),
            "ready_max_ms": quantile(&ready, 1.0),
            "started_p50_ms": quantile(&started, 0.5), "started_p99_ms": quantile(&started, 0.99),
            "took_p50_ms": quantile(&took, 0.5), "took_p99_ms": quantile(&took, 0.99),
            "launch_to_pid_p50_ms": quantile(&parts.to_pid, 0.5),
            "launch_to_pid_p99_ms": quantile(&parts.to_pid, 0.99),
            "orchestrator_cpu_seconds": run.cpu, "sleepers_left": left,
            "profile": run.profile,
        }),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!(
        "lifecycle benchmarks: nats-server + PostgreSQL on this machine, orchestrator release binary, its embedded \
         agent running each service under its shim"
    );
    let _ = bench_dir();
    let logs = TempDir::new("orch-bench-agent");
    let b = Bench::start(&[
        ("ORCH_AGENT_LOG_DIR", logs.path().display().to_string()),
        // The HTTP body limit is the command payload limit (64 KiB by default), which a manifest of
        // 500 services exceeds.
        ("ORCH_COMMAND_MAX_BYTES", (1024 * 1024).to_string()),
    ])
    .await;
    let api = Api::new(b.orchestrator.http_port);
    let transitions = Transitions::watch(&b).await;
    if wants("dag_startup") {
        dag_startup(&b, &api, &transitions, "dag_startup", Readiness::Probe).await;
    }
    if wants("dag_startup_notify") {
        dag_startup(&b, &api, &transitions, "dag_startup_notify", Readiness::Notify).await;
    }
    if wants("independent_launches") {
        independent_launches(&b, &api, &transitions).await;
    }
    // Managed services outlive the orchestrator: whatever a run left goes with the bench.
    orchestrator::agent::supervisor::kill_all(&logs.path().join("shims"));
    println!("figures written to target/bench/*.json");
}
