//! Readiness by notification (`notify = true`): a service is ready when its agent reports its
//! `READY=1` for its current process, or, when that report was lost, when the agent's `status`
//! says so; it fails its attempt when neither comes within its start-up timeout.

use std::time::Duration;

use orch_protocol::agent::RunningProcess;
use orch_protocol::health::CheckKind;
use orch_protocol::lifecycle::ServiceState::*;

use super::*;

const STACK: &str = r#"
[services.daemon]
command = "daemon"
notify = true
startup_timeout = "5s"
port = 7001
readiness = { kind = "tcp" }

[services.client]
command = "client"
depends_on = { daemon = "healthy" }
"#;

/// The `WaitNotified` effect among `effects`: its service and timeout.
fn waits_notified(effects: &[Effect]) -> Option<(&str, Duration)> {
    effects.iter().find_map(|e| match e {
        Effect::WaitNotified { service, timeout, .. } => Some((service.as_str(), *timeout)),
        _ => None,
    })
}

/// The `AskStatus` effects among `effects`: node and the services asked about.
fn asked(effects: &[Effect]) -> Vec<(&str, Vec<&str>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::AskStatus { node, asked } => {
                Some((node.as_str(), asked.iter().map(|a| a.service.as_str()).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_notify_service_is_ready_on_its_report_and_meets_the_healthy_condition() {
    let (mut h, effects) = Harness::up(STACK);
    assert_eq!(launches(&effects), ["daemon"], "client waits for daemon to be healthy");
    let Some(Effect::Launch { request, .. }) = effects.iter().find(|e| matches!(e, Effect::Launch { .. })) else {
        panic!("daemon is launched")
    };
    assert!(request.notify, "its agent is asked for NOTIFY_SOCKET");

    let e = h.launched("daemon");
    assert_eq!(states_of(&e, "daemon"), [Started]);
    assert_eq!(waits_notified(&e), Some(("daemon", Duration::from_secs(5))), "its start-up timeout runs");
    assert!(!e.iter().any(|e| matches!(e, Effect::WaitReady { .. })), "notify replaces the readiness probe");
    assert!(launches(&e).is_empty());

    let e = h.notified("daemon");
    assert!(e.iter().any(|e| matches!(e, Effect::Cancel { service } if service == "daemon")), "the timer ends");
    assert_eq!(states_of(&e, "daemon"), [Ready]);
    assert_eq!(launches(&e), ["client"], "healthy is met by its READY=1");
    let Some(Effect::Register(registration)) = e.iter().find(|e| matches!(e, Effect::Register(_))) else {
        panic!("a ready service with a port is registered")
    };
    assert_eq!(registration.checks.len(), 1, "its readiness check stays its registry instance's");
    assert_eq!(registration.checks[0].kind, CheckKind::Tcp);

    assert!(h.notified("daemon").is_empty(), "a second READY=1 changes nothing");
    let e = h.launched("client");
    assert_eq!(states_of(&e, "client"), [Started, Ready], "a service that does not notify is as before");
    assert_eq!(run_outcome(&e), "ready");
}

#[test]
fn a_report_about_another_process_or_node_or_without_ready_is_ignored() {
    let (mut h, effects) = Harness::up(STACK);
    h.settle(Vec::new());
    assert_eq!(launches(&effects), ["daemon"]);
    h.launched("daemon");
    let pid = h.pid("daemon");
    let earlier = notification("daemon", pid - 1);
    assert!(h.send(Input::Notified(earlier)).is_empty(), "another process (an earlier run)");
    let elsewhere = agent::Notified { node: "edge".into(), ..notification("daemon", pid) };
    assert!(h.send(Input::Notified(elsewhere)).is_empty(), "another node's process");
    let status_only = agent::Notified { ready: false, ..notification("daemon", pid) };
    assert!(h.send(Input::Notified(status_only)).is_empty(), "STATUS= without READY=1");
    let not_notify = notification("client", pid);
    assert!(h.send(Input::Notified(not_notify)).is_empty(), "a service that does not notify");
    assert_eq!(h.state("daemon"), Started);
    assert_eq!(states_of(&h.notified("daemon"), "daemon"), [Ready]);
}

#[test]
fn no_ready_within_the_startup_timeout_fails_the_attempt() {
    let (mut h, _) = Harness::up(STACK);
    h.launched("daemon");
    let generation = h.generation("daemon");
    h.advance(Duration::from_secs(5));
    let e = h.send(Input::NotifyDue { service: "daemon".into(), generation });
    assert_eq!(states_of(&e, "daemon"), [Stopping]);
    assert_eq!(stops(&e), ["daemon"]);
    assert!(!e.iter().any(|e| matches!(e, Effect::Cancel { .. })), "the timer that reported has ended");
    let e = h.stopped("daemon");
    assert_eq!(states_of(&e, "daemon"), [Crashed, Restarting]);
    assert_eq!(
        reason(&e, "daemon", Crashed),
        "not ready within 5s (startup_timeout): no READY=1 from the process (notify)"
    );
    assert_eq!(h.state("client"), Pending, "what needs it healthy still waits");

    // A late report, or timer, of the process that was stopped changes nothing.
    let late = notification("daemon", h.pid("daemon"));
    assert!(h.send(Input::Notified(late)).is_empty());
    assert!(h.send(Input::NotifyDue { service: "daemon".into(), generation }).is_empty());
}

#[test]
fn readiness_is_found_through_the_agents_status_when_the_report_was_lost() {
    let (mut h, _) = Harness::up(STACK);
    h.launched("daemon");
    // Long before the reconcile interval: the service waiting for its READY=1 is asked about at
    // every tick.
    h.advance(Duration::from_secs(1));
    let e = h.send(Input::Tick);
    assert_eq!(asked(&e), [(NODE, vec!["daemon"])]);
    let asked = match e.into_iter().find(|e| matches!(e, Effect::AskStatus { .. })) {
        Some(Effect::AskStatus { asked, .. }) => asked,
        _ => unreachable!(),
    };
    let pid = h.pid("daemon");
    let status = |ready| agent::Status {
        node: NODE.into(),
        running: vec![RunningProcess { service: "daemon".into(), pid, ready, fingerprint: None }],
    };
    let e = h.send(Input::Status { node: NODE.into(), result: Ok(status(false)), asked: asked.clone() });
    assert!(e.is_empty(), "not ready yet: {e:?}");
    let e = h.send(Input::Status { node: NODE.into(), result: Ok(status(true)), asked });
    assert!(e.iter().any(|e| matches!(e, Effect::Cancel { service } if service == "daemon")), "the timer ends");
    assert_eq!(states_of(&e, "daemon"), [Ready]);
    assert_eq!(launches(&e), ["client"]);

    // Once ready, it is asked about at the reconcile interval only, like any other.
    h.launched("client");
    h.advance(Duration::from_secs(1));
    assert!(asked_of(&h.send(Input::Tick)).is_empty());
}

/// The services asked about among `effects`.
fn asked_of(effects: &[Effect]) -> Vec<&str> {
    asked(effects).into_iter().flat_map(|(_, services)| services).collect()
}

#[test]
fn a_report_ahead_of_the_launch_reply_counts_once_the_pid_is_known() {
    let (mut h, _) = Harness::up(STACK);
    // The service notified before the agent's answer to its launch reached the controller.
    let pid = h.next_pid + 1;
    assert!(h.send(Input::Notified(notification("daemon", pid))).is_empty());
    let e = h.launched("daemon");
    assert_eq!(h.pid("daemon"), pid);
    assert_eq!(states_of(&e, "daemon"), [Started, Ready]);
    assert!(waits_notified(&e).is_none(), "nothing to wait for");
    assert_eq!(launches(&e), ["client"]);
}

#[test]
fn an_early_report_of_another_process_does_not_count() {
    let (mut h, _) = Harness::up(STACK);
    assert!(h.send(Input::Notified(notification("daemon", 1))).is_empty());
    let e = h.launched("daemon");
    assert_eq!(states_of(&e, "daemon"), [Started]);
    assert!(waits_notified(&e).is_some());
}
