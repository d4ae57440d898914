//! Stopping services on purpose: one process (taken down, unhealthy, restarted, shed), and the
//! whole stack in waves, in reverse dependency order, answering the requests that asked for it
//! once the last wave has stopped.

use std::collections::BTreeSet;

use orch_protocol::agent::{Exit, StopRequest};
use orch_protocol::lifecycle::ServiceState;

use super::{ControlError, Desired, Detail, Effect, Machine, Reply, RequestId, RunOutcome, StopIntent, Teardown};
use crate::lifecycle::controller::registration::instance_id;
use crate::lifecycle::startup;

impl Machine {
    /// Takes the stack down for good: first marked wanted down in storage (`DesiredStored`
    /// follows), then stopped.
    pub(super) fn down(&mut self, request: RequestId) {
        let Some(stack) = self.stack.as_mut() else {
            return self.reply(Reply::Stopped(request, Err(ControlError::NoStack)));
        };
        stack.desired = Desired::Down;
        // A version still waiting to replace this one is taken down with it.
        let pending = stack.teardown.as_ref().and_then(|t| t.then.as_ref()).map(|r| r.version);
        let versions = std::iter::once(stack.version).chain(pending).collect();
        self.out.push(Effect::StoreDesiredDown { request, versions });
    }

    /// Stops every service in reverse dependency order and answers `request` once they have
    /// stopped; joins a shutdown already under way (dropping the version it would install).
    pub(super) fn take_down(&mut self, request: RequestId) {
        let Some(stack) = self.stack.as_mut() else {
            return self.reply(Reply::Stopped(request, Ok(0)));
        };
        if let Some(teardown) = stack.teardown.as_mut() {
            teardown.replies.push(request);
            teardown.then = None;
            return;
        }
        if let Some(run) = stack.run.take() {
            self.finish_run(run, RunOutcome::Cancelled);
        }
        let stack = self.stack.as_mut().expect("checked above");
        stack.queue.clear();
        for (service, rollout) in std::mem::take(&mut stack.rollouts) {
            tracing::info!(service, version = rollout.version, "rolling update ended: the stack is taken down");
        }
        let mut running = Vec::new();
        let mut idle = Vec::new();
        for (name, m) in &stack.services {
            if m.state.running() {
                running.push(name.clone());
            } else if m.state != ServiceState::Stopped {
                idle.push(name.clone());
            }
        }
        tracing::info!(running = running.len(), "stopping the stack in reverse dependency order");
        let reason = "the stack was taken down";
        for name in idle {
            self.bump(&name);
            self.transition(&name, ServiceState::Stopped, Detail::reason(reason));
        }
        let stack = self.stack.as_mut().expect("checked above");
        let waves = startup::shutdown_waves(&stack.graph, &running);
        stack.teardown = Some(Teardown {
            waves: waves.into(),
            waiting: BTreeSet::new(),
            replies: vec![request],
            stopped: 0,
            then: None,
            reason: reason.into(),
        });
        self.next_wave();
    }

    /// Starts stopping the next wave, or finishes the shutdown when none is left: answers its
    /// requests, and installs and starts the version it makes way for.
    pub(super) fn next_wave(&mut self) {
        loop {
            let Some(stack) = self.stack.as_mut() else { return };
            let Some(teardown) = stack.teardown.as_mut() else { return };
            if !teardown.waiting.is_empty() {
                return;
            }
            let Some(wave) = teardown.waves.pop_front() else {
                let teardown = stack.teardown.take().expect("checked above");
                tracing::info!(stopped = teardown.stopped, "stack stopped");
                for request in teardown.replies {
                    self.reply(Reply::Stopped(request, Ok(teardown.stopped)));
                }
                if let Some(next) = teardown.then {
                    let stack = self.stack.as_ref().expect("checked above");
                    // Still ready: unchanged, or to be replaced by a rolling update.
                    let keep: BTreeSet<String> = stack
                        .services
                        .iter()
                        .filter(|(n, m)| {
                            m.state == ServiceState::Ready
                                && (next.rolled.contains(*n)
                                    || next.manifest.services.get(*n).is_some_and(|s| s.same_process(&m.spec)))
                        })
                        .map(|(n, _)| n.clone())
                        .collect();
                    let rolled = next.rolled.intersection(&keep).cloned().collect();
                    self.adopt(next.version, next.manifest, next.graph, &keep);
                    self.begin_run(next.run_id, &keep);
                    self.begin_rollouts(&rolled, next.from_version, &next.good, next.reverting);
                }
                return;
            };
            let wave: Vec<String> =
                wave.into_iter().filter(|n| stack.services.get(n).is_some_and(|m| m.state.running())).collect();
            teardown.waiting.extend(wave.iter().cloned());
            let reason = teardown.reason.clone();
            for name in &wave {
                self.stop_process(name, StopIntent::Down(reason.clone()));
            }
            if !wave.is_empty() {
                return;
            }
        }
    }

    /// Stops the current process of `name` on purpose; `intent` says what follows.
    pub(super) fn stop_process(&mut self, name: &str, intent: StopIntent) {
        self.cancel_watch(name);
        let Some(m) = self.managed(name) else { return };
        m.stop = Some(intent.clone());
        let (state, generation, node) = (m.state, m.generation, m.node.clone().unwrap_or_default());
        let request = StopRequest {
            service: name.to_string(),
            signal: m.spec.stop_signal.clone(),
            grace_period: m.spec.grace_period,
        };
        self.deregister(name);
        match state {
            // Stopped as soon as the launch is confirmed (see `launched`).
            ServiceState::Starting => {}
            ServiceState::Started | ServiceState::Ready => {
                self.transition(name, ServiceState::Stopping, Detail::reason(intent.reason()));
                self.out.push(Effect::Stop { service: name.to_string(), generation, node, request });
            }
            ServiceState::Stopping => {}
            _ => self.stopped(name, None),
        }
    }

    /// The process stopped on purpose has ended.
    pub(super) fn stopped(&mut self, name: &str, exit: Option<Exit>) {
        let Some(m) = self.managed(name) else { return };
        m.pid = None;
        match m.stop.take() {
            Some(StopIntent::Kill(reason)) => self.crashed(name, reason, exit, true),
            Some(StopIntent::Restart(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
                self.enqueue(name);
            }
            Some(StopIntent::Preempt { reason, .. }) => self.preempted(name, reason, exit),
            Some(StopIntent::Replace(reason)) => self.replaced(name, reason, exit),
            Some(StopIntent::Shed(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
            }
            Some(StopIntent::Down(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
                if let Some(teardown) = self.stack.as_mut().and_then(|s| s.teardown.as_mut())
                    && teardown.waiting.remove(name)
                {
                    teardown.stopped += 1;
                }
                self.next_wave();
            }
            None => {}
        }
    }

    /// Removes the registry instance of `name`, if it was registered.
    pub(super) fn deregister(&mut self, name: &str) {
        if let Some(m) = self.managed(name)
            && std::mem::take(&mut m.registered)
        {
            self.out.push(Effect::Deregister { instance: instance_id(name) });
        }
    }
}
