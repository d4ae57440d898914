//! Where each service runs. Every service is placed by the scheduler
//! (`crate::resources::placement`) when it is about to start, on the nodes the inventory reports
//! up, against what this stack's services already hold on each node; one pinned with `node` only
//! on that node (a pin to a node the inventory does not know is started there unchecked). A
//! service keeps its node across restarts while that node is up, and after a restart of the
//! orchestrator starts on the node it ran on (so a process that outlived the orchestrator is
//! adopted where it runs, not started twice).
//!
//! A service that fits nowhere waits `pending`, its reason saying why (the placement's
//! explanation), and is placed as soon as the inventory changes or a service stops. When lower-
//! priority services could make room, the cheapest set of them is stopped for it (preemption,
//! `crate::resources::preemption`), within the budget of so many per window, never a `critical`
//! one; they wait to be placed again. A service that found no node within its
//! `startup_timeout` counts a failed start (its restart policy then decides).
//!
//! When a node goes down, the services placed on it are `lost`: placed again elsewhere. When it
//! comes back, whatever it still runs of services now placed elsewhere is stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orch_protocol::agent::StopRequest;
use orch_protocol::lifecycle::ServiceState;
use orch_protocol::resources::{LostData, NodeInfo, NodeStatus, PreemptedData, Resources};

use super::{Detail, Effect, Event, Machine, Managed, StopIntent, priority_of};
use crate::resources::placement::{self, Ask, NodeView};
use crate::resources::preemption::{self, NodeRunning, Running};

/// Whether a service in `state` holds room on its node: its process runs, is being started or
/// stopped, or it waits there to be restarted.
fn holds_room(state: ServiceState) -> bool {
    matches!(
        state,
        ServiceState::Starting
            | ServiceState::Started
            | ServiceState::Ready
            | ServiceState::Stopping
            | ServiceState::Crashed
            | ServiceState::Restarting
    )
}

fn asked(m: &Managed) -> Resources {
    m.spec.resources.unwrap_or_default()
}

impl Machine {
    /// The node inventory changed: services on nodes gone down are lost and placed again, what a
    /// returning node runs of services placed elsewhere is stopped, and the services waiting for
    /// a node try again.
    pub(super) fn nodes_changed(&mut self, nodes: Arc<Vec<NodeInfo>>) {
        self.inventory = nodes;
        self.lose_services_on_down_nodes();
        self.stop_stale_processes();
        self.retry_placements();
    }

    fn node_is_up(&self, node: &str) -> bool {
        self.inventory.iter().any(|n| n.name == node && n.status == NodeStatus::Ready)
    }

    /// The node `name` is to start on: the node it holds while that node is up (it waits there
    /// to restart, or ran there before the orchestrator restarted), else a placement, on its pin
    /// if it has one. `None`: no node fits now; it waits (`pending`, with why), perhaps for
    /// services preempted for it.
    pub(super) fn node_for(&mut self, name: &str) -> Option<String> {
        let stack = self.stack.as_ref()?;
        let m = stack.services.get(name)?;
        if let Some(node) = &m.node
            && (m.resumed || holds_room(m.state))
            && self.node_is_up(node)
        {
            let node = node.clone();
            self.managed(name).expect("present").resumed = false;
            return Some(node);
        }
        // A pin to a node the inventory does not know (its agent never reported, or is older than
        // node reports) is the operator's word: it is started there, and the agent's answer tells.
        if let Some(pin) = &m.spec.node
            && !self.inventory.iter().any(|n| n.name == *pin)
        {
            let pin = pin.clone();
            self.managed(name).expect("present").node = Some(pin.clone());
            return Some(pin);
        }
        let ask = self.ask(name);
        let views = self.node_views(name);
        let placed = placement::place(&views, std::slice::from_ref(&ask)).pop().expect("one ask, one placement");
        let views = if placed.node.is_none() { Some(views) } else { None };
        let summary = placed.explanation.summary();
        let now = self.now.instant;
        let stack = self.stack.as_mut().expect("present");
        let m = stack.services.get_mut(name).expect("present");
        m.placement = Some(summary.clone());
        match placed.node {
            Some(node) => {
                stack.unplaced.remove(name);
                m.node = Some(node.clone());
                tracing::info!(service = name, node = %node, "{summary}");
                Some(node)
            }
            None => {
                m.node = None;
                let first = !stack.unplaced.contains_key(name);
                stack.unplaced.entry(name.to_string()).or_insert(now);
                let held_back = self.preempt_for(name, &ask, views.expect("kept when nothing was placed"));
                let reason = match held_back {
                    Some(why) => format!("waiting for a node: {summary}; {why}"),
                    None => format!("waiting for a node: {summary}"),
                };
                let m = &self.stack.as_ref().expect("present").services[name];
                if first || m.reason.as_deref() != Some(reason.as_str()) {
                    self.transition(name, ServiceState::Pending, Detail::reason(reason));
                }
                None
            }
        }
    }

    /// What `name` asks of the scheduler.
    fn ask(&self, name: &str) -> Ask {
        let m = &self.stack.as_ref().expect("present").services[name];
        Ask {
            replica: name.to_string(),
            service: m.spec.replica_of.clone().unwrap_or_else(|| name.to_string()),
            resources: asked(m),
            constraints: m.spec.constraints.clone(),
            pin: m.spec.node.clone(),
            strategy: m.spec.placement,
            priority: priority_of(&self.effective, name, &m.spec),
        }
    }

    /// The nodes as the scheduler sees them, with what this stack's services hold on each (but
    /// `except`, the one being placed). A node's own report counts too, when it says more is
    /// allocated there (processes of other stacks, or of jobs).
    fn node_views(&self, except: &str) -> Vec<NodeView> {
        let stack = self.stack.as_ref().expect("present");
        let mut held: BTreeMap<&str, (Resources, BTreeMap<String, u32>)> = BTreeMap::new();
        for (name, m) in &stack.services {
            let (Some(node), true) = (&m.node, name != except && holds_room(m.state)) else { continue };
            let entry = held.entry(node.as_str()).or_default();
            entry.0 += asked(m);
            *entry.1.entry(m.spec.replica_of.clone().unwrap_or_else(|| name.clone())).or_default() += 1;
        }
        self.inventory
            .iter()
            .map(|n| {
                let (ours, replicas) = held.remove(n.name.as_str()).unwrap_or_default();
                let allocated = Resources::new(ours.cpu.max(n.allocated.cpu), ours.memory.max(n.allocated.memory));
                NodeView {
                    name: n.name.clone(),
                    allocatable: n.allocatable,
                    allocated,
                    labels: n.labels.clone(),
                    up: n.status == NodeStatus::Ready,
                    replicas,
                }
            })
            .collect()
    }

    /// Stops lower-priority services to make room for `name`, when a plan within the budget
    /// exists and none is under way for it already. Returns why none was made when only the
    /// budget holds it back (for the reason `name` waits).
    /// `views`: the nodes as the failed placement saw them.
    fn preempt_for(&mut self, name: &str, ask: &Ask, views: Vec<NodeView>) -> Option<String> {
        let stack = self.stack.as_ref().expect("present");
        let making_room =
            stack.services.values().any(|m| matches!(&m.stop, Some(StopIntent::Preempt { by, .. }) if by == name));
        if making_room {
            return None;
        }
        let mut running: BTreeMap<&str, Vec<Running>> = BTreeMap::new();
        for (unit, m) in &stack.services {
            let Some(node) = &m.node else { continue };
            if !matches!(m.state, ServiceState::Started | ServiceState::Ready) || m.stop.is_some() {
                continue;
            }
            running.entry(node.as_str()).or_default().push(Running {
                replica: unit.clone(),
                service: m.spec.replica_of.clone().unwrap_or_else(|| unit.clone()),
                priority: priority_of(&self.effective, unit, &m.spec),
                critical: m.spec.critical,
                resources: asked(m),
            });
        }
        let nodes: Vec<NodeRunning> = views
            .into_iter()
            .map(|view| {
                let running = running.remove(view.name.as_str()).unwrap_or_default();
                NodeRunning { view, running }
            })
            .collect();
        let now = self.now.instant;
        let left = self.preemptions.left(now);
        let Some(plan) = preemption::plan(&nodes, ask, left) else {
            let budget = self.preemptions.budget();
            return preemption::plan(&nodes, ask, u32::MAX).map(|plan| {
                format!(
                    "preempting {} would make room, but the preemption budget ({} per {}) has {left} left",
                    plan.victims.iter().map(|v| v.replica.as_str()).collect::<Vec<_>>().join(", "),
                    budget.max,
                    humantime::format_duration(budget.window)
                )
            });
        };
        self.preemptions.record(now, plan.victims.len() as u32);
        let budget_left = self.preemptions.left(now);
        tracing::warn!(service = name, node = %plan.node, victims = plan.victims.len(), "{}", plan.reason);
        for victim in plan.victims {
            self.publish(Event::Preempted(PreemptedData {
                service: victim.replica.clone(),
                priority: victim.priority,
                by: name.to_string(),
                by_priority: ask.priority,
                node: plan.node.clone(),
                reason: plan.reason.clone(),
                budget_left,
            }));
            let reason = format!("preempted by {name} (priority {}): {}", ask.priority, plan.reason);
            self.stop_process(&victim.replica, StopIntent::Preempt { by: name.to_string(), reason });
        }
        None
    }

    /// A preempted service has stopped: it lets go of its node and waits to be placed again,
    /// after the services waiting for a node (the one it made room for among them).
    pub(super) fn preempted(&mut self, name: &str, reason: String, exit: Option<orch_protocol::agent::Exit>) {
        if let Some(m) = self.managed(name) {
            m.node = None;
        }
        self.transition(name, ServiceState::Pending, Detail { exit, ..Detail::reason(reason) });
        self.retry_placements();
        self.enqueue(name);
    }

    /// Services waiting for a node go back in the queue to be placed, highest priority first.
    pub(super) fn retry_placements(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        if stack.teardown.is_some() || stack.desired != super::Desired::Up {
            return;
        }
        let waiting: Vec<String> = stack.unplaced.keys().cloned().collect();
        for name in waiting {
            self.enqueue(&name);
        }
    }

    /// Services that found no node within their `startup_timeout` count a failed start.
    pub(super) fn placement_deadlines(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        let now = self.now.instant;
        let late: Vec<(String, String)> = stack
            .unplaced
            .iter()
            .filter(|(name, since)| {
                now.saturating_duration_since(**since) >= stack.services[*name].spec.startup_timeout
            })
            .map(|(name, _)| (name.clone(), stack.services[name].placement.clone().unwrap_or_default()))
            .collect();
        for (name, why) in late {
            let stack = self.stack.as_mut().expect("present");
            stack.unplaced.remove(&name);
            stack.queue.retain(|(_, queued)| *queued != name);
            let m = stack.services.get_mut(&name).expect("present");
            let timeout = m.spec.startup_timeout;
            m.restarts.started(now);
            if let Some(run) = stack.run.as_mut() {
                run.startup.started(&name);
            }
            let reason = format!("no node within {} (startup_timeout): {why}", humantime::format_duration(timeout));
            self.crashed(&name, reason, None, true);
        }
    }

    /// Services placed on a node that went down are lost: they let go of it and are placed
    /// again. What the node runs is stopped if it comes back (see `stop_stale_processes`).
    fn lose_services_on_down_nodes(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        // Going down, nothing is placed again; the stops asked of the silent agent fail, and
        // that finishes them.
        if stack.teardown.is_some() || stack.desired != super::Desired::Up {
            return;
        }
        let down: Vec<String> =
            self.inventory.iter().filter(|n| n.status == NodeStatus::Down).map(|n| n.name.clone()).collect();
        let lost: Vec<(String, String, Option<u32>)> = stack
            .services
            .iter()
            // One being stopped is finished by its stop's answer (an error, from a silent agent).
            .filter(|(_, m)| {
                m.spec.node.is_none() && holds_room(m.state) && m.state != ServiceState::Stopping && m.stop.is_none()
            })
            .filter_map(|(name, m)| {
                let node = m.node.as_ref().filter(|n| down.contains(n))?;
                Some((name.clone(), node.clone(), m.pid))
            })
            .collect();
        for (name, node, pid) in lost {
            let reason = format!("node {node} is down: its agent stopped reporting");
            let replica_of = self.stack.as_ref().and_then(|s| s.services[&name].spec.replica_of.clone());
            self.publish(Event::Lost(LostData {
                service: name.clone(),
                replica_of,
                node: node.clone(),
                pid,
                reason: reason.clone(),
            }));
            // Whatever the old process still reports is about a process given up.
            self.bump(&name);
            self.deregister(&name);
            if let Some(m) = self.managed(&name) {
                m.node = None;
                m.pid = None;
                m.stop = None;
            }
            self.transition(&name, ServiceState::Pending, Detail::reason(format!("lost: {reason}; placing it again")));
            self.enqueue(&name);
        }
    }

    /// A node that reports processes of this stack's services placed elsewhere (it was down and
    /// came back, or lost a race) has them stopped, once each.
    fn stop_stale_processes(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        // Forget the stops of processes no node reports any more: the set stays as small as what
        // is stale now.
        let reported: BTreeSet<(&str, &str, u32)> = self
            .inventory
            .iter()
            .flat_map(|n| n.allocations.iter().map(move |a| (n.name.as_str(), a.service.as_str(), a.pid)))
            .collect();
        self.stale_stopped.retain(|(node, service, pid)| reported.contains(&(node.as_str(), service.as_str(), *pid)));
        let mut stale = Vec::new();
        for node in self.inventory.iter().filter(|n| n.status == NodeStatus::Ready) {
            for allocation in &node.allocations {
                let Some(m) = stack.services.get(&allocation.service) else { continue };
                let ours = m.node.as_deref() == Some(node.name.as_str());
                let key = (node.name.clone(), allocation.service.clone(), allocation.pid);
                if !ours && !self.stale_stopped.contains(&key) {
                    let request = StopRequest {
                        service: allocation.service.clone(),
                        signal: m.spec.stop_signal.clone(),
                        grace_period: m.spec.grace_period,
                    };
                    stale.push((key, request));
                }
            }
        }
        for (key, request) in stale {
            tracing::warn!(node = %key.0, service = %key.1, pid = key.2, "stopping a stale process: the service runs elsewhere now");
            self.out.push(Effect::StopStale { node: key.0.clone(), request });
            self.stale_stopped.insert(key);
        }
    }
}
