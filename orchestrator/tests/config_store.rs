//! The config store against a real nats-server (its KV bucket, locked down with the shipped users)
//! and PostgreSQL: put, get, list by prefix, compare-and-set conflicts, history with who made each
//! change, revert, delete, schema refusals, watches through the events, over HTTP and NATS.

mod common;

use axum::http::StatusCode;
use common::Stack;
use common::http::{assert_error, call};
use serde_json::{Value, json};

#[tokio::test]
async fn keys_are_versioned_compared_and_set_audited_reverted_and_checked_against_schemas() {
    let stack = Stack::start().await;
    // A watch of the prefix `web`: its events, subscribed before any change.
    let mut watch = stack.client.subscribe(format!("{}.evt.config.web.*", stack.subjects.prefix())).await.unwrap();

    // Create only if absent (revision 0), then a second create is a conflict.
    let (status, first) =
        call(&stack, "PUT", "/api/v1/config/web.db.url", Some(json!({"value": "postgres://a", "revision": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!((first["op"].as_str(), first["principal"].as_str()), (Some("put"), Some("anonymous")));
    assert!(first.get("previous").is_none(), "{first}");
    let r1 = first["revision"].as_u64().unwrap();
    let again = call(&stack, "PUT", "/api/v1/config/web.db.url", Some(json!({"value": "x", "revision": 0}))).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", Some("revision"));

    // Compare-and-set over NATS: with the right revision it goes, with a stale one it does not.
    let put = json!({"key": "web.db.url", "value": "postgres://b", "revision": r1}).to_string();
    let (code, second) = stack.request_on("config", "put", &put).await;
    assert_eq!(code, None, "{second}");
    assert_eq!((second["previous"].as_str(), second["previous_revision"].as_u64()), (Some("postgres://a"), Some(r1)));
    assert_eq!(second["principal"], "nats");
    let r2 = second["revision"].as_u64().unwrap();
    let (_, stale) = stack.request_on("config", "put", &put).await;
    assert_eq!(
        (stale["error"]["code"].as_str(), stale["error"]["field"].as_str()),
        (Some("conflict"), Some("revision"))
    );
    assert!(stale["error"]["message"].as_str().unwrap().contains(&format!("its revision is {r2}")), "{stale}");

    // Get and list by prefix (whole parts: web.dbx is not under web.db).
    call(&stack, "PUT", "/api/v1/config/web.db.pool", Some(json!({"value": {"size": 5}}))).await;
    call(&stack, "PUT", "/api/v1/config/web.dbx", Some(json!({"value": true}))).await;
    call(&stack, "PUT", "/api/v1/config/api.mode", Some(json!({"value": "fast"}))).await;
    let (_, got) = call(&stack, "GET", "/api/v1/config/web.db.url", None).await;
    assert_eq!((got["value"].as_str(), got["revision"].as_u64()), (Some("postgres://b"), Some(r2)));
    let (_, listed) = call(&stack, "GET", "/api/v1/config?prefix=web.db", None).await;
    let keys: Vec<&str> = listed["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["web.db.pool", "web.db.url"]);
    let (_, all) = stack.request_on("config", "list", "").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 4, "{all}");

    // Revert to the first value: a new revision, recorded as a revert.
    let (status, reverted) = call(&stack, "POST", "/api/v1/config/web.db.url/revert", Some(json!({"to": r1}))).await;
    assert_eq!(status, StatusCode::OK, "{reverted}");
    assert_eq!((reverted["op"].as_str(), reverted["value"].as_str()), (Some("revert"), Some("postgres://a")));
    assert_eq!(reverted["reverted_to"].as_u64(), Some(r1));
    let gone = call(&stack, "POST", "/api/v1/config/web.db.url/revert", Some(json!({"to": 99999}))).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found", Some("to"));
    let zero = call(&stack, "POST", "/api/v1/config/web.db.url/revert", Some(json!({"to": 0}))).await;
    assert_error(&zero, StatusCode::BAD_REQUEST, "validation_failed", Some("to"));

    // Delete, with compare-and-set; then the key is gone but its history stays.
    let r3 = reverted["revision"].as_u64().unwrap();
    let wrong = call(&stack, "DELETE", &format!("/api/v1/config/web.db.url?revision={r2}"), None).await;
    assert_error(&wrong, StatusCode::CONFLICT, "conflict", Some("revision"));
    let (status, deleted) = call(&stack, "DELETE", &format!("/api/v1/config/web.db.url?revision={r3}"), None).await;
    assert_eq!((status, deleted["op"].as_str()), (StatusCode::OK, Some("delete")), "{deleted}");
    let missing = call(&stack, "GET", "/api/v1/config/web.db.url", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", Some("key"));
    // Created again after its deletion (revision 0: it does not exist).
    let (status, _) =
        call(&stack, "PUT", "/api/v1/config/web.db.url", Some(json!({"value": "postgres://c", "revision": 0}))).await;
    assert_eq!(status, StatusCode::OK);

    let (_, history) = call(&stack, "GET", "/api/v1/config/web.db.url/history", None).await;
    let ops: Vec<(&str, &str)> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["op"].as_str().unwrap(), c["principal"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [("put", "anonymous"), ("delete", "anonymous"), ("revert", "anonymous"), ("put", "nats"), ("put", "anonymous")]
    );
    let deletion = &history["changes"][1];
    assert_eq!(deletion["previous"], "postgres://a", "the old value is kept with the deletion");
    let audited: i64 = stack.count("SELECT count(*) FROM config_changes WHERE key = 'web.db.url'").await;
    assert_eq!(audited, 5);

    // Schemas: an admin's, per prefix; the longest covering prefix decides.
    let schema =
        json!({"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}, "required": ["size"]});
    let (status, set) =
        call(&stack, "PUT", "/api/v1/config-schemas/web.db.pool", Some(json!({"schema": schema}))).await;
    assert_eq!((status, set["set_by"].as_str()), (StatusCode::OK, Some("anonymous")), "{set}");
    let refused = call(&stack, "PUT", "/api/v1/config/web.db.pool", Some(json!({"value": {"size": 0}}))).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "validation_failed", Some("value"));
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("refused by the schema of \"web.db.pool\"") && message.contains("/size"), "{message}");
    let (status, _) = call(&stack, "PUT", "/api/v1/config/web.db.pool", Some(json!({"value": {"size": 8}}))).await;
    assert_eq!(status, StatusCode::OK);
    let bad_schema = call(&stack, "PUT", "/api/v1/config-schemas/web", Some(json!({"schema": {"type": 12}}))).await;
    assert_error(&bad_schema, StatusCode::BAD_REQUEST, "validation_failed", Some("schema"));
    let (_, schemas) = stack.request_on("config", "schemas", "").await;
    assert_eq!(schemas["schemas"][0]["prefix"], "web.db.pool", "{schemas}");
    let (status, _) = call(&stack, "DELETE", "/api/v1/config-schemas/web.db.pool", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&stack, "PUT", "/api/v1/config/web.db.pool", Some(json!({"value": {"size": 0}}))).await;
    assert_eq!(status, StatusCode::OK, "no schema any more");

    // The command line.
    assert!(
        common::cli(&stack, &["config", "put", "cli.port", "8080", "--revision", "0"]).await.contains("cli.port set")
    );
    assert_eq!(common::cli(&stack, &["config", "get", "cli.port"]).await, "8080\n");
    common::cli(&stack, &["config", "put", "cli.port", "not json"]).await;
    assert_eq!(
        common::cli(&stack, &["config", "get", "cli.port"]).await,
        "\"not json\"\n",
        "text that is not JSON is a string"
    );
    let listed = common::cli(&stack, &["config", "list", "cli"]).await;
    assert!(listed.contains("cli.port") && listed.contains("not json"), "{listed}");
    let history = common::cli(&stack, &["config", "history", "cli.port"]).await;
    assert!(history.contains("8080 -> \"not json\"") && history.contains("anonymous"), "{history}");

    // Bad keys name the field.
    let bad = call(&stack, "PUT", "/api/v1/config/web..x", Some(json!({"value": 1}))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "validation_failed", Some("key"));
    let (_, bad) = stack.request_on("config", "get", r#"{"key":"a b"}"#).await;
    assert_eq!(bad["error"]["field"], "key");

    // The watch saw every change of web.* in order (not the refused ones), api.mode not among them.
    let mut seen: Vec<(String, String)> = Vec::new();
    use futures::StreamExt;
    while seen.len() < 9 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
            .await
            .expect("the watch gets every change")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        seen.push((event["type"].as_str().unwrap().to_string(), event["data"]["key"].as_str().unwrap().to_string()));
    }
    let changed = "io.orch.config.changed.v1";
    let deleted_type = "io.orch.config.deleted.v1";
    let expect = [
        (changed, "web.db.url"),
        (changed, "web.db.url"),
        (changed, "web.db.pool"),
        (changed, "web.dbx"),
        (changed, "web.db.url"),
        (deleted_type, "web.db.url"),
        (changed, "web.db.url"),
        (changed, "web.db.pool"),
        (changed, "web.db.pool"),
    ];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(t, k)| (t.as_str(), k.as_str())).collect();
    assert_eq!(seen, expect);
}

/// A managed service gets config keys as environment variables, and is restarted with the new
/// value when one changes; a key that is not set fails its start, and its restart policy retries
/// until it is.
#[tokio::test]
async fn a_managed_service_reads_config_keys_and_restarts_when_they_change() {
    use common::lifecycle::{apply, pid, wait_for};
    let stack = Stack::start().await;
    call(&stack, "PUT", "/api/v1/config/web.mode", Some(json!({"value": "blue"}))).await;
    call(&stack, "PUT", "/api/v1/config/web.limits", Some(json!({"value": {"rps": 10}}))).await;
    let manifest = r#"
[services.web]
command = "/bin/sh"
args = ["-c", "exec sleep 1000"]
grace_period = "1s"
config = { env = { MODE = "web.mode", LIMITS = "web.limits" } }

[services.late]
command = "/bin/sh"
args = ["-c", "exec sleep 1000"]
grace_period = "1s"
restart = { policy = "always", backoff = "200ms", backoff_max = "500ms", start_limit = 1000 }
config = { env = { FLAG = "late.flag" } }
"#;
    apply(&stack, manifest).await;
    let view = wait_for(&stack, &[("web", "ready")]).await;
    let environ = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        raw.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).to_string()).collect::<Vec<_>>()
    };
    let first = pid(&view, "web");
    let env = environ(first);
    assert!(env.contains(&"MODE=blue".to_string()), "a string as its text: {env:?}");
    assert!(env.contains(&r#"LIMITS={"rps":10}"#.to_string()), "anything else as JSON: {env:?}");

    // `late` reads a key that is not set: its start fails, saying which, and is retried.
    let failed = stack
        .wait_events(1, "late fails to start for its key", |e| {
            e["type"] == "io.orch.lifecycle.crashed.v1" && e["subject"] == "late"
        })
        .await;
    let why = failed[0]["data"]["reason"].as_str().unwrap();
    assert!(why.contains("config key late.flag (for $FLAG)") && why.contains("no config key"), "{why}");
    call(&stack, "PUT", "/api/v1/config/late.flag", Some(json!({"value": "on"}))).await;
    let view = wait_for(&stack, &[("late", "ready")]).await;
    assert!(environ(pid(&view, "late")).contains(&"FLAG=on".to_string()));

    // A change of web.mode restarts web with the new value.
    let (status, _) = call(&stack, "PUT", "/api/v1/config/web.mode", Some(json!({"value": "green"}))).await;
    assert_eq!(status, StatusCode::OK);
    let view = common::eventually(std::time::Duration::from_secs(30), "web runs again with the new value", || async {
        let (_, view) = call(&stack, "GET", "/api/v1/stack", None).await;
        let web = view["services"].as_array()?.iter().find(|s| s["name"] == "web")?.clone();
        (web["state"] == "ready" && web["pid"].as_u64()? as u32 != first).then_some(view)
    })
    .await;
    let second = pid(&view, "web");
    assert!(environ(second).contains(&"MODE=green".to_string()));
    let events = stack
        .wait_events(1, "web stopped for the change", |e| {
            e["type"] == "io.orch.lifecycle.stopping.v1" && e["data"]["reason"] == "config key web.mode changed"
        })
        .await;
    assert_eq!(events[0]["subject"], "web");
}
