//! The lifecycle controller's decisions, free of I/O: a state machine that owns the applied stack,
//! takes one [`Input`] at a time (a request, a report of the work it asked for, a node's
//! pressure, a priority change, a tick) with the time it is handled at, and returns the
//! [`Effect`]s to carry out (launch, stop, probe, register, record, publish, reply, schedule).
//! It spawns nothing and reads no clock; the executor (`super::executor`) performs the effects
//! and feeds their reports back.
//!
//! A `generation`, new at each launch (and whenever what is pending for a service is dropped),
//! is carried by every effect that reports back: a report about an earlier process is ignored.
//!
//! The work is split by concern: [`apply`] (manifests, resume, restart requests), [`start`]
//! (start-up runs and launching), [`stop`] (stopping on purpose, shutdown waves), [`failure`]
//! (crashes, restarts, giving up, reconciling with the agents), [`pressure`] (load shedding
//! and priority changes), [`placing`] (nodes, placement, preemption) and [`rollout`] (rolling
//! updates).

mod apply;
pub mod effect;
mod failure;
mod placing;
mod pressure;
mod rollout;
mod start;
mod stop;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orch_protocol::agent::{self, Exit};
use orch_protocol::events::TransitionData;
use orch_protocol::lifecycle::ServiceState;
use uuid::Uuid;

pub use effect::{Asked, Effect, Event, Reply, RequestId, Transition};

use super::{ControlError, ManagedService, RunProfile, StackView};
use crate::agent::client::AgentError;
use crate::lifecycle::LifecycleSettings;
use crate::lifecycle::graph::Graph;
use crate::lifecycle::manifest::{Manifest, ServiceSpec};
use crate::lifecycle::profile::{self, ServiceTiming};
use crate::lifecycle::restart::Restarts;
use crate::lifecycle::shedding;
use crate::lifecycle::startup::Startup;
use crate::priority::Effective;
use crate::storage::StorageError;

/// When an input is handled: monotonic time for durations (back-off, shedding steps, run
/// timings), wall-clock time for what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

pub use orch_protocol::stack::Desired;

/// How a start-up run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every service ready, or completed for one-shot tasks.
    Ready,
    /// Some failed or were blocked; the others run.
    Degraded,
    /// A critical service failed: what started was stopped.
    Aborted,
    /// The stack was taken down (or the orchestrator stopped) during the run.
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ready => "ready",
            RunOutcome::Degraded => "degraded",
            RunOutcome::Aborted => "aborted",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// What the machine is told, one at a time.
#[derive(Debug)]
pub enum Input {
    /// The stack stored before the orchestrator started: installed, and started if wanted up.
    Resume {
        version: i64,
        manifest: Box<Manifest>,
        desired: Desired,
        run_id: Uuid,
        /// The node each unpinned service was placed on, as stored.
        placed: BTreeMap<String, String>,
    },
    /// The node inventory changed (or its periodic refresh).
    Nodes(std::sync::Arc<Vec<orch_protocol::resources::NodeInfo>>),
    /// A validated manifest to store as a new version and bring the stack to.
    Apply { request: RequestId, manifest: Box<Manifest>, body: String, source: String },
    /// The manifest of an `Apply` was stored (as `version`), or not.
    ManifestStored {
        request: RequestId,
        manifest: Box<Manifest>,
        source: String,
        /// The id of the start-up run the new version begins.
        run_id: Uuid,
        /// It is the last good version applied again by a failed rolling update (whose own
        /// updates do not revert).
        revert: bool,
        result: Result<i64, StorageError>,
    },
    /// Take the stack down and keep it down.
    Down { request: RequestId },
    /// The stack of a `Down` was marked wanted down, or not.
    DesiredStored { request: RequestId, result: Result<(), StorageError> },
    /// Restart one service (or start it, if it does not run).
    Restart { request: RequestId, service: String },
    /// The agent started the process (its pid), or could not.
    Launched { service: String, generation: u64, result: Result<u32, String> },
    /// The readiness check passed.
    Ready { service: String, generation: u64 },
    /// A service's `sd_notify` message, as its agent reported it (`READY=1` counts for the
    /// service's current process only).
    Notified(agent::Notified),
    /// The start-up timeout of a service that notifies its readiness has passed.
    NotifyDue { service: String, generation: u64 },
    /// The readiness check did not pass within the start-up timeout, or liveness went critical.
    Unhealthy { service: String, generation: u64, reason: String },
    /// A process stopped on purpose has ended (`None`: it was already gone).
    Stopped { service: String, generation: u64, exit: Option<Exit> },
    /// The back-off before a restart has passed.
    RestartDue { service: String, generation: u64 },
    /// An agent reports that a process ended.
    Exited(agent::Exited),
    /// A node's pressure reading.
    Pressure(agent::Pressure),
    /// The effective priorities changed.
    Priorities(Effective),
    /// What the agent of `node` runs, in answer to `AskStatus`.
    Status { node: String, result: Result<agent::Status, AgentError>, asked: Vec<Asked> },
    /// Once a second: renew leases, and now and then reconcile with the agents.
    Tick,
    /// A key of the config store changed (or was deleted): the services that read it and restart
    /// on a change do.
    ConfigChanged { key: String },
}

/// Why the controller stops a process on purpose, and what follows when it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopIntent {
    /// Taken down (with the reason): `stopped`, and the shutdown goes on.
    Down(String),
    /// Unhealthy (not ready in time, liveness critical): handled like a crash with this reason.
    Kill(String),
    /// Restarted on request or because a service it binds to was restarted: started again.
    Restart(String),
    /// Shed under node pressure: `stopped` until the pressure clears.
    Shed(String),
    /// Stopped to make room for `by`, of higher priority: `pending` until placed again.
    Preempt { by: String, reason: String },
    /// Replaced by a rolling update: started again on the installed manifest's definition.
    Replace(String),
}

impl StopIntent {
    fn reason(&self) -> &str {
        match self {
            StopIntent::Down(r)
            | StopIntent::Kill(r)
            | StopIntent::Restart(r)
            | StopIntent::Shed(r)
            | StopIntent::Replace(r) => r,
            StopIntent::Preempt { reason, .. } => reason,
        }
    }
}

/// The probe or timer running for a service's current process, which reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Readiness,
    /// The start-up timeout of a service that says itself when it is ready (`notify`).
    Notify,
    Liveness,
    RestartTimer,
}

/// One managed service of the stack.
#[derive(Debug)]
struct Managed {
    spec: ServiceSpec,
    /// The node it runs on: its pin, else where it was placed (kept across restarts while the
    /// node is up); `None` until placed.
    node: Option<String>,
    state: ServiceState,
    reason: Option<String>,
    since: DateTime<Utc>,
    pid: Option<u32>,
    generation: u64,
    restarts: Restarts,
    restart_count: u32,
    /// The probe or timer of the current process, until it reports or is cancelled.
    watch: Option<Watch>,
    registered: bool,
    stop: Option<StopIntent>,
    /// Its node is the one it ran on before the orchestrator restarted: it is started there
    /// (and adopted, if it still runs), not placed anew.
    resumed: bool,
    /// Why it runs where it runs, or why it waits: its last placement.
    placement: Option<String>,
    /// Set by a restart after having been ready: services bound to this one restart once it is
    /// ready again.
    rebind: bool,
    /// Stopped by load shedding; started again when its node's pressure has cleared.
    shed: bool,
    /// The pid whose `READY=1` was reported before the agent's answer to its launch (a fast
    /// service): ready as soon as the launch answers with that pid.
    notified: Option<u32>,
    /// A config key it reads changed after its launch read the values: it restarts once its
    /// process runs.
    config_stale: bool,
}

/// A start-up run in progress.
#[derive(Debug)]
struct Run {
    id: Uuid,
    startup: Startup,
    t0: Instant,
    started_at: DateTime<Utc>,
    timings: BTreeMap<String, ServiceTiming>,
}

/// A new version waiting for the services it replaces to stop.
#[derive(Debug)]
struct Replacement {
    version: i64,
    manifest: Manifest,
    graph: Graph,
    run_id: Uuid,
    /// Replicas kept running the old version, to be replaced by rolling updates.
    rolled: BTreeSet<String>,
    from_version: i64,
    good: rollout::GoodVersions,
    reverting: bool,
}

/// Stopping services wave by wave (reverse dependency order).
#[derive(Debug)]
struct Teardown {
    waves: VecDeque<Vec<String>>,
    waiting: BTreeSet<String>,
    replies: Vec<RequestId>,
    stopped: usize,
    /// The stack to install and start once everything is stopped.
    then: Option<Replacement>,
    /// Why the services are stopped, in their `stopping` and `stopped` events.
    reason: String,
}

/// The applied stack.
#[derive(Debug)]
struct Stack {
    version: i64,
    manifest: Manifest,
    graph: Graph,
    services: BTreeMap<String, Managed>,
    run: Option<Run>,
    /// Services waiting for a slot to be started again, highest priority first.
    queue: BTreeSet<(Reverse<u8>, String)>,
    teardown: Option<Teardown>,
    desired: Desired,
    /// Services that found no node, since when.
    unplaced: BTreeMap<String, Instant>,
    /// Rolling updates in progress, by service.
    rollouts: BTreeMap<String, rollout::Rollout>,
}

/// Details of a transition besides the state.
#[derive(Debug, Default)]
struct Detail {
    reason: Option<String>,
    exit: Option<Exit>,
    attempt: Option<u32>,
    restart_in: Option<Duration>,
}

impl Detail {
    fn reason(reason: impl Into<String>) -> Detail {
        Detail { reason: Some(reason.into()), ..Detail::default() }
    }
}

/// The controller's state and decisions.
#[derive(Debug)]
pub struct Machine {
    settings: LifecycleSettings,
    stack: Option<Stack>,
    last_profile: Option<RunProfile>,
    last_reconcile: Instant,
    /// The effective priorities: they order start-up, restarts and shedding.
    effective: Effective,
    nodes: BTreeMap<String, shedding::Node>,
    /// The node inventory as last reported: where services may be placed.
    inventory: std::sync::Arc<Vec<orch_protocol::resources::NodeInfo>>,
    /// Preemptions in the budget's window.
    preemptions: crate::resources::preemption::BudgetWindow,
    /// Stale processes already asked to stop (node, service, pid).
    stale_stopped: BTreeSet<(String, String, u32)>,
    /// The last generation given out (one sequence for every service and stack).
    generation: u64,
    /// The time of the input being handled.
    now: Now,
    /// The effects decided so far for the input being handled.
    out: Vec<Effect>,
}

impl Machine {
    pub fn new(settings: LifecycleSettings, effective: Effective, now: Now) -> Machine {
        Machine {
            preemptions: crate::resources::preemption::BudgetWindow::new(settings.preemption),
            settings,
            stack: None,
            last_profile: None,
            last_reconcile: now.instant,
            effective,
            nodes: BTreeMap::new(),
            inventory: Default::default(),
            stale_stopped: BTreeSet::new(),
            generation: 0,
            now,
            out: Vec::new(),
        }
    }

    /// Takes one input at `now`; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Resume { version, manifest, desired, run_id, placed } => {
                self.resume(version, *manifest, desired, run_id, placed)
            }
            Input::Nodes(nodes) => self.nodes_changed(nodes),
            Input::Apply { request, manifest, body, source } => self.apply(request, manifest, body, source),
            Input::ManifestStored { request, manifest, source, run_id, revert, result } => match result {
                Ok(version) => self.manifest_stored(request, *manifest, source, run_id, version, revert),
                Err(e) => self.reply(Reply::Applied(request, Err(e.into()))),
            },
            Input::Down { request } => self.down(request),
            Input::DesiredStored { request, result } => match result {
                Ok(()) => self.take_down(request),
                Err(e) => self.reply(Reply::Stopped(request, Err(e.into()))),
            },
            Input::Restart { request, service } => {
                let result = self.restart_request(&service);
                self.reply(Reply::Restart(request, result));
            }
            Input::Launched { service, generation, result } => {
                if self.current(&service, generation) {
                    self.launched(&service, result);
                }
            }
            Input::Ready { service, generation } => {
                if let Some(m) = self.current_mut(&service, generation) {
                    m.watch = None;
                    self.ready(&service);
                }
            }
            Input::Notified(report) => self.notified(report),
            Input::NotifyDue { service, generation } => self.notify_due(&service, generation),
            Input::Unhealthy { service, generation, reason } => {
                if let Some(m) = self.current_mut(&service, generation) {
                    m.watch = None;
                    self.stop_process(&service, StopIntent::Kill(reason));
                }
            }
            Input::Stopped { service, generation, exit } => {
                if self.current(&service, generation) {
                    self.stopped(&service, exit);
                }
            }
            Input::RestartDue { service, generation } => self.restart_due(service, generation),
            Input::Exited(report) => self.exited(report),
            Input::Pressure(report) => self.pressure(report),
            Input::Priorities(effective) => self.reprioritize(effective),
            Input::Status { node, result, asked } => self.reconcile(&node, result, asked),
            Input::Tick => self.tick(),
            Input::ConfigChanged { key } => self.config_changed(&key),
        }
        // Idempotent: with nothing changed since the last input, they do nothing. Rolling
        // updates move on once a finished run is out of the way, and may queue a launch.
        self.pump();
        self.roll();
        self.pump();
        std::mem::take(&mut self.out)
    }

    /// The stack as the API shows it, with its graph.
    pub fn view(&self) -> Option<(StackView, Graph)> {
        let stack = self.stack.as_ref()?;
        let levels = stack.graph.levels();
        let mut counts = BTreeMap::new();
        let services = stack
            .services
            .iter()
            .map(|(name, m)| {
                *counts.entry(m.state).or_insert(0) += 1;
                ManagedService {
                    name: name.clone(),
                    replica_of: m.spec.replica_of.clone(),
                    resources: m.spec.resources,
                    group: m.spec.group.clone(),
                    placement: m.placement.clone(),
                    node: m.node.clone(),
                    state: m.state,
                    reason: m.reason.clone(),
                    pid: m.pid,
                    restarts: m.restart_count,
                    since: m.since,
                    priority: priority_of(&self.effective, name, &m.spec),
                    critical: m.spec.critical,
                    depends_on: m.spec.depends_on.keys().cloned().collect(),
                    level: levels.get(name).copied().unwrap_or(0),
                }
            })
            .collect();
        let view = StackView {
            version: stack.version,
            desired: stack.desired,
            run_id: stack.run.as_ref().map(|r| r.id),
            counts,
            services,
            rollouts: stack.rollouts.values().map(rollout::Rollout::data).collect(),
        };
        Some((view, stack.graph.clone()))
    }

    /// The run in progress, or the last one since the machine began.
    pub fn profile(&self) -> Option<RunProfile> {
        let current = self.stack.as_ref().and_then(|s| s.run.as_ref().map(|r| run_profile(s, r, None)));
        current.or_else(|| self.last_profile.clone())
    }

    /// The units of `service` (its replicas, or itself) with the node each runs on; `None` when
    /// the stack has no such service.
    pub fn units_of(&self, service: &str) -> Option<Vec<(String, Option<String>)>> {
        let stack = self.stack.as_ref()?;
        let units: Vec<(String, Option<String>)> = stack
            .manifest
            .units_of(service)
            .into_iter()
            .filter_map(|unit| stack.services.get(&unit).map(|m| (unit, m.node.clone())))
            .collect();
        (!units.is_empty()).then_some(units)
    }

    fn reply(&mut self, reply: Reply) {
        self.out.push(Effect::Reply(reply));
    }

    fn publish(&mut self, event: Event) {
        self.out.push(Effect::Publish { event, at: self.now.wall });
    }

    fn managed(&mut self, name: &str) -> Option<&mut Managed> {
        self.stack.as_mut().and_then(|s| s.services.get_mut(name))
    }

    fn current(&self, service: &str, generation: u64) -> bool {
        self.stack.as_ref().and_then(|s| s.services.get(service)).is_some_and(|m| m.generation == generation)
    }

    fn current_mut(&mut self, service: &str, generation: u64) -> Option<&mut Managed> {
        self.managed(service).filter(|m| m.generation == generation)
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Ends the probe or timer of `name`, if one runs.
    fn cancel_watch(&mut self, name: &str) {
        if let Some(m) = self.managed(name)
            && m.watch.take().is_some()
        {
            self.out.push(Effect::Cancel { service: name.to_string() });
        }
    }

    /// Invalidates everything pending for the current process (probe, timer, late reports).
    fn bump(&mut self, name: &str) {
        let generation = self.next_generation();
        if let Some(m) = self.managed(name) {
            m.generation = generation;
        }
        self.cancel_watch(name);
    }

    /// The time since the run began.
    fn run_clock(&self, run: &Run) -> Duration {
        self.now.instant.saturating_duration_since(run.t0)
    }

    /// Records a transition of `name` (state row and event) and logs it.
    fn transition(&mut self, name: &str, state: ServiceState, detail: Detail) {
        let Some(stack) = self.stack.as_mut() else { return };
        let run_id = stack.run.as_ref().map(|r| r.id);
        let version = stack.version;
        let Some(m) = stack.services.get_mut(name) else { return };
        let previous = m.state;
        m.state = state;
        m.reason = detail.reason.clone();
        m.since = self.now.wall;
        match state {
            ServiceState::Crashed | ServiceState::Failed | ServiceState::Blocked => {
                tracing::warn!(service = name, from = %previous, to = %state, reason = detail.reason.as_deref(), "lifecycle")
            }
            _ => {
                tracing::info!(service = name, from = %previous, to = %state, reason = detail.reason.as_deref(), pid = m.pid, "lifecycle")
            }
        }
        let data = TransitionData {
            service: name.to_string(),
            node: m.node.clone(),
            state,
            previous,
            reason: detail.reason,
            pid: m.pid,
            exit: detail.exit,
            attempt: detail.attempt,
            restart_in_ms: detail.restart_in.map(|d| d.as_millis() as u64),
            manifest_version: version,
            run_id,
        };
        self.out.push(Effect::Record(Transition { at: self.now.wall, data, restarts: m.restart_count }));
    }

    /// The effective priority of every unit (each replica has its service's), as start-up runs
    /// order by them.
    fn unit_priorities(&self) -> BTreeMap<String, u8> {
        let Some(stack) = &self.stack else { return BTreeMap::new() };
        stack.services.iter().map(|(name, m)| (name.clone(), priority_of(&self.effective, name, &m.spec))).collect()
    }

    /// Puts `name` in the queue of services waiting for a slot, by its effective priority.
    fn enqueue(&mut self, name: &str) {
        let Some(stack) = self.stack.as_mut() else { return };
        let Some(m) = stack.services.get(name) else { return };
        stack.queue.insert((Reverse(priority_of(&self.effective, name, &m.spec)), name.to_string()));
    }
}

/// The profile of `run` so far, or as it finished with `outcome`.
fn run_profile(stack: &Stack, run: &Run, outcome: Option<RunOutcome>) -> RunProfile {
    RunProfile {
        run_id: run.id,
        manifest_version: stack.version,
        started_at: run.started_at,
        finished: outcome.is_some(),
        outcome: outcome.map(|o| o.as_str().to_string()),
        profile: profile::profile(&stack.graph, &run.timings),
    }
}

/// A service's effective priority: as the priority task says, else its manifest's. Replicas have
/// their service's.
fn priority_of(effective: &BTreeMap<String, u8>, name: &str, spec: &ServiceSpec) -> u8 {
    let service = spec.replica_of.as_deref().unwrap_or(name);
    effective.get(service).copied().unwrap_or(spec.priority)
}
