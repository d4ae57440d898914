//! Preemption: when a replica fits on no node, which lower-priority replicas to stop to make room
//! for it. Pure: nodes with what runs on them, the replica and the budget left in; a plan or
//! nothing out. The executor stops the victims, records them in the [`BudgetWindow`], and the
//! next placement finds the room.
//!
//! The rules:
//! - Only a node that could take the replica but for its room is considered: up, the pinned one
//!   (if pinned), every constraint met, and large enough once emptied.
//! - Victims run there with a priority strictly below the replica's; a `critical` replica and a
//!   replica of the replica's own service are never victims (a service does not evict itself).
//! - On a node, victims are taken lowest priority first (then the larger first, then by name),
//!   skipping those that free nothing in a dimension still short; then any victim the others make
//!   unnecessary is spared, the higher priority first. So a plan stops no more than it needs.
//! - Among nodes, the plan whose highest victim priority is lowest wins, then the one with the
//!   fewest victims, then the one that frees least beyond the need, then the node name.
//! - A plan that stops more replicas than the budget has left is not made: the budget (so many
//!   per sliding window) keeps a runaway priority source from emptying the cluster.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use orch_protocol::resources::Resources;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::placement::{Ask, NodeView, admits};

/// A replica running on a node, as preemption weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub replica: String,
    pub service: String,
    /// Its service's effective priority.
    pub priority: u8,
    /// Never stopped to make room.
    pub critical: bool,
    pub resources: Resources,
}

/// A node and the replicas running on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRunning {
    pub view: NodeView,
    pub running: Vec<Running>,
}

/// A replica to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Victim {
    pub replica: String,
    pub service: String,
    pub priority: u8,
}

/// Stop `victims` on `node` to make room for the replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Victim>,
    /// Who preempts whom, and why, for a person.
    pub reason: String,
}

/// The best plan to make room for `ask`, stopping at most `budget_left` replicas; none when no
/// node can be freed enough within the rules.
pub fn plan(nodes: &[NodeRunning], ask: &Ask, budget_left: u32) -> Option<Preemption> {
    if budget_left == 0 {
        return None;
    }
    let best =
        nodes.iter().filter_map(|node| plan_on(node, ask)).filter(|p| p.victims.len() <= budget_left as usize).min_by(
            |a, b| {
                a.highest_priority()
                    .cmp(&b.highest_priority())
                    .then_with(|| a.victims.len().cmp(&b.victims.len()))
                    .then_with(|| a.excess.total_cmp(&b.excess))
                    .then_with(|| a.node.view.name.cmp(&b.node.view.name))
            },
        )?;
    Some(best.into_preemption(ask))
}

/// A plan on one node.
struct NodePlan<'a> {
    node: &'a NodeRunning,
    /// In the order they were chosen: lowest priority first.
    victims: Vec<&'a Running>,
    /// What the victims free beyond what was missing, as shares of the node, summed over both
    /// dimensions (so nodes of different sizes compare).
    excess: f64,
}

impl NodePlan<'_> {
    fn highest_priority(&self) -> u8 {
        self.victims.iter().map(|v| v.priority).max().unwrap_or(0)
    }

    fn into_preemption(self, ask: &Ask) -> Preemption {
        let stopping: Vec<String> =
            self.victims.iter().map(|v| format!("{} (priority {})", v.replica, v.priority)).collect();
        let reason = format!(
            "{} (priority {}) needs {} on {} ({} free): stopping {}",
            ask.replica,
            ask.priority,
            ask.resources,
            self.node.view.name,
            self.node.view.free(),
            stopping.join(", ")
        );
        Preemption {
            node: self.node.view.name.clone(),
            victims: self
                .victims
                .iter()
                .map(|v| Victim { replica: v.replica.clone(), service: v.service.clone(), priority: v.priority })
                .collect(),
            reason,
        }
    }
}

/// `part` as a share of `whole` (nothing, of a dimension the node has none of).
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// The plan that makes room for `ask` on `node`, if the rules allow one.
fn plan_on<'a>(node: &'a NodeRunning, ask: &Ask) -> Option<NodePlan<'a>> {
    let view = &node.view;
    admits(view, ask).ok()?;
    let free = view.free();
    // A node with room needs no preemption (placement takes it); one too small even empty
    // cannot be helped.
    if free.fits(&ask.resources) || !view.allocatable.fits(&ask.resources) {
        return None;
    }
    let missing = ask.resources.saturating_sub(&free);

    let size =
        |r: &Running| share(r.resources.cpu, view.allocatable.cpu) + share(r.resources.memory, view.allocatable.memory);
    let mut eligible: Vec<&Running> =
        node.running.iter().filter(|r| r.priority < ask.priority && !r.critical && r.service != ask.service).collect();
    eligible.sort_by(|a, b| {
        a.priority.cmp(&b.priority).then_with(|| size(b).total_cmp(&size(a))).then_with(|| a.replica.cmp(&b.replica))
    });

    let mut short = missing;
    let mut victims = Vec::new();
    for running in eligible {
        if short.is_zero() {
            break;
        }
        let helps = (short.cpu > 0 && running.resources.cpu > 0) || (short.memory > 0 && running.resources.memory > 0);
        if helps {
            short = short.saturating_sub(&running.resources);
            victims.push(running);
        }
    }
    if !short.is_zero() {
        return None;
    }
    // A later, larger victim can make an earlier one unnecessary: spare it, the higher priority
    // first (the last one chosen was needed, or the choosing would have stopped before it).
    for at in (0..victims.len()).rev() {
        let without: Resources =
            victims.iter().enumerate().filter(|(other, _)| *other != at).map(|(_, v)| v.resources).sum();
        if without.fits(&missing) {
            victims.remove(at);
        }
    }
    let freed: Resources = victims.iter().map(|v| v.resources).sum();
    let beyond = freed.saturating_sub(&missing);
    let excess = share(beyond.cpu, view.allocatable.cpu) + share(beyond.memory, view.allocatable.memory);
    Some(NodePlan { node, victims, excess })
}

/// At most `max` replicas stopped to make room in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreemptionBudget {
    pub max: u32,
    pub window: Duration,
}

/// The replicas preempted lately, against a [`PreemptionBudget`]: a sliding window. Keeps at most
/// `max` times, since older ones can no longer change the answer.
#[derive(Debug, Clone)]
pub struct BudgetWindow {
    budget: PreemptionBudget,
    /// When each recent victim was stopped, oldest first.
    stopped: VecDeque<Instant>,
}

impl BudgetWindow {
    pub fn new(budget: PreemptionBudget) -> BudgetWindow {
        BudgetWindow { budget, stopped: VecDeque::new() }
    }

    pub fn budget(&self) -> PreemptionBudget {
        self.budget
    }

    /// How many replicas may still be stopped at `now`.
    pub fn left(&self, now: Instant) -> u32 {
        let recent = self.stopped.iter().filter(|at| self.within(**at, now)).count() as u32;
        self.budget.max.saturating_sub(recent)
    }

    /// Records `victims` replicas stopped at `now`.
    pub fn record(&mut self, now: Instant, victims: u32) {
        for _ in 0..victims.min(self.budget.max) {
            self.stopped.push_back(now);
        }
        while self.stopped.front().is_some_and(|at| !self.within(*at, now)) {
            self.stopped.pop_front();
        }
        // Once `max` stops fall in one window the budget is spent whatever came before them.
        while self.stopped.len() > self.budget.max as usize {
            self.stopped.pop_front();
        }
    }

    /// Whether a stop at `at` still counts at `now` (one recorded later than `now` does).
    fn within(&self, at: Instant, now: Instant) -> bool {
        now.checked_duration_since(at).is_none_or(|age| age < self.budget.window)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resources::constraint::Constraint;
    use crate::resources::placement::Strategy;

    fn running(replica: &str, priority: u8, cpu: u64, memory: u64) -> Running {
        let service = replica.rsplit_once('-').map_or(replica, |(s, _)| s).to_string();
        Running { replica: replica.into(), service, priority, critical: false, resources: Resources::new(cpu, memory) }
    }

    /// A node of 1000 millicores and 1000 MiB with `running` on it (their sum allocated).
    fn node(name: &str, running: Vec<Running>) -> NodeRunning {
        let allocated = running.iter().map(|r| r.resources).sum();
        NodeRunning {
            view: NodeView {
                name: name.into(),
                allocatable: Resources::new(1000, 1000),
                allocated,
                labels: BTreeMap::from([("zone".into(), "a".into())]),
                up: true,
                replicas: BTreeMap::new(),
            },
            running,
        }
    }

    fn ask(replica: &str, priority: u8, cpu: u64, memory: u64) -> Ask {
        let service = replica.rsplit_once('-').map_or(replica, |(s, _)| s).to_string();
        Ask {
            replica: replica.into(),
            service,
            resources: Resources::new(cpu, memory),
            constraints: vec![],
            pin: None,
            strategy: Strategy::BinPack,
            priority,
        }
    }

    fn victims(p: &Preemption) -> Vec<&str> {
        p.victims.iter().map(|v| v.replica.as_str()).collect()
    }

    #[test]
    fn stops_the_lowest_priority_and_says_why() {
        let nodes = [node("node-3", vec![running("batch-0", 10, 500, 300), running("web-0", 40, 500, 300)])];
        let p = plan(&nodes, &ask("api-2", 80, 500, 256), 10).expect("a plan");
        assert_eq!(p.node, "node-3");
        assert_eq!(victims(&p), ["batch-0"]);
        assert_eq!(p.victims[0], Victim { replica: "batch-0".into(), service: "batch".into(), priority: 10 });
        assert_eq!(
            p.reason,
            "api-2 (priority 80) needs 500 millicores, 256 MiB on node-3 (0 millicores, 400 MiB free): stopping \
             batch-0 (priority 10)"
        );
    }

    #[test]
    fn only_strictly_lower_priority_never_critical_never_its_own_service() {
        let mut critical = running("db-0", 10, 1000, 100);
        critical.critical = true;
        let full = |r: Running| [node("n", vec![r])];
        assert!(plan(&full(running("batch-0", 80, 1000, 100)), &ask("api-2", 80, 500, 100), 10).is_none(), "equal");
        assert!(plan(&full(critical), &ask("api-2", 80, 500, 100), 10).is_none(), "critical");
        assert!(plan(&full(running("api-0", 10, 1000, 100)), &ask("api-2", 80, 500, 100), 10).is_none(), "own service");
        assert!(plan(&full(running("batch-0", 79, 1000, 100)), &ask("api-2", 80, 500, 100), 10).is_some());
    }

    #[test]
    fn takes_only_as_many_as_needed_lowest_first_larger_first() {
        let on = node(
            "n",
            vec![
                running("a-0", 10, 200, 100),
                running("b-0", 10, 400, 100),
                running("c-0", 20, 400, 100),
                running("d-0", 5, 0, 500), // frees only memory: no help for CPU
            ],
        );
        // 0 cpu free; needs 600: b-0 (larger of the priority-10 two) then a-0.
        let p = plan(std::slice::from_ref(&on), &ask("api-0", 50, 600, 0), 10).unwrap();
        assert_eq!(victims(&p), ["b-0", "a-0"]);
        // needs 400: b-0 alone.
        let p = plan(std::slice::from_ref(&on), &ask("api-0", 50, 400, 0), 10).unwrap();
        assert_eq!(victims(&p), ["b-0"]);
        // needs 800: b-0, a-0, c-0 in order; c-0 (400) makes a-0 unnecessary, so a-0 is spared.
        let p = plan(std::slice::from_ref(&on), &ask("api-0", 50, 800, 0), 10).unwrap();
        assert_eq!(victims(&p), ["b-0", "c-0"]);
    }

    #[test]
    fn ties_on_priority_and_size_go_by_name() {
        let on = node("n", vec![running("y-0", 10, 500, 100), running("x-0", 10, 500, 100)]);
        let p = plan(&[on], &ask("api-0", 50, 500, 0), 10).unwrap();
        assert_eq!(victims(&p), ["x-0"]);
    }

    #[test]
    fn chooses_the_node_by_highest_victim_then_count_then_excess_then_name() {
        // node-a would stop a priority-30 replica; node-b two priority-10 ones: lower highest wins.
        let nodes = [
            node("node-a", vec![running("x-0", 30, 1000, 100)]),
            node("node-b", vec![running("y-0", 10, 500, 100), running("z-0", 10, 500, 100)]),
        ];
        assert_eq!(plan(&nodes, &ask("api-0", 50, 1000, 0), 10).unwrap().node, "node-b");
        // Same highest priority: fewer victims wins.
        let nodes = [
            node("node-a", vec![running("x-0", 10, 1000, 100)]),
            node("node-b", vec![running("y-0", 10, 500, 100), running("z-0", 10, 500, 100)]),
        ];
        assert_eq!(plan(&nodes, &ask("api-0", 50, 1000, 0), 10).unwrap().node, "node-a");
        // Same count: the one freeing less beyond the need wins.
        let nodes = [
            node("node-a", vec![running("x-0", 10, 1000, 100)]),
            node("node-b", vec![running("y-0", 10, 500, 100), running("z-0", 30, 500, 100)]),
        ];
        assert_eq!(plan(&nodes, &ask("api-0", 50, 500, 0), 10).unwrap().node, "node-b");
        // Everything equal: the name.
        let nodes =
            [node("node-b", vec![running("y-0", 10, 1000, 100)]), node("node-a", vec![running("x-0", 10, 1000, 100)])];
        assert_eq!(plan(&nodes, &ask("api-0", 50, 1000, 0), 10).unwrap().node, "node-a");
    }

    #[test]
    fn only_nodes_the_replica_may_use() {
        let mut down = node("node-a", vec![running("x-0", 10, 1000, 100)]);
        down.view.up = false;
        let mut elsewhere = node("node-b", vec![running("y-0", 10, 1000, 100)]);
        elsewhere.view.labels.insert("zone".into(), "b".into());
        let pinned_away = node("node-c", vec![running("z-0", 10, 1000, 100)]);
        let target = node("node-d", vec![running("w-0", 40, 1000, 100)]);
        let nodes = [down, elsewhere, pinned_away, target];
        let mut a = ask("api-0", 50, 500, 0);
        a.constraints = vec![Constraint::parse("zone == a").unwrap()];
        a.pin = Some("node-d".into());
        let p = plan(&nodes, &a, 10).unwrap();
        assert_eq!((p.node.as_str(), victims(&p)), ("node-d", vec!["w-0"]));
        a.pin = None;
        assert_eq!(plan(&nodes, &a, 10).unwrap().node, "node-c", "node-a is down, node-b in zone b");
    }

    #[test]
    fn none_when_room_exists_or_cannot_be_made() {
        // Room already: placement's business.
        assert!(plan(&[node("n", vec![running("x-0", 10, 400, 100)])], &ask("api-0", 50, 500, 0), 10).is_none());
        // Larger than the node.
        assert!(plan(&[node("n", vec![running("x-0", 10, 1000, 100)])], &ask("api-0", 50, 1500, 0), 10).is_none());
        // Not enough lower-priority room.
        let on = node("n", vec![running("x-0", 10, 300, 100), running("y-0", 90, 700, 100)]);
        assert!(plan(&[on], &ask("api-0", 50, 500, 0), 10).is_none());
    }

    #[test]
    fn the_budget_caps_victims() {
        let nodes = [node("n", vec![running("x-0", 10, 500, 100), running("y-0", 10, 500, 100)])];
        assert_eq!(victims(&plan(&nodes, &ask("api-0", 50, 1000, 0), 2).unwrap()), ["x-0", "y-0"]);
        assert!(plan(&nodes, &ask("api-0", 50, 1000, 0), 1).is_none());
        assert!(plan(&nodes, &ask("api-0", 50, 500, 0), 0).is_none());
        // A node over budget is passed for one within it, even if it would rank first.
        let nodes = [
            node("node-a", vec![running("x-0", 10, 500, 100), running("y-0", 10, 500, 100)]),
            node("node-b", vec![running("z-0", 40, 1000, 100)]),
        ];
        assert_eq!(plan(&nodes, &ask("api-0", 50, 1000, 0), 2).unwrap().node, "node-a");
        assert_eq!(plan(&nodes, &ask("api-0", 50, 1000, 0), 1).unwrap().node, "node-b");
    }

    #[test]
    fn the_budget_window_slides() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut window = BudgetWindow::new(PreemptionBudget { max: 3, window: s(60) });
        assert_eq!(window.left(t0), 3);
        window.record(t0, 2);
        assert_eq!(window.left(t0), 1);
        window.record(t0 + s(30), 1);
        assert_eq!(window.left(t0 + s(30)), 0);
        assert_eq!(window.left(t0 + s(59)), 0);
        assert_eq!(window.left(t0 + s(60)), 2, "the two at t0 have left the window");
        assert_eq!(window.left(t0 + s(90)), 3);
    }

    #[test]
    fn the_budget_window_stays_bounded() {
        let t0 = Instant::now();
        let mut window = BudgetWindow::new(PreemptionBudget { max: 5, window: Duration::from_secs(60) });
        for i in 0..10_000 {
            window.record(t0 + Duration::from_millis(i), 7);
        }
        assert!(window.stopped.len() <= 5);
        assert_eq!(window.left(t0 + Duration::from_secs(10)), 0);
        assert_eq!(window.left(t0 + Duration::from_secs(71)), 5);
    }
}
