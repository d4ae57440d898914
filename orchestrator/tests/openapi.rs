//! The OpenAPI document of the HTTP API against the router that serves it: every documented
//! operation is routed and every other method on a documented path answers `405`; no route is
//! added outside the documented registrations; the document validates against the OpenAPI 3.1
//! specification (with `openapi-spec-validator`, from `ORCH_OPENAPI_VALIDATOR`); and the committed
//! copy `docs/openapi.json`, from which the dashboard's types are generated, is the served document.

mod common;

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::Stack;
use common::http::call_raw;
use serde_json::Value;
use tower::ServiceExt;

/// The methods a path can be asked with. CONNECT is left out: axum cannot route it.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"];

/// The served document, checked to be JSON under `application/json`.
async fn served_document(stack: &Stack) -> Value {
    let request = Request::get("/api/v1/openapi.json").body(Body::empty()).unwrap();
    let response = stack.running().router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// `template` with each `{placeholder}` replaced by a valid value of its kind.
#[track_caller]
fn fill(template: &str) -> String {
    let mut path = template.to_string();
    for (placeholder, value) in [
        ("{id}", "web-1"),
        ("{check}", "http"),
        ("{name}", "web"),
        ("{service}", "web"),
        ("{version}", "1"),
        ("{key}", "web.db"),
        ("{prefix}", "web"),
    ] {
        path = path.replace(placeholder, value);
    }
    assert!(!path.contains('{'), "a placeholder of {template} has no test value");
    path
}

/// A request body the operation takes (content type and text); invalid where a valid one would
/// change more than the test needs, since only the routing is under test.
fn body_for(operation: &Value) -> (String, Option<String>) {
    let content = &operation["requestBody"]["content"];
    if content.get("application/json").is_some() {
        ("application/json".into(), Some("{}".into()))
    } else if let Some(content_type) = content.as_object().and_then(|c| c.keys().next()) {
        (content_type.clone(), Some("[not a manifest".into()))
    } else {
        ("application/json".into(), None)
    }
}

/// True for the answer of the no-route fallback (a handler's own 404 names what it did not find).
fn no_route(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND && body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route for "))
}

/// The operations of a path item, as (upper-case method, operation).
fn operations(item: &Value) -> Vec<(String, &Value)> {
    item.as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| METHODS.contains(&key.to_uppercase().as_str()))
        .map(|(method, operation)| (method.to_uppercase(), operation))
        .collect()
}

#[tokio::test]
async fn document_and_router_agree() {
    let stack = Stack::start().await;
    let doc = served_document(&stack).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi {version}");

    // The check below can tell the fallback from a handler.
    let (status, body) = call_raw(&stack, "GET", "/api/v1/nothing", None, "application/json", &[]).await;
    assert!(no_route(status, &body), "{status} {body}");

    let paths = doc["paths"].as_object().unwrap();
    for path in ["/api/v1/services", "/api/v1/stack", "/api/v1/openapi.json", "/healthz", "/readyz", "/metrics"] {
        assert!(paths.contains_key(path), "{path} is not in the document");
    }
    for (template, item) in paths {
        let path = fill(template);
        let documented = operations(item);
        for (method, operation) in &documented {
            let (content_type, body) = body_for(operation);
            let (status, reply) = call_raw(&stack, method, &path, body, &content_type, &[]).await;
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !no_route(status, &reply),
                "{method} {template} is documented but not routed: {status} {reply}"
            );
        }
        let allowed: Vec<&str> = documented.iter().map(|(m, _)| m.as_str()).collect();
        for method in METHODS {
            // axum answers HEAD with the GET handler.
            if allowed.contains(&method) || (method == "HEAD" && allowed.contains(&"GET")) {
                continue;
            }
            let (status, reply) = call_raw(&stack, method, &path, None, "application/json", &[]).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {template} is not documented: {reply}");
            if method != "HEAD" {
                assert_eq!(reply["error"]["code"], "method_not_allowed", "{method} {template}");
            }
        }
    }
}

/// Calls that add routes to an axum router. In `src/http`, routes are added only through
/// `routes!` (`OpenApiRouter::routes`), which documents them.
const ROUTE_CALLS: [&str; 4] = [".route(", ".route_service(", ".nest_service(", ".fallback_service("];

/// Routes allowed outside the document, each with why: (file under `src/http`, text of the call).
/// None: the dashboard's pages are served by the router's fallback, not by a route.
const UNDOCUMENTED: [(&str, &str); 0] = [];

#[test]
fn routes_are_added_only_through_the_document() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut offenders = Vec::new();
    let mut files = vec![dir.clone()];
    while let Some(entry) = files.pop() {
        if entry.is_dir() {
            files.extend(std::fs::read_dir(&entry).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if entry.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = entry.strip_prefix(&dir).unwrap().display().to_string();
        let text = std::fs::read_to_string(&entry).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.trim();
            if code.starts_with("//") || !ROUTE_CALLS.iter().any(|call| code.contains(call)) {
                continue;
            }
            if !UNDOCUMENTED.iter().any(|(file, call)| *file == name && code.contains(call)) {
                offenders.push(format!("src/http/{name}:{}: {code}", number + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes added outside `routes!`, so missing from the OpenAPI document (annotate the handler with \
         #[utoipa::path] and register it with routes!):\n{}",
        offenders.join("\n")
    );
}

/// The rule of the access roles: reads need a viewer, changes an operator, replacing or removing
/// the stack (or rolling it back) an admin; probes, metrics and this document are public.
fn role_of(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/api/v1/openapi.json" | "/api/v1/hooks/{name}") => None,
        ("PUT", "/api/v1/hooks/{name}/secret") => Some("admin"),
        ("PUT" | "DELETE", "/api/v1/quotas/{name}") => Some("admin"),
        ("PUT" | "DELETE", "/api/v1/config-schemas/{prefix}") => Some("admin"),
        ("PUT" | "DELETE", "/api/v1/stack") => Some("admin"),
        ("POST", "/api/v1/stack/versions/{version}/rollback") => Some("admin"),
        ("PUT", "/api/v1/workflows/{name}") => Some("admin"),
        ("PUT" | "DELETE", "/api/v1/priorities/{service}") => Some("engine"),
        ("GET" | "HEAD", _) => Some("viewer"),
        _ => Some("operator"),
    }
}

/// Runs the validator on `doc`; fails with its output.
#[track_caller]
fn validate(validator: &str, doc: &Value, what: &str) {
    let dir = orch_testkit::TempDir::new("orch-openapi");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let output = std::process::Command::new(validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {validator}: {e}"));
    assert!(
        output.status.success(),
        "{what} is not a valid OpenAPI document ({validator} {}):\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn document_validates_against_openapi_3_1() {
    let validator = std::env::var("ORCH_OPENAPI_VALIDATOR").unwrap_or_else(|_| {
        panic!(
            "ORCH_OPENAPI_VALIDATOR is not set: run the tests through `make test` (scripts/test.sh installs \
             openapi-spec-validator and sets it), or set it to the path of the `openapi-spec-validator` command"
        )
    });
    let stack = Stack::start().await;
    let served = served_document(&stack).await;
    validate(&validator, &served, "the served document");

    // Each operation names the role the authorisation asks of it.
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, operation) in operations(item) {
            match role_of(&method, path) {
                Some(role) => {
                    assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
                    assert_eq!(operation["x-required-role"], role, "{method} {path}");
                    assert!(operation["responses"].get("401").is_some(), "{method} {path} documents its 401");
                }
                None => {
                    assert_eq!(operation["security"], serde_json::json!([]), "{method} {path}");
                    assert!(operation.get("x-required-role").is_none(), "{method} {path}");
                }
            }
        }
    }
    assert_eq!(served["paths"]["/api/v1/stack"]["put"]["x-required-role"], "admin");
    assert_eq!(served["paths"]["/api/v1/stack"]["get"]["x-required-role"], "viewer");
    assert_eq!(served["paths"]["/api/v1/services"]["post"]["x-required-role"], "operator");
}

/// The committed copy of the served document, relative to the repository root. The dashboard's
/// build generates its wire types from it (`dashboard/package.json`, script `types`).
const COMMITTED: &str = "docs/openapi.json";

/// Set to `1`, the test below rewrites [`COMMITTED`] from the served document instead of comparing.
const BLESS: &str = "ORCH_BLESS";

/// `value` with the keys of every object in sorted order, whatever the order of the served
/// document, so the committed file has one stable form.
fn sorted_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(entries.into_iter().map(|(key, value)| (key, sorted_keys(value))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

/// The committed form of a document: sorted keys, two-space indentation, a final newline.
fn committed_form(doc: Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted_keys(doc)).unwrap();
    text.push('\n');
    text
}

/// JSON pointers (`/paths/~1api~1v1~1health/get`) where `a` and `b` differ, at most `limit`.
fn differences(a: &Value, b: &Value, pointer: &str, limit: usize, out: &mut Vec<String>) {
    if out.len() >= limit || a == b {
        return;
    }
    let child = |key: &str| format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => differences(u, v, &child(key), limit, out),
                    _ if out.len() < limit => out.push(child(key)),
                    _ => return,
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differences(u, v, &child(&i.to_string()), limit, out);
            }
        }
        _ => out.push(if pointer.is_empty() { "/".into() } else { pointer.into() }),
    }
}

#[tokio::test]
async fn committed_document_is_the_served_one() {
    let stack = Stack::start().await;
    let served = served_document(&stack).await;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(COMMITTED);
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        std::fs::write(&file, committed_form(served)).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    if text == committed_form(served.clone()) {
        return;
    }
    let committed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut changed = Vec::new();
    differences(&committed, &served, "", 20, &mut changed);
    if changed.is_empty() {
        changed.push("(the same document, written in another form)".into());
    }
    panic!(
        "{COMMITTED} is not the document the orchestrator serves; it differs at:\n  {}\n\
         Regenerate it with `{BLESS}=1 scripts/test.sh -E 'binary(openapi)'`, rebuild the dashboard against it \
         (`scripts/dashboard.sh`: its wire types are generated from {COMMITTED}, and `tsc` then checks the \
         dashboard against them), and commit the file.",
        changed.join("\n  ")
    );
}
