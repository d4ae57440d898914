//! Registry payloads: what a client sends to register, and the instance the orchestrator keeps.
//! Validation lives here so every client can check input before sending it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::health::{Check, CheckSpec, Maintenance};
// Shared with the other payloads; kept reachable here, where clients have always found them.
pub use crate::health::Health;
pub use crate::names::{is_valid_instance_id, is_valid_name, validate_instance_id, validate_name};

/// Limits of a registration. Documented in `docs/protocol.md`; change both together.
pub mod limits {
    pub use crate::names::{ID_MAX, NAME_MAX};
    pub const VERSION_MAX: usize = 64;
    pub const ADDRESS_MAX: usize = 253;
    pub const PROTOCOL_MAX: usize = 16;
    pub const TAGS_MAX: usize = 32;
    pub const TAG_MAX: usize = 64;
    pub const METADATA_MAX: usize = 64;
    pub const METADATA_KEY_MAX: usize = 128;
    pub const METADATA_VALUE_MAX: usize = 512;
    pub const DEPENDENCIES_MAX: usize = 64;
    pub const WEIGHT_MIN: u32 = 1;
    pub const WEIGHT_MAX: u32 = 10_000;
    pub const TTL_MIN: u32 = 1;
    pub const TTL_MAX: u32 = 86_400;
    pub const DEFAULT_WEIGHT: u32 = 100;
    pub const DEFAULT_TTL: u32 = 30;
}

fn default_protocol() -> String {
    "http".to_string()
}
fn default_weight() -> u32 {
    limits::DEFAULT_WEIGHT
}
fn default_ttl() -> u32 {
    limits::DEFAULT_TTL
}
fn passing() -> Health {
    Health::Passing
}

/// Payload of `registry.register`. Unknown fields are rejected, so a typo never passes silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Client-chosen instance id; generated (UUIDv7) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Service name: lower-case letters, digits, `-` and `_`.
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// Host name or IP address where the instance listens.
    pub address: String,
    pub port: u32,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Names of services this instance depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Relative weight for weighted load balancing.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lease length: the instance turns critical when no heartbeat arrives for this long.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u32,
    /// Health checks the orchestrator runs (or, for `ttl` checks, expects updates for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
}

/// Payload of `registry.deregister` and `registry.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRef {
    pub id: String,
}

/// What happened, as replied to the client and remembered for redeliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Registered,
    Updated,
    Unchanged,
    Deregistered,
    Expired,
    Recovered,
    /// An internal command found nothing to do (the instance changed meanwhile).
    Ignored,
    Recorded,
}

/// A successful outcome: `{"status": "...", "instance": {...}, "changed": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandReply {
    pub status: CommandStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

/// An instance as the orchestrator reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub version: String,
    pub address: String,
    pub port: u32,
    pub protocol: String,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub dependencies: Vec<String>,
    pub weight: u32,
    pub ttl_seconds: u32,
    /// The worst of the lease and the checks.
    pub health: Health,
    /// Health of the heartbeat lease alone: `critical` once the TTL ran out without a heartbeat.
    #[serde(default = "passing")]
    pub lease: Health,
    /// Declared checks with their committed state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Set while the instance is in maintenance: hidden from discovery, kept in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// Set while the instance flaps (its health changed too often in the flap window); its health
    /// events are held back until it settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping_since: Option<DateTime<Utc>>,
    /// When its health last changed, newest last (as many as flap detection needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_changes: Vec<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the instance turned critical; absent while it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_since: Option<DateTime<Utc>>,
    /// Increases by one with every committed change of this instance.
    pub revision: i64,
    /// The authenticated principal of the last change (see `principal`): who registered or
    /// updated it, put it in maintenance, or `orchestrator` for its own health changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

impl Instance {
    /// The fields a registration sets, in the order `changed_fields` reports them.
    pub fn differs_from(&self, reg: &Registration) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name)
            }
        };
        check("name", self.name != reg.name);
        check("version", self.version != reg.version);
        check("address", self.address != reg.address);
        check("port", self.port != reg.port);
        check("protocol", self.protocol != reg.protocol);
        check("tags", self.tags != reg.tags);
        check("metadata", self.metadata != reg.metadata);
        check("dependencies", self.dependencies != reg.dependencies);
        check("weight", self.weight != reg.weight);
        check("ttl_seconds", self.ttl_seconds != reg.ttl_seconds);
        check("checks", !self.checks.iter().map(|c| &c.spec).eq(reg.checks.iter()));
        changed
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    if value.chars().count() > max {
        return Err(ProtocolError::invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

fn check_printable(field: &str, value: &str) -> Result<(), ProtocolError> {
    if value.chars().any(|c| c.is_control()) {
        return Err(ProtocolError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn validate_address(address: &str) -> Result<(), ProtocolError> {
    if address.is_empty() {
        return Err(ProtocolError::invalid("address", "must not be empty"));
    }
    check_len("address", address, limits::ADDRESS_MAX)?;
    // A host name, an IPv4 address or an IPv6 address (with or without brackets).
    let ok = address.parse::<std::net::IpAddr>().is_ok()
        || address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        || (address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
            // A host name's last label is never all digits (RFC 1123), so `999.1.1.1` is no host.
        }) && !address.rsplit('.').next().is_some_and(|last| last.bytes().all(|c| c.is_ascii_digit())));
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::invalid("address", format!("must be a host name or an IP address (got {address:?})")))
    }
}

impl Registration {
    /// A registration of `name` at `address:port` with every default, for building one in code.
    pub fn new(name: impl Into<String>, address: impl Into<String>, port: u32) -> Registration {
        Registration {
            id: None,
            name: name.into(),
            version: String::new(),
            address: address.into(),
            port,
            protocol: default_protocol(),
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            dependencies: Vec::new(),
            weight: default_weight(),
            ttl_seconds: default_ttl(),
            checks: Vec::new(),
        }
    }

    /// Fills defaults that depend on other fields (check ids from their kinds).
    pub fn normalize(&mut self) {
        for check in &mut self.checks {
            check.normalize();
        }
    }

    /// Checks every rule and returns the first broken one, naming its field.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if let Some(id) = &self.id {
            validate_instance_id("id", id)?;
        }
        validate_name("name", &self.name)?;
        check_len("version", &self.version, limits::VERSION_MAX)?;
        check_printable("version", &self.version)?;
        validate_address(&self.address)?;
        if !(1..=65_535).contains(&self.port) {
            return Err(ProtocolError::invalid("port", format!("must be between 1 and 65535 (got {})", self.port)));
        }
        let protocol_ok = !self.protocol.is_empty()
            && self.protocol.len() <= limits::PROTOCOL_MAX
            && self.protocol.as_bytes()[0].is_ascii_lowercase()
            && self.protocol.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(&c));
        if !protocol_ok {
            return Err(ProtocolError::invalid(
                "protocol",
                format!(
                    "must be 1-{} characters of lower-case letters, digits, '+', '.' or '-', \
                     starting with a letter (got {:?})",
                    limits::PROTOCOL_MAX,
                    self.protocol
                ),
            ));
        }
        if self.tags.len() > limits::TAGS_MAX {
            return Err(ProtocolError::invalid("tags", format!("at most {} tags", limits::TAGS_MAX)));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            let field = format!("tags[{i}]");
            if tag.is_empty() {
                return Err(ProtocolError::invalid(field, "must not be empty"));
            }
            check_len(&field, tag, limits::TAG_MAX)?;
            check_printable(&field, tag)?;
            if tag.contains(',') {
                return Err(ProtocolError::invalid(field, "must not contain ',' (it separates tags in queries)"));
            }
        }
        if self.metadata.len() > limits::METADATA_MAX {
            return Err(ProtocolError::invalid("metadata", format!("at most {} entries", limits::METADATA_MAX)));
        }
        for (key, value) in &self.metadata {
            let field = format!("metadata.{key}");
            if key.is_empty() {
                return Err(ProtocolError::invalid("metadata", "keys must not be empty"));
            }
            check_len(&field, key, limits::METADATA_KEY_MAX)?;
            check_printable(&field, key)?;
            check_len(&field, value, limits::METADATA_VALUE_MAX)?;
        }
        if self.dependencies.len() > limits::DEPENDENCIES_MAX {
            return Err(ProtocolError::invalid(
                "dependencies",
                format!("at most {} dependencies", limits::DEPENDENCIES_MAX),
            ));
        }
        for (i, dep) in self.dependencies.iter().enumerate() {
            validate_name(&format!("dependencies[{i}]"), dep)?;
        }
        if !(limits::WEIGHT_MIN..=limits::WEIGHT_MAX).contains(&self.weight) {
            return Err(ProtocolError::invalid(
                "weight",
                format!("must be between {} and {} (got {})", limits::WEIGHT_MIN, limits::WEIGHT_MAX, self.weight),
            ));
        }
        if !(limits::TTL_MIN..=limits::TTL_MAX).contains(&self.ttl_seconds) {
            return Err(ProtocolError::invalid(
                "ttl_seconds",
                format!("must be between {} and {} (got {})", limits::TTL_MIN, limits::TTL_MAX, self.ttl_seconds),
            ));
        }
        crate::health::validate_checks("checks", &self.checks)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;

    fn valid() -> Registration {
        parse_json(br#"{"name": "web", "address": "10.0.0.1", "port": 8080}"#).unwrap()
    }

    #[track_caller]
    fn rejects(mutate: impl FnOnce(&mut Registration), field: &str) {
        let mut reg = valid();
        mutate(&mut reg);
        let err = reg.validate().unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some(field), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let reg = valid();
        assert_eq!(reg.protocol, "http");
        assert_eq!(reg.ttl_seconds, limits::DEFAULT_TTL);
        assert_eq!(reg.weight, limits::DEFAULT_WEIGHT);
        reg.validate().unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        rejects(|r| r.name = "Web".into(), "name");
        rejects(|r| r.name = "a.b".into(), "name");
        rejects(|r| r.name = "-web".into(), "name");
        rejects(|r| r.name = "x".repeat(64), "name");
        rejects(|r| r.id = Some("a.b".into()), "id");
        rejects(|r| r.port = 0, "port");
        rejects(|r| r.port = 65_536, "port");
        rejects(|r| r.address = "bad host!".into(), "address");
        rejects(|r| r.address = String::new(), "address");
        rejects(|r| r.address = "999.1.1.1".into(), "address");
        rejects(|r| r.protocol = "HTTP".into(), "protocol");
        rejects(|r| r.tags = vec!["ok".into(), String::new()], "tags[1]");
        rejects(|r| r.tags = vec!["t".into(); 33], "tags");
        rejects(|r| r.metadata = [("k".to_string(), "v".repeat(513))].into(), "metadata.k");
        rejects(|r| r.dependencies = vec!["Bad".into()], "dependencies[0]");
        rejects(|r| r.weight = 0, "weight");
        rejects(|r| r.ttl_seconds = 0, "ttl_seconds");
        rejects(|r| r.ttl_seconds = 86_401, "ttl_seconds");
        rejects(|r| r.version = "a\nb".into(), "version");
    }

    #[test]
    fn accepts_ipv6_and_host_names() {
        for address in ["::1", "[::1]", "db-1.internal.example", "localhost", "192.168.1.20"] {
            let mut reg = valid();
            reg.address = address.into();
            reg.validate().unwrap_or_else(|e| panic!("{address}: {e}"));
        }
    }
}
