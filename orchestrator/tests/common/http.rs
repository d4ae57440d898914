//! Driving the HTTP API in-process, through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::Stack;

pub async fn call(stack: &Stack, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_raw(stack, method, uri, body.map(|b| b.to_string()), "application/json", &[]).await
}

pub async fn call_raw(
    stack: &Stack,
    method: &str,
    uri: &str,
    body: Option<String>,
    content_type: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    call_running(stack.running(), method, uri, body, content_type, headers).await
}

/// [`call_raw`] on an orchestrator started without a [`Stack`].
pub async fn call_running(
    running: &orchestrator::Running,
    method: &str,
    uri: &str,
    body: Option<String>,
    content_type: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", content_type);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let response = running.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["error"]["code"], code, "{}", result.1);
    if let Some(field) = field {
        assert_eq!(result.1["error"]["field"], field, "{}", result.1);
    }
    assert!(result.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}
