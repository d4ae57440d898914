//! Authentication and roles over the whole router. The routes are not listed by hand: they are
//! read from the OpenAPI document the router itself is built with (`tests/openapi.rs` proves the
//! two agree), so a route added later is covered without touching this test.

mod common;

use axum::http::StatusCode;
use common::Stack;
use common::http::call_raw;
use serde_json::Value;

const ADMIN: &str = "admin-secret-0123456789";
const OPERATOR: &str = "operator-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";
const ENGINE: &str = "engine-secret-0123456789";

async fn stack() -> Stack {
    Stack::start_with(|s| {
        s.http.auth.api_keys = [
            format!("admin:test-admin:{ADMIN}"),
            format!("operator:test-operator:{OPERATOR}"),
            format!("viewer:test-viewer:{VIEWER}"),
            format!("engine:test-engine:{ENGINE}"),
        ]
        .iter()
        .map(|key| key.parse().unwrap())
        .collect();
    })
    .await
}

/// Every (METHOD, path) of the router, with its placeholders filled with valid values.
async fn routes(stack: &Stack) -> Vec<(String, String)> {
    let (status, doc) = call_raw(stack, "GET", "/api/v1/openapi.json", None, "application/json", &[]).await;
    assert_eq!(status, StatusCode::OK, "the document is public");
    let mut routes = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let path = template
            .replace("{id}", "web-1")
            .replace("{service}", "web")
            .replace("{name}", "web")
            .replace("{check}", "ready");
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn send(stack: &Stack, method: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    call_raw(stack, method, path, Some("{}".into()), "application/json", &headers).await
}

fn mutating(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

fn public(path: &str) -> bool {
    (!path.starts_with("/api/") && path != "/metrics") || path == "/api/v1/openapi.json" || webhook_delivery(path)
}

/// `POST /api/v1/hooks/{name}`: signed with the hook's secret instead of a token
/// (tests/workflow_triggers.rs).
fn webhook_delivery(path: &str) -> bool {
    path.starts_with("/api/v1/hooks/") && !path.ends_with("/secret")
}

#[tokio::test]
async fn every_mutating_route_needs_an_operator() {
    let stack = stack().await;
    let routes = routes(&stack).await;
    let writes: Vec<_> = routes.iter().filter(|(m, p)| mutating(m) && !webhook_delivery(p)).collect();
    assert!(writes.len() >= 15, "the router's writes: {writes:?}");
    assert!(writes.contains(&&("POST".to_string(), "/api/v1/services".to_string())));
    for (method, path) in &writes {
        let (status, body) = send(&stack, method, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        let (status, body) = send(&stack, method, path, Some("not-a-known-token-at-all")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token: {body}");
        let (status, body) = send(&stack, method, path, Some(VIEWER)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with a viewer token: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
}

#[tokio::test]
async fn reads_need_a_viewer_and_the_stack_needs_an_admin() {
    let stack = stack().await;
    for (method, path) in routes(&stack).await {
        let (status, _) = send(&stack, &method, &path, None).await;
        if public(&path) {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path} is public");
            continue;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        if method == "GET" {
            let (status, body) = send(&stack, &method, &path, Some(VIEWER)).await;
            assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                "GET {path} as viewer: {body}"
            );
        }
    }
    for method in ["PUT", "DELETE"] {
        let (status, body) = send(&stack, method, "/api/v1/stack", Some(OPERATOR)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} /api/v1/stack as operator: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("admin"), "{body}");
    }
    // An operator passes the check (the answer is then the route's own: here the body is wrong).
    let (status, _) = send(&stack, "POST", "/api/v1/services", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = send(&stack, "GET", "/api/v1/auth/whoami", Some(ADMIN)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"name": "test-admin", "role": "admin", "principal": "key:test-admin"}))
    );
    // Unknown paths are still 404, token or not.
    assert_eq!(send(&stack, "GET", "/api/v1/nothing", None).await.0, StatusCode::NOT_FOUND);
}

/// The production profile refuses an open API and a NATS connection without credentials, unless
/// told `--insecure`. (The server takes both a user and, for the insecure case, anonymous clients.)
#[tokio::test]
async fn production_refuses_an_open_api_or_anonymous_nats_unless_insecure() {
    let nats = orch_testkit::NatsServer::start_with_config(
        r#"
authorization { users = [ { user: orchestrator, password: "orchestrator-secret-0123" } ] }
no_auth_user: orchestrator
"#,
    );
    let database = orch_testkit::fresh_database().await;
    let production = || {
        let mut settings = common::settings(&nats.url(), &database);
        settings.http.profile = orchestrator::http::Profile::Production;
        settings
    };
    let error = orchestrator::start(production()).await.err().expect("refused");
    assert!(format!("{error:#}").contains("--insecure"), "{error:#}");
    let mut insecure = production();
    insecure.http.insecure = true;
    orchestrator::start(insecure).await.expect("starts when told explicitly").shutdown().await;
    let mut with_token = production();
    with_token.http.auth.api_keys = vec![format!("admin:a:{ADMIN}").parse().unwrap()];
    let error = orchestrator::start(with_token.clone()).await.err().expect("refused without NATS credentials");
    assert!(format!("{error:#}").contains("needs NATS credentials"), "{error:#}");
    with_token.nats.credentials = orchestrator::nats::Credentials::UserPassword {
        user: "orchestrator".into(),
        password: "orchestrator-secret-0123".into(),
    };
    orchestrator::start(with_token).await.expect("starts with a token and NATS credentials").shutdown().await;
}

/// A web page cannot drive the API through a visitor's browser, tokens or not: a cross-site form
/// post (`text/plain` posing as JSON, a foreign Origin) and a rebound host name are refused; the
/// API's own origin and clients without an Origin pass.
#[tokio::test]
async fn cross_site_requests_and_rebound_hosts_are_refused() {
    let stack = Stack::start().await;
    let body = Some(r#"{"name":"web","address":"127.0.0.1","port":9000}"#.to_string());
    let own = format!("127.0.0.1:{}", stack.http_port());

    // What a form with enctype="text/plain" sends: no CORS preflight, so it must not parse as JSON.
    let (status, reply) =
        call_raw(&stack, "POST", "/api/v1/services", body.clone(), "text/plain;x=+json", &[("host", &own)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["code"], "malformed_payload", "{reply}");

    let foreign = [("host", own.as_str()), ("origin", "https://attacker.example")];
    let (status, reply) =
        call_raw(&stack, "POST", "/api/v1/services", body.clone(), "application/json", &foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert_eq!(reply["error"]["field"], "origin", "{reply}");
    let (status, reply) = call_raw(&stack, "PUT", "/api/v1/stack", Some("".into()), "application/toml", &foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");

    let rebound = [("host", "attacker.example")];
    let (status, reply) = call_raw(&stack, "GET", "/api/v1/services", None, "application/json", &rebound).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert_eq!(reply["error"]["field"], "host", "{reply}");

    let origin = format!("http://{own}");
    let same = [("host", own.as_str()), ("origin", origin.as_str())];
    let (status, reply) = call_raw(&stack, "POST", "/api/v1/services", body.clone(), "application/json", &same).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, reply) = call_raw(&stack, "POST", "/api/v1/services", body, "application/json", &[]).await;
    assert!(status.is_success(), "a client without Origin: {reply}");
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 2, "only the two allowed registrations");
}

/// `/metrics` is a read like the others: it needs a viewer token once tokens are configured,
/// unless the operator serves it to anyone.
#[tokio::test]
async fn metrics_need_a_viewer_unless_opened() {
    const VIEWER: &str = "viewer:prometheus:viewer-secret-0123456789";
    let stack = Stack::start_with(|s| s.http.auth.api_keys = vec![VIEWER.parse().unwrap()]).await;
    let (status, _) = call_raw(&stack, "GET", "/metrics", None, "text/plain", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = [("authorization", "Bearer viewer-secret-0123456789")];
    let (status, text) = call_raw(&stack, "GET", "/metrics", None, "text/plain", &auth).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.as_str().unwrap().contains("orch_instances_by_health"), "{text}");

    let open = Stack::start_with(|s| {
        s.http.auth.api_keys = vec![VIEWER.parse().unwrap()];
        s.http.auth.metrics_public = true;
    })
    .await;
    let (status, _) = call_raw(&open, "GET", "/metrics", None, "text/plain", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call_raw(&open, "GET", "/api/v1/services", None, "text/plain", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "only /metrics is opened");
}

/// The HTTP server's limits, on a real socket: a client that sends no headers (or half of them)
/// is cut off; a request that takes too long, and one beyond the concurrency limit, answer 503
/// with Retry-After. A request is held in flight by sending its headers and only part of its
/// body, so nothing depends on how fast the machine is.
#[tokio::test]
async fn slow_clients_long_requests_and_saturation_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start_with(|s| {
        s.http.limits = orchestrator::http::server::ServerLimits {
            header_read_timeout: std::time::Duration::from_millis(300),
            request_timeout: std::time::Duration::from_millis(500),
            max_concurrent: 1,
        }
    })
    .await;
    let port = stack.http_port();
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    let closed_by_server = |mut socket: tokio::net::TcpStream| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), socket.read_to_end(&mut buf))
            .await
            .expect("the server closes the connection")
            .ok();
        String::from_utf8_lossy(&buf).to_string()
    };

    // Sends nothing, then half a request line and headers.
    let silent = connect().await.unwrap();
    let mut slow = connect().await.unwrap();
    slow.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    assert_eq!(closed_by_server(silent).await, "");
    let answer = closed_by_server(slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A kept-alive connection that goes idle after its request is closed too: the wait for the
    // next request's headers is the idle timeout.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let answer = closed_by_server(idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK") && !answer.contains("connection: close"), "{answer}");

    // A request whose body never completes holds the only permit, then times out.
    let mut held = connect().await.unwrap();
    held.write_all(
        b"POST /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na",
    )
    .await
    .unwrap();
    let saturated =
        orch_testkit::eventually(std::time::Duration::from_secs(20), "a request refused for saturation", || async {
            let (status, body) =
                tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/api/v1/services").unwrap())
                    .await
                    .unwrap();
            (status == 503).then_some(body)
        })
        .await;
    assert!(saturated.contains("saturated"), "{saturated}");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), held.read(&mut answer))
        .await
        .expect("the held request is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("took longer than 500ms"), "{answer}");
    // The probes are never refused for saturation.
    let (status, _) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/healthz").unwrap()).await.unwrap();
    assert_eq!(status, 200);
}

/// The engine role sets and clears adjustments and reads; it cannot change a policy (pins,
/// bounds, baseline), release the guard, or change anything else.
#[tokio::test]
async fn an_engine_adjusts_priorities_and_nothing_else() {
    let stack = stack().await;
    let bearer = format!("Bearer {ENGINE}");
    let as_engine = |method: &'static str, path: &'static str, body: &'static str| {
        let stack = &stack;
        let bearer = bearer.clone();
        async move {
            call_raw(stack, method, path, Some(body.into()), "application/json", &[("authorization", bearer.as_str())])
                .await
        }
    };
    let (status, body) =
        as_engine("PUT", "/api/v1/priorities/web", r#"{"value": 70, "reason": "load", "source": "engine"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        as_engine("DELETE", "/api/v1/priorities/web", r#"{"reason": "calm", "source": "engine"}"#).await;
    assert!(status.is_success(), "{body}");
    let (status, _) = as_engine("GET", "/api/v1/priorities", "").await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in [
        ("PATCH", "/api/v1/priorities/web/policy"),
        ("POST", "/api/v1/priority-guard/release"),
        ("POST", "/api/v1/services"),
        ("PUT", "/api/v1/stack"),
    ] {
        let (status, body) = as_engine(method, path, "{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }
}
