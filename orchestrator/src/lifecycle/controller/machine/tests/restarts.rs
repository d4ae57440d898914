//! Restarts: the policy, the back-off, the start-rate limit, crashes during start-up, liveness,
//! restarts on request with the services bound to the one restarted, the restart queue, and
//! reports about an earlier process.

use std::time::Duration;

use orch_protocol::lifecycle::ServiceState::*;

use super::*;
use crate::lifecycle::controller::ControlError;

const WORKER: &str = r#"
[services.worker]
command = "worker"
restart = { policy = "on-failure", backoff = "1s", backoff_max = "3s", backoff_reset = "1m", start_limit = 4 }
"#;

/// The back-off the last `ScheduleRestart` among `effects` waits.
#[track_caller]
fn backoff(effects: &[Effect]) -> Duration {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::ScheduleRestart { after, .. } => Some(*after),
            _ => None,
        })
        .expect("a restart is scheduled")
}

/// The attempt the `restarting` transition among `effects` announces.
#[track_caller]
fn attempt(effects: &[Effect]) -> u32 {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Record(t) if t.data.state == Restarting => t.data.attempt,
            _ => None,
        })
        .expect("a restarting transition")
}

#[test]
fn a_crash_restarts_after_a_doubling_capped_backoff_until_the_start_limit() {
    let mut h = Harness::ready(WORKER);
    let mut delays = Vec::new();
    for expected_attempt in 1..=3 {
        let e = h.exited("worker", 1);
        assert_eq!(states_of(&e, "worker"), [Crashed, Restarting]);
        assert_eq!(attempt(&e), expected_attempt);
        assert!(launches(&e).is_empty(), "not before the back-off has passed");
        delays.push(backoff(&e));
        h.advance(backoff(&e));
        let e = h.restart_due("worker");
        assert_eq!(launches(&e), ["worker"]);
        h.settle(e);
    }
    assert_eq!(delays, [1, 2, 3].map(Duration::from_secs), "doubling, capped at backoff_max");
    assert_eq!(h.service("worker").restarts, 3);
    // The fourth start within the window was the last one allowed.
    let e = h.exited("worker", 1);
    assert_eq!(states_of(&e, "worker"), [Crashed, Failed]);
    assert_eq!(reason(&e, "worker", Failed), "started 4 times within 5m; the limit is 4 (restart.start_limit)");
    assert!(!e.iter().any(|e| matches!(e, Effect::ScheduleRestart { .. })));
}

#[test]
fn the_backoff_starts_over_after_being_healthy_long_enough() {
    let mut h = Harness::ready(WORKER);
    let e = h.exited("worker", 1);
    assert_eq!(backoff(&e), Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    let e = h.restart_due("worker");
    h.settle(e);
    h.advance(Duration::from_secs(10));
    let e = h.exited("worker", 1);
    assert_eq!((attempt(&e), backoff(&e)), (2, Duration::from_secs(2)), "ready for 10s only");
    h.advance(Duration::from_secs(2));
    let e = h.restart_due("worker");
    h.settle(e);
    h.advance(Duration::from_secs(61));
    let e = h.exited("worker", 1);
    assert_eq!((attempt(&e), backoff(&e)), (1, Duration::from_secs(1)), "ready for longer than backoff_reset");
}

#[test]
fn the_restart_policy_decides_what_follows_an_exit() {
    let text = r#"
[services.once]
command = "x"
restart = { policy = "never" }
[services.retry]
command = "x"
restart = { policy = "on-failure" }
[services.forever]
command = "x"
restart = { policy = "always" }
"#;
    let mut h = Harness::ready(text);
    let e = h.exited("once", 1);
    assert_eq!(states_of(&e, "once"), [Crashed, Failed]);
    assert_eq!(reason(&e, "once", Failed), "the process ended: exit code 1");
    let e = h.exited("retry", 0);
    assert_eq!(states_of(&e, "retry"), [Completed], "a clean exit is left alone");
    let e = h.exited("forever", 0);
    assert_eq!(states_of(&e, "forever"), [Crashed, Restarting], "restarted even after a clean exit");
}

#[test]
fn a_service_not_ready_in_time_is_stopped_and_restarted_like_a_crash() {
    let text = r#"
[services.api]
command = "api"
port = 8080
readiness = { kind = "tcp" }
"#;
    let (mut h, _) = Harness::up(text);
    h.launched("api");
    let e = h.unhealthy("api", "not ready within 1m (startup_timeout): connection refused");
    assert_eq!(states_of(&e, "api"), [Stopping]);
    assert_eq!(stops(&e), ["api"]);
    assert!(!e.iter().any(|e| matches!(e, Effect::Cancel { .. })), "the probe that reported has ended");
    let e = h.stopped("api");
    assert_eq!(states_of(&e, "api"), [Crashed, Restarting]);
    assert_eq!(reason(&e, "api", Crashed), "not ready within 1m (startup_timeout): connection refused");
    assert!(events(&e).is_empty(), "the run goes on: api will be started again");
    h.advance(backoff(&e));
    let e = h.restart_due("api");
    let e = h.settle(e);
    assert_eq!(states_of(&e, "api"), [Starting, Started, Ready]);
    assert_eq!(run_outcome(&e), "ready", "the run ends once the restarted service is ready");
}

#[test]
fn a_launch_the_agent_refuses_is_a_crash() {
    let (mut h, _) = Harness::up(WORKER);
    let e = h.launch_failed("worker", "no agent of node \"local\" is running");
    assert_eq!(states_of(&e, "worker"), [Crashed, Restarting]);
    assert_eq!(reason(&e, "worker", Crashed), "could not start: no agent of node \"local\" is running");
}

#[test]
fn a_critical_liveness_check_restarts_the_service() {
    let text = r#"
[services.api]
command = "api"
port = 8080
liveness = { kind = "tcp" }
"#;
    let (mut h, effects) = Harness::up(text);
    let e = h.settle(effects);
    assert!(e.iter().any(|e| matches!(e, Effect::WatchLiveness { service, .. } if service == "api")));
    let e = h.unhealthy("api", "liveness check critical: connection refused");
    assert_eq!(states_of(&e, "api"), [Stopping]);
    assert!(e.iter().any(|e| matches!(e, Effect::Deregister { instance } if instance == "managed-api")));
    let e = h.stopped("api");
    assert_eq!(states_of(&e, "api"), [Crashed, Restarting]);
    assert_eq!(reason(&e, "api", Crashed), "liveness check critical: connection refused");
}

#[test]
fn reports_about_an_earlier_process_are_ignored() {
    let text = r#"
[services.api]
command = "api"
port = 8080
readiness = { kind = "tcp" }
"#;
    let mut h = Harness::ready(text);
    let (old, old_pid) = (h.generation("api"), h.pid("api"));
    h.exited("api", 1);
    h.advance(Duration::from_secs(1));
    let e = h.restart_due("api");
    assert_eq!(launches(&e), ["api"]);
    let new = h.generation("api");
    assert_ne!(new, old);
    let service = || "api".to_string();
    let stale = [
        Input::Launched { service: service(), generation: old, result: Ok(old_pid) },
        Input::Ready { service: service(), generation: old },
        Input::Unhealthy { service: service(), generation: old, reason: "late".into() },
        Input::Stopped { service: service(), generation: old, exit: None },
        Input::RestartDue { service: service(), generation: old },
        Input::Exited(agent::Exited {
            node: NODE.into(),
            service: service(),
            pid: old_pid,
            exit: Exit::Code { code: 1 },
            ran_for_ms: 5,
            stopped: false,
            oom_killed: false,
        }),
    ];
    for input in stale {
        let described = format!("{input:?}");
        let e = h.send(input);
        assert!(e.is_empty(), "{described} changed something: {e:?}");
        assert_eq!(h.state("api"), Starting);
    }
    let e = h.launched("api");
    assert_eq!(states_of(&e, "api"), [Started], "the current process's report counts");
}

#[test]
fn a_restart_request_restarts_the_service_then_the_services_bound_to_it() {
    let text = r#"
[services.db]
command = "db"
port = 5432
readiness = { kind = "tcp" }
[services.api]
command = "api"
depends_on = { db = "healthy" }
binds_to = ["db"]
"#;
    let mut h = Harness::ready(text);
    let request = h.request();
    let e = h.send(Input::Restart { request, service: "db".into() });
    assert!(matches!(&replies(&e)[..], [Reply::Restart(id, Ok(()))] if *id == request));
    assert_eq!(transitions(&e), [("db", Stopping)]);
    assert_eq!(reason(&e, "db", Stopping), "restart requested");
    assert!(e.iter().any(|e| matches!(e, Effect::Deregister { instance } if instance == "managed-db")));
    assert_eq!(stops(&e), ["db"]);
    assert_eq!(h.state("api"), Ready, "api keeps running while db restarts");

    let e = h.stopped("db");
    assert_eq!(states_of(&e, "db"), [Stopped, Starting]);
    assert_eq!(launches(&e), ["db"]);
    h.launched("db");
    let e = h.probed_ready("db");
    assert_eq!(states_of(&e, "api"), [Stopping], "bound to db: restarted after it");
    assert_eq!(reason(&e, "api", Stopping), "bound to db, which was restarted");
    let e = h.stopped("api");
    assert_eq!(launches(&e), ["api"]);
    let e = h.settle(e);
    assert_eq!(states_of(&e, "api"), [Stopped, Starting, Started, Ready]);
    assert!(stops(&e).is_empty(), "db was not restarted again");
}

#[test]
fn restart_requests_that_cannot_be_served_are_refused() {
    let (mut h, _) = Harness::up(WORKER);
    let request = h.request();
    let e = h.send(Input::Restart { request, service: "worker".into() });
    assert!(
        matches!(&replies(&e)[..], [Reply::Restart(_, Err(ControlError::Busy(m)))] if m == "worker is starting; try again in a moment")
    );
    let e = h.send(Input::Restart { request, service: "nobody".into() });
    assert!(matches!(&replies(&e)[..], [Reply::Restart(_, Err(ControlError::UnknownService(s)))] if s == "nobody"));
    let mut empty = Harness::new();
    let e = empty.send(Input::Restart { request, service: "worker".into() });
    assert!(matches!(&replies(&e)[..], [Reply::Restart(_, Err(ControlError::NoStack))]));
}

#[test]
fn a_failed_service_restarted_on_request_starts_with_a_fresh_budget() {
    let text = WORKER.replace("start_limit = 4", "start_limit = 1");
    let mut h = Harness::ready(&text);
    let e = h.exited("worker", 1);
    assert_eq!(states_of(&e, "worker"), [Crashed, Failed]);
    let request = h.request();
    let e = h.send(Input::Restart { request, service: "worker".into() });
    assert_eq!(launches(&e), ["worker"]);
    h.settle(e);
    let e = h.exited("worker", 1);
    assert_eq!(states_of(&e, "worker"), [Crashed, Failed], "one start allowed again, and used");
}

#[test]
fn services_waiting_to_restart_start_highest_priority_first_as_slots_free() {
    let text = r#"
max_parallel = 1
[services.low]
command = "x"
priority = 20
[services.high]
command = "x"
priority = 80
[services.slow]
command = "x"
port = 9000
readiness = { kind = "tcp" }
"#;
    let mut h = Harness::ready(text);
    // slow restarts and holds the only slot until it is ready.
    h.exited("slow", 1);
    h.advance(Duration::from_secs(1));
    let e = h.restart_due("slow");
    assert_eq!(launches(&e), ["slow"]);
    h.launched("slow");
    for name in ["low", "high"] {
        h.exited(name, 1);
    }
    h.advance(Duration::from_secs(1));
    for name in ["low", "high"] {
        let e = h.restart_due(name);
        assert!(launches(&e).is_empty(), "no free slot");
    }
    let e = h.probed_ready("slow");
    assert_eq!(launches(&e), ["high"]);
    let e = h.launched("high");
    assert_eq!(launches(&e), ["low"]);
}
