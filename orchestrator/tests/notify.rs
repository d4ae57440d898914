//! Readiness by notification (`notify = true`, the systemd `sd_notify` protocol) with real
//! processes run by the embedded agent, a real nats-server and PostgreSQL: a service is ready
//! only once it has sent `READY=1` (from a process of its group) and what needs it healthy waits
//! for that; a datagram from a process that is no service is ignored; a service that never
//! notifies fails its attempt after its start-up timeout; a ready service stays ready, same
//! process, across a restart of the orchestrator and its agent.

mod common;

use std::time::Duration;

use common::lifecycle::*;
use common::{Stack, eventually};
use futures::StreamExt;
use orch_testkit::process_alive;
use serde_json::{Value, json};

/// Reads the next notify report of the embedded agent.
async fn next_report(reports: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(30), reports.next())
        .await
        .expect("a notify report in time")
        .expect("the subscription is open");
    serde_json::from_slice(&message.payload).expect("a JSON report")
}

#[tokio::test]
async fn a_notify_service_is_ready_only_once_it_notifies_and_its_dependants_wait_for_it() {
    let stack = Stack::start().await;
    let mut reports = stack.client.subscribe(stack.subjects.agent("local", "notify")).await.unwrap();
    stack.client.flush().await.unwrap();
    let gate = stack.agent_logs.path().join("gate");
    // The service (the shell, which leads its process group) cannot notify before the test opens
    // the gate; then a child of it, in its group, sends READY=1.
    let daemon = format!(
        r#"
[services.daemon]
command = "/bin/sh"
args = ["-c", "while [ ! -e '{gate}' ]; do sleep 0.05; done; '{SLEEPER}' --notify & wait"]
notify = true
startup_timeout = "60s"
grace_period = "5s"
"#,
        gate = gate.display()
    );
    let manifest = format!(
        "{daemon}{}",
        notifier("client", "0ms", "depends_on = { daemon = \"healthy\" }\nstartup_timeout = \"60s\"")
    );
    apply(&stack, &manifest).await;
    wait_event(&stack, "daemon", "started").await;
    let view = stack_view(&stack).await;
    assert_eq!(states(&view)["daemon"], "started", "not ready before it notifies: {view}");
    assert_eq!(states(&view)["client"], "pending", "what needs it healthy waits: {view}");
    let daemon_pid = pid(&view, "daemon");
    let mut status = agent_status(&stack).await;
    status["running"][0].as_object_mut().unwrap().remove("fingerprint").expect("what it was started from");
    assert_eq!(status["running"], json!([{"service": "daemon", "pid": daemon_pid, "ready": false}]));

    // A process that is no service of the agent cannot speak for one.
    let socket = stack.agent_logs.path().join("shims").join("notify.sock");
    let spoof = std::os::unix::net::UnixDatagram::unbound().unwrap();
    spoof.send_to(b"READY=1\nSTATUS=spoofed", &socket).expect("the agent's notify socket is bound");

    std::fs::write(&gate, "").unwrap();
    // Messages are read in order: the spoof's would come first had it counted.
    let report = next_report(&mut reports).await;
    assert_eq!(
        (&report["service"], &report["pid"], &report["ready"], &report["status"]),
        (&json!("daemon"), &json!(daemon_pid), &json!(true), &json!("ready after 0 ms")),
        "the report names the service and its pid, whichever of its processes sent it: {report}"
    );
    let view = wait_for(&stack, &[("daemon", "ready"), ("client", "ready")]).await;
    assert_eq!(pid(&view, "daemon"), daemon_pid);
    let events = wait_event(&stack, "client", "ready").await;
    assert!(at(&events, "daemon", "ready") < at(&events, "client", "starting"), "{:?}", summary(&events));
    // The client notified too; it had to wait for daemon to be ready before it even started.
    assert!(at(&events, "client", "started") < at(&events, "client", "ready"));
    let report = next_report(&mut reports).await;
    assert_eq!((&report["service"], &report["ready"]), (&json!("client"), &json!(true)), "{report}");

    // The agent remembers who said READY=1, for a controller that missed a report.
    let status = agent_status(&stack).await;
    let daemon = status["running"].as_array().unwrap().iter().find(|r| r["service"] == "daemon").unwrap();
    assert_eq!(daemon["ready"], true, "{status}");
    let profile = finished_run(&stack).await;
    assert_eq!(profile["outcome"], "ready", "{profile}");
}

#[tokio::test]
async fn a_notify_service_that_never_notifies_fails_its_attempt_after_its_startup_timeout() {
    let stack = Stack::start().await;
    let manifest = r#"
[services.silent]
command = "/bin/sh"
args = ["-c", "sleep 1000"]
notify = true
startup_timeout = "1s"
grace_period = "2s"
restart = { policy = "never" }

[services.needs]
command = "/bin/sh"
args = ["-c", "sleep 1000"]
depends_on = { silent = "healthy" }
"#;
    apply(&stack, manifest).await;
    let started = wait_event(&stack, "silent", "started").await;
    let first = started.iter().find(|(s, st, _)| s == "silent" && st == "started").unwrap().2["pid"].as_u64().unwrap();
    let view = wait_for(&stack, &[("silent", "failed"), ("needs", "blocked")]).await;
    let reason = "not ready within 1s (startup_timeout): no READY=1 from the process (notify)";
    assert_eq!(service(&view, "silent")["reason"], reason, "{view}");
    let events = wait_event(&stack, "silent", "failed").await;
    let stopping = events.iter().find(|(s, st, _)| s == "silent" && st == "stopping").expect("stopped first");
    assert_eq!(stopping.2["reason"], reason);
    let crashed = events.iter().find(|(s, st, _)| s == "silent" && st == "crashed").expect("a failed attempt");
    assert_eq!(crashed.2["reason"], reason);
    assert!(!process_alive(first as u32), "the process that never said it was ready is gone");
    assert_eq!(service(&view, "needs")["reason"], "requires silent (healthy), which is failed");
    assert_eq!(finished_run(&stack).await["outcome"], "degraded");
}

#[tokio::test]
async fn a_ready_notify_service_stays_ready_across_a_restart_of_the_orchestrator_and_its_agent() {
    let mut stack = Stack::start().await;
    // A short start-up timeout: had the restarted controller waited for a READY=1 the process sent
    // long ago, the service would fail and start again with another pid.
    let manifest = format!(
        "{}{}",
        notifier("daemon", "100ms", "startup_timeout = \"2s\"\nrestart = { policy = \"never\" }"),
        notifier("client", "0ms", "depends_on = { daemon = \"healthy\" }")
    );
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("daemon", "ready"), ("client", "ready")]).await;
    let daemon = pid(&view, "daemon");
    let before = transitions(&stack).await.len();
    assert!(stack.agent_logs.path().join("shims").join("daemon.ready").exists(), "kept for the next agent");

    stack.stop_orchestrator().await;
    assert!(process_alive(daemon), "the service outlived the orchestrator");
    stack.start_orchestrator().await;

    let status = eventually(Duration::from_secs(30), "the new agent adopted the service", || async {
        let reply = stack.client.request(stack.subjects.agent("local", "status"), "{}".into()).await.ok()?;
        let status: Value = serde_json::from_slice(&reply.payload).ok()?;
        (!status["running"].as_array()?.is_empty()).then_some(status)
    })
    .await;
    let adopted = status["running"].as_array().unwrap().iter().find(|r| r["service"] == "daemon").unwrap();
    assert_eq!((&adopted["pid"], &adopted["ready"]), (&json!(daemon), &json!(true)), "{status}");

    // The resumed stack's run: the controller's first input, before any request is answered.
    let run = finished_run(&stack).await;
    assert_eq!(run["outcome"], "ready", "{run}");
    let view = wait_for(&stack, &[("daemon", "ready"), ("client", "ready")]).await;
    assert_eq!(pid(&view, "daemon"), daemon, "adopted, not started again");
    assert_eq!(service(&view, "daemon")["restarts"], 0, "{view}");
    let after: Vec<_> = transitions(&stack).await.into_iter().skip(before).collect();
    assert!(
        !after.iter().any(|(s, st, _)| s == "daemon" && matches!(st.as_str(), "crashed" | "stopping" | "stopped")),
        "the daemon was never stopped: {:?}",
        summary(&after)
    );
}
