//! The same failing request over HTTP and over NATS request/reply gets the same error: one mapping
//! from domain errors to the protocol's error serves both paths.

mod common;

use common::{Stack, registration};
use serde_json::{Value, json};

/// The error object of an HTTP answer, and of a NATS reply (whose code header must agree with it).
async fn both(stack: &Stack, http: (&str, &str, Option<Value>), nats: (&str, &str, &str)) -> (Value, Value) {
    let (status, body) = common::http::call(stack, http.0, http.1, http.2).await;
    let (header, reply) = stack.request_on(nats.0, nats.1, nats.2).await;
    let (over_http, over_nats) = (body["error"].clone(), reply["error"].clone());
    assert!(over_http.is_object(), "HTTP {} {}: {status} {body}", http.0, http.1);
    assert!(over_nats.is_object(), "NATS {}.{}: {reply}", nats.0, nats.1);
    assert_eq!(header.as_deref(), Some(status.as_str()), "the NATS code header is the HTTP status");
    (over_http, over_nats)
}

#[tokio::test]
async fn the_same_failure_has_the_same_code_over_http_and_nats() {
    let stack = Stack::start().await;

    // Refused by validation.
    let bad = json!({"id": "x", "name": "Not A Name", "address": "127.0.0.1", "port": 80, "ttl_seconds": 10});
    let (http, nats) =
        both(&stack, ("POST", "/api/v1/services", Some(bad.clone())), ("registry", "register", &bad.to_string())).await;
    assert_eq!(http["code"], "validation_failed");
    assert_eq!(http, nats);

    // Not found.
    let (http, nats) =
        both(&stack, ("GET", "/api/v1/services/nobody", None), ("registry", "get", r#"{"id":"nobody"}"#)).await;
    assert_eq!((http["code"].as_str(), http["field"].as_str()), (Some("not_found"), Some("id")));
    assert_eq!(http, nats);
    let (http, nats) =
        both(&stack, ("GET", "/api/v1/services/nobody/health", None), ("health", "service", r#"{"name":"nobody"}"#))
            .await;
    assert_eq!(http["code"], "not_found");
    assert_eq!(http, nats);
    let (http, nats) = both(&stack, ("GET", "/api/v1/stack", None), ("lifecycle", "status", "")).await;
    assert_eq!(http["code"], "not_found");
    assert_eq!(http, nats);

    // PostgreSQL refuses the statement (here: the table is gone): a read and a write both fail
    // inside the orchestrator, and neither path shows the database's own message.
    let (status, _) = common::http::call(
        &stack,
        "POST",
        "/api/v1/services",
        Some(serde_json::from_str(&registration("a-1", "web", 30)).unwrap()),
    )
    .await;
    assert!(status.is_success(), "{status}");
    sqlx::query("ALTER TABLE instances RENAME TO instances_gone").execute(&stack.pool).await.unwrap();
    let (http, nats) =
        both(&stack, ("GET", "/api/v1/services/a-1", None), ("registry", "get", r#"{"id":"a-1"}"#)).await;
    assert_eq!(http["code"], "internal");
    assert_eq!(http, nats);
    assert!(!http["message"].as_str().unwrap().contains("instances"), "{http}");
    let register = |id: &str| serde_json::from_str::<Value>(&registration(id, "web", 30)).unwrap();
    let (http, nats) = both(
        &stack,
        ("POST", "/api/v1/services", Some(register("b-1"))),
        ("registry", "register", &register("b-2").to_string()),
    )
    .await;
    assert_eq!(http["code"], "internal");
    assert_eq!(http, nats);
    assert!(!nats["message"].as_str().unwrap().contains("instances"), "{nats}");
    sqlx::query("ALTER TABLE instances_gone RENAME TO instances").execute(&stack.pool).await.unwrap();
}
