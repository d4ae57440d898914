//! Starting services: start-up runs (in dependency order, by priority, within `max_parallel`),
//! the queue of services waiting to start again, launches and readiness (by a readiness check, or
//! by the service's own `READY=1` for those that notify).

use std::collections::{BTreeMap, BTreeSet};

use orch_protocol::agent::{self, StartRequest};
use orch_protocol::events::RunFinishedData;
use orch_protocol::lifecycle::ServiceState;
use uuid::Uuid;

use super::{Detail, Effect, Event, Machine, Run, RunOutcome, StopIntent, Watch, run_profile};
use crate::lifecycle::controller::registration::{instance_id, registration};
use crate::lifecycle::manifest::ServiceSpec;
use crate::lifecycle::probes::Endpoint;
use crate::lifecycle::profile::ServiceTiming;
use crate::lifecycle::startup::{self, Action, Startup};

impl Machine {
    /// Starts a start-up run of every service not in `ready` (those already run and are ready).
    pub(super) fn begin_run(&mut self, id: Uuid, ready: &BTreeSet<String>) {
        let now = self.now;
        let priorities = self.unit_priorities();
        let Some(stack) = self.stack.as_mut() else { return };
        stack.desired = super::Desired::Up;
        let mut startup = Startup::new(&stack.manifest, stack.graph.clone());
        startup.set_priorities(&priorities);
        for name in ready {
            startup.already_ready(name);
        }
        let run = Run { id, startup, t0: now.instant, started_at: now.wall, timings: BTreeMap::new() };
        tracing::info!(run = %id, services = stack.services.len() - ready.len(), "start-up run begins");
        self.out.push(Effect::StoreRunStarted { id, version: stack.version, started_at: now.wall });
        stack.run = Some(run);
        let names: Vec<String> = stack.services.keys().filter(|n| !ready.contains(*n)).cloned().collect();
        for name in names {
            self.transition(&name, ServiceState::Pending, Detail::default());
        }
    }

    /// Launches what may start now: the run's next services, then services waiting to restart,
    /// highest priority first, within `max_parallel`. Finishes the run when nothing is left.
    pub(super) fn pump(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        if stack.teardown.is_some() {
            return;
        }
        let at = stack.run.as_ref().map(|run| self.run_clock(run));
        let stack = self.stack.as_mut().expect("checked above");
        let mut launches = Vec::new();
        let mut blocked = Vec::new();
        if let (Some(run), Some(at)) = (stack.run.as_mut(), at) {
            for name in run.startup.launchable() {
                run.timings.entry(name).or_insert(ServiceTiming { queued: at, started: None, ready: None });
            }
            for action in run.startup.due() {
                if let Action::Launch(name) = action {
                    launches.push(name);
                }
            }
            for (name, state) in run.startup.states() {
                if let startup::State::Blocked(reason) = state
                    && stack.services[name].state == ServiceState::Pending
                {
                    blocked.push((name.clone(), reason.clone()));
                }
            }
        }
        let in_flight = stack
            .services
            .values()
            .filter(|m| matches!(m.state, ServiceState::Starting | ServiceState::Started))
            .count()
            + launches.len();
        let free = stack.manifest.max_parallel.max(1).saturating_sub(in_flight);
        for _ in 0..free {
            let Some((_, name)) = stack.queue.pop_first() else { break };
            launches.push(name);
        }
        for (name, reason) in blocked {
            self.transition(&name, ServiceState::Blocked, Detail::reason(reason));
        }
        for name in launches {
            self.launch(&name);
        }
        let stack = self.stack.as_mut().expect("checked above");
        // An aborted run ends once what it started is stopped (services stopped while starting
        // never report ready or failed to it).
        if stack.run.as_ref().is_some_and(|r| r.startup.finished() || r.startup.aborted().is_some()) {
            let run = stack.run.take().expect("checked");
            let outcome = if run.startup.aborted().is_some() {
                RunOutcome::Aborted
            } else if run
                .startup
                .states()
                .values()
                .all(|s| matches!(s, startup::State::Ready | startup::State::Completed))
            {
                RunOutcome::Ready
            } else {
                RunOutcome::Degraded
            };
            self.finish_run(run, outcome);
        }
    }

    /// Announces and records how `run` finished, and keeps its profile.
    pub(super) fn finish_run(&mut self, run: Run, outcome: RunOutcome) {
        let Some(stack) = self.stack.as_ref() else { return };
        let result = run_profile(stack, &run, Some(outcome));
        let (wall_ms, critical_path_ms) =
            (result.profile.wall.as_millis() as u64, result.profile.critical_path.as_millis() as u64);
        tracing::info!(
            run = %run.id,
            outcome = outcome.as_str(),
            wall_ms,
            critical_path_ms,
            efficiency = format!("{:.3}", result.profile.efficiency),
            "start-up run finished"
        );
        let data = RunFinishedData {
            run_id: run.id,
            manifest_version: stack.version,
            outcome: outcome.as_str().to_string(),
            wall_ms,
            critical_path_ms,
        };
        self.publish(Event::RunFinished(data));
        self.out.push(Effect::StoreRunFinished { outcome, profile: Box::new(result.clone()) });
        self.last_profile = Some(result);
    }

    fn launch(&mut self, name: &str) {
        let Some(node) = self.node_for(name) else { return };
        // A new process: whatever was pending for the one before is void.
        self.cancel_watch(name);
        let generation = self.next_generation();
        let now = self.now;
        let Some(stack) = self.stack.as_mut() else { return };
        let version = stack.version;
        if let Some(run) = stack.run.as_mut() {
            let at = now.instant.saturating_duration_since(run.t0);
            let timing =
                run.timings.entry(name.to_string()).or_insert(ServiceTiming { queued: at, started: None, ready: None });
            if timing.started.is_some() {
                // Started again (a restart within the run): it did not wait for a slot.
                timing.queued = at;
            }
            timing.started = Some(at);
            timing.ready = None;
        }
        let Some(m) = stack.services.get_mut(name) else { return };
        m.generation = generation;
        m.stop = None;
        m.pid = None;
        m.notified = None;
        m.restarts.started(now.instant);
        let spec = &m.spec;
        let mut env = spec.env.clone();
        // A replica knows its service, its own name and its index (`api`, `api-1`, 1).
        let service = spec.replica_of.as_deref().unwrap_or(name);
        env.entry("ORCH_SERVICE".into()).or_insert_with(|| service.to_string());
        if let Some(index) = name.strip_prefix(service).and_then(|rest| rest.strip_prefix('-')) {
            env.entry("ORCH_REPLICA".into()).or_insert_with(|| index.to_string());
            env.entry("ORCH_REPLICA_NAME".into()).or_insert_with(|| name.to_string());
        }
        env.entry("ORCH_MANIFEST_VERSION".into()).or_insert_with(|| version.to_string());
        if let Some(port) = spec.port {
            env.entry("PORT".into()).or_insert_with(|| port.to_string());
        }
        let request = StartRequest {
            service: name.to_string(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            env,
            workdir: spec.workdir.as_ref().map(|p| p.display().to_string()),
            stop_signal: spec.stop_signal.clone(),
            grace_period: spec.grace_period,
            // The kernel holds it to what it asks for (cgroups on its node).
            limits: spec.resources.map(orch_protocol::resources::Limits::from).unwrap_or_default(),
            notify: spec.notify,
            logs: spec.logs.retention(),
        };
        m.node = Some(node.clone());
        // The launch reads the config keys' values now.
        m.config_stale = false;
        let config = spec.config.as_ref().map(|c| c.env.clone()).unwrap_or_default();
        self.transition(name, ServiceState::Starting, Detail::default());
        self.out.push(Effect::Launch { service: name.to_string(), generation, node, request, config });
    }

    /// The agent answered the launch of the current process.
    pub(super) fn launched(&mut self, name: &str, result: Result<u32, String>) {
        let Some(m) = self.managed(name) else { return };
        match result {
            Ok(pid) => {
                m.pid = Some(pid);
                let stop = m.stop.clone();
                let stale = m.config_stale;
                self.transition(name, ServiceState::Started, Detail::default());
                if let Some(run) = self.stack.as_mut().and_then(|s| s.run.as_mut()) {
                    run.startup.started(name);
                }
                if let Some(intent) = stop {
                    return self.stop_process(name, intent);
                }
                if stale {
                    return self.restart_running(name, "a config key it reads changed while it started".into());
                }
                let m = self.managed(name).expect("current");
                if m.spec.notify {
                    // Its own word replaces the readiness check (which, if any, stays on its
                    // registry instance).
                    if m.notified.take() == Some(pid) {
                        return self.ready(name);
                    }
                    m.watch = Some(Watch::Notify);
                    let (generation, timeout) = (m.generation, m.spec.startup_timeout);
                    self.out.push(Effect::WaitNotified { service: name.to_string(), generation, timeout });
                    return;
                }
                let Some(check) = m.spec.readiness.clone() else {
                    return self.ready(name);
                };
                m.watch = Some(Watch::Readiness);
                let (endpoint, timeout, generation) = (endpoint(name, &m.spec), m.spec.startup_timeout, m.generation);
                self.out.push(Effect::WaitReady { service: name.to_string(), generation, check, endpoint, timeout });
            }
            Err(e) => {
                if m.stop.is_some() {
                    self.stopped(name, None);
                } else {
                    self.crashed(name, format!("could not start: {e}"), None, true);
                }
            }
        }
    }

    /// A service's `sd_notify` message: its current process, waiting for it, is ready once it says
    /// `READY=1`. A report about another process (an earlier one, or one on another node) or a
    /// service that does not notify changes nothing.
    pub(super) fn notified(&mut self, report: agent::Notified) {
        let name = report.service.as_str();
        let Some(m) = self.managed(name) else { return };
        if !report.ready || !m.spec.notify || m.node.as_deref() != Some(report.node.as_str()) || m.stop.is_some() {
            return;
        }
        match m.pid {
            Some(pid) if pid == report.pid && m.watch == Some(Watch::Notify) => {
                self.cancel_watch(name);
                self.ready(name);
            }
            // Ahead of the agent's answer to the launch: the report and the answer travel apart.
            None if m.state == ServiceState::Starting => m.notified = Some(report.pid),
            // Another process, or one ready already.
            _ => {}
        }
    }

    /// The start-up timeout of a service waiting for its `READY=1` has passed: the attempt
    /// fails, as a readiness check that never passed does.
    pub(super) fn notify_due(&mut self, name: &str, generation: u64) {
        let Some(m) = self.current_mut(name, generation) else { return };
        if m.watch != Some(Watch::Notify) {
            return;
        }
        m.watch = None;
        let timeout = humantime::format_duration(m.spec.startup_timeout);
        let reason = format!("not ready within {timeout} (startup_timeout): no READY=1 from the process (notify)");
        self.stop_process(name, StopIntent::Kill(reason));
    }

    /// The current process of `name` is ready: registered (with a port), watched (with a
    /// liveness check), and the services bound to it restart if it was restarted.
    pub(super) fn ready(&mut self, name: &str) {
        self.transition(name, ServiceState::Ready, Detail::default());
        let now = self.now;
        let Some(stack) = self.stack.as_mut() else { return };
        if let Some(run) = stack.run.as_mut() {
            run.startup.ready(name);
            if let Some(t) = run.timings.get_mut(name) {
                t.ready = Some(now.instant.saturating_duration_since(run.t0));
            }
        }
        let version = stack.version;
        let m = stack.services.get_mut(name).expect("present");
        m.restarts.healthy(now.instant);
        let rebind = std::mem::take(&mut m.rebind);
        if let Some(port) = m.spec.port {
            m.registered = true;
            self.out.push(Effect::Register(Box::new(registration(
                name,
                &m.spec,
                m.node.as_deref().unwrap_or_default(),
                port,
                version,
            ))));
        }
        if let Some(check) = m.spec.liveness.clone() {
            m.watch = Some(Watch::Liveness);
            let (service, generation, endpoint) = (name.to_string(), m.generation, endpoint(name, &m.spec));
            self.out.push(Effect::WatchLiveness { service, generation, check, endpoint });
        }
        if rebind {
            let bound: Vec<String> = stack
                .services
                .iter()
                .filter(|(_, b)| b.spec.binds_to.iter().any(|t| t == name))
                .filter(|(_, b)| matches!(b.state, ServiceState::Started | ServiceState::Ready) && b.stop.is_none())
                .map(|(n, _)| n.clone())
                .collect();
            for b in bound {
                tracing::info!(service = %b, bound_to = %name, "restarting a bound service");
                self.stop_process(&b, StopIntent::Restart(format!("bound to {name}, which was restarted")));
            }
        }
    }
}

/// Where the checks of a managed service reach it.
fn endpoint(name: &str, spec: &ServiceSpec) -> Endpoint {
    Endpoint {
        service: name.to_string(),
        instance_id: instance_id(name),
        address: spec.address.clone(),
        port: spec.port.unwrap_or(0),
    }
}
