//! The config store (protocol.md §18): versioned keys with JSON values, kept in a NATS KV bucket
//! (its history and revisions), every change recorded in PostgreSQL with who made it and the old
//! and new value, values checked against the JSON Schema of their key's prefix. The same types
//! answer over HTTP and NATS; a change is also the data of its `changed` / `deleted` event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ProtocolError;

/// Longest key, in bytes.
pub const KEY_MAX: usize = 255;
/// Most tokens of a key.
pub const KEY_TOKENS_MAX: usize = 16;
/// Largest value, as JSON text.
pub const VALUE_MAX_BYTES: usize = 64 * 1024;
/// Most entries one listing returns.
pub const LIST_MAX: usize = 1000;

/// A key: tokens of letters, digits, `_` and `-`, joined by `.` (`web.db.url`); its first token
/// names what it configures (the events' subject token). Keys are case-sensitive.
pub fn validate_key(field: &str, key: &str) -> Result<(), ProtocolError> {
    validate_path(field, key, "key")
}

/// A prefix of keys: whole tokens (`web`, `web.db`); the empty prefix is every key.
pub fn validate_prefix(field: &str, prefix: &str) -> Result<(), ProtocolError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path(field, prefix, "prefix")
}

fn validate_path(field: &str, path: &str, what: &str) -> Result<(), ProtocolError> {
    let bad = |why: String| Err(ProtocolError::invalid(field, why));
    if path.is_empty() {
        return bad(format!("a {what} must not be empty"));
    }
    if path.len() > KEY_MAX {
        return bad(format!("a {what} is at most {KEY_MAX} bytes"));
    }
    let tokens: Vec<&str> = path.split('.').collect();
    if tokens.len() > KEY_TOKENS_MAX {
        return bad(format!("a {what} has at most {KEY_TOKENS_MAX} dot-separated parts"));
    }
    for token in tokens {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return bad(format!(
                "{path:?}: each dot-separated part of a {what} is 1 or more letters, digits, '_' or '-'"
            ));
        }
    }
    Ok(())
}

/// Whether `key` is under `prefix` (whole tokens: `web.db` covers `web.db` and `web.db.url`, not
/// `web.dbx`); the empty prefix covers every key.
pub fn under(key: &str, prefix: &str) -> bool {
    prefix.is_empty() || key == prefix || key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

/// One key with its current value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigEntry {
    pub key: String,
    pub value: Value,
    /// The key's revision: pass it back as `revision` to change the key only if nobody changed it
    /// since (compare-and-set).
    pub revision: u64,
    pub updated_at: DateTime<Utc>,
}

/// The keys under a prefix, sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigList {
    pub prefix: String,
    pub entries: Vec<ConfigEntry>,
    /// More than [`LIST_MAX`] keys matched: narrow the prefix.
    pub truncated: bool,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConfigOp {
    Put,
    Delete,
    /// A put of the value an earlier revision had.
    Revert,
}

impl ConfigOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigOp::Put => "put",
            ConfigOp::Delete => "delete",
            ConfigOp::Revert => "revert",
        }
    }

    pub fn parse(s: &str) -> Option<ConfigOp> {
        [ConfigOp::Put, ConfigOp::Delete, ConfigOp::Revert].into_iter().find(|op| op.as_str() == s)
    }
}

/// One recorded change of a key: the audit record, the reply to a write, and the data of its
/// `changed` / `deleted` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    /// The key's revision after the change.
    pub revision: u64,
    /// The value before (absent when the key did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
    /// The revision before (absent when the key did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<u64>,
    /// The value after (absent for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// A revert: the revision whose value was put again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u64>,
    /// Who made it (§6.1).
    pub principal: String,
    pub at: DateTime<Utc>,
}

/// The recorded changes of a key, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigHistory {
    pub key: String,
    pub changes: Vec<ConfigChange>,
}

/// A JSON Schema that every value of the keys under `prefix` must satisfy (the longest matching
/// prefix's schema applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigSchema {
    pub prefix: String,
    pub schema: Value,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// Every schema, by prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigSchemas {
    pub schemas: Vec<ConfigSchema>,
}

/// Body of `PUT /api/v1/config/{key}`; with `key`, the payload of `<prefix>.req.config.put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: Value,
    /// Compare-and-set: change the key only if its revision is still this one (`0`: only if the
    /// key does not exist). Absent: change it whatever its revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// Payload of `<prefix>.req.config.get`, `history` (and `delete`, with `revision` for
/// compare-and-set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// Payload of `<prefix>.req.config.list` (`{}` for every key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub prefix: String,
}

/// Body of `POST /api/v1/config/{key}/revert`; with `key`, the payload of
/// `<prefix>.req.config.revert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevertRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The earlier revision whose value is put again.
    pub to: u64,
}

/// Body of `PUT /api/v1/config-schemas/{prefix}`; with `prefix`, the payload of
/// `<prefix>.req.config.schema_put` (and of `schema_delete` without `schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SchemaRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A JSON Schema (draft 2020-12 unless it says otherwise in `$schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dotted_tokens_and_prefixes_whole_tokens() {
        for good in ["web", "web.db.url", "a-b_c.D9"] {
            assert!(validate_key("key", good).is_ok(), "{good}");
        }
        for bad in ["", ".web", "web.", "web..db", "web db", "web/db", "web.*", "web.>", &"a".repeat(256)] {
            let e = validate_key("key", bad).unwrap_err();
            assert_eq!(e.0.field.as_deref(), Some("key"), "{bad}");
        }
        assert!(validate_key("key", &vec!["a"; 17].join(".")).is_err());
        assert!(validate_prefix("prefix", "").is_ok());
        assert!(under("web.db.url", "web.db") && under("web.db", "web.db") && under("x", ""));
        assert!(!under("web.dbx", "web.db") && !under("web", "web.db"));
    }
}
