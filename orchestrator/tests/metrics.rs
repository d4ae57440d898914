//! `/metrics` after real traffic is valid exposition format, checked by the reference parser of
//! the Prometheus project's Python client (strict OpenMetrics), and carries the series operators
//! need: commands and their latency, instances by health, checker drift, outbox lag, consumer
//! pending counts, priority changes, HTTP requests by route and status.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use common::Stack;
use common::http::{call, call_raw};
use serde_json::{Value, json};

/// Parses the text with `prometheus_client.openmetrics.parser` and prints, per sample, the family
/// name, its type, the sample name and its labels as JSON: the test then reads what the parser
/// understood, not what the text looks like.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.append({"family": family.name, "type": family.type, "name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps(out))
"#;

fn tools_python() -> String {
    std::env::var("ORCH_TOOLS_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ORCH_TOOLS_PYTHON is not set: run the tests with `make test` (scripts/test.sh installs the Python \
             test tools into the project's venv and sets it), or point it at a Python with prometheus-client"
        )
    })
}

fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(tools_python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the metrics parser");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the exposition does not parse:\n{}\n---\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

#[tokio::test]
async fn metrics_parse_and_cover_the_operators_questions() {
    let stack = Stack::start().await;
    let registration = json!({"id": "web-1", "name": "web", "address": "10.0.0.1", "port": 80});
    assert_eq!(call(&stack, "POST", "/api/v1/services", Some(registration)).await.0, StatusCode::CREATED);
    assert_eq!(call(&stack, "GET", "/api/v1/services/nope", None).await.0, StatusCode::NOT_FOUND);
    let priority = json!({"value": 70, "reason": "test", "source": "metrics-test"});
    assert_eq!(call(&stack, "PUT", "/api/v1/priorities/web", Some(priority)).await.0, StatusCode::OK);

    let (status, text) = call_raw(&stack, "GET", "/metrics", None, "text/plain", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let samples = parse(text.as_str().expect("text"));

    let find = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v)).cloned()
    };
    let value = |name: &str, labels: &[(&str, &str)]| {
        find(name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?}"))["value"].as_f64().unwrap()
    };
    assert!(value("orch_commands_total", &[("kind", "register"), ("result", "applied")]) >= 1.0);
    assert!(value("orch_command_seconds_count", &[("kind", "register")]) >= 1.0);
    assert_eq!(value("orch_instances_by_health", &[("health", "passing")]), 1.0);
    assert_eq!(value("orch_instances_by_health", &[("health", "critical")]), 0.0);
    assert!(find("orch_outbox_lag_seconds", &[]).is_some());
    assert!(find("orch_outbox_pending", &[]).is_some());
    assert!(find("orch_consumer_pending", &[("consumer", &stack.subjects.commands_consumer())]).is_some());
    assert!(find("orch_checker_drift_seconds_count", &[]).is_some());
    assert!(value("orch_priority_changes_total", &[("result", "applied")]) >= 1.0);
    let http = |route: &str, status: &str| {
        value("orch_http_requests_total", &[("method", "POST"), ("route", route), ("status", status)])
    };
    assert_eq!(http("/api/v1/services", "201"), 1.0);
    assert_eq!(
        value("orch_http_requests_total", &[("method", "GET"), ("route", "/api/v1/services/{id}"), ("status", "404")]),
        1.0,
        "routes are labelled by their template, not the raw path"
    );
    assert!(
        value("orch_http_request_seconds_count", &[("method", "PUT"), ("route", "/api/v1/priorities/{service}")])
            >= 1.0
    );
    let types: std::collections::BTreeMap<&str, &str> =
        samples.iter().map(|s| (s["family"].as_str().unwrap(), s["type"].as_str().unwrap())).collect();
    assert_eq!(types["orch_command_seconds"], "histogram");
    assert_eq!(types["orch_http_requests"], "counter");
    assert_eq!(types["orch_instances_by_health"], "gauge");
}

#[tokio::test]
async fn requests_carry_an_id() {
    let stack = Stack::start().await;
    let request = axum::http::Request::builder()
        .uri("/api/v1/services")
        .header("x-request-id", "trace-me-1")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(stack.running().router(), request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-1", "a sane id from the caller is kept");
    let request = axum::http::Request::builder()
        .uri("/api/v1/services")
        .header("x-request-id", "has space")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(stack.running().router(), request).await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "an unusable id is replaced by a fresh one: {id}");
}
