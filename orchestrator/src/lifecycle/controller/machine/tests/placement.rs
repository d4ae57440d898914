//! Where services run: placed by the scheduler on the nodes the inventory reports, waiting for a
//! node when none fits, lost with their node and placed again, stale processes stopped on a node
//! that comes back, and preemption of lower priorities under its budget.

use std::time::Duration;

use orch_protocol::lifecycle::ServiceState::*;
use orch_protocol::resources::{Allocation, NodeInfo, NodeStatus};

use super::*;

/// The services launched with their node, in order.
fn launched_on(effects: &[Effect]) -> Vec<(&str, &str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch { service, node, .. } => Some((service.as_str(), node.as_str())),
            _ => None,
        })
        .collect()
}

fn nodes(list: Vec<NodeInfo>) -> Input {
    Input::Nodes(Arc::new(list))
}

fn down(mut n: NodeInfo) -> NodeInfo {
    n.status = NodeStatus::Down;
    n
}

/// Two nodes of 1 core and 1 GiB each, and nothing else.
fn two_small_nodes() -> Input {
    nodes(vec![node("n1", 1000, 1024), node("n2", 1000, 1024)])
}

const REPLICAS: &str = r#"
[services.api]
command = "api"
count = 3
resources = { cpu = 400, memory = 256 }
"#;

#[test]
fn replicas_spread_over_the_nodes_and_one_that_fits_nowhere_waits_with_why() {
    let mut h = Harness::new();
    h.send(two_small_nodes());
    let e = h.resume(REPLICAS);
    let seen = h.settle(e);
    // Spread: one on each node, then the third on the node with more room left (a tie: the
    // first by name).
    assert_eq!(launched_on(&seen), [("api-0", "n1"), ("api-1", "n2"), ("api-2", "n1")]);
    assert_eq!(h.service("api-2").node.as_deref(), Some("n1"));
    assert!(h.service("api-1").placement.unwrap().starts_with("placed on n2"), "{:?}", h.service("api-1").placement);

    // A fourth replica: n1 has 200 millicores left, n2 600; a larger ask fits nowhere.
    let bigger = REPLICAS.replace("count = 3", "count = 4").replace("cpu = 400", "cpu = 700");
    let mut h = Harness::new();
    h.send(two_small_nodes());
    let e = h.resume(&bigger);
    let seen = h.settle(e);
    assert_eq!(launched_on(&seen).len(), 2, "one per node: {:?}", launched_on(&seen));
    let waiting = ["api-2", "api-3"];
    for name in waiting {
        assert_eq!(h.state(name), Pending);
        let why = reason(&seen, name, Pending);
        assert!(why.starts_with("waiting for a node: pending"), "{why}");
        assert!(why.contains("cpu"), "names the dimension short: {why}");
        assert_eq!(h.service(name).node, None);
    }

    // A third node joins: the waiting replicas are placed on it, highest priority (then name)
    // first, as far as it has room.
    let e = h.send(nodes(vec![node("n1", 1000, 1024), node("n2", 1000, 1024), node("n3", 1000, 1024)]));
    let seen = h.settle(e);
    assert_eq!(launched_on(&seen), [("api-2", "n3")]);
    assert_eq!(h.state("api-3"), Pending, "n3 holds one");
}

#[test]
fn a_service_waiting_past_its_startup_timeout_counts_a_failed_start() {
    let text = r#"
[services.huge]
command = "huge"
startup_timeout = "5s"
resources = { memory = 999999 }
"#;
    let mut h = Harness::new();
    let e = h.resume(text);
    assert_eq!(h.state("huge"), Pending, "{e:?}");
    h.advance(Duration::from_secs(4));
    let e = h.send(Input::Tick);
    assert!(states_of(&e, "huge").is_empty(), "not yet: {e:?}");
    h.advance(Duration::from_secs(2));
    let e = h.send(Input::Tick);
    assert_eq!(states_of(&e, "huge"), [Crashed, Restarting]);
    let why = reason(&e, "huge", Crashed);
    assert!(why.starts_with("no node within 5s (startup_timeout): pending"), "{why}");
}

#[test]
fn services_on_a_node_that_goes_down_are_lost_and_placed_again_and_its_stale_process_is_stopped() {
    let text = r#"
[services.api]
command = "api"
resources = { cpu = 100, memory = 64 }
[services.pinned]
command = "pinned"
node = "n1"
"#;
    let mut h = Harness::new();
    h.send(nodes(vec![node("n1", 1000, 1024)]));
    let e = h.resume(text);
    let seen = h.settle(e);
    assert!(launched_on(&seen).contains(&("api", "n1")));
    let old_pid = h.pid("api");

    // n1 goes down, n2 is up: api is lost and starts on n2; the pinned service stays.
    let e = h.send(nodes(vec![down(node("n1", 1000, 1024)), node("n2", 1000, 1024)]));
    let lost: Vec<_> = events(&e)
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Lost(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1, "{e:?}");
    assert_eq!((lost[0].service.as_str(), lost[0].node.as_str(), lost[0].pid), ("api", "n1", Some(old_pid)));
    assert!(reason(&e, "api", Pending).starts_with("lost: node n1 is down"), "{e:?}");
    let seen = h.settle(e);
    assert_eq!(launched_on(&seen), [("api", "n2")]);
    assert_eq!(h.state("api"), Ready);
    assert_eq!(h.service("pinned").node.as_deref(), Some("n1"), "a pin does not move");

    // n1 comes back still running the old process: it is stopped there, once.
    let mut back = node("n1", 1000, 1024);
    back.allocations.push(Allocation { service: "api".into(), pid: old_pid, resources: Default::default() });
    let e = h.send(nodes(vec![back.clone(), node("n2", 1000, 1024)]));
    let stale: Vec<_> = e
        .iter()
        .filter_map(|ef| match ef {
            Effect::StopStale { node, request } => Some((node.as_str(), request.service.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(stale, [("n1", "api")]);
    let e = h.send(nodes(vec![back, node("n2", 1000, 1024)]));
    assert!(!e.iter().any(|ef| matches!(ef, Effect::StopStale { .. })), "asked once");
    assert_eq!(h.service("api").node.as_deref(), Some("n2"));
}

#[test]
fn a_resumed_service_keeps_the_node_it_ran_on_while_that_node_is_up() {
    let text = "[services.api]\ncommand = \"api\"\n";
    let mut h = Harness::new();
    h.send(nodes(vec![node("a", 1000, 1024), node("b", 8000, 8192)]));
    let e = h.send(Input::Resume {
        version: 1,
        manifest: manifest(text),
        desired: Desired::Up,
        run_id: Uuid::nil(),
        placed: BTreeMap::from([("api".to_string(), "a".to_string())]),
    });
    assert_eq!(launched_on(&e), [("api", "a")], "adopted where it runs, though b has more room");
}

const CONTENDED: &str = r#"
[services.batch]
command = "batch"
count = 2
priority = 10
resources = { cpu = 500, memory = 128 }
[services.critical-low]
command = "low"
priority = 5
critical = true
resources = { cpu = 500, memory = 128 }
"#;

fn preemptions(effects: &[Effect]) -> Vec<orch_protocol::resources::PreemptedData> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::Preempted(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_higher_priority_service_preempts_the_lowest_that_make_room_never_a_critical_one() {
    // Two nodes of one core: batch-0 + critical-low on one, batch-1 on the other (spread).
    let mut h = Harness::new();
    h.send(two_small_nodes());
    let e = h.resume(CONTENDED);
    h.settle(e);
    let batch1_node = h.service("batch-1").node.unwrap();
    // A new version adds a service of priority 90 that needs a whole core: no node has it.
    let text = format!("{CONTENDED}[services.api]\ncommand = \"api\"\npriority = 90\nresources = {{ cpu = 1000 }}\n");
    let request = h.request();
    let e = h.send(Input::Apply { request, manifest: manifest(&text), body: text.clone(), source: "t".into() });
    assert!(matches!(&e[..], [Effect::StoreManifest { .. }]), "{e:?}");
    let stored = h.send(Input::ManifestStored {
        request,
        manifest: manifest(&text),
        source: "t".into(),
        run_id: Uuid::nil(),
        revert: false,
        result: Ok(2),
    });
    let preempted = preemptions(&stored);
    // The node of critical-low cannot be emptied (it is critical): the other node's batch goes.
    assert_eq!(preempted.len(), 1, "{stored:?}");
    assert_eq!(preempted[0].service, "batch-1");
    assert_eq!((preempted[0].by.as_str(), preempted[0].by_priority), ("api", 90));
    assert_eq!(preempted[0].node, batch1_node);
    assert_eq!(preempted[0].budget_left, 4);
    assert_eq!(stops(&stored), ["batch-1"]);
    // Once batch-1 has stopped, api takes its room; batch-1 waits for a node.
    let e = h.stopped("batch-1");
    let seen = h.settle(e);
    assert_eq!(launched_on(&seen), [("api", batch1_node.as_str())]);
    assert_eq!(h.state("batch-1"), Pending);
    assert!(h.service("batch-1").reason.unwrap().starts_with("waiting for a node"), "it fits nowhere now");
}

#[test]
fn the_preemption_budget_bounds_how_many_are_stopped_per_window() {
    let mut h = Harness::new();
    h.machine = Machine::new(
        LifecycleSettings {
            preemption: crate::resources::preemption::PreemptionBudget { max: 1, window: Duration::from_secs(60) },
            ..LifecycleSettings::default()
        },
        Arc::new(BTreeMap::new()),
        h.now,
    );
    h.send(nodes(vec![node("n1", 1000, 1024)]));
    let text = r#"
[services.low-a]
command = "a"
priority = 10
resources = { cpu = 500 }
[services.low-b]
command = "b"
priority = 10
resources = { cpu = 500 }
[services.high]
command = "h"
priority = 90
resources = { cpu = 1000 }
depends_on = { low-a = "started", low-b = "started" }
"#;
    let e = h.resume(text);
    let seen = h.settle(e);
    // high needs both lows gone: two victims, over the budget of one: nobody is preempted.
    assert!(preemptions(&seen).is_empty(), "{seen:?}");
    assert_eq!(h.state("high"), Pending);
    assert_eq!(h.state("low-a"), Ready);
    assert_eq!(h.state("low-b"), Ready);
    // It waits saying so: what would make room, and that the budget holds it back.
    let why = h.service("high").reason.unwrap();
    assert!(
        why.starts_with("waiting for a node: ")
            && why.ends_with(
                "; preempting low-a, low-b would make room, but the preemption budget (1 per 1m) has 1 left"
            ),
        "{why}"
    );
}
