//! The config store: versioned keys with JSON values for the managed services and whoever else
//! reads them (protocol.md §18). Values live in a NATS KV bucket (`<PREFIX>_CONFIG`: revisions,
//! compare-and-set, history); only the orchestrator writes it, and every change it makes is then
//! recorded in PostgreSQL with who made it, the old and the new value, and its `changed` or
//! `deleted` event (one transaction). A change reaches the lifecycle controller at once, which
//! restarts or signals the services that read the key (`config` in the manifest).
//!
//! A crash between the KV write and its record leaves a revision without a record: at start, the
//! store records such revisions with the principal `unknown` (`reconcile`), so the history never
//! silently skips one.

pub mod schema;

use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};
use chrono::Utc;
use futures::StreamExt;
use orch_protocol::config_store::{
    ConfigChange, ConfigEntry, ConfigHistory, ConfigList, ConfigOp, ConfigSchema, ConfigSchemas, LIST_MAX,
    VALUE_MAX_BYTES, under, validate_key, validate_prefix,
};
use orch_protocol::events::{EventKind, encode};
use orch_protocol::{ErrorCode, ProtocolError, Subjects};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::broadcast;

use crate::storage;
use schema::Schemas;

/// Revisions of each key the bucket keeps (NATS KV's most).
pub const HISTORY: i64 = 64;
/// Most recorded changes one history read returns.
const HISTORY_SHOWN: i64 = 200;
/// How often a write is tried again when another changed the key in between (a write without
/// compare-and-set still records the exact value it replaced).
const RACE_RETRIES: usize = 5;

/// The bucket of `subjects`' prefix: `ORCH_CONFIG` for `orch`.
pub fn bucket(subjects: &Subjects) -> String {
    format!("{}_CONFIG", subjects.prefix().to_uppercase())
}

/// Creates the bucket if it is missing (with `replicas` copies, like the streams).
pub async fn provision(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<kv::Store, ProtocolError> {
    let name = bucket(subjects);
    match js.get_key_value(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.clone(),
                description: "the orchestrator's config store (docs/protocol.md §18)".into(),
                history: HISTORY,
                num_replicas: replicas.max(1),
                max_value_size: VALUE_MAX_BYTES as i32,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format!("the config bucket {name} cannot be created: {e}"))),
    }
}

fn unavailable(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, message)
}

fn nats(e: impl std::fmt::Display) -> ProtocolError {
    unavailable(format!("the config store (NATS KV) did not answer: {e}"))
}

fn no_key(key: &str) -> ProtocolError {
    ProtocolError::field(ErrorCode::NotFound, "key", format!("no config key {key:?}"))
}

fn conflict(key: &str, expected: u64, actual: Option<u64>) -> ProtocolError {
    let now = match actual {
        Some(r) => format!("its revision is {r}"),
        None => "it does not exist".into(),
    };
    let wanted = if expected == 0 { "not to exist".to_string() } else { format!("revision {expected}") };
    ProtocolError::field(
        ErrorCode::Conflict,
        "revision",
        format!("{key:?} changed: expected {wanted}, but {now}; read it again and retry"),
    )
}

/// The current put of a key: its revision and value, or its tombstone's revision (`None` value).
struct Current {
    revision: u64,
    value: Option<Value>,
}

/// The config store of one orchestrator.
#[derive(Clone)]
pub struct ConfigStore {
    kv: kv::Store,
    pool: PgPool,
    subjects: Subjects,
    schemas: Arc<RwLock<Schemas>>,
    changes: broadcast::Sender<ConfigChange>,
}

impl ConfigStore {
    /// Opens the store on `kv`, with the schemas stored in PostgreSQL, and records any revision
    /// left without its record.
    pub async fn open(kv: kv::Store, pool: PgPool, subjects: Subjects) -> Result<ConfigStore, ProtocolError> {
        let mut schemas = Schemas::default();
        for stored in storage::config::schemas(&pool).await? {
            match Schemas::compile(&stored.schema) {
                Ok(validator) => schemas.set(&stored.prefix, validator),
                Err(e) => {
                    tracing::error!(prefix = %stored.prefix, error = %e.0.message, "a stored config schema no longer compiles; it is not applied")
                }
            }
        }
        let (changes, _) = broadcast::channel(1024);
        let store = ConfigStore { kv, pool, subjects, schemas: Arc::new(RwLock::new(schemas)), changes };
        store.reconcile().await?;
        Ok(store)
    }

    /// Every change, as it is recorded (the lifecycle controller's restarts and signals).
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigChange> {
        self.changes.subscribe()
    }

    async fn current(&self, key: &str) -> Result<Option<Current>, ProtocolError> {
        let Some(entry) = self.kv.entry(key).await.map_err(nats)? else { return Ok(None) };
        let value = match entry.operation {
            kv::Operation::Put => Some(decode(key, &entry.value)?),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        Ok(Some(Current { revision: entry.revision, value }))
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<ConfigEntry, ProtocolError> {
        validate_key("key", key)?;
        let entry = self.kv.entry(key).await.map_err(nats)?.filter(|e| e.operation == kv::Operation::Put);
        let entry = entry.ok_or_else(|| no_key(key))?;
        Ok(ConfigEntry {
            key: key.to_string(),
            value: decode(key, &entry.value)?,
            revision: entry.revision,
            updated_at: time(entry.created),
        })
    }

    /// The values of the keys under `prefix` (whole tokens), sorted by key; at most [`LIST_MAX`].
    pub async fn list(&self, prefix: &str) -> Result<ConfigList, ProtocolError> {
        validate_prefix("prefix", prefix)?;
        let mut keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => {
                keys.filter_map(|k| async move { k.ok() })
                    .filter(|k| std::future::ready(under(k, prefix)))
                    .collect()
                    .await
            }
            Err(e) => return Err(nats(e)),
        };
        keys.sort();
        let truncated = keys.len() > LIST_MAX;
        keys.truncate(LIST_MAX);
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            // A key deleted since the listing is left out.
            match self.get(&key).await {
                Ok(entry) => entries.push(entry),
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ConfigList { prefix: prefix.to_string(), entries, truncated })
    }

    /// Sets `key` to `value` as `principal`; with `expected`, only if the key's revision is still
    /// that one (`0`: only if it does not exist).
    pub async fn put(
        &self,
        key: &str,
        value: Value,
        expected: Option<u64>,
        principal: &str,
    ) -> Result<ConfigChange, ProtocolError> {
        self.write(key, value, expected, principal, None).await
    }

    /// Puts the value `key` had at revision `to` again, as a new revision by `principal`.
    pub async fn revert(&self, key: &str, to: u64, principal: &str) -> Result<ConfigChange, ProtocolError> {
        validate_key("key", key)?;
        if to == 0 {
            return Err(ProtocolError::invalid("to", "revisions start at 1"));
        }
        let old = self.kv.entry_for_revision(key, to).await.map_err(nats)?;
        let old = old.filter(|e| e.operation == kv::Operation::Put).ok_or_else(|| {
            ProtocolError::field(
                ErrorCode::NotFound,
                "to",
                format!(
                    "{key:?} has no value at revision {to} (the bucket keeps the last {HISTORY} revisions of a key)"
                ),
            )
        })?;
        let value = decode(key, &old.value)?;
        self.write(key, value, None, principal, Some(to)).await
    }

    async fn write(
        &self,
        key: &str,
        value: Value,
        expected: Option<u64>,
        principal: &str,
        reverted_to: Option<u64>,
    ) -> Result<ConfigChange, ProtocolError> {
        validate_key("key", key)?;
        let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
        if bytes.len() > VALUE_MAX_BYTES {
            return Err(ProtocolError::field(
                ErrorCode::PayloadTooLarge,
                "value",
                format!("a value is at most {VALUE_MAX_BYTES} bytes of JSON; this one is {}", bytes.len()),
            ));
        }
        self.schemas.read().expect("not poisoned").check(key, &value)?;
        for _ in 0..RACE_RETRIES {
            let current = self.current(key).await?;
            let live = current.as_ref().filter(|c| c.value.is_some());
            if let Some(expected) = expected
                && live.map_or(0, |c| c.revision) != expected
            {
                return Err(conflict(key, expected, live.map(|c| c.revision)));
            }
            // The last message of the key, a tombstone included: NATS compares with it.
            let last = current.as_ref().map_or(0, |c| c.revision);
            match self.kv.update(key, bytes.clone().into(), last).await {
                Ok(revision) => {
                    let change = ConfigChange {
                        key: key.to_string(),
                        op: if reverted_to.is_some() { ConfigOp::Revert } else { ConfigOp::Put },
                        revision,
                        previous: live.and_then(|c| c.value.clone()),
                        previous_revision: live.map(|c| c.revision),
                        value: Some(value),
                        reverted_to,
                        principal: principal.to_string(),
                        at: Utc::now(),
                    };
                    self.record(&change).await?;
                    return Ok(change);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    if let Some(expected) = expected {
                        let now = self.current(key).await?.filter(|c| c.value.is_some()).map(|c| c.revision);
                        return Err(conflict(key, expected, now));
                    }
                }
                Err(e) => return Err(nats(e)),
            }
        }
        Err(ProtocolError::new(ErrorCode::Conflict, format!("{key:?} kept changing while it was written; retry")))
    }

    /// Deletes `key` as `principal`; with `expected`, only if its revision is still that one.
    pub async fn delete(
        &self,
        key: &str,
        expected: Option<u64>,
        principal: &str,
    ) -> Result<ConfigChange, ProtocolError> {
        validate_key("key", key)?;
        let current = self.current(key).await?.filter(|c| c.value.is_some()).ok_or_else(|| no_key(key))?;
        if let Some(expected) = expected
            && expected != current.revision
        {
            return Err(conflict(key, expected, Some(current.revision)));
        }
        if let Err(e) = self.kv.delete_expect_revision(key, Some(current.revision)).await {
            let now = self.current(key).await?.filter(|c| c.value.is_some()).map(|c| c.revision);
            return match now {
                Some(revision) if revision != current.revision => Err(conflict(key, current.revision, Some(revision))),
                _ => Err(nats(e)),
            };
        }
        let revision = self.current(key).await?.map_or(current.revision + 1, |c| c.revision);
        let change = ConfigChange {
            key: key.to_string(),
            op: ConfigOp::Delete,
            revision,
            previous: current.value,
            previous_revision: Some(current.revision),
            value: None,
            reverted_to: None,
            principal: principal.to_string(),
            at: Utc::now(),
        };
        self.record(&change).await?;
        Ok(change)
    }

    /// The recorded changes of `key`, newest first.
    pub async fn history(&self, key: &str) -> Result<ConfigHistory, ProtocolError> {
        validate_key("key", key)?;
        let changes = storage::config::history(&self.pool, key, HISTORY_SHOWN).await?;
        if changes.is_empty() {
            return Err(no_key(key));
        }
        Ok(ConfigHistory { key: key.to_string(), changes })
    }

    pub async fn schemas(&self) -> Result<ConfigSchemas, ProtocolError> {
        Ok(ConfigSchemas { schemas: storage::config::schemas(&self.pool).await? })
    }

    /// Sets the schema of `prefix` as `principal`. Values already stored are not checked again;
    /// the next write of each key is.
    pub async fn set_schema(
        &self,
        prefix: &str,
        schema: Value,
        principal: &str,
    ) -> Result<ConfigSchema, ProtocolError> {
        validate_prefix("prefix", prefix)?;
        let validator = Schemas::compile(&schema)?;
        let stored = storage::config::set_schema(&self.pool, prefix, &schema, principal).await?;
        self.schemas.write().expect("not poisoned").set(prefix, validator);
        tracing::info!(prefix, by = principal, "config schema set");
        Ok(stored)
    }

    pub async fn clear_schema(&self, prefix: &str, principal: &str) -> Result<(), ProtocolError> {
        validate_prefix("prefix", prefix)?;
        if !storage::config::clear_schema(&self.pool, prefix).await? {
            return Err(ProtocolError::field(
                ErrorCode::NotFound,
                "prefix",
                format!("no config schema for {prefix:?}"),
            ));
        }
        self.schemas.write().expect("not poisoned").remove(prefix);
        tracing::info!(prefix, by = principal, "config schema removed");
        Ok(())
    }

    /// Records `change` with its event, then tells the subscribers.
    async fn record(&self, change: &ConfigChange) -> Result<(), ProtocolError> {
        let kind = if change.op == ConfigOp::Delete { EventKind::ConfigDeleted } else { EventKind::ConfigChanged };
        let token = change.key.split('.').next().unwrap_or_default();
        let event = encode(&self.subjects, kind, token, &change.key, &change.principal, change.at, change);
        storage::config::record(&self.pool, change, event.into()).await.map_err(|e| {
            tracing::error!(key = %change.key, revision = change.revision, error = %e,
                "a config change was made but could not be recorded; it will be recorded at the next start");
            ProtocolError::from(e)
        })?;
        tracing::info!(key = %change.key, op = change.op.as_str(), revision = change.revision, by = %change.principal, "config changed");
        let _ = self.changes.send(change.clone());
        Ok(())
    }

    /// Records the revisions of the current keys that have no record (a crash between the write
    /// and its record), by the principal `unknown`.
    async fn reconcile(&self) -> Result<(), ProtocolError> {
        let recorded = storage::config::recorded_revisions(&self.pool).await?;
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys.filter_map(|k| async move { k.ok() }).collect().await,
            Err(e) => return Err(nats(e)),
        };
        for key in keys {
            let Some(entry) = self.kv.entry(&key).await.map_err(nats)? else { continue };
            if entry.operation != kv::Operation::Put || recorded.get(&key).is_some_and(|r| *r >= entry.revision) {
                continue;
            }
            let change = ConfigChange {
                key: key.clone(),
                op: ConfigOp::Put,
                revision: entry.revision,
                previous: None,
                previous_revision: None,
                value: Some(decode(&key, &entry.value)?),
                reverted_to: None,
                principal: "unknown".into(),
                at: time(entry.created),
            };
            tracing::warn!(key = %key, revision = entry.revision, "a config change without its record was found; recorded now as made by an unknown principal");
            self.record(&change).await?;
        }
        Ok(())
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Value, ProtocolError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ProtocolError::new(ErrorCode::Internal, format!("the stored value of {key:?} is not JSON ({e}); put it again"))
    })
}

fn time(t: time::OffsetDateTime) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_else(Utc::now)
}
