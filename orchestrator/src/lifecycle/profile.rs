//! The profile of one start-up run, free of I/O (like `systemd-analyze`): when each service was
//! queued, started and became ready; the critical chain that decided the wall time; the
//! bottlenecks; and the parallel efficiency, critical-path length over wall time.

use std::collections::BTreeMap;
use std::time::Duration;

use super::graph::Graph;

pub use orch_protocol::stack::{Bottleneck, ChainLink, Profile, ServiceTiming};

/// How long a service may wait for a free slot (after its dependencies were met) before it is
/// reported as held back by `max_parallel`.
const SLOT_WAIT: Duration = Duration::from_millis(100);

pub fn profile(graph: &Graph, timings: &BTreeMap<String, ServiceTiming>) -> Profile {
    let wall = timings.values().filter_map(|t| t.ready).max().unwrap_or_default();
    // Longest path ending at each service, over a topological order (dependencies first).
    let mut longest: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut layers = graph.layers();
    layers.iter_mut().for_each(|l| l.sort());
    for name in layers.iter().flatten() {
        let Some(own) = timings.get(name).and_then(ServiceTiming::took) else { continue };
        let before =
            graph.dependencies(name).iter().filter_map(|(d, _)| longest.get(d).copied()).max().unwrap_or_default();
        longest.insert(name.as_str(), before + own);
    }
    let critical_path = longest.values().copied().max().unwrap_or_default();
    let efficiency = if wall.is_zero() { 1.0 } else { critical_path.as_secs_f64() / wall.as_secs_f64() };

    // The chain: from the service ready last, back through the dependency it waited for longest.
    let mut chain = Vec::new();
    let mut current =
        timings.iter().filter(|(_, t)| t.ready.is_some()).max_by_key(|(_, t)| t.ready).map(|(n, _)| n.clone());
    while let Some(name) = current {
        let t = timings[&name];
        let (Some(started), Some(ready)) = (t.started, t.ready) else { break };
        chain.push(ChainLink { service: name.clone(), started, ready, took: ready.saturating_sub(started) });
        current = graph
            .dependencies(&name)
            .iter()
            .filter_map(|(d, _)| timings.get(*d).and_then(|t| t.ready).map(|r| (r, d.to_string())))
            .max()
            .map(|(_, d)| d);
    }
    chain.reverse();

    let mut bottlenecks: Vec<Bottleneck> = chain
        .iter()
        .map(|l| Bottleneck { service: l.service.clone(), took: l.took, why: "on the critical chain".to_string() })
        .collect();
    bottlenecks.sort_by(|a, b| b.took.cmp(&a.took).then(a.service.cmp(&b.service)));
    bottlenecks.truncate(5);
    for (name, t) in timings {
        let met = graph
            .dependencies(name)
            .iter()
            .filter_map(|(d, _)| timings.get(*d).and_then(|t| t.ready))
            .max()
            .unwrap_or(t.queued)
            .max(t.queued);
        if let Some(started) = t.started
            && started.saturating_sub(met) > SLOT_WAIT
        {
            bottlenecks.push(Bottleneck {
                service: name.clone(),
                took: started - met,
                why: "waited for a free slot (max_parallel) after its dependencies were met".to_string(),
            });
        }
    }
    Profile { wall, critical_path, efficiency, chain, bottlenecks, services: timings.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Manifest;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn t(queued: u64, started: u64, ready: u64) -> ServiceTiming {
        ServiceTiming { queued: ms(queued), started: Some(ms(started)), ready: Some(ms(ready)) }
    }

    #[test]
    fn critical_chain_efficiency_and_bottlenecks() {
        let m = Manifest::parse(
            r#"
[services.db]
command = "x"
[services.cache]
command = "x"
[services.api]
command = "x"
depends_on = { db = "started", cache = "started" }
[services.web]
command = "x"
depends_on = { api = "started" }
"#,
        )
        .unwrap();
        let g = Graph::new(&m).unwrap();
        let timings = BTreeMap::from([
            ("db".to_string(), t(0, 1, 500)),
            ("cache".to_string(), t(0, 1, 100)),
            ("api".to_string(), t(0, 502, 800)),
            ("web".to_string(), t(0, 1100, 1200)), // waited 300 ms for a slot
        ]);
        let p = profile(&g, &timings);
        assert_eq!(p.wall, ms(1200));
        assert_eq!(p.critical_path, ms(499 + 298 + 100));
        assert!((p.efficiency - 897.0 / 1200.0).abs() < 1e-9);
        let chain: Vec<&str> = p.chain.iter().map(|l| l.service.as_str()).collect();
        assert_eq!(chain, ["db", "api", "web"]);
        assert_eq!(p.bottlenecks[0].service, "db", "the slowest link first");
        assert!(p.bottlenecks.iter().any(|b| b.service == "web" && b.why.contains("free slot")));
    }
}
