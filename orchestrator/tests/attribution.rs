//! Every change records who made it: the authenticated principal (the API key's name over HTTP,
//! `nats` over NATS, `orchestrator` for its own work), stored with the change and sent on its
//! event as the CloudEvents attribute `principal`, apart from whatever `source` the caller claims.

mod common;

use axum::http::StatusCode;
use common::http::call_raw;
use common::lifecycle::{SLEEPER, apply_as};
use common::{Stack, registration};
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-0123456789";
const ENGINE: &str = "engine-secret-0123456789";

async fn as_key(stack: &Stack, token: &str, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let bearer = format!("Bearer {token}");
    call_raw(stack, method, path, Some(body.to_string()), "application/json", &[("authorization", &bearer)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticated_principal_is_stored_and_emitted_apart_from_the_claimed_source() {
    let stack = Stack::start_with(|s| {
        s.http.auth.api_keys = [format!("admin:ops-alice:{ADMIN}"), format!("engine:attention:{ENGINE}")]
            .iter()
            .map(|k| k.parse().unwrap())
            .collect();
    })
    .await;

    // Registry over HTTP: the instance and its event name the key.
    let body = json!({"id": "web-1", "name": "web", "address": "127.0.0.1", "port": 8080});
    let (status, reply) = as_key(&stack, ADMIN, "POST", "/api/v1/services", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["instance"]["changed_by"], "key:ops-alice", "{reply}");
    let events = stack.wait_events(1, "the registration", |e| e["type"] == "io.orch.registry.registered.v1").await;
    assert_eq!(events[0]["principal"], "key:ops-alice");
    let stored: Option<String> =
        sqlx::query_scalar("SELECT changed_by FROM instances WHERE id = 'web-1'").fetch_one(&stack.pool).await.unwrap();
    assert_eq!(stored.as_deref(), Some("key:ops-alice"));

    // Maintenance by the admin: the instance's last change is theirs.
    let (status, reply) =
        as_key(&stack, ADMIN, "PUT", "/api/v1/instances/web-1/maintenance", json!({"reason": "disk"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let events = stack.wait_events(1, "maintenance on", |e| e["type"] == "io.orch.health.maintenance_entered.v1").await;
    assert_eq!(events[0]["principal"], "key:ops-alice");

    // Registry over NATS: the transport is the principal.
    let (code, reply) = stack.request("register", &registration("web-2", "web", 30)).await;
    assert_eq!(code, None, "{reply}");
    assert_eq!(reply["instance"]["changed_by"], "nats", "{reply}");
    let events = stack.wait_events(2, "both registrations", |e| e["type"] == "io.orch.registry.registered.v1").await;
    assert_eq!(events.iter().find(|e| e["subject"] == "web-2").unwrap()["principal"], "nats");

    // A refused durable command: its dead letter and its event name the sender.
    stack.publish_command("register", r#"{"id": "bad id", "name": "web"}"#, Some("bad-1")).await;
    let events = stack.wait_events(1, "the rejection", |e| e["type"] == "io.orch.system.command_rejected.v1").await;
    assert_eq!(events[0]["principal"], "nats");
    let principal: String = sqlx::query_scalar("SELECT principal FROM dead_letters WHERE command_id = 'bad-1'")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(principal, "nats");

    // Priorities: the engine claims to be someone else in `source`; the principal is its key.
    let claim = json!({"value": 70, "reason": "load", "source": "ops-alice"});
    let (status, reply) = as_key(&stack, ENGINE, "PUT", "/api/v1/priorities/web", claim).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["change"]["principal"], "key:attention", "{reply}");
    assert_eq!(reply["change"]["source"], "ops-alice", "the claim is kept, as the caller's words");
    assert_eq!(reply["priority"]["adjustment"]["principal"], "key:attention", "{reply}");
    let id = reply["change"]["id"].as_str().unwrap().to_string();
    let events = stack.wait_events(1, "the priority change", |e| e["id"] == id.as_str()).await;
    assert_eq!(events[0]["principal"], "key:attention");
    let bearer = format!("Bearer {ADMIN}");
    let (status, view) =
        call_raw(&stack, "GET", "/api/v1/priorities/web", None, "application/json", &[("authorization", &bearer)])
            .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["history"][0]["principal"], "key:attention", "the stored history keeps it: {view}");
    // Over NATS, the policy is the transport's.
    let (code, reply) =
        stack.request_on("priority", "policy", r#"{"service": "web", "pinned": true, "source": "ops"}"#).await;
    assert_eq!(code, None, "{reply}");
    assert_eq!(reply["change"]["principal"], "nats", "{reply}");

    // Lifecycle: the applied version and its events name the admin; its own later work is the
    // orchestrator's.
    let manifest = format!("[services.sleepy]\ncommand = \"{SLEEPER}\"\n");
    apply_as(&stack, &bearer, &manifest).await;
    let principal: Option<String> = sqlx::query_scalar("SELECT principal FROM manifests ORDER BY version DESC LIMIT 1")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(principal.as_deref(), Some("key:ops-alice"));
    let applied =
        stack.wait_events(1, "manifest applied", |e| e["type"] == "io.orch.lifecycle.manifest_applied.v1").await;
    assert_eq!(applied[0]["principal"], "key:ops-alice");
    let running = stack.wait_events(1, "the service runs", |e| e["type"] == "io.orch.lifecycle.started.v1").await;
    let principal = running[0]["principal"].as_str().unwrap();
    assert!(["key:ops-alice", "orchestrator"].contains(&principal), "{principal}");
    let (status, reply) = as_key(&stack, ADMIN, "POST", "/api/v1/stack/services/sleepy/restart", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let stopping = stack
        .wait_events(1, "the restart begins", |e| {
            e["type"] == "io.orch.lifecycle.stopping.v1" || e["type"] == "io.orch.lifecycle.restarting.v1"
        })
        .await;
    assert_eq!(stopping[0]["principal"], "key:ops-alice", "{}", stopping[0]);
}
