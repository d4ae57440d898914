//! Load-balancing choices among healthy instances.

use std::collections::HashMap;
use std::sync::Mutex;

use orch_protocol::registry::Instance;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each call picks the next instance in id order.
    #[default]
    RoundRobin,
    /// Random, with probability proportional to `weight`.
    Weighted,
    /// Uniformly random.
    Random,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "round_robin" => Some(Strategy::RoundRobin),
            "weighted" => Some(Strategy::Weighted),
            "random" => Some(Strategy::Random),
            _ => None,
        }
    }
}

/// Round-robin positions per service.
#[derive(Default)]
pub struct Balancer {
    cursors: Mutex<HashMap<String, usize>>,
}

impl Balancer {
    /// Picks one of `instances` (already filtered to healthy ones, ordered by id).
    pub fn choose<'a>(&self, service: &str, instances: &'a [Instance], strategy: Strategy) -> Option<&'a Instance> {
        if instances.is_empty() {
            return None;
        }
        let index = match strategy {
            Strategy::RoundRobin => {
                let mut cursors = self.cursors.lock().expect("balancer lock");
                let cursor = cursors.entry(service.to_string()).or_insert(0);
                let index = *cursor % instances.len();
                *cursor = cursor.wrapping_add(1);
                index
            }
            Strategy::Random => fastrand::usize(..instances.len()),
            Strategy::Weighted => {
                let total: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
                let mut point = fastrand::u64(..total.max(1));
                instances
                    .iter()
                    .position(|i| {
                        let w = u64::from(i.weight);
                        if point < w {
                            true
                        } else {
                            point -= w;
                            false
                        }
                    })
                    .unwrap_or(0)
            }
        };
        instances.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_protocol::registry::Health;

    fn inst(id: &str, weight: u32) -> Instance {
        Instance { weight, ..crate::registry::sample_instance(id, "web", Health::Passing) }
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::default();
        let all = [inst("a", 1), inst("b", 1), inst("c", 1)];
        let picks: Vec<_> = (0..6).map(|_| b.choose("web", &all, Strategy::RoundRobin).unwrap().id.clone()).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn weighted_follows_weights() {
        let b = Balancer::default();
        let all = [inst("light", 1), inst("heavy", 9)];
        let heavy = (0..10_000).filter(|_| b.choose("web", &all, Strategy::Weighted).unwrap().id == "heavy").count();
        assert!((8_500..9_500).contains(&heavy), "heavy chosen {heavy} of 10000");
    }

    #[test]
    fn empty_gives_none() {
        assert!(Balancer::default().choose("web", &[], Strategy::Random).is_none());
    }
}
