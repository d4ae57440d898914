//! What the state machine asks for: the effects the executor carries out, and the reports that
//! some of them send back as inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::agent::{StartRequest, StopRequest};
use orch_protocol::events::{EventKind, ManifestAppliedData, PressureData, RunFinishedData, ShedData, TransitionData};
use orch_protocol::health::CheckSpec;
use orch_protocol::registry::Registration;
use uuid::Uuid;

use super::super::{ControlError, RunProfile, StackApplied};
use super::RunOutcome;
use crate::lifecycle::manifest::Manifest;
use crate::lifecycle::probes::Endpoint;

/// Names a request waiting for its reply; given by the executor, which holds the reply channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// One process the controller believes runs, as asked of its agent when reconciling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub service: String,
    pub generation: u64,
    pub pid: u32,
}

/// Something for the executor to do. Effects that report back name the service's `generation`,
/// so a report about an earlier process is recognised and ignored.
#[derive(Debug)]
pub enum Effect {
    /// Ask the agent of `node` to start the process; reports `Launched`.
    Launch {
        service: String,
        generation: u64,
        node: String,
        request: StartRequest,
        /// Environment variables to set from config store keys (variable -> key), read by the
        /// executor just before the launch.
        config: std::collections::BTreeMap<String, String>,
    },
    /// Ask the agent of `node` to stop the process; reports `Stopped`.
    Stop {
        service: String,
        generation: u64,
        node: String,
        request: StopRequest,
    },
    /// Run the readiness check until it passes, or `timeout` has passed; reports `Ready` or
    /// `Unhealthy`.
    WaitReady {
        service: String,
        generation: u64,
        check: CheckSpec,
        endpoint: Endpoint,
        timeout: Duration,
    },
    /// Report `NotifyDue` after `timeout`: the start-up timeout of a service that notifies its
    /// readiness (its `READY=1` comes as a `Notified` report, or through `AskStatus`).
    WaitNotified {
        service: String,
        generation: u64,
        timeout: Duration,
    },
    /// Run the liveness check until it goes critical; reports `Unhealthy`.
    WatchLiveness {
        service: String,
        generation: u64,
        check: CheckSpec,
        endpoint: Endpoint,
    },
    /// Report `RestartDue` after the back-off.
    ScheduleRestart {
        service: String,
        generation: u64,
        after: Duration,
    },
    /// End the probe or back-off timer of `service`: nothing it would report matters any more.
    Cancel {
        service: String,
    },
    /// Register the instance of a ready service in the registry.
    Register(Box<Registration>),
    /// Remove a managed service's registry instance.
    Deregister {
        instance: String,
    },
    /// Renew the lease of a managed service's registry instance.
    Heartbeat {
        instance: String,
    },
    /// Ask the agent of `node` which processes it runs; reports `Status`.
    AskStatus {
        node: String,
        asked: Vec<Asked>,
    },
    /// Record a service's transition: its state row and its lifecycle event, together.
    Record(Transition),
    /// Publish an event that changes no service's state.
    Publish {
        event: Event,
        at: DateTime<Utc>,
    },
    /// Store `manifest` as a new version wanted up and forget the services it no longer has;
    /// reports `ManifestStored` before any other input is handled (the reply depends on it).
    StoreManifest {
        request: RequestId,
        manifest: Box<Manifest>,
        body: String,
        source: String,
    },
    /// Store the manifest of `version` again as a new version (a failed rolling update's
    /// auto-revert), applied by the orchestrator with `source`; reports `ManifestStored` before
    /// any other input is handled.
    RevertManifest {
        version: i64,
        source: String,
    },
    /// Mark the stacks of `versions` as wanted down; reports `DesiredStored` before any other
    /// input is handled.
    StoreDesiredDown {
        request: RequestId,
        versions: Vec<i64>,
    },
    /// Record the beginning of a start-up run.
    StoreRunStarted {
        id: Uuid,
        version: i64,
        started_at: DateTime<Utc>,
    },
    /// Record how a start-up run finished, with its profile.
    StoreRunFinished {
        outcome: RunOutcome,
        profile: Box<RunProfile>,
    },
    /// Stop what a node still runs of a service placed elsewhere now; nothing reports back.
    StopStale {
        node: String,
        request: orch_protocol::agent::StopRequest,
    },
    /// The manifest's priorities become the baselines of services without an operator's value.
    SetDefaultPriorities(BTreeMap<String, u8>),
    Reply(Reply),
}

/// A state change of one service, as recorded and announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub data: TransitionData,
    /// Restarts of the service so far (its state row keeps the count).
    pub restarts: u32,
}

/// Events that change no service's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ManifestApplied(ManifestAppliedData),
    RunFinished(RunFinishedData),
    PressureHigh(PressureData),
    PressureCleared(PressureData),
    Shed(ShedData),
    Restored(ShedData),
    Lost(orch_protocol::resources::LostData),
    Preempted(orch_protocol::resources::PreemptedData),
    RolloutStarted(orch_protocol::stack::RolloutData),
    RolloutProgressed(orch_protocol::stack::RolloutData),
    RolloutCompleted(orch_protocol::stack::RolloutData),
    RolloutFailed(orch_protocol::stack::RolloutData),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ManifestApplied(_) => EventKind::ManifestApplied,
            Event::RunFinished(_) => EventKind::RunFinished,
            Event::PressureHigh(_) => EventKind::PressureHigh,
            Event::PressureCleared(_) => EventKind::PressureCleared,
            Event::Shed(_) => EventKind::Shed,
            Event::Restored(_) => EventKind::Restored,
            Event::Lost(_) => EventKind::Lost,
            Event::Preempted(_) => EventKind::Preempted,
            Event::RolloutStarted(_) => EventKind::RolloutStarted,
            Event::RolloutProgressed(_) => EventKind::RolloutProgressed,
            Event::RolloutCompleted(_) => EventKind::RolloutCompleted,
            Event::RolloutFailed(_) => EventKind::RolloutFailed,
        }
    }

    /// The service token of the event's subject: the service shed or restored, the node under
    /// pressure, or none.
    pub fn service(&self) -> &str {
        match self {
            Event::ManifestApplied(_) | Event::RunFinished(_) => orch_protocol::events::SYSTEM_SERVICE,
            Event::PressureHigh(d) | Event::PressureCleared(d) => &d.node,
            Event::Shed(d) | Event::Restored(d) => &d.service,
            Event::Lost(d) => &d.service,
            Event::Preempted(d) => &d.service,
            Event::RolloutStarted(d)
            | Event::RolloutProgressed(d)
            | Event::RolloutCompleted(d)
            | Event::RolloutFailed(d) => &d.service,
        }
    }
}

/// The answer to a request.
#[derive(Debug)]
pub enum Reply {
    Applied(RequestId, Result<StackApplied, ControlError>),
    /// To `down`: how many services were stopped.
    Stopped(RequestId, Result<usize, ControlError>),
    Restart(RequestId, Result<(), ControlError>),
}
