//! The lifecycle controller: one task that owns the applied stack and drives it. It launches
//! services through the node agents as [`Startup`] allows, watches readiness and liveness, restarts
//! by each service's policy (bound services after the one they bind to, higher priority first),
//! and stops in reverse dependency order. Every transition is recorded in PostgreSQL with its
//! lifecycle event (see [`super::recorder`]).
//!
//! Everything slow (agent requests, probes, back-off timers) runs in small tasks that report back
//! as [`Input`]s; a `generation` per service, bumped at each launch, makes late reports of an
//! earlier process harmless.

mod registration;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::Subjects;
use orch_protocol::agent::{self, Exit};
use orch_protocol::lifecycle::ServiceState;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use registration::instance_id;
use task::Task;

use super::graph::Graph;
use super::manifest::Manifest;
use super::profile::Profile;
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
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How often a starting service's readiness check runs (at most its own interval).
    pub startup_probe_interval: Duration,
    /// How often what should run is compared with what the agents report.
    pub reconcile_interval: Duration,
    /// Subjects of the agents and of the lifecycle events.
    pub subjects: Subjects,
    /// When to shed sheddable services under node pressure.
    pub shedding: crate::lifecycle::shedding::ShedSettings,
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
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("the lifecycle controller has stopped")]
    Stopped,
}

/// What `apply` accepted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = StackApplied)]
pub struct Applied {
    pub version: i64,
    pub run_id: Uuid,
    pub services: usize,
    /// Services stopped first because they changed or left the stack.
    pub replaced: Vec<String>,
}

/// One managed service as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ManagedService)]
pub struct ServiceView {
    pub name: String,
    pub node: String,
    pub state: ServiceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    pub since: DateTime<Utc>,
    pub priority: u8,
    pub critical: bool,
    pub depends_on: Vec<String>,
    pub level: usize,
}

/// The stack as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StackView {
    pub version: i64,
    /// `up` or `down`.
    #[schema(schema_with = desired_schema)]
    pub desired: &'static str,
    /// The start-up run in progress, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// Services in each state.
    pub counts: BTreeMap<ServiceState, usize>,
    pub services: Vec<ServiceView>,
}

/// The schema of [`StackView::desired`].
fn desired_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["up", "down"]))
        .build()
}

/// A start-up run's profile with its identity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunProfile {
    pub run_id: Uuid,
    pub manifest_version: i64,
    pub started_at: DateTime<Utc>,
    pub finished: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(flatten)]
    pub profile: Profile,
}

/// Requests and reports the controller task handles, one at a time.
pub(super) enum Input {
    Apply {
        manifest: Box<Manifest>,
        body: String,
        source: String,
        reply: oneshot::Sender<Result<Applied, ControlError>>,
    },
    Down {
        reply: oneshot::Sender<Result<usize, ControlError>>,
    },
    /// The orchestrator stops: stop the services in order, keep the stack wanted up.
    Halt {
        reply: oneshot::Sender<Result<usize, ControlError>>,
    },
    Restart {
        service: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    View {
        reply: oneshot::Sender<Option<(StackView, Graph)>>,
    },
    Profile {
        reply: oneshot::Sender<Option<RunProfile>>,
    },
    Logs {
        service: String,
        lines: usize,
        reply: oneshot::Sender<Result<agent::Logs, ControlError>>,
    },
    Launched {
        service: String,
        generation: u64,
        result: Result<u32, String>,
    },
    Ready {
        service: String,
        generation: u64,
    },
    /// The readiness check did not pass within the start-up timeout, or liveness went critical.
    Unhealthy {
        service: String,
        generation: u64,
        reason: String,
    },
    Stopped {
        service: String,
        generation: u64,
        exit: Option<Exit>,
    },
    RestartDue {
        service: String,
        generation: u64,
    },
    Exited(agent::Exited),
    /// A node's pressure reading.
    Pressure(agent::Pressure),
    /// The effective priorities changed.
    Priorities,
    Status {
        node: String,
        result: Result<agent::Status, AgentError>,
        asked: Vec<(String, u64, u32)>,
    },
    Tick,
}

/// Handle to the controller task.
#[derive(Clone)]
pub struct Controller {
    tx: mpsc::UnboundedSender<Input>,
}

impl Controller {
    /// Starts the controller, resuming the stored stack if it is wanted up.
    pub async fn start(
        config: ControllerConfig,
        with: Collaborators,
        shutdown: crate::shutdown::Shutdown,
    ) -> anyhow::Result<(Controller, tokio::task::JoinHandle<()>)> {
        let nats = with.nats.clone();
        let priorities = with.priorities.clone();
        let subjects = config.subjects.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut exits = nats.subscribe(format!("{}.agent.*.{}", subjects.prefix(), agent::verbs::EXITED)).await?;
        let forward = tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(message) = exits.next().await {
                match serde_json::from_slice::<agent::Exited>(&message.payload) {
                    Ok(exit) => {
                        if forward.send(Input::Exited(exit)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, subject = %message.subject, "unreadable process-end report"),
                }
            }
        });
        let mut pressure = nats.subscribe(subjects.agents_report(agent::verbs::PRESSURE)).await?;
        let forward = tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(message) = pressure.next().await {
                match serde_json::from_slice::<agent::Pressure>(&message.payload) {
                    Ok(report) => {
                        if forward.send(Input::Pressure(report)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, subject = %message.subject, "unreadable pressure report"),
                }
            }
        });
        let mut effective = priorities.watch();
        let forward = tx.clone();
        tokio::spawn(async move {
            while effective.changed().await.is_ok() {
                if forward.send(Input::Priorities).is_err() {
                    return;
                }
            }
        });
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if ticker.send(Input::Tick).is_err() {
                    return;
                }
            }
        });
        let task = Task::resume(config, with, tx.clone()).await?;
        let handle = tokio::spawn(task.run(rx, shutdown));
        Ok((Controller { tx }, handle))
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Stores `manifest` as a new version and brings the stack to it.
    pub async fn apply(&self, manifest: Manifest, body: String, source: String) -> Result<Applied, ControlError> {
        self.ask(|reply| Input::Apply { manifest: Box::new(manifest), body, source, reply }).await?
    }

    /// Stops every service in reverse dependency order; returns how many were running.
    pub async fn down(&self) -> Result<usize, ControlError> {
        self.ask(|reply| Input::Down { reply }).await?
    }

    /// Stops every service in reverse dependency order, keeping the stack wanted up for the next
    /// start of the orchestrator.
    pub async fn halt(&self) -> Result<usize, ControlError> {
        self.ask(|reply| Input::Halt { reply }).await?
    }

    pub async fn restart(&self, service: String) -> Result<(), ControlError> {
        self.ask(|reply| Input::Restart { service, reply }).await?
    }

    pub async fn view(&self) -> Result<Option<(StackView, Graph)>, ControlError> {
        self.ask(|reply| Input::View { reply }).await
    }

    /// The run in progress, or the last one since the orchestrator started.
    pub async fn profile(&self) -> Result<Option<RunProfile>, ControlError> {
        self.ask(|reply| Input::Profile { reply }).await
    }

    pub async fn logs(&self, service: String, lines: usize) -> Result<agent::Logs, ControlError> {
        self.ask(|reply| Input::Logs { service, lines, reply }).await?
    }
}
