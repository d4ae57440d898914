//! Workflow benchmarks (`make bench PARTS="workflow_steps cron_precision waiting_executions"`):
//! real nats-server and a private PostgreSQL (default fsync), the orchestrator as a release binary
//! in its own process, workflows stored and run through its HTTP API. Prints each figure and
//! writes it as JSON to `target/bench/<part>.json`.
//!
//! - `workflow_steps`: no-op steps (`kind = "wait"`, `duration = "0s"`) in one execution: a
//!   fan-out of 1,000 steps (`start`, 998 steps needing it, `end` needing all 998) and a chain of
//!   200 steps. Steps per second, and per step the time from "could start" (the latest
//!   `step_succeeded` among its needs, or the execution's `started`) to its `step_started`, from
//!   the CloudEvents `time` of the events on the events stream.
//! - `cron_precision`: 1,000 schedules firing every second for two minutes: lateness of each
//!   firing, firings missed and doubled; then the same on two replicas with the leader killed
//!   (SIGKILL) half-way.
//! - `waiting_executions`: 10,000 executions each in a 1 h `wait`: the orchestrator's RSS and
//!   CPU while they wait, and the time to start them all.
//!
//! Run one part with `cargo bench -p orchestrator --bench workflows -- <part>`. Smaller runs for
//! trials (the recorded figures use none of these): `ORCH_BENCH_FANOUT_STEPS`,
//! `ORCH_BENCH_CHAIN_STEPS`, `ORCH_BENCH_WORKFLOW_RUNS`, `ORCH_BENCH_CRON_SCHEDULES`,
//! `ORCH_BENCH_CRON_SECONDS`, `ORCH_BENCH_WAITING`, `ORCH_BENCH_IDLE_SECONDS`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use futures::StreamExt;
use hdrhistogram::Histogram;
use orch_testkit::{OrchestratorProcess, Postgres, ShippedUsers, TempDir};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{Bench, bench_dir, cpu_seconds, orchestrator_env, postgres_pids, read_all, rss_bytes, write_json};

/// Targets of the issue (printed beside the figures, not asserted).
const TARGET_STEPS_PER_SEC: f64 = 2000.0;
const TARGET_CHAIN_P99_MS: f64 = 10.0;
const TARGET_CRON_P99_MS: f64 = 100.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// Microseconds, for the histograms (1 µs to 1 h).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

fn record(h: &mut Histogram<u64>, d: chrono::TimeDelta) {
    // A negative difference (two clocks' reading in one transition) counts as no time.
    h.record(d.num_microseconds().unwrap_or(0).max(1) as u64).unwrap();
}

/// p50/p99/max in ms, for printing and JSON.
fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1e3,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1e3,
        "max_ms": h.max() as f64 / 1e3,
    })
}

fn show(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3,
        h.len()
    )
}

fn p99_ms(h: &Histogram<u64>) -> f64 {
    h.value_at_quantile(0.99) as f64 / 1e3
}

/// CPU seconds so far of the orchestrator `pid` and of PostgreSQL.
fn cpu_split(pid: u32, pg_port: u16) -> [f64; 2] {
    [cpu_seconds(pid), postgres_pids(pg_port).into_iter().map(cpu_seconds).sum()]
}

/// The HTTP API of one orchestrator (no tokens configured: every caller is admin).
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(port: u16) -> Api {
        orchestrator::tls::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Api { http, base: format!("http://127.0.0.1:{port}") }
    }

    async fn put_workflow(&self, name: &str, text: String) {
        let response = self
            .http
            .put(format!("{}/api/v1/workflows/{name}", self.base))
            .header("content-type", "application/toml")
            .body(text)
            .send()
            .await
            .expect("PUT /api/v1/workflows");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT /api/v1/workflows/{name}: {status} {body}");
    }

    /// Starts an execution of `name`; returns its id.
    async fn run(&self, name: &str) -> Uuid {
        // A 503 (too many requests in flight, a request timeout) is sent again: the bench wants
        // the executions, not the API's admission limits.
        for _ in 0..100 {
            let response = self
                .http
                .post(format!("{}/api/v1/workflows/{name}/executions", self.base))
                .header("content-type", "application/json")
                .body(r#"{"inputs":{}}"#)
                .send()
                .await;
            if let Ok(r) = response {
                let status = r.status();
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
                if status.is_success() {
                    return body["id"].as_str().and_then(|s| s.parse().ok()).expect("the execution's id");
                }
                assert_eq!(status.as_u16(), 503, "POST /api/v1/workflows/{name}/executions: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("POST /api/v1/workflows/{name}/executions refused 100 times");
    }
}

/// Waits until the relay has published every committed event (the outbox is empty).
async fn outbox_drained(pool: &sqlx::PgPool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await.unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} events still in the outbox after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// workflow_steps

/// A workflow's text and each step's needs.
struct Shape {
    text: String,
    needs: BTreeMap<String, Vec<String>>,
}

fn shape(name: &str, steps: Vec<(String, Vec<String>)>) -> Shape {
    let mut text = format!("[workflow]\nname = \"{name}\"\n");
    for (id, needs) in &steps {
        text.push_str(&format!("\n[steps.{id}]\nkind = \"wait\"\nduration = \"0s\"\n"));
        if !needs.is_empty() {
            let list: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
            text.push_str(&format!("needs = [{}]\n", list.join(", ")));
        }
    }
    Shape { text, needs: steps.into_iter().collect() }
}

/// `start`, then `n - 2` steps that each need it, then `end` needing all of those.
fn fanout(name: &str, n: usize) -> Shape {
    let middle: Vec<String> = (1..=n - 2).map(|i| format!("s{i:04}")).collect();
    let mut steps = vec![("start".to_string(), vec![])];
    steps.extend(middle.iter().map(|id| (id.clone(), vec!["start".to_string()])));
    steps.push(("end".to_string(), middle));
    shape(name, steps)
}

/// `n` steps, each needing the one before.
fn chain(name: &str, n: usize) -> Shape {
    let steps = (0..n).map(|i| (format!("c{i:04}"), if i == 0 { vec![] } else { vec![format!("c{:04}", i - 1)] }));
    shape(name, steps.collect())
}

/// The figures of one execution.
struct Run {
    steps: usize,
    /// The first `step_started` to the last `step_succeeded`.
    seconds: f64,
    steps_per_sec: f64,
    /// From "could start" to `step_started`, per step (µs).
    ready_to_started: Histogram<u64>,
    /// From `step_started` to `step_succeeded` of a no-op step: the orchestrator's own time for
    /// it (committing its start, running the attempt, taking its end in turn).
    turnaround: Histogram<u64>,
    /// POST of the execution to its `succeeded` status seen in PostgreSQL.
    wall_seconds: f64,
    /// Seconds from the first step's start: the last step started, the first and the last step
    /// succeeded (where a run's time goes).
    timeline: [f64; 3],
    /// CPU of the orchestrator and PostgreSQL over the run, % of one core.
    cpu_percent: [f64; 2],
    /// The execution's stored state (JSON text) at its end: each transition writes all of it.
    state_bytes: i64,
}

fn event_time(e: &Value) -> DateTime<Utc> {
    e["time"].as_str().and_then(|t| t.parse().ok()).expect("an event with a time")
}

/// Runs one execution of `name` and reads its timings from its events.
async fn run_once(b: &Bench, pool: &sqlx::PgPool, api: &Api, name: &str, shape: &Shape) -> Run {
    let pid = b.orchestrator.pid().unwrap();
    let cpu0 = cpu_split(pid, b._postgres.port);
    let began = Instant::now();
    let id = api.run(name).await;
    // Its status from PostgreSQL (a small row; GET of a 1,000-step execution is not).
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        if status == "succeeded" {
            break;
        }
        assert!(!matches!(status.as_str(), "failed" | "cancelled"), "execution {id} of {name} ended {status}");
        assert!(Instant::now() < deadline, "execution {id} of {name} still {status} after 30 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = began.elapsed().as_secs_f64();
    let cpu1 = cpu_split(pid, b._postgres.port);
    let state_bytes: i64 =
        sqlx::query_scalar("SELECT octet_length(state::text)::bigint FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    outbox_drained(pool, Duration::from_secs(300)).await;

    let filter = format!("{}.evt.workflow.{name}.>", b.subjects.prefix());
    let events = read_all(&b.js, &b.subjects.events_stream(), &filter).await;
    let mut execution_started = None;
    let mut started: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut succeeded: HashMap<String, DateTime<Utc>> = HashMap::new();
    let id_text = id.to_string();
    for e in events.iter().filter(|e| e["data"]["execution_id"].as_str() == Some(id_text.as_str())) {
        let ty = e["type"].as_str().unwrap_or_default();
        let step = e["data"]["step"].as_str().map(str::to_string);
        match (ty, step) {
            ("io.orch.workflow.started.v1", _) => execution_started = Some(event_time(e)),
            ("io.orch.workflow.step_started.v1", Some(step)) => {
                // The first attempt's start (a no-op step is never retried).
                started.entry(step).or_insert_with(|| event_time(e));
            }
            ("io.orch.workflow.step_succeeded.v1", Some(step)) => {
                succeeded.insert(step, event_time(e));
            }
            _ => {}
        }
    }
    let execution_started = execution_started.expect("the execution's started event");
    assert_eq!(started.len(), shape.needs.len(), "a step_started event for every step");
    assert_eq!(succeeded.len(), shape.needs.len(), "a step_succeeded event for every step");

    let (mut ready_to_started, mut turnaround) = (histogram(), histogram());
    for (step, needs) in &shape.needs {
        let ready = needs.iter().map(|n| succeeded[n]).max().unwrap_or(execution_started);
        record(&mut ready_to_started, started[step] - ready);
        record(&mut turnaround, succeeded[step] - started[step]);
    }
    let first = *started.values().min().unwrap();
    let last = *succeeded.values().max().unwrap();
    let offset = |t: DateTime<Utc>| (t - first).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let seconds = (last - first).num_microseconds().unwrap_or(0).max(1) as f64 / 1e6;
    let cpu_percent = [(cpu1[0] - cpu0[0]) / wall * 100.0, (cpu1[1] - cpu0[1]) / wall * 100.0];
    Run {
        steps: shape.needs.len(),
        seconds,
        steps_per_sec: shape.needs.len() as f64 / seconds,
        ready_to_started,
        turnaround,
        wall_seconds: wall,
        timeline: [offset(*started.values().max().unwrap()), offset(*succeeded.values().min().unwrap()), offset(last)],
        cpu_percent,
        state_bytes,
    }
}

/// Runs `name` `runs` times; prints each run's rate and the median run's figures; returns its
/// JSON. `chain` says whether the chain's latency target applies.
async fn measure(
    b: &Bench,
    pool: &sqlx::PgPool,
    api: &Api,
    label: &str,
    shape: Shape,
    runs: usize,
    chain: bool,
) -> Value {
    let name = label.to_string();
    api.put_workflow(&name, shape.text.clone()).await;
    let mut all = Vec::new();
    for _ in 0..runs {
        all.push(run_once(b, pool, api, &name, &shape).await);
    }
    let rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.steps_per_sec)).collect();
    all.sort_by(|a, b| a.steps_per_sec.total_cmp(&b.steps_per_sec));
    let median = &all[all.len() / 2];
    println!(
        "  {label}: {} steps; runs {} steps/s; median run: {:.3} s from the first step's start to the last one's end \
         = {:.0} steps/s (target >= {TARGET_STEPS_PER_SEC:.0}: {}); POST to succeeded {:.3} s",
        median.steps,
        rates.join(", "),
        median.seconds,
        median.steps_per_sec,
        met(median.steps_per_sec >= TARGET_STEPS_PER_SEC),
        median.wall_seconds
    );
    let target = if chain {
        format!(
            " (target p99 < {TARGET_CHAIN_P99_MS:.0} ms: {})",
            met(p99_ms(&median.ready_to_started) < TARGET_CHAIN_P99_MS)
        )
    } else {
        String::new()
    };
    println!("      could start -> step_started: {}{target}", show(&median.ready_to_started));
    let target = if chain {
        format!(" (the same target on this: {})", met(p99_ms(&median.turnaround) < TARGET_CHAIN_P99_MS))
    } else {
        String::new()
    };
    println!("      step_started -> step_succeeded of the no-op step: {}{target}", show(&median.turnaround));
    println!(
        "      CPU during the run (% of one core; 2 cores = 200): orchestrator {:.0}, PostgreSQL {:.0}; the \
         execution's state (written whole at each transition) is {:.0} KiB at its end",
        median.cpu_percent[0],
        median.cpu_percent[1],
        median.state_bytes as f64 / 1024.0
    );
    let [last_started, first_succeeded, last_succeeded] = median.timeline;
    println!(
        "      from the first step's start: the last step started at {last_started:.3} s, the first step succeeded at \
         {first_succeeded:.3} s, the last at {last_succeeded:.3} s"
    );
    json!({
        "steps": median.steps,
        "runs": all.len(),
        "steps_per_sec_runs": all.iter().map(|r| r.steps_per_sec).collect::<Vec<_>>(),
        "seconds": median.seconds,
        "steps_per_sec": median.steps_per_sec,
        "target_steps_per_sec": TARGET_STEPS_PER_SEC,
        "ready_to_started": summary(&median.ready_to_started),
        "started_to_succeeded": summary(&median.turnaround),
        "post_to_succeeded_s": median.wall_seconds,
        "last_started_s": last_started,
        "first_succeeded_s": first_succeeded,
        "last_succeeded_s": last_succeeded,
        "cpu_percent_orchestrator": median.cpu_percent[0],
        "cpu_percent_postgres": median.cpu_percent[1],
        "state_bytes": median.state_bytes,
    })
}

async fn workflow_steps() {
    let fanout_steps = env_usize("ORCH_BENCH_FANOUT_STEPS", 1000).max(3);
    let chain_steps = env_usize("ORCH_BENCH_CHAIN_STEPS", 200).max(2);
    let runs = env_usize("ORCH_BENCH_WORKFLOW_RUNS", 3).max(1);
    println!(
        "workflow_steps: no-op steps (kind \"wait\", duration \"0s\") in one execution, {runs} runs each, the median \
         run shown; times are the events' CloudEvents `time`"
    );
    let b = Bench::start(&[]).await;
    let pool = sqlx::PgPool::connect(&b.database_url).await.unwrap();
    let api = Api::new(b.orchestrator.http_port);
    let fan = measure(&b, &pool, &api, "fanout", fanout("fanout", fanout_steps), runs, false).await;
    let chained = measure(&b, &pool, &api, "chain", chain("chain", chain_steps), runs, true).await;
    println!(
        "  note: the events of one transition of an execution carry one time, so a step started in the transition \
         that ended its last need shows 0 from \"could start\"; the step's own turnaround is the overhead a chain pays \
         per step"
    );
    write_json(
        "workflow_steps",
        &json!({ "fanout": fan, "chain": chained, "target_chain_p99_ms": TARGET_CHAIN_P99_MS }),
    );
}

// ---------------------------------------------------------------------------------------------
// cron_precision

/// A workflow with one no-op step and a schedule firing every second.
fn cron_workflow(name: &str) -> String {
    format!(
        "[workflow]\nname = \"{name}\"\n\n[steps.noop]\nkind = \"wait\"\nduration = \"0s\"\n\n\
         [[schedule]]\ncron = \"* * * * * *\"\noverlap = \"allow\"\ncatch_up = \"all\"\n"
    )
}

/// An execution a schedule's firing started.
#[derive(sqlx::FromRow)]
struct Fired {
    id: Uuid,
    workflow: String,
    trigger: String,
    fire_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    status: String,
}

async fn leader(pool: &sqlx::PgPool) -> Option<(String, i64, DateTime<Utc>)> {
    sqlx::query_as("SELECT holder, term, since FROM leadership WHERE expires_at > now()")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// `schedules` schedules firing every second, measured over `seconds`; with `failover`, on two
/// replicas whose leader is killed half-way.
async fn cron_run(schedules: usize, seconds: usize, failover: bool) -> Value {
    let users = ShippedUsers::start_with_harness(&[]);
    let postgres = Postgres::start();
    let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
    let dir = TempDir::new("orch-bench-cron");
    let agent_logs = dir.path().join("agent-logs");
    let names: Vec<&str> = if failover { vec!["a", "b"] } else { vec!["single"] };
    let mut replicas: Vec<OrchestratorProcess> = Vec::new();
    for name in &names {
        let mut env = orchestrator_env(&users, &database_url);
        env.push(("ORCH_AGENT_LOG_DIR", agent_logs.display().to_string()));
        if failover {
            env.push(("ORCH_REPLICA", name.to_string()));
        }
        let mut process = OrchestratorProcess::start(
            env!("CARGO_BIN_EXE_orchestrator"),
            &env,
            bench_dir().join(format!("cron-{name}.log")),
        );
        process.wait_ready(Duration::from_secs(120));
        replicas.push(process);
    }
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let leader_index = |holder: &str| if failover { names.iter().position(|n| *n == holder).unwrap() } else { 0 };
    let first_leader = if failover { leader(&pool).await.expect("a leader").0 } else { "single".into() };
    let api = Api::new(replicas[leader_index(&first_leader)].http_port);

    // When each firing's execution became visible: a trigger notifies at the insert's commit, and
    // this listener takes the time it arrives. The executions' `created_at` is `now()` of the
    // firing's transaction, i.e. its start: the commit comes after it (and after the earlier
    // firings the scheduler commits one by one before it).
    sqlx::raw_sql(
        "CREATE FUNCTION bench_fired() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('bench_fired', NEW.id::text); RETURN NULL; END $$;
         CREATE TRIGGER bench_fired AFTER INSERT ON workflow_executions FOR EACH ROW EXECUTE FUNCTION bench_fired();",
    )
    .execute(&pool)
    .await
    .expect("the bench's notify trigger");
    let committed: Arc<Mutex<HashMap<Uuid, DateTime<Utc>>>> = Arc::default();
    let mut listener = sqlx::postgres::PgListener::connect(&database_url).await.unwrap();
    listener.listen("bench_fired").await.unwrap();
    let listening = tokio::spawn({
        let committed = committed.clone();
        async move {
            while let Ok(n) = listener.recv().await {
                let now = Utc::now();
                if let Ok(id) = n.payload().parse::<Uuid>() {
                    committed.lock().unwrap().insert(id, now);
                }
            }
        }
    });

    let stored = Instant::now();
    let mut puts = futures::stream::iter((0..schedules).map(|i| {
        let api = api.clone();
        async move {
            let name = format!("cron-{i:04}");
            api.put_workflow(&name, cron_workflow(&name)).await;
        }
    }))
    .buffer_unordered(16);
    while puts.next().await.is_some() {}
    println!("  {schedules} workflows with their schedules stored in {:.1} s", stored.elapsed().as_secs_f64());

    // The measured range: whole seconds from a little after every schedule runs.
    let second = chrono::TimeDelta::seconds(1);
    let from = (Utc::now() + chrono::TimeDelta::seconds(3)).duration_trunc(second).unwrap();
    let to = from + chrono::TimeDelta::seconds(seconds as i64);
    let sleep_until = |t: DateTime<Utc>| tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default());
    sleep_until(from).await;
    let leader_pid = replicas[leader_index(&first_leader)].pid().unwrap();
    let cpu0 = cpu_split(leader_pid, postgres.port);

    // The failover: SIGKILL the leader half-way, then wait for the next term.
    let mut window = None;
    if failover {
        sleep_until(from + chrono::TimeDelta::milliseconds(seconds as i64 * 500 + 300)).await;
        let (old, term, _) = leader(&pool).await.expect("a leader before the kill");
        let killed_at = Utc::now();
        replicas[leader_index(&old)].kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (new, _, since) = loop {
            if let Some((holder, t, since)) = leader(&pool).await
                && t > term
            {
                break (holder, t, since);
            }
            assert!(Instant::now() < deadline, "no new leader within 60 s of the kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "  {old} (the leader, term {term}) killed at {}; {new} elected after {:.0} ms",
            killed_at.format("%H:%M:%S%.3f"),
            (since - killed_at).num_milliseconds()
        );
        window = Some((killed_at, since));
    }
    sleep_until(to).await;
    let cpu1 = if failover { None } else { Some(cpu_split(leader_pid, postgres.port)) };

    // Every firing before `to` committed (the scheduler may run behind), then its notification in.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let next: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(next_fire_at) FROM workflow_schedules").fetch_one(&pool).await.unwrap();
        if next.is_some_and(|n| n >= to) {
            break;
        }
        assert!(Instant::now() < deadline, "the schedules still had firings before the end 10 min after it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = Utc::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    listening.abort();

    let rows: Vec<Fired> = sqlx::query_as(
        "SELECT id, workflow, trigger, fire_at, created_at, status FROM workflow_executions
         WHERE fire_at >= $1 AND fire_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&pool)
    .await
    .unwrap();
    let queued_at_end: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status IN ('queued', 'running')")
            .fetch_one(&pool)
            .await
            .unwrap();
    let committed = committed.lock().unwrap().clone();

    // Missed: a (schedule, second) without an execution; doubled: more than one execution for a
    // (workflow, trigger, fire_at) (the id, derived from them, is unique by itself).
    let mut per_firing: HashMap<(&str, &str, DateTime<Utc>), usize> = HashMap::new();
    for r in &rows {
        *per_firing.entry((r.workflow.as_str(), r.trigger.as_str(), r.fire_at)).or_default() += 1;
    }
    let expected = schedules * seconds;
    let missed = expected.saturating_sub(per_firing.len());
    let doubled: usize = per_firing.values().map(|n| n - 1).sum();
    let succeeded = rows.iter().filter(|r| r.status == "succeeded").count();

    // Lateness, apart for the firings due around the failover (from a second before the kill to
    // a second after the election: what the old leader may have left and what no leader fired).
    let in_window = |fire_at: DateTime<Utc>| {
        window.is_some_and(|(killed, elected): (DateTime<Utc>, DateTime<Utc>)| {
            fire_at >= killed - second && fire_at < elected + second
        })
    };
    let (mut created, mut commit, mut created_w, mut commit_w) = (histogram(), histogram(), histogram(), histogram());
    let mut unnotified = 0;
    let mut window_done: Option<DateTime<Utc>> = None;
    for r in &rows {
        let w = in_window(r.fire_at);
        record(if w { &mut created_w } else { &mut created }, r.created_at - r.fire_at);
        match committed.get(&r.id) {
            Some(at) => {
                record(if w { &mut commit_w } else { &mut commit }, *at - r.fire_at);
                if w {
                    window_done = Some(window_done.map_or(*at, |d| d.max(*at)));
                }
            }
            None => unnotified += 1,
        }
    }

    let label = if failover { "2 replicas, the leader killed half-way" } else { "one orchestrator" };
    println!(
        "  {label}: {} firings expected ({schedules} schedules x {seconds} s from {}), {} executions: {missed} missed, \
         {doubled} doubled (target 0 and 0: {})",
        expected,
        from.format("%H:%M:%S"),
        rows.len(),
        met(missed == 0 && doubled == 0)
    );
    let outside = if failover { " outside the failover window" } else { "" };
    println!(
        "      lateness{outside}, fire_at -> committed (notified at the insert's commit): {} (target p99 < {TARGET_CRON_P99_MS:.0} ms: {})",
        show(&commit),
        met(!commit.is_empty() && p99_ms(&commit) < TARGET_CRON_P99_MS)
    );
    println!("      lateness{outside}, fire_at -> created_at (the firing transaction's start): {}", show(&created));
    if let Some((killed, elected)) = window {
        println!(
            "      failover window (fire_at from {} to {}): fire_at -> committed {}; fire_at -> created_at {}",
            (killed - second).format("%H:%M:%S%.3f"),
            (elected + second).format("%H:%M:%S%.3f"),
            show(&commit_w),
            show(&created_w)
        );
        // The new leader's first commit of a firing (the first after its election: the old
        // leader may commit up to its death): when its scheduler took over.
        let resumed = committed.values().filter(|t| **t > elected).min().copied();
        println!(
            "      kill -> the new leader's first firing committed: {} ms; -> the last firing of the window committed: \
             {} ms",
            resumed.map_or("-".into(), |t| (t - killed).num_milliseconds().to_string()),
            window_done.map_or("-".into(), |t| (t - killed).num_milliseconds().to_string())
        );
    }
    if let Some(cpu1) = cpu1 {
        println!(
            "      CPU over the measured range (% of one core; 2 cores = 200): orchestrator {:.0}, PostgreSQL {:.0}",
            (cpu1[0] - cpu0[0]) / seconds as f64 * 100.0,
            (cpu1[1] - cpu0[1]) / seconds as f64 * 100.0
        );
    }
    println!(
        "      executions of the range succeeded when the schedules caught up: {succeeded} of {}; {queued_at_end} \
         executions queued or running then (the executor's backlog); {unnotified} without a notification; caught up \
         {:.1} s after the range's end",
        rows.len(),
        (caught_up - to).num_milliseconds() as f64 / 1e3
    );
    let json = json!({
        "replicas": names.len(),
        "schedules": schedules,
        "seconds": seconds,
        "expected_firings": expected,
        "executions": rows.len(),
        "missed": missed,
        "doubled": doubled,
        "lateness_committed": summary(&commit),
        "lateness_created_at": summary(&created),
        "failover": window.map(|(killed, elected)| json!({
            "killed_at": killed.to_rfc3339(),
            "elected_at": elected.to_rfc3339(),
            "election_ms": (elected - killed).num_milliseconds(),
            "window_done_ms": window_done.map(|d| (d - killed).num_milliseconds()),
            "first_commit_after_kill_ms": committed.values().filter(|t| **t > elected).min().map(|t| (*t - killed).num_milliseconds()),
            "lateness_committed": summary(&commit_w),
            "lateness_created_at": summary(&created_w),
        })),
        "succeeded_by_catch_up": succeeded,
        "backlog_at_end": queued_at_end,
        "unnotified": unnotified,
        "caught_up_after_end_s": (caught_up - to).num_milliseconds() as f64 / 1e3,
    });
    drop(replicas);
    json
}

async fn cron_precision() {
    let schedules = env_usize("ORCH_BENCH_CRON_SCHEDULES", 1000);
    let seconds = env_usize("ORCH_BENCH_CRON_SECONDS", 120).max(2);
    println!(
        "cron_precision: {schedules} schedules \"* * * * * *\" (overlap allow, catch_up all), one no-op step each, \
         measured over {seconds} s; lateness of each firing from its fire_at"
    );
    let steady = cron_run(schedules, seconds, false).await;
    let failover = cron_run(schedules, seconds, true).await;
    write_json(
        "cron_precision",
        &json!({ "steady": steady, "failover": failover, "target_p99_ms": TARGET_CRON_P99_MS }),
    );
}

// ---------------------------------------------------------------------------------------------
// waiting_executions

async fn waiting_executions() {
    let n = env_usize("ORCH_BENCH_WAITING", 10_000);
    let idle = env_usize("ORCH_BENCH_IDLE_SECONDS", 30);
    println!("waiting_executions: {n} executions each in a 1 h wait; queue concurrency {n}");
    // The queue must hold them all at once, or most would wait queued rather than in their step.
    let b = Bench::start(&[("ORCH_WORKFLOW_QUEUE_CONCURRENCY", n.to_string())]).await;
    let pool = sqlx::PgPool::connect(&b.database_url).await.unwrap();
    let api = Api::new(b.orchestrator.http_port);
    api.put_workflow(
        "sleeper",
        "[workflow]\nname = \"sleeper\"\n\n[steps.nap]\nkind = \"wait\"\nduration = \"1h\"\n".into(),
    )
    .await;
    let pid = b.orchestrator.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_bytes(pid);
    // The same idle window with nothing waiting, for comparison.
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle as u64)).await;
    let cpu_empty = (cpu_seconds(pid) - cpu0) / idle as f64 * 100.0;

    let began = Instant::now();
    let mut posts = futures::stream::iter((0..n).map(|_| {
        let api = api.clone();
        async move { api.run("sleeper").await }
    }))
    .buffer_unordered(64);
    while posts.next().await.is_some() {}
    let accepted = began.elapsed().as_secs_f64();
    // Started: the execution runs and its wait step with it (one transition stores both).
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_executions WHERE status = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if running as usize >= n {
            break;
        }
        assert!(Instant::now() < deadline, "{running} of {n} executions running after 30 min");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_started = began.elapsed().as_secs_f64();
    outbox_drained(&pool, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_started = rss_bytes(pid);
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle as u64)).await;
    let cpu_waiting = (cpu_seconds(pid) - cpu0) / idle as f64 * 100.0;
    let rss_idle = rss_bytes(pid);
    let per_execution = rss_idle.saturating_sub(rss_before) as f64 / n as f64;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "  started all {n}: the API accepted them in {accepted:.1} s ({:.0}/s), all running after {all_started:.1} s \
         ({:.0}/s)",
        n as f64 / accepted,
        n as f64 / all_started
    );
    println!(
        "  RSS: {:.1} MiB before, {:.1} MiB once all were started, {:.1} MiB after {idle} s of waiting = {per_execution:.0} \
         B per waiting execution",
        mib(rss_before),
        mib(rss_started),
        mib(rss_idle)
    );
    println!("  CPU over {idle} s of waiting: {cpu_waiting:.2}% of one core (with nothing waiting: {cpu_empty:.2}%)");
    write_json(
        "waiting_executions",
        &json!({
            "executions": n, "idle_seconds": idle,
            "accepted_s": accepted, "all_started_s": all_started, "started_per_sec": n as f64 / all_started,
            "rss_before_bytes": rss_before, "rss_started_bytes": rss_started, "rss_idle_bytes": rss_idle,
            "rss_bytes_per_execution": per_execution,
            "cpu_percent_waiting": cpu_waiting, "cpu_percent_empty": cpu_empty,
        }),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = std::fs::remove_file(bench_dir().join("orchestrator.log"));
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("workflow benchmarks: nats-server + PostgreSQL on this machine, orchestrator release binary");
    if wants("workflow_steps") {
        workflow_steps().await;
    }
    if wants("cron_precision") {
        cron_precision().await;
    }
    if wants("waiting_executions") {
        waiting_executions().await;
    }
    println!("figures written to target/bench/*.json");
}
