//! Rolling updates: a changed service with an `update` block is replaced a batch at a time, each
//! batch healthy for `min_healthy_time` before the next; a crash or a late batch fails the update
//! and applies the last good version again.

use orch_protocol::lifecycle::ServiceState::*;

use super::apply::apply;
use super::*;

const V1: &str = r#"
[services.api]
command = "api"
args = ["--v1"]
count = 3
update = { max_parallel = 1, min_healthy_time = "5s", healthy_deadline = "1m" }
"#;

fn v2() -> String {
    V1.replace("--v1", "--v2")
}

/// The arguments each launch in `effects` was given.
fn launch_args(effects: &[Effect]) -> Vec<(&str, &str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch { service, request, .. } => Some((service.as_str(), request.args[0].as_str())),
            _ => None,
        })
        .collect()
}

fn rollout_events(effects: &[Effect]) -> Vec<(&'static str, Vec<String>, Vec<String>)> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::RolloutStarted(d) => Some(("started", d.batch.clone(), d.replaced.clone())),
            Event::RolloutProgressed(d) => Some(("progressed", d.batch.clone(), d.replaced.clone())),
            Event::RolloutCompleted(d) => Some(("completed", d.batch.clone(), d.replaced.clone())),
            Event::RolloutFailed(d) => Some(("failed", d.batch.clone(), d.replaced.clone())),
            _ => None,
        })
        .collect()
}

/// The data of the first rollout event of `phase` (`started`, `failed`) among `effects`.
fn rollout_event(effects: &[Effect], phase: &str) -> Option<orch_protocol::stack::RolloutData> {
    events(effects).into_iter().find_map(|e| match (phase, e) {
        ("started", Event::RolloutStarted(d)) | ("failed", Event::RolloutFailed(d)) => Some(d.clone()),
        _ => None,
    })
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_changed_service_is_replaced_one_batch_at_a_time_each_healthy_before_the_next() {
    let mut h = Harness::ready(V1);
    let (_, e) = apply(&mut h, &v2(), 2, Uuid::from_u128(2));
    match &replies(&e)[..] {
        [Reply::Applied(_, Ok(applied))] => {
            assert!(applied.replaced.is_empty(), "nothing is stopped up front: {:?}", applied.replaced);
            assert_eq!(applied.rolling, ["api-0", "api-1", "api-2"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rollout_events(&e), [("started", vec![], vec![])]);
    assert_eq!(stops(&e), ["api-0"], "one at a time (max_parallel = 1)");
    assert_eq!(reason(&e, "api-0", Stopping), "replaced by version 2 (rolling update)");
    assert_eq!([h.state("api-1"), h.state("api-2")], [Ready, Ready], "the others serve meanwhile");

    let old_pid = h.pid("api-1");
    for (i, unit) in ["api-0", "api-1", "api-2"].into_iter().enumerate() {
        let e = h.stopped(unit);
        assert_eq!(launch_args(&e), [(unit, "--v2")], "started again on the new definition");
        let e = h.settle(e);
        assert_eq!(h.state(unit), Ready);
        assert!(stops(&e).is_empty(), "the next batch waits for min_healthy_time: {e:?}");
        h.advance(Duration::from_secs(4));
        assert!(stops(&h.send(Input::Tick)).is_empty(), "4s of 5s healthy");
        h.advance(Duration::from_secs(1));
        let e = h.send(Input::Tick);
        let done: Vec<String> = ["api-0", "api-1", "api-2"][..=i].iter().map(|s| s.to_string()).collect();
        if i < 2 {
            let next = ["api-0", "api-1", "api-2"][i + 1];
            assert_eq!(stops(&e), [next]);
            assert_eq!(rollout_events(&e), [("progressed", strings(&[next]), done)]);
            assert_eq!(h.pid("api-1") == old_pid, i == 0, "api-1 still runs its old process until its batch");
        } else {
            assert!(stops(&e).is_empty());
            assert_eq!(rollout_events(&e), [("completed", vec![], done)]);
        }
    }
    let (view, _) = h.machine.view().unwrap();
    assert!(view.rollouts.is_empty(), "no update in progress: {:?}", view.rollouts);
}

#[test]
fn a_replica_crashing_on_the_new_version_fails_the_update_and_the_last_good_version_is_applied_again() {
    let mut h = Harness::ready(V1);
    let (_, e) = apply(&mut h, &v2(), 2, Uuid::from_u128(2));
    assert_eq!(stops(&e), ["api-0"]);
    let e = h.stopped("api-0");
    h.settle(e);
    let e = h.exited("api-0", 3);
    let failed = rollout_event(&e, "failed").expect("the update failed");
    assert_eq!((failed.version, failed.revert_to), (2, Some(1)));
    assert!(failed.reason.as_deref().unwrap().starts_with("api-0 crashed on version 2"), "{failed:?}");
    let (version, source) = e
        .iter()
        .find_map(|e| match e {
            Effect::RevertManifest { version, source } => Some((*version, source.clone())),
            _ => None,
        })
        .expect("the last good version is applied again");
    assert_eq!(version, 1);
    assert!(source.starts_with("auto-revert to version 1: the rolling update of api to version 2 failed"), "{source}");
    assert!(stops(&e).is_empty(), "api-1 and api-2 are not touched");

    // The revert, stored as version 3: the crashed replica is started on the good version; the
    // two that never left it keep running.
    let (pid1, pid2) = (h.pid("api-1"), h.pid("api-2"));
    let e = h.send(Input::ManifestStored {
        request: RequestId(0),
        manifest: manifest(V1),
        source,
        run_id: Uuid::from_u128(3),
        revert: true,
        result: Ok(3),
    });
    assert_eq!(launch_args(&e), [("api-0", "--v1")]);
    h.settle(e);
    assert_eq!([h.state("api-0"), h.state("api-1"), h.state("api-2")], [Ready, Ready, Ready]);
    assert_eq!((h.pid("api-1"), h.pid("api-2")), (pid1, pid2));
    let (view, _) = h.machine.view().unwrap();
    assert_eq!(view.version, 3);
    assert!(view.rollouts.is_empty());
}

#[test]
fn a_batch_not_healthy_within_its_deadline_fails_the_update_without_revert_when_asked() {
    let text = r#"
[services.api]
command = "api"
args = ["--v1"]
count = 2
port = 8000
readiness = { kind = "tcp" }
update = { max_parallel = 2, min_healthy_time = "5s", healthy_deadline = "30s", auto_revert = false }
"#;
    let mut h = Harness::ready(text);
    let (_, e) = apply(&mut h, &text.replace("--v1", "--v2"), 2, Uuid::from_u128(2));
    assert_eq!(stops(&e), ["api-0", "api-1"], "two at a time");
    let mut e = h.stopped("api-0");
    e.extend(h.stopped("api-1"));
    assert_eq!(launches(&e), ["api-0", "api-1"]);
    h.launched("api-0");
    h.launched("api-1");
    h.probed_ready("api-0");
    // api-1 never passes its readiness check (its check has its own, longer, startup timeout).
    h.advance(Duration::from_secs(30));
    let e = h.send(Input::Tick);
    let failed = rollout_event(&e, "failed").expect("the update failed");
    assert_eq!(failed.reason.as_deref(), Some("api-1 not healthy for 5s within healthy_deadline (30s)"));
    assert_eq!(failed.revert_to, None, "auto_revert = false");
    assert!(!e.iter().any(|e| matches!(e, Effect::RevertManifest { .. })));
    // It stays in the view, failed, and moves no further.
    h.advance(Duration::from_secs(60));
    h.probed_ready("api-1");
    let e = h.send(Input::Tick);
    assert!(stops(&e).is_empty() && rollout_events(&e).is_empty(), "{e:?}");
    let (view, _) = h.machine.view().unwrap();
    assert_eq!(view.rollouts.len(), 1);
    assert_eq!(view.rollouts[0].reason, failed.reason);
}

#[test]
fn scaling_or_changing_only_the_update_strategy_replaces_no_running_replica() {
    let mut h = Harness::ready(V1);
    let pids: Vec<u32> = ["api-0", "api-1", "api-2"].iter().map(|u| h.pid(u)).collect();
    let scaled = V1.replace("count = 3", "count = 4").replace("max_parallel = 1", "max_parallel = 2");
    let (_, e) = apply(&mut h, &scaled, 2, Uuid::from_u128(2));
    match &replies(&e)[..] {
        [Reply::Applied(_, Ok(applied))] => assert!(applied.replaced.is_empty() && applied.rolling.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(stops(&e).is_empty());
    assert_eq!(launches(&e), ["api-3"]);
    assert!(rollout_events(&e).is_empty());
    assert_eq!(["api-0", "api-1", "api-2"].iter().map(|u| h.pid(u)).collect::<Vec<_>>(), pids);
}

#[test]
fn a_version_applied_during_an_update_supersedes_it_keeping_the_version_to_revert_to() {
    let mut h = Harness::ready(V1);
    let (_, e) = apply(&mut h, &v2(), 2, Uuid::from_u128(2));
    assert_eq!(stops(&e), ["api-0"]);
    let e = h.stopped("api-0");
    h.settle(e);
    h.advance(Duration::from_secs(5));
    let e = h.send(Input::Tick);
    assert_eq!(stops(&e), ["api-1"]);
    let e = h.stopped("api-1");
    h.settle(e);
    // Version 3 while api-1 waits out its healthy time: api-0 and api-1 run v2, api-2 v1.
    let v3 = V1.replace("--v1", "--v3");
    let (_, e) = apply(&mut h, &v3, 3, Uuid::from_u128(3));
    match &replies(&e)[..] {
        [Reply::Applied(_, Ok(applied))] => assert_eq!(applied.rolling, ["api-0", "api-1", "api-2"]),
        other => panic!("{other:?}"),
    }
    let started = rollout_event(&e, "started").expect("a new update");
    assert_eq!((started.version, started.from_version, started.revert_to), (3, 2, Some(1)));
    assert_eq!(stops(&e), ["api-0"]);
}
