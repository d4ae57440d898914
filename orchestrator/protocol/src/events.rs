//! Events: CloudEvents 1.0 in structured JSON mode, built with the CloudEvents SDK.
//! Each kind knows its domain, its subject token and its `type` string; the data of each kind is a
//! typed struct below, so producers and consumers agree at compile time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorBody, ProtocolError};
use crate::health::{Aggregate, CheckKind, Counts};
use crate::lifecycle::ServiceState;
pub use crate::lifecycle::{ManifestAppliedData, PressureData, RunFinishedData, ShedData, TransitionData};
use crate::priority::Outcome;
pub use crate::priority::{Change, HoldData};
use crate::registry::{Health, Instance};
use crate::subjects::Subjects;
use crate::workflow::WorkflowEvent;

pub use cloudevents::Event;
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};

/// `source` attribute of every event the orchestrator emits.
pub const SOURCE: &str = "/orchestrator";

/// Service token used in the subject of events that belong to no single service.
pub const SYSTEM_SERVICE: &str = "_system";

/// Every kind of event. Adding one means adding its data struct and a line in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Registered,
    Updated,
    Deregistered,
    Expired,
    Recovered,
    SelfPreservationEntered,
    SelfPreservationExited,
    CommandRejected,
    /// An event JetStream kept refusing was set aside so the events behind it flow (data
    /// [`EventIsolatedData`]).
    EventIsolated,
    CheckChanged,
    InstanceChanged,
    ServiceChanged,
    SystemChanged,
    FlappingStarted,
    FlappingStopped,
    MaintenanceEntered,
    MaintenanceExited,
    CheckerLagging,
    CheckerRecovered,
    /// A managed service entered this state (domain `lifecycle`, data [`TransitionData`]).
    Lifecycle(ServiceState),
    ManifestApplied,
    RunFinished,
    /// A change of a service's priority, by its outcome (domain `priority`, data [`Change`]).
    Priority(Outcome),
    PriorityHoldStarted,
    PriorityHoldEnded,
    /// A sheddable service stopped under node pressure (domain `lifecycle`, data [`ShedData`]).
    Shed,
    /// A shed service started again after the pressure cleared.
    Restored,
    /// A node's pressure crossed a threshold (domain `resource`, node name as the service token).
    PressureHigh,
    PressureCleared,
    /// A node's agent reported for the first time (domain `resource`, node name as the service
    /// token, data [`crate::resources::NodeEventData`]).
    NodeJoined,
    /// A node's agent fell silent for longer than the orchestrator's node-down setting.
    NodeDown,
    /// A node that was down reported again.
    NodeUp,
    /// A managed service (or replica) ran on a node that went down: it is placed again
    /// (domain `resource`, the service as the token, data [`crate::resources::LostData`]).
    Lost,
    /// A managed service was stopped to make room for one of higher priority (data
    /// [`crate::resources::PreemptedData`]).
    Preempted,
    /// A rolling update of a changed service began (domain `lifecycle`, the service as the
    /// token, data [`crate::stack::RolloutData`]).
    RolloutStarted,
    /// A batch of a rolling update was healthy for its `min_healthy_time`; the next begins.
    RolloutProgressed,
    /// Every replica of the service runs the new version.
    RolloutCompleted,
    /// A batch was not healthy within its deadline, or crashed: the update stops there (and the
    /// last good version is applied again when `auto_revert`).
    RolloutFailed,
    /// A replica took the group's lease with a new term (domain `cluster`, the replica's name as
    /// the service token, data [`LeaderElectedData`]).
    LeaderElected,
    /// A replica's term ended because another took the lease (data [`LeaderLostData`]).
    LeaderLost,
    /// A change of a workflow execution or of one of its steps (domain `workflow`, the
    /// workflow's name as the service token, data [`crate::workflow::WorkflowEventData`]).
    Workflow(crate::workflow::WorkflowEvent),
    /// A key of the config store was set or reverted (domain `config`, the key's first token as
    /// the service token, data [`crate::config_store::ConfigChange`]).
    ConfigChanged,
    /// A key of the config store was deleted (same domain and data).
    ConfigDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 67] = [
        EventKind::Registered,
        EventKind::Updated,
        EventKind::Deregistered,
        EventKind::Expired,
        EventKind::Recovered,
        EventKind::SelfPreservationEntered,
        EventKind::SelfPreservationExited,
        EventKind::CommandRejected,
        EventKind::EventIsolated,
        EventKind::CheckChanged,
        EventKind::InstanceChanged,
        EventKind::ServiceChanged,
        EventKind::SystemChanged,
        EventKind::FlappingStarted,
        EventKind::FlappingStopped,
        EventKind::MaintenanceEntered,
        EventKind::MaintenanceExited,
        EventKind::CheckerLagging,
        EventKind::CheckerRecovered,
        EventKind::Lifecycle(ServiceState::Pending),
        EventKind::Lifecycle(ServiceState::Starting),
        EventKind::Lifecycle(ServiceState::Started),
        EventKind::Lifecycle(ServiceState::Ready),
        EventKind::Lifecycle(ServiceState::Completed),
        EventKind::Lifecycle(ServiceState::Stopping),
        EventKind::Lifecycle(ServiceState::Stopped),
        EventKind::Lifecycle(ServiceState::Crashed),
        EventKind::Lifecycle(ServiceState::Restarting),
        EventKind::Lifecycle(ServiceState::Blocked),
        EventKind::Lifecycle(ServiceState::Failed),
        EventKind::ManifestApplied,
        EventKind::RunFinished,
        EventKind::Priority(Outcome::Applied),
        EventKind::Priority(Outcome::Clamped),
        EventKind::Priority(Outcome::Held),
        EventKind::Priority(Outcome::Refused),
        EventKind::Priority(Outcome::Expired),
        EventKind::Priority(Outcome::Dropped),
        EventKind::PriorityHoldStarted,
        EventKind::PriorityHoldEnded,
        EventKind::Shed,
        EventKind::Restored,
        EventKind::PressureHigh,
        EventKind::PressureCleared,
        EventKind::NodeJoined,
        EventKind::NodeDown,
        EventKind::NodeUp,
        EventKind::Lost,
        EventKind::Preempted,
        EventKind::RolloutStarted,
        EventKind::RolloutProgressed,
        EventKind::RolloutCompleted,
        EventKind::RolloutFailed,
        EventKind::LeaderElected,
        EventKind::LeaderLost,
        EventKind::ConfigChanged,
        EventKind::ConfigDeleted,
        EventKind::Workflow(WorkflowEvent::Started),
        EventKind::Workflow(WorkflowEvent::StepStarted),
        EventKind::Workflow(WorkflowEvent::StepSucceeded),
        EventKind::Workflow(WorkflowEvent::StepRetrying),
        EventKind::Workflow(WorkflowEvent::StepFailed),
        EventKind::Workflow(WorkflowEvent::StepSkipped),
        EventKind::Workflow(WorkflowEvent::CompensationStarted),
        EventKind::Workflow(WorkflowEvent::Succeeded),
        EventKind::Workflow(WorkflowEvent::Failed),
        EventKind::Workflow(WorkflowEvent::Cancelled),
    ];

    /// Domain token of the subject: `registry`, `health`, `lifecycle` or `system`.
    pub fn domain(self) -> &'static str {
        match self {
            EventKind::Registered
            | EventKind::Updated
            | EventKind::Deregistered
            | EventKind::Expired
            | EventKind::Recovered => "registry",
            EventKind::CheckChanged
            | EventKind::InstanceChanged
            | EventKind::ServiceChanged
            | EventKind::SystemChanged
            | EventKind::FlappingStarted
            | EventKind::FlappingStopped
            | EventKind::MaintenanceEntered
            | EventKind::MaintenanceExited => "health",
            EventKind::SelfPreservationEntered
            | EventKind::SelfPreservationExited
            | EventKind::CommandRejected
            | EventKind::EventIsolated
            | EventKind::CheckerLagging
            | EventKind::CheckerRecovered
            | EventKind::PriorityHoldStarted
            | EventKind::PriorityHoldEnded => "system",
            EventKind::Lifecycle(_)
            | EventKind::ManifestApplied
            | EventKind::RunFinished
            | EventKind::Shed
            | EventKind::Restored
            | EventKind::RolloutStarted
            | EventKind::RolloutProgressed
            | EventKind::RolloutCompleted
            | EventKind::RolloutFailed => "lifecycle",
            EventKind::Priority(_) => "priority",
            EventKind::PressureHigh
            | EventKind::PressureCleared
            | EventKind::NodeJoined
            | EventKind::NodeDown
            | EventKind::NodeUp
            | EventKind::Lost
            | EventKind::Preempted => "resource",
            EventKind::LeaderElected | EventKind::LeaderLost => "cluster",
            EventKind::ConfigChanged | EventKind::ConfigDeleted => "config",
            EventKind::Workflow(_) => "workflow",
        }
    }

    /// Last subject token, e.g. `registered`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Updated => "updated",
            EventKind::Deregistered => "deregistered",
            EventKind::Expired => "expired",
            EventKind::Recovered => "recovered",
            EventKind::SelfPreservationEntered => "self_preservation_entered",
            EventKind::SelfPreservationExited => "self_preservation_exited",
            EventKind::CommandRejected => "command_rejected",
            EventKind::EventIsolated => "event_isolated",
            EventKind::CheckChanged => "check_changed",
            EventKind::InstanceChanged => "instance_changed",
            EventKind::ServiceChanged => "service_changed",
            EventKind::SystemChanged => "system_changed",
            EventKind::FlappingStarted => "flapping_started",
            EventKind::FlappingStopped => "flapping_stopped",
            EventKind::MaintenanceEntered => "maintenance_entered",
            EventKind::MaintenanceExited => "maintenance_exited",
            EventKind::CheckerLagging => "checker_lagging",
            EventKind::CheckerRecovered => "checker_recovered",
            EventKind::Lifecycle(state) => state.as_str(),
            EventKind::ManifestApplied => "manifest_applied",
            EventKind::RunFinished => "run_finished",
            EventKind::Priority(outcome) => outcome.as_str(),
            EventKind::PriorityHoldStarted => "priority_hold_started",
            EventKind::PriorityHoldEnded => "priority_hold_ended",
            EventKind::Shed => "shed",
            EventKind::Restored => "restored",
            EventKind::PressureHigh => "pressure_high",
            EventKind::PressureCleared => "pressure_cleared",
            EventKind::NodeJoined => "node_joined",
            EventKind::NodeDown => "node_down",
            EventKind::NodeUp => "node_up",
            EventKind::Lost => "lost",
            EventKind::Preempted => "preempted",
            EventKind::RolloutStarted => "rollout_started",
            EventKind::RolloutProgressed => "rollout_progressed",
            EventKind::RolloutCompleted => "rollout_completed",
            EventKind::RolloutFailed => "rollout_failed",
            EventKind::LeaderElected => "leader_elected",
            EventKind::ConfigChanged => "changed",
            EventKind::ConfigDeleted => "deleted",
            EventKind::LeaderLost => "leader_lost",
            EventKind::Workflow(kind) => kind.as_str(),
        }
    }

    /// CloudEvents `type`, e.g. `io.orch.registry.registered.v1`.
    pub fn type_str(self) -> &'static str {
        match self {
            EventKind::Registered => "io.orch.registry.registered.v1",
            EventKind::Updated => "io.orch.registry.updated.v1",
            EventKind::Deregistered => "io.orch.registry.deregistered.v1",
            EventKind::Expired => "io.orch.registry.expired.v1",
            EventKind::Recovered => "io.orch.registry.recovered.v1",
            EventKind::SelfPreservationEntered => "io.orch.system.self_preservation_entered.v1",
            EventKind::SelfPreservationExited => "io.orch.system.self_preservation_exited.v1",
            EventKind::CommandRejected => "io.orch.system.command_rejected.v1",
            EventKind::EventIsolated => "io.orch.system.event_isolated.v1",
            EventKind::CheckChanged => "io.orch.health.check_changed.v1",
            EventKind::InstanceChanged => "io.orch.health.instance_changed.v1",
            EventKind::ServiceChanged => "io.orch.health.service_changed.v1",
            EventKind::SystemChanged => "io.orch.health.system_changed.v1",
            EventKind::FlappingStarted => "io.orch.health.flapping_started.v1",
            EventKind::FlappingStopped => "io.orch.health.flapping_stopped.v1",
            EventKind::MaintenanceEntered => "io.orch.health.maintenance_entered.v1",
            EventKind::MaintenanceExited => "io.orch.health.maintenance_exited.v1",
            EventKind::CheckerLagging => "io.orch.system.checker_lagging.v1",
            EventKind::CheckerRecovered => "io.orch.system.checker_recovered.v1",
            EventKind::Lifecycle(state) => match state {
                ServiceState::Pending => "io.orch.lifecycle.pending.v1",
                ServiceState::Starting => "io.orch.lifecycle.starting.v1",
                ServiceState::Started => "io.orch.lifecycle.started.v1",
                ServiceState::Ready => "io.orch.lifecycle.ready.v1",
                ServiceState::Completed => "io.orch.lifecycle.completed.v1",
                ServiceState::Stopping => "io.orch.lifecycle.stopping.v1",
                ServiceState::Stopped => "io.orch.lifecycle.stopped.v1",
                ServiceState::Crashed => "io.orch.lifecycle.crashed.v1",
                ServiceState::Restarting => "io.orch.lifecycle.restarting.v1",
                ServiceState::Blocked => "io.orch.lifecycle.blocked.v1",
                ServiceState::Failed => "io.orch.lifecycle.failed.v1",
            },
            EventKind::ManifestApplied => "io.orch.lifecycle.manifest_applied.v1",
            EventKind::RunFinished => "io.orch.lifecycle.run_finished.v1",
            EventKind::Priority(outcome) => match outcome {
                Outcome::Applied => "io.orch.priority.applied.v1",
                Outcome::Clamped => "io.orch.priority.clamped.v1",
                Outcome::Held => "io.orch.priority.held.v1",
                Outcome::Refused => "io.orch.priority.refused.v1",
                Outcome::Expired => "io.orch.priority.expired.v1",
                Outcome::Dropped => "io.orch.priority.dropped.v1",
            },
            EventKind::PriorityHoldStarted => "io.orch.system.priority_hold_started.v1",
            EventKind::PriorityHoldEnded => "io.orch.system.priority_hold_ended.v1",
            EventKind::Shed => "io.orch.lifecycle.shed.v1",
            EventKind::Restored => "io.orch.lifecycle.restored.v1",
            EventKind::PressureHigh => "io.orch.resource.pressure_high.v1",
            EventKind::PressureCleared => "io.orch.resource.pressure_cleared.v1",
            EventKind::NodeJoined => "io.orch.resource.node_joined.v1",
            EventKind::NodeDown => "io.orch.resource.node_down.v1",
            EventKind::NodeUp => "io.orch.resource.node_up.v1",
            EventKind::Lost => "io.orch.resource.lost.v1",
            EventKind::Preempted => "io.orch.resource.preempted.v1",
            EventKind::RolloutStarted => "io.orch.lifecycle.rollout_started.v1",
            EventKind::RolloutProgressed => "io.orch.lifecycle.rollout_progressed.v1",
            EventKind::RolloutCompleted => "io.orch.lifecycle.rollout_completed.v1",
            EventKind::RolloutFailed => "io.orch.lifecycle.rollout_failed.v1",
            EventKind::LeaderElected => "io.orch.cluster.leader_elected.v1",
            EventKind::LeaderLost => "io.orch.cluster.leader_lost.v1",
            EventKind::ConfigChanged => "io.orch.config.changed.v1",
            EventKind::ConfigDeleted => "io.orch.config.deleted.v1",
            EventKind::Workflow(kind) => kind.type_str(),
        }
    }

    pub fn from_type_str(ty: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.type_str() == ty)
    }
}

/// Data of `registered`: the instance as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredData {
    pub instance: Instance,
}

/// Data of `updated`: the instance after the change and the names of the fields that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatedData {
    pub instance: Instance,
    pub changed: Vec<String>,
}

/// Why an instance left the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeregisterReason {
    /// A client asked for it.
    Requested,
    /// It stayed critical longer than the configured limit.
    CriticalTooLong,
}

/// Data of `deregistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeregisteredData {
    pub instance: Instance,
    pub reason: DeregisterReason,
}

/// Data of `expired`: the lease ran out; the instance is now critical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredData {
    pub instance: Instance,
    pub previous_health: Health,
    /// The last heartbeat the orchestrator saw, if any since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

/// Data of `recovered`: a heartbeat arrived for a critical instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredData {
    pub instance: Instance,
    pub previous_health: Health,
    /// How long the instance had been critical, in milliseconds.
    pub critical_for_ms: i64,
}

/// Data of `self_preservation_entered` / `self_preservation_exited`, and the reply to an
/// operator's end of it (protocol.md §5.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SelfPreservationData {
    /// Instances whose lease ran out in the sweep that decided.
    pub expiring: usize,
    /// Instances with a live lease before that sweep.
    pub live: usize,
    /// The configured share above which expiry is suspended.
    pub threshold: f64,
    pub message: String,
    /// Why an operator ended it (`self_preservation_exited` by request, whose `principal` is the
    /// operator); absent when heartbeats recovered by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Data of `command_rejected`: a command could not be applied and went to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejectedData {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    pub error: ErrorBody,
    /// Id of the record in the dead-letter table and `Nats-Msg-Id` on the dead-letter stream.
    pub dead_letter_id: Uuid,
}

/// Data of `event_isolated`: the outbox relay could not publish an event after bounded retries
/// while JetStream answered, so it moved the event to the dead-letter table instead of letting it
/// hold back every event behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIsolatedData {
    /// The event's id (its `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// The subject it was to be published on.
    pub subject: String,
    /// JetStream's (or the client's) last refusal.
    pub error: String,
    pub attempts: u32,
    /// Id of the record in the dead-letter table, which keeps the event's payload.
    pub dead_letter_id: Uuid,
    pub message: String,
}

/// Data of `check_changed`: a check of an instance changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckChangedData {
    pub service: String,
    pub instance_id: String,
    pub check: String,
    pub kind: CheckKind,
    pub previous: Health,
    pub status: Health,
    /// The output of the run that caused the change (at most 4 KiB).
    #[serde(default)]
    pub output: String,
}

/// Data of `instance_changed`: the health of an instance (the worst of its lease and checks)
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceChangedData {
    pub instance: Instance,
    pub previous: Health,
    pub health: Health,
    /// What caused it: `lease`, `check:<id>`, or `checks` (the declared checks were changed).
    pub cause: String,
}

/// Data of `flapping_started` and `flapping_stopped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlappingData {
    pub instance: Instance,
    /// Health changes inside the window when flapping started; 0 when it stopped.
    pub changes: usize,
    /// The flap window, e.g. `2m`.
    pub window: String,
}

/// Data of `maintenance_entered` and `maintenance_exited`, for an instance or a whole service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceData {
    pub service: String,
    /// Absent for service-wide maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub reason: String,
}

/// Data of `service_changed`: the aggregated health of a service changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChangedData {
    pub service: String,
    /// Absent when the service was not tracked before (its first instance arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Aggregate>,
    pub state: Aggregate,
    pub counts: Counts,
    /// The service is marked critical: the system is critical while it is.
    pub critical: bool,
}

/// Data of `system_changed`: the health of the whole system changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemChangedData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Aggregate>,
    pub state: Aggregate,
    /// Services by state (services in maintenance are left out).
    pub healthy: u32,
    pub degraded: u32,
    pub critical: u32,
    /// Services marked critical that are critical now: why the system is critical.
    pub critical_services_down: Vec<String>,
}

/// Data of `checker_lagging` and `checker_recovered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckerLagData {
    /// Declared checks scheduled or watched (active and ttl).
    pub checks: usize,
    /// How late runs started in the last window, 99th percentile and worst, in milliseconds.
    pub drift_p99_ms: f64,
    pub drift_max_ms: f64,
    /// Runs skipped in the window because the previous one was still due.
    pub skipped: u64,
    /// The configured drift above which the checker reports lagging.
    pub max_drift_ms: f64,
    pub message: String,
}

/// Why a term ended and the next began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Succession {
    /// No replica held the lease before: the group's first term.
    First,
    /// The lease ran out: its holder stopped (a stopping leader gives it up at once), paused, or
    /// was cut off from PostgreSQL for longer than the lease.
    LeaseEnded,
    /// The holder had no session left in PostgreSQL (its process died): taken before the lease
    /// ran out.
    HolderGone,
}

/// Data of `leader_elected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderElectedData {
    /// The replica that leads now.
    pub replica: String,
    /// Its term: one more than the one before; every write of an older term is refused.
    pub term: i64,
    /// When the term began (PostgreSQL's clock).
    pub since: DateTime<Utc>,
    /// The replica whose term ended, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub reason: Succession,
}

/// Data of `leader_lost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLostData {
    /// The replica whose term ended.
    pub replica: String,
    pub term: i64,
    /// The replica that leads now, and its term.
    pub successor: String,
    pub successor_term: i64,
    pub reason: Succession,
}

/// An event ready to publish: its id (also the `Nats-Msg-Id`), subject and serialized body.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
}

/// Builds an event of `kind` about `service` (a subject token; [`SYSTEM_SERVICE`] for none) with
/// CloudEvents `subject` = `ce_subject` (the instance id, for registry events), caused by
/// `principal` (see [`crate::principal`]).
pub fn encode(
    subjects: &Subjects,
    kind: EventKind,
    service: &str,
    ce_subject: &str,
    principal: &str,
    time: DateTime<Utc>,
    data: &impl Serialize,
) -> Encoded {
    encode_with_id(subjects, Uuid::now_v7(), kind, service, ce_subject, principal, time, data)
}

/// [`encode`] with a given id, for events whose id is already known (a priority change's).
#[allow(clippy::too_many_arguments)]
pub fn encode_with_id(
    subjects: &Subjects,
    id: Uuid,
    kind: EventKind,
    service: &str,
    ce_subject: &str,
    principal: &str,
    time: DateTime<Utc>,
    data: &impl Serialize,
) -> Encoded {
    let data = serde_json::to_value(data).expect("event data serializes");
    let event = EventBuilderV10::new()
        .id(id.to_string())
        .source(SOURCE)
        .ty(kind.type_str())
        .subject(ce_subject)
        .time(time)
        .extension(crate::principal::EVENT_ATTRIBUTE, principal)
        .data("application/json", data)
        .build()
        .expect("every required CloudEvents attribute is set");
    Encoded {
        id,
        subject: subjects.event(kind.domain(), service, kind.name()),
        payload: serde_json::to_vec(&event).expect("a CloudEvent serializes"),
    }
}

/// Parses an event from the wire and returns its kind (when known) and the event.
pub fn decode(payload: &[u8]) -> Result<(Option<EventKind>, Event), ProtocolError> {
    let event: Event = crate::error::parse_json(payload)?;
    Ok((EventKind::from_type_str(event.ty()), event))
}

/// The JSON data of an event, deserialized into `T`.
pub fn data_of<T: for<'de> Deserialize<'de>>(event: &Event) -> Result<T, ProtocolError> {
    use cloudevents::Data;
    let value = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::String(s)) => serde_json::from_str(s).map_err(|e| {
            ProtocolError::new(crate::ErrorCode::MalformedPayload, format!("event data is not JSON: {e}"))
        })?,
        Some(Data::Binary(b)) => serde_json::from_slice(b).map_err(|e| {
            ProtocolError::new(crate::ErrorCode::MalformedPayload, format!("event data is not JSON: {e}"))
        })?,
        None => serde_json::Value::Null,
    };
    serde_json::from_value(value)
        .map_err(|e| ProtocolError::new(crate::ErrorCode::MalformedPayload, format!("event data: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_structured_cloudevent() {
        let s = Subjects::default();
        let data = SelfPreservationData { expiring: 3, live: 10, threshold: 0.15, message: "m".into(), reason: None };
        let e =
            encode(&s, EventKind::SelfPreservationEntered, SYSTEM_SERVICE, "registry", "key:ops", Utc::now(), &data);
        assert_eq!(e.subject, "orch.evt.system._system.self_preservation_entered");
        let json: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], e.id.to_string());
        assert_eq!(json["type"], "io.orch.system.self_preservation_entered.v1");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["expiring"], 3);
        assert_eq!(json["principal"], "key:ops", "the principal is a CloudEvents extension attribute");
        let (kind, event) = decode(&e.payload).unwrap();
        assert_eq!(kind, Some(EventKind::SelfPreservationEntered));
        let back: SelfPreservationData = data_of(&event).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn type_strings_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_type_str(k.type_str()), Some(k));
            assert!(k.type_str().contains(k.name()));
        }
    }
}
