//! Priorities at work: changes of the effective priorities reorder the run and the restart
//! queue, and node pressure sheds the lowest-priority sheddable service, one step at a time, and
//! restores the highest-priority shed one once the pressure has cleared.

use std::cmp::Reverse;

use orch_protocol::agent;
use orch_protocol::events::{PressureData, ShedData};
use orch_protocol::lifecycle::ServiceState;

use super::{Event, Machine, Managed, StopIntent, priority_of};
use crate::lifecycle::restart::Restarts;
use crate::lifecycle::shedding::{self, Step};
use crate::priority::Effective;

impl Machine {
    /// The effective priorities changed: the run and the restart queue follow them.
    pub(super) fn reprioritize(&mut self, effective: Effective) {
        self.effective = effective;
        let priorities = self.unit_priorities();
        let Some(stack) = self.stack.as_mut() else { return };
        if let Some(run) = stack.run.as_mut() {
            run.startup.set_priorities(&priorities);
        }
        let queued = std::mem::take(&mut stack.queue);
        stack.queue = queued
            .into_iter()
            .map(|(_, name)| (Reverse(priority_of(&self.effective, &name, &stack.services[&name].spec)), name))
            .collect();
    }

    /// A node's pressure reading: announce threshold crossings, shed or restore one service.
    pub(super) fn pressure(&mut self, report: agent::Pressure) {
        let now = self.now.instant;
        let Some(stack) = self.stack.as_ref() else { return };
        let on_node = |m: &&Managed| m.node.as_deref() == Some(report.node.as_str());
        let sheddable = |m: &&Managed| {
            m.spec.sheddable
                && m.stop.is_none()
                && !m.shed
                && matches!(m.state, ServiceState::Started | ServiceState::Ready)
        };
        let can_shed = stack.services.values().filter(on_node).any(|m| sheddable(&m));
        let can_restore =
            stack.desired == super::Desired::Up && stack.services.values().filter(on_node).any(|m| m.shed);
        let args = &self.settings.shedding;
        let node = self.nodes.entry(report.node.clone()).or_default();
        let reaction = node.observe(report.cpu, report.memory, now, args, can_shed, can_restore);
        let clear_for = node.clear_for(now).unwrap_or_default();
        let why = shedding::pressure_reason(report.cpu, report.memory, args);
        let crossing = reaction.crossed.map(|high| {
            let message = if high {
                format!("node {} is under pressure: {why}", report.node)
            } else {
                format!("node {} is no longer under pressure: {why}", report.node)
            };
            tracing::info!(node = %report.node, cpu = report.cpu, memory = report.memory, "{message}");
            let data = PressureData {
                node: report.node.clone(),
                cpu: report.cpu,
                memory: report.memory,
                cpu_threshold: args.cpu,
                memory_threshold: args.memory,
                message,
            };
            if high { Event::PressureHigh(data) } else { Event::PressureCleared(data) }
        });
        let priority = |(name, m): (&String, &Managed)| (priority_of(&self.effective, name, &m.spec), name.clone());
        let (shed, chosen, reason) = match reaction.step {
            Step::Nothing => (false, None, String::new()),
            Step::Shed => {
                let lowest = stack.services.iter().filter(|(_, m)| on_node(m) && sheddable(m)).map(priority).min();
                let reason = format!("shed: {why} on node {}; lowest priority sheddable service", report.node);
                (true, lowest, reason)
            }
            Step::Restore => {
                let highest = stack
                    .services
                    .iter()
                    .filter(|(_, m)| on_node(m) && m.shed)
                    .map(priority)
                    .max_by_key(|(p, name)| (*p, Reverse(name.clone())));
                let reason = format!(
                    "restored: node {} has been below the thresholds for {}s; highest priority shed service",
                    report.node,
                    clear_for.as_secs()
                );
                (false, highest, reason)
            }
        };
        if let Some(event) = crossing {
            self.publish(event);
        }
        let Some((priority, name)) = chosen else { return };
        tracing::info!(service = %name, priority, node = %report.node, "{reason}");
        let data = ShedData {
            service: name.clone(),
            node: report.node.clone(),
            priority,
            reason: reason.clone(),
            cpu: report.cpu,
            memory: report.memory,
        };
        self.publish(if shed { Event::Shed(data) } else { Event::Restored(data) });
        let m = self.managed(&name).expect("chosen from the stack");
        if shed {
            m.shed = true;
            self.stop_process(&name, StopIntent::Shed(reason));
        } else {
            m.shed = false;
            m.restarts = Restarts::new(m.spec.restart.clone());
            self.enqueue(&name);
        }
    }
}
