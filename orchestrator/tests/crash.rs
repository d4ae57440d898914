//! Exactly-once under crashes: the orchestrator binary is killed with SIGKILL again and again while
//! a client publishes thousands of commands. After a final restart every command is applied once
//! and every state change has exactly one event.

mod common;

use std::time::Duration;

use common::load::{Load, wait_drained};
use common::read_stream;
use orch_protocol::Subjects;
use orch_testkit::{OrchestratorProcess, ShippedUsers, TempDir};

/// The orchestrator binary as a child process, with its own NATS server and database.
struct ProcessStack {
    _nats: ShippedUsers,
    _logs: TempDir,
    log: std::path::PathBuf,
    orchestrator: OrchestratorProcess,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
    pool: sqlx::PgPool,
}

impl ProcessStack {
    async fn start(extra_env: &[(&'static str, String)]) -> ProcessStack {
        let nats = ShippedUsers::start_with_harness(&[]);
        let database_url = orch_testkit::fresh_database().await;
        let logs = TempDir::new("orch-process-logs");
        let log = logs.path().join("orchestrator.log");
        let mut env = vec![
            ("ORCH_NATS_URL", nats.nats.url()),
            ("ORCH_NATS_USER", "orchestrator".into()),
            ("ORCH_NATS_PASSWORD", nats.password("orchestrator")),
            ("ORCH_DATABASE_URL", database_url.clone()),
            ("ORCH_LOG", "info".into()),
        ];
        env.extend(extra_env.iter().cloned());
        let mut orchestrator = OrchestratorProcess::start(env!("CARGO_BIN_EXE_orchestrator"), &env, &log);
        orchestrator.wait_ready(Duration::from_secs(60));
        let js = async_nats::jetstream::new(nats.connect("harness").await);
        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        ProcessStack { _nats: nats, _logs: logs, log, orchestrator, js, subjects: Subjects::default(), pool }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_and_duplicates_nothing() {
    let ProcessStack { _nats, _logs, log, mut orchestrator, js, subjects, pool } =
        ProcessStack::start(&[("ORCH_BATCH_MAX", "64".to_string())]).await;

    let load = Load { registers: 2000, updates: 500, deregisters: 500, pace: Duration::from_millis(150) };
    let publisher = load.spawn_publish(&js, &subjects);

    // Kill at random moments while commands are being published and processed.
    let total = load.total() as i64;
    let mut kills = 0;
    let mut processed_at_kill = Vec::new();
    while !publisher.is_finished() || kills < 8 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..450))).await;
        orchestrator.kill();
        kills += 1;
        let processed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_commands").fetch_one(&pool).await.unwrap();
        processed_at_kill.push(processed);
        orchestrator.start_again();
        // Sometimes kill it again before it is even ready.
        if kills % 3 != 0 {
            orchestrator.wait_ready(Duration::from_secs(60));
        }
    }
    publisher.await.unwrap();
    orchestrator.wait_ready(Duration::from_secs(60));
    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;

    let events = read_stream(&js, &subjects.events_stream(), None).await;
    load.verify(&pool, &events).await;
    eprintln!("commands processed at each kill: {processed_at_kill:?} of {total}");
    let mid_flight = processed_at_kill.iter().filter(|&&p| p > 0 && p < total).count();
    assert!(mid_flight >= 2, "kills landed while commands were being applied: {processed_at_kill:?}");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.contains("panicked"), "no panic in the orchestrator log");
}

/// SIGTERM finishes in-flight work and exits 0; nothing is lost or applied twice across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_mid_load() {
    let ProcessStack { _nats, _logs, log, mut orchestrator, js, subjects, pool } = ProcessStack::start(&[]).await;

    let load = Load { registers: 1500, updates: 200, deregisters: 200, pace: Duration::from_millis(50) };
    let publisher = load.spawn_publish(&js, &subjects);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = orchestrator.stop();
        (orchestrator, status)
    });
    let (mut orchestrator, status) = status.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "exit status after SIGTERM: {status:?}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("SIGTERM received") && log_text.contains("stopped"), "graceful shutdown logged");

    publisher.await.unwrap();
    orchestrator.start_again();
    orchestrator.wait_ready(Duration::from_secs(60));
    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;
    let events = read_stream(&js, &subjects.events_stream(), None).await;
    load.verify(&pool, &events).await;
}

/// SIGKILL of the orchestrator process, as a crash or an impatient upgrade would do: its managed
/// services keep running, untouched. The orchestrator started again from another binary (an
/// upgrade: a copy at another path, without `orch-shim` beside it) adopts them: the same pids,
/// ready, never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_orchestrator_leaves_its_services_running_and_the_next_one_adopts_them() {
    let agent_logs = TempDir::new("orch-agent-logs");
    let _leftovers = common::KillServicesOf(agent_logs.path().to_path_buf());
    let ProcessStack { _nats, _logs, log, mut orchestrator, pool, .. } =
        ProcessStack::start(&[("ORCH_AGENT_LOG_DIR", agent_logs.path().display().to_string())]).await;
    let manifest = _logs.path().join("stack.toml");
    let services = ["alpha", "beta"];
    let text: String =
        services.iter().map(|name| common::lifecycle::sleeper(name, orch_testkit::free_port(), "0ms", "")).collect();
    std::fs::write(&manifest, text).unwrap();
    let api = format!("http://127.0.0.1:{}", orchestrator.http_port);
    let up = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["up", "--api-url", &api, "-f"])
        .arg(&manifest)
        .output()
        .await
        .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stdout));
    let ready = |pool: sqlx::PgPool| async move {
        let rows: Vec<(String, String, Option<i64>, i32)> =
            sqlx::query_as("SELECT name, state, pid, restarts FROM managed_services ORDER BY name")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.iter().all(|(_, state, _, _)| state == "ready").then_some(rows)
    };
    let before = common::eventually(Duration::from_secs(30), "both ready", || ready(pool.clone())).await;
    let pids: Vec<u32> = before.iter().map(|(_, _, pid, _)| pid.unwrap() as u32).collect();

    orchestrator.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pids.iter().all(|p| orch_testkit::process_alive(*p)), "the services outlived the orchestrator");
    let upgraded = _logs.path().join("orchestrator-upgraded");
    std::fs::copy(env!("CARGO_BIN_EXE_orchestrator"), &upgraded).unwrap();
    orchestrator.start_again_from(&upgraded);
    orchestrator.wait_ready(Duration::from_secs(60));

    // Adopted: the rows name the same pids, ready, with no restart; the processes never stopped.
    let after = common::eventually(Duration::from_secs(30), "both adopted and ready", || async {
        let rows = ready(pool.clone()).await?;
        let pids_now: Vec<u32> = rows.iter().filter_map(|(_, _, pid, _)| pid.map(|p| p as u32)).collect();
        (pids_now == pids).then_some(rows)
    })
    .await;
    assert!(after.iter().all(|(_, _, _, restarts)| *restarts == 0), "{after:?}");
    assert!(pids.iter().all(|p| orch_testkit::process_alive(*p)));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("adopted a running service"), "the agent says what it adopted:\n{text}");
}

/// The exactly-once test above against a group of three replicas (`serve --replica`): the leader
/// is killed (SIGKILL) again and again while commands are published; each time another replica
/// takes over, and the killed one comes back as a standby. Every command is applied once and
/// every change has exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_repeated_leader_kills_in_a_group_of_three_replicas() {
    let users = ShippedUsers::start_with_harness(&[]);
    let database_url = orch_testkit::fresh_database().await;
    let dir = TempDir::new("orch-crash-replicas");
    let _leftovers = common::KillServicesOf(dir.path().join("agent-logs"));
    let names = ["a", "b", "c"];
    let mut replicas: Vec<OrchestratorProcess> =
        names.iter().map(|name| common::replica(name, &users, &database_url, &dir, "2s")).collect();
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let js = async_nats::jetstream::new(users.connect("harness").await);
    let subjects = Subjects::default();
    let first = common::eventually(Duration::from_secs(60), "a leader", || common::leader(&pool)).await;
    eprintln!("first leader: {first:?}");
    for replica in &mut replicas {
        replica.wait_ready(Duration::from_secs(60));
    }

    let load = Load { registers: 2000, updates: 500, deregisters: 500, pace: Duration::from_millis(150) };
    let total = load.total() as i64;
    let publisher = load.spawn_publish(&js, &subjects);
    let mut kills = Vec::new();
    while !publisher.is_finished() || kills.len() < 6 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..600))).await;
        let Some((leader, term)) = common::leader(&pool).await else { continue };
        let index = names.iter().position(|n| *n == leader).expect("a replica of the group leads");
        replicas[index].kill();
        let processed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_commands").fetch_one(&pool).await.unwrap();
        kills.push((leader.clone(), term, processed));
        // The next leader is elected before the killed one comes back as a standby.
        common::eventually(Duration::from_secs(30), "another replica elected", || async {
            common::leader(&pool).await.filter(|(_, t)| *t > term)
        })
        .await;
        replicas[index].start_again();
    }
    publisher.await.unwrap();
    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;

    let events = read_stream(&js, &subjects.events_stream(), None).await;
    let (group, registry): (Vec<_>, Vec<_>) =
        events.into_iter().partition(|e| e["type"].as_str().is_some_and(|t| t.starts_with("io.orch.cluster.")));
    load.verify(&pool, &registry).await;
    let events = group;
    eprintln!("kills (leader, term, commands processed) of {total}: {kills:?}");
    let mid_flight = kills.iter().filter(|(_, _, p)| *p > 0 && *p < total).count();
    assert!(mid_flight >= 2, "kills landed while commands were being applied: {kills:?}");
    let (_, last_term) = common::leader(&pool).await.expect("a leader at the end");
    let mut terms: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "io.orch.cluster.leader_elected.v1")
        .filter_map(|e| e["data"]["term"].as_i64())
        .collect();
    terms.sort();
    assert_eq!(terms, (1..=last_term).collect::<Vec<_>>(), "one leader_elected per term");
    assert!(last_term > kills.len() as i64, "each kill began a term");
    for name in names {
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        assert!(!text.contains("panicked"), "no panic in the log of {name}");
    }
}

/// The orchestrator is killed (SIGKILL) in the middle of a workflow execution: the next one
/// resumes it from what was committed. The call that completed is not made again; the job whose
/// process was running is re-attached (same process, same attempt), not started a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_workflow_runs_no_completed_step_again() {
    use futures::StreamExt;
    let agent_logs = TempDir::new("orch-agent-logs");
    let _leftovers = common::KillServicesOf(agent_logs.path().to_path_buf());
    let ProcessStack { _nats, _logs, mut orchestrator, pool, .. } =
        ProcessStack::start(&[("ORCH_AGENT_LOG_DIR", agent_logs.path().display().to_string())]).await;
    let client = _nats.connect("harness").await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sub = client.subscribe("orch.call.once").await.unwrap();
    client.flush().await.unwrap();
    let (answering, seen) = (client.clone(), calls.clone());
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(reply) = message.reply {
                let _ = answering.publish(reply, "{\"ok\": true}".into()).await;
            }
        }
    });
    let release = _logs.path().join("release");
    let text = format!(
        "[workflow]\nname = \"survivor\"\n[steps.once]\nkind = \"call\"\nsubject = \"orch.call.once\"\n\
         [steps.held]\nkind = \"job\"\ncommand = \"sh\"\nargs = [\"-c\", \"while [ ! -e '{}' ]; do sleep 0.05; done\"]\nneeds = [\"once\"]\n",
        release.display()
    );
    let port = orchestrator.http_port;
    let (status, body) = orch_testkit::http_request(port, "PUT", "/api/v1/workflows/survivor", Some(&text)).unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        orch_testkit::http_request(port, "POST", "/api/v1/workflows/survivor/executions", Some("{}")).unwrap();
    assert_eq!(status, 202, "{body}");
    let id: uuid::Uuid =
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().parse().unwrap();
    let state = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, serde_json::Value>("SELECT state FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = common::eventually(Duration::from_secs(30), "the job running", || async {
        let state = state(pool.clone()).await;
        (state["steps"]["held"]["status"] == "running").then_some(state)
    })
    .await;
    // The job's process runs under the agent; wait until it is there, then kill the orchestrator.
    common::eventually(Duration::from_secs(30), "the job's process", || async {
        let shims = std::fs::read_dir(agent_logs.path()).ok()?;
        shims.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("job-")).then_some(())
    })
    .await;
    orchestrator.kill();
    orchestrator.start_again();
    orchestrator.wait_ready(Duration::from_secs(60));
    std::fs::write(&release, "").unwrap();
    common::eventually(Duration::from_secs(30), "the execution succeeded", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (status == "succeeded").then_some(())
    })
    .await;
    let state = state(pool.clone()).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the completed call was not made again");
    assert_eq!(state["steps"]["once"]["attempt"], 1);
    assert_eq!(state["steps"]["held"]["attempt"], 1, "the job was re-attached, not retried: {state}");
    assert_eq!(state["steps"]["held"]["started_at"], before["steps"]["held"]["started_at"]);
    assert_eq!(state["steps"]["held"]["output"]["exit"], serde_json::json!({ "by": "code", "code": 0 }));
}
