//! The lifecycle controller: one task that owns the applied stack and drives it. It launches
//! services through the node agents in dependency order, watches readiness (by their checks, or
//! by the services' own `sd_notify` messages, which their agents report) and liveness, restarts
//! by each service's policy (bound services after the one they bind to, higher priority first),
//! sheds and restores services under node pressure, and stops in reverse dependency order. Every transition is recorded in PostgreSQL with its lifecycle event (see
//! [`super::recorder`]).
//!
//! Decisions apart from effects: [`machine`] decides, free of I/O (an input in, effects out);
//! [`executor`] is the task that feeds it requests and reports and carries out its effects, with
//! the slow work (agent requests, probes, back-off timers) in small tasks that report back.
//! This module is the handle the rest of the orchestrator uses.

mod executor;
mod machine;
mod registration;
mod runs;
mod view;

use std::sync::Arc;
use std::time::Duration;

use orch_protocol::Subjects;
use orch_protocol::agent;
use orch_protocol::lifecycle::{ServiceLogs, ServiceLogsRequest};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use executor::Executor;
use machine::Input;
pub use registration::instance_id;
pub use view::{ManagedService, RunProfile, StackApplied, StackView};

use super::graph::Graph;
use super::manifest::Manifest;
use super::recorder::Record;
use crate::agent::client::AgentError;
use crate::health::probe::Prober;
use crate::registry::Registry;
use crate::storage;

/// What the controller works with: storage, NATS, the registry it registers ready services in,
/// the prober of readiness and liveness, the recorder of transitions, the priorities that order
/// its queues, and the metrics.
#[derive(Clone)]
pub struct Collaborators {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub registry: Arc<Registry>,
    pub prober: Prober,
    pub records: mpsc::UnboundedSender<Record>,
    pub priorities: crate::priority::Priorities,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The node inventory: where services may be placed.
    pub nodes: crate::resources::Nodes,
    /// The config store: values of the keys services read, and their changes.
    pub config: crate::config_store::ConfigStore,
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub settings: crate::lifecycle::LifecycleSettings,
    /// Subjects of the agents and of the lifecycle events.
    pub subjects: Subjects,
}

/// Why a request to the controller was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no stack is applied; apply a manifest first")]
    NoStack,
    #[error("no start-up run since the orchestrator started")]
    NoRun,
    #[error("{0}")]
    Busy(String),
    #[error("no managed service {0:?} in the applied stack")]
    UnknownService(String),
    /// No manifest was stored as this version (`field` names where the client gave it).
    #[error("no manifest version {version}")]
    UnknownVersion { field: &'static str, version: i64 },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("the lifecycle controller has stopped")]
    Stopped,
    /// The manifest goes beyond what an admin allowed (quotas).
    #[error("{0}")]
    Refused(crate::problems::Problems),
    /// A request with a field out of bounds (a log search's, a history page's).
    #[error("{0}")]
    Invalid(orch_protocol::ProtocolError),
}

/// A unit of a managed service (the service, or one of its replicas) and the node it runs on.
pub type Unit = (String, Option<String>);

/// A request to the controller, with the channel of its answer.
enum Request {
    Apply {
        manifest: Box<Manifest>,
        body: String,
        source: String,
        principal: String,
        reply: oneshot::Sender<Result<StackApplied, ControlError>>,
    },
    Down {
        principal: String,
        reply: oneshot::Sender<Result<usize, ControlError>>,
    },
    Restart {
        service: String,
        principal: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    View {
        reply: oneshot::Sender<Option<(StackView, Graph)>>,
    },
    Profile {
        reply: oneshot::Sender<Option<RunProfile>>,
    },
    Logs {
        request: ServiceLogsRequest,
        reply: oneshot::Sender<Result<ServiceLogs, ControlError>>,
    },
    Units {
        service: String,
        reply: oneshot::Sender<Option<Vec<Unit>>>,
    },
}

/// What the controller task receives, one at a time.
enum Message {
    Request(Request),
    /// A report for the state machine: of the work the controller asked for.
    Report(Input),
    /// A report an agent published. Its permit bounds how many wait in the queue: the agents'
    /// reports come from the network, and beyond [`AGENT_REPORTS_QUEUED`] the forwarders wait
    /// (NATS then drops what its subscription buffer cannot hold, and says so).
    AgentReport(Input, tokio::sync::OwnedSemaphorePermit),
    /// The effective priorities changed (the task reads the newest when it gets to this).
    PrioritiesChanged,
    /// The node inventory changed (the task reads the newest when it gets to this).
    NodesChanged,
}

/// Most agents' reports waiting for the controller.
const AGENT_REPORTS_QUEUED: usize = 1024;

/// Forwards the agents' reports of `verb` to the controller. A report speaks for the node of the
/// subject it came on (`<prefix>.agent.<node>.<verb>`, which only that node's agent may publish
/// on, docs/protocol.md §14), never for a node its payload names; a report on a subject whose node
/// is not a valid name is dropped with a warning.
async fn forward_reports<R: serde::de::DeserializeOwned + Send + 'static>(
    nats: &async_nats::Client,
    subjects: &Subjects,
    verb: &'static str,
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<tokio::sync::Semaphore>,
    input: fn(String, R) -> Input,
) -> anyhow::Result<()> {
    let mut reports = nats.subscribe(subjects.agents_report(verb)).await?;
    let subjects = subjects.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(message) = reports.next().await {
            let Some(node) = subjects.parse_agent_report(&message.subject, verb) else {
                tracing::warn!(subject = %message.subject, "{verb} report on a subject without a valid node name; dropped");
                continue;
            };
            match serde_json::from_slice::<R>(&message.payload) {
                Ok(report) => {
                    let Ok(permit) = queued.clone().acquire_owned().await else { return };
                    if tx.send(Message::AgentReport(input(node.to_string(), report), permit)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, subject = %message.subject, "unreadable {verb} report"),
            }
        }
    });
    Ok(())
}

/// Handle to the controller task.
#[derive(Clone)]
pub struct Controller {
    tx: mpsc::UnboundedSender<Message>,
    /// Where the quotas a manifest is checked against, and the stored versions, are kept.
    pub(in crate::lifecycle) pool: sqlx::PgPool,
}

impl Controller {
    /// Starts the controller, resuming the stored stack if it is wanted up.
    pub async fn start(
        config: ControllerConfig,
        with: Collaborators,
        shutdown: crate::shutdown::Shutdown,
    ) -> anyhow::Result<(Controller, tokio::task::JoinHandle<()>)> {
        let nats = with.nats.clone();
        let pool = with.pool.clone();
        let priorities = with.priorities.clone();
        let subjects = config.subjects.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(tokio::sync::Semaphore::new(AGENT_REPORTS_QUEUED));
        forward_reports(
            &nats,
            &subjects,
            agent::verbs::EXITED,
            tx.clone(),
            queued.clone(),
            |node, mut exit: agent::Exited| {
                exit.node = node;
                Input::Exited(exit)
            },
        )
        .await?;
        forward_reports(
            &nats,
            &subjects,
            agent::verbs::PRESSURE,
            tx.clone(),
            queued.clone(),
            |node, mut report: agent::Pressure| {
                report.node = node;
                Input::Pressure(report)
            },
        )
        .await?;
        forward_reports(
            &nats,
            &subjects,
            agent::verbs::NOTIFY,
            tx.clone(),
            queued,
            |node, mut report: agent::Notified| {
                report.node = node;
                Input::Notified(report)
            },
        )
        .await?;
        let mut effective = priorities.watch();
        let forward = tx.clone();
        tokio::spawn(async move {
            while effective.changed().await.is_ok() {
                if forward.send(Message::PrioritiesChanged).is_err() {
                    return;
                }
            }
        });
        // A change of a config key: the services that read it restart.
        let mut config_changes = with.config.subscribe();
        let forward = tx.clone();
        tokio::spawn(async move {
            loop {
                match config_changes.recv().await {
                    Ok(change) => {
                        if forward.send(Message::Report(Input::ConfigChanged { key: change.key })).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::error!(
                            missed,
                            "config changes came faster than the controller took them; some services may run with old values until their next restart"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let mut inventory = with.nodes.watch();
        let forward = tx.clone();
        tokio::spawn(async move {
            while inventory.changed().await.is_ok() {
                if forward.send(Message::NodesChanged).is_err() {
                    return;
                }
            }
        });
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if ticker.send(Message::Report(Input::Tick)).is_err() {
                    return;
                }
            }
        });
        let executor = Executor::new(config, with, tx.clone());
        let resume = executor.stored_stack().await?;
        let handle = tokio::spawn(executor.run(resume, rx, shutdown));
        Ok((Controller { tx, pool }, handle))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Message::Request(make(reply))).map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Stores `manifest` as a new version and brings the stack to it.
    pub async fn apply(
        &self,
        manifest: Manifest,
        body: String,
        source: String,
        principal: String,
    ) -> Result<StackApplied, ControlError> {
        let quotas = storage::quotas::all(&self.pool).await?;
        let quotas = quotas
            .into_iter()
            .map(|q| (q.name, orch_protocol::resources::Resources::new(q.cpu as u64, q.memory as u64)))
            .collect();
        // What runs now, for the quota a rolling update must stay within midway.
        let running = match self.view().await? {
            Some((view, _)) => view
                .services
                .into_iter()
                .filter(|s| s.state.running() || s.state == orch_protocol::lifecycle::ServiceState::Restarting)
                .map(|s| (s.name, s.resources))
                .collect(),
            None => Default::default(),
        };
        let problems = crate::resources::quota::check_rollout(&manifest, &running, &quotas);
        if !problems.is_empty() {
            return Err(ControlError::Refused(crate::problems::Problems { document: "manifest", problems }));
        }
        self.ask(|reply| Request::Apply { manifest: Box::new(manifest), body, source, principal, reply }).await?
    }

    /// Stops every service in reverse dependency order; returns how many were running.
    pub async fn down(&self, principal: String) -> Result<usize, ControlError> {
        self.ask(|reply| Request::Down { principal, reply }).await?
    }

    pub async fn restart(&self, service: String, principal: String) -> Result<(), ControlError> {
        self.ask(|reply| Request::Restart { service, principal, reply }).await?
    }

    pub async fn view(&self) -> Result<Option<(StackView, Graph)>, ControlError> {
        self.ask(|reply| Request::View { reply }).await
    }

    /// The run in progress, or the last one since the orchestrator started.
    pub async fn profile(&self) -> Result<Option<RunProfile>, ControlError> {
        self.ask(|reply| Request::Profile { reply }).await
    }

    /// The last lines of a service's output that match `request`, from the agents of all its
    /// units at once, merged in time order.
    pub async fn logs(&self, request: ServiceLogsRequest) -> Result<ServiceLogs, ControlError> {
        request.validate().map_err(ControlError::Invalid)?;
        // Checked here too, so a bad expression is one error, not one per unit.
        crate::agent::search::LogFilter::new(None, None, None, None, request.regex.as_deref())
            .map_err(ControlError::Invalid)?;
        self.ask(|reply| Request::Logs { request, reply }).await?
    }

    /// The units of a managed service (its replicas, or itself) with the node each runs on.
    pub async fn units(&self, service: String) -> Result<Vec<Unit>, ControlError> {
        let unknown = ControlError::UnknownService(service.clone());
        self.ask(|reply| Request::Units { service, reply }).await?.ok_or(unknown)
    }
}
