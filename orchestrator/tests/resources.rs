//! Services with resources and replicas, against real servers, processes and standalone agents
//! (each its own process, reporting its node's capacity and labels): `count` runs each replica as
//! a process and registry instance of its own, under the service's name, each on its own port; a
//! dependency on the service waits for every replica; a restart of the service restarts each
//! replica. Replicas are placed by constraints and capacity, spread over the nodes; a node whose
//! agent is killed loses its replicas to the others, and what it still runs when it comes back is
//! stopped; a service of higher priority preempts one of lower priority.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::Stack;
use common::http::call;
use common::lifecycle::*;
use orch_testkit::eventually;
use serde_json::json;

/// `n` consecutive free TCP ports on loopback.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = orch_testkit::free_port();
        if base.checked_add(n).is_some() && (1..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

#[tokio::test]
async fn replicas_run_as_processes_and_instances_of_their_own() {
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let base = free_ports(3);
    let manifest = format!(
        "{}{}",
        sleeper("api", base, "50ms", "count = 3\nresources = { cpu = 100, memory = 64 }\npriority = 70"),
        sleeper("web", orch_testkit::free_port(), "0ms", "depends_on = { api = \"healthy\" }"),
    );
    let applied = apply(&stack, &manifest).await;
    assert_eq!(applied["services"], 4, "three replicas and web: {applied}");
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready"), ("api-2", "ready"), ("web", "ready")]).await;
    let pids: Vec<u32> = (0..3).map(|i| pid(&view, &format!("api-{i}"))).collect();
    assert!(pids[0] != pids[1] && pids[1] != pids[2], "{pids:?}");
    let api1 = service(&view, "api-1");
    assert_eq!(api1["replica_of"], "api", "{api1}");
    assert_eq!(api1["resources"], json!({"cpu": 100, "memory": 64}));
    assert_eq!(api1["priority"], 70);
    assert!(service(&view, "web").get("replica_of").is_none());

    // Web waited for every replica. (Lifecycle events are published in the order they were
    // recorded: once web's `ready` is on the stream, everything before it is.)
    let events = wait_event(&stack, "web", "ready").await;
    for i in 0..3 {
        assert!(at(&events, &format!("api-{i}"), "ready") < at(&events, "web", "starting"), "{:?}", summary(&events));
    }

    // Each replica is an instance of `api` on its own port, discovered under the service's name.
    let instances = eventually(Duration::from_secs(20), "three instances of api", || async {
        let (status, body) = call(&stack, "GET", "/api/v1/services?name=api", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        (items.len() == 3).then_some(items)
    })
    .await;
    let mut ports: Vec<u64> = instances.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    ports.sort();
    assert_eq!(ports, [base as u64, base as u64 + 1, base as u64 + 2]);
    let mut ids: Vec<&str> = instances.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["managed-api-0", "managed-api-1", "managed-api-2"]);

    // Restarting the service restarts each replica.
    let (status, body) = call(&stack, "POST", "/api/v1/stack/services/api/restart", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually(Duration::from_secs(30), "every replica runs a new process", || async {
        let view = stack_view(&stack).await;
        let ready = (0..3).all(|i| service(&view, &format!("api-{i}"))["state"] == "ready");
        let renewed =
            (0..3).all(|i| service(&view, &format!("api-{i}"))["pid"].as_u64().is_some_and(|p| p as u32 != pids[i]));
        (ready && renewed).then_some(())
    })
    .await;
}

/// A standalone agent on `node`, reporting every 100 ms with `cpu` millicores and `labels`.
struct Agent {
    child: std::process::Child,
}

impl Agent {
    fn start(stack: &Stack, node: &str, cpu: u64, labels: &str, logs: &orch_testkit::TempDir) -> Agent {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["agent", "--node", node, "--nats-url", &stack.nats.url(&format!("agent-{node}")), "--log", "warn"])
            .args(["--node-heartbeat", "100ms", "--reserve-cpu", "0", "--reserve-memory", "0"])
            .args(["--node-cpu", &cpu.to_string(), "--node-memory", "4096", "--label", labels])
            .arg("--log-dir")
            .arg(logs.path())
            .spawn()
            .expect("agent starts");
        Agent { child }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service of `orch-sleeper` without a port (nodes on one machine share the ports).
fn portless(name: &str, extra: &str) -> String {
    format!(
        "\n[services.{name}]\ncommand = \"{SLEEPER}\"\nargs = [\"--ready-after\", \"0ms\"]\ngrace_period = \"2s\"\n{extra}\n"
    )
}

async fn nodes_ready(stack: &Stack, names: &[&str]) {
    eventually(Duration::from_secs(30), "the agents' nodes are ready", || async {
        let (_, body) = call(stack, "GET", "/api/v1/nodes", None).await;
        let ready: Vec<&str> = body["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "ready")
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        names.iter().all(|n| ready.contains(n)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicas_are_placed_by_constraints_and_capacity_and_move_when_their_node_is_lost() {
    let stack = Stack::start_with(|s| {
        s.nodes.down_after = Duration::from_secs(1);
        s.agent.as_mut().unwrap().node_report.interval = Duration::from_millis(100);
    })
    .await;
    let (logs2, logs3) = (orch_testkit::TempDir::new("agent-n2"), orch_testkit::TempDir::new("agent-n3"));
    let _left = (common::KillServicesOf(logs2.path().into()), common::KillServicesOf(logs3.path().into()));
    let _n2 = Agent::start(&stack, "n2", 1500, "zone=b", &logs2);
    let mut n3 = Agent::start(&stack, "n3", 1000, "zone=b", &logs3);
    nodes_ready(&stack, &["local", "n2", "n3"]).await;

    let manifest = format!(
        "{}{}",
        portless("api", "count = 2\nresources = { cpu = 600, memory = 64 }\nconstraints = [\"zone == b\"]"),
        portless("web", "constraints = [\"zone == c\"]"),
    );
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready")]).await;
    // Spread: one replica on each node of zone b; never on `local` (no such label).
    assert_eq!(service(&view, "api-0")["node"], "n2", "{view}");
    assert_eq!(service(&view, "api-1")["node"], "n3", "{view}");
    assert!(service(&view, "api-1")["placement"].as_str().unwrap().starts_with("placed on n3"), "{view}");
    // No node has the label: web waits, saying why.
    let web = service(&view, "web");
    assert_eq!(web["state"], "pending", "{web}");
    let why = web["reason"].as_str().unwrap();
    assert!(why.contains("waiting for a node") && why.contains("zone == c"), "{why}");
    let old_pid = pid(&view, "api-1");

    // The agent of n3 dies: n3 goes down, api-1 is lost and placed on n2 (which has room left).
    n3.kill();
    let view = eventually(Duration::from_secs(30), "api-1 runs on n2", || async {
        let view = stack_view(&stack).await;
        let api1 = service(&view, "api-1");
        (api1["node"] == "n2" && api1["state"] == "ready").then_some(view.clone())
    })
    .await;
    assert_ne!(pid(&view, "api-1"), old_pid);
    let lost = stack.wait_events(1, "the lost event", |e| e["type"] == "io.orch.resource.lost.v1").await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["data"]["service"], "api-1");
    assert_eq!(lost[0]["data"]["replica_of"], "api");
    assert_eq!(lost[0]["data"]["node"], "n3");
    assert!(orch_testkit::process_alive(old_pid), "a process outlives its agent: it still runs");

    // n3 comes back (a new agent adopts the old process): it is stopped there, not kept twice.
    let _n3 = Agent::start(&stack, "n3", 1000, "zone=b", &logs3);
    eventually(Duration::from_secs(30), "the stale api-1 on n3 is stopped", || async {
        (!orch_testkit::process_alive(old_pid)).then_some(())
    })
    .await;
    let view = stack_view(&stack).await;
    assert_eq!(service(&view, "api-1")["node"], "n2");
    assert_eq!(service(&view, "api-1")["state"], "ready");
}

#[tokio::test]
async fn a_service_of_higher_priority_preempts_one_of_lower_priority_within_the_budget() {
    let stack = Stack::start_with(|s| {
        s.lifecycle.preemption =
            orchestrator::resources::preemption::PreemptionBudget { max: 1, window: Duration::from_secs(600) };
    })
    .await;
    let logs = orch_testkit::TempDir::new("agent-n2");
    let _left = common::KillServicesOf(logs.path().into());
    let _n2 = Agent::start(&stack, "n2", 1000, "zone=b", &logs);
    nodes_ready(&stack, &["n2"]).await;
    let low = format!(
        "{}{}",
        portless("batch", "priority = 10\nresources = { cpu = 600 }\nnode = \"n2\""),
        portless("cron", "priority = 10\nresources = { cpu = 300 }\nnode = \"n2\"")
    );
    apply(&stack, &low).await;
    let view = wait_for(&stack, &[("batch", "ready"), ("cron", "ready")]).await;
    let (batch_pid, cron_pid) = (pid(&view, "batch"), pid(&view, "cron"));

    let high = |name: &str, cpu: u32| {
        portless(name, &format!("priority = 90\nresources = {{ cpu = {cpu} }}\nconstraints = [\"zone == b\"]"))
    };
    let both = format!("{low}{}", high("api", 600));
    apply(&stack, &both).await;
    let view = wait_for(&stack, &[("api", "ready")]).await;
    assert_eq!(service(&view, "api")["node"], "n2", "{view}");
    let batch = service(&view, "batch");
    assert_eq!(batch["state"], "pending", "{batch}");
    assert!(batch["reason"].as_str().unwrap().starts_with("waiting for a node"), "{batch}");
    assert!(!orch_testkit::process_alive(batch_pid), "stopped to make room");
    let preempted = stack.wait_events(1, "the preempted event", |e| e["type"] == "io.orch.resource.preempted.v1").await;
    assert_eq!(preempted.len(), 1);
    let data = &preempted[0]["data"];
    assert_eq!(
        (data["service"].as_str(), data["by"].as_str(), data["node"].as_str()),
        (Some("batch"), Some("api"), Some("n2"))
    );
    assert_eq!((data["priority"].as_u64(), data["by_priority"].as_u64()), (Some(10), Some(90)));
    assert_eq!(data["budget_left"], 0, "a budget of one per window");
    assert!(data["reason"].as_str().unwrap().contains("batch"), "{data}");

    // Another service of high priority would need cron gone: the budget is spent, so it waits,
    // saying why, and cron runs on.
    apply(&stack, &format!("{both}{}", high("web", 400))).await;
    let view = eventually(Duration::from_secs(30), "web waits for the budget", || async {
        let view = stack_view(&stack).await;
        let why = service(&view, "web")["reason"].as_str().unwrap_or_default().to_string();
        why.contains("budget").then_some((view, why))
    })
    .await;
    let (view, why) = view;
    assert!(
        why.ends_with("preempting cron would make room, but the preemption budget (1 per 10m) has 0 left"),
        "{why}"
    );
    assert_eq!(service(&view, "web")["state"], "pending");
    assert_eq!((service(&view, "cron")["state"].as_str(), pid(&view, "cron")), (Some("ready"), cron_pid));
    let preempted = stack.events().await.into_iter().filter(|e| e["type"] == "io.orch.resource.preempted.v1").count();
    assert_eq!(preempted, 1);
}

#[tokio::test]
async fn a_service_over_its_memory_limit_is_oom_killed_reported_as_such_and_restarted() {
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let enforced = eventually(Duration::from_secs(30), "the local node reports", || async {
        let (status, node) = call(&stack, "GET", "/api/v1/nodes/local", None).await;
        (status == StatusCode::OK).then(|| node["enforcement"].as_str().unwrap().to_string())
    })
    .await;
    let manifest = format!(
        "\n[services.hog]\ncommand = \"{SLEEPER}\"\nargs = [\"--allocate\", \"200\"]\n\
         resources = {{ memory = 32 }}\nrestart = {{ policy = \"on-failure\", backoff = \"100ms\", start_limit = 2 }}\n"
    );
    if !matches!(enforced.as_str(), "cgroup_v1" | "cgroup_v2") {
        // No usable cgroups here: the agent refuses the limits, and the start fails saying so.
        eprintln!("cgroups: {enforced}; checking the refusal");
        apply(&stack, &manifest).await;
        let events = wait_event(&stack, "hog", "crashed").await;
        let (_, _, data) = events.iter().find(|(s, st, _)| s == "hog" && st == "crashed").unwrap();
        assert!(data["reason"].as_str().unwrap().contains("limits"), "{data}");
        return;
    }
    apply(&stack, &manifest).await;
    let events = wait_event(&stack, "hog", "crashed").await;
    let (_, _, data) = events.iter().find(|(s, st, _)| s == "hog" && st == "crashed").unwrap();
    let reason = data["reason"].as_str().unwrap();
    assert!(reason.starts_with("killed by the kernel: out of memory (over its limit of 32 MiB)"), "{reason}");
    assert_eq!(data["exit"], json!({"by": "signal", "signal": 9}), "{data}");
    // The restart policy handles it like any crash: restarted, then given up after the limit.
    wait_event(&stack, "hog", "restarting").await;
    wait_event(&stack, "hog", "failed").await;
}

#[tokio::test]
async fn a_manifest_over_its_groups_quota_is_refused_naming_the_field() {
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let (status, set) = call(&stack, "PUT", "/api/v1/quotas/batch", Some(json!({"cpu": 1000, "memory": 512}))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["quota"], json!({"cpu": 1000, "memory": 512}));
    assert!(set["set_by"].is_string());

    let over = portless("worker", "group = \"batch\"\ncount = 3\nresources = { cpu = 400, memory = 64 }");
    let refused = common::http::call_raw(&stack, "PUT", "/api/v1/stack", Some(over), "application/toml", &[]).await;
    common::http::assert_error(&refused, StatusCode::BAD_REQUEST, "validation_failed", Some("services.worker.group"));
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1200 millicores, 192 MiB") && message.contains("quota of 1000 millicores, 512 MiB"),
        "{message}"
    );
    let without_resources = portless("worker", "group = \"batch\"");
    let refused =
        common::http::call_raw(&stack, "PUT", "/api/v1/stack", Some(without_resources), "application/toml", &[]).await;
    common::http::assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("services.worker.resources"),
    );

    // Both rolled on change: replaced in place, each replica at its old or its new version.
    let group = |worker_cpu: u64, cron_cpu: u64| {
        let update = "update = { max_parallel = 1, min_healthy_time = \"1s\" }";
        format!(
            "{}{}",
            portless(
                "worker",
                &format!("group = \"batch\"\ncount = 2\nresources = {{ cpu = {worker_cpu}, memory = 64 }}\n{update}")
            ),
            portless("cron", &format!("group = \"batch\"\nresources = {{ cpu = {cron_cpu}, memory = 64 }}\n{update}")),
        )
    };
    apply(&stack, &group(400, 100)).await;
    wait_for(&stack, &[("worker-0", "ready"), ("worker-1", "ready"), ("cron", "ready")]).await;
    let (_, list) = call(&stack, "GET", "/api/v1/quotas", None).await;
    assert_eq!(list["quotas"][0]["used"], json!({"cpu": 900, "memory": 192}), "{list}");
    // CPU moved from the workers to cron: 900 millicores before and after, but midway (cron
    // replaced, the workers not yet) 2 x 400 + 500.
    let refused =
        common::http::call_raw(&stack, "PUT", "/api/v1/stack", Some(group(200, 500)), "application/toml", &[]).await;
    common::http::assert_error(&refused, StatusCode::BAD_REQUEST, "validation_failed", Some("services.cron.group"));
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("during its rolling update") && message.contains("1300 millicores"), "{message}");

    // The command line: set, list, and the node inventory.
    assert!(
        common::cli(&stack, &["quota", "set", "tools", "--cpu", "100", "--memory", "10"])
            .await
            .contains("quota of tools set")
    );
    let listed = common::cli(&stack, &["quota", "list"]).await;
    assert!(listed.contains("tools") && listed.contains("100m/10Mi") && listed.contains("900m/192Mi"), "{listed}");
    assert!(common::cli(&stack, &["quota", "clear", "tools"]).await.contains("removed"));
    let nodes = common::cli(&stack, &["nodes"]).await;
    assert!(nodes.contains("local") && nodes.contains("ready"), "{nodes}");
    // The agent names what runs on its node at its next report.
    eventually(Duration::from_secs(20), "the node shows the replicas it runs", || async {
        common::cli(&stack, &["nodes", "local"]).await.contains("worker-0").then_some(())
    })
    .await;

    let bad = call(&stack, "PUT", "/api/v1/quotas/batch", Some(json!({"cpu": -1, "memory": 1}))).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    let (status, _) = call(&stack, "DELETE", "/api/v1/quotas/batch", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    common::http::assert_error(
        &call(&stack, "DELETE", "/api/v1/quotas/batch", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("name"),
    );
}

/// A changed service with an `update` block is replaced one replica at a time, each healthy for
/// `min_healthy_time` before the next is touched; a version whose replica crashes fails its
/// update, and the last good version is applied again by the orchestrator (a new version), which
/// starts the crashed replica on it and leaves the others, never replaced, running.
#[tokio::test]
async fn a_changed_service_rolls_out_a_replica_at_a_time_and_a_failing_version_is_reverted() {
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    // The new version's `update` block governs its rollout.
    let version = |v: &str, args: &str, min_healthy_time: &str| {
        format!(
            "[services.api]\ncommand = \"{SLEEPER}\"\nargs = [\"--ready-after\", \"0ms\"{args}]\n\
             grace_period = \"2s\"\ncount = 3\nenv = {{ VERSION = \"{v}\" }}\n\
             update = {{ max_parallel = 1, min_healthy_time = \"{min_healthy_time}\", healthy_deadline = \"2h\" }}\n"
        )
    };
    apply(&stack, &version("1", "", "1s")).await;
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready"), ("api-2", "ready")]).await;
    let v1: Vec<u32> = (0..3).map(|i| pid(&view, &format!("api-{i}"))).collect();
    let before = transitions(&stack).await.len();

    // Version 2 through the command line, which follows the update to its end.
    let dir = orch_testkit::TempDir::new("rollout");
    let file = dir.path().join("stack.toml");
    std::fs::write(&file, version("2", "", "1s")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["up", "--api-url", &format!("http://127.0.0.1:{}", stack.http_port()), "-f"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("manifest version 2 applied: 3 services\n"), "nothing replaced up front: {stdout}");
    assert!(stdout.contains("rolling update of api-0, api-1, api-2 (a batch at a time"), "{stdout}");
    // Progress as it goes (each step lasts at least min_healthy_time; which ones a poll sees is
    // the machine's business).
    assert!(
        stdout.lines().any(|l| l.starts_with("api v1 -> v2: ")
            && l.contains("/3 replaced, replacing api-")
            && l.ends_with(" (reverts to v1 on failure)")),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("rolling update of version 2 completed"), "{stdout}");
    let completed =
        stack.wait_events(1, "the update completes", |e| e["type"] == "io.orch.lifecycle.rollout_completed.v1").await;
    assert_eq!(completed[0]["data"]["replaced"], json!(["api-0", "api-1", "api-2"]));
    let events: Vec<_> = wait_event_after(&stack, before, "api-2", "ready").await;
    // One at a time: a replica is stopped only once the one before is ready again.
    for (done, next) in [("api-0", "api-1"), ("api-1", "api-2")] {
        assert!(at(&events, done, "ready") < at(&events, next, "stopping"), "{:?}", summary(&events));
    }
    let progressed =
        stack.wait_events(2, "two batches done", |e| e["type"] == "io.orch.lifecycle.rollout_progressed.v1").await;
    assert_eq!(progressed.len(), 2);
    let view = stack_view(&stack).await;
    let v2: Vec<u32> = (0..3).map(|i| pid(&view, &format!("api-{i}"))).collect();
    assert!((0..3).all(|i| v1[i] != v2[i]), "every replica runs a new process: {v1:?} {v2:?}");
    assert!(view.get("rollouts").is_none(), "none in progress: {view}");

    // Version 3 crashes shortly after it starts, well within its minimum healthy time, however
    // slow the machine.
    apply(&stack, &version("3", r#", "--exit-after", "200ms", "--exit-code", "3""#, "1h")).await;
    let failed = stack.wait_events(1, "the update fails", |e| e["type"] == "io.orch.lifecycle.rollout_failed.v1").await;
    let data = &failed[0]["data"];
    assert_eq!((data["version"].as_i64(), data["revert_to"].as_i64()), (Some(3), Some(2)), "{data}");
    assert!(data["reason"].as_str().unwrap().starts_with("api-0 crashed on version 3"), "{data}");
    let reverted = stack
        .wait_events(1, "the revert is applied", |e| {
            e["type"] == "io.orch.lifecycle.manifest_applied.v1" && e["data"]["version"] == 4
        })
        .await;
    assert_eq!(reverted[0]["principal"], "orchestrator");
    assert!(
        reverted[0]["data"]["source"].as_str().unwrap().starts_with("auto-revert to version 2: the rolling update"),
        "{}",
        reverted[0]
    );
    let view = eventually(Duration::from_secs(30), "api-0 runs version 2 again", || async {
        let view = stack_view(&stack).await;
        (view["version"] == 4 && service(&view, "api-0")["state"] == "ready").then_some(view)
    })
    .await;
    assert_eq!([pid(&view, "api-1"), pid(&view, "api-2")], [v2[1], v2[2]], "never replaced, never touched");
    assert_ne!(pid(&view, "api-0"), v2[0]);
}

/// The orchestrator restarted in the middle of a rolling update resumes the newest version: the
/// replica already replaced is adopted (same process), and the one still running the old
/// definition is not taken for the new one: adoption compares what each process was started from
/// (its fingerprint, kept by the agent) and replaces it.
#[tokio::test]
async fn a_restart_during_a_rolling_update_adopts_the_replaced_replica_and_replaces_the_outdated_one() {
    let mut stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let version = |v: &str| {
        portless(
            "api",
            &format!(
                "count = 2\nenv = {{ VERSION = \"{v}\" }}\n\
                 update = {{ max_parallel = 1, min_healthy_time = \"1h\", healthy_deadline = \"2h\" }}"
            ),
        )
    };
    apply(&stack, &version("1")).await;
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready")]).await;
    let old = [pid(&view, "api-0"), pid(&view, "api-1")];
    let before = transitions(&stack).await.len();
    apply(&stack, &version("2")).await;
    // api-0 runs version 2; api-1 waits for api-0's hour of health, on version 1.
    wait_event_after(&stack, before, "api-0", "ready").await;
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready")]).await;
    let replaced = pid(&view, "api-0");
    assert_ne!(replaced, old[0]);
    assert_eq!(pid(&view, "api-1"), old[1]);
    assert_eq!(view["rollouts"][0]["batch"], json!(["api-0"]), "{view}");

    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let view = eventually(Duration::from_secs(30), "both ready after the restart", || async {
        let view = stack_view(&stack).await;
        let ready = ["api-0", "api-1"].iter().all(|s| service(&view, s)["state"] == "ready");
        (ready && pid(&view, "api-1") != old[1]).then_some(view)
    })
    .await;
    assert_eq!(view["version"], 2);
    assert_eq!(pid(&view, "api-0"), replaced, "adopted: it runs version 2");
    assert!(!orch_testkit::process_alive(old[1]), "the process of version 1 was stopped");
}
