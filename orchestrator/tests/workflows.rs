//! Workflows against a real orchestrator, NATS and PostgreSQL: definitions stored with versions
//! and refused with their field and line, executions that call a real NATS responder (retried,
//! with a stable idempotency key per attempt), wait, set a priority, skip a step by condition,
//! publish every transition as an event, resume after a restart of the orchestrator without
//! running a completed step again, and can be cancelled.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::http::{call, call_raw};
use common::workflows::{put_workflow, until_ended};
use common::{Stack, eventually};
use futures::StreamExt;
use serde_json::json;

const REMEDIATE: &str = r#"
[workflow]
name = "remediate"
queue = "remediation"
priority = 70

[inputs.service]
required = true

[inputs.crashes]
default = 1

[steps.check]
kind = "call"
subject = "orch.call.check"
body = { service = "${{ inputs.service }}" }
retry = { attempts = 3, backoff = "100ms" }

[steps.pause]
kind = "wait"
duration = "200ms"
needs = ["check"]

[steps.raise]
kind = "set_priority"
needs = ["pause"]
when = 'steps.check.output.code == 200'
service = "${{ inputs.service }}"
value = 80
reason = "checked after ${{ inputs.crashes }} crashes"

[steps.escalate]
kind = "wait"
duration = "1s"
needs = ["check"]
when = "inputs.crashes > 5"
"#;

/// Answers `subject`: an error reply for the first `failures` requests, then `{"code": 200}`;
/// records each request's idempotency key.
async fn responder(stack: &Stack, subject: &str, failures: usize) -> Arc<Mutex<Vec<String>>> {
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut sub = stack.client.subscribe(subject.to_string()).await.unwrap();
    stack.client.flush().await.unwrap();
    let (client, seen) = (stack.client.clone(), keys.clone());
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let key = message.headers.as_ref().and_then(|h| h.get("Orch-Idempotency-Key")).map(|v| v.to_string());
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(key.unwrap_or_default());
                seen.len()
            };
            let Some(reply) = message.reply else { continue };
            if n <= failures {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Service-Error-Code", "503");
                headers.insert("Nats-Service-Error", "not ready");
                let _ = client.publish_with_headers(reply, headers, "{\"error\":\"not ready\"}".into()).await;
            } else {
                let _ = client.publish(reply, "{\"code\": 200}".into()).await;
            }
        }
    });
    keys
}

#[tokio::test]
async fn an_execution_calls_retries_waits_sets_a_priority_and_skips_by_condition() {
    let stack = Stack::start().await;
    let keys = responder(&stack, "orch.call.check", 1).await;

    let (status, stored) = put_workflow(&stack, "remediate", REMEDIATE).await;
    assert_eq!((status, stored["version"].as_i64()), (StatusCode::CREATED, Some(1)), "{stored}");
    let (status, again) = put_workflow(&stack, "remediate", REMEDIATE).await;
    assert_eq!((status, again["created"].as_bool(), again["version"].as_i64()), (StatusCode::OK, Some(false), Some(1)));

    let body = json!({ "inputs": { "service": "billing", "crashes": 3 } });
    let (status, queued) = call(&stack, "POST", "/api/v1/workflows/remediate/executions", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let id = queued["id"].as_str().unwrap().to_string();
    let view = until_ended(&stack, &id).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let steps = &view["steps"];
    assert_eq!((steps["check"]["status"].as_str(), steps["check"]["attempt"].as_u64()), (Some("succeeded"), Some(2)));
    assert_eq!(steps["check"]["output"], json!({ "code": 200 }));
    assert_eq!(steps["pause"]["status"], "succeeded");
    assert_eq!(steps["raise"]["status"], "succeeded");
    assert_eq!(steps["escalate"]["status"], "skipped", "crashes = 3 is not > 5");
    assert_eq!(view["inputs"], json!({ "service": "billing", "crashes": 3 }));

    // One key per attempt, the same on every delivery of that attempt.
    assert_eq!(*keys.lock().unwrap(), [format!("{id}:check:1"), format!("{id}:check:2")]);
    // The step's effect, made under the guardrails and recorded as the workflow's.
    let (_, priority) = call(&stack, "GET", "/api/v1/priorities/billing?history=1", None).await;
    assert_eq!(priority["priority"]["effective"], 80, "{priority}");
    assert_eq!(priority["history"][0]["principal"], "workflow:remediate", "{priority}");
    assert_eq!(priority["history"][0]["reason"], "checked after 3 crashes");

    // Every transition is an event on orch.evt.workflow.remediate.*, in order.
    let events = stack
        .wait_events(11, "the workflow's events", |e| {
            e["type"].as_str().is_some_and(|t| t.starts_with("io.orch.workflow.")) && e["subject"] == id.as_str()
        })
        .await;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let ty = e["type"].as_str().unwrap().trim_start_matches("io.orch.workflow.").trim_end_matches(".v1");
            match e["data"]["step"].as_str() {
                Some(step) => format!("{ty} {step}"),
                None => ty.to_string(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "step_started check",
            "step_retrying check",
            "step_started check",
            "step_succeeded check",
            "step_skipped escalate",
            "step_started pause",
            "step_succeeded pause",
            "step_started raise",
            "step_succeeded raise",
            "succeeded",
        ]
    );
}

#[tokio::test]
async fn bad_definitions_and_inputs_are_refused_naming_the_field() {
    let stack = Stack::start().await;
    let bad = "[workflow]\nname = \"broken\"\n\n[steps.a]\nkind = \"wait\"\nneeds = [\"b\"]\nduration = \"1s\"\n\n[steps.b]\nkind = \"wait\"\nneeds = [\"a\"]\nduration = \"1s\"\n";
    let (status, error) = put_workflow(&stack, "broken", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "validation_failed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 4: steps.a.needs: the steps need each other: a -> b -> a"), "{message}");
    let (status, error) = put_workflow(&stack, "other-name", REMEDIATE).await;
    assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("workflow.name")));
    let (status, error) = put_workflow(
        &stack,
        "remediate",
        "[workflow]\nname = \"remediate\"\n[steps.x]\nkind = \"job\"\nargs = [\"-l\"]\n",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]["message"].as_str().unwrap().contains("steps.x.command: a job step needs `command`"),
        "{error}"
    );

    put_workflow(&stack, "remediate", REMEDIATE).await;
    for (body, field) in [
        (json!({ "inputs": {} }), "inputs.service"),
        (json!({ "inputs": { "service": "x", "colour": "red" } }), "inputs.colour"),
        (json!({ "inputs": [1] }), "inputs"),
    ] {
        let (status, error) = call(&stack, "POST", "/api/v1/workflows/remediate/executions", Some(body)).await;
        assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{error}");
    }
    let body = Some(r#"{"inputs": {"service": "x"}}"#.to_string());
    let (status, error) =
        call_raw(&stack, "POST", "/api/v1/workflows/remediate/executions", body, "text/plain", &[]).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_payload")),
        "JSON only"
    );
    let (status, _) = call(&stack, "POST", "/api/v1/workflows/nothing/executions", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = call(&stack, "GET", "/api/v1/executions/not-a-uuid", None).await;
    assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));
    assert_eq!(stack.count("SELECT count(*) FROM workflow_executions").await, 0, "nothing refused was stored");
}

/// The orchestrator stops in the middle of an execution (as in an upgrade or a failover): the
/// next one resumes it. The completed call is not made again; the wait goes on from where it
/// was; the execution ends as if nothing happened.
#[tokio::test]
async fn an_execution_resumes_after_a_restart_without_running_a_completed_step_again() {
    let mut stack = Stack::start().await;
    let keys = responder(&stack, "orch.call.first", 0).await;
    let text = r#"
[workflow]
name = "slow"

[steps.first]
kind = "call"
subject = "orch.call.first"

[steps.pause]
kind = "wait"
duration = "3s"
needs = ["first"]

[steps.last]
kind = "wait"
duration = "10ms"
needs = ["pause"]
"#;
    put_workflow(&stack, "slow", text).await;
    let (_, queued) = call(&stack, "POST", "/api/v1/workflows/slow/executions", None).await;
    let id = queued["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "the pause under way", || async {
        let (_, view) = call(&stack, "GET", &format!("/api/v1/executions/{id}"), None).await;
        (view["steps"]["pause"]["status"] == "running").then_some(())
    })
    .await;
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let view = until_ended(&stack, &id).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["steps"]["pause"]["attempt"], 1, "the wait went on, it did not start over");
    assert_eq!(keys.lock().unwrap().len(), 1, "the completed call was not made again");
}

#[tokio::test]
async fn an_execution_under_way_can_be_cancelled_once() {
    let stack = Stack::start().await;
    put_workflow(&stack, "long", "[workflow]\nname = \"long\"\n[steps.sleep]\nkind = \"wait\"\nduration = \"1h\"\n")
        .await;
    let (_, queued) = call(&stack, "POST", "/api/v1/workflows/long/executions", None).await;
    let id = queued["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "running", || async {
        let (_, view) = call(&stack, "GET", &format!("/api/v1/executions/{id}"), None).await;
        (view["status"] == "running").then_some(())
    })
    .await;
    let (status, view) = call(&stack, "POST", &format!("/api/v1/executions/{id}/cancel"), None).await;
    assert_eq!((status, view["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{view}");
    assert_eq!(view["steps"]["sleep"]["status"], "cancelled");
    let (status, error) = call(&stack, "POST", &format!("/api/v1/executions/{id}/cancel"), None).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (_, list) = call(&stack, "GET", "/api/v1/executions?workflow=long", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

/// A schedule firing every second starts one execution per second, each once: the orchestrator
/// is stopped for a while in the middle (as in a failover) and, with `catch_up = "all"`, the
/// seconds it missed are started when it is back, none twice and none lost.
#[tokio::test]
async fn a_schedule_fires_each_second_exactly_once_across_a_restart() {
    let mut stack = Stack::start().await;
    let text = r#"
[workflow]
name = "ticker"

[inputs.label]
required = true

[steps.tick]
kind = "wait"
duration = "10ms"

[[schedule]]
cron = "* * * * * *"
overlap = "allow"
catch_up = "all"
inputs = { label = "every second" }
"#;
    let (status, stored) = put_workflow(&stack, "ticker", text).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let fired = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT fire_at FROM workflow_executions WHERE workflow = 'ticker' AND trigger = 'cron:0' ORDER BY fire_at",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(30), "three firings", || async {
        (fired(stack.pool.clone()).await.len() >= 3).then_some(())
    })
    .await;
    stack.stop_orchestrator().await;
    let before = fired(stack.pool.clone()).await.len();
    // Away for a while: the firings of these seconds are missed, to be caught up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_orchestrator().await;
    let times = eventually(Duration::from_secs(30), "firings after the restart", || async {
        let times = fired(stack.pool.clone()).await;
        (times.len() >= before + 5).then_some(times)
    })
    .await;
    // Stop firing, then look at the whole series: one execution per second, no gap, no double.
    let unscheduled = text.split("[[schedule]]").next().unwrap();
    let (status, _) = put_workflow(&stack, "ticker", unscheduled).await;
    assert_eq!(status, StatusCode::CREATED);
    let times = fired(stack.pool.clone()).await.into_iter().take(times.len()).collect::<Vec<_>>();
    for pair in times.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "consecutive seconds, once each: {times:?}");
    }
    let (_, view) = call(&stack, "GET", "/api/v1/executions?workflow=ticker&limit=1", None).await;
    assert_eq!(view[0]["trigger"], "cron:0");
    assert_eq!(view[0]["inputs"], json!({ "label": "every second" }));
    let succeeded = stack
        .count("SELECT count(*) FROM workflow_executions WHERE workflow = 'ticker' AND status = 'succeeded'")
        .await;
    assert!(succeeded >= times.len() as i64 - 2, "the scheduled executions ran: {succeeded} of {}", times.len());
}

/// The same over NATS: `orch.req.workflow.run|get|list|cancel`, with the usual error replies.
#[tokio::test]
async fn executions_are_started_read_listed_and_cancelled_over_nats() {
    let stack = Stack::start().await;
    put_workflow(&stack, "long", "[workflow]\nname = \"long\"\n[inputs.why]\ndefault = \"test\"\n[steps.sleep]\nkind = \"wait\"\nduration = \"1h\"\n").await;
    let (code, started) = stack.request_on("workflow", "run", r#"{"workflow": "long"}"#).await;
    assert_eq!(code, None, "{started}");
    assert_eq!(started["inputs"], json!({ "why": "test" }));
    let id = started["id"].as_str().unwrap().to_string();
    let (code, view) = stack.request_on("workflow", "get", &json!({ "id": id }).to_string()).await;
    assert_eq!((code, view["workflow"].as_str()), (None, Some("long")));
    let (code, list) = stack.request_on("workflow", "list", "").await;
    assert_eq!((code, list.as_array().map(Vec::len)), (None, Some(1)));
    eventually(Duration::from_secs(30), "running", || async {
        let (_, view) = stack.request_on("workflow", "get", &json!({ "id": id }).to_string()).await;
        (view["status"] == "running").then_some(())
    })
    .await;
    let (code, cancelled) = stack.request_on("workflow", "cancel", &json!({ "id": id }).to_string()).await;
    assert_eq!((code, cancelled["status"].as_str()), (None, Some("cancelled")), "{cancelled}");
    assert_eq!(cancelled["steps"]["sleep"]["status"], "cancelled");

    for (verb, payload, field) in [
        ("run", r#"{"workflow": "Not A Name"}"#, "workflow"),
        ("run", r#"{"workflow": "long", "inputs": {"nope": 1}}"#, "inputs.nope"),
        ("get", r#"{"id": "x"}"#, "id"),
        ("list", r#"{"limit": 0}"#, "limit"),
    ] {
        let (code, error) = stack.request_on("workflow", verb, payload).await;
        assert_eq!(
            (code.as_deref(), error["error"]["field"].as_str()),
            (Some("400"), Some(field)),
            "{verb} {payload}: {error}"
        );
    }
    let (code, _) = stack.request_on("workflow", "run", r#"{"workflow": "ghost"}"#).await;
    assert_eq!(code.as_deref(), Some("404"));
    let (code, error) = stack.request_on("workflow", "teleport", "{}").await;
    assert_eq!((code.as_deref(), error["error"]["code"].as_str()), (Some("404"), Some("unknown_command")));
}

/// The command line stores a definition, runs it with inputs and follows it to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_stores_runs_and_follows_a_workflow() {
    let stack = Stack::start().await;
    let dir = orch_testkit::TempDir::new("orch-workflow-cli");
    let file = dir.path().join("hello.toml");
    std::fs::write(&file, "[workflow]\nname = \"hello\"\n[inputs.who]\nrequired = true\n[steps.pause]\nkind = \"wait\"\nduration = \"10ms\"\n").unwrap();
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).args(args).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, said) =
        tokio::task::block_in_place(|| cli(&["workflow", "put", "-f", file.to_str().unwrap(), "--api-url", &api]));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("stored hello version 1"), "{said}");
    let (code, said) =
        tokio::task::block_in_place(|| cli(&["workflow", "run", "hello", "-i", "who=world", "--api-url", &api]));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("pause") && said.contains("succeeded"), "{said}");
    let (code, said) = tokio::task::block_in_place(|| cli(&["workflow", "run", "hello", "--api-url", &api]));
    assert_eq!(code, Some(2), "a missing required input is refused: {said}");
    let (code, said) =
        tokio::task::block_in_place(|| cli(&["workflow", "list", "--workflow", "hello", "--api-url", &api]));
    assert_eq!(code, Some(0));
    assert_eq!(said.lines().filter(|l| l.contains("succeeded")).count(), 1, "{said}");
}
