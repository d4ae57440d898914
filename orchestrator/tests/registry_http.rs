//! The HTTP registry API against a real NATS server and PostgreSQL, driven in-process through the
//! router, plus one request over a real socket.

mod common;

use axum::http::StatusCode;
use common::http::{assert_error, call, call_raw};
use common::{Stack, of_type};
use serde_json::{Value, json};

#[tokio::test]
async fn register_list_get_heartbeat_deregister() {
    let stack = Stack::start().await;
    let body = json!({"id": "web-1", "name": "web", "version": "1.2.0", "address": "10.0.0.5", "port": 8080,
                      "tags": ["blue", "eu"], "metadata": {"zone": "eu-1"}, "dependencies": ["db"], "weight": 3});
    let (status, reply) = call(&stack, "POST", "/api/v1/services", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["status"], "registered");
    assert_eq!(reply["instance"]["health"], "passing");
    assert_eq!(reply["instance"]["revision"], 1);

    // The event is on JetStream, in CloudEvents form.
    let events = stack.wait_events(1, "registered event", |e| e["type"] == "io.orch.registry.registered.v1").await;
    let event = &events[0];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], "web-1");
    assert_eq!(event["source"], "/orchestrator");
    assert_eq!(event["data"]["instance"]["metadata"]["zone"], "eu-1");
    let id = uuid::Uuid::parse_str(event["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);

    // The same body again changes nothing and emits nothing.
    let (status, reply) = call(&stack, "POST", "/api/v1/services", Some(body.clone())).await;
    assert_eq!((status, &reply["status"]), (StatusCode::OK, &json!("unchanged")));

    // A changed body is an update that keeps health and reports the fields.
    let mut changed = body.clone();
    changed["port"] = json!(9090);
    let (status, reply) = call(&stack, "POST", "/api/v1/services", Some(changed)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["status"], "updated");
    assert_eq!(reply["changed"], json!(["port"]));
    assert_eq!(reply["instance"]["revision"], 2);

    call(
        &stack,
        "POST",
        "/api/v1/services",
        Some(json!({"id": "web-2", "name": "web", "address": "10.0.0.6", "port": 80, "tags": ["green"]})),
    )
    .await;
    call(
        &stack,
        "POST",
        "/api/v1/services",
        Some(json!({"id": "db-1", "name": "db", "address": "10.0.0.7", "port": 5432})),
    )
    .await;

    let (_, list) = call(&stack, "GET", "/api/v1/services?name=web", None).await;
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["web-1", "web-2"]);
    let (_, list) = call(&stack, "GET", "/api/v1/services?tag=blue,eu", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = call(&stack, "GET", "/api/v1/services?meta.zone=eu-1", None).await;
    assert_eq!(list["items"][0]["id"], "web-1");
    let (_, list) = call(&stack, "GET", "/api/v1/services?health=critical", None).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (_, page) = call(&stack, "GET", "/api/v1/services?limit=2", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    let (_, rest) = call(&stack, "GET", &format!("/api/v1/services?limit=2&after={next}"), None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next"], Value::Null, "the last page says there is no next one");

    let (status, one) = call(&stack, "GET", "/api/v1/services/web-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["port"], 9090);
    assert!(one["expires_at"].is_string(), "a live lease shows its expiry: {one}");

    let (status, beat) = call(&stack, "PUT", "/api/v1/services/web-1/heartbeat", None).await;
    assert_eq!((status, &beat["status"]), (StatusCode::OK, &json!("renewed")));
    let (_, one) = call(&stack, "GET", "/api/v1/services/web-1", None).await;
    assert!(one["last_heartbeat_at"].is_string(), "{one}");

    let (status, reply) = call(&stack, "DELETE", "/api/v1/services/web-1", None).await;
    assert_eq!((status, &reply["status"]), (StatusCode::OK, &json!("deregistered")));
    assert_error(
        &call(&stack, "GET", "/api/v1/services/web-1", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("id"),
    );
    assert_error(
        &call(&stack, "DELETE", "/api/v1/services/web-1", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("id"),
    );
    assert_error(
        &call(&stack, "PUT", "/api/v1/services/web-1/heartbeat", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        Some("id"),
    );

    // One event per state change: 3 registered, 1 updated, 1 deregistered.
    let events = stack
        .wait_events(5, "all registry events", |e| e["type"].as_str().unwrap().starts_with("io.orch.registry."))
        .await;
    assert_eq!(of_type(&events, "io.orch.registry.registered.v1").len(), 3);
    assert_eq!(of_type(&events, "io.orch.registry.updated.v1").len(), 1);
    assert_eq!(of_type(&events, "io.orch.registry.deregistered.v1").len(), 1);
    assert_eq!(events.len(), 5);
}

#[tokio::test]
async fn discovery_strategies_pick_passing_instances() {
    let stack = Stack::start().await;
    for (id, weight) in [("api-a", 1), ("api-b", 1), ("api-c", 50)] {
        let body = json!({"id": id, "name": "api", "address": "127.0.0.1", "port": 80, "weight": weight});
        assert_eq!(call(&stack, "POST", "/api/v1/services", Some(body)).await.0, StatusCode::CREATED);
    }
    let mut picks = Vec::new();
    for _ in 0..3 {
        let (_, d) = call(&stack, "GET", "/api/v1/discovery/api?strategy=round_robin", None).await;
        assert_eq!(d["instances"].as_array().unwrap().len(), 3);
        picks.push(d["instance"]["id"].as_str().unwrap().to_string());
    }
    picks.sort();
    assert_eq!(picks, ["api-a", "api-b", "api-c"]);
    let mut heavy = 0;
    for _ in 0..200 {
        let (_, d) = call(&stack, "GET", "/api/v1/discovery/api?strategy=weighted", None).await;
        heavy += usize::from(d["instance"]["id"] == "api-c");
    }
    assert!(heavy > 150, "weight 50 of 52 chosen {heavy} of 200 times");
    let (status, d) = call(&stack, "GET", "/api/v1/discovery/api?strategy=random", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(d["instance"]["id"].is_string());
    let (_, none) = call(&stack, "GET", "/api/v1/discovery/nothing", None).await;
    assert_eq!(none["instance"], Value::Null);
    assert_error(
        &call(&stack, "GET", "/api/v1/discovery/api?strategy=fastest", None).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("strategy"),
    );
}

#[tokio::test]
async fn bad_http_input_gets_a_json_error_naming_the_field() {
    let stack = Stack::start().await;
    let post =
        |body: &str| call_raw(&stack, "POST", "/api/v1/services", Some(body.to_string()), "application/json", &[]);
    assert_error(&post("{not json").await, StatusCode::BAD_REQUEST, "malformed_payload", None);
    assert_error(
        &post(r#"{"name":"web","address":"h","port":"80"}"#).await,
        StatusCode::BAD_REQUEST,
        "malformed_payload",
        Some("port"),
    );
    let unknown = post(r#"{"name":"web","address":"h","port":80,"colour":"red"}"#).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "malformed_payload", None);
    assert!(unknown.1["error"]["message"].as_str().unwrap().contains("colour"));
    assert_error(&post(r#"{"address":"h","port":80}"#).await, StatusCode::BAD_REQUEST, "malformed_payload", None);
    assert_error(
        &post(r#"{"name":"Web","address":"h","port":80}"#).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("name"),
    );
    assert_error(
        &post(r#"{"name":"web","address":"h","port":70000}"#).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("port"),
    );
    assert_error(
        &post(r#"{"name":"web","address":"h","port":80,"ttl_seconds":0}"#).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("ttl_seconds"),
    );
    assert_error(
        &post(r#"{"name":"web","address":"h","port":80,"tags":["a",""]}"#).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("tags[1]"),
    );
    let huge = format!(r#"{{"name":"web","address":"h","port":80,"version":"{}"}}"#, "x".repeat(100_000));
    assert_error(&post(&huge).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    assert_error(
        &call_raw(&stack, "POST", "/api/v1/services", Some("{}".into()), "text/plain", &[]).await,
        StatusCode::BAD_REQUEST,
        "malformed_payload",
        None,
    );
    assert_error(
        &call(&stack, "GET", "/api/v1/services?colour=red", None).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("colour"),
    );
    assert_error(
        &call(&stack, "GET", "/api/v1/services/a.b", None).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        Some("id"),
    );
    assert_error(&call(&stack, "GET", "/api/v1/nowhere", None).await, StatusCode::NOT_FOUND, "not_found", None);
    let wrong_method = call(&stack, "PATCH", "/api/v1/services", None).await;
    assert_error(&wrong_method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    assert!(wrong_method.1["error"]["message"].as_str().unwrap().contains("PATCH"), "{}", wrong_method.1);

    // A conflicting re-registration (same id, other service) is refused.
    assert_eq!(post(r#"{"id":"x1","name":"web","address":"h","port":80}"#).await.0, StatusCode::CREATED);
    assert_error(
        &post(r#"{"id":"x1","name":"api","address":"h","port":80}"#).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("id"),
    );

    // Nothing invalid reached the registry.
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 1);
}

#[tokio::test]
async fn idempotency_key_applies_a_command_once() {
    let stack = Stack::start().await;
    let headers = [("idempotency-key", "k-1")];
    let body = Some(r#"{"name":"web","address":"h","port":80}"#.to_string());
    let (s1, r1) = call_raw(&stack, "POST", "/api/v1/services", body.clone(), "application/json", &headers).await;
    let (s2, r2) = call_raw(&stack, "POST", "/api/v1/services", body, "application/json", &headers).await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(s2, StatusCode::CREATED, "the replay answers like the original");
    assert_eq!(r1["instance"]["id"], r2["instance"]["id"], "no second instance with a new id");
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 1);

    // The same key on another request is a conflict, never the first request's outcome.
    let id = r1["instance"]["id"].as_str().unwrap().to_string();
    let reuse = call_raw(&stack, "DELETE", &format!("/api/v1/services/{id}"), None, "application/json", &headers).await;
    assert_error(&reuse, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 1, "nothing was deleted");
    let other_body = Some(r#"{"name":"web","address":"h","port":81}"#.to_string());
    let reuse = call_raw(&stack, "POST", "/api/v1/services", other_body, "application/json", &headers).await;
    assert_error(&reuse, StatusCode::CONFLICT, "conflict", None);
    let bad_key = call_raw(
        &stack,
        "DELETE",
        &format!("/api/v1/services/{id}"),
        None,
        "application/json",
        &[("idempotency-key", "has space")],
    )
    .await;
    assert_error(&bad_key, StatusCode::BAD_REQUEST, "validation_failed", Some("Idempotency-Key"));
}

#[tokio::test]
async fn real_socket_and_readiness() {
    let stack = Stack::start().await;
    let port = stack.http_port();
    let (status, body) = tokio::task::spawn_blocking(move || {
        orch_testkit::http_request(port, "POST", "/api/v1/services", Some(r#"{"name":"sock","address":"h","port":1}"#))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz").unwrap()).await.unwrap();
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready, json!({"postgres": true, "nats": true, "instances": 1, "role": "single"}));
}
