//! Processes that end by themselves: completed one-shot tasks, crashes restarted by the policy
//! after a back-off, services given up (which may abort the start-up when critical), and the
//! periodic reconciliation that finds processes gone without an end report.

use std::collections::{BTreeMap, BTreeSet};

use orch_protocol::agent::{self, Exit};
use orch_protocol::lifecycle::ServiceState;

use super::{Asked, Detail, Effect, Machine, Teardown, Watch};
use crate::agent::client::AgentError;
use crate::lifecycle::controller::registration::instance_id;
use crate::lifecycle::manifest::RestartPolicy;
use crate::lifecycle::restart::AfterExit;
use crate::lifecycle::startup::Action;

impl Machine {
    /// The back-off of the current process has passed: it waits for a slot.
    pub(super) fn restart_due(&mut self, service: String, generation: u64) {
        let Some(m) = self.current_mut(&service, generation) else { return };
        m.watch = None;
        if m.state == ServiceState::Restarting {
            self.enqueue(&service);
        }
    }

    /// A process-end report from an agent.
    pub(super) fn exited(&mut self, report: agent::Exited) {
        let Some(stack) = self.stack.as_ref() else { return };
        let Some(m) = stack.services.get(&report.service) else { return };
        if m.node.as_deref() != Some(report.node.as_str()) || m.pid != Some(report.pid) || m.stop.is_some() {
            // Another process, or one being stopped on purpose (its stop reply finishes it).
            return;
        }
        let oom = report.oom_killed.then(|| m.spec.resources.map(|r| r.memory).unwrap_or_default());
        self.process_ended_with(&report.service, Some(report.exit), oom);
    }

    /// The process ended by itself (`exit`) or vanished (`None`).
    fn process_ended(&mut self, name: &str, exit: Option<Exit>) {
        self.process_ended_with(name, exit, None);
    }

    /// [`Self::process_ended`]; `oom`: the kernel killed it for going over its memory limit (of
    /// so many MiB).
    fn process_ended_with(&mut self, name: &str, exit: Option<Exit>, oom: Option<u64>) {
        self.cancel_watch(name);
        let Some(m) = self.managed(name) else { return };
        m.pid = None;
        let clean = exit.is_some_and(Exit::success);
        let once = m.spec.restart.policy != RestartPolicy::Always;
        self.deregister(name);
        if clean && once {
            self.transition(name, ServiceState::Completed, Detail { exit, ..Detail::default() });
            let now = self.now.instant;
            if let Some(run) = self.stack.as_mut().and_then(|s| s.run.as_mut()) {
                run.startup.completed(name);
                if let Some(t) = run.timings.get_mut(name) {
                    t.ready = Some(now.saturating_duration_since(run.t0));
                }
            }
            return;
        }
        let reason = match (exit, oom) {
            (Some(e), Some(limit)) => {
                format!("killed by the kernel: out of memory (over its limit of {limit} MiB): {e}")
            }
            (Some(e), None) => format!("the process ended: {e}"),
            (None, _) => "the process is gone (its agent no longer runs it)".to_string(),
        };
        self.crashed(name, reason, exit, !clean);
    }

    /// After a crash: restart by the policy after the back-off, or give up.
    pub(super) fn crashed(&mut self, name: &str, reason: String, exit: Option<Exit>, failure: bool) {
        self.rollout_crash(name, &reason);
        self.transition(name, ServiceState::Crashed, Detail { exit, ..Detail::reason(reason.clone()) });
        let now = self.now.instant;
        let m = self.managed(name).expect("present");
        match m.restarts.ended(failure, now) {
            AfterExit::Restart { after, attempt } => {
                m.restart_count += 1;
                m.rebind = true;
                m.watch = Some(Watch::RestartTimer);
                let generation = m.generation;
                self.out.push(Effect::ScheduleRestart { service: name.to_string(), generation, after });
                let detail = Detail {
                    attempt: Some(attempt),
                    restart_in: Some(after),
                    ..Detail::reason(format!("restart {attempt} in {}", humantime::format_duration(after)))
                };
                self.transition(name, ServiceState::Restarting, detail);
            }
            AfterExit::Leave => self.give_up(name, reason),
            AfterExit::GiveUp(why) => self.give_up(name, why),
        }
    }

    /// The service stays `failed`. In a start-up run this blocks what requires it, and when it
    /// is critical aborts the run: services waiting to restart are dropped, and what the run
    /// started is stopped one at a time, the most recently started first.
    fn give_up(&mut self, name: &str, reason: String) {
        self.transition(name, ServiceState::Failed, Detail::reason(reason.clone()));
        let Some(stack) = self.stack.as_mut() else { return };
        let Some(run) = stack.run.as_mut() else { return };
        let stops: Vec<String> = run
            .startup
            .failed(name, &reason)
            .into_iter()
            .filter_map(|a| match a {
                Action::Stop(n) => Some(n),
                Action::Launch(_) => None,
            })
            .collect();
        let Some(critical) = run.startup.aborted().map(str::to_string) else { return };
        if stack.teardown.is_some() {
            return;
        }
        tracing::warn!(service = %critical, stopping = stops.len(), "critical service failed: start-up aborted");
        stack.queue.clear();
        let reason = format!("start-up aborted: critical service {critical} failed");
        let waiting: Vec<String> = stack
            .services
            .iter()
            .filter(|(_, m)| m.state == ServiceState::Restarting)
            .map(|(n, _)| n.clone())
            .collect();
        for name in waiting {
            self.bump(&name);
            self.transition(&name, ServiceState::Stopped, Detail::reason(reason.clone()));
        }
        let stack = self.stack.as_mut().expect("present");
        stack.teardown = Some(Teardown {
            waves: stops.into_iter().map(|s| vec![s]).collect(),
            waiting: BTreeSet::new(),
            replies: Vec::new(),
            stopped: 0,
            then: None,
            reason,
        });
        self.next_wave();
    }

    /// Renews the leases of registered services; now and then, asks the agents what they run, and
    /// at each tick about the services waiting for their `READY=1` (a lost notify report then
    /// costs a second, not the start-up timeout).
    pub(super) fn tick(&mut self) {
        self.placement_deadlines();
        let due = self.now.instant.saturating_duration_since(self.last_reconcile) >= self.settings.reconcile_interval;
        if due && self.stack.is_some() {
            self.last_reconcile = self.now.instant;
        }
        let Some(stack) = self.stack.as_ref() else { return };
        for (name, m) in &stack.services {
            if m.registered {
                self.out.push(Effect::Heartbeat { instance: instance_id(name) });
            }
        }
        let mut by_node: BTreeMap<String, Vec<Asked>> = BTreeMap::new();
        for (name, m) in &stack.services {
            if !due && m.watch != Some(Watch::Notify) {
                continue;
            }
            if let (Some(pid), None, ServiceState::Started | ServiceState::Ready, Some(node)) =
                (m.pid, &m.stop, m.state, &m.node)
            {
                let asked = Asked { service: name.clone(), generation: m.generation, pid };
                by_node.entry(node.clone()).or_default().push(asked);
            }
        }
        for (node, asked) in by_node {
            self.out.push(Effect::AskStatus { node, asked });
        }
    }

    /// Services the agent of `node` no longer runs have ended; their end report was lost. Services
    /// waiting for their `READY=1` that the agent knows ready are ready; their notify report was
    /// lost (or is on its way).
    pub(super) fn reconcile(&mut self, node: &str, result: Result<agent::Status, AgentError>, asked: Vec<Asked>) {
        let status = match result {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(node, error = %e, services = asked.len(), "cannot reach the agent to reconcile");
                return;
            }
        };
        for Asked { service, generation, pid } in asked {
            let running = status.running.iter().find(|r| r.service == service && r.pid == pid);
            let Some(m) = self
                .stack
                .as_ref()
                .and_then(|s| s.services.get(&service))
                .filter(|m| m.generation == generation && m.pid == Some(pid) && m.stop.is_none())
            else {
                continue;
            };
            match running {
                None => {
                    tracing::warn!(service = %service, node, pid, "process gone without an end report");
                    self.process_ended(&service, None);
                }
                Some(r) if r.ready && m.watch == Some(Watch::Notify) => {
                    tracing::info!(service = %service, node, pid, "ready by its agent's status (its notify report was missed)");
                    self.cancel_watch(&service);
                    self.ready(&service);
                }
                Some(_) => {}
            }
        }
    }
}
