//! Helpers of the tests of managed services: manifests of `orch-sleeper` services, the stack as
//! the API shows it, and lifecycle transitions read back from the events stream.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::http::{call, call_raw};
use super::{Stack, eventually};

pub const SLEEPER: &str = env!("CARGO_BIN_EXE_orch-sleeper");

/// A sleeper service listening on `port` after `ready_after`, with a TCP readiness check.
pub fn sleeper(name: &str, port: u16, ready_after: &str, extra: &str) -> String {
    format!(
        r#"
[services.{name}]
command = "{SLEEPER}"
args = ["--ready-after", "{ready_after}"]
port = {port}
readiness = {{ kind = "tcp", interval = "1s" }}
grace_period = "5s"
{extra}
"#
    )
}

/// A sleeper service that says itself when it is ready (`notify = true`): it sends `READY=1` to
/// its `NOTIFY_SOCKET` after `ready_after`, and listens on no port.
pub fn notifier(name: &str, ready_after: &str, extra: &str) -> String {
    format!(
        r#"
[services.{name}]
command = "{SLEEPER}"
args = ["--ready-after", "{ready_after}", "--notify"]
notify = true
grace_period = "5s"
{extra}
"#
    )
}

/// What the embedded agent (node `local`) runs now, as its `status` reply says.
pub async fn agent_status(stack: &Stack) -> Value {
    let reply = stack.client.request(stack.subjects.agent("local", "status"), "{}".into()).await.unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

pub async fn apply(stack: &Stack, manifest: &str) -> Value {
    let (status, reply) =
        call_raw(stack, "PUT", "/api/v1/stack", Some(manifest.to_string()), "application/toml", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    reply
}

/// [`apply`] with an `Authorization` header (`Bearer <token>`).
pub async fn apply_as(stack: &Stack, authorization: &str, manifest: &str) -> Value {
    let headers = [("authorization", authorization)];
    let (status, reply) =
        call_raw(stack, "PUT", "/api/v1/stack", Some(manifest.to_string()), "application/toml", &headers).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    reply
}

pub async fn stack_view(stack: &Stack) -> Value {
    let (status, view) = call(stack, "GET", "/api/v1/stack", None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// The state of each service.
pub fn states(view: &Value) -> std::collections::BTreeMap<String, String> {
    view["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect()
}

pub fn service<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

/// Waits until every listed service is in the given state.
pub async fn wait_for(stack: &Stack, want: &[(&str, &str)]) -> Value {
    let what = format!("services reach {want:?}");
    eventually(Duration::from_secs(30), &what, || async {
        let view = stack_view(stack).await;
        let now = states(&view);
        want.iter().all(|(n, s)| now.get(*n).map(String::as_str) == Some(*s)).then_some(view)
    })
    .await
}

/// Waits until the start-up run has finished and returns its profile.
pub async fn finished_run(stack: &Stack) -> Value {
    eventually(Duration::from_secs(30), "the start-up run finishes", || async {
        let (status, profile) = call(stack, "GET", "/api/v1/stack/profile", None).await;
        (status == StatusCode::OK && profile["finished"] == true).then_some(profile)
    })
    .await
}

/// Lifecycle transitions from the events stream, in order: (service, state, data).
pub async fn transitions(stack: &Stack) -> Vec<(String, String, Value)> {
    stack
        .events()
        .await
        .into_iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("io.orch.lifecycle.")))
        .filter(|e| e["data"]["state"].is_string())
        .map(|e| {
            (
                e["data"]["service"].as_str().unwrap().to_string(),
                e["data"]["state"].as_str().unwrap().to_string(),
                e["data"].clone(),
            )
        })
        .collect()
}

/// Index of the first transition of `service` to `state`.
pub fn at(events: &[(String, String, Value)], service: &str, state: &str) -> usize {
    events
        .iter()
        .position(|(s, st, _)| s == service && st == state)
        .unwrap_or_else(|| panic!("no {state} event for {service} in {:?}", summary(events)))
}

pub fn summary(events: &[(String, String, Value)]) -> Vec<String> {
    events.iter().map(|(s, st, _)| format!("{s}:{st}")).collect()
}

/// Waits until the events stream holds a transition of `service` to `state`.
pub async fn wait_event(stack: &Stack, service: &str, state: &str) -> Vec<(String, String, Value)> {
    eventually(Duration::from_secs(30), &format!("{service} becomes {state}"), || async {
        let events = transitions(stack).await;
        events.iter().any(|(s, st, _)| s == service && st == state).then_some(events)
    })
    .await
}

pub fn pid(view: &Value, name: &str) -> u32 {
    service(view, name)["pid"].as_u64().unwrap_or_else(|| panic!("{name} has no pid: {view}")) as u32
}

/// Like [`wait_event`], counting only transitions after the first `skip`.
pub async fn wait_event_after(stack: &Stack, skip: usize, service: &str, state: &str) -> Vec<(String, String, Value)> {
    eventually(Duration::from_secs(30), &format!("{service} becomes {state}"), || async {
        let events: Vec<_> = transitions(stack).await.into_iter().skip(skip).collect();
        events.iter().any(|(s, st, _)| s == service && st == state).then_some(events)
    })
    .await
}
