//! Manifest history: the stored versions, one version's text, the difference between two
//! versions, and a rollback (the stored text of an old version applied again as a new version, by
//! whoever asks, like any other apply: `nomad job revert`).
//!
//! [`diff`] is pure: it compares two manifests as declared (replicated services not expanded),
//! with their defaults filled in, so a field written out with its default value is no change.

use std::collections::BTreeMap;

use orch_protocol::history::{
    Change, FieldChange, ManifestDiff, ManifestVersion, ManifestVersionText, ManifestVersions, ServiceChange,
    VERSIONS_DEFAULT, VERSIONS_MAX,
};
use orch_protocol::stack::Desired;
use serde_json::Value;
use sqlx::PgPool;

use super::{ControlError, Controller, Graph, Manifest};
use crate::storage::lifecycle::{self as store, StoredManifest};

/// A page of versions, newest first: at most `limit` (1-500, default 50) older than `before`.
pub async fn versions(
    pool: &PgPool,
    limit: Option<usize>,
    before: Option<i64>,
) -> Result<ManifestVersions, ControlError> {
    let limit = limit.unwrap_or(VERSIONS_DEFAULT);
    if !(1..=VERSIONS_MAX).contains(&limit) {
        return Err(ControlError::Invalid(orch_protocol::ProtocolError::invalid(
            "limit",
            format!("must be 1-{VERSIONS_MAX}"),
        )));
    }
    let current = store::latest_manifest(pool).await?.map(|m| m.version);
    // One more than asked tells whether an older page exists.
    let mut rows = store::manifest_versions(pool, before, limit as i64 + 1).await?;
    let next_before = (rows.len() > limit).then(|| rows[limit - 1].version);
    rows.truncate(limit);
    let versions = rows.iter().map(|row| meta(row, current)).collect();
    Ok(ManifestVersions { versions, next_before })
}

/// One version with its text.
pub async fn version(pool: &PgPool, version: i64) -> Result<ManifestVersionText, ControlError> {
    let current = store::latest_manifest(pool).await?.map(|m| m.version);
    let stored = stored(pool, "version", version).await?;
    Ok(ManifestVersionText { version: meta(&stored, current), manifest: stored.body })
}

/// The difference from version `from` to version `to`.
pub async fn diff_versions(pool: &PgPool, from: i64, to: i64) -> Result<ManifestDiff, ControlError> {
    let old = declared(&stored(pool, "from", from).await?)?;
    let new = declared(&stored(pool, "to", to).await?)?;
    Ok(diff(from, &old, to, &new))
}

impl Controller {
    /// Applies the stored text of `version` again, as a new version by `principal`, with the
    /// source `rollback to v<version>`. It goes through everything an apply does (validation
    /// under today's rules, quotas, rolling updates).
    pub async fn rollback(
        &self,
        version: i64,
        principal: String,
    ) -> Result<orch_protocol::stack::StackApplied, ControlError> {
        let stored = stored(&self.pool, "version", version).await?;
        let manifest = Manifest::parse(&stored.body)
            .and_then(|m| Graph::new(&m).map(|_| m))
            .map_err(|problems| no_longer_valid(version, problems))?;
        self.apply(manifest, stored.body, format!("rollback to v{version}"), principal).await
    }
}

async fn stored(pool: &PgPool, field: &'static str, version: i64) -> Result<StoredManifest, ControlError> {
    store::manifest_version(pool, version).await?.ok_or(ControlError::UnknownVersion { field, version })
}

fn meta(row: &StoredManifest, current: Option<i64>) -> ManifestVersion {
    ManifestVersion {
        version: row.version,
        source: row.source.clone(),
        principal: row.principal.clone(),
        applied_at: row.applied_at,
        desired: Desired::from_stored(&row.desired),
        current: current == Some(row.version),
    }
}

/// A stored version as declared. It passed validation when it was applied; a version the rules of
/// today refuse says so rather than showing a partial difference.
fn declared(stored: &StoredManifest) -> Result<Manifest, ControlError> {
    Manifest::parse_declared(&stored.body).map_err(|problems| no_longer_valid(stored.version, problems))
}

fn no_longer_valid(version: i64, mut problems: crate::problems::Problems) -> ControlError {
    for problem in &mut problems.problems {
        problem.message = format!("version {version} no longer passes validation: {}", problem.message);
    }
    ControlError::Refused(problems)
}

/// The difference between two manifests as declared, service by service and field by field.
pub fn diff(from_version: i64, from: &Manifest, to_version: i64, to: &Manifest) -> ManifestDiff {
    let settings = |m: &Manifest| {
        let mut value =
            serde_json::to_value(Manifest { services: BTreeMap::new(), ..m.clone() }).expect("a manifest serializes");
        value.as_object_mut().map(|o| o.remove("services"));
        value
    };
    let stack = field_changes(&settings(from), &settings(to));
    let mut services = Vec::new();
    let names: std::collections::BTreeSet<&String> = from.services.keys().chain(to.services.keys()).collect();
    for name in names {
        let change = match (from.services.get(name), to.services.get(name)) {
            (None, Some(_)) => Some((Change::Added, Vec::new())),
            (Some(_), None) => Some((Change::Removed, Vec::new())),
            (Some(old), Some(new)) => {
                let fields = field_changes(
                    &serde_json::to_value(old).expect("a service serializes"),
                    &serde_json::to_value(new).expect("a service serializes"),
                );
                (!fields.is_empty()).then_some((Change::Changed, fields))
            }
            (None, None) => None,
        };
        if let Some((change, fields)) = change {
            services.push(ServiceChange { service: name.clone(), change, fields });
        }
    }
    ManifestDiff { from: from_version, to: to_version, stack, services }
}

/// The leaves that differ between two JSON values, by dotted path. Objects are compared key by
/// key (`env.LOG_LEVEL`, `readiness.interval`); anything else (lists such as `args`, numbers,
/// strings) as a whole.
fn field_changes(from: &Value, to: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    walk("", Some(from), Some(to), &mut changes);
    changes
}

fn walk(path: &str, from: Option<&Value>, to: Option<&Value>, changes: &mut Vec<FieldChange>) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match (from, to) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                walk(&join(key), a.get(key), b.get(key), changes);
            }
        }
        (a, b) if a == b => {}
        (a, b) => {
            // A whole object added or removed shows as its leaves, so every change has a path a
            // reader can find in the manifest.
            if let Some(Value::Object(a)) = a {
                for (key, value) in a {
                    walk(&join(key), Some(value), None, changes);
                }
            } else if let Some(Value::Object(b)) = b {
                for (key, value) in b {
                    walk(&join(key), None, Some(value), changes);
                }
            }
            let object = |v: Option<&Value>| matches!(v, Some(Value::Object(_)));
            if !object(a) && !object(b) {
                changes.push(FieldChange { field: path.to_string(), from: a.cloned(), to: b.cloned() });
            } else if object(a) && b.is_some() && !object(b) {
                changes.push(FieldChange { field: path.to_string(), from: None, to: b.cloned() });
            } else if object(b) && a.is_some() && !object(a) {
                changes.push(FieldChange { field: path.to_string(), from: a.cloned(), to: None });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse_declared(text).unwrap()
    }

    const V1: &str = r#"
        max_parallel = 4
        [services.db]
        command = "postgres"
        [services.web]
        command = "web"
        args = ["--port", "8080"]
        env = { LOG = "info", MODE = "a" }
        depends_on = { db = "started" }
        [services.old]
        command = "old"
    "#;

    #[test]
    fn services_added_removed_and_changed_field_by_field() {
        let v2 = r#"
            max_parallel = 8
            [services.db]
            command = "postgres"
            startup_timeout = "60s"
            [services.web]
            command = "web"
            args = ["--port", "9090"]
            env = { LOG = "debug", EXTRA = "1" }
            depends_on = { db = "started" }
            count = 3
            port = 9090
            readiness = { kind = "tcp", interval = "1s" }
            [services.cache]
            command = "redis"
        "#;
        let d = diff(1, &manifest(V1), 2, &manifest(v2));
        assert_eq!((d.from, d.to), (1, 2));
        assert_eq!(
            d.stack,
            vec![FieldChange { field: "max_parallel".into(), from: Some(json!(4)), to: Some(json!(8)) }]
        );
        let by_name: BTreeMap<&str, &ServiceChange> = d.services.iter().map(|s| (s.service.as_str(), s)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["cache", "old", "web"],
            "db is the same: its default written out"
        );
        assert_eq!(by_name["cache"].change, Change::Added);
        assert_eq!(by_name["old"].change, Change::Removed);
        let web = by_name["web"];
        assert_eq!(web.change, Change::Changed);
        let fields: BTreeMap<&str, (Option<&Value>, Option<&Value>)> =
            web.fields.iter().map(|f| (f.field.as_str(), (f.from.as_ref(), f.to.as_ref()))).collect();
        assert_eq!(fields["args"], (Some(&json!(["--port", "8080"])), Some(&json!(["--port", "9090"]))));
        assert_eq!(fields["env.LOG"], (Some(&json!("info")), Some(&json!("debug"))));
        assert_eq!(fields["env.MODE"], (Some(&json!("a")), None));
        assert_eq!(fields["env.EXTRA"], (None, Some(&json!("1"))));
        assert_eq!(fields["count"], (None, Some(&json!(3))), "count 1 is left out when serialized");
        assert_eq!(fields["port"], (None, Some(&json!(9090))));
        assert!(fields.keys().any(|f| f.starts_with("readiness.")), "an added check shows as its fields: {fields:?}");
        assert!(!fields.contains_key("readiness"), "no entry for the object itself");
        assert!(!fields.contains_key("depends_on.db"));
    }

    #[test]
    fn a_version_against_itself_differs_in_nothing() {
        let d = diff(3, &manifest(V1), 3, &manifest(V1));
        assert!(d.is_empty());
    }

    #[test]
    fn a_field_changing_between_a_value_and_an_object_names_both() {
        let mut changes = Vec::new();
        walk("x", Some(&json!(1)), Some(&json!({"a": 2})), &mut changes);
        assert_eq!(
            changes,
            vec![
                FieldChange { field: "x.a".into(), from: None, to: Some(json!(2)) },
                FieldChange { field: "x".into(), from: Some(json!(1)), to: None },
            ]
        );
    }
}
