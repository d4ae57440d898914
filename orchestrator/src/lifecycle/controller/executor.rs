//! The controller task: feeds requests and reports into the state machine, one at a time, with
//! the time they are handled at, and carries out the effects it returns. Agent requests, probes
//! and back-off timers run in small tasks, so none holds up the loop; their results come back as
//! inputs. Records go to tasks that write them in order (transitions and events to the
//! recorder, runs to `super::runs`, registrations to `super::registration`). The two storage writes a reply depends on (a new manifest, a
//! stack wanted down) are awaited in the loop, and their result is handled before anything else.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::Utc;
use orch_protocol::ErrorCode;
use orch_protocol::agent::{self, StartRequest, StopRequest};
use orch_protocol::events::{self, EventKind};
use orch_protocol::lifecycle::{ServiceLogs, ServiceLogsRequest};
use orch_protocol::{Subjects, health::CheckSpec, principal};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::machine::{Asked, Desired, Effect, Event, Input, Machine, Now, Reply, RequestId, Transition};
use super::registration::{RegistryOp, spawn_registrar};
use super::runs::{RunWrite, spawn_run_recorder};
use super::{Collaborators, ControlError, ControllerConfig, Message, Request, StackApplied};
use crate::agent::client::{AgentClient, AgentError};
use crate::health::probe::Prober;
use crate::lifecycle::graph::Graph;
use crate::lifecycle::manifest::Manifest;
use crate::lifecycle::probes::{self, Endpoint};
use crate::lifecycle::recorder::Record;
use crate::storage::{self, lifecycle::StateRow};

pub(super) struct Executor {
    machine: Machine,
    /// Where the values of the config keys services read come from.
    config: crate::config_store::ConfigStore,
    startup_probe_interval: Duration,
    pool: PgPool,
    subjects: Subjects,
    agents: AgentClient,
    prober: Prober,
    records: mpsc::UnboundedSender<Record>,
    registrar: mpsc::UnboundedSender<RegistryOp>,
    runs: mpsc::UnboundedSender<RunWrite>,
    tx: mpsc::UnboundedSender<Message>,
    priorities: crate::priority::Priorities,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The probe or back-off timer of each service, as the machine asked for them.
    watches: HashMap<String, AbortHandle>,
    /// The node inventory.
    nodes: crate::resources::Nodes,
    replies: Replies,
    /// Who the changes being made are by (orch-protocol `principal`): the sender of the request
    /// being fed, with everything it leads to at once; the orchestrator for its own work (reports,
    /// timers, the later waves of a shutdown).
    acting: String,
}

impl Executor {
    pub(super) fn new(config: ControllerConfig, with: Collaborators, tx: mpsc::UnboundedSender<Message>) -> Executor {
        let Collaborators { pool, nats, registry, prober, records, priorities, metrics, nodes, config: store } = with;
        let effective = priorities.watch().borrow().clone();
        Executor {
            startup_probe_interval: config.settings.startup_probe_interval,
            machine: Machine::new(config.settings, effective, now()),
            runs: spawn_run_recorder(pool.clone()),
            pool,
            agents: AgentClient::new(nats, config.subjects.clone()),
            subjects: config.subjects,
            prober,
            records,
            registrar: spawn_registrar(registry),
            tx,
            priorities,
            metrics,
            watches: HashMap::new(),
            nodes,
            replies: Replies::default(),
            acting: principal::ORCHESTRATOR.into(),
            config: store,
        }
    }

    /// The stored stack to resume, as the machine's first input (installed, and started when it
    /// is wanted up, once the task runs).
    pub(super) async fn stored_stack(&self) -> anyhow::Result<Option<Input>> {
        let latest = || storage::lifecycle::latest_manifest(&self.pool);
        let Some(stored) = storage::retry("loading the applied manifest", latest).await? else { return Ok(None) };
        let placed =
            storage::retry("loading where services run", || storage::lifecycle::placed_nodes(&self.pool)).await?;
        match Manifest::parse(&stored.body).and_then(|m| Graph::new(&m).map(|_| m)) {
            Ok(manifest) => Ok(Some(Input::Resume {
                version: stored.version,
                manifest: Box::new(manifest),
                desired: Desired::from_stored(&stored.desired),
                run_id: Uuid::now_v7(),
                placed,
            })),
            Err(e) => {
                tracing::error!(version = stored.version, error = %e, "the stored manifest no longer validates; not resuming it");
                Ok(None)
            }
        }
    }

    /// Resumes the stored stack, then handles messages until the orchestrator stops; probes and
    /// timers of the services end with it.
    pub(super) async fn run(
        mut self,
        resume: Option<Input>,
        mut rx: mpsc::UnboundedReceiver<Message>,
        mut shutdown: crate::shutdown::Shutdown,
    ) {
        // The nodes first: a resumed stack is placed on them.
        self.feed(Input::Nodes(self.nodes.list()), principal::ORCHESTRATOR).await;
        if let Some(input) = resume {
            self.feed(input, principal::ORCHESTRATOR).await;
        }
        loop {
            let message = tokio::select! {
                message = rx.recv() => message,
                _ = shutdown.requested() => None,
            };
            match message {
                None => break,
                Some(Message::Request(request)) => self.request(request).await,
                Some(Message::Report(input)) => self.feed(input, principal::ORCHESTRATOR).await,
                // The permit goes once the report is handled, making room for the next.
                Some(Message::AgentReport(input, _permit)) => self.feed(input, principal::ORCHESTRATOR).await,
                Some(Message::NodesChanged) => {
                    self.feed(Input::Nodes(self.nodes.list()), principal::ORCHESTRATOR).await;
                }
                Some(Message::PrioritiesChanged) => {
                    let effective = self.priorities.watch().borrow().clone();
                    self.feed(Input::Priorities(effective), principal::ORCHESTRATOR).await;
                }
            }
        }
        for (_, watch) in self.watches.drain() {
            watch.abort();
        }
    }

    async fn request(&mut self, request: Request) {
        let (input, principal) = match request {
            Request::Apply { manifest, body, source, principal, reply } => {
                let request = self.replies.wait(reply, |r| &mut r.applied);
                (Input::Apply { request, manifest, body, source }, principal)
            }
            Request::Down { principal, reply } => {
                (Input::Down { request: self.replies.wait(reply, |r| &mut r.stopped) }, principal)
            }
            Request::Restart { service, principal, reply } => {
                (Input::Restart { request: self.replies.wait(reply, |r| &mut r.restart), service }, principal)
            }
            // Reads: answered from the machine's state, nothing to decide.
            Request::View { reply } => {
                let _ = reply.send(self.machine.view());
                return;
            }
            Request::Profile { reply } => {
                let _ = reply.send(self.machine.profile());
                return;
            }
            Request::Logs { request, reply } => {
                let units = self.machine.units_of(&request.service);
                let agents = self.agents.clone();
                tokio::spawn(async move {
                    let _ = reply.send(match units {
                        None => Err(ControlError::UnknownService(request.service)),
                        Some(units) => search_units(&agents, &request, units).await,
                    });
                });
                return;
            }
            Request::Units { service, reply } => {
                let _ = reply.send(self.machine.units_of(&service));
                return;
            }
        };
        self.feed(input, &principal).await;
    }

    /// Hands `input`, sent by `principal`, to the machine and carries out the effects, then those
    /// of the reports of awaited writes.
    async fn feed(&mut self, input: Input, principal: &str) {
        principal.clone_into(&mut self.acting);
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in self.machine.handle(input, now()) {
                if let Some(report) = self.perform(effect).await {
                    inputs.push_back(report);
                }
            }
        }
    }

    /// Carries out one effect; returns the report of an awaited write.
    async fn perform(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Launch { service, generation, node, request, config } => {
                self.launch(service, generation, node, request, config)
            }
            Effect::Stop { service, generation, node, request } => self.stop(service, generation, node, request),
            Effect::WaitReady { service, generation, check, endpoint, timeout } => {
                self.wait_ready(service, generation, check, endpoint, timeout)
            }
            Effect::WatchLiveness { service, generation, check, endpoint } => {
                self.watch_liveness(service, generation, check, endpoint)
            }
            Effect::ScheduleRestart { service, generation, after } => {
                let name = service.clone();
                self.timer(service, after, Input::RestartDue { service: name, generation });
            }
            Effect::WaitNotified { service, generation, timeout } => {
                let name = service.clone();
                self.timer(service, timeout, Input::NotifyDue { service: name, generation });
            }
            Effect::Cancel { service } => {
                if let Some(watch) = self.watches.remove(&service) {
                    watch.abort();
                }
            }
            Effect::Register(registration) => self.registry(RegistryOp::Register(registration)),
            Effect::Deregister { instance } => self.registry(RegistryOp::Deregister(instance)),
            Effect::Heartbeat { instance } => self.registry(RegistryOp::Heartbeat(instance)),
            Effect::AskStatus { node, asked } => self.ask_status(node, asked),
            Effect::Record(transition) => self.record(transition),
            Effect::Publish { event, at } => self.publish(event, at),
            Effect::StoreManifest { request, manifest, body, source } => {
                let result = self.store_manifest(&manifest, &body, &source).await;
                let run_id = Uuid::now_v7();
                return Some(Input::ManifestStored { request, manifest, source, run_id, revert: false, result });
            }
            Effect::RevertManifest { version, source } => {
                // The orchestrator applies it, whoever's input made the update fail.
                principal::ORCHESTRATOR.clone_into(&mut self.acting);
                let (manifest, stored) = match self.revert_manifest(version, &source).await {
                    Ok(reverted) => reverted,
                    Err(e) => {
                        tracing::error!(version, error = %e, "cannot apply the last good version again");
                        return None;
                    }
                };
                // No one waits for the answer (request 0 is never given out).
                let (request, run_id) = (RequestId(0), Uuid::now_v7());
                return Some(Input::ManifestStored {
                    request,
                    manifest,
                    source,
                    run_id,
                    revert: true,
                    result: Ok(stored),
                });
            }
            Effect::StoreDesiredDown { request, versions } => {
                let mut result = Ok(());
                for version in versions {
                    result = storage::lifecycle::set_desired(&self.pool, version, false).await;
                    if result.is_err() {
                        break;
                    }
                }
                return Some(Input::DesiredStored { request, result });
            }
            Effect::StoreRunStarted { id, version, started_at } => {
                let _ = self.runs.send(RunWrite::Started { id, version, started_at });
            }
            Effect::StoreRunFinished { outcome, profile } => {
                let json = serde_json::to_value(&profile).expect("a profile serializes");
                let _ =
                    self.runs.send(RunWrite::Finished { id: profile.run_id, outcome: outcome.as_str(), profile: json });
            }
            Effect::SetDefaultPriorities(defaults) => self.priorities.set_defaults(defaults),
            Effect::StopStale { node, request } => {
                let agents = self.agents.clone();
                tokio::spawn(async move {
                    match agents.stop(&node, &request).await {
                        Ok(stopped) => {
                            tracing::info!(node = %node, service = %request.service, exit = %stopped.exit, "stale process stopped")
                        }
                        Err(e) => {
                            tracing::info!(node = %node, service = %request.service, error = %e, "stale process not stopped (gone already?)")
                        }
                    }
                });
            }
            Effect::Reply(reply) => self.replies.send(reply),
        }
        None
    }

    /// Reports `input` after `after`, as the service's watch (cancelled with it).
    fn timer(&mut self, service: String, after: Duration, input: Input) {
        let tx = self.tx.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Message::Report(input));
        });
        self.set_watch(service, timer.abort_handle());
    }

    /// Each launch is its own request, so a slow start (or a slow node) holds up no other.
    fn launch(
        &self,
        service: String,
        generation: u64,
        node: String,
        mut request: StartRequest,
        config: BTreeMap<String, String>,
    ) {
        let (agents, tx, store) = (self.agents.clone(), self.tx.clone(), self.config.clone());
        tokio::spawn(async move {
            let mut adopted_ready = false;
            if let Err(why) = config_env(&store, &config, &mut request.env).await {
                let result = Err(why);
                let _ = tx.send(Message::Report(Input::Launched { service, generation, result }));
                return;
            }
            let result = match agents.start(&node, &request).await {
                Ok(started) => Ok(started.pid),
                // Still running from before (a standalone agent outlives the orchestrator): adopt
                // the process, if it runs what would be started now.
                Err(AgentError::Refused { code: ErrorCode::Conflict, .. }) => match agents.status(&node).await {
                    Ok(status) => match status.running.into_iter().find(|r| r.service == service) {
                        None => Err("the agent reported it running, then not".to_string()),
                        Some(r) if r.fingerprint.as_ref().is_some_and(|f| *f != request.fingerprint()) => {
                            replace_outdated(&agents, &node, &request, r.pid).await
                        }
                        Some(r) => {
                            adopted_ready = r.ready;
                            Ok(r.pid)
                        }
                    },
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            let pid = result.as_ref().ok().copied();
            let _ = tx.send(Message::Report(Input::Launched { service: service.clone(), generation, result }));
            // An adopted process that notified its readiness long ago will not again: what its
            // agent remembers stands for the report.
            if let (Some(pid), true, true) = (pid, adopted_ready, request.notify) {
                let report = agent::Notified { node, service, pid, ready: true, status: None, at: Utc::now() };
                let _ = tx.send(Message::Report(Input::Notified(report)));
            }
        });
    }

    fn stop(&self, service: String, generation: u64, node: String, request: StopRequest) {
        let (agents, tx) = (self.agents.clone(), self.tx.clone());
        tokio::spawn(async move {
            let exit = match agents.stop(&node, &request).await {
                Ok(stopped) => Some(stopped.exit),
                Err(e) => {
                    // Not running any more (its end report may be on the way), or the agent is
                    // gone with it: either way the process is no longer there.
                    tracing::info!(service = %service, error = %e, "stop: the process was already gone");
                    None
                }
            };
            let _ = tx.send(Message::Report(Input::Stopped { service, generation, exit }));
        });
    }

    fn wait_ready(
        &mut self,
        service: String,
        generation: u64,
        check: CheckSpec,
        endpoint: Endpoint,
        timeout: Duration,
    ) {
        let (prober, tx, poll) = (self.prober.clone(), self.tx.clone(), self.startup_probe_interval);
        let name = service.clone();
        let task = tokio::spawn(async move {
            let input = match probes::wait_ready(&prober, &check, &endpoint, poll, timeout).await {
                Ok(()) => Input::Ready { service: name, generation },
                Err(output) => Input::Unhealthy {
                    service: name,
                    generation,
                    reason: format!(
                        "not ready within {} (startup_timeout): {output}",
                        humantime::format_duration(timeout)
                    ),
                },
            };
            let _ = tx.send(Message::Report(input));
        });
        self.set_watch(service, task.abort_handle());
    }

    fn watch_liveness(&mut self, service: String, generation: u64, check: CheckSpec, endpoint: Endpoint) {
        let (prober, tx) = (self.prober.clone(), self.tx.clone());
        let name = service.clone();
        let task = tokio::spawn(async move {
            let output = probes::watch_liveness(&prober, &check, &endpoint).await;
            let reason = format!("liveness check critical: {output}");
            let _ = tx.send(Message::Report(Input::Unhealthy { service: name, generation, reason }));
        });
        self.set_watch(service, task.abort_handle());
    }

    /// Keeps the handle of a service's new probe or timer; the one before it has reported.
    fn set_watch(&mut self, service: String, watch: AbortHandle) {
        if let Some(before) = self.watches.insert(service, watch) {
            before.abort();
        }
    }

    fn ask_status(&self, node: String, asked: Vec<Asked>) {
        let (agents, tx) = (self.agents.clone(), self.tx.clone());
        tokio::spawn(async move {
            let result = agents.status(&node).await;
            let _ = tx.send(Message::Report(Input::Status { node, result, asked }));
        });
    }

    fn registry(&self, op: RegistryOp) {
        let _ = self.registrar.send(op);
    }

    /// Hands the state row and its event to the recorder, which commits them together.
    fn record(&self, Transition { at, data, restarts }: Transition) {
        let name = data.service.as_str();
        let kind = EventKind::Lifecycle(data.state);
        let encoded = events::encode(&self.subjects, kind, name, name, &self.acting, at, &data);
        let row = StateRow {
            name: data.service.clone(),
            manifest_version: data.manifest_version,
            node: data.node.clone().unwrap_or_default(),
            state: data.state.as_str().to_string(),
            reason: data.reason.clone(),
            pid: data.pid.map(i64::from),
            restarts: restarts as i32,
            since: at,
        };
        let _ = self.records.send(Record::State(row, encoded.into()));
    }

    fn publish(&self, event: Event, at: chrono::DateTime<Utc>) {
        let (kind, service) = (event.kind(), event.service());
        let encoded = match &event {
            Event::ManifestApplied(data) => {
                events::encode(&self.subjects, kind, service, service, &self.acting, at, data)
            }
            Event::RunFinished(data) => events::encode(&self.subjects, kind, service, service, &self.acting, at, data),
            Event::PressureHigh(data) | Event::PressureCleared(data) => {
                events::encode(&self.subjects, kind, service, service, &self.acting, at, data)
            }
            Event::Shed(data) | Event::Restored(data) => {
                self.metrics.shed_steps.get_or_create(&crate::metrics::ResultLabel { result: kind.name() }).inc();
                events::encode(&self.subjects, kind, service, service, &self.acting, at, data)
            }
            Event::Lost(data) => events::encode(&self.subjects, kind, service, service, &self.acting, at, data),
            Event::Preempted(data) => events::encode(&self.subjects, kind, service, service, &self.acting, at, data),
            Event::RolloutStarted(data)
            | Event::RolloutProgressed(data)
            | Event::RolloutCompleted(data)
            | Event::RolloutFailed(data) => {
                events::encode(&self.subjects, kind, service, service, &self.acting, at, data)
            }
        };
        let _ = self.records.send(Record::Event(encoded.into()));
    }

    /// Stores the manifest of `version` again as a new version; returns it parsed, with the new
    /// version.
    async fn revert_manifest(&self, version: i64, source: &str) -> anyhow::Result<(Box<Manifest>, i64)> {
        let stored = storage::lifecycle::manifest_version(&self.pool, version)
            .await?
            .ok_or_else(|| anyhow::anyhow!("manifest version {version} is not stored"))?;
        let manifest = Manifest::parse(&stored.body).map_err(|e| anyhow::anyhow!("{e}"))?;
        let new = self.store_manifest(&manifest, &stored.body, source).await?;
        Ok((Box::new(manifest), new))
    }

    async fn store_manifest(
        &self,
        manifest: &Manifest,
        body: &str,
        source: &str,
    ) -> Result<i64, storage::StorageError> {
        let stored = storage::lifecycle::insert_manifest(&self.pool, body, source, &self.acting).await?;
        let names: Vec<String> = manifest.services.keys().cloned().collect();
        storage::lifecycle::retain_services(&self.pool, &names).await?;
        Ok(stored.version)
    }
}

/// A process found running that was started from another definition (an earlier version: the
/// orchestrator died before it was replaced, or during a rolling update): stopped, and the
/// service started as asked. Its end is reported as a stop, about a pid the controller never
/// took as the service's.
async fn replace_outdated(agents: &AgentClient, node: &str, request: &StartRequest, pid: u32) -> Result<u32, String> {
    tracing::warn!(
        service = request.service,
        node,
        pid,
        "found running from another definition than the applied one: replacing it"
    );
    let stop = StopRequest {
        service: request.service.clone(),
        signal: request.stop_signal.clone(),
        grace_period: request.grace_period,
    };
    agents.stop(node, &stop).await.map_err(|e| format!("could not stop the process of an earlier definition: {e}"))?;
    agents.start(node, request).await.map(|started| started.pid).map_err(|e| e.to_string())
}

/// The time now, as the machine takes it with each input.
fn now() -> Now {
    Now { instant: Instant::now(), wall: Utc::now() }
}

type Waiting<T> = HashMap<RequestId, oneshot::Sender<Result<T, ControlError>>>;

/// The reply channels of requests the machine has not answered yet.
/// Sets each variable of `config` (variable -> key) in `env` to its key's value in the config
/// store: a JSON string as its text, any other value as JSON. A key that is not set (or a store
/// that does not answer) fails the launch, saying which.
async fn config_env(
    store: &crate::config_store::ConfigStore,
    config: &BTreeMap<String, String>,
    env: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (variable, key) in config {
        let entry = store.get(key).await.map_err(|e| format!("config key {key} (for ${variable}): {}", e.0.message))?;
        let text = match entry.value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
        env.insert(variable.clone(), text);
    }
    Ok(())
}

#[derive(Default)]
struct Replies {
    next: u64,
    applied: Waiting<StackApplied>,
    stopped: Waiting<usize>,
    restart: Waiting<()>,
}

impl Replies {
    /// Keeps `reply` in the map `of` picks, under a new request id.
    fn wait<T>(
        &mut self,
        reply: oneshot::Sender<Result<T, ControlError>>,
        of: impl FnOnce(&mut Replies) -> &mut Waiting<T>,
    ) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        of(self).insert(id, reply);
        id
    }

    fn send(&mut self, reply: Reply) {
        fn answer<T>(waiting: &mut Waiting<T>, id: RequestId, result: Result<T, ControlError>) {
            if let Some(reply) = waiting.remove(&id) {
                let _ = reply.send(result);
            }
        }
        match reply {
            Reply::Applied(id, result) => answer(&mut self.applied, id, result),
            Reply::Stopped(id, result) => answer(&mut self.stopped, id, result),
            Reply::Restart(id, result) => answer(&mut self.restart, id, result),
        }
    }
}

/// Asks the agents of every unit of a service at once and merges their answers. Fails only when
/// no agent answered (the error of the first); otherwise the units whose agent did not answer are
/// named in the reply.
async fn search_units(
    agents: &AgentClient,
    request: &ServiceLogsRequest,
    units: Vec<(String, Option<String>)>,
) -> Result<ServiceLogs, ControlError> {
    let asked = units.into_iter().map(|(unit, node)| async move {
        let logs = match &node {
            None => Err(None),
            Some(node) => agents.logs(node, &request.for_unit(&unit)).await.map_err(Some),
        };
        (unit, node, logs)
    });
    let answers = futures::future::join_all(asked).await;
    let placed = answers.iter().filter(|(_, node, _)| node.is_some()).count();
    let failed = answers.iter().filter(|(_, _, logs)| matches!(logs, Err(Some(_)))).count();
    if placed > 0 && failed == placed {
        let first = answers.into_iter().find_map(|(_, _, logs)| logs.err().flatten());
        return Err(first.expect("a failed unit").into());
    }
    let answers = answers
        .into_iter()
        .map(|(unit, node, logs)| crate::lifecycle::logs::UnitAnswer {
            unit,
            node,
            logs: logs.map_err(|e| e.map_or_else(|| "not placed on a node yet".to_string(), |e| e.to_string())),
        })
        .collect();
    Ok(crate::lifecycle::logs::merge(&request.service, answers, request.limit))
}
