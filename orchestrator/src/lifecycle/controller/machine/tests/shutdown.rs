//! Stopping: the stack taken down in reverse dependency order, wave by wave; services
//! stopped while they start; a critical failure aborting the start-up.

use orch_protocol::lifecycle::ServiceState::*;

use super::*;
use crate::lifecycle::controller::ControlError;
use crate::storage::StorageError;

/// web -> api -> db, and cron on its own.
const CHAIN: &str = r#"
[services.db]
command = "db"
[services.api]
command = "api"
depends_on = { db = "started" }
[services.web]
command = "web"
depends_on = { api = "started" }
[services.cron]
command = "cron"
"#;

/// The answers to `down` among `effects`.
fn stopped_replies(effects: &[Effect]) -> Vec<(RequestId, usize)> {
    replies(effects)
        .into_iter()
        .map(|r| match r {
            Reply::Stopped(id, Ok(n)) => (*id, *n),
            other => panic!("unexpected reply {other:?}"),
        })
        .collect()
}

#[test]
fn down_is_stored_then_stops_in_reverse_dependency_order_one_wave_at_a_time() {
    let mut h = Harness::ready(CHAIN);
    let request = h.request();
    let e = h.send(Input::Down { request });
    assert!(matches!(&e[..], [Effect::StoreDesiredDown { request: r, versions }] if *r == request && versions == &[1]));
    assert_eq!(h.machine.view().unwrap().0.desired, Desired::Down);

    let e = h.send(Input::DesiredStored { request, result: Ok(()) });
    assert_eq!(stops(&e), ["cron", "web"], "what nothing running depends on goes first");
    assert_eq!(reason(&e, "web", Stopping), "the stack was taken down");
    assert_eq!(stops(&h.stopped("web")), Vec::<&str>::new(), "the wave is not over: cron is still stopping");
    assert_eq!(stops(&h.stopped("cron")), ["api"]);
    assert_eq!(stops(&h.stopped("api")), ["db"]);
    let e = h.stopped("db");
    assert_eq!(states_of(&e, "db"), [Stopped]);
    assert_eq!(stopped_replies(&e), [(request, 4)], "answered once everything has stopped");
    let (view, _) = h.machine.view().unwrap();
    assert!(view.services.iter().all(|s| s.state == Stopped && s.pid.is_none()));
}

#[test]
fn a_down_during_a_run_cancels_it_and_stops_services_once_their_launch_is_confirmed() {
    let (mut h, _) = Harness::up(CHAIN);
    let e = h.launched("db");
    assert_eq!(launches(&e), ["api"]);
    // db is ready, api and cron are starting, web waits.
    let request = h.request();
    h.send(Input::Down { request });
    let e = h.send(Input::DesiredStored { request, result: Ok(()) });
    assert_eq!(run_outcome(&e), "cancelled");
    assert_eq!(states_of(&e, "web"), [Stopped], "it never started");
    assert_eq!(reason(&e, "web", Stopped), "the stack was taken down");
    assert!(stops(&e).is_empty(), "api and cron are stopped once the agent confirms their launch");
    let e = h.launched("api");
    assert_eq!(states_of(&e, "api"), [Started, Stopping]);
    assert_eq!(stops(&e), ["api"]);
    h.stopped("api");
    let e = h.launched("cron");
    assert_eq!(stops(&e), ["cron"]);
    let e = h.stopped("cron");
    assert_eq!(stops(&e), ["db"]);
    let e = h.stopped("db");
    assert_eq!(stopped_replies(&e), [(request, 3)]);
    assert!(launches(&e).is_empty(), "the stack stays down");
}

#[test]
fn a_second_request_joins_the_shutdown_under_way() {
    let mut h = Harness::ready(CHAIN);
    let (first, second) = (h.request(), h.request());
    h.send(Input::Down { request: first });
    let e = h.send(Input::DesiredStored { request: first, result: Ok(()) });
    h.send(Input::Down { request: second });
    let e2 = h.send(Input::DesiredStored { request: second, result: Ok(()) });
    assert!(stops(&e2).is_empty(), "no second shutdown: {e2:?}");
    let e = h.stop_all(e);
    assert_eq!(stopped_replies(&e), [(first, 4), (second, 4)]);
}

#[test]
fn down_without_a_stack_is_refused() {
    let mut h = Harness::new();
    let request = h.request();
    let e = h.send(Input::Down { request });
    assert!(matches!(&replies(&e)[..], [Reply::Stopped(_, Err(ControlError::NoStack))]));
}

#[test]
fn a_down_that_could_not_be_stored_stops_nothing() {
    let mut h = Harness::ready(CHAIN);
    let request = h.request();
    h.send(Input::Down { request });
    let e = h.send(Input::DesiredStored { request, result: Err(StorageError::ConcurrentCommand) });
    assert!(matches!(&replies(&e)[..], [Reply::Stopped(_, Err(ControlError::Storage(_)))]));
    assert!(stops(&e).is_empty());
    assert_eq!(h.state("db"), Ready);
}

#[test]
fn a_critical_failure_aborts_the_start_up_and_stops_what_started_most_recent_first() {
    let text = r#"
[services.a]
command = "a"
priority = 90
[services.flaky]
command = "flaky"
priority = 85
[services.b]
command = "b"
priority = 80
[services.core]
command = "core"
priority = 70
critical = true
restart = { policy = "never" }
port = 5432
readiness = { kind = "tcp" }
[services.late]
command = "late"
depends_on = { core = "healthy" }
"#;
    let (mut h, effects) = Harness::up(text);
    assert_eq!(launches(&effects), ["a", "flaky", "b", "core"]);
    for name in ["a", "flaky", "b", "core"] {
        h.launched(name);
    }
    let e = h.exited("flaky", 1);
    assert_eq!(states_of(&e, "flaky"), [Crashed, Restarting]);

    let e = h.exited("core", 1);
    assert_eq!(states_of(&e, "core"), [Crashed, Failed]);
    assert_eq!(states_of(&e, "flaky"), [Stopped], "no restart after the abort");
    assert!(e.iter().any(|e| matches!(e, Effect::Cancel { service } if service == "flaky")), "its timer ends");
    assert_eq!(stops(&e), ["b"], "one at a time, the most recently started first");
    assert_eq!(reason(&e, "b", Stopping), "start-up aborted: critical service core failed");
    assert!(events(&e).is_empty(), "the run ends once what it started has stopped");
    let e = h.stopped("b");
    assert_eq!(stops(&e), ["a"]);
    let e = h.stopped("a");
    assert_eq!(run_outcome(&e), "aborted");
    assert_eq!(reason(&e, "late", Blocked), "start-up aborted: critical service core failed");
    assert!(launches(&e).is_empty());
    let e = h.restart_due("flaky");
    assert!(e.is_empty(), "the timer of the dropped restart no longer counts");
}
