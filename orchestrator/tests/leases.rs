//! Leases: expiry, recovery, deregistration after staying critical, self-preservation, and no
//! wrongful expiry across an orchestrator restart. Short TTLs and a fast sweep keep them quick.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::{assert_error, call};
use common::{Stack, of_type, registration};
use serde_json::{Value, json};

fn fast(settings: &mut orchestrator::Settings) {
    settings.registry.sweep.interval = Duration::from_millis(100);
    settings.registry.sweep.min_instances = 10;
    settings.health.deregister_critical_after = Duration::from_secs(2);
}

async fn beat(stack: &Stack, id: &str) {
    stack.client.publish(stack.subjects.heartbeat(id), "".into()).await.unwrap();
}

fn types(events: &[Value], subject: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["subject"] == subject && e["type"].as_str().unwrap().starts_with("io.orch.registry."))
        .map(|e| {
            e["type"].as_str().unwrap().trim_start_matches("io.orch.registry.").trim_end_matches(".v1").to_string()
        })
        .collect()
}

#[tokio::test]
async fn silent_instance_expires_recovers_then_is_deregistered() {
    let stack = Stack::start_with(fast).await;
    stack.request("register", &registration("l-1", "web", 1)).await;
    let expired = stack.wait_events(1, "expired event", |e| e["type"] == "io.orch.registry.expired.v1").await;
    assert_eq!(expired[0]["data"]["instance"]["health"], "critical");
    assert_eq!(expired[0]["data"]["previous_health"], "passing");
    let health: String =
        sqlx::query_scalar("SELECT health FROM instances WHERE id = 'l-1'").fetch_one(&stack.pool).await.unwrap();
    assert_eq!(health, "critical", "committed in PostgreSQL");

    let reply = stack.client.request(stack.subjects.heartbeat("l-1"), "".into()).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap()["status"], "recovering");
    let recovered = stack.wait_events(1, "recovered event", |e| e["type"] == "io.orch.registry.recovered.v1").await;
    assert!(recovered[0]["data"]["critical_for_ms"].as_i64().unwrap() >= 0);
    assert_eq!(recovered[0]["data"]["instance"]["health"], "passing");

    // Silent again: expires, and after 2 s critical it is deregistered with its own reason.
    let gone = stack.wait_events(1, "deregistered event", |e| e["type"] == "io.orch.registry.deregistered.v1").await;
    assert_eq!(gone[0]["data"]["reason"], "critical_too_long");
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 0);
    let events = stack.events().await;
    assert_eq!(types(&events, "l-1"), ["registered", "expired", "recovered", "expired", "deregistered"]);
}

#[tokio::test]
async fn beating_instance_never_expires() {
    let stack = Stack::start_with(fast).await;
    // A TTL of 2 s against beats every 100 ms: a lease that did not renew would expire within the
    // 3 s of beating, and a machine would have to stall for 2 s to expire a renewed one.
    stack.request("register", &registration("steady", "web", 2)).await;
    for _ in 0..30 {
        beat(&stack, "steady").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = stack.events().await;
    assert_eq!(types(&events, "steady"), ["registered"], "no expiry while beating");
}

#[tokio::test]
async fn mass_expiry_triggers_self_preservation_until_beats_return() {
    let stack = Stack::start_with(fast).await;
    // Registered together, so their leases run out within a sweep or two even on a busy machine.
    let payloads: Vec<String> = (0..20).map(|i| registration(&format!("sp-{i}"), "web", 1)).collect();
    futures::future::join_all(payloads.iter().map(|p| stack.request("register", p))).await;
    // All 20 stop beating at once: 100% > 15% of live instances.
    let entered = stack
        .wait_events(1, "self-preservation entered", |e| e["type"] == "io.orch.system.self_preservation_entered.v1")
        .await;
    assert_eq!(entered[0]["data"]["live"], 20);
    // The 20 commit in one or more transactions (two writer shards), so their leases can run out
    // over two sweeps; any share over the 15% threshold must trigger it.
    let expiring = entered[0]["data"]["expiring"].as_u64().unwrap();
    assert!((4..=20).contains(&expiring), "{expiring} of 20 expiring");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = stack.events().await;
    assert!(of_type(&events, "io.orch.registry.expired.v1").is_empty(), "no instance expired while suspended");
    let active: Value = sqlx::query_scalar("SELECT value FROM system_state WHERE key = 'self_preservation'")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(active["active"], true);

    // Beats return for 18 of them; 2 of 20 (10%) overdue is under the threshold.
    for _ in 0..15 {
        for i in 0..18 {
            beat(&stack, &format!("sp-{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack
        .wait_events(1, "self-preservation exited", |e| e["type"] == "io.orch.system.self_preservation_exited.v1")
        .await;
    let expired =
        stack.wait_events(2, "the two silent ones expire", |e| e["type"] == "io.orch.registry.expired.v1").await;
    let mut ids: Vec<&str> = expired.iter().map(|e| e["subject"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["sp-18", "sp-19"]);
}

/// A deliberate scale-down looks like a mass failure and keeps self-preservation on: an operator
/// ends it (an audited request, with a reason), and the overdue instances expire at once.
#[tokio::test]
async fn an_operator_ends_self_preservation_after_a_deliberate_scale_down() {
    let stack = Stack::start_with(fast).await;
    // Not active: there is nothing to end, over HTTP and NATS alike.
    let idle = call(&stack, "POST", "/api/v1/health/self-preservation/end", None).await;
    assert_error(&idle, StatusCode::CONFLICT, "conflict", None);
    let (_, refused) = stack.request_on("health", "end_self_preservation", "").await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");

    let payloads: Vec<String> = (0..20).map(|i| registration(&format!("down-{i}"), "web", 1)).collect();
    futures::future::join_all(payloads.iter().map(|p| stack.request("register", p))).await;
    // Every lease was granted before its registration was answered, so one TTL from now all 20
    // are overdue, whatever the machine's speed.
    let all_overdue = tokio::time::Instant::now() + Duration::from_millis(1_100);
    stack
        .wait_events(1, "self-preservation entered", |e| e["type"] == "io.orch.system.self_preservation_entered.v1")
        .await;
    tokio::time::sleep_until(all_overdue).await;

    let bad =
        call(&stack, "POST", "/api/v1/health/self-preservation/end", Some(json!({ "reason": "x".repeat(600) }))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "validation_failed", Some("reason"));
    let (status, ended) = call(
        &stack,
        "POST",
        "/api/v1/health/self-preservation/end",
        Some(json!({ "reason": "web scaled down from 20 to 0" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!((ended["expiring"].as_u64(), ended["live"].as_u64()), (Some(20), Some(20)), "{ended}");

    let exited = stack
        .wait_events(1, "self-preservation exited", |e| e["type"] == "io.orch.system.self_preservation_exited.v1")
        .await;
    assert_eq!(exited[0]["principal"], "anonymous", "who ended it is on the event");
    assert_eq!(exited[0]["data"]["reason"], "web scaled down from 20 to 0");
    assert!(exited[0]["data"]["message"].as_str().unwrap().starts_with("ended by anonymous"), "{}", exited[0]);
    let expired = stack.wait_events(20, "all 20 expire", |e| e["type"] == "io.orch.registry.expired.v1").await;
    assert_eq!(expired.len(), 20);
    let active: Value = sqlx::query_scalar("SELECT value FROM system_state WHERE key = 'self_preservation'")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(active["active"], false);
    // Once ended, it is not on any more.
    let (_, refused) = stack.request_on("health", "end_self_preservation", r#"{"reason":"again"}"#).await;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    let events = stack.events().await;
    assert_eq!(of_type(&events, "io.orch.system.self_preservation_entered.v1").len(), 1, "not entered again");
}

#[tokio::test]
async fn restart_does_not_expire_instances_that_kept_beating() {
    let mut stack = Stack::start_with(fast).await;
    stack.request("register", &registration("keep", "web", 2)).await;
    stack.stop_orchestrator().await;
    // Down for longer than the TTL, while the instance keeps beating into the void.
    for _ in 0..25 {
        beat(&stack, "keep").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.start_orchestrator().await;
    for _ in 0..30 {
        beat(&stack, "keep").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = stack.events().await;
    assert_eq!(types(&events, "keep"), ["registered"], "not expired by the restart");
    // And one that stopped beating does expire after the restart's grace TTL (waited for, not
    // timed: the sweep runs when the machine lets it).
    stack
        .wait_events(1, "keep expires once the beats stop", |e| {
            e["subject"] == "keep" && e["type"] == "io.orch.registry.expired.v1"
        })
        .await;
    let events = stack.events().await;
    assert_eq!(types(&events, "keep"), ["registered", "expired"]);
}
