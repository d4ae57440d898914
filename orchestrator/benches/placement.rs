//! The placement scheduler alone (`make bench PARTS=placement`): no servers, the pure function on
//! a simulated cluster. Prints each figure and writes them as JSON to `target/bench/placement.json`.
//!
//! - `placement`: 10,000 replicas (1,000 services of 10 replicas, mixed sizes, a third of the
//!   services with constraints on zone, disk or GPU, a few pinned, priorities 0-100) onto 1,000
//!   nodes of three sizes with labels, 1% of them down; once all bin-packed, once all spread.
//!   Placements per second over a whole `place` call (the median of a few runs), and the time of
//!   each decision (p50/p99/max) measured one ask at a time through `Placer`.
//!
//! Smaller runs for trials (the recorded figures use none of these): `ORCH_BENCH_PLACEMENT_NODES`,
//! `ORCH_BENCH_PLACEMENT_SERVICES`, `ORCH_BENCH_PLACEMENT_RUNS`.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use orch_protocol::resources::Resources;
use orchestrator::resources::Constraint;
use orchestrator::resources::placement::{Ask, NodeView, Placer, Strategy, place, placement_order};
use serde_json::{Value, json};

use common::write_json;

/// The target (printed beside the figures, not asserted).
const TARGET_PLACEMENTS_PER_SEC: f64 = 10_000.0;
const REPLICAS_PER_SERVICE: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

const ZONES: [&str; 4] = ["a", "b", "c", "d"];
const DISKS: [&str; 3] = ["ssd", "nvme", "hdd"];

/// `n` nodes of three sizes, labelled with a zone and a disk kind; one in ten has a GPU, one in
/// a hundred is down.
fn cluster(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let (cpu, memory) = [(4000, 8192), (8000, 16384), (16000, 32768)][i % 3];
            let mut labels = BTreeMap::from([
                ("zone".to_string(), ZONES[i % ZONES.len()].to_string()),
                ("disk".to_string(), DISKS[(i / 4) % DISKS.len()].to_string()),
            ]);
            if i % 10 == 0 {
                labels.insert("gpu".into(), "1".into());
            }
            NodeView {
                name: format!("node-{i:04}"),
                allocatable: Resources::new(cpu, memory),
                allocated: Resources::ZERO,
                labels,
                up: i % 100 != 99,
                replicas: BTreeMap::new(),
            }
        })
        .collect()
}

/// `services` services of [`REPLICAS_PER_SERVICE`] replicas each, all with `strategy`. Sizes,
/// constraints, pins and priorities come from a fixed seed: both strategies place the same asks.
fn asks(services: usize, nodes: usize, strategy: Strategy) -> Vec<Ask> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut asks = Vec::with_capacity(services * REPLICAS_PER_SERVICE);
    for s in 0..services {
        let resources =
            Resources::new([100, 250, 500, 1000, 2000][rng.usize(0..5)], [128, 256, 512, 1024, 2048][rng.usize(0..5)]);
        let constraints: Vec<Constraint> = match rng.usize(0..20) {
            0..=3 => vec![format!("zone == {}", ZONES[rng.usize(0..ZONES.len())])],
            4..=5 => vec!["disk in ssd, nvme".to_string()],
            6 => vec!["gpu".to_string(), "zone != d".to_string()],
            7 => vec!["!gpu".to_string(), "disk not in hdd".to_string()],
            _ => vec![],
        }
        .iter()
        .map(|c| Constraint::parse(c).expect("a valid constraint"))
        .collect();
        // One service in a hundred pinned to one node (all its replicas there, so some pend).
        let pin = (s % 100 == 7).then(|| format!("node-{:04}", rng.usize(0..nodes)));
        let priority = rng.u8(0..=100);
        for r in 0..REPLICAS_PER_SERVICE {
            asks.push(Ask {
                replica: format!("svc{s:04}-{r}"),
                service: format!("svc{s:04}"),
                resources,
                constraints: constraints.clone(),
                pin: pin.clone(),
                strategy,
                priority,
            });
        }
    }
    asks
}

/// Nanoseconds, 1 ns to 10 s.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn run(strategy: Strategy, nodes: &[NodeView], asks: &[Ask], runs: usize) -> Value {
    // Whole calls: the rate a caller sees, ordering and explanations included.
    let mut seconds: Vec<f64> = (0..runs)
        .map(|_| {
            let began = Instant::now();
            let placed = place(nodes, asks);
            let elapsed = began.elapsed().as_secs_f64();
            assert_eq!(placed.len(), asks.len());
            elapsed
        })
        .collect();
    let rates: Vec<String> = seconds.iter().map(|s| format!("{:.0}", asks.len() as f64 / s)).collect();
    let seconds_runs = seconds.clone();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let per_sec = asks.len() as f64 / median;

    // One decision at a time, for its distribution.
    let mut decisions = histogram();
    let mut placer = Placer::new(nodes);
    let mut pending = 0;
    let mut used = Resources::ZERO;
    for ask in placement_order(asks) {
        let began = Instant::now();
        let placement = placer.place(ask);
        decisions.record(began.elapsed().as_nanos().max(1) as u64).unwrap();
        match placement.node {
            Some(_) => used += ask.resources,
            None => pending += 1,
        }
    }
    let capacity: Resources = nodes.iter().filter(|n| n.up).map(|n| n.allocatable).sum();
    let cpu_used = used.cpu as f64 / capacity.cpu as f64 * 100.0;
    let memory_used = used.memory as f64 / capacity.memory as f64 * 100.0;

    println!(
        "  {}: {} replicas onto {} nodes: runs {} placements/s; median {:.3} s = {per_sec:.0} placements/s (target >= \
         {TARGET_PLACEMENTS_PER_SEC:.0}: {})",
        strategy.as_str(),
        asks.len(),
        nodes.len(),
        rates.join(", "),
        median,
        met(per_sec >= TARGET_PLACEMENTS_PER_SEC),
    );
    println!(
        "      decision time per replica: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; {} placed, {pending} pending; up \
         nodes {cpu_used:.0}% cpu / {memory_used:.0}% memory allocated at the end",
        micros(&decisions, 0.5),
        micros(&decisions, 0.99),
        decisions.max() as f64 / 1e3,
        asks.len() - pending,
    );
    json!({
        "replicas": asks.len(),
        "nodes": nodes.len(),
        "runs": runs,
        "seconds_runs": seconds_runs,
        "seconds": median,
        "placements_per_sec": per_sec,
        "target_placements_per_sec": TARGET_PLACEMENTS_PER_SEC,
        "decision_us": {
            "p50": micros(&decisions, 0.5),
            "p99": micros(&decisions, 0.99),
            "max": decisions.max() as f64 / 1e3,
        },
        "placed": asks.len() - pending,
        "pending": pending,
        "cpu_allocated_percent": cpu_used,
        "memory_allocated_percent": memory_used,
    })
}

fn placement() {
    let node_count = env_usize("ORCH_BENCH_PLACEMENT_NODES", 1000).max(1);
    let services = env_usize("ORCH_BENCH_PLACEMENT_SERVICES", 1000).max(1);
    let runs = env_usize("ORCH_BENCH_PLACEMENT_RUNS", 5).max(1);
    println!(
        "placement: {services} services x {REPLICAS_PER_SERVICE} replicas onto {node_count} simulated nodes, one \
         thread; {runs} whole runs per strategy, the median shown"
    );
    let nodes = cluster(node_count);
    let binpack = run(Strategy::BinPack, &nodes, &asks(services, node_count, Strategy::BinPack), runs);
    let spread = run(Strategy::Spread, &nodes, &asks(services, node_count, Strategy::Spread), runs);
    write_json("placement", &json!({ "binpack": binpack, "spread": spread }));
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!("resource benchmarks: the pure scheduler on simulated nodes (no servers)");
    if wants("placement") {
        placement();
    }
    println!("figures written to target/bench/*.json");
}
