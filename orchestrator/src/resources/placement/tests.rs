use std::collections::BTreeMap;

use super::*;

/// An empty node of `cpu` millicores and `memory` MiB, up, in zone `a`.
fn node(name: &str, cpu: u64, memory: u64) -> NodeView {
    NodeView {
        name: name.into(),
        allocatable: Resources::new(cpu, memory),
        allocated: Resources::ZERO,
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        up: true,
        replicas: BTreeMap::new(),
    }
}

fn ask(replica: &str, cpu: u64, memory: u64, strategy: Strategy) -> Ask {
    let service = replica.rsplit_once('-').map_or(replica, |(s, _)| s).to_string();
    Ask {
        replica: replica.into(),
        service,
        resources: Resources::new(cpu, memory),
        constraints: vec![],
        pin: None,
        strategy,
        priority: 50,
    }
}

fn replicas(service: &str, n: usize, cpu: u64, memory: u64, strategy: Strategy) -> Vec<Ask> {
    (0..n).map(|i| ask(&format!("{service}-{i}"), cpu, memory, strategy)).collect()
}

fn constraint(text: &str) -> Constraint {
    Constraint::parse(text).unwrap()
}

/// Replica -> node, `-` for pending.
fn where_(placements: &[Placement]) -> BTreeMap<String, String> {
    placements.iter().map(|p| (p.replica.clone(), p.node.clone().unwrap_or_else(|| "-".into()))).collect()
}

fn per_node(placements: &[Placement]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in placements.iter().filter_map(|p| p.node.clone()) {
        *counts.entry(node).or_default() += 1;
    }
    counts
}

#[test]
fn binpack_fills_one_node_before_the_next() {
    let nodes = [node("node-c", 1000, 1000), node("node-a", 1000, 1000), node("node-b", 1000, 1000)];
    let placed = place(&nodes, &replicas("api", 7, 300, 100, Strategy::BinPack));
    let order: Vec<&str> = placed.iter().map(|p| p.node.as_deref().unwrap()).collect();
    assert_eq!(order, ["node-a", "node-a", "node-a", "node-b", "node-b", "node-b", "node-c"]);

    // The fullest node that fits is first, whatever its name.
    let mut busy = node("node-z", 1000, 1000);
    busy.allocated = Resources::new(500, 500);
    let nodes = [node("node-a", 1000, 1000), busy];
    let placed = place(&nodes, &[ask("api-0", 400, 100, Strategy::BinPack)]);
    assert_eq!(placed[0].node.as_deref(), Some("node-z"));
    // Scored by the tighter dimension: node-m is nearly out of memory, so it is the fuller one.
    let mut memory_tight = node("node-m", 1000, 1000);
    memory_tight.allocated = Resources::new(0, 800);
    let mut cpu_half = node("node-c", 1000, 1000);
    cpu_half.allocated = Resources::new(500, 0);
    let placed = place(&[cpu_half, memory_tight], &[ask("api-0", 100, 100, Strategy::BinPack)]);
    assert_eq!(placed[0].node.as_deref(), Some("node-m"));
}

#[test]
fn spread_spreads_the_replicas_of_a_service() {
    let nodes = [node("node-a", 4000, 4000), node("node-b", 4000, 4000), node("node-c", 4000, 4000)];
    let placed = place(&nodes, &replicas("api", 6, 100, 100, Strategy::Spread));
    assert_eq!(per_node(&placed), BTreeMap::from([("node-a".into(), 2), ("node-b".into(), 2), ("node-c".into(), 2)]));

    // Replicas already running count; then the most room left decides.
    let mut holds_one = node("node-a", 4000, 4000);
    holds_one.replicas.insert("api".into(), 1);
    let mut busier = node("node-b", 4000, 4000);
    busier.allocated = Resources::new(2000, 0);
    busier.replicas.insert("web".into(), 3);
    let nodes = [holds_one, busier, node("node-c", 4000, 4000)];
    let placed = place(&nodes, &replicas("api", 2, 100, 100, Strategy::Spread));
    assert_eq!(where_(&placed), BTreeMap::from([("api-0".into(), "node-c".into()), ("api-1".into(), "node-b".into())]));
    let chosen = placed[1].explanation.chosen.as_ref().unwrap();
    assert_eq!((chosen.node.as_str(), chosen.same_service), ("node-b", 0));
    assert_eq!(placed[1].explanation.runners_up[0].same_service, 1, "node-a holds one, node-c api-0");
}

#[test]
fn another_service_does_not_count_for_spread_but_counts_for_room() {
    let nodes = [node("node-a", 1000, 1000), node("node-b", 1000, 1000)];
    let mut asks = replicas("web", 2, 100, 100, Strategy::Spread);
    asks.extend(replicas("api", 2, 100, 100, Strategy::Spread));
    let placed = where_(&place(&nodes, &asks));
    // api-0 and api-1 take one node each; then each node holds one api, which does not count
    // for web: the web replicas spread too.
    assert_ne!(placed["api-0"], placed["api-1"]);
    assert_ne!(placed["web-0"], placed["web-1"]);
}

#[test]
fn constraints_and_pins_are_respected() {
    let mut in_b = node("node-b", 1000, 1000);
    in_b.labels.insert("zone".into(), "b".into());
    in_b.labels.insert("gpu".into(), "1".into());
    let nodes = [node("node-a", 1000, 1000), in_b, node("node-c", 1000, 1000)];

    let mut gpu = ask("ml-0", 100, 100, Strategy::Spread);
    gpu.constraints = vec![constraint("gpu")];
    let mut not_b = replicas("web", 4, 100, 100, Strategy::Spread);
    for a in &mut not_b {
        a.constraints = vec![constraint("zone != b")];
    }
    let mut pinned = ask("db-0", 100, 100, Strategy::Spread);
    pinned.pin = Some("node-c".into());
    let mut asks = vec![gpu, pinned];
    asks.extend(not_b);
    let placed = place(&nodes, &asks);
    let at = where_(&placed);
    assert_eq!(at["ml-0"], "node-b");
    assert_eq!(at["db-0"], "node-c");
    for web in ["web-0", "web-1", "web-2", "web-3"] {
        assert_ne!(at[web], "node-b", "{web}");
    }
    let db = placed.iter().find(|p| p.replica == "db-0").unwrap();
    assert_eq!(db.explanation.not_pinned, 2);
    assert_eq!(
        db.explanation.summary(),
        "placed on node-c (pinned; spread: no other replica of the service there; 90% cpu / 90% memory left)"
    );

    // A pinned node that is full, down or unknown leaves the replica pending.
    let mut full = ask("db-1", 2000, 100, Strategy::Spread);
    full.pin = Some("node-c".into());
    let mut unknown = ask("db-2", 100, 100, Strategy::Spread);
    unknown.pin = Some("node-x".into());
    let placed = place(&nodes, &[full, unknown]);
    assert_eq!(placed[0].node, None);
    assert_eq!(
        placed[0].explanation.summary(),
        "pending: no node fits: 2 nodes not the pinned node node-c, 1 out of cpu (needs 2000 millicores; most free on \
         one node 1000)"
    );
    assert_eq!(placed[1].explanation.summary(), "pending: no node fits: no node named node-x (pinned)");
}

#[test]
fn capacity_is_never_over_allocated() {
    let mut rng = fastrand::Rng::with_seed(7);
    let nodes: Vec<NodeView> = (0..20)
        .map(|i| {
            let mut n = node(&format!("node-{i:02}"), 1000 + 500 * (i % 4), 1024 * (1 + i % 3));
            n.allocated = Resources::new(rng.u64(0..800), rng.u64(0..900));
            n
        })
        .collect();
    let asks: Vec<Ask> = (0..400)
        .map(|i| {
            let strategy = if i % 2 == 0 { Strategy::Spread } else { Strategy::BinPack };
            let mut a = ask(&format!("s{}-{i}", i % 13), rng.u64(50..600), rng.u64(32..700), strategy);
            a.priority = rng.u8(0..=100);
            a
        })
        .collect();
    let placed = place(&nodes, &asks);
    assert_eq!(placed.len(), asks.len());
    assert!(placed.iter().any(|p| p.node.is_none()), "the cluster runs out: the test means something");
    let by_replica: BTreeMap<&str, &Ask> = asks.iter().map(|a| (a.replica.as_str(), a)).collect();
    for n in &nodes {
        let used: Resources = placed
            .iter()
            .filter(|p| p.node.as_deref() == Some(n.name.as_str()))
            .map(|p| by_replica[p.replica.as_str()].resources)
            .sum();
        assert!(
            n.allocatable.fits(&(n.allocated + used)),
            "{}: {:?} + {used:?} > {:?}",
            n.name,
            n.allocated,
            n.allocatable
        );
    }
    // Pending means no node had the room at its turn: its explanation counts no feasible node.
    for p in placed.iter().filter(|p| p.node.is_none()) {
        assert_eq!(p.explanation.feasible, 0);
        assert_eq!(p.explanation.exhausted.nodes, 20);
    }
}

#[test]
fn same_inputs_same_outputs_whatever_their_order() {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut nodes: Vec<NodeView> = (0..30).map(|i| node(&format!("node-{i:02}"), 2000, 2048)).collect();
    for n in nodes.iter_mut().step_by(3) {
        n.labels.insert("zone".into(), "b".into());
    }
    let mut asks: Vec<Ask> = (0..200)
        .map(|i| {
            let strategy = if i % 3 == 0 { Strategy::BinPack } else { Strategy::Spread };
            let mut a = ask(&format!("s{}-{i}", i % 7), 100 * (1 + i % 5), 128 * (1 + i % 4), strategy);
            if i % 5 == 0 {
                a.constraints = vec![constraint("zone == b")];
            }
            a.priority = (i % 4) as u8 * 20;
            a
        })
        .collect();
    let first = place(&nodes, &asks);
    assert_eq!(place(&nodes, &asks), first);
    rng.shuffle(&mut nodes);
    rng.shuffle(&mut asks);
    assert_eq!(place(&nodes, &asks), first, "the order of nodes and asks changes nothing");
}

#[test]
fn higher_priorities_are_placed_first_when_space_is_short() {
    let nodes = [node("node-a", 1000, 1000)];
    let mut low = ask("aa-0", 600, 100, Strategy::BinPack);
    low.priority = 10;
    let mut high = ask("zz-0", 600, 100, Strategy::BinPack);
    high.priority = 90;
    let placed = place(&nodes, &[low, high]);
    assert_eq!(placed[0].replica, "zz-0", "placements come in the order they were decided");
    assert_eq!(placed[0].node.as_deref(), Some("node-a"));
    assert_eq!(placed[1].node, None);
}

#[test]
fn an_unplaceable_ask_names_each_reason_with_counts() {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut n = node(&format!("down-{i}"), 4000, 4000);
        n.up = false;
        nodes.push(n);
    }
    for i in 0..4 {
        let mut n = node(&format!("zone-b-{i}"), 4000, 4000);
        n.labels.insert("zone".into(), "b".into());
        nodes.push(n);
    }
    let mut hdd = node("hdd-0", 4000, 4000);
    hdd.labels.insert("disk".into(), "hdd".into());
    nodes.push(hdd);
    for i in 0..5 {
        let mut n = node(&format!("busy-{i}"), 1000, 4000);
        n.allocated = Resources::new(750, 0);
        nodes.push(n);
    }
    let mut short_of_memory = node("small-0", 4000, 200);
    short_of_memory.allocated = Resources::new(0, 100);
    nodes.push(short_of_memory);
    let mut both = node("tiny-0", 100, 100);
    both.allocated = Resources::new(50, 50);
    nodes.push(both);

    let mut a = ask("api-2", 500, 256, Strategy::BinPack);
    a.constraints = vec![constraint("zone == a"), constraint("disk not in hdd")];
    let placed = place(&nodes, &[a]);
    let e = &placed[0].explanation;
    assert_eq!(placed[0].node, None);
    assert_eq!(e.nodes_evaluated, 15);
    assert_eq!(e.nodes_down, 3);
    assert_eq!(
        e.filtered,
        [
            ConstraintFiltered { constraint: "zone == a".into(), nodes: 4 },
            ConstraintFiltered { constraint: "disk not in hdd".into(), nodes: 1 },
        ]
    );
    assert_eq!(e.exhausted, Exhausted { nodes: 7, cpu: 6, memory: 2 });
    assert_eq!(e.feasible, 0);
    assert_eq!(e.most_free, Some(Resources::new(250, 100)), "the nearest misses: busy-* and small-0");
    assert!(e.chosen.is_none() && e.runners_up.is_empty());
    assert_eq!(
        e.summary(),
        "pending: no node fits: 3 nodes down, 4 failed `zone == a`, 1 failed `disk not in hdd`, 6 out of cpu (needs 500 \
         millicores; most free on one node 250), 2 out of memory (needs 256 MiB; most free on one node 100)"
    );
    assert_eq!(place(&[], &[ask("api-0", 1, 1, Strategy::Spread)])[0].explanation.summary(), "pending: no nodes known");
}

#[test]
fn a_placed_ask_explains_its_choice_against_the_runners_up() {
    let mut nodes: Vec<NodeView> = (0..6).map(|i| node(&format!("node-{i}"), 1000, 1000)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        n.allocated = Resources::new(100 * i as u64, 50 * i as u64);
    }
    nodes[0].up = false;
    let placed = place(&nodes, &[ask("api-0", 200, 100, Strategy::BinPack)]);
    let e = &placed[0].explanation;
    let chosen = e.chosen.as_ref().unwrap();
    assert_eq!(chosen.node, "node-5");
    assert!((chosen.cpu_left - 0.3).abs() < 1e-9 && (chosen.memory_left - 0.65).abs() < 1e-9, "{chosen:?}");
    assert_eq!(chosen.score, chosen.cpu_left);
    let runners: Vec<&str> = e.runners_up.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(runners, ["node-4", "node-3", "node-2"]);
    assert!(e.runners_up.windows(2).all(|w| w[0].score <= w[1].score));
    assert_eq!(e.feasible, 5);
    assert_eq!(e.summary(), "placed on node-5 (binpack: 30% cpu / 65% memory left); 1 node down");
    assert_eq!(e.to_string(), e.summary());
}

#[test]
fn the_explanation_serializes_for_the_api() {
    let mut a = ask("api-0", 200, 100, Strategy::BinPack);
    a.constraints = vec![constraint("zone == b")];
    let placed = place(&[node("node-a", 1000, 1000)], &[a]);
    let json = serde_json::to_value(&placed[0]).unwrap();
    assert_eq!(json["node"], serde_json::Value::Null);
    let e = &json["explanation"];
    assert_eq!(e["strategy"], "binpack");
    assert_eq!(e["needs"], serde_json::json!({"cpu": 200, "memory": 100}));
    assert_eq!(e["nodes_evaluated"], 1);
    assert_eq!(e["filtered"], serde_json::json!([{"constraint": "zone == b", "nodes": 1}]));
    assert_eq!(e["exhausted"], serde_json::json!({"nodes": 0, "cpu": 0, "memory": 0}));
    assert!(e.get("chosen").is_none() && e.get("most_free").is_none());
    let back: Placement = serde_json::from_value(json).unwrap();
    assert_eq!(back, placed[0]);
    assert_eq!(serde_json::to_value(Strategy::Spread).unwrap(), "spread");
}
