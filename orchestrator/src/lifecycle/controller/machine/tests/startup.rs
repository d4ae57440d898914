//! Start-up runs: dependency order, the started / healthy / completed conditions, priority within
//! `max_parallel`, failures that block only what requires them, and how a run ends.

use orch_protocol::health::CheckKind;
use orch_protocol::lifecycle::ServiceState::{self, *};

use super::*;
use crate::lifecycle::controller::machine::RunOutcome;

const STACK: &str = r#"
max_parallel = 2
[services.db]
command = "db"
priority = 90
port = 5432
readiness = { kind = "tcp" }
[services.cache]
command = "cache"
priority = 10
[services.queue]
command = "queue"
priority = 50
[services.migrate]
command = "migrate"
restart = { policy = "never" }
depends_on = { db = "healthy" }
[services.api]
command = "api"
port = 8080
readiness = { kind = "tcp" }
depends_on = { migrate = "completed", cache = { condition = "started", required = false } }
[services.web]
command = "web"
depends_on = { api = "started" }
"#;

#[test]
fn starts_in_dependency_order_by_condition_and_priority_within_max_parallel() {
    let (mut h, effects) = Harness::up(STACK);
    assert!(matches!(&effects[0], Effect::SetDefaultPriorities(d) if d["db"] == 90 && d["cache"] == 10));
    assert!(effects.iter().any(|e| matches!(e, Effect::StoreRunStarted { version: 1, .. })));
    for name in ["db", "cache", "queue", "migrate", "api", "web"] {
        assert_eq!(states_of(&effects, name)[0], Pending, "{name} waits first");
    }
    assert_eq!(launches(&effects), ["db", "queue"], "two slots, highest priority first");
    assert_eq!(h.state("db"), Starting);

    let e = h.launched("db");
    assert_eq!(transitions(&e), [("db", Started)]);
    assert!(e.iter().any(|e| matches!(e, Effect::WaitReady { service, .. } if service == "db")));
    assert!(launches(&e).is_empty(), "no free slot");

    let e = h.launched("queue");
    assert_eq!(transitions(&e)[..2], [("queue", Started), ("queue", Ready)], "no readiness check: ready once running");
    assert_eq!(launches(&e), ["cache"], "its slot went to the next by priority");
    let e = h.launched("cache");
    assert!(launches(&e).is_empty(), "migrate waits for db to be healthy, not just started");

    let e = h.probed_ready("db");
    assert_eq!(states_of(&e, "db"), [Ready]);
    assert_eq!(launches(&e), ["migrate"]);
    let e = h.launched("migrate");
    assert_eq!(states_of(&e, "migrate"), [Started, Ready]);
    assert!(launches(&e).is_empty(), "api waits for migrate to complete, not to be ready");

    let e = h.exited("migrate", 0);
    assert_eq!(transitions(&e)[0], ("migrate", Completed), "a one-shot task that ended well");
    assert_eq!(launches(&e), ["api"]);
    let e = h.launched("api");
    assert_eq!(states_of(&e, "api"), [Started]);
    assert_eq!(launches(&e), ["web"], "web needs api started only");

    let e = h.probed_ready("api");
    assert!(events(&e).is_empty(), "web is still starting");
    let e = h.launched("web");
    assert_eq!(run_outcome(&e), "ready");
    assert!(e.iter().any(|e| matches!(e, Effect::StoreRunFinished { outcome: RunOutcome::Ready, .. })));
    let profile = h.machine.profile().expect("the finished run's profile");
    assert!(profile.finished);
    assert_eq!(profile.outcome.as_deref(), Some("ready"));
    let (view, _) = h.machine.view().unwrap();
    assert_eq!(view.run_id, None, "no run in progress any more");
    assert_eq!(view.counts.get(&Ready), Some(&5));
    assert_eq!(view.counts.get(&Completed), Some(&1));
}

#[test]
fn a_launch_carries_the_spec_and_a_ready_service_is_registered_and_kept_alive() {
    let text = r#"
[services.api]
command = "api-bin"
args = ["--fast"]
env = { MODE = "test" }
port = 8080
readiness = { kind = "tcp" }
startup_timeout = "30s"
"#;
    let (mut h, effects) = Harness::up(text);
    let Some(Effect::Launch { node, request, .. }) = effects.iter().find(|e| matches!(e, Effect::Launch { .. })) else {
        panic!("api is launched")
    };
    assert_eq!(node, NODE);
    assert_eq!((request.command.as_str(), request.args.as_slice()), ("api-bin", ["--fast".to_string()].as_slice()));
    assert_eq!(request.env["MODE"], "test");
    assert_eq!(request.env["ORCH_SERVICE"], "api");
    assert_eq!(request.env["ORCH_MANIFEST_VERSION"], "1");
    assert_eq!(request.env["PORT"], "8080");

    let e = h.launched("api");
    let Some(Effect::WaitReady { check, endpoint, timeout, .. }) =
        e.iter().find(|e| matches!(e, Effect::WaitReady { .. }))
    else {
        panic!("its readiness is probed")
    };
    assert_eq!((check.kind, endpoint.port, endpoint.instance_id.as_str()), (CheckKind::Tcp, 8080, "managed-api"));
    assert_eq!(timeout.as_secs(), 30);
    assert_eq!(h.service("api").pid, Some(h.pid("api")));

    let e = h.probed_ready("api");
    let Some(Effect::Register(registration)) = e.iter().find(|e| matches!(e, Effect::Register(_))) else {
        panic!("a ready service with a port is registered")
    };
    assert_eq!(registration.id.as_deref(), Some("managed-api"));
    assert_eq!((registration.port, registration.version.as_str()), (8080, "manifest-1"));

    let e = h.send(Input::Tick);
    assert!(matches!(&e[..], [Effect::Heartbeat { instance }] if instance == "managed-api"), "{e:?}");
}

#[test]
fn a_failure_blocks_only_what_requires_it_and_the_run_ends_degraded() {
    let text = STACK.replace("priority = 90\n", "priority = 90\nrestart = { policy = \"never\" }\n");
    let (mut h, mut seen) = Harness::up(&text);
    seen.extend(h.launched("db"));
    let e = h.launched("queue");
    seen.extend(h.settle(e));
    assert_eq!(h.state("db"), Started, "db is waiting for its readiness check");
    seen.extend(h.exited("db", 1));
    assert!(seen.iter().any(|e| matches!(e, Effect::Cancel { service } if service == "db")), "its probe ends");
    assert_eq!(states_of(&seen, "db"), [Pending, Starting, Started, Crashed, Failed]);
    assert_eq!(reason(&seen, "db", Crashed), "the process ended: exit code 1");
    assert_eq!(reason(&seen, "migrate", Blocked), "requires db (healthy), which is failed");
    assert!(reason(&seen, "api", Blocked).starts_with("requires migrate"));
    assert!(reason(&seen, "web", Blocked).starts_with("requires api"));
    for independent in ["queue", "cache"] {
        assert_eq!(h.state(independent), Ready, "{independent} goes on");
    }
    assert_eq!(run_outcome(&seen), "degraded");
}

#[test]
fn a_manifest_is_refused_while_a_run_is_in_progress() {
    let (mut h, _) = Harness::up(STACK);
    let request = h.request();
    let e = h.send(Input::Apply { request, manifest: manifest(STACK), body: STACK.into(), source: "test".into() });
    match &replies(&e)[..] {
        [Reply::Applied(id, Err(e))] => {
            assert_eq!(*id, request);
            assert!(e.to_string().contains("a start-up run is in progress"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.iter().any(|e| matches!(e, Effect::StoreManifest { .. })), "nothing is stored");
}

#[test]
fn a_stored_stack_wanted_down_is_installed_without_starting() {
    let mut h = Harness::new();
    let e = h.send(Input::Resume {
        version: 3,
        manifest: manifest(STACK),
        desired: Desired::Down,
        run_id: Uuid::nil(),
        placed: BTreeMap::new(),
    });
    assert!(launches(&e).is_empty() && transitions(&e).is_empty());
    let (view, _) = h.machine.view().unwrap();
    assert_eq!((view.version, view.desired), (3, Desired::Down));
    assert!(view.services.iter().all(|s| s.state == ServiceState::Stopped));
    assert!(h.machine.profile().is_none(), "no run");
}
