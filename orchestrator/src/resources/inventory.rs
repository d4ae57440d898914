//! The node inventory, free of I/O: the last report of every node's agent, whether the node is
//! heard from, and the changes to announce. The tracker (`super::tracker`) feeds it reports and
//! ticks, stores what changed and publishes the events.
//!
//! A node is `ready` while its agent reports within `down_after`, and `down` once it has been
//! silent longer. A replica that takes over starts every stored node's silence from the moment it
//! took over (as leases get a grace period), so a failover marks no node down by itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orch_protocol::events::EventKind;
use orch_protocol::resources::{NodeEventData, NodeInfo, NodeReport, NodeStatus};

/// When something is handled: monotonic time for silences, wall-clock time for what is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

impl At {
    pub fn now() -> At {
        At { instant: Instant::now(), wall: Utc::now() }
    }
}

/// A node as stored: enough to show it and to resume watching it after a failover.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNode {
    pub report: NodeReport,
    pub status: NodeStatus,
    pub since: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A change to store, and to announce when it carries an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub node: StoredNode,
    /// `node_joined`, `node_down` or `node_up`; `None` when only what the node reports changed
    /// (its labels, capacity or agent), which is stored without an event.
    pub event: Option<(EventKind, NodeEventData)>,
}

#[derive(Debug, Clone)]
struct Node {
    report: NodeReport,
    status: NodeStatus,
    since: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    heard: Instant,
}

impl Node {
    fn stored(&self) -> StoredNode {
        StoredNode { report: self.report.clone(), status: self.status, since: self.since, last_seen: self.last_seen }
    }

    fn event(&self, kind: EventKind, reason: String) -> Option<(EventKind, NodeEventData)> {
        let data = NodeEventData {
            node: self.report.node.clone(),
            status: self.status,
            reason,
            last_seen: self.last_seen,
            capacity: self.report.capacity,
            labels: self.report.labels.clone(),
            services: self.report.allocations.iter().map(|a| a.service.clone()).collect(),
        };
        Some((kind, data))
    }
}

/// Whether two reports of one node differ in what is stored (not in what changes at every beat:
/// measured use, allocations, the report's time).
fn described_differently(a: &NodeReport, b: &NodeReport) -> bool {
    a.capacity != b.capacity
        || a.reserved != b.reserved
        || a.labels != b.labels
        || a.enforcement != b.enforcement
        || a.agent_version != b.agent_version
        || a.agent_started != b.agent_started
}

/// Every node heard of, by name.
#[derive(Debug, Clone)]
pub struct Inventory {
    nodes: BTreeMap<String, Node>,
    down_after: Duration,
}

impl Inventory {
    pub fn new(down_after: Duration) -> Inventory {
        Inventory { nodes: BTreeMap::new(), down_after }
    }

    /// Takes over the stored nodes at `at`: each one's silence is counted from now.
    pub fn resume(&mut self, stored: Vec<StoredNode>, at: At) {
        for s in stored {
            let node =
                Node { report: s.report, status: s.status, since: s.since, last_seen: s.last_seen, heard: at.instant };
            self.nodes.insert(node.report.node.clone(), node);
        }
    }

    /// A report from a node's agent. Returns what to store (and announce), if anything changed.
    pub fn observe(&mut self, report: NodeReport, at: At) -> Option<Change> {
        let name = report.node.clone();
        match self.nodes.get_mut(&name) {
            None => {
                let node =
                    Node { report, status: NodeStatus::Ready, since: at.wall, last_seen: at.wall, heard: at.instant };
                let event = node.event(EventKind::NodeJoined, "first report".into());
                let change = Change { node: node.stored(), event };
                self.nodes.insert(name, node);
                Some(change)
            }
            Some(node) => {
                let redescribed = described_differently(&node.report, &report);
                node.report = report;
                node.last_seen = at.wall;
                node.heard = at.instant;
                if node.status == NodeStatus::Down {
                    node.status = NodeStatus::Ready;
                    node.since = at.wall;
                    let event = node.event(EventKind::NodeUp, "reported again".into());
                    return Some(Change { node: node.stored(), event });
                }
                redescribed.then(|| Change { node: node.stored(), event: None })
            }
        }
    }

    /// Counts no silence up to `at`: while the orchestrator itself cannot hear the agents (its
    /// NATS connection is down), their silence says nothing about the nodes.
    pub fn excuse_silence(&mut self, at: At) {
        for node in self.nodes.values_mut() {
            node.heard = at.instant;
        }
    }

    /// Marks down every ready node silent for longer than the node-down time.
    pub fn sweep(&mut self, at: At) -> Vec<Change> {
        let down_after = self.down_after;
        self.nodes
            .values_mut()
            .filter(|n| n.status == NodeStatus::Ready && at.instant.duration_since(n.heard) > down_after)
            .map(|node| {
                let silent = at.instant.duration_since(node.heard);
                node.status = NodeStatus::Down;
                node.since = at.wall;
                let reason = format!(
                    "silent for {:.1}s (node-down time {})",
                    silent.as_secs_f64(),
                    humantime::format_duration(down_after)
                );
                let event = node.event(EventKind::NodeDown, reason);
                Change { node: node.stored(), event }
            })
            .collect()
    }

    /// Every node, by name.
    pub fn list(&self) -> Vec<NodeInfo> {
        self.nodes.values().map(|n| NodeInfo::new(&n.report, n.status, n.since, n.last_seen)).collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_protocol::resources::{Enforcement, Resources};

    fn report(node: &str, zone: &str) -> NodeReport {
        NodeReport {
            node: node.into(),
            capacity: Resources::new(2000, 4096),
            reserved: Resources::new(100, 256),
            labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            enforcement: Enforcement::CgroupV1,
            allocations: Vec::new(),
            cpu_used: 0.1,
            memory_used: 0.2,
            agent_version: "0.1.0".into(),
            agent_started: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn at(start: Instant, secs: u64) -> At {
        At {
            instant: start + Duration::from_secs(secs),
            wall: DateTime::from_timestamp(1_700_000_000 + secs as i64, 0).unwrap(),
        }
    }

    fn kind(change: &Change) -> Option<EventKind> {
        change.event.as_ref().map(|(k, _)| *k)
    }

    #[test]
    fn a_node_joins_goes_down_when_silent_and_comes_back() {
        let t = Instant::now();
        let mut inv = Inventory::new(Duration::from_secs(10));
        let joined = inv.observe(report("n1", "a"), at(t, 0)).unwrap();
        assert_eq!(kind(&joined), Some(EventKind::NodeJoined));
        assert_eq!(inv.observe(report("n1", "a"), at(t, 5)), None, "a beat that changes nothing stores nothing");
        assert!(inv.sweep(at(t, 15)).is_empty(), "silent 10s is not yet longer than 10s");
        let down = inv.sweep(at(t, 16));
        assert_eq!(down.len(), 1);
        assert_eq!(kind(&down[0]), Some(EventKind::NodeDown));
        let (_, data) = down[0].event.as_ref().unwrap();
        assert!(data.reason.contains("silent for 11.0s"), "{}", data.reason);
        assert!(inv.sweep(at(t, 30)).is_empty(), "down once");
        assert_eq!(inv.list()[0].status, NodeStatus::Down);
        let up = inv.observe(report("n1", "a"), at(t, 31)).unwrap();
        assert_eq!(kind(&up), Some(EventKind::NodeUp));
        assert_eq!(inv.list()[0].status, NodeStatus::Ready);
        assert_eq!(inv.list()[0].since, at(t, 31).wall);
    }

    #[test]
    fn new_labels_are_stored_without_an_event() {
        let t = Instant::now();
        let mut inv = Inventory::new(Duration::from_secs(10));
        inv.observe(report("n1", "a"), at(t, 0));
        let relabelled = inv.observe(report("n1", "b"), at(t, 1)).unwrap();
        assert_eq!(kind(&relabelled), None);
        assert_eq!(relabelled.node.report.labels["zone"], "b");
    }

    #[test]
    fn a_takeover_gives_every_stored_node_a_fresh_silence() {
        let t = Instant::now();
        let stored = StoredNode {
            report: report("n1", "a"),
            status: NodeStatus::Ready,
            since: at(t, 0).wall,
            last_seen: at(t, 0).wall,
        };
        let mut inv = Inventory::new(Duration::from_secs(10));
        inv.resume(vec![stored], at(t, 100));
        assert!(inv.sweep(at(t, 105)).is_empty(), "silence counts from the takeover, not the last report");
        assert_eq!(inv.sweep(at(t, 111)).len(), 1);
    }

    #[test]
    fn silence_while_the_orchestrator_could_not_hear_is_excused() {
        let t = Instant::now();
        let mut inv = Inventory::new(Duration::from_secs(10));
        inv.observe(report("n1", "a"), at(t, 0));
        inv.excuse_silence(at(t, 30));
        assert!(inv.sweep(at(t, 35)).is_empty());
        assert_eq!(inv.sweep(at(t, 41)).len(), 1);
    }

    #[test]
    fn the_view_shows_what_is_free() {
        let t = Instant::now();
        let mut inv = Inventory::new(Duration::from_secs(10));
        let mut r = report("n1", "a");
        r.allocations.push(orch_protocol::resources::Allocation {
            service: "api".into(),
            pid: 42,
            resources: Resources::new(500, 1024),
        });
        inv.observe(r, at(t, 0));
        let view = &inv.list()[0];
        assert_eq!(view.allocatable, Resources::new(1900, 3840));
        assert_eq!(view.allocated, Resources::new(500, 1024));
        assert_eq!(view.free, Resources::new(1400, 2816));
    }
}
