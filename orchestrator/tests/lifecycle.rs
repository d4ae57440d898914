//! Managed services with real processes (`orch-sleeper`, `/bin/sh`) run by the embedded agent, or
//! by a standalone agent process on a second node: dependency order and conditions, parallelism
//! and priority, degradation, critical abort, reverse shutdown, back-off and the start-rate
//! limit, recovery by priority with bound services, liveness, and resuming after a restart; with a
//! real nats-server and PostgreSQL.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::{assert_error, call, call_raw};
use common::lifecycle::*;
use common::{Stack, eventually};
use orch_testkit::{free_port, process_alive};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn starts_in_dependency_order_and_stops_in_reverse() {
    let stack = Stack::start().await;
    let (db, cache, api, web) = (free_port(), free_port(), free_port(), free_port());
    let manifest = format!(
        "{}{}{}{}{}",
        sleeper("db", db, "400ms", "priority = 90"),
        sleeper("cache", cache, "0ms", "priority = 10"),
        r#"
[services.migrate]
command = "/bin/sh"
args = ["-c", "sleep 0.2; echo migrated"]
restart = { policy = "never" }
depends_on = { db = "healthy" }
"#,
        sleeper("api", api, "100ms", "depends_on = { migrate = \"completed\", cache = \"started\" }"),
        sleeper("web", web, "0ms", "depends_on = { api = \"healthy\" }"),
    );
    let applied = apply(&stack, &manifest).await;
    assert_eq!(applied["version"], 1);
    assert_eq!(applied["services"], 5);

    let view = wait_for(
        &stack,
        &[("db", "ready"), ("cache", "ready"), ("migrate", "completed"), ("api", "ready"), ("web", "ready")],
    )
    .await;
    assert_eq!(view["version"], 1);
    let profile = finished_run(&stack).await;
    assert_eq!(profile["outcome"], "ready", "{profile}");

    let events = wait_event(&stack, "web", "ready").await;
    // Parallel: db and cache both launched before db was ready.
    assert!(at(&events, "cache", "starting") < at(&events, "db", "ready"), "{:?}", summary(&events));
    // Conditions: healthy, completed, started.
    assert!(at(&events, "db", "ready") < at(&events, "migrate", "starting"));
    assert!(at(&events, "migrate", "completed") < at(&events, "api", "starting"));
    assert!(at(&events, "cache", "started") < at(&events, "api", "starting"));
    assert!(at(&events, "api", "ready") < at(&events, "web", "starting"));
    // Every step of a service is announced in order.
    for s in ["pending", "starting", "started", "ready"] {
        at(&events, "web", s);
    }
    assert!(at(&events, "web", "pending") < at(&events, "web", "starting"));

    // The profile: the critical chain runs db -> migrate -> api -> web.
    let chain: Vec<&str> =
        profile["chain"].as_array().unwrap().iter().map(|l| l["service"].as_str().unwrap()).collect();
    assert_eq!(chain, ["db", "migrate", "api", "web"], "{profile}");
    assert!(profile["efficiency"].as_f64().unwrap() > 0.0);
    for name in ["db", "cache", "migrate", "api", "web"] {
        assert!(profile["services"][name]["ready_ms"].is_number(), "{name}: {profile}");
    }

    // States in PostgreSQL, ready services in the registry (readiness follows into discovery).
    let ready: i64 = stack.count("SELECT count(*) FROM managed_services WHERE state IN ('ready', 'completed')").await;
    assert_eq!(ready, 5);
    eventually(Duration::from_secs(20), "web is discoverable", || async {
        let (_, found) = call(&stack, "GET", "/api/v1/discovery/web", None).await;
        (found["instance"]["port"] == web).then_some(())
    })
    .await;

    // The graph through the API, with states.
    let (status, dot) = call(&stack, "GET", "/api/v1/stack/graph", None).await;
    assert_eq!(status, StatusCode::OK);
    let dot = dot.as_str().unwrap();
    assert!(dot.contains("digraph") && dot.contains("\"api\" -> \"migrate\""), "{dot}");
    let (_, levels) = call(&stack, "GET", "/api/v1/stack/graph?format=json", None).await;
    assert_eq!(levels["levels"][0], serde_json::json!(["cache", "db"]), "{levels}");

    // Logs of a service through the API.
    let (status, logs) = call(&stack, "GET", "/api/v1/stack/services/migrate/logs?lines=5", None).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(
        logs["lines"].as_array().unwrap().iter().any(|l| l["text"] == "migrated" && l["unit"] == "migrate"),
        "{logs}"
    );

    // Shutdown in reverse dependency order; nothing keeps running.
    let pids: Vec<u32> = ["db", "cache", "api", "web"].iter().map(|n| pid(&view, n)).collect();
    let (status, down) = call(&stack, "DELETE", "/api/v1/stack", None).await;
    assert_eq!(status, StatusCode::OK, "{down}");
    assert_eq!(down["stopped"], 4);
    let events = wait_event(&stack, "db", "stopped").await;
    assert!(at(&events, "web", "stopped") < at(&events, "api", "stopping"), "{:?}", summary(&events));
    assert!(at(&events, "api", "stopped") < at(&events, "db", "stopping"));
    for p in pids {
        assert!(!process_alive(p), "process {p} still runs");
    }
    let (_, found) = call(&stack, "GET", "/api/v1/discovery/web", None).await;
    assert!(found["instance"].is_null(), "deregistered on stop: {found}");
    assert_eq!(stack_view(&stack).await["desired"], "down");
}

#[tokio::test]
async fn higher_priority_starts_first_within_max_parallel() {
    let stack = Stack::start().await;
    let manifest = format!(
        "max_parallel = 1\n{}{}{}",
        sleeper("low", free_port(), "50ms", "priority = 10"),
        sleeper("high", free_port(), "50ms", "priority = 90"),
        sleeper("mid", free_port(), "50ms", "priority = 50"),
    );
    apply(&stack, &manifest).await;
    wait_for(&stack, &[("low", "ready"), ("high", "ready"), ("mid", "ready")]).await;
    let events = wait_event(&stack, "low", "ready").await;
    let starts: Vec<&str> = events.iter().filter(|(_, st, _)| st == "starting").map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(starts, ["high", "mid", "low"]);
    // One at a time: each starts after the previous one is ready.
    assert!(at(&events, "high", "ready") < at(&events, "mid", "starting"));
    assert!(at(&events, "mid", "ready") < at(&events, "low", "starting"));
}

#[tokio::test]
async fn a_failure_backs_off_gives_up_and_blocks_only_its_dependants() {
    let stack = Stack::start().await;
    let manifest = format!(
        r#"
[services.broken]
command = "/bin/sh"
args = ["-c", "echo failing; sleep 0.1; exit 3"]
port = {closed}
readiness = {{ kind = "tcp" }}
restart = {{ policy = "on-failure", backoff = "100ms", start_limit = 3 }}

[services.needs]
command = "/bin/sh"
args = ["-c", "sleep 1000"]
depends_on = {{ broken = "healthy" }}

[services.later]
command = "/bin/sh"
args = ["-c", "sleep 1000"]
depends_on = {{ needs = "started" }}
{}"#,
        sleeper("alone", free_port(), "0ms", ""),
        closed = free_port(),
    );
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("broken", "failed"), ("alone", "ready")]).await;
    let profile = finished_run(&stack).await;
    assert_eq!(profile["outcome"], "degraded");
    let view = if states(&view)["needs"] == "blocked" { view } else { wait_for(&stack, &[("needs", "blocked")]).await };
    assert_eq!(
        service(&view, "needs")["reason"],
        "requires broken (healthy), which is failed",
        "each blocked service says why"
    );
    assert_eq!(service(&view, "later")["state"], "blocked");
    assert!(service(&view, "later")["reason"].as_str().unwrap().contains("requires needs"));
    assert!(service(&view, "broken")["reason"].as_str().unwrap().contains("started 3 times"), "{view}");
    assert_eq!(service(&view, "broken")["restarts"], 2);

    // Back-off: 100ms, then doubled.
    let events = wait_event(&stack, "broken", "failed").await;
    let delays: Vec<u64> = events
        .iter()
        .filter(|(s, st, _)| s == "broken" && st == "restarting")
        .map(|(_, _, d)| d["restart_in_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [100, 200]);
    let crashed: Vec<&Value> =
        events.iter().filter(|(s, st, _)| s == "broken" && st == "crashed").map(|(_, _, d)| d).collect();
    assert_eq!(crashed.len(), 3);
    assert_eq!(crashed[0]["exit"], serde_json::json!({"by": "code", "code": 3}));
    // The output is kept.
    let (_, logs) = call(&stack, "GET", "/api/v1/stack/services/broken/logs", None).await;
    assert_eq!(
        logs["lines"].as_array().unwrap().iter().filter(|l| l["text"].as_str().unwrap().ends_with("failing")).count(),
        3
    );

    // An operator restart gives it a fresh start budget.
    let (status, _) = call(&stack, "POST", "/api/v1/stack/services/broken/restart", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_event(&stack, "broken", "starting").await;
    let (status, reply) = call(&stack, "POST", "/api/v1/stack/services/ghost/restart", None).await;
    assert_error(&(status, reply), StatusCode::NOT_FOUND, "not_found", Some("service"));
}

#[tokio::test]
async fn a_critical_failure_aborts_the_start_up_and_stops_what_started_in_reverse() {
    let stack = Stack::start().await;
    let manifest = format!(
        r#"{}{}{}
[services.essential]
command = "/bin/sh"
args = ["-c", "sleep 0.3; exit 1"]
port = {closed}
readiness = {{ kind = "tcp" }}
critical = true
restart = {{ policy = "never" }}
depends_on = {{ second = "healthy" }}

[services.after]
command = "/bin/sh"
args = ["-c", "sleep 1000"]
depends_on = {{ essential = "healthy" }}

[services.flaky]
command = "/bin/sh"
args = ["-c", "exit 1"]
port = {closed}
readiness = {{ kind = "tcp" }}
restart = {{ policy = "on-failure", backoff = "2s" }}
depends_on = {{ first = "healthy" }}
{}"#,
        sleeper("first", free_port(), "0ms", ""),
        sleeper("second", free_port(), "0ms", "depends_on = { first = \"healthy\" }"),
        sleeper("side", free_port(), "0ms", "depends_on = { second = \"healthy\" }"),
        // Still starting when the abort comes.
        sleeper("slowstart", free_port(), "10s", "depends_on = { first = \"healthy\" }"),
        closed = free_port(),
    );
    apply(&stack, &manifest).await;
    let profile = finished_run(&stack).await;
    assert_eq!(profile["outcome"], "aborted", "{profile}");
    let view =
        wait_for(&stack, &[("first", "stopped"), ("second", "stopped"), ("side", "stopped"), ("essential", "failed")])
            .await;
    assert!(service(&view, "first")["reason"].as_str().unwrap().contains("critical service essential failed"));
    let events = wait_event(&stack, "first", "stopped").await;
    // Most recently started first: side and essential after second, second after first.
    assert!(at(&events, "side", "stopped") < at(&events, "second", "stopping"), "{:?}", summary(&events));
    assert!(at(&events, "second", "stopped") < at(&events, "first", "stopping"));
    assert!(!events.iter().any(|(s, st, _)| s == "after" && st == "starting"), "nothing more starts");
    // A service still starting is stopped too, and one waiting out its back-off never restarts.
    let view = wait_for(&stack, &[("slowstart", "stopped"), ("flaky", "stopped")]).await;
    assert!(service(&view, "flaky")["reason"].as_str().unwrap().contains("aborted"), "{view}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(states(&stack_view(&stack).await)["flaky"], "stopped", "its back-off timer was cancelled");
    // The aborted run is over: a new version is accepted.
    apply(&stack, &sleeper("first", free_port(), "0ms", "")).await;
}

#[tokio::test]
async fn bad_manifests_are_refused_naming_the_problem() {
    let stack = Stack::start().await;
    let put = |body: &str| call_raw(&stack, "PUT", "/api/v1/stack", Some(body.to_string()), "application/toml", &[]);
    let cycle = r#"
[services.a]
command = "x"
depends_on = { b = "started" }
[services.b]
command = "x"
depends_on = { c = "started" }
[services.c]
command = "x"
depends_on = { a = "started" }
"#;
    let reply = put(cycle).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", None);
    assert!(reply.1["error"]["message"].as_str().unwrap().contains("a -> b -> c -> a"), "{}", reply.1);

    let unknown = "[services.a]\ncommand = \"x\"\ndepends_on = { ghost = \"started\" }\n";
    let reply = put(unknown).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("services.a.depends_on.ghost"));

    let bad_value = "[services.a]\ncommand = \"x\"\npriority = 500\n";
    let reply = put(bad_value).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", None);
    assert!(reply.1["error"]["message"].as_str().unwrap().contains("line"), "{}", reply.1);

    // Nothing was stored.
    assert_eq!(stack.count("SELECT count(*) FROM manifests").await, 0);
    let reply = call(&stack, "GET", "/api/v1/stack", None).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn crashed_services_recover_highest_priority_first_and_bound_services_follow() {
    let stack = Stack::start().await;
    // The first restart takes the only slot for 1.5 s; the others wait and go by priority. The slot
    // is held long enough that every crash is reported before it frees, even on a busy machine.
    let always = r#"restart = { policy = "always", backoff = "300ms" }"#;
    let manifest = format!(
        "max_parallel = 1\n{}{}{}{}{}",
        sleeper("a", free_port(), "1500ms", &format!("priority = 10\n{always}")),
        sleeper("b", free_port(), "1500ms", &format!("priority = 90\n{always}")),
        sleeper("c", free_port(), "1500ms", &format!("priority = 50\n{always}")),
        sleeper("d", free_port(), "1500ms", &format!("priority = 70\n{always}")),
        sleeper("follower", free_port(), "0ms", "binds_to = [\"b\"]\ndepends_on = { b = \"healthy\" }"),
    );
    apply(&stack, &manifest).await;
    let view =
        wait_for(&stack, &[("a", "ready"), ("b", "ready"), ("c", "ready"), ("d", "ready"), ("follower", "ready")])
            .await;
    let follower_pid = pid(&view, "follower");
    let before = transitions(&stack).await.len();
    for name in ["a", "b", "c", "d"] {
        // SAFETY: kill(2) on a pid the test read from the API.
        unsafe { libc::kill(pid(&view, name) as i32, libc::SIGKILL) };
    }
    let events = wait_event_after(&stack, before, "follower", "ready").await;
    let restarts: Vec<&str> = events.iter().filter(|(_, st, _)| st == "starting").map(|(s, _, _)| s.as_str()).collect();
    let recovered: Vec<&str> = restarts.iter().copied().filter(|s| *s != "follower").collect();
    assert_eq!(recovered.len(), 4, "{restarts:?}");
    // Whichever restart came due first took the free slot; the rest went by priority.
    let mut waited = recovered[1..].to_vec();
    let priority = |s: &str| match s {
        "a" => 10,
        "b" => 90,
        "c" => 50,
        _ => 70,
    };
    waited.sort_by_key(|s| std::cmp::Reverse(priority(s)));
    assert_eq!(recovered[1..], waited[..], "{restarts:?}");
    let crashed: Vec<&Value> = events.iter().filter(|(_, st, _)| st == "crashed").map(|(_, _, d)| d).collect();
    assert_eq!(crashed.len(), 4);
    assert_eq!(crashed[0]["exit"], serde_json::json!({"by": "signal", "signal": 9}));
    // The follower restarted after b was ready again.
    assert!(at(&events, "b", "ready") < at(&events, "follower", "stopping"), "{:?}", summary(&events));
    let (_, _, stopped) = &events[at(&events, "follower", "stopped")];
    assert_eq!(stopped["reason"], "bound to b, which was restarted");
    let view = stack_view(&stack).await;
    assert_ne!(pid(&view, "follower"), follower_pid);
    assert!(!process_alive(follower_pid));
}

#[tokio::test]
async fn a_critical_liveness_check_restarts_the_service() {
    let stack = Stack::start().await;
    let port = free_port();
    let manifest = format!(
        r#"
[services.wobbly]
command = "{SLEEPER}"
args = ["--healthy-for", "1s"]
port = {port}
readiness = {{ kind = "tcp" }}
liveness = {{ kind = "tcp", interval = "200ms", failures_before_critical = 2 }}
restart = {{ policy = "on-failure", backoff = "100ms" }}
grace_period = "2s"
"#
    );
    apply(&stack, &manifest).await;
    let first = pid(&wait_for(&stack, &[("wobbly", "ready")]).await, "wobbly");
    let events = wait_event(&stack, "wobbly", "restarting").await;
    let (_, _, crashed) = &events[at(&events, "wobbly", "crashed")];
    assert!(crashed["reason"].as_str().unwrap().starts_with("liveness check critical"), "{crashed}");
    assert!(at(&events, "wobbly", "stopping") < at(&events, "wobbly", "crashed"), "stopped first, then restarted");
    let view = eventually(Duration::from_secs(20), "wobbly runs again", || async {
        let view = stack_view(&stack).await;
        (service(&view, "wobbly")["pid"].as_u64().is_some_and(|p| p as u32 != first)).then_some(view)
    })
    .await;
    assert!(!process_alive(first));
    assert_eq!(service(&view, "wobbly")["restarts"], 1);
}

#[tokio::test]
async fn the_applied_stack_is_versioned_and_resumed_after_a_restart() {
    let mut stack = Stack::start().await;
    let (one, two) = (free_port(), free_port());
    let v1 = format!("{}{}", sleeper("one", one, "0ms", ""), sleeper("two", two, "0ms", ""));
    assert_eq!(apply(&stack, &v1).await["version"], 1);
    let view = wait_for(&stack, &[("one", "ready"), ("two", "ready")]).await;
    let (one_pid, two_pid) = (pid(&view, "one"), pid(&view, "two"));

    // A new version: `two` changed and is replaced, `one` is unchanged and keeps running, `three`
    // is new.
    let v2 = format!(
        "{}{}{}",
        sleeper("one", one, "0ms", ""),
        sleeper("two", two, "0ms", "priority = 60"),
        sleeper("three", free_port(), "0ms", "")
    );
    let applied = apply(&stack, &v2).await;
    assert_eq!(applied["version"], 2);
    assert_eq!(applied["replaced"], serde_json::json!(["two"]));
    let view = wait_for(&stack, &[("one", "ready"), ("two", "ready"), ("three", "ready")]).await;
    assert_eq!(pid(&view, "one"), one_pid, "unchanged: not restarted");
    assert_ne!(pid(&view, "two"), two_pid);
    assert_eq!(stack.count("SELECT count(*) FROM manifests").await, 2);

    // The orchestrator stops: its services keep running; started again, it resumes the stack
    // and adopts them.
    let pids: Vec<u32> = ["one", "two", "three"].iter().map(|n| pid(&view, n)).collect();
    stack.stop_orchestrator().await;
    for p in &pids {
        assert!(process_alive(*p), "a service outlives the orchestrator");
    }
    stack.start_orchestrator().await;
    let view = wait_for(&stack, &[("one", "ready"), ("two", "ready"), ("three", "ready")]).await;
    assert_eq!(view["version"], 2);
    let adopted: Vec<u32> = ["one", "two", "three"].iter().map(|n| pid(&view, n)).collect();
    assert_eq!(adopted, pids, "adopted, not started again");
    eventually(Duration::from_secs(20), "three runs recorded as ready", || async {
        (stack.count("SELECT count(*) FROM startup_runs WHERE outcome = 'ready'").await == 3).then_some(())
    })
    .await;

    // A service removed from the manifest is stopped: nothing of it is left running.
    let three = pid(&view, "three");
    let v3 = format!("{}{}", sleeper("one", one, "0ms", ""), sleeper("two", two, "0ms", "priority = 60"));
    assert_eq!(apply(&stack, &v3).await["version"], 3);
    // Its shim's records go once its end is reported (just after the stop is answered).
    let records_of_three = || {
        let records = std::fs::read_dir(stack.agent_logs.path().join("shims")).unwrap();
        records.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("three.")).count()
    };
    eventually(Duration::from_secs(20), "the removed service stopped, its records gone", || async {
        let view = stack_view(&stack).await;
        let gone = view["services"].as_array().unwrap().iter().all(|s| s["name"] != "three");
        (gone && !process_alive(three) && records_of_three() == 0).then_some(())
    })
    .await;

    // Taken down, it stays down across a restart.
    call(&stack, "DELETE", "/api/v1/stack", None).await;
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let view = stack_view(&stack).await;
    assert_eq!(view["desired"], "down");
    assert!(states(&view).values().all(|s| s == "stopped"), "{view}");
}

#[tokio::test]
async fn a_standalone_agent_on_another_node_runs_services_for_the_orchestrator() {
    let stack = Stack::start().await;
    let logs = orch_testkit::TempDir::new("agent-n2");
    let _leftovers = common::KillServicesOf(logs.path().to_path_buf());
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["agent", "--node", "n2", "--nats-url", &stack.nats.url("agent-n2"), "--log", "warn"])
        .arg("--log-dir")
        .arg(logs.path())
        .spawn()
        .expect("agent starts");
    let port = free_port();
    let manifest = format!(
        "{}{}",
        sleeper("remote", port, "100ms", "node = \"n2\""),
        sleeper("local-one", free_port(), "0ms", "depends_on = { remote = \"healthy\" }"),
    );
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("remote", "ready"), ("local-one", "ready")]).await;
    assert_eq!(service(&view, "remote")["node"], "n2");
    let remote = pid(&view, "remote");
    assert!(process_alive(remote));
    // Its output is on the agent's node, read through the orchestrator's API.
    let (status, lines) = call(&stack, "GET", "/api/v1/stack/services/remote/logs", None).await;
    assert_eq!(status, StatusCode::OK, "{lines}");
    assert!(lines["lines"][0]["text"].as_str().unwrap().contains("ready"), "{lines}");
    assert_eq!(lines["lines"][0]["node"], "n2", "{lines}");
    assert!(logs.path().join("remote.log").exists());

    // A crash on n2 is reported over NATS and recovered.
    unsafe { libc::kill(remote as i32, libc::SIGKILL) };
    wait_event(&stack, "remote", "crashed").await;
    let view = eventually(Duration::from_secs(20), "remote runs again", || async {
        let view = stack_view(&stack).await;
        (service(&view, "remote")["state"] == "ready" && pid(&view, "remote") != remote).then_some(view)
    })
    .await;
    let (status, _) = call(&stack, "DELETE", "/api/v1/stack", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!process_alive(pid(&view, "remote")));
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[tokio::test]
async fn the_command_line_applies_follows_reports_and_takes_down() {
    let stack = Stack::start().await;
    let dir = orch_testkit::TempDir::new("cli");
    let file = dir.path().join("stack.toml");
    let manifest = format!(
        "{}{}",
        sleeper("alpha", free_port(), "100ms", ""),
        sleeper("beta", free_port(), "0ms", "depends_on = { alpha = \"healthy\" }")
    );
    std::fs::write(&file, manifest).unwrap();
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).args(&args).output().await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let args = |cmd: &str, extra: &[&str]| {
        let mut a = vec![cmd.to_string(), "--api-url".to_string(), api.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let path = file.display().to_string();
    let (code, out, err) = run(args("up", &["-f", &path])).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("manifest version 1 applied: 2 services"), "{out}");
    // Not a terminal: one line per transition, then the profile.
    assert!(out.lines().any(|l| l.contains("beta") && l.trim_end().ends_with("ready")), "{out}");
    assert!(out.contains("critical chain") && out.contains("parallel efficiency"), "{out}");

    let (code, out, _) = run(args("status", &[])).await;
    assert_eq!(code, Some(0));
    assert!(out.lines().any(|l| l.starts_with("alpha") && l.contains("ready")), "{out}");
    let (code, out, _) = run(args("profile", &[])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("alpha @"), "{out}");
    let (code, out, _) = run(args("down", &[])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("stopped 2 running services"), "{out}");

    // `events --all` prints the stored events as JSON lines, the filter keeping to lifecycle ones.
    let prefix = stack.subjects.prefix().to_string();
    let nats = ["--nats-url".to_string(), stack.nats.url("operator"), "--subject-prefix".to_string(), prefix.clone()];
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["events", "--all", "--filter", &format!("{prefix}.evt.lifecycle.>")])
        .args(&nats)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("an event line");
    let event: Value = serde_json::from_str(&first.unwrap().expect("a line")).unwrap();
    assert!(event["type"].as_str().unwrap().starts_with("io.orch.lifecycle."), "{event}");
    follow.kill().await.unwrap();
    // A filter outside the events subjects is refused, naming the problem.
    let mut outside = vec!["events".to_string(), "--filter".to_string(), format!("{prefix}.cmd.>")];
    outside.extend(nats);
    let (code, _, err) = run(outside).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not an events subject"), "{err}");

    std::fs::write(&file, "[services.a]\ncommand = \"x\"\npriority = 900\n").unwrap();
    let (code, _, err) = run(args("up", &["-f", &path])).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[tokio::test]
async fn stack_routes_answer_bad_input_with_json_errors_naming_the_field() {
    let stack = Stack::start().await;
    apply(&stack, &sleeper("solo", free_port(), "0ms", "")).await;
    let reply = call(&stack, "GET", "/api/v1/stack/services/solo/logs?lines=many", None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("lines"));
    let reply = call(&stack, "GET", "/api/v1/stack/graph?format=svg", None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("format"));
    let reply = call(&stack, "GET", "/api/v1/stack/graph?colour=red", None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("colour"));
    let reply = call(&stack, "POST", "/api/v1/stack/services/Bad%20Name/restart", None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", Some("name"));
    // While the start-up runs, a new version is refused, not queued silently.
    let slow = sleeper("slow", free_port(), "2s", "");
    wait_for(&stack, &[("solo", "ready")]).await;
    finished_run(&stack).await;
    apply(&stack, &format!("{}{slow}", sleeper("solo", free_port(), "0ms", ""))).await;
    let reply = call_raw(&stack, "PUT", "/api/v1/stack", Some(slow.clone()), "application/toml", &[]).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict", None);
    let reply = call_raw(&stack, "PUT", "/api/v1/stack", Some("not toml [".into()), "application/toml", &[]).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_failed", None);
}

#[tokio::test]
async fn the_stack_is_driven_over_nats_request_reply_too() {
    let stack = Stack::start().await;
    let manifest = sleeper("natsy", free_port(), "0ms", "");
    let body = serde_json::json!({ "manifest": manifest, "source": "test" }).to_string();
    let (code, applied) = stack.request_on("lifecycle", "apply", &body).await;
    assert_eq!(code, None, "{applied}");
    assert_eq!(applied["version"], 1);
    wait_for(&stack, &[("natsy", "ready")]).await;
    let (code, status) = stack.request_on("lifecycle", "status", "").await;
    assert_eq!(code, None);
    assert_eq!(status["services"][0]["state"], "ready");
    let (code, profile) = stack.request_on("lifecycle", "profile", "").await;
    assert_eq!(code, None);
    assert!(profile["wall_ms"].is_number(), "{profile}");
    let (code, reply) = stack.request_on("lifecycle", "restart", r#"{"service": "natsy"}"#).await;
    assert_eq!(code, None, "{reply}");
    wait_event(&stack, "natsy", "stopped").await;
    wait_for(&stack, &[("natsy", "ready")]).await;

    // Bad input: error replies naming the field.
    let cycle = serde_json::json!({ "manifest": "[services.a]\ncommand = \"x\"\ndepends_on = { a = \"started\" }\n" });
    let (code, reply) = stack.request_on("lifecycle", "apply", &cycle.to_string()).await;
    assert_eq!(code.as_deref(), Some("400"), "{reply}");
    assert_eq!(reply["error"]["field"], "services.a.depends_on.a", "{reply}");
    let (code, reply) = stack.request_on("lifecycle", "restart", r#"{"service": "ghost"}"#).await;
    assert_eq!(code.as_deref(), Some("404"));
    assert_eq!(reply["error"]["field"], "service");
    let (code, reply) = stack.request_on("lifecycle", "restart", r#"{"name": "natsy"}"#).await;
    assert_eq!(code.as_deref(), Some("400"), "unknown field: {reply}");
    let (code, reply) = stack.request_on("lifecycle", "explode", "{}").await;
    assert_eq!(code.as_deref(), Some("404"));
    assert_eq!(reply["error"]["code"], "unknown_command");
    let (code, reply) = stack.request_on("lifecycle", "down", "").await;
    assert_eq!(code, None);
    assert_eq!(reply["stopped"], 1);
}

#[tokio::test]
async fn manifests_have_their_own_body_limit() {
    let stack = Stack::start_with(|s| s.http.manifest_max_bytes = 100_000).await;
    let padding = "# padding\n".repeat(7_000); // 70 KB: over the command limit, under this one
    let manifest = format!("{padding}{}", sleeper("padded", free_port(), "0ms", ""));
    apply(&stack, &manifest).await;
    let too_big = format!("{}{manifest}", "# padding\n".repeat(5_000));
    let reply = call_raw(&stack, "PUT", "/api/v1/stack", Some(too_big), "application/toml", &[]).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", Some("manifest"));
}

/// Managed services outlive the orchestrator (stopped, as for an upgrade of its binary): they
/// keep running, untouched, while it is away. The restarted orchestrator's agent adopts the one
/// still running (same pid, never restarted) and reports the end of the one that died meanwhile
/// with its real status; the resumed stack starts that one again.
#[tokio::test]
async fn managed_services_outlive_a_restart_of_the_orchestrator_and_are_adopted() {
    let mut stack = Stack::start().await;
    let manifest =
        format!("{}{}", sleeper("steady", free_port(), "0ms", ""), sleeper("dies-away", free_port(), "0ms", ""));
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("steady", "ready"), ("dies-away", "ready")]).await;
    let (steady, dying) = (pid(&view, "steady"), pid(&view, "dies-away"));
    let before = transitions(&stack).await.len();

    stack.stop_orchestrator().await;
    assert!(process_alive(steady) && process_alive(dying), "the services outlived the orchestrator");
    unsafe { libc::kill(dying as i32, libc::SIGKILL) };
    eventually(Duration::from_secs(10), "the service dead", || async { (!process_alive(dying)).then_some(()) }).await;

    let mut reports = stack.client.subscribe("orch.agent.local.exited").await.unwrap();
    stack.client.flush().await.unwrap();
    stack.start_orchestrator().await;
    let report = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(&mut reports))
        .await
        .expect("the end while away is reported")
        .unwrap();
    let report: Value = serde_json::from_slice(&report.payload).unwrap();
    assert_eq!(
        (&report["service"], &report["pid"], &report["exit"]),
        (&json!("dies-away"), &json!(dying), &json!({"by": "signal", "signal": 9}))
    );
    let view = eventually(Duration::from_secs(30), "dies-away runs again", || async {
        let view = stack_view(&stack).await;
        let again = service(&view, "dies-away")["state"] == "ready" && pid(&view, "dies-away") != dying;
        (again && service(&view, "steady")["state"] == "ready").then_some(view)
    })
    .await;
    assert_eq!(pid(&view, "steady"), steady, "adopted, not restarted");
    assert!(process_alive(steady));
    assert_eq!(service(&view, "steady")["restarts"], 0, "{view}");
    let after: Vec<_> = transitions(&stack).await.into_iter().skip(before).collect();
    assert!(
        !after.iter().any(|(s, st, _)| s == "steady" && (st == "crashed" || st == "stopped" || st == "stopping")),
        "steady was never stopped: {after:?}"
    );
}

/// Manifest history: the versions with who applied them and when (paged), one version's text, a
/// diff service by service and field by field, and a rollback to an old version (a new version
/// equal to it, applied like any other, by whoever asked): over HTTP, NATS and the command line.
#[tokio::test]
async fn manifest_versions_are_listed_shown_diffed_and_rolled_back() {
    let stack = Stack::start().await;
    let shell = |name: &str, mode: &str| {
        format!(
            "[services.{name}]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\nenv = {{ MODE = \"{mode}\" }}\ngrace_period = \"1s\"\n"
        )
    };
    let v1 = shell("web", "one");
    let v2 = format!("{}{}", shell("web", "two"), shell("extra", "x"));
    apply(&stack, &v1).await;
    wait_for(&stack, &[("web", "ready")]).await;
    // The second by NATS: another principal and source.
    let (code, applied) =
        stack.request_on("lifecycle", "apply", &json!({ "manifest": v2, "source": "deploy-42" }).to_string()).await;
    assert_eq!((code, applied["version"].as_i64()), (None, Some(2)), "{applied}");
    wait_for(&stack, &[("web", "ready"), ("extra", "ready")]).await;

    let (status, page) = call(&stack, "GET", "/api/v1/stack/versions", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let versions = page["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!((versions[0]["version"].as_i64(), versions[0]["current"].as_bool()), (Some(2), Some(true)));
    assert_eq!((versions[0]["source"].as_str(), versions[0]["principal"].as_str()), (Some("deploy-42"), Some("nats")));
    assert_eq!((versions[1]["source"].as_str(), versions[1]["principal"].as_str()), (Some("api"), Some("anonymous")));
    assert_eq!(versions[1]["current"], false);
    assert!(versions[1]["applied_at"].as_str().unwrap() <= versions[0]["applied_at"].as_str().unwrap());
    assert!(page.get("next_before").is_none(), "{page}");
    // Paged: one at a time, newest first.
    let (_, first) = call(&stack, "GET", "/api/v1/stack/versions?limit=1", None).await;
    assert_eq!((first["versions"][0]["version"].as_i64(), first["next_before"].as_i64()), (Some(2), Some(2)));
    let (_, second) = call(&stack, "GET", "/api/v1/stack/versions?limit=1&before=2", None).await;
    assert_eq!(second["versions"][0]["version"], 1);
    assert!(second.get("next_before").is_none(), "{second}");

    let (status, shown) = call(&stack, "GET", "/api/v1/stack/versions/1", None).await;
    assert_eq!((status, shown["manifest"].as_str()), (StatusCode::OK, Some(v1.as_str())), "{shown}");
    assert_eq!(shown["version"], 1);

    // The diff, field by field; the same over NATS.
    let (status, diff) = call(&stack, "GET", "/api/v1/stack/diff?from=1&to=2", None).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["stack"], json!([]));
    assert_eq!(
        diff["services"],
        json!([
            { "service": "extra", "change": "added" },
            { "service": "web", "change": "changed", "fields": [{ "field": "env.MODE", "from": "one", "to": "two" }] },
        ])
    );
    let (code, over_nats) = stack.request_on("lifecycle", "diff", r#"{"from":1,"to":2}"#).await;
    assert_eq!((code, &over_nats), (None, &diff));
    let (code, listed) = stack.request_on("lifecycle", "versions", "").await;
    assert_eq!((code, &listed), (None, &page));
    let (code, one) = stack.request_on("lifecycle", "version", r#"{"version":2}"#).await;
    assert_eq!((code.as_deref(), one["manifest"].as_str()), (None, Some(v2.as_str())));

    // Bad input names its field.
    let missing = call(&stack, "GET", "/api/v1/stack/diff?from=1", None).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "validation_failed", Some("to"));
    let unknown = call(&stack, "GET", "/api/v1/stack/versions/99", None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found", Some("version"));
    let garbled = call(&stack, "GET", "/api/v1/stack/versions/abc", None).await;
    assert_error(&garbled, StatusCode::BAD_REQUEST, "validation_failed", Some("version"));
    let limit = call(&stack, "GET", "/api/v1/stack/versions?limit=0", None).await;
    assert_error(&limit, StatusCode::BAD_REQUEST, "validation_failed", Some("limit"));
    let unknown_to = call(&stack, "GET", "/api/v1/stack/diff?from=1&to=7", None).await;
    assert_error(&unknown_to, StatusCode::NOT_FOUND, "not_found", Some("to"));
    let (code, zero) = stack.request_on("lifecycle", "rollback", r#"{"version":0}"#).await;
    assert_eq!(code.as_deref(), Some("400"));
    assert_eq!(
        (zero["error"]["code"].as_str(), zero["error"]["field"].as_str()),
        (Some("validation_failed"), Some("version"))
    );

    // The command line: list, diff, and the rollback, followed to the end like `up`.
    let listed = common::cli(&stack, &["history", "list"]).await;
    assert!(listed.contains("deploy-42") && listed.contains("(current)"), "{listed}");
    let diffed = common::cli(&stack, &["history", "diff", "1", "2"]).await;
    assert!(diffed.contains("+ extra") && diffed.contains("env.MODE: \"one\" -> \"two\""), "{diffed}");
    assert_eq!(common::cli(&stack, &["history", "show", "1"]).await, v1);
    let web_before = pid(&stack_view(&stack).await, "web");
    let rolled = common::cli(&stack, &["history", "rollback", "1"]).await;
    assert!(rolled.contains("rolled back to version 1") && rolled.contains("manifest version 3 applied"), "{rolled}");

    let view = wait_for(&stack, &[("web", "ready")]).await;
    assert_eq!(view["version"], 3);
    assert!(view["services"].as_array().unwrap().iter().all(|s| s["name"] != "extra"), "{view}");
    let web = pid(&view, "web");
    assert_ne!(web, web_before, "web is started again from version 1");
    let environ = std::fs::read(format!("/proc/{web}/environ")).unwrap();
    assert!(environ.split(|b| *b == 0).any(|v| v == b"MODE=one"), "web runs with version 1's environment");
    let (_, page) = call(&stack, "GET", "/api/v1/stack/versions?limit=1", None).await;
    let rollback = &page["versions"][0];
    assert_eq!((rollback["version"].as_i64(), rollback["source"].as_str()), (Some(3), Some("rollback to v1")));
    assert_eq!(rollback["principal"], "anonymous", "the caller of the command line, as the API knows it");
    let (_, same) = call(&stack, "GET", "/api/v1/stack/diff?from=1&to=3", None).await;
    assert_eq!((same["stack"].clone(), same["services"].clone()), (json!([]), json!([])), "{same}");
}
