//! Health monitoring against real targets: an HTTP server whose answer the test switches, a TCP
//! listener, a NATS responder and real processes; thresholds, TTL updates, flap damping,
//! maintenance, auto-deregistration, aggregates and the history, with a real nats-server and
//! PostgreSQL.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use common::http::{assert_error, call};
use common::{Stack, eventually, of_type};
use futures::StreamExt;
use serde_json::{Value, json};

/// An HTTP server answering `GET /health` with whatever status the test sets.
struct Target {
    port: u16,
    status: Arc<AtomicU16>,
}

impl Target {
    async fn start() -> Target {
        let status = Arc::new(AtomicU16::new(200));
        let shared = status.clone();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let code = shared.load(Ordering::Relaxed);
                async move { (StatusCode::from_u16(code).unwrap(), format!("answered {code}")) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Target { port, status }
    }

    fn answer(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }
}

async fn register(stack: &Stack, body: Value) -> Value {
    let (status, reply) = call(stack, "POST", "/api/v1/services", Some(body)).await;
    assert!(status.is_success(), "{status}: {reply}");
    reply
}

/// Events of `ty` about instance `id` (CloudEvents `subject`).
async fn events_of(stack: &Stack, ty: &str, id: &str) -> Vec<Value> {
    stack.events().await.into_iter().filter(|e| e["type"] == ty && e["subject"] == id).collect()
}

/// Waits until the check events of `id` show exactly these statuses, in order.
async fn wait_check_statuses(stack: &Stack, id: &str, expected: &[&str]) -> Vec<Value> {
    eventually(Duration::from_secs(20), &format!("check statuses {expected:?} of {id}"), || async {
        let events = events_of(stack, "io.orch.health.check_changed.v1", id).await;
        let statuses: Vec<&str> = events.iter().map(|e| e["data"]["status"].as_str().unwrap()).collect();
        (statuses == expected).then_some(events.clone())
    })
    .await
}

async fn discovered(stack: &Stack) -> Vec<String> {
    let (_, d) = call(stack, "GET", "/api/v1/discovery/api", None).await;
    let mut ids: Vec<String> =
        d["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn system(stack: &Stack) -> (StatusCode, Value) {
    call(stack, "GET", "/api/v1/health", None).await
}

async fn health_of(stack: &Stack, id: &str) -> Value {
    let (_, instance) = call(stack, "GET", &format!("/api/v1/services/{id}"), None).await;
    instance
}

#[tokio::test]
async fn http_check_follows_thresholds_and_reports_warning() {
    let stack = Stack::start().await;
    let target = Target::start().await;
    let reply = register(
        &stack,
        json!({"id": "web-1", "name": "web", "address": "127.0.0.1", "port": target.port,
               "checks": [{"kind": "http", "url": "/health", "interval": "200ms", "failures_before_critical": 2}]}),
    )
    .await;
    assert_eq!(reply["instance"]["health"], "critical", "not advertised before its check passed");
    assert_eq!(reply["instance"]["checks"][0]["spec"]["id"], "http");

    wait_check_statuses(&stack, "web-1", &["passing"]).await;
    let (status, body) = call(&stack, "GET", "/api/v1/services/web/health", None).await;
    assert_eq!((status, &body["state"]), (StatusCode::OK, &json!("healthy")), "{body}");

    // 429 twice reaches warning; 500 then counts on to critical; 200 passes again.
    target.answer(429);
    wait_check_statuses(&stack, "web-1", &["passing", "warning"]).await;
    let (status, body) = call(&stack, "GET", "/api/v1/services/web/health", None).await;
    assert_eq!((status, &body["state"]), (StatusCode::TOO_MANY_REQUESTS, &json!("degraded")), "{body}");
    target.answer(500);
    let events = wait_check_statuses(&stack, "web-1", &["passing", "warning", "critical"]).await;
    assert!(events[2]["data"]["output"].as_str().unwrap().contains("500"), "{}", events[2]);
    let (status, body) = call(&stack, "GET", "/api/v1/services/web/health", None).await;
    assert_eq!((status, &body["state"]), (StatusCode::SERVICE_UNAVAILABLE, &json!("critical")), "{body}");
    assert_eq!(body["instances"][0]["checks"][0]["status"], "critical");
    target.answer(200);
    wait_check_statuses(&stack, "web-1", &["passing", "warning", "critical", "passing"]).await;

    // Instance events follow, with their cause; the history holds both levels.
    let changes = events_of(&stack, "io.orch.health.instance_changed.v1", "web-1").await;
    let healths: Vec<&str> = changes.iter().map(|e| e["data"]["health"].as_str().unwrap()).collect();
    assert_eq!(healths, ["passing", "warning", "critical", "passing"]);
    assert_eq!(changes[0]["data"]["cause"], "check:http");
    let (status, history) = call(&stack, "GET", "/api/v1/instances/web-1/health/history?limit=100", None).await;
    assert_eq!(status, StatusCode::OK);
    let levels: Vec<&str> = history["items"].as_array().unwrap().iter().map(|e| e["level"].as_str().unwrap()).collect();
    assert_eq!(levels.iter().filter(|l| **l == "check").count(), 4, "{history}");
    assert_eq!(levels.iter().filter(|l| **l == "instance").count(), 4, "{history}");

    // The check listing shows the lease and the check with its last run.
    let (_, checks) = call(&stack, "GET", "/api/v1/instances/web-1/checks", None).await;
    assert_eq!(checks["checks"][0]["id"], "lease");
    assert_eq!(checks["checks"][1]["status"], "passing");
    assert!(checks["checks"][1]["live"]["last_output"].as_str().unwrap().contains("200"), "{checks}");

    // Service events: healthy, degraded, critical, healthy.
    let service: Vec<String> = of_type(&stack.events().await, "io.orch.health.service_changed.v1")
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(service, ["critical", "healthy", "degraded", "critical", "healthy"]);
}

#[tokio::test]
async fn tcp_and_nats_checks_against_real_targets() {
    let stack = Stack::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // A NATS responder on the instance's ADR-32 ping subject.
    let mut ping = stack.client.subscribe("$SRV.PING.cache.cache-1").await.unwrap();
    let client = stack.client.clone();
    let responder = tokio::spawn(async move {
        while let Some(m) = ping.next().await {
            if let Some(reply) = m.reply {
                client.publish(reply, "pong".into()).await.unwrap();
            }
        }
    });
    register(
        &stack,
        json!({"id": "cache-1", "name": "cache", "address": "127.0.0.1", "port": port, "checks": [
            {"kind": "tcp", "interval": "200ms"},
            {"kind": "nats", "interval": "200ms", "timeout": "150ms"}]}),
    )
    .await;
    eventually(Duration::from_secs(20), "both checks pass", || async {
        (health_of(&stack, "cache-1").await["health"] == "passing").then_some(())
    })
    .await;

    responder.abort();
    let nats_down = eventually(Duration::from_secs(20), "the nats check fails", || async {
        let events = events_of(&stack, "io.orch.health.check_changed.v1", "cache-1").await;
        events.into_iter().find(|e| e["data"]["check"] == "nats" && e["data"]["status"] == "critical")
    })
    .await;
    let output = nats_down["data"]["output"].as_str().unwrap();
    assert!(output.contains("no responders") || output.contains("timed out"), "{output}");

    drop(listener);
    let tcp_down = eventually(Duration::from_secs(20), "the tcp check fails", || async {
        let events = events_of(&stack, "io.orch.health.check_changed.v1", "cache-1").await;
        events.into_iter().find(|e| e["data"]["check"] == "tcp" && e["data"]["status"] == "critical")
    })
    .await;
    assert!(tcp_down["data"]["output"].as_str().unwrap().to_lowercase().contains("refused"), "{tcp_down}");
}

#[tokio::test]
async fn exec_checks_run_real_processes_when_enabled() {
    let stack = Stack::start_with(|s| s.health.exec_enabled = true).await;
    let dir = orch_testkit::TempDir::new("exec-check");
    let code = dir.path().join("code");
    std::fs::write(&code, "0").unwrap();
    let script = format!("echo checked; exit $(cat {})", code.display());
    register(
        &stack,
        json!({"id": "job-1", "name": "job", "address": "127.0.0.1", "port": 1, "checks": [
            {"kind": "exec", "command": ["/bin/sh", "-c", script], "interval": "200ms"}]}),
    )
    .await;
    let set = |c: &str, path: &Path| std::fs::write(path, c).unwrap();
    wait_check_statuses(&stack, "job-1", &["passing"]).await;
    set("1", &code);
    wait_check_statuses(&stack, "job-1", &["passing", "warning"]).await;
    set("2", &code);
    let events = wait_check_statuses(&stack, "job-1", &["passing", "warning", "critical"]).await;
    assert!(events[2]["data"]["output"].as_str().unwrap().contains("checked"), "output captured: {}", events[2]);
}

#[tokio::test]
async fn ttl_checks_take_updates_over_http_and_nats() {
    let stack = Stack::start().await;
    register(
        &stack,
        json!({"id": "w-1", "name": "worker", "address": "127.0.0.1", "port": 1,
               "checks": [{"kind": "ttl", "id": "progress", "ttl": "1s"}]}),
    )
    .await;
    let (status, reply) = call(
        &stack,
        "PUT",
        "/api/v1/instances/w-1/checks/progress/ttl",
        Some(json!({"status": "passing", "output": "batch 7 done"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!((&reply["status"], &reply["changed"]), (&json!("passing"), &json!(true)));
    let (code, reply) = stack
        .request_on("health", "ttl", r#"{"id": "w-1", "check": "progress", "status": "warning", "output": "slow"}"#)
        .await;
    assert_eq!(code, None, "{reply}");
    assert_eq!(reply["status"], "warning");
    // Silence: the TTL runs out and the check turns critical by itself.
    let events = wait_check_statuses(&stack, "w-1", &["passing", "warning", "critical"]).await;
    assert!(events[2]["data"]["output"].as_str().unwrap().contains("expired"), "{}", events[2]);
    assert_eq!(events[1]["data"]["output"], "slow");
}

#[tokio::test]
async fn bad_health_input_is_refused_naming_the_field() {
    let stack = Stack::start().await;
    let base = json!({"id": "b-1", "name": "bad", "address": "127.0.0.1", "port": 80});
    let with_checks = |checks: Value| {
        let mut body = base.clone();
        body["checks"] = checks;
        body
    };
    let r =
        call(&stack, "POST", "/api/v1/services", Some(with_checks(json!([{"kind": "http", "url": "ftp://x"}])))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("checks[0].url"));
    let r = call(
        &stack,
        "POST",
        "/api/v1/services",
        Some(with_checks(json!([{"kind": "exec", "command": ["/bin/true"]}]))),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("checks[0].kind"));
    assert!(r.1["error"]["message"].as_str().unwrap().contains("--health-exec-enabled"));
    let r =
        call(&stack, "POST", "/api/v1/services", Some(with_checks(json!([{"kind": "tcp", "interval": "soon"}])))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed_payload", Some("checks[0].interval"));

    register(&stack, with_checks(json!([{"kind": "tcp", "interval": "1s"}]))).await;
    let r = call(&stack, "PUT", "/api/v1/instances/b-1/checks/tcp/ttl", Some(json!({"status": "passing"}))).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", Some("check"));
    let r = call(&stack, "PUT", "/api/v1/instances/b-1/checks/nope/ttl", Some(json!({"status": "passing"}))).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", Some("check"));
    let r = call(&stack, "PUT", "/api/v1/instances/b-1/checks/web", Some(json!({"kind": "http", "id": "other"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("id"));
    let r = call(&stack, "PUT", "/api/v1/instances/b-1/maintenance", Some(json!({"reason": "a\u{7}b"}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("reason"));
    let r = call(&stack, "GET", "/api/v1/health/history?level=galaxy", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("level"));

    // Over NATS: an error reply naming the field; a durable command is dead-lettered.
    let (code, reply) = stack.request_on("health", "ttl", r#"{"id": "b-1", "check": "tcp", "status": "great"}"#).await;
    assert_eq!(code.as_deref(), Some("400"));
    assert_eq!(reply["error"]["field"], "status", "{reply}");
    let payload = r#"{"id": "b-1", "service": "bad", "enabled": true}"#;
    common::publish_raw(&stack.js, &stack.subjects.command("health", "maintenance"), payload.as_bytes(), None).await;
    let rejected = stack.wait_events(1, "rejection", |e| e["type"] == "io.orch.system.command_rejected.v1").await;
    assert_eq!(rejected[0]["data"]["error"]["field"], "id");
    assert_eq!(stack.count("SELECT count(*) FROM dead_letters").await, 1);
}

/// A check reaches only its own instance unless the operator allows more: an SSRF (cloud
/// metadata, another host's admin port), a port scan and a NATS request on the orchestrator's
/// own API are refused with 400 naming the field, over HTTP and NATS alike.
#[tokio::test]
async fn forbidden_check_targets_are_refused_naming_the_field() {
    let stack = Stack::start_with(|s| {
        s.health.targets = Arc::new(orchestrator::registry::check_targets::CheckTargets {
            hosts: vec!["allowed.example".into()],
            networks: vec!["10.1.0.0/16".parse().unwrap()],
            nats_subjects: vec!["probe.>".into()],
        })
    })
    .await;
    let with_checks = |address: &str, checks: Value| json!({"id": "t-1", "name": "target", "address": address, "port": 8080, "checks": checks});
    let refused = [
        ("10.0.0.5", json!([{"kind": "http", "url": "http://169.254.169.254/latest/meta-data/"}]), "checks[0].url"),
        ("169.254.169.254", json!([{"kind": "http", "url": "/latest/meta-data/"}]), "checks[0].url"),
        ("10.0.0.5", json!([{"kind": "http", "url": "http://10.0.0.5:9000/admin"}]), "checks[0].url"),
        ("10.0.0.5", json!([{"kind": "http", "url": "http://internal.example/"}]), "checks[0].url"),
        ("10.0.0.5", json!([{"kind": "tcp"}, {"kind": "tcp", "id": "scan", "port": 22}]), "checks[1].port"),
        ("10.0.0.5", json!([{"kind": "tcp", "address": "10.2.0.1"}]), "checks[0].address"),
        ("10.0.0.5", json!([{"kind": "nats", "subject": "$JS.API.STREAM.DELETE.ORCH_EVENTS"}]), "checks[0].subject"),
        ("10.0.0.5", json!([{"kind": "nats", "subject": "orch.req.lifecycle.down"}]), "checks[0].subject"),
    ];
    for (address, checks, field) in refused {
        let r = call(&stack, "POST", "/api/v1/services", Some(with_checks(address, checks.clone()))).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some(field));
        let (code, reply) = stack.request("register", &with_checks(address, checks).to_string()).await;
        assert_eq!(code.as_deref(), Some("400"), "{reply}");
        assert_eq!(reply["error"]["code"], "validation_failed", "{reply}");
        assert_eq!(reply["error"]["field"], field, "{reply}");
    }
    // What the operator allowed, and the instance's own address and port, pass.
    register(
        &stack,
        with_checks(
            "10.0.0.5",
            json!([
                {"kind": "http", "url": "http://10.0.0.5:8080/health", "initial_status": "passing", "interval": "1h"},
                {"kind": "http", "id": "dep", "url": "https://allowed.example/", "interval": "1h"},
                {"kind": "tcp", "id": "db", "address": "10.1.2.3", "port": 5432, "interval": "1h"},
                {"kind": "nats", "id": "probe", "subject": "probe.web", "interval": "1h"},
                {"kind": "nats", "id": "srv", "interval": "1h"}
            ]),
        ),
    )
    .await;
    // Adding a check to a registered instance takes the same rules.
    let r = call(
        &stack,
        "PUT",
        "/api/v1/instances/t-1/checks/meta",
        Some(json!({"kind": "tcp", "address": "169.254.169.254"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_failed", Some("checks[5].address"));
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 1);
}

/// A check's credential is sent to its target, also after a restart (it is stored apart), and
/// shown nowhere: not in the instance's view, its events or the NATS reply.
#[tokio::test]
async fn check_credentials_are_sent_but_never_shown() {
    use std::sync::atomic::AtomicUsize;
    let (with_secret, without) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (good, bad) = (with_secret.clone(), without.clone());
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let authorized = headers.get("authorization").is_some_and(|v| v == "Bearer s3cret-value");
            if authorized {
                good.fetch_add(1, Ordering::SeqCst)
            } else {
                bad.fetch_add(1, Ordering::SeqCst)
            };
            async move { if authorized { StatusCode::OK } else { StatusCode::UNAUTHORIZED } }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut stack = Stack::start().await;
    let registration = json!({"id": "s-1", "name": "secured", "address": "127.0.0.1", "port": port,
        "checks": [{"kind": "http", "url": "/health", "interval": "200ms",
                    "headers": {"Authorization": "Bearer s3cret-value", "X-Probe": "1"}}]});
    let (code, reply) = stack.request("register", &registration.to_string()).await;
    assert_eq!(code, None, "{reply}");
    wait_check_statuses(&stack, "s-1", &["passing"]).await;

    let (_, view) = call(&stack, "GET", "/api/v1/services/s-1", None).await;
    let events = stack.wait_events(1, "the registration", |e| e["subject"] == "s-1").await;
    for shown in [reply.to_string(), view.to_string(), serde_json::to_string(&events).unwrap()] {
        assert!(!shown.contains("s3cret"), "a credential is shown: {shown}");
    }
    assert!(view.to_string().contains("<redacted>"), "{view}");

    // After a restart the checks are loaded from PostgreSQL: the credential is still sent.
    stack.stop_orchestrator().await;
    let before = with_secret.load(Ordering::SeqCst);
    stack.start_orchestrator().await;
    eventually(Duration::from_secs(20), "a check run after the restart", || async {
        (with_secret.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
    assert_eq!(without.load(Ordering::SeqCst), 0, "every run sent the credential");
    let (_, view) = call(&stack, "GET", "/api/v1/services/s-1", None).await;
    assert!(!view.to_string().contains("s3cret"), "{view}");
}

#[tokio::test]
async fn flapping_instance_is_damped_until_it_settles() {
    let stack = Stack::start_with(|s| {
        s.health.flap_threshold = 2;
        s.health.flap_window = Duration::from_secs(3);
    })
    .await;
    let target = Target::start().await;
    register(
        &stack,
        json!({"id": "f-1", "name": "flappy", "address": "127.0.0.1", "port": target.port,
               "checks": [{"kind": "http", "url": target.url(), "interval": "100ms"}]}),
    )
    .await;
    wait_check_statuses(&stack, "f-1", &["passing"]).await;
    // Each answer is held until the check has seen it (its change is in the history, damped or
    // not), so every flip counts however slowly the machine runs the checks.
    let check_changes = || async {
        let (_, history) = call(&stack, "GET", "/api/v1/instances/f-1/health/history?limit=1000", None).await;
        history["items"].as_array().unwrap().iter().filter(|e| e["level"] == "check").count()
    };
    let before = check_changes().await;
    for (flips, code) in [500, 200, 500, 200, 500, 200].into_iter().enumerate() {
        target.answer(code);
        eventually(Duration::from_secs(20), "the check sees the new answer", || async {
            (check_changes().await > before + flips).then_some(())
        })
        .await;
    }
    let started = stack.wait_events(1, "flapping", |e| e["type"] == "io.orch.health.flapping_started.v1").await;
    assert_eq!(started[0]["subject"], "f-1");
    let instance = health_of(&stack, "f-1").await;
    assert!(instance["flapping_since"].is_string(), "visible in the API: {instance}");
    // Damped: far fewer instance events than changes; all changes are in the history.
    let changes = events_of(&stack, "io.orch.health.instance_changed.v1", "f-1").await.len();
    let (_, history) = call(&stack, "GET", "/api/v1/instances/f-1/health/history?limit=1000", None).await;
    let items = history["items"].as_array().unwrap();
    let damped = items.iter().filter(|e| e["damped"] == true && e["level"] == "instance").count();
    assert!(damped >= 2, "{history}");
    assert!(changes <= 2, "at most the changes before flapping started, got {changes}");
    // Stable for a whole window: flapping ends with the settled health.
    let stopped = eventually(Duration::from_secs(20), "flapping stops", || async {
        events_of(&stack, "io.orch.health.flapping_stopped.v1", "f-1").await.into_iter().next()
    })
    .await;
    assert_eq!(stopped["data"]["instance"]["health"], "passing");
    assert!(health_of(&stack, "f-1").await["flapping_since"].is_null());
}

#[tokio::test]
async fn maintenance_hides_from_discovery_without_deregistering() {
    let stack = Stack::start().await;
    for id in ["m-1", "m-2"] {
        register(&stack, json!({"id": id, "name": "api", "address": "127.0.0.1", "port": 80})).await;
    }
    assert_eq!(discovered(&stack).await, ["m-1", "m-2"]);
    let (status, reply) =
        call(&stack, "PUT", "/api/v1/instances/m-1/maintenance", Some(json!({"reason": "kernel upgrade"}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["instance"]["maintenance"]["reason"], "kernel upgrade");
    assert_eq!(discovered(&stack).await, ["m-2"]);
    let (_, body) = call(&stack, "GET", "/api/v1/services/api/health", None).await;
    assert_eq!(body["counts"]["maintenance"], 1, "{body}");

    // The whole service, over NATS.
    let (code, reply) = stack
        .request_on("health", "maintenance", r#"{"service": "api", "enabled": true, "reason": "migration"}"#)
        .await;
    assert_eq!(code, None, "{reply}");
    assert!(discovered(&stack).await.is_empty());
    let (_, system) = call(&stack, "GET", "/api/v1/health", None).await;
    assert_eq!(system["services_in_maintenance"], json!(["api"]), "{system}");
    stack.request_on("health", "maintenance", r#"{"service": "api", "enabled": false}"#).await;
    call(&stack, "DELETE", "/api/v1/instances/m-1/maintenance", None).await;
    assert_eq!(discovered(&stack).await, ["m-1", "m-2"]);
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 2, "nothing was deregistered");
    // Events reach the stream through the outbox relay, a moment after the commit: wait for them.
    let is_exit = |e: &Value| e["type"] == "io.orch.health.maintenance_exited.v1";
    stack.wait_events(2, "both maintenance exits", is_exit).await;
    let events = stack.events().await;
    let mut reasons: Vec<&str> = of_type(&events, "io.orch.health.maintenance_entered.v1")
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    // An instance's and its service's events come from different writer shards, which the relay
    // may publish in either order (docs/protocol.md §8): compare them as a set.
    reasons.sort();
    assert_eq!(reasons, ["kernel upgrade", "migration"]);
    assert_eq!(of_type(&events, "io.orch.health.maintenance_exited.v1").len(), 2);
}

#[tokio::test]
async fn instances_critical_too_long_are_deregistered_whatever_registered_them() {
    let stack = Stack::start_with(|s| s.health.deregister_critical_after = Duration::from_secs(1)).await;
    let closed = orch_testkit::free_port();
    // Registered over NATS with a check that can never pass; another one in maintenance stays.
    let body = json!({"id": "d-1", "name": "doomed", "address": "127.0.0.1", "port": closed,
                      "checks": [{"kind": "tcp", "interval": "200ms"}]});
    let (code, reply) = stack.request("register", &body.to_string()).await;
    assert_eq!(code, None, "{reply}");
    let mut kept = body.clone();
    kept["id"] = json!("d-2");
    register(&stack, kept).await;
    call(&stack, "PUT", "/api/v1/instances/d-2/maintenance", Some(json!({"reason": "keep"}))).await;
    let gone = stack.wait_events(1, "deregistered", |e| e["type"] == "io.orch.registry.deregistered.v1").await;
    assert_eq!((&gone[0]["subject"], &gone[0]["data"]["reason"]), (&json!("d-1"), &json!("critical_too_long")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.count("SELECT count(*) FROM instances WHERE id = 'd-2'").await, 1, "maintenance protects");
}

#[tokio::test]
async fn system_health_follows_the_critical_services() {
    let stack = Stack::start_with(|s| s.health.critical_services = vec!["db".into()]).await;
    let (status, body) = system(&stack).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "db has no instance: {body}");
    assert_eq!(body["critical_services_down"], json!(["db"]));
    // For pages and scripts that read the body: the same report under 200.
    let (status, same) = call(&stack, "GET", "/api/v1/health?status_codes=false", None).await;
    assert_eq!((status, &same["state"]), (StatusCode::OK, &json!("critical")), "{same}");
    let bad = call(&stack, "GET", "/api/v1/health?status_codes=maybe", None).await;
    common::http::assert_error(&bad, StatusCode::BAD_REQUEST, "validation_failed", Some("status_codes"));
    register(&stack, json!({"id": "db-1", "name": "db", "address": "127.0.0.1", "port": 5432})).await;
    eventually(Duration::from_secs(10), "system healthy", || async {
        (system(&stack).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    // A non-critical service down only degrades the system.
    let closed = orch_testkit::free_port();
    register(
        &stack,
        json!({"id": "w-1", "name": "web", "address": "127.0.0.1", "port": closed,
               "checks": [{"kind": "tcp", "interval": "200ms", "initial_status": "passing"}]}),
    )
    .await;
    eventually(Duration::from_secs(10), "system degraded", || async {
        (system(&stack).await.0 == StatusCode::TOO_MANY_REQUESTS).then_some(())
    })
    .await;
    // The events reach the stream through the outbox relay, a moment after the commit.
    stack.wait_events(3, "three system changes", |e| e["type"] == "io.orch.health.system_changed.v1").await;
    let events = stack.events().await;
    let states: Vec<&str> = of_type(&events, "io.orch.health.system_changed.v1")
        .iter()
        .map(|e| e["data"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["critical", "healthy", "degraded"]);
    let (code, reply) = stack.request_on("health", "system", "{}").await;
    assert_eq!((code, &reply["state"]), (None, &json!("degraded")));
    assert_eq!(reply["checker"]["lagging"], false, "the same body as HTTP: {reply}");
    let (code, reply) = stack.request_on("health", "service", r#"{"name": "web"}"#).await;
    assert_eq!((code, &reply["state"]), (None, &json!("critical")), "{reply}");
    assert_eq!(reply["instances"][0]["id"], "w-1", "the same body as HTTP: {reply}");
}

#[tokio::test]
async fn checker_says_so_when_it_cannot_keep_up() {
    // One run at a time, and runs that take longer than the schedule allows: the checker must
    // report lagging (event, metric, system health) rather than silently check less often.
    let stack = Stack::start_with(|s| {
        s.health.concurrency = 1;
        s.health.max_drift = Duration::from_millis(50);
    })
    .await;
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            "slow but fine"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for i in 0..10 {
        register(
            &stack,
            json!({"id": format!("s-{i}"), "name": "slow", "address": "127.0.0.1", "port": port,
                   "checks": [{"kind": "http", "url": "/slow", "interval": "200ms", "timeout": "150ms"}]}),
        )
        .await;
    }
    let lagging = stack.wait_events(1, "lagging", |e| e["type"] == "io.orch.system.checker_lagging.v1").await;
    assert!(lagging[0]["data"]["drift_p99_ms"].as_f64().unwrap() > 50.0, "{}", lagging[0]);
    assert_eq!(lagging[0]["data"]["checks"], 10);
    let (_, body) = system(&stack).await;
    assert_eq!(body["checker"]["lagging"], true, "{body}");
    let (_, metrics) = call(&stack, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("orch_checker_lagging 1"), "{metrics}");
    assert!(metrics.contains("orch_checker_drift_seconds_bucket"), "drift is exported: {metrics}");

    // With the checks gone, it keeps its schedule again and says that too.
    for i in 0..10 {
        call(&stack, "DELETE", &format!("/api/v1/services/s-{i}"), None).await;
    }
    stack.wait_events(1, "recovered", |e| e["type"] == "io.orch.system.checker_recovered.v1").await;
}
