//! The controller task: the state of the applied stack and every transition of its services.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orch_protocol::agent::{self, Exit, LogsRequest, StartRequest, StopRequest};
use orch_protocol::events::{self, EventKind, ManifestAppliedData, RunFinishedData, TransitionData};
use orch_protocol::lifecycle::ServiceState;
use orch_protocol::{ErrorCode, Subjects};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::registration::{RegistryOp, instance_id, registration, spawn_registrar};
use super::{Applied, ControlError, ControllerConfig, Input, RunProfile, ServiceView, StackView};
use crate::agent::client::{AgentClient, AgentError};
use crate::health::probe::Prober;
use crate::lifecycle::graph::Graph;
use crate::lifecycle::manifest::{Manifest, RestartPolicy, ServiceSpec};
use crate::lifecycle::probes::{self, Endpoint};
use crate::lifecycle::profile::{self, Timing};
use crate::lifecycle::recorder::Record;
use crate::lifecycle::restart::{Decision, Restarts};
use crate::lifecycle::shedding::{self, Step};
use crate::lifecycle::startup::{self, Action, Startup};
use crate::storage::{self, lifecycle::StateRow};

/// Why the controller is stopping a process on purpose, and what follows when it has ended.
#[derive(Debug, Clone)]
enum StopIntent {
    /// Taken down (with the reason): `stopped`, and the shutdown goes on.
    Down(String),
    /// Unhealthy (not ready in time, liveness critical): handled like a crash with this reason.
    Kill(String),
    /// Restarted on request or because a service it binds to was restarted: started again.
    Restart(String),
    /// Shed under node pressure: `stopped` until the pressure clears.
    Shed(String),
}

struct Managed {
    spec: ServiceSpec,
    state: ServiceState,
    reason: Option<String>,
    since: DateTime<Utc>,
    pid: Option<u32>,
    generation: u64,
    restarts: Restarts,
    restart_count: u32,
    /// The probe or back-off timer of the current generation.
    task: Option<AbortHandle>,
    registered: bool,
    stop: Option<StopIntent>,
    /// Set by a restart after having been ready: services bound to this one restart once it is
    /// ready again.
    rebind: bool,
    /// Stopped by load shedding; started again when its node's pressure has cleared.
    shed: bool,
}

struct Run {
    id: Uuid,
    startup: Startup,
    t0: Instant,
    started_at: DateTime<Utc>,
    timings: BTreeMap<String, Timing>,
}

/// Stopping services wave by wave (reverse dependency order).
struct Shutdown {
    waves: VecDeque<Vec<String>>,
    waiting: BTreeSet<String>,
    replies: Vec<oneshot::Sender<Result<usize, ControlError>>>,
    stopped: usize,
    /// A stack to install and start once everything is stopped (a new manifest replacing changed
    /// services).
    then: Option<(i64, Manifest, Graph, Uuid)>,
    /// Why the services are stopped, in their `stopping` and `stopped` events.
    reason: String,
}

struct Stack {
    version: i64,
    manifest: Manifest,
    graph: Graph,
    services: BTreeMap<String, Managed>,
    run: Option<Run>,
    /// Services waiting for a slot to be started again, highest priority first.
    queue: BTreeSet<(Reverse<u8>, String)>,
    shutdown: Option<Shutdown>,
    up: bool,
}

pub(super) struct Task {
    config: ControllerConfig,
    pool: PgPool,
    subjects: Subjects,
    agents: AgentClient,
    prober: Prober,
    records: mpsc::UnboundedSender<Record>,
    registrar: mpsc::UnboundedSender<RegistryOp>,
    tx: mpsc::UnboundedSender<Input>,
    stack: Option<Stack>,
    last_profile: Option<RunProfile>,
    last_reconcile: Instant,
    priorities: crate::priority::Priorities,
    /// The effective priorities: they order start-up, restarts and shedding.
    effective: crate::priority::Effective,
    nodes: BTreeMap<String, shedding::Node>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Task {
    /// The task, with the stored stack installed (and a start-up run begun when it is wanted up).
    pub(super) async fn resume(
        config: ControllerConfig,
        with: super::Collaborators,
        tx: mpsc::UnboundedSender<Input>,
    ) -> anyhow::Result<Task> {
        let super::Collaborators { pool, nats, registry, prober, records, priorities, metrics } = with;
        let subjects = config.subjects.clone();
        let registrar = spawn_registrar(registry);
        let mut task = Task {
            config,
            pool: pool.clone(),
            agents: AgentClient::new(nats, subjects.clone()),
            subjects,
            prober,
            records,
            registrar,
            tx,
            stack: None,
            last_profile: None,
            last_reconcile: Instant::now(),
            effective: priorities.watch().borrow().clone(),
            priorities,
            nodes: BTreeMap::new(),
            metrics,
        };
        if let Some(stored) =
            storage::retry("loading the applied manifest", || storage::lifecycle::latest_manifest(&pool)).await?
        {
            match Manifest::parse(&stored.body).and_then(|m| Graph::new(&m).map(|g| (m, g))) {
                Ok((manifest, graph)) => {
                    let up = stored.desired == "up";
                    tracing::info!(
                        version = stored.version,
                        services = manifest.services.len(),
                        up,
                        "resuming the applied stack"
                    );
                    task.install(stored.version, manifest, graph, up);
                    if up {
                        task.begin_run(Uuid::now_v7(), &BTreeSet::new());
                    }
                }
                Err(e) => {
                    tracing::error!(version = stored.version, error = %e, "the stored manifest no longer validates; not resuming it")
                }
            }
        }
        Ok(task)
    }

    /// Handles inputs until the orchestrator stops; probes and timers of the services end with it.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>, mut shutdown: crate::shutdown::Shutdown) {
        loop {
            let input = tokio::select! {
                input = rx.recv() => input,
                _ = shutdown.requested() => None,
            };
            let Some(input) = input else { break };
            self.handle(input).await;
            self.pump();
        }
        if let Some(stack) = self.stack.as_mut() {
            for m in stack.services.values_mut() {
                if let Some(task) = m.task.take() {
                    task.abort();
                }
            }
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Apply { manifest, body, source, reply } => {
                let _ = reply.send(self.apply(*manifest, body, source).await);
            }
            Input::Down { reply } => self.down(reply, false).await,
            Input::Halt { reply } => self.down(reply, true).await,
            Input::Restart { service, reply } => {
                let _ = reply.send(self.restart_request(&service));
            }
            Input::View { reply } => {
                let _ = reply.send(self.view());
            }
            Input::Profile { reply } => {
                let current = self.stack.as_ref().and_then(|s| s.run.as_ref().map(|r| run_profile(s, r, false, None)));
                let _ = reply.send(current.or_else(|| self.last_profile.clone()));
            }
            Input::Logs { service, lines, reply } => {
                let node = self.stack.as_ref().and_then(|s| s.services.get(&service)).map(|m| m.spec.node.clone());
                let agents = self.agents.clone();
                tokio::spawn(async move {
                    let result = match node {
                        None => Err(ControlError::UnknownService(service)),
                        Some(node) => agents.logs(&node, &LogsRequest { service, lines }).await.map_err(Into::into),
                    };
                    let _ = reply.send(result);
                });
            }
            Input::Launched { service, generation, result } => self.launched(&service, generation, result),
            Input::Ready { service, generation } => {
                if self.current(&service, generation) {
                    self.ready(&service);
                }
            }
            Input::Unhealthy { service, generation, reason } => {
                if self.current(&service, generation) {
                    self.stop_process(&service, StopIntent::Kill(reason));
                }
            }
            Input::Stopped { service, generation, exit } => {
                if self.current(&service, generation) {
                    self.stopped(&service, exit);
                }
            }
            Input::RestartDue { service, generation } => {
                let Some(stack) = self.stack.as_mut() else { return };
                if let Some(m) = stack.services.get(&service)
                    && m.generation == generation
                    && m.state == ServiceState::Restarting
                {
                    stack.queue.insert((Reverse(priority_of(&self.effective, &service, &m.spec)), service));
                }
            }
            Input::Exited(report) => self.exited(report),
            Input::Pressure(report) => self.pressure(report),
            Input::Priorities => self.reprioritize(),
            Input::Status { node, result, asked } => self.reconcile(&node, result, asked),
            Input::Tick => self.tick(),
        }
    }

    fn current(&self, service: &str, generation: u64) -> bool {
        self.stack.as_ref().and_then(|s| s.services.get(service)).is_some_and(|m| m.generation == generation)
    }

    /// Replaces the stack in memory (nothing runs yet).
    fn install(&mut self, version: i64, manifest: Manifest, graph: Graph, up: bool) {
        let now = Utc::now();
        let services = manifest
            .services
            .iter()
            .map(|(name, spec)| {
                let managed = Managed {
                    spec: spec.clone(),
                    state: ServiceState::Stopped,
                    reason: None,
                    since: now,
                    pid: None,
                    generation: 0,
                    restarts: Restarts::new(spec.restart.clone()),
                    restart_count: 0,
                    task: None,
                    registered: false,
                    stop: None,
                    rebind: false,
                    shed: false,
                };
                (name.clone(), managed)
            })
            .collect();
        self.priorities.set_defaults(manifest.services.iter().map(|(n, s)| (n.clone(), s.priority)).collect());
        self.stack =
            Some(Stack { version, manifest, graph, services, run: None, queue: BTreeSet::new(), shutdown: None, up });
    }

    async fn apply(&mut self, manifest: Manifest, body: String, source: String) -> Result<Applied, ControlError> {
        let graph = Graph::new(&manifest).expect("the caller validated the manifest");
        if let Some(stack) = &self.stack {
            if stack.shutdown.is_some() {
                return Err(ControlError::Busy("the stack is being stopped; apply again once it has stopped".into()));
            }
            if stack.run.is_some() {
                return Err(ControlError::Busy(
                    "a start-up run is in progress; apply again once it has finished (GET /api/v1/stack/profile)"
                        .into(),
                ));
            }
        }
        let stored = storage::lifecycle::insert_manifest(&self.pool, &body, &source).await?;
        let names: Vec<String> = manifest.services.keys().cloned().collect();
        storage::lifecycle::retain_services(&self.pool, &names).await?;
        self.event(
            EventKind::ManifestApplied,
            events::SYSTEM_SERVICE,
            &ManifestAppliedData { version: stored.version, source, services: manifest.services.len() },
        );
        tracing::info!(version = stored.version, services = manifest.services.len(), "manifest applied");
        let run_id = Uuid::now_v7();
        // Running services that changed or left the stack are stopped first; unchanged ones stay.
        let mut replaced = Vec::new();
        let mut keep = BTreeSet::new();
        if let Some(stack) = &self.stack {
            for (name, m) in &stack.services {
                if !(m.state.running() || m.state == ServiceState::Restarting) {
                    continue;
                }
                if manifest.services.get(name) == Some(&m.spec) && m.state == ServiceState::Ready {
                    keep.insert(name.clone());
                } else {
                    replaced.push(name.clone());
                }
            }
        }
        let applied = Applied { version: stored.version, run_id, services: manifest.services.len(), replaced };
        if applied.replaced.is_empty() {
            self.adopt(stored.version, manifest, graph, &keep);
            self.begin_run(run_id, &keep);
        } else {
            let stack = self.stack.as_mut().expect("services were running");
            let waves = startup::shutdown_waves(&stack.graph, &applied.replaced);
            stack.run = None;
            stack.shutdown = Some(Shutdown {
                waves: waves.into(),
                waiting: BTreeSet::new(),
                replies: Vec::new(),
                stopped: 0,
                then: Some((stored.version, manifest, graph, run_id)),
                reason: format!("replaced by manifest version {}", stored.version),
            });
            self.next_wave();
        }
        Ok(applied)
    }

    /// Installs a new stack, carrying over the services in `keep` (running, unchanged).
    fn adopt(&mut self, version: i64, manifest: Manifest, graph: Graph, keep: &BTreeSet<String>) {
        let mut carried: BTreeMap<String, Managed> = BTreeMap::new();
        if let Some(old) = self.stack.take() {
            for (name, m) in old.services {
                if keep.contains(&name) {
                    carried.insert(name, m);
                } else if let Some(task) = m.task {
                    task.abort();
                }
            }
        }
        self.install(version, manifest, graph, true);
        let stack = self.stack.as_mut().expect("just installed");
        for (name, m) in carried {
            stack.services.insert(name, m);
        }
    }

    /// Starts a start-up run of every service not in `ready` (those already run and are ready).
    fn begin_run(&mut self, id: Uuid, ready: &BTreeSet<String>) {
        let Some(stack) = self.stack.as_mut() else { return };
        stack.up = true;
        let mut startup = Startup::new(&stack.manifest, stack.graph.clone());
        startup.set_priorities(&self.effective);
        for name in ready {
            startup.already_ready(name);
        }
        let run = Run { id, startup, t0: Instant::now(), started_at: Utc::now(), timings: BTreeMap::new() };
        tracing::info!(run = %id, services = stack.services.len() - ready.len(), "start-up run begins");
        let (pool, version, started_at) = (self.pool.clone(), stack.version, run.started_at);
        tokio::spawn(async move {
            let insert = || storage::lifecycle::insert_run(&pool, id, version, started_at);
            if let Err(e) = storage::retry("recording a start-up run", insert).await {
                tracing::warn!(error = %e, "start-up run not recorded");
            }
        });
        stack.run = Some(run);
        let names: Vec<String> = stack.services.keys().filter(|n| !ready.contains(*n)).cloned().collect();
        for name in names {
            self.transition(&name, ServiceState::Pending, Detail::default());
        }
    }

    async fn down(&mut self, reply: oneshot::Sender<Result<usize, ControlError>>, halt: bool) {
        let Some(stack) = self.stack.as_mut() else {
            let _ = reply.send(if halt { Ok(0) } else { Err(ControlError::NoStack) });
            return;
        };
        if !halt {
            stack.up = false;
            // A version still waiting to replace this one is taken down with it.
            let pending = stack.shutdown.as_ref().and_then(|s| s.then.as_ref()).map(|(version, ..)| *version);
            for version in std::iter::once(stack.version).chain(pending) {
                if let Err(e) = storage::lifecycle::set_desired(&self.pool, version, false).await {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        if let Some(shutdown) = stack.shutdown.as_mut() {
            shutdown.replies.push(reply);
            shutdown.then = None;
            return;
        }
        if let Some(run) = stack.run.take() {
            self.finish_run(run, "cancelled");
        }
        let stack = self.stack.as_mut().expect("checked above");
        stack.queue.clear();
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
        let reason = if halt { "the orchestrator is stopping" } else { "the stack was taken down" };
        for name in idle {
            self.bump(&name);
            self.transition(&name, ServiceState::Stopped, Detail::reason(reason));
        }
        let stack = self.stack.as_mut().expect("checked above");
        let waves = startup::shutdown_waves(&stack.graph, &running);
        stack.shutdown = Some(Shutdown {
            waves: waves.into(),
            waiting: BTreeSet::new(),
            replies: vec![reply],
            stopped: 0,
            then: None,
            reason: reason.into(),
        });
        self.next_wave();
    }

    /// Starts stopping the next wave, or finishes the shutdown when none is left.
    fn next_wave(&mut self) {
        loop {
            let Some(stack) = self.stack.as_mut() else { return };
            let Some(shutdown) = stack.shutdown.as_mut() else { return };
            if !shutdown.waiting.is_empty() {
                return;
            }
            let Some(wave) = shutdown.waves.pop_front() else {
                let shutdown = stack.shutdown.take().expect("checked above");
                tracing::info!(stopped = shutdown.stopped, "stack stopped");
                for reply in shutdown.replies {
                    let _ = reply.send(Ok(shutdown.stopped));
                }
                if let Some((version, manifest, graph, run_id)) = shutdown.then {
                    let keep: BTreeSet<String> = stack
                        .services
                        .iter()
                        .filter(|(n, m)| m.state == ServiceState::Ready && manifest.services.get(*n) == Some(&m.spec))
                        .map(|(n, _)| n.clone())
                        .collect();
                    self.adopt(version, manifest, graph, &keep);
                    self.begin_run(run_id, &keep);
                }
                return;
            };
            let wave: Vec<String> =
                wave.into_iter().filter(|n| stack.services.get(n).is_some_and(|m| m.state.running())).collect();
            shutdown.waiting.extend(wave.iter().cloned());
            let reason = shutdown.reason.clone();
            for name in &wave {
                self.stop_process(name, StopIntent::Down(reason.clone()));
            }
            if !wave.is_empty() {
                return;
            }
        }
    }

    fn managed(&mut self, name: &str) -> Option<&mut Managed> {
        self.stack.as_mut().and_then(|s| s.services.get_mut(name))
    }

    /// Invalidates everything pending for the current process (probe, timer, late reports).
    fn bump(&mut self, name: &str) {
        if let Some(m) = self.managed(name) {
            m.generation += 1;
            if let Some(task) = m.task.take() {
                task.abort();
            }
        }
    }

    fn launch(&mut self, name: &str) {
        let Some(stack) = self.stack.as_mut() else { return };
        let version = stack.version;
        if let Some(run) = stack.run.as_mut() {
            let at = run.t0.elapsed();
            let timing =
                run.timings.entry(name.to_string()).or_insert(Timing { queued: at, started: None, ready: None });
            if timing.started.is_some() {
                // Started again (a restart within the run): it did not wait for a slot.
                timing.queued = at;
            }
            timing.started = Some(at);
            timing.ready = None;
        }
        let Some(m) = stack.services.get_mut(name) else { return };
        m.generation += 1;
        m.stop = None;
        m.pid = None;
        m.restarts.started(Instant::now());
        let generation = m.generation;
        let spec = &m.spec;
        let mut env = spec.env.clone();
        env.entry("ORCH_SERVICE".into()).or_insert_with(|| name.to_string());
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
        };
        let node = spec.node.clone();
        self.transition(name, ServiceState::Starting, Detail::default());
        // Each launch is its own request, so a slow start (or a slow node) holds up no other.
        let (agents, controller, service) = (self.agents.clone(), self.tx.clone(), name.to_string());
        tokio::spawn(async move {
            let result = match agents.start(&node, &request).await {
                Ok(started) => Ok(started.pid),
                // Still running from before (a standalone agent outlives the orchestrator): adopt
                // the process.
                Err(AgentError::Refused { code: ErrorCode::Conflict, .. }) => match agents.status(&node).await {
                    Ok(status) => status
                        .running
                        .into_iter()
                        .find(|r| r.service == service)
                        .map(|r| r.pid)
                        .ok_or_else(|| "the agent reported it running, then not".to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            let _ = controller.send(Input::Launched { service, generation, result });
        });
    }

    fn launched(&mut self, name: &str, generation: u64, result: Result<u32, String>) {
        if !self.current(name, generation) {
            return;
        }
        let m = self.managed(name).expect("current");
        match result {
            Ok(pid) => {
                m.pid = Some(pid);
                let stop = m.stop.clone();
                self.transition(name, ServiceState::Started, Detail::default());
                if let Some(run) = self.stack.as_mut().and_then(|s| s.run.as_mut()) {
                    run.startup.started(name);
                }
                if let Some(intent) = stop {
                    self.stop_process(name, intent);
                    return;
                }
                let m = self.managed(name).expect("current");
                let Some(readiness) = m.spec.readiness.clone() else {
                    self.ready(name);
                    return;
                };
                let (endpoint, timeout) = (endpoint(name, &m.spec), m.spec.startup_timeout);
                let (prober, tx, poll) = (self.prober.clone(), self.tx.clone(), self.config.startup_probe_interval);
                let service = name.to_string();
                let task = tokio::spawn(async move {
                    let input = match probes::wait_ready(&prober, &readiness, &endpoint, poll, timeout).await {
                        Ok(()) => Input::Ready { service, generation },
                        Err(output) => Input::Unhealthy {
                            service,
                            generation,
                            reason: format!(
                                "not ready within {} (startup_timeout): {output}",
                                humantime::format_duration(timeout)
                            ),
                        },
                    };
                    let _ = tx.send(input);
                });
                self.managed(name).expect("current").task = Some(task.abort_handle());
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

    fn ready(&mut self, name: &str) {
        self.transition(name, ServiceState::Ready, Detail::default());
        let Some(stack) = self.stack.as_mut() else { return };
        if let Some(run) = stack.run.as_mut() {
            run.startup.ready(name);
            if let Some(t) = run.timings.get_mut(name) {
                t.ready = Some(run.t0.elapsed());
            }
        }
        let version = stack.version;
        let m = stack.services.get_mut(name).expect("present");
        m.restarts.healthy(Instant::now());
        let rebind = std::mem::take(&mut m.rebind);
        if let Some(port) = m.spec.port {
            m.registered = true;
            let _ = self.registrar.send(RegistryOp::Register(Box::new(registration(name, &m.spec, port, version))));
        }
        if let Some(liveness) = m.spec.liveness.clone() {
            let (endpoint, prober, tx) = (endpoint(name, &m.spec), self.prober.clone(), self.tx.clone());
            let (service, generation) = (name.to_string(), m.generation);
            let task = tokio::spawn(async move {
                let output = probes::watch_liveness(&prober, &liveness, &endpoint).await;
                let reason = format!("liveness check critical: {output}");
                let _ = tx.send(Input::Unhealthy { service, generation, reason });
            });
            m.task = Some(task.abort_handle());
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

    /// Stops the current process of `name` on purpose; `intent` says what follows.
    fn stop_process(&mut self, name: &str, intent: StopIntent) {
        let Some(m) = self.managed(name) else { return };
        if let Some(task) = m.task.take() {
            task.abort();
        }
        m.stop = Some(intent.clone());
        let (state, generation, node) = (m.state, m.generation, m.spec.node.clone());
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
                let (agents, tx, service) = (self.agents.clone(), self.tx.clone(), name.to_string());
                tokio::spawn(async move {
                    let exit = match agents.stop(&node, &request).await {
                        Ok(stopped) => Some(stopped.exit),
                        Err(e) => {
                            // Not running any more (its end report may be on the way), or the
                            // agent is gone with it: either way the process is no longer there.
                            tracing::info!(service = %service, error = %e, "stop: the process was already gone");
                            None
                        }
                    };
                    let _ = tx.send(Input::Stopped { service, generation, exit });
                });
            }
            ServiceState::Stopping => {}
            _ => self.stopped(name, None),
        }
    }

    /// The process stopped on purpose has ended.
    fn stopped(&mut self, name: &str, exit: Option<Exit>) {
        let Some(m) = self.managed(name) else { return };
        m.pid = None;
        let intent = m.stop.take();
        match intent {
            Some(StopIntent::Kill(reason)) => self.crashed(name, reason, exit, true),
            Some(StopIntent::Restart(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
                let stack = self.stack.as_mut().expect("present");
                let priority = priority_of(&self.effective, name, &stack.services[name].spec);
                stack.queue.insert((Reverse(priority), name.to_string()));
            }
            Some(StopIntent::Shed(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
            }
            Some(StopIntent::Down(reason)) => {
                self.transition(name, ServiceState::Stopped, Detail { exit, ..Detail::reason(reason) });
                if let Some(shutdown) = self.stack.as_mut().and_then(|s| s.shutdown.as_mut())
                    && shutdown.waiting.remove(name)
                {
                    shutdown.stopped += 1;
                }
                self.next_wave();
            }
            None => {}
        }
    }

    /// A process-end report from an agent.
    fn exited(&mut self, report: agent::Exited) {
        let Some(stack) = self.stack.as_ref() else { return };
        let Some(m) = stack.services.get(&report.service) else { return };
        if m.spec.node != report.node || m.pid != Some(report.pid) || m.stop.is_some() {
            // Another process, or one being stopped on purpose (its stop reply finishes it).
            return;
        }
        self.process_ended(&report.service, Some(report.exit));
    }

    /// The process ended by itself (`exit`) or vanished (`None`).
    fn process_ended(&mut self, name: &str, exit: Option<Exit>) {
        let Some(m) = self.managed(name) else { return };
        if let Some(task) = m.task.take() {
            task.abort();
        }
        m.pid = None;
        let clean = exit.is_some_and(Exit::success);
        let once = m.spec.restart.policy != RestartPolicy::Always;
        self.deregister(name);
        if clean && once {
            self.transition(name, ServiceState::Completed, Detail { exit, ..Detail::default() });
            if let Some(run) = self.stack.as_mut().and_then(|s| s.run.as_mut()) {
                run.startup.completed(name);
                if let Some(t) = run.timings.get_mut(name) {
                    t.ready = Some(run.t0.elapsed());
                }
            }
            return;
        }
        let reason = match exit {
            Some(e) => format!("the process ended: {e}"),
            None => "the process is gone (its agent no longer runs it)".to_string(),
        };
        self.crashed(name, reason, exit, !clean);
    }

    /// After a crash: restart by the policy, or give up.
    fn crashed(&mut self, name: &str, reason: String, exit: Option<Exit>, failure: bool) {
        self.transition(name, ServiceState::Crashed, Detail { exit, ..Detail::reason(reason.clone()) });
        let tx = self.tx.clone();
        let m = self.managed(name).expect("present");
        match m.restarts.ended(failure, Instant::now()) {
            Decision::Restart { after, attempt } => {
                m.restart_count += 1;
                m.rebind = true;
                let generation = m.generation;
                let service = name.to_string();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Input::RestartDue { service, generation });
                });
                m.task = Some(timer.abort_handle());
                let detail = Detail {
                    attempt: Some(attempt),
                    restart_in: Some(after),
                    ..Detail::reason(format!("restart {attempt} in {}", humantime::format_duration(after)))
                };
                self.transition(name, ServiceState::Restarting, detail);
            }
            Decision::Leave => self.give_up(name, reason),
            Decision::GiveUp(why) => self.give_up(name, why),
        }
    }

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
        if let Some(critical) = run.startup.aborted().map(str::to_string)
            && stack.shutdown.is_none()
        {
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
            // One at a time, the most recently started first.
            stack.shutdown = Some(Shutdown {
                waves: stops.into_iter().map(|s| vec![s]).collect(),
                waiting: BTreeSet::new(),
                replies: Vec::new(),
                stopped: 0,
                then: None,
                reason,
            });
            self.next_wave();
        }
    }

    fn restart_request(&mut self, name: &str) -> Result<(), ControlError> {
        let stack = self.stack.as_mut().ok_or(ControlError::NoStack)?;
        let m = stack.services.get_mut(name).ok_or_else(|| ControlError::UnknownService(name.to_string()))?;
        match m.state {
            ServiceState::Started | ServiceState::Ready => {
                m.rebind = true;
                self.stop_process(name, StopIntent::Restart("restart requested".into()));
            }
            ServiceState::Starting | ServiceState::Stopping | ServiceState::Pending => {
                return Err(ControlError::Busy(format!("{name} is {}; try again in a moment", m.state)));
            }
            _ => {
                // Not running: start it now, with a fresh start-rate budget.
                m.restarts = Restarts::new(m.spec.restart.clone());
                if let Some(task) = m.task.take() {
                    task.abort();
                }
                m.shed = false;
                stack.queue.insert((Reverse(priority_of(&self.effective, name, &m.spec)), name.to_string()));
            }
        }
        Ok(())
    }

    fn deregister(&mut self, name: &str) {
        if let Some(m) = self.managed(name)
            && std::mem::take(&mut m.registered)
        {
            let _ = self.registrar.send(RegistryOp::Deregister(instance_id(name)));
        }
    }

    /// Launches what may start now: the run's next services, then services waiting to restart,
    /// highest priority first, within `max_parallel`. Finishes the run when nothing is left.
    fn pump(&mut self) {
        let Some(stack) = self.stack.as_mut() else { return };
        if stack.shutdown.is_some() {
            return;
        }
        let mut launches = Vec::new();
        let mut blocked = Vec::new();
        if let Some(run) = stack.run.as_mut() {
            let now = run.t0.elapsed();
            for name in run.startup.launchable() {
                run.timings.entry(name).or_insert(Timing { queued: now, started: None, ready: None });
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
                "aborted"
            } else if run
                .startup
                .states()
                .values()
                .all(|s| matches!(s, startup::State::Ready | startup::State::Completed))
            {
                "ready"
            } else {
                "degraded"
            };
            self.finish_run(run, outcome);
        }
    }

    fn finish_run(&mut self, run: Run, outcome: &str) {
        let Some(stack) = self.stack.as_ref() else { return };
        let result = run_profile(stack, &run, true, Some(outcome.to_string()));
        tracing::info!(
            run = %run.id,
            outcome,
            wall_ms = result.profile.wall.as_millis() as u64,
            critical_path_ms = result.profile.critical_path.as_millis() as u64,
            efficiency = format!("{:.3}", result.profile.efficiency),
            "start-up run finished"
        );
        self.event(
            EventKind::RunFinished,
            events::SYSTEM_SERVICE,
            &RunFinishedData {
                run_id: run.id,
                manifest_version: stack.version,
                outcome: outcome.to_string(),
                wall_ms: result.profile.wall.as_millis() as u64,
                critical_path_ms: result.profile.critical_path.as_millis() as u64,
            },
        );
        let (pool, id, outcome) = (self.pool.clone(), run.id, outcome.to_string());
        let json = serde_json::to_value(&result).expect("a profile serializes");
        tokio::spawn(async move {
            let finish = || storage::lifecycle::finish_run(&pool, id, &outcome, &json);
            if let Err(e) = storage::retry("recording a start-up profile", finish).await {
                tracing::warn!(error = %e, "start-up profile not recorded");
            }
        });
        self.last_profile = Some(result);
    }

    /// Renews the leases of registered services; now and then, compares with the agents.
    fn tick(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        for (name, m) in &stack.services {
            if m.registered {
                let _ = self.registrar.send(RegistryOp::Heartbeat(instance_id(name)));
            }
        }
        if self.last_reconcile.elapsed() < self.config.reconcile_interval {
            return;
        }
        self.last_reconcile = Instant::now();
        let mut by_node: BTreeMap<String, Vec<(String, u64, u32)>> = BTreeMap::new();
        for (name, m) in &stack.services {
            if let (Some(pid), None, ServiceState::Started | ServiceState::Ready) = (m.pid, &m.stop, m.state) {
                by_node.entry(m.spec.node.clone()).or_default().push((name.clone(), m.generation, pid));
            }
        }
        for (node, asked) in by_node {
            let (agents, tx) = (self.agents.clone(), self.tx.clone());
            tokio::spawn(async move {
                let result = agents.status(&node).await;
                let _ = tx.send(Input::Status { node, result, asked });
            });
        }
    }

    /// Services the agent of `node` no longer runs have ended; their end report was lost.
    fn reconcile(&mut self, node: &str, result: Result<agent::Status, AgentError>, asked: Vec<(String, u64, u32)>) {
        let status = match result {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(node, error = %e, services = asked.len(), "cannot reach the agent to reconcile");
                return;
            }
        };
        for (name, generation, pid) in asked {
            let gone = !status.running.iter().any(|r| r.service == name && r.pid == pid);
            let still = self
                .stack
                .as_ref()
                .and_then(|s| s.services.get(&name))
                .is_some_and(|m| m.generation == generation && m.pid == Some(pid) && m.stop.is_none());
            if gone && still {
                tracing::warn!(service = %name, node, pid, "process gone without an end report");
                self.process_ended(&name, None);
            }
        }
    }

    fn view(&self) -> Option<(StackView, Graph)> {
        let stack = self.stack.as_ref()?;
        let levels = stack.graph.levels();
        let mut counts = BTreeMap::new();
        let services = stack
            .services
            .iter()
            .map(|(name, m)| {
                *counts.entry(m.state).or_insert(0) += 1;
                ServiceView {
                    name: name.clone(),
                    node: m.spec.node.clone(),
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
            desired: if stack.up { "up" } else { "down" },
            run_id: stack.run.as_ref().map(|r| r.id),
            counts,
            services,
        };
        Some((view, stack.graph.clone()))
    }

    /// Records a transition of `name` (state row and event) and logs it.
    fn transition(&mut self, name: &str, state: ServiceState, detail: Detail) {
        let Some(stack) = self.stack.as_mut() else { return };
        let run_id = stack.run.as_ref().map(|r| r.id);
        let version = stack.version;
        let Some(m) = stack.services.get_mut(name) else { return };
        let previous = m.state;
        let now = Utc::now();
        m.state = state;
        m.reason = detail.reason.clone();
        m.since = now;
        let data = TransitionData {
            service: name.to_string(),
            node: m.spec.node.clone(),
            state,
            previous,
            reason: detail.reason.clone(),
            pid: m.pid,
            exit: detail.exit,
            attempt: detail.attempt,
            restart_in_ms: detail.restart_in.map(|d| d.as_millis() as u64),
            manifest_version: version,
            run_id,
        };
        match state {
            ServiceState::Crashed | ServiceState::Failed | ServiceState::Blocked => {
                tracing::warn!(service = name, from = %previous, to = %state, reason = detail.reason.as_deref(), "lifecycle")
            }
            _ => {
                tracing::info!(service = name, from = %previous, to = %state, reason = detail.reason.as_deref(), pid = m.pid, "lifecycle")
            }
        }
        let encoded = events::encode(&self.subjects, EventKind::Lifecycle(state), name, name, now, &data);
        let row = StateRow {
            name: name.to_string(),
            manifest_version: version,
            node: m.spec.node.clone(),
            state: state.as_str().to_string(),
            reason: detail.reason,
            pid: m.pid.map(i64::from),
            restarts: m.restart_count as i32,
            since: now,
        };
        let _ = self.records.send(Record::State(row, encoded.into()));
    }

    /// The effective priorities changed: the run and the restart queue follow them.
    fn reprioritize(&mut self) {
        self.effective = self.priorities.watch().borrow().clone();
        let Some(stack) = self.stack.as_mut() else { return };
        if let Some(run) = stack.run.as_mut() {
            run.startup.set_priorities(&self.effective);
        }
        let queued = std::mem::take(&mut stack.queue);
        stack.queue = queued
            .into_iter()
            .map(|(_, name)| (Reverse(priority_of(&self.effective, &name, &stack.services[&name].spec)), name))
            .collect();
    }

    /// A node's pressure reading: announce threshold crossings, shed or restore one service.
    fn pressure(&mut self, report: agent::Pressure) {
        let Some(stack) = self.stack.as_ref() else { return };
        let on_node = |m: &&Managed| m.spec.node == report.node;
        let sheddable = |m: &&Managed| {
            m.spec.sheddable
                && m.stop.is_none()
                && !m.shed
                && matches!(m.state, ServiceState::Started | ServiceState::Ready)
        };
        let can_shed = stack.services.values().filter(on_node).any(|m| sheddable(&m));
        let can_restore = stack.up && stack.services.values().filter(on_node).any(|m| m.shed);
        let args = &self.config.shedding;
        let node = self.nodes.entry(report.node.clone()).or_default();
        let reaction = node.observe(report.cpu, report.memory, Instant::now(), args, can_shed, can_restore);
        let why = shedding::pressure_reason(report.cpu, report.memory, args);
        if let Some(high) = reaction.crossed {
            let (kind, message) = if high {
                (EventKind::PressureHigh, format!("node {} is under pressure: {why}", report.node))
            } else {
                (EventKind::PressureCleared, format!("node {} is no longer under pressure: {why}", report.node))
            };
            tracing::info!(node = %report.node, cpu = report.cpu, memory = report.memory, "{message}");
            let data = events::PressureData {
                node: report.node.clone(),
                cpu: report.cpu,
                memory: report.memory,
                cpu_threshold: args.cpu,
                memory_threshold: args.memory,
                message,
            };
            self.event(kind, &report.node, &data);
        }
        let stack = self.stack.as_ref().expect("checked above");
        let priority = |(name, m): (&String, &Managed)| (priority_of(&self.effective, name, &m.spec), name.clone());
        let (kind, chosen, reason) = match reaction.step {
            Step::Nothing => return,
            Step::Shed => {
                let lowest = stack.services.iter().filter(|(_, m)| on_node(m) && sheddable(m)).map(priority).min();
                let reason = format!("shed: {why} on node {}; lowest priority sheddable service", report.node);
                (EventKind::Shed, lowest, reason)
            }
            Step::Restore => {
                let clear = self.nodes[&report.node].clear_for(Instant::now()).unwrap_or_default();
                let highest = stack
                    .services
                    .iter()
                    .filter(|(_, m)| on_node(m) && m.shed)
                    .map(priority)
                    .max_by_key(|(p, name)| (*p, Reverse(name.clone())));
                let reason = format!(
                    "restored: node {} has been below the thresholds for {}s; highest priority shed service",
                    report.node,
                    clear.as_secs()
                );
                (EventKind::Restored, highest, reason)
            }
        };
        let Some((priority, name)) = chosen else { return };
        tracing::info!(service = %name, priority, node = %report.node, "{reason}");
        let data = events::ShedData {
            service: name.clone(),
            node: report.node.clone(),
            priority,
            reason: reason.clone(),
            cpu: report.cpu,
            memory: report.memory,
        };
        self.event(kind, &name, &data);
        self.metrics.shed_steps.get_or_create(&crate::metrics::ResultLabel { result: kind.name() }).inc();
        let stack = self.stack.as_mut().expect("checked above");
        let m = stack.services.get_mut(&name).expect("chosen from the stack");
        if kind == EventKind::Shed {
            m.shed = true;
            self.stop_process(&name, StopIntent::Shed(reason));
        } else {
            m.shed = false;
            m.restarts = Restarts::new(m.spec.restart.clone());
            stack.queue.insert((Reverse(priority), name));
        }
    }

    fn event(&self, kind: EventKind, service: &str, data: &impl Serialize) {
        let encoded = events::encode(&self.subjects, kind, service, service, Utc::now(), data);
        let _ = self.records.send(Record::Event(encoded.into()));
    }
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

impl StopIntent {
    fn reason(&self) -> String {
        match self {
            StopIntent::Down(r) | StopIntent::Kill(r) | StopIntent::Restart(r) | StopIntent::Shed(r) => r.clone(),
        }
    }
}

fn endpoint(name: &str, spec: &ServiceSpec) -> Endpoint {
    Endpoint {
        service: name.to_string(),
        instance_id: instance_id(name),
        address: spec.address.clone(),
        port: spec.port.unwrap_or(0),
    }
}

fn run_profile(stack: &Stack, run: &Run, finished: bool, outcome: Option<String>) -> RunProfile {
    RunProfile {
        run_id: run.id,
        manifest_version: stack.version,
        started_at: run.started_at,
        finished,
        outcome,
        profile: profile::profile(&stack.graph, &run.timings),
    }
}

/// A service's effective priority: as the priority task says, else its manifest's.
fn priority_of(effective: &BTreeMap<String, u8>, name: &str, spec: &ServiceSpec) -> u8 {
    effective.get(name).copied().unwrap_or(spec.priority)
}
