//! Helpers of the workflow tests: store a definition, start an execution, read it, and wait for
//! a step or the execution to reach a state.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::http::{call, call_raw};
use super::{Stack, eventually};

/// `PUT /api/v1/workflows/{name}` with the TOML `text`: the status and the answer.
pub async fn put_workflow(stack: &Stack, name: &str, text: &str) -> (StatusCode, Value) {
    call_raw(stack, "PUT", &format!("/api/v1/workflows/{name}"), Some(text.to_string()), "application/toml", &[]).await
}

/// [`put_workflow`], which must succeed.
pub async fn store_workflow(stack: &Stack, name: &str, text: &str) {
    let (status, stored) = put_workflow(stack, name, text).await;
    assert!(status.is_success(), "{status}: {stored}");
}

/// Starts an execution of `name` with `inputs`; its id.
pub async fn start_execution(stack: &Stack, name: &str, inputs: Value) -> String {
    let body = json!({ "inputs": inputs });
    let (status, queued) = call(stack, "POST", &format!("/api/v1/workflows/{name}/executions"), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    queued["id"].as_str().unwrap().to_string()
}

/// `GET /api/v1/executions/{id}`.
pub async fn execution(stack: &Stack, id: &str) -> Value {
    call(stack, "GET", &format!("/api/v1/executions/{id}"), None).await.1
}

/// Waits until `step` of execution `id` runs.
pub async fn until_step_running(stack: &Stack, id: &str, step: &str) {
    eventually(Duration::from_secs(30), &format!("step {step} running"), || async {
        (execution(stack, id).await["steps"][step]["status"] == "running").then_some(())
    })
    .await;
}

/// Waits until execution `id` is `status`; the execution then.
pub async fn until_status(stack: &Stack, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(30), &format!("{id} {status}"), || async {
        let view = execution(stack, id).await;
        (view["status"] == status).then_some(view)
    })
    .await
}

/// Waits until execution `id` has ended (succeeded, failed or cancelled); the execution then.
pub async fn until_ended(stack: &Stack, id: &str) -> Value {
    eventually(Duration::from_secs(30), "the execution ended", || async {
        let view = execution(stack, id).await;
        matches!(view["status"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(view)
    })
    .await
}
