//! The managed stack as the HTTP API shows it (protocol.md §12): what applying a manifest answers,
//! the managed services and their states, what taking the stack down stopped, and the profile of a
//! start-up run. The orchestrator serializes these types and clients (`orch-client`) read them,
//! so both sides share one definition.
//!
//! Durations go on the wire as milliseconds with microsecond precision (`wall_ms: 12.345`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::ServiceState;

/// What `PUT /stack` accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackApplied {
    pub version: i64,
    pub run_id: Uuid,
    pub services: usize,
    /// Services stopped first because they changed or left the stack.
    pub replaced: Vec<String>,
    /// Replicas replaced a batch at a time once the stack is up (changed services with an
    /// `update` block): see `rollouts` in the stack view and the `rollout_*` events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolling: Vec<String>,
}

/// A rolling update of one service, as the stack view shows it and as its `rollout_*` events
/// carry it (protocol.md §12.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutData {
    /// The service (its replicas are replaced).
    pub service: String,
    /// The manifest version rolled out, and the one its replicas ran before.
    pub version: i64,
    pub from_version: i64,
    /// The version applied again if the update fails (`auto_revert`); absent when it does not
    /// revert (turned off, or this update is itself a revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_to: Option<i64>,
    pub max_parallel: u32,
    /// Replicas running the new version, healthy for `min_healthy_time`.
    pub replaced: Vec<String>,
    /// The batch being replaced now.
    pub batch: Vec<String>,
    /// Replicas still on the old version, in the order they will be replaced.
    pub remaining: Vec<String>,
    pub started_at: DateTime<Utc>,
    /// Why it failed. A failed update moves no further; it stays in the stack view, with its
    /// reason, until a newer version (an auto-revert, or the next apply) supersedes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether the stack is wanted running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Desired {
    Up,
    Down,
}

impl Desired {
    /// As stored and shown: `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Up => "up",
            Desired::Down => "down",
        }
    }

    /// Reads the stored value; anything but `up` is down.
    pub fn from_stored(value: &str) -> Desired {
        if value == "up" { Desired::Up } else { Desired::Down }
    }
}

/// One managed service as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManagedService {
    /// The service, or one replica of it (`api-0`).
    pub name: String,
    /// The service a replica belongs to (`api` for `api-0`); absent for a service of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// What it asked for (manifest `resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::resources::Resources>,
    /// The quota group it counts against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Why it runs where it runs, or why it waits for a node: its last placement, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// The node it runs on (its pin, or where it was placed); absent while it waits for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub state: ServiceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    pub since: DateTime<Utc>,
    pub priority: u8,
    pub critical: bool,
    pub depends_on: Vec<String>,
    pub level: usize,
}

/// The stack as `GET /stack` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackView {
    pub version: i64,
    /// `up` or `down`.
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub desired: Desired,
    /// The start-up run in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// Services in each state.
    pub counts: BTreeMap<ServiceState, usize>,
    pub services: Vec<ManagedService>,
    /// Rolling updates in progress, and failed ones not yet superseded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutData>,
}

/// What `DELETE /stack` stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stopped {
    /// Services that had a process.
    pub stopped: usize,
}

/// Times of one service, from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceTiming {
    /// Its dependencies were met (it could start but for a free slot).
    #[serde(rename = "queued_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub queued: Duration,
    /// Its launch was asked of the agent.
    #[serde(rename = "started_ms", with = "ms_opt", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub started: Option<Duration>,
    /// Ready, or completed for a one-shot task.
    #[serde(rename = "ready_ms", with = "ms_opt", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub ready: Option<Duration>,
}

impl ServiceTiming {
    /// From start to ready: the service's own share of the start-up.
    pub fn took(&self) -> Option<Duration> {
        Some(self.ready?.saturating_sub(self.started?))
    }
}

/// One link of the critical chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainLink {
    pub service: String,
    #[serde(rename = "started_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub started: Duration,
    #[serde(rename = "ready_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub ready: Duration,
    /// ready - started.
    #[serde(rename = "took_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub took: Duration,
}

/// A service that held the start-up back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bottleneck {
    pub service: String,
    #[serde(rename = "took_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub took: Duration,
    pub why: String,
}

/// The profile of one start-up run, like `systemd-analyze critical-chain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    /// From the first queued service to the last ready one.
    #[serde(rename = "wall_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub wall: Duration,
    /// The longest path through the graph weighted by each service's own start time.
    #[serde(rename = "critical_path_ms", with = "ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub critical_path: Duration,
    /// critical_path / wall: 1.0 means the orchestrator added nothing to what the dependencies
    /// force.
    pub efficiency: f64,
    /// From the first service of the chain to the one that became ready last.
    pub chain: Vec<ChainLink>,
    pub bottlenecks: Vec<Bottleneck>,
    pub services: BTreeMap<String, ServiceTiming>,
}

/// A start-up run's profile with its identity (`GET /stack/profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunProfile {
    pub run_id: Uuid,
    pub manifest_version: i64,
    pub started_at: DateTime<Utc>,
    pub finished: bool,
    /// `ready`, `degraded`, `aborted` or `cancelled` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(flatten)]
    pub profile: Profile,
}

mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_micros() as f64) / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

mod ms_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::ms::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|ms| Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_reads_back_what_was_written() {
        let timing = ServiceTiming {
            queued: Duration::from_micros(1_500),
            started: Some(Duration::from_micros(2_250)),
            ready: None,
        };
        let profile = RunProfile {
            run_id: Uuid::nil(),
            manifest_version: 3,
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            finished: false,
            outcome: None,
            profile: Profile {
                wall: Duration::from_micros(12_345),
                critical_path: Duration::from_millis(10),
                efficiency: 0.81,
                chain: vec![ChainLink {
                    service: "db".into(),
                    started: Duration::ZERO,
                    ready: Duration::from_millis(7),
                    took: Duration::from_millis(7),
                }],
                bottlenecks: Vec::new(),
                services: BTreeMap::from([("db".to_string(), timing)]),
            },
        };
        let json = serde_json::to_value(&profile).unwrap();
        assert_eq!(json["wall_ms"], 12.345);
        assert_eq!(json["services"]["db"], serde_json::json!({"queued_ms": 1.5, "started_ms": 2.25}));
        assert!(json.get("outcome").is_none());
        assert_eq!(serde_json::from_value::<RunProfile>(json).unwrap(), profile);
    }

    #[test]
    fn desired_is_lowercase_on_the_wire() {
        assert_eq!(serde_json::to_value(Desired::Up).unwrap(), "up");
        assert_eq!(Desired::from_stored("down"), Desired::Down);
        assert_eq!(Desired::from_stored("up").as_str(), "up");
    }
}
