//! New manifest versions: stored first, then what changed or left the stack is stopped in
//! reverse order, and the new stack adopts the services that run unchanged.

use orch_protocol::lifecycle::ServiceState::*;

use super::*;
use crate::lifecycle::controller::ControlError;
use crate::storage::StorageError;

const V1: &str = r#"
[services.db]
command = "db"
port = 5432
readiness = { kind = "tcp" }
[services.api]
command = "api"
depends_on = { db = "healthy" }
[services.old]
command = "old"
"#;

/// db unchanged, api changed, old gone, extra new.
const V2: &str = r#"
[services.db]
command = "db"
port = 5432
readiness = { kind = "tcp" }
[services.api]
command = "api"
args = ["--v2"]
depends_on = { db = "healthy" }
[services.extra]
command = "extra"
depends_on = { api = "started" }
"#;

/// Applies `text` up to its storage, as version `version`; the effects once stored.
pub(super) fn apply(h: &mut Harness, text: &str, version: i64, run_id: Uuid) -> (RequestId, Vec<Effect>) {
    let request = h.request();
    let e = h.send(Input::Apply { request, manifest: manifest(text), body: text.into(), source: "test".into() });
    let [Effect::StoreManifest { request: stored, manifest, body, source }] = &e[..] else {
        panic!("stored first: {e:?}")
    };
    assert_eq!((*stored, body.as_str(), source.as_str()), (request, text, "test"));
    let manifest = manifest.clone();
    let e = h.send(Input::ManifestStored {
        request,
        manifest,
        source: "test".into(),
        run_id,
        revert: false,
        result: Ok(version),
    });
    (request, e)
}

#[test]
fn a_new_version_replaces_what_changed_and_adopts_what_runs_unchanged() {
    let mut h = Harness::ready(V1);
    let (db_generation, db_pid) = (h.generation("db"), h.pid("db"));
    let run_id = Uuid::from_u128(2);
    let (request, e) = apply(&mut h, V2, 2, run_id);
    assert!(
        matches!(&events(&e)[..], [Event::ManifestApplied(d)] if d.version == 2 && d.services == 3 && d.source == "test")
    );
    match &replies(&e)[..] {
        [Reply::Applied(id, Ok(applied))] => {
            assert_eq!(*id, request);
            assert_eq!((applied.version, applied.run_id, applied.services), (2, run_id, 3));
            assert_eq!(applied.replaced, ["api", "old"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stops(&e), ["api", "old"]);
    assert_eq!(reason(&e, "old", Stopping), "replaced by manifest version 2");
    let request = h.request();
    let busy = h.send(Input::Apply { request, manifest: manifest(V2), body: V2.into(), source: "test".into() });
    assert!(
        matches!(&replies(&busy)[..], [Reply::Applied(_, Err(ControlError::Busy(m)))] if m.contains("being stopped"))
    );

    h.stopped("api");
    let e = h.stopped("old");
    assert_eq!(states_of(&e, "old"), [Stopped]);
    let defaults = e.iter().find_map(|e| match e {
        Effect::SetDefaultPriorities(d) => Some(d.keys().map(String::as_str).collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(defaults, Some(vec!["api", "db", "extra"]), "the new version's priorities");
    assert!(e.iter().any(|e| matches!(e, Effect::StoreRunStarted { id, version: 2, .. } if *id == run_id)));
    assert!(states_of(&e, "db").is_empty(), "db runs on, untouched");
    assert_eq!(launches(&e), ["api"], "db is ready already");
    let Some(Effect::Launch { request, .. }) = e.iter().find(|e| matches!(e, Effect::Launch { .. })) else { panic!() };
    assert_eq!(
        (request.args.as_slice(), request.env["ORCH_MANIFEST_VERSION"].as_str()),
        (["--v2".to_string()].as_slice(), "2")
    );
    let e = h.settle(e);
    assert_eq!(run_outcome(&e), "ready");

    let (view, _) = h.machine.view().unwrap();
    assert_eq!(view.version, 2);
    let names: Vec<&str> = view.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "db", "extra"]);
    assert_eq!((h.generation("db"), h.service("db").pid), (db_generation, Some(db_pid)), "the same process");
    let e = h.exited("db", 1);
    assert_eq!(states_of(&e, "db"), [Crashed, Restarting], "the adopted process is still watched");
}

#[test]
fn the_same_manifest_again_starts_a_run_that_has_nothing_to_do() {
    let mut h = Harness::ready(V1);
    let (_, e) = apply(&mut h, V1, 2, Uuid::from_u128(2));
    assert!(matches!(&replies(&e)[..], [Reply::Applied(_, Ok(a))] if a.replaced.is_empty()));
    assert!(launches(&e).is_empty() && stops(&e).is_empty());
    assert_eq!(run_outcome(&e), "ready");
    assert_eq!(h.machine.view().unwrap().0.version, 2);
}

#[test]
fn a_manifest_that_could_not_be_stored_changes_nothing() {
    let mut h = Harness::ready(V1);
    let request = h.request();
    h.send(Input::Apply { request, manifest: manifest(V2), body: V2.into(), source: "test".into() });
    let e = h.send(Input::ManifestStored {
        request,
        manifest: manifest(V2),
        source: "test".into(),
        run_id: Uuid::nil(),
        revert: false,
        result: Err(StorageError::ConcurrentCommand),
    });
    assert!(matches!(&replies(&e)[..], [Reply::Applied(_, Err(ControlError::Storage(_)))]));
    assert_eq!(e.len(), 1, "only the reply: {e:?}");
    assert_eq!(h.machine.view().unwrap().0.version, 1);
}

#[test]
fn taking_the_stack_down_during_a_replacement_drops_the_new_version_too() {
    let mut h = Harness::ready(V1);
    let (_, mut replacing) = apply(&mut h, V2, 2, Uuid::from_u128(2));
    replacing.retain(|e| matches!(e, Effect::Stop { .. }));
    let request = h.request();
    let e = h.send(Input::Down { request });
    assert!(matches!(&e[..], [Effect::StoreDesiredDown { versions, .. }] if versions == &[1, 2]));
    let e = h.send(Input::DesiredStored { request, result: Ok(()) });
    assert!(stops(&e).is_empty(), "joins the shutdown under way");
    let e = h.stop_all(replacing);
    assert!(matches!(&replies(&e)[..], [Reply::Stopped(id, Ok(2))] if *id == request));
    assert!(launches(&e).is_empty(), "the new version is not started");
    assert_eq!(h.machine.view().unwrap().0.version, 1);
}
