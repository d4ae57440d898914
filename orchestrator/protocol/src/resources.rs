//! Resources on the wire (protocol.md §17): what a service asks for, what a node has, and what a
//! node's agent reports at each heartbeat on `<prefix>.agent.<node>.node`.
//!
//! CPU is counted in millicores (1000 = one core) and memory in MiB, as the manifest writes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// An amount of CPU and memory: `{"cpu": 500, "memory": 256}` is half a core and 256 MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Millicores: 1000 is one core.
    #[serde(default)]
    pub cpu: u64,
    /// MiB.
    #[serde(default)]
    pub memory: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpu: 0, memory: 0 };

    pub fn new(cpu: u64, memory: u64) -> Resources {
        Resources { cpu, memory }
    }

    pub fn is_zero(&self) -> bool {
        self.cpu == 0 && self.memory == 0
    }

    /// Whether `other` fits in `self` in both dimensions.
    pub fn fits(&self, other: &Resources) -> bool {
        other.cpu <= self.cpu && other.memory <= self.memory
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources { cpu: self.cpu.saturating_sub(other.cpu), memory: self.memory.saturating_sub(other.memory) }
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources { cpu: self.cpu.saturating_add(other.cpu), memory: self.memory.saturating_add(other.memory) }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        self.saturating_add(&other)
    }
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = self.saturating_add(&other);
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, |a, b| a + b)
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} millicores, {} MiB", self.cpu, self.memory)
    }
}

/// Limits the kernel enforces on one process (its cgroup): a CPU quota and a memory ceiling.
/// A field left out is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Millicores: the process gets at most this share of CPU time per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    /// MiB: above it, the kernel reclaims and then OOM-kills the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
}

impl Limits {
    /// The smallest CPU limit: the kernel's smallest quota is 1 ms, and the quota is taken per
    /// period of 100 ms.
    pub const CPU_MIN: u64 = 10;
    /// The largest CPU limit (1000 cores): far above any machine, below the kernel's bound.
    pub const CPU_MAX: u64 = 1_000_000;
    /// The largest memory limit (1 PiB), so that its size in bytes cannot overflow.
    pub const MEMORY_MAX: u64 = 1 << 30;

    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    /// Checks that the kernel can take these limits; errors name `<field>.cpu` or
    /// `<field>.memory`.
    pub fn validate(&self, field: &str) -> Result<(), ProtocolError> {
        if let Some(cpu) = self.cpu
            && !(Self::CPU_MIN..=Self::CPU_MAX).contains(&cpu)
        {
            return Err(ProtocolError::invalid(
                format!("{field}.cpu"),
                format!("{cpu} millicores: a CPU limit is {} to {} millicores", Self::CPU_MIN, Self::CPU_MAX),
            ));
        }
        if let Some(memory) = self.memory
            && !(1..=Self::MEMORY_MAX).contains(&memory)
        {
            return Err(ProtocolError::invalid(
                format!("{field}.memory"),
                format!("{memory} MiB: a memory limit is 1 to {} MiB", Self::MEMORY_MAX),
            ));
        }
        Ok(())
    }
}

impl From<Resources> for Limits {
    fn from(r: Resources) -> Limits {
        Limits { cpu: (r.cpu > 0).then_some(r.cpu), memory: (r.memory > 0).then_some(r.memory) }
    }
}

/// How an agent enforces limits, as it found the machine at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Enforcement {
    /// cgroup v2 (the unified hierarchy) with the cpu and memory controllers.
    CgroupV2,
    /// cgroup v1 with the cpu and memory hierarchies.
    CgroupV1,
    /// No usable cgroups, and the operator allowed running services without limits.
    Unlimited,
    /// No usable cgroups: services that ask for limits are refused.
    None,
}

/// What a node's agent reports at each heartbeat on `<prefix>.agent.<node>.node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeReport {
    pub node: String,
    /// Everything the machine has (all CPUs, all memory).
    pub capacity: Resources,
    /// Kept for the system and the agent itself: never placed on.
    pub reserved: Resources,
    /// Labels that constraints select on (`zone = "a"`, `disk = "ssd"`).
    pub labels: BTreeMap<String, String>,
    /// How limits are enforced on this node.
    pub enforcement: Enforcement,
    /// The services whose processes run here, with what each asked for.
    pub allocations: Vec<Allocation>,
    /// Measured use: busy share of all CPUs (0-1) and used share of memory (0-1).
    pub cpu_used: f64,
    pub memory_used: f64,
    /// The agent's version and when it started.
    pub agent_version: String,
    pub agent_started: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// One process on a node and what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Allocation {
    pub service: String,
    pub pid: u32,
    pub resources: Resources,
}

impl NodeReport {
    /// What may be placed on the node: capacity less the reservation.
    pub fn allocatable(&self) -> Resources {
        self.capacity.saturating_sub(&self.reserved)
    }

    pub fn allocated(&self) -> Resources {
        self.allocations.iter().map(|a| a.resources).sum()
    }
}

/// Whether a node's agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NodeStatus {
    /// Its agent reported within the node-down time.
    Ready,
    /// Its agent has been silent longer than the node-down time: nothing new is placed there.
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }

    /// Reads the stored value; anything but `ready` is down.
    pub fn from_stored(value: &str) -> NodeStatus {
        if value == "ready" { NodeStatus::Ready } else { NodeStatus::Down }
    }
}

/// A node as the inventory shows it (`GET /api/v1/nodes`, `orch.req.resource.nodes`): its last
/// report with whether it is heard from, since when, and what is left to place on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub name: String,
    pub status: NodeStatus,
    /// When it entered its status.
    pub since: DateTime<Utc>,
    /// When its last report arrived (by the orchestrator's clock).
    pub last_seen: DateTime<Utc>,
    pub capacity: Resources,
    pub reserved: Resources,
    /// capacity - reserved: what placement may use.
    pub allocatable: Resources,
    /// What the processes running there asked for.
    pub allocated: Resources,
    /// allocatable - allocated.
    pub free: Resources,
    pub labels: BTreeMap<String, String>,
    pub enforcement: Enforcement,
    pub allocations: Vec<Allocation>,
    /// Measured busy share of all CPUs (0-1) at the last report.
    pub cpu_used: f64,
    /// Measured used share of memory (0-1) at the last report.
    pub memory_used: f64,
    pub agent_version: String,
    pub agent_started: DateTime<Utc>,
}

impl NodeInfo {
    /// The view of a node from its last report.
    pub fn new(report: &NodeReport, status: NodeStatus, since: DateTime<Utc>, last_seen: DateTime<Utc>) -> NodeInfo {
        let allocated = report.allocated();
        NodeInfo {
            name: report.node.clone(),
            status,
            since,
            last_seen,
            capacity: report.capacity,
            reserved: report.reserved,
            allocatable: report.allocatable(),
            allocated,
            free: report.allocatable().saturating_sub(&allocated),
            labels: report.labels.clone(),
            enforcement: report.enforcement,
            allocations: report.allocations.clone(),
            cpu_used: report.cpu_used,
            memory_used: report.memory_used,
            agent_version: report.agent_version.clone(),
            agent_started: report.agent_started,
        }
    }
}

/// Reply to `orch.req.resource.nodes` and body of `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

/// Data of `lost` (`orch.evt.resource.<service>.lost`): a managed service ran on a node that went
/// down; it is placed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LostData {
    /// The managed service (a replica's own name, `api-1`).
    pub service: String,
    /// The service a replica belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// The node that went down.
    pub node: String,
    /// The pid it had there, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub reason: String,
}

/// Data of `preempted` (`orch.evt.resource.<service>.preempted`): a managed service was stopped to
/// make room for one of higher priority; it waits to be placed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreemptedData {
    /// The service stopped (a replica's own name).
    pub service: String,
    /// Its effective priority.
    pub priority: u8,
    /// The service it made room for, and that one's effective priority.
    pub by: String,
    pub by_priority: u8,
    pub node: String,
    /// Who preempted whom and why, in words.
    pub reason: String,
    /// Preemptions left in the budget's window after this one.
    pub budget_left: u32,
}

/// A quota as shown (`GET /api/v1/quotas`): what all the managed services of a group may ask for
/// together, and what the applied stack's services of the group ask for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaView {
    pub name: String,
    pub quota: Resources,
    pub used: Resources,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// Body of `GET /api/v1/quotas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaList {
    pub quotas: Vec<QuotaView>,
}

/// Body of `PUT /api/v1/quotas/{name}`: CPU in millicores and memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaRequest {
    pub cpu: u64,
    pub memory: u64,
}

/// Body of `orch.req.resource.node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRef {
    pub name: String,
}

/// Data of `node_joined`, `node_down` and `node_up` (`orch.evt.resource.<node>.<kind>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeEventData {
    pub node: String,
    pub status: NodeStatus,
    /// Why, in words: "first report", "silent for 10.2s (node-down time 10s)", "reported again".
    pub reason: String,
    pub last_seen: DateTime<Utc>,
    pub capacity: Resources,
    pub labels: BTreeMap<String, String>,
    /// The services whose processes it reported at its last report.
    pub services: Vec<String>,
}

/// Checks a label map as agents and manifests write it: names as service names (plus `.` and `/`
/// for prefixes such as `topology/zone`), values up to 63 printable characters.
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ProtocolError> {
    for (key, value) in labels {
        if !is_label_key(key) {
            return Err(ProtocolError::invalid(
                format!("{field}.{key}"),
                "label names are 1-63 characters of a-z, A-Z, 0-9, '-', '_', '.', '/'",
            ));
        }
        if !is_label_value(value) {
            return Err(ProtocolError::invalid(
                format!("{field}.{key}"),
                "label values are at most 63 characters, none of them control characters",
            ));
        }
    }
    Ok(())
}

/// A label name as [`validate_labels`] accepts it (constraints name labels the same way).
pub fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// A label value as [`validate_labels`] accepts it.
pub fn is_label_value(value: &str) -> bool {
    value.len() <= 63 && !value.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_add_and_fit() {
        let node = Resources::new(2000, 1024);
        let a = Resources::new(500, 256);
        assert!(node.fits(&a));
        assert!(!a.fits(&node));
        assert_eq!(a + a, Resources::new(1000, 512));
        assert_eq!(node.saturating_sub(&Resources::new(3000, 1)), Resources::new(0, 1023));
        assert_eq!([a, a, a].into_iter().sum::<Resources>(), Resources::new(1500, 768));
        assert_eq!(serde_json::to_value(a).unwrap(), serde_json::json!({"cpu": 500, "memory": 256}));
    }

    #[test]
    fn limits_leave_out_what_is_zero() {
        assert_eq!(Limits::from(Resources::new(0, 64)), Limits { cpu: None, memory: Some(64) });
        assert!(Limits::from(Resources::ZERO).is_empty());
    }

    #[test]
    fn label_names_are_checked() {
        let ok = BTreeMap::from([("topology/zone".to_string(), "a".to_string())]);
        assert!(validate_labels("labels", &ok).is_ok());
        let bad = BTreeMap::from([("zone name".to_string(), "a".to_string())]);
        let err = validate_labels("labels", &bad).unwrap_err();
        assert!(err.to_string().contains("labels.zone name"), "{err}");
    }
}
