//! Placement: which node each replica runs on, and why. Pure and deterministic: nodes and asks in,
//! one [`Placement`] per ask out, whatever order the nodes came in.
//!
//! The rules:
//! - Asks are placed highest priority first, then by replica name; each placement takes its room on
//!   the node before the next ask is decided, so later asks see earlier ones.
//! - A node is feasible for an ask when it is the pinned node (if the ask is pinned), up, satisfies
//!   every constraint and has the room in both CPU and memory. Nothing is ever over-allocated.
//! - [`Strategy::BinPack`] takes the feasible node with the least room left after placing,
//!   measured in the tighter dimension as a share of the node's allocatable; [`Strategy::Spread`]
//!   takes the one with the fewest replicas of the same service, then the most room left.
//!   Remaining ties go to the node whose name sorts first.
//! - Each placement carries an [`Explanation`]: counts of the nodes passed over by reason (down,
//!   not the pinned node, each constraint, each dimension out of room), the chosen node's score and
//!   up to three runners-up. Its size does not grow with the number of nodes.
//!
//! Cost: each ask looks at every node (the pinned one only, when pinned), and a look is a few
//! comparisons and label look-ups with nothing allocated, so 10,000 asks on 1,000 nodes are ten
//! million cheap checks (`benches/placement.rs`: about 100,000 placements a second on one core, a
//! decision in 5-20 µs). No index of nodes is kept: it would have to be updated at each placement,
//! and the scan is ten times faster than needed without one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use orch_protocol::resources::Resources;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::constraint::Constraint;

/// How to choose among the nodes that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Replicas of a service on as many nodes as possible, then on the node with the most room:
    /// losing a node loses few of them.
    #[default]
    Spread,
    /// Fill nodes one after the other (the fullest node that still fits): whole nodes stay free
    /// for large asks, and idle nodes can be let go.
    BinPack,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::BinPack => "binpack",
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// What may be placed on it (capacity less the reservation).
    pub allocatable: Resources,
    /// What its replicas already asked for.
    pub allocated: Resources,
    pub labels: BTreeMap<String, String>,
    /// Whether its agent reports: a node down takes nothing.
    pub up: bool,
    /// Replicas already on it, by service (what spread counts).
    pub replicas: BTreeMap<String, u32>,
}

impl NodeView {
    /// What is left to place: allocatable less allocated (none, on an over-allocated node).
    pub fn free(&self) -> Resources {
        self.allocatable.saturating_sub(&self.allocated)
    }
}

/// A replica to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The replica's name, e.g. `api-1`.
    pub replica: String,
    /// Its service, e.g. `api`.
    pub service: String,
    pub resources: Resources,
    /// Every one must hold on the node.
    pub constraints: Vec<Constraint>,
    /// The only node it may run on.
    pub pin: Option<String>,
    pub strategy: Strategy,
    /// 0-100, its service's effective priority: higher is placed first.
    pub priority: u8,
}

/// Where one replica goes, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    pub replica: String,
    pub service: String,
    /// None: no node fits; the replica is pending.
    pub node: Option<String>,
    pub explanation: Explanation,
}

/// Why a node was chosen and the others were not: counts by reason, not a line per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    pub strategy: Strategy,
    /// What the replica asks for.
    pub needs: Resources,
    /// Every node known. Each is counted once below, under the first reason it was passed over
    /// (pin, down, constraints in order, room), or as feasible.
    pub nodes_evaluated: u32,
    /// The node the replica is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Nodes passed over because the replica is pinned to another.
    pub not_pinned: u32,
    pub nodes_down: u32,
    /// Nodes that failed a constraint, under the first one they failed (constraints that failed
    /// none are left out).
    pub filtered: Vec<ConstraintFiltered>,
    /// Nodes that passed every filter but lack the room.
    pub exhausted: Exhausted,
    /// Nodes that could take the replica.
    pub feasible: u32,
    /// How near the nearest misses came: the most CPU free on one node among those out of CPU,
    /// and the most memory free on one node among those out of memory (present when some node
    /// was out of room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_free: Option<Resources>,
    /// The node chosen and its score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<NodeScore>,
    /// The next best feasible nodes, best first (at most three).
    pub runners_up: Vec<NodeScore>,
}

/// Nodes that failed one constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConstraintFiltered {
    /// The constraint, in its canonical form (`zone == a`).
    pub constraint: String,
    pub nodes: u32,
}

/// Nodes without the room for a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exhausted {
    pub nodes: u32,
    /// Of them, those short of CPU.
    pub cpu: u32,
    /// Of them, those short of memory (a node short of both counts in both).
    pub memory: u32,
}

/// How a feasible node ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeScore {
    pub node: String,
    /// Share of its allocatable CPU left after placing, 0-1 (1 on a node that has no CPU to give:
    /// a dimension a node has none of does not count).
    pub cpu_left: f64,
    /// Share of its allocatable memory left after placing, 0-1.
    pub memory_left: f64,
    /// The share left in the tighter dimension: binpack takes the lowest; spread the highest among
    /// the nodes with the fewest replicas of the service.
    pub score: f64,
    /// Replicas of the same service already on the node (what spread ranks on first).
    pub same_service: u32,
}

/// Why a node cannot take an ask, before its room is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotPinned,
    Down,
    /// The index of the first constraint the node fails.
    Constraint(usize),
}

/// Whether `node` may take `ask` room permitting: the pin, the node's state, the constraints.
pub(crate) fn admits(node: &NodeView, ask: &Ask) -> Result<(), Refusal> {
    if ask.pin.as_ref().is_some_and(|pin| *pin != node.name) {
        return Err(Refusal::NotPinned);
    }
    if !node.up {
        return Err(Refusal::Down);
    }
    match ask.constraints.iter().position(|c| !c.matches(&node.labels)) {
        Some(failed) => Err(Refusal::Constraint(failed)),
        None => Ok(()),
    }
}

/// Places `asks` on `nodes`: highest priority first, then by replica name, each seeing the
/// placements before it. The placements come back in that order.
pub fn place(nodes: &[NodeView], asks: &[Ask]) -> Vec<Placement> {
    let mut placer = Placer::new(nodes);
    placement_order(asks).into_iter().map(|ask| placer.place(ask)).collect()
}

/// `asks` in the order [`place`] decides them.
pub fn placement_order(asks: &[Ask]) -> Vec<&Ask> {
    let mut order: Vec<&Ask> = asks.iter().collect();
    order.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then_with(|| a.replica.cmp(&b.replica)).then_with(|| a.service.cmp(&b.service))
    });
    order
}

/// The nodes and what has been placed on them so far: [`place`] one ask at a time, for a caller
/// that decides asks as they come (or times each decision).
pub struct Placer<'a> {
    /// Sorted by name: visiting nodes in name order and keeping a node only when another is
    /// strictly better breaks ties by name, and makes the outcome independent of the input order.
    nodes: Vec<&'a NodeView>,
    /// Each node's room left, as placements take it.
    free: Vec<Resources>,
    counts: ServiceCounts,
}

impl<'a> Placer<'a> {
    pub fn new(nodes: &'a [NodeView]) -> Placer<'a> {
        let mut sorted: Vec<&NodeView> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let free = sorted.iter().map(|n| n.free()).collect();
        let counts = ServiceCounts::new(&sorted);
        Placer { nodes: sorted, free, counts }
    }

    /// Decides where `ask` goes and, when it goes somewhere, takes its room there.
    pub fn place(&mut self, ask: &Ask) -> Placement {
        let Placer { nodes, free, counts } = self;
        let same_service = counts.load(&ask.service);
        let mut tally = Tally::new(ask);

        // A pinned ask has one node to look at.
        let range = match &ask.pin {
            None => 0..nodes.len(),
            Some(pin) => match nodes.binary_search_by(|n| n.name.as_str().cmp(pin)) {
                Ok(at) => at..at + 1,
                Err(_) => 0..0,
            },
        };
        tally.not_pinned = (nodes.len() - range.len()) as u32;

        for at in range {
            let node = nodes[at];
            match admits(node, ask) {
                Err(Refusal::NotPinned) => tally.not_pinned += 1,
                Err(Refusal::Down) => tally.down += 1,
                Err(Refusal::Constraint(failed)) => tally.filtered[failed] += 1,
                Ok(()) => {
                    let room = free[at];
                    let short_cpu = room.cpu < ask.resources.cpu;
                    let short_memory = room.memory < ask.resources.memory;
                    if short_cpu || short_memory {
                        tally.exhausted.nodes += 1;
                        if short_cpu {
                            tally.exhausted.cpu += 1;
                            tally.nearest_miss.cpu = tally.nearest_miss.cpu.max(room.cpu);
                        }
                        if short_memory {
                            tally.exhausted.memory += 1;
                            tally.nearest_miss.memory = tally.nearest_miss.memory.max(room.memory);
                        }
                        continue;
                    }
                    tally.feasible += 1;
                    let left = room.saturating_sub(&ask.resources);
                    let cpu_left = share(left.cpu, node.allocatable.cpu);
                    let memory_left = share(left.memory, node.allocatable.memory);
                    tally.consider(Candidate {
                        node: at,
                        same_service: same_service[at],
                        cpu_left,
                        memory_left,
                        tighter: cpu_left.min(memory_left),
                    });
                }
            }
        }

        let chosen = tally.best.first().map(|c| c.node);
        if let Some(at) = chosen {
            free[at] = free[at].saturating_sub(&ask.resources);
            counts.add(&ask.service, at);
        }
        Placement {
            replica: ask.replica.clone(),
            service: ask.service.clone(),
            node: chosen.map(|at| nodes[at].name.clone()),
            explanation: tally.explanation(ask, nodes),
        }
    }
}

/// `part / whole` as a share; a dimension the node has none of never counts as the tighter.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
}

/// How many runners-up an explanation names.
const RUNNERS_UP: usize = 3;

#[derive(Debug, Clone, Copy)]
struct Candidate {
    node: usize,
    same_service: u32,
    cpu_left: f64,
    memory_left: f64,
    tighter: f64,
}

impl Candidate {
    /// Whether `self` ranks strictly before `other` under `strategy`.
    fn beats(&self, other: &Candidate, strategy: Strategy) -> bool {
        match strategy {
            Strategy::BinPack => self.tighter < other.tighter,
            Strategy::Spread => {
                self.same_service < other.same_service
                    || (self.same_service == other.same_service && self.tighter > other.tighter)
            }
        }
    }
}

/// What one ask's scan counts.
struct Tally {
    strategy: Strategy,
    not_pinned: u32,
    down: u32,
    /// Per constraint of the ask, by index.
    filtered: Vec<u32>,
    exhausted: Exhausted,
    feasible: u32,
    nearest_miss: Resources,
    /// The best candidates so far, best first: the chosen node and the runners-up.
    best: Vec<Candidate>,
}

impl Tally {
    fn new(ask: &Ask) -> Tally {
        Tally {
            strategy: ask.strategy,
            not_pinned: 0,
            down: 0,
            filtered: vec![0; ask.constraints.len()],
            exhausted: Exhausted::default(),
            feasible: 0,
            nearest_miss: Resources::ZERO,
            best: Vec::with_capacity(RUNNERS_UP + 2),
        }
    }

    /// Keeps `candidate` if it ranks among the best so far. Nodes come in name order, so a
    /// candidate goes after those it only ties with.
    fn consider(&mut self, candidate: Candidate) {
        let at = self.best.iter().position(|kept| candidate.beats(kept, self.strategy)).unwrap_or(self.best.len());
        if at <= RUNNERS_UP {
            self.best.insert(at, candidate);
            self.best.truncate(RUNNERS_UP + 1);
        }
    }

    fn explanation(self, ask: &Ask, nodes: &[&NodeView]) -> Explanation {
        let score = |c: &Candidate| NodeScore {
            node: nodes[c.node].name.clone(),
            cpu_left: c.cpu_left,
            memory_left: c.memory_left,
            score: c.tighter,
            same_service: c.same_service,
        };
        Explanation {
            strategy: ask.strategy,
            needs: ask.resources,
            nodes_evaluated: nodes.len() as u32,
            pin: ask.pin.clone(),
            not_pinned: self.not_pinned,
            nodes_down: self.down,
            filtered: ask
                .constraints
                .iter()
                .zip(&self.filtered)
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| ConstraintFiltered { constraint: c.to_string(), nodes: *n })
                .collect(),
            exhausted: self.exhausted,
            feasible: self.feasible,
            most_free: (self.exhausted.nodes > 0).then_some(self.nearest_miss),
            chosen: self.best.first().map(score),
            runners_up: self.best.iter().skip(1).map(score).collect(),
        }
    }
}

/// Replicas of each service per node, for spread. Kept sparse (the nodes that hold one), with a
/// dense copy for the service at hand: a scan reads a count by index, and switching service costs
/// the replicas of the two services, not the number of nodes.
struct ServiceCounts {
    sparse: HashMap<String, Vec<(usize, u32)>>,
    loaded: Option<String>,
    dense: Vec<u32>,
}

impl ServiceCounts {
    fn new(nodes: &[&NodeView]) -> ServiceCounts {
        let mut sparse: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        for (at, node) in nodes.iter().enumerate() {
            for (service, n) in node.replicas.iter().filter(|(_, n)| **n > 0) {
                sparse.entry(service.clone()).or_default().push((at, *n));
            }
        }
        ServiceCounts { sparse, loaded: None, dense: vec![0; nodes.len()] }
    }

    /// The count of `service` on each node, by node index.
    fn load(&mut self, service: &str) -> &[u32] {
        if self.loaded.as_deref() != Some(service) {
            if let Some(previous) = self.loaded.take() {
                for &(at, _) in self.sparse.get(&previous).into_iter().flatten() {
                    self.dense[at] = 0;
                }
            }
            for &(at, n) in self.sparse.get(service).into_iter().flatten() {
                self.dense[at] = n;
            }
            self.loaded = Some(service.to_string());
        }
        &self.dense
    }

    fn add(&mut self, service: &str, node: usize) {
        let entries = match self.sparse.get_mut(service) {
            Some(entries) => entries,
            None => self.sparse.entry(service.to_string()).or_default(),
        };
        match entries.iter_mut().find(|(at, _)| *at == node) {
            Some((_, n)) => *n += 1,
            None => entries.push((node, 1)),
        }
        if self.loaded.as_deref() == Some(service) {
            self.dense[node] += 1;
        }
    }
}

/// A share as a whole percentage, rounded (floating error must not turn 29% into 28%).
fn percent(share: f64) -> u64 {
    (share * 100.0).round() as u64
}

fn node_count(n: u32) -> String {
    if n == 1 { "1 node".to_string() } else { format!("{n} nodes") }
}

impl Explanation {
    /// One sentence for a person: where it went and why, or why it is pending.
    pub fn summary(&self) -> String {
        self.to_string()
    }

    /// The reasons nodes were passed over, each with its count; `detail` adds how far the largest
    /// hole is from the ask (for a pending replica).
    fn reasons(&self, detail: bool) -> Vec<String> {
        let mut reasons = Vec::new();
        // Once placed, the pin was met: the nodes it ruled out are no news.
        if let Some(pin) = &self.pin
            && self.chosen.is_none()
            && self.not_pinned > 0
        {
            if self.not_pinned == self.nodes_evaluated {
                reasons.push(format!("no node named {pin} (pinned)"));
            } else {
                reasons.push(format!("{} not the pinned node {pin}", node_count(self.not_pinned)));
            }
        }
        if self.nodes_down > 0 {
            reasons.push(format!("{} down", node_count(self.nodes_down)));
        }
        for f in &self.filtered {
            reasons.push(format!("{} failed `{}`", f.nodes, f.constraint));
        }
        let most_free = self.most_free.unwrap_or_default();
        if self.exhausted.cpu > 0 {
            let mut reason = format!("{} out of cpu", self.exhausted.cpu);
            if detail {
                reason += &format!(" (needs {} millicores; most free on one node {})", self.needs.cpu, most_free.cpu);
            }
            reasons.push(reason);
        }
        if self.exhausted.memory > 0 {
            let mut reason = format!("{} out of memory", self.exhausted.memory);
            if detail {
                reason += &format!(" (needs {} MiB; most free on one node {})", self.needs.memory, most_free.memory);
            }
            reasons.push(reason);
        }
        reasons
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(chosen) = &self.chosen else {
            if self.nodes_evaluated == 0 {
                return write!(f, "pending: no nodes known");
            }
            return write!(f, "pending: no node fits: {}", self.reasons(true).join(", "));
        };
        let pinned = if self.pin.is_some() { "pinned; " } else { "" };
        let room = format!("{}% cpu / {}% memory left", percent(chosen.cpu_left), percent(chosen.memory_left));
        match self.strategy {
            Strategy::BinPack => write!(f, "placed on {} ({pinned}binpack: {room})", chosen.node)?,
            Strategy::Spread => {
                let others = match chosen.same_service {
                    0 => "no other replica of the service there".to_string(),
                    1 => "1 other replica of the service there".to_string(),
                    n => format!("{n} other replicas of the service there"),
                };
                write!(f, "placed on {} ({pinned}spread: {others}; {room})", chosen.node)?
            }
        }
        let reasons = self.reasons(false);
        if !reasons.is_empty() {
            write!(f, "; {}", reasons.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
