//! Lifecycle of managed services: the states a managed service goes through, and the data of the
//! lifecycle events (`<prefix>.evt.lifecycle.<service>.<state>`), one event per transition.

use serde::{Deserialize, Serialize};

use crate::agent::Exit;

/// The state of a managed service. Each state is also the kind of the event announcing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Waiting for its dependencies or a free start slot.
    Pending,
    /// Launch asked of the node's agent.
    Starting,
    /// The process runs; not ready yet.
    Started,
    /// The readiness check passes (or it has none).
    Ready,
    /// A one-shot task that exited with code 0.
    Completed,
    /// Stop signal sent; waiting for the process to end.
    Stopping,
    Stopped,
    /// The process ended unexpectedly, did not become ready in time, or its liveness check went
    /// critical.
    Crashed,
    /// Waiting out its back-off before the next start.
    Restarting,
    /// Will not start: a required dependency failed or is blocked.
    Blocked,
    /// Given up: the restart policy does not restart it, or it started too often.
    Failed,
}

impl ServiceState {
    pub const ALL: [ServiceState; 11] = [
        ServiceState::Pending,
        ServiceState::Starting,
        ServiceState::Started,
        ServiceState::Ready,
        ServiceState::Completed,
        ServiceState::Stopping,
        ServiceState::Stopped,
        ServiceState::Crashed,
        ServiceState::Restarting,
        ServiceState::Blocked,
        ServiceState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::Starting => "starting",
            ServiceState::Started => "started",
            ServiceState::Ready => "ready",
            ServiceState::Completed => "completed",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Crashed => "crashed",
            ServiceState::Restarting => "restarting",
            ServiceState::Blocked => "blocked",
            ServiceState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceState> {
        ServiceState::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A process of the service may be running.
    pub fn running(self) -> bool {
        matches!(self, ServiceState::Starting | ServiceState::Started | ServiceState::Ready | ServiceState::Stopping)
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Data of every lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionData {
    pub service: String,
    /// The node it runs on, or is placed on; absent while no node is chosen (`pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub state: ServiceState,
    pub previous: ServiceState,
    /// Why, in words: the exit, the blocking dependency, the back-off, the stop request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How the process ended (`crashed`, `stopped`, `completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    /// Restarts in a row (`restarting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Back-off before the next start (`restarting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
    pub manifest_version: i64,
    /// The start-up run the transition belongs to, if one is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<uuid::Uuid>,
}

/// Data of `manifest_applied` (`<prefix>.evt.lifecycle._system.manifest_applied`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAppliedData {
    pub version: i64,
    pub source: String,
    pub services: usize,
}

/// Data of `run_finished` (`<prefix>.evt.lifecycle._system.run_finished`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinishedData {
    pub run_id: uuid::Uuid,
    pub manifest_version: i64,
    /// `ready` (everything ready or completed), `degraded` (some failed or blocked) or `aborted`
    /// (a critical service failed).
    pub outcome: String,
    pub wall_ms: u64,
    pub critical_path_ms: u64,
}

/// Payload of `<prefix>.req.lifecycle.apply`: the manifest as TOML text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub manifest: String,
    /// Who applies it; recorded with the version (default `nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Payload of `<prefix>.req.lifecycle.restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub service: String,
}

/// Data of `shed` and `restored`: a sheddable service stopped under node pressure, or started
/// again once the pressure had cleared for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShedData {
    pub service: String,
    pub node: String,
    /// Its effective priority when the step was taken.
    pub priority: u8,
    /// Why, e.g. `shed: memory 93% >= 90% on node local; lowest priority sheddable service`.
    pub reason: String,
    /// The node's pressure when the step was taken, 0-1.
    pub cpu: f64,
    pub memory: f64,
}

/// Data of `pressure_high` and `pressure_cleared` (domain `resource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PressureData {
    pub node: String,
    /// Busy share of all CPUs and used share of memory, 0-1, as the agent measured them.
    pub cpu: f64,
    pub memory: f64,
    pub cpu_threshold: f64,
    pub memory_threshold: f64,
    pub message: String,
}

/// `orch.req.lifecycle.logs` (and the query of `GET /api/v1/stack/services/{name}/logs`): the last
/// `limit` lines of a managed service's output that match every filter given, from every unit
/// of the service (each replica, on whichever node runs it), merged in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLogsRequest {
    pub service: String,
    /// Most lines, 1-[`crate::agent::LOG_LINES_MAX`] (default 100).
    #[serde(default = "hundred")]
    pub limit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::agent::LogStream>,
    /// Text the line must contain (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// A regular expression the line must match (not with `contains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Most bytes each agent reads for its unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_bytes: Option<u64>,
}

fn hundred() -> usize {
    100
}

impl ServiceLogsRequest {
    /// The last `limit` lines of `service`, unfiltered.
    pub fn last(service: impl Into<String>, limit: usize) -> ServiceLogsRequest {
        ServiceLogsRequest {
            service: service.into(),
            limit,
            since: None,
            until: None,
            stream: None,
            contains: None,
            regex: None,
            scan_bytes: None,
        }
    }

    /// What the agent of `unit` is asked.
    pub fn for_unit(&self, unit: &str) -> crate::agent::LogsRequest {
        crate::agent::LogsRequest {
            service: unit.to_string(),
            lines: self.limit,
            since: self.since,
            until: self.until,
            stream: self.stream,
            contains: self.contains.clone(),
            regex: self.regex.clone(),
            scan_bytes: self.scan_bytes,
        }
    }

    /// The bounds every agent checks, with this request's field names.
    pub fn validate(&self) -> Result<(), crate::ProtocolError> {
        self.for_unit(&self.service).validate().map_err(|mut e| {
            if e.0.field.as_deref() == Some("lines") {
                e.0.field = Some("limit".into());
                e.0.message = format!("must be 1-{}", crate::agent::LOG_LINES_MAX);
            }
            e
        })
    }
}

/// One line of a service's output, with the unit (the service, or one of its replicas) and the
/// node it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceLogLine {
    pub time: chrono::DateTime<chrono::Utc>,
    pub unit: String,
    pub node: String,
    pub stream: crate::agent::LogStream,
    pub text: String,
}

/// How the search of one unit went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitLogs {
    pub unit: String,
    /// The node that runs it (none: never placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its agent stopped at the scan bound: older matching lines may exist.
    pub truncated: bool,
    pub scanned_bytes: u64,
    /// Why its lines are missing (its agent did not answer), if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reply to [`ServiceLogsRequest`]: lines oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceLogs {
    pub service: String,
    pub lines: Vec<ServiceLogLine>,
    pub units: Vec<UnitLogs>,
    /// Some unit's scan stopped at its bound, or some unit could not be read.
    pub truncated: bool,
}
