//! Manifest history (protocol.md §12.11): the stored versions of the manifest with who applied
//! them and when, one version's text, the difference between two versions service by service and
//! field by field, and a rollback (a new version equal to an old one, applied like any other).
//! The same types answer over HTTP and NATS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::stack::Desired;

/// Most versions one listing returns.
pub const VERSIONS_MAX: usize = 500;
/// Versions a listing returns when it does not say.
pub const VERSIONS_DEFAULT: usize = 50;

/// One stored version of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestVersion {
    pub version: i64,
    /// What applied it, as given with the apply (`cli`, `api`, `nats`, `rollback to v3`,
    /// `auto-revert …`).
    pub source: String,
    /// Who applied it, as authenticated (`key:ops`, `nats:operator`, `orchestrator`); absent for
    /// a version stored before principals were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub applied_at: DateTime<Utc>,
    /// Whether the stack of this version is wanted running; only the newest version's matters.
    pub desired: Desired,
    /// The newest version: the stack the orchestrator brings about.
    pub current: bool,
}

/// A page of versions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestVersions {
    pub versions: Vec<ManifestVersion>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// One version with its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestVersionText {
    #[serde(flatten)]
    pub version: ManifestVersion,
    /// The manifest as it was applied (TOML).
    pub manifest: String,
}

/// How one service differs between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Change {
    /// Only in the newer (`to`) version.
    Added,
    /// Only in the older (`from`) version.
    Removed,
    /// In both, with different fields.
    Changed,
}

/// One field that differs: its path (`env.LOG_LEVEL`, `readiness.interval`, `args`) and its value
/// in each version (absent where the field is not set). Values are as the manifest means them,
/// defaults filled in: `startup_timeout = "60s"` written out and left to its default are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<serde_json::Value>,
}

/// One service that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceChange {
    pub service: String,
    pub change: Change,
    /// The fields that differ (`changed` only; empty for `added` and `removed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// The difference between two versions: `from` (older, usually) to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestDiff {
    pub from: i64,
    pub to: i64,
    /// Stack-wide settings that differ (`max_parallel`, `stop_on_critical_failure`).
    pub stack: Vec<FieldChange>,
    /// Services that differ, by name; services equal in both are left out.
    pub services: Vec<ServiceChange>,
}

impl ManifestDiff {
    /// Whether the two versions declare the same stack.
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty() && self.services.is_empty()
    }
}

/// Payload of `<prefix>.req.lifecycle.versions` (`{}` for the newest page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsRequest {
    /// 1-500 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only versions older than this one (the previous page's `next_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

/// Payload of `<prefix>.req.lifecycle.version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    pub version: i64,
}

/// Payload of `<prefix>.req.lifecycle.diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    pub from: i64,
    pub to: i64,
}

/// Payload of `<prefix>.req.lifecycle.rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose manifest is applied again, as a new version.
    pub version: i64,
}

/// A version number given by a client: at least 1.
pub fn validate_version(field: &str, version: i64) -> Result<(), crate::ProtocolError> {
    if version < 1 {
        return Err(crate::ProtocolError::invalid(field, "versions start at 1"));
    }
    Ok(())
}
