//! What the controller shows of the stack: the answer to `apply`, the managed services and
//! their states, and start-up profiles.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orch_protocol::lifecycle::ServiceState;
use serde::Serialize;
use uuid::Uuid;

use crate::lifecycle::profile::Profile;

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
