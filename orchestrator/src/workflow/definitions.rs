//! Stored definitions by (name, version), read from PostgreSQL once: a version never changes
//! once stored, so the executor and the scheduler keep what they read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::definition::Definition;
use crate::storage::workflows;

/// The definitions read so far, by (name, version).
type ByVersion = HashMap<(String, i32), Arc<Definition>>;

/// A cache of stored definitions (cheap to clone; clones share it).
#[derive(Clone, Default)]
pub struct Definitions(Arc<Mutex<ByVersion>>);

impl Definitions {
    /// Version `version` of `name`.
    pub async fn get(&self, pool: &sqlx::PgPool, name: &str, version: i32) -> anyhow::Result<Arc<Definition>> {
        let key = (name.to_string(), version);
        if let Some(found) = self.0.lock().expect("not poisoned").get(&key) {
            return Ok(found.clone());
        }
        let stored = workflows::definition(pool, name, Some(version))
            .await?
            .ok_or_else(|| anyhow::anyhow!("version {version} of {name:?} is missing"))?;
        let definition = Arc::new(serde_json::from_value::<Definition>(stored.definition.0)?);
        self.0.lock().expect("not poisoned").insert(key, definition.clone());
        Ok(definition)
    }
}
