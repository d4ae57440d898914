//! Priorities at work: load shedding under node pressure and restoring after it, and changes of
//! the effective priorities reordering start-up and shedding.

use std::time::Duration;

use orch_protocol::events::ShedData;
use orch_protocol::lifecycle::ServiceState::*;

use super::*;

const SHEDDABLE: &str = r#"
[services.batch]
command = "batch"
priority = 20
sheddable = true
[services.reports]
command = "reports"
priority = 40
sheddable = true
[services.api]
command = "api"
priority = 10
[services.elsewhere]
command = "elsewhere"
priority = 1
sheddable = true
node = "edge"
"#;

fn reading(cpu: f64, memory: f64) -> Input {
    Input::Pressure(agent::Pressure { node: NODE.into(), cpu, memory, at: DateTime::from_timestamp(0, 0).unwrap() })
}

/// The shed or restored step among `effects`: (restored, data).
#[track_caller]
fn step(effects: &[Effect]) -> (bool, ShedData) {
    let steps: Vec<(bool, ShedData)> = events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::Shed(d) => Some((false, d.clone())),
            Event::Restored(d) => Some((true, d.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 1, "one step: {effects:?}");
    steps.into_iter().next().unwrap()
}

#[test]
fn pressure_sheds_the_lowest_priority_sheddable_service_one_step_at_a_time() {
    let mut h = Harness::ready(SHEDDABLE);
    let e = h.send(reading(0.5, 0.95));
    let Event::PressureHigh(high) = events(&e)[0] else { panic!("{e:?}") };
    assert_eq!(high.message, "node local is under pressure: memory 95% >= 90%");
    let (restored, shed) = step(&e);
    assert!(!restored);
    assert_eq!((shed.service.as_str(), shed.priority), ("batch", 20));
    assert_eq!(shed.reason, "shed: memory 95% >= 90% on node local; lowest priority sheddable service");
    assert_eq!(stops(&e), ["batch"]);
    let e = h.stopped("batch");
    assert_eq!(states_of(&e, "batch"), [Stopped], "not started again while the pressure lasts");
    assert!(launches(&e).is_empty());

    h.advance(Duration::from_secs(5));
    assert!(h.send(reading(0.5, 0.95)).is_empty(), "one step per shed_step");
    h.advance(Duration::from_secs(5));
    let e = h.send(reading(0.95, 0.5));
    assert_eq!(step(&e).1.service, "reports");
    h.stopped("reports");
    h.advance(Duration::from_secs(10));
    assert!(h.send(reading(0.95, 0.5)).is_empty(), "api is not sheddable, elsewhere runs on another node");
    assert_eq!((h.state("api"), h.state("elsewhere")), (Ready, Ready));
}

#[test]
fn shed_services_come_back_highest_priority_first_once_the_pressure_has_cleared() {
    let mut h = Harness::ready(SHEDDABLE);
    for _ in 0..2 {
        let e = h.send(reading(0.5, 0.95));
        h.stop_all(e);
        h.advance(Duration::from_secs(10));
    }
    assert_eq!((h.state("batch"), h.state("reports")), (Stopped, Stopped));
    let e = h.send(reading(0.1, 0.1));
    assert!(
        matches!(&events(&e)[..], [Event::PressureCleared(d)] if d.message == "node local is no longer under pressure: cpu 10% and memory 10% below the thresholds")
    );
    assert!(launches(&e).is_empty(), "not before the pressure stayed clear for shed_restore_after");
    h.advance(Duration::from_secs(29));
    assert!(h.send(reading(0.1, 0.1)).is_empty());
    h.advance(Duration::from_secs(2));
    let e = h.send(reading(0.1, 0.1));
    let (restored, data) = step(&e);
    assert!(restored);
    assert_eq!((data.service.as_str(), data.priority), ("reports", 40));
    assert_eq!(
        data.reason,
        "restored: node local has been below the thresholds for 31s; highest priority shed service"
    );
    assert_eq!(launches(&e), ["reports"]);
    h.settle(e);
    h.advance(Duration::from_secs(10));
    let e = h.send(reading(0.1, 0.1));
    assert_eq!(step(&e).1.service, "batch");
    assert_eq!(launches(&e), ["batch"]);
}

#[test]
fn a_stack_taken_down_restores_nothing() {
    let mut h = Harness::ready(SHEDDABLE);
    let e = h.send(reading(0.5, 0.95));
    h.stop_all(e);
    let request = h.request();
    h.send(Input::Down { request });
    let e = h.send(Input::DesiredStored { request, result: Ok(()) });
    h.stop_all(e);
    h.advance(Duration::from_secs(10));
    h.send(reading(0.1, 0.1));
    h.advance(Duration::from_secs(60));
    let e = h.send(reading(0.1, 0.1));
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn changed_priorities_decide_who_is_shed() {
    let mut h = Harness::ready(SHEDDABLE);
    let effective = Arc::new(BTreeMap::from([("batch".to_string(), 60)]));
    h.send(Input::Priorities(effective));
    assert_eq!(h.service("batch").priority, 60);
    let e = h.send(reading(0.5, 0.95));
    assert_eq!(step(&e).1.service, "reports", "batch now ranks higher");
}

#[test]
fn changed_priorities_reorder_the_start_up() {
    let text = r#"
max_parallel = 1
[services.a]
command = "a"
priority = 60
[services.b]
command = "b"
priority = 50
[services.c]
command = "c"
priority = 40
"#;
    let (mut h, e) = Harness::up(text);
    assert_eq!(launches(&e), ["a"]);
    let e = h.send(Input::Priorities(Arc::new(BTreeMap::from([("c".to_string(), 99)]))));
    assert!(launches(&e).is_empty(), "a holds the only slot");
    assert_eq!(launches(&h.launched("a")), ["c"]);
    assert_eq!(launches(&h.launched("c")), ["b"]);
}
