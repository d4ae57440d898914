//! The step kinds that wait on something outside the execution, against a real orchestrator,
//! NATS and PostgreSQL: an approval decided over HTTP, NATS and the command line (who decided is
//! kept), an event awaited on the events stream with a filter, a sub-workflow run to its end
//! (its failure and its cancellation follow its parent's step), and maintenance of a service
//! taken on and off by a workflow. Also the schedules and queues read by every client.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::call;
use common::workflows::{execution, start_execution, store_workflow, until_ended, until_step_running};
use common::{Stack, eventually};
use serde_json::{Value, json};

async fn signal(stack: &Stack, id: &str, body: Value) -> (StatusCode, Value) {
    call(stack, "POST", &format!("/api/v1/executions/{id}/signal"), Some(body)).await
}

const DEPLOY: &str = r#"
[workflow]
name = "deploy"

[steps.ask]
kind = "approval"
prompt = "deploy ${{ inputs.version }}?"
timeout = "1h"

[steps.roll]
kind = "wait"
duration = "10ms"
needs = ["ask"]

[inputs.version]
default = "1.2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_waits_for_a_decision_and_keeps_who_made_it() {
    let stack = Stack::start().await;
    store_workflow(&stack, "deploy", DEPLOY).await;

    // Approved over HTTP.
    let id = start_execution(&stack, "deploy", json!({})).await;
    until_step_running(&stack, &id, "ask").await;
    for (body, status, field) in [
        (json!({ "step": "roll", "decision": "approve" }), StatusCode::BAD_REQUEST, Some("step")),
        (json!({ "step": "nope", "decision": "approve" }), StatusCode::NOT_FOUND, Some("step")),
        (json!({ "step": "ask", "decision": "maybe" }), StatusCode::BAD_REQUEST, None),
        (
            json!({ "step": "ask", "decision": "approve", "comment": "x".repeat(2000) }),
            StatusCode::BAD_REQUEST,
            Some("comment"),
        ),
    ] {
        let (got, error) = signal(&stack, &id, body.clone()).await;
        assert_eq!(got, status, "{body}: {error}");
        if field.is_some() {
            assert_eq!(error["error"]["field"].as_str(), field, "{body}: {error}");
        }
    }
    assert_eq!(execution(&stack, &id).await["steps"]["ask"]["status"], "running", "a refused signal decides nothing");
    let (status, decided) =
        signal(&stack, &id, json!({ "step": "ask", "decision": "approve", "comment": "tested in staging" })).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let output = &decided["steps"]["ask"]["output"];
    assert_eq!(output["decision"], "approve", "{decided}");
    assert_eq!(output["comment"], "tested in staging");
    assert!(output["by"].as_str().is_some_and(|by| !by.is_empty()), "who decided is kept: {decided}");
    let ended = until_ended(&stack, &id).await;
    assert_eq!(
        (ended["status"].as_str(), ended["steps"]["roll"]["status"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    let (status, error) = signal(&stack, &id, json!({ "step": "ask", "decision": "approve" })).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "decided once");

    // Rejected over NATS: the step fails (a rejection is not retried), and so does the execution.
    let id = start_execution(&stack, "deploy", json!({ "version": "2.0" })).await;
    until_step_running(&stack, &id, "ask").await;
    let (code, error) =
        stack.request_on("workflow", "signal", r#"{"id": "x", "step": "ask", "decision": "reject"}"#).await;
    assert_eq!((code.as_deref(), error["error"]["field"].as_str()), (Some("400"), Some("id")), "{error}");
    let body = json!({ "id": id, "step": "ask", "decision": "reject", "comment": "not on a Friday" });
    let (code, rejected) = stack.request_on("workflow", "signal", &body.to_string()).await;
    assert_eq!(code, None, "{rejected}");
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let error = &ended["steps"]["ask"]["error"];
    assert_eq!(error["kind"], "rejected", "{ended}");
    assert!(error["message"].as_str().unwrap().contains("not on a Friday"), "{ended}");
    assert_eq!(ended["steps"]["ask"]["attempt"], 1);
    assert_eq!(ended["steps"]["roll"]["status"], "cancelled", "{ended}");

    // From the command line.
    let id = start_execution(&stack, "deploy", json!({})).await;
    until_step_running(&stack, &id, "ask").await;
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["workflow", "approve", &id, "ask", "--comment", "go", "--api-url", &api])
            .output()
            .unwrap()
    });
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{said} {}", String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("step ask succeeded (approve)"), "{said}");
    assert_eq!(until_ended(&stack, &id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_wait_event_step_ends_on_the_first_matching_event_or_times_out() {
    let stack = Stack::start().await;
    store_workflow(
        &stack,
        "await-web",
        r#"
[workflow]
name = "await-web"

[inputs.address]
required = true

[steps.registered]
kind = "wait_event"
subject = "registry.web.registered"
filter = 'event.data.instance.address == inputs.address'
timeout = "30s"

[steps.then]
kind = "wait"
duration = "10ms"
needs = ["registered"]
"#,
    )
    .await;
    let id = start_execution(&stack, "await-web", json!({ "address": "10.0.0.2" })).await;
    until_step_running(&stack, &id, "registered").await;
    for (instance, address) in [("api-1", "10.0.0.2"), ("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")] {
        let service = instance.split('-').next().unwrap();
        let body = json!({ "id": instance, "name": service, "address": address, "port": 80 });
        let (status, reply) = call(&stack, "POST", "/api/v1/services", Some(body)).await;
        assert!(status.is_success(), "{reply}");
    }
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let event = &ended["steps"]["registered"]["output"];
    assert_eq!(event["type"], "io.orch.registry.registered.v1", "{event}");
    assert_eq!(event["data"]["instance"]["id"], "web-2", "the first event on the subject that the filter passes");

    // Nothing matches: the step times out.
    store_workflow(
        &stack,
        "await-nothing",
        "[workflow]\nname = \"await-nothing\"\n[steps.never]\nkind = \"wait_event\"\nsubject = \"registry.ghost.*\"\ntimeout = \"300ms\"\n",
    )
    .await;
    let id = start_execution(&stack, "await-nothing", json!({})).await;
    let ended = until_ended(&stack, &id).await;
    assert_eq!(
        (ended["status"].as_str(), ended["steps"]["never"]["error"]["kind"].as_str()),
        (Some("failed"), Some("timeout"))
    );
}

const CHILD: &str = r#"
[workflow]
name = "child"

[inputs.label]
required = true

[steps.pause]
kind = "wait"
duration = "10ms"

[steps.echo]
kind = "call"
subject = "orch.call.echo"
body = { label = "${{ inputs.label }}" }
needs = ["pause"]
"#;

const PARENT: &str = r#"
[workflow]
name = "parent"

[inputs.label]
default = "from the parent"

[steps.sub]
kind = "workflow"
workflow = "child"
inputs = { label = "${{ inputs.label }}" }

[steps.after]
kind = "wait"
duration = "10ms"
needs = ["sub"]
when = 'steps.sub.output.outputs.echo.label == inputs.label'
"#;

/// Sub-workflows run in the parent's queue even when it is full (one place here): the child
/// does not wait behind its own parent.
#[tokio::test]
async fn a_sub_workflow_runs_to_its_end_and_its_failure_and_cancellation_follow_the_parent() {
    let stack = Stack::start_with(|s| s.workflow.queue_concurrency = 1).await;
    let mut echo = stack.client.subscribe("orch.call.echo").await.unwrap();
    stack.client.flush().await.unwrap();
    let client = stack.client.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(message) = echo.next().await {
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, message.payload).await;
            }
        }
    });
    store_workflow(&stack, "child", CHILD).await;
    store_workflow(&stack, "parent", PARENT).await;

    let id = start_execution(&stack, "parent", json!({})).await;
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let output = &ended["steps"]["sub"]["output"];
    assert_eq!(output["status"], "succeeded", "{output}");
    assert_eq!(output["outputs"]["echo"], json!({ "label": "from the parent" }), "{output}");
    assert_eq!(ended["steps"]["after"]["status"], "succeeded", "a later step reads the child's outputs");
    let child = output["execution_id"].as_str().unwrap().to_string();
    let child_view = execution(&stack, &child).await;
    assert_eq!(child_view["trigger"], format!("parent:{id}/sub"), "{child_view}");
    assert_eq!(child_view["created_by"], "workflow:parent");

    // The child fails (nobody answers its call): so does the parent's step.
    store_workflow(&stack, "child", &CHILD.replace("orch.call.echo", "orch.call.nobody")).await;
    let id = start_execution(&stack, "parent", json!({})).await;
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let message = ended["steps"]["sub"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("sub-workflow \"child\"") && message.contains("failed"), "{message}");

    // The parent is cancelled while its child runs: the child is cancelled too.
    store_workflow(&stack, "child", &CHILD.replace("duration = \"10ms\"", "duration = \"1h\"")).await;
    let id = start_execution(&stack, "parent", json!({})).await;
    until_step_running(&stack, &id, "sub").await;
    let child = eventually(Duration::from_secs(30), "the child running", || async {
        let (_, list) = call(&stack, "GET", "/api/v1/executions?workflow=child&limit=1", None).await;
        let child = &list[0];
        (child["status"] == "running" && child["trigger"] == format!("parent:{id}/sub"))
            .then(|| child["id"].as_str().unwrap().to_string())
    })
    .await;
    let (status, _) = call(&stack, "POST", &format!("/api/v1/executions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK);
    let ended = until_ended(&stack, &child).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(ended["reason"].as_str().unwrap().contains("parent's step \"sub\""), "{ended}");
}

#[tokio::test]
async fn a_maintenance_step_takes_a_service_out_of_discovery_and_back() {
    let stack = Stack::start().await;
    let body = json!({ "id": "api-1", "name": "api", "address": "127.0.0.1", "port": 80 });
    let (status, _) = call(&stack, "POST", "/api/v1/services", Some(body)).await;
    assert!(status.is_success());
    store_workflow(
        &stack,
        "upgrade",
        r#"
[workflow]
name = "upgrade"

[steps.drain]
kind = "maintenance"
service = "api"
reason = "kernel upgrade"

[steps.ready]
kind = "approval"
needs = ["drain"]

[steps.back]
kind = "maintenance"
service = "api"
enabled = false
needs = ["ready"]
"#,
    )
    .await;
    let discovered = || async {
        let (_, d) = call(&stack, "GET", "/api/v1/discovery/api", None).await;
        d["instances"].as_array().map(Vec::len).unwrap_or(0)
    };
    assert_eq!(discovered().await, 1);
    let id = start_execution(&stack, "upgrade", json!({})).await;
    until_step_running(&stack, &id, "ready").await;
    assert_eq!(discovered().await, 0, "in maintenance: out of discovery");
    let (_, system) = call(&stack, "GET", "/api/v1/health", None).await;
    assert_eq!(system["services_in_maintenance"], json!(["api"]), "{system}");
    let (status, _) = signal(&stack, &id, json!({ "step": "ready", "decision": "approve" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(until_ended(&stack, &id).await["status"], "succeeded");
    assert_eq!(discovered().await, 1, "back in discovery");
    let entered =
        stack.wait_events(1, "maintenance entered", |e| e["type"] == "io.orch.health.maintenance_entered.v1").await;
    assert_eq!(entered[0]["principal"], "workflow:upgrade", "{}", entered[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_queues_are_read_over_http_nats_and_the_command_line() {
    let stack = Stack::start().await;
    store_workflow(
        &stack,
        "nightly",
        "[workflow]\nname = \"nightly\"\nqueue = \"batch\"\n[steps.pause]\nkind = \"wait\"\nduration = \"10ms\"\n\n[[schedule]]\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"\n",
    )
    .await;
    let (status, schedules) = call(&stack, "GET", "/api/v1/schedules", None).await;
    assert_eq!(status, StatusCode::OK);
    let schedule = &schedules[0];
    assert_eq!((schedule["workflow"].as_str(), schedule["index"].as_i64()), (Some("nightly"), Some(0)), "{schedules}");
    assert_eq!(
        (schedule["cron"].as_str(), schedule["timezone"].as_str()),
        (Some("0 30 2 * * *"), Some("Europe/Berlin"))
    );
    let next: chrono::DateTime<chrono::FixedOffset> = schedule["next_fire_at"].as_str().unwrap().parse().unwrap();
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(local.format("%H:%M:%S").to_string(), "02:30:00", "read in its time zone: {next}");

    let id = start_execution(&stack, "nightly", json!({})).await;
    assert_eq!(until_ended(&stack, &id).await["status"], "succeeded");
    let (_, queues) = call(&stack, "GET", "/api/v1/queues", None).await;
    let batch = queues.as_array().unwrap().iter().find(|q| q["queue"] == "batch").expect("the batch queue").clone();
    assert_eq!(
        (batch["succeeded"].as_i64(), batch["waiting"].as_i64(), batch["running"].as_i64()),
        (Some(1), Some(0), Some(0))
    );
    assert!(batch["wait_p50_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{batch}");

    let (code, over_nats) = stack.request_on("workflow", "schedules", "").await;
    assert_eq!((code, over_nats.as_array().map(Vec::len)), (None, Some(1)));
    let (code, over_nats) = stack.request_on("workflow", "queues", "{}").await;
    assert_eq!((code, over_nats[0]["queue"].as_str()), (None, Some("batch")));
    let (code, error) = stack.request_on("workflow", "queues", r#"{"queue": "x"}"#).await;
    assert_eq!(code.as_deref(), Some("400"), "{error}");

    let api = format!("http://127.0.0.1:{}", stack.http_port());
    for (command, expected) in [("schedules", "0 30 2 * * *"), ("queues", "batch")] {
        let output = tokio::task::block_in_place(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
                .args(["workflow", command, "--api-url", &api])
                .output()
                .unwrap()
        });
        let said = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{said}");
        assert!(said.contains(expected), "{command}: {said}");
    }
}

/// Answers `subject` with `{"n": <calls so far>}`; returns the call count.
async fn counter(stack: &Stack, subject: &str) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use futures::StreamExt;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sub = stack.client.subscribe(subject.to_string()).await.unwrap();
    stack.client.flush().await.unwrap();
    let (client, seen) = (stack.client.clone(), calls.clone());
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, json!({ "n": n }).to_string().into()).await;
            }
        }
    });
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_execution_is_retried_from_its_failed_step_or_from_the_start() {
    use std::sync::atomic::Ordering;
    let stack = Stack::start().await;
    let first_calls = counter(&stack, "orch.call.first").await;
    store_workflow(
        &stack,
        "two-calls",
        "[workflow]\nname = \"two-calls\"\n[steps.first]\nkind = \"call\"\nsubject = \"orch.call.first\"\n[steps.second]\nkind = \"call\"\nsubject = \"orch.call.second\"\nneeds = [\"first\"]\ntimeout = \"2s\"\n",
    )
    .await;
    let id = start_execution(&stack, "two-calls", json!({})).await;
    let failed = until_ended(&stack, &id).await;
    assert_eq!(
        (failed["status"].as_str(), failed["steps"]["second"]["status"].as_str()),
        (Some("failed"), Some("failed")),
        "{failed}"
    );
    let (status, error) =
        call(&stack, "POST", &format!("/api/v1/executions/{id}/retry"), Some(json!({ "from": "nowhere" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    // Whoever answers `second` is back: retried from the failed step, `first` is not called again.
    let _second_calls = counter(&stack, "orch.call.second").await;
    let (status, retried) = call(&stack, "POST", &format!("/api/v1/executions/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["trigger"], format!("retry:{id}"));
    let new = retried["id"].as_str().unwrap().to_string();
    let ended = until_ended(&stack, &new).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["steps"]["first"]["output"], json!({ "n": 1 }), "kept from the first execution");
    assert_eq!(first_calls.load(Ordering::SeqCst), 1, "first was not called again");

    // From the start, over NATS: every step runs again.
    let (code, again) = stack.request_on("workflow", "retry", &json!({ "id": new, "from": "start" }).to_string()).await;
    assert_eq!(code, None, "{again}");
    let ended = until_ended(&stack, again["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "succeeded");
    assert_eq!(first_calls.load(Ordering::SeqCst), 2);
    // Nothing failed in a succeeded execution; one under way is not retried.
    let (status, _) = call(&stack, "POST", &format!("/api/v1/executions/{new}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    store_workflow(&stack, "long", "[workflow]\nname = \"long\"\n[steps.sleep]\nkind = \"wait\"\nduration = \"1h\"\n")
        .await;
    let running = start_execution(&stack, "long", json!({})).await;
    let (status, error) = call(&stack, "POST", &format!("/api/v1/executions/{running}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");

    // From the command line, followed to its end.
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["workflow", "retry", &id, "--api-url", &api])
            .output()
            .unwrap()
    });
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(said.contains(&format!("retries {id}")) && said.contains("succeeded"), "{said}");
}

/// A call over HTTP goes to a passing instance of the service, found as discovery finds it, with
/// the idempotency key; an error status fails the attempt (and is retried under its policy);
/// no passing instance is `unavailable`.
#[tokio::test]
async fn an_http_call_reaches_a_passing_instance_of_the_service() {
    use axum::routing::{get, post};
    let stack = Stack::start().await;
    let app = axum::Router::new()
        .route(
            "/deploy",
            post(|headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                let key =
                    headers.get("orch-idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                axum::Json(json!({ "deployed": body["version"], "key": key }))
            }),
        )
        .route("/broken", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "warming up") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = json!({ "id": "deployer-1", "name": "deployer", "address": "127.0.0.1", "port": port });
    let (status, reply) = call(&stack, "POST", "/api/v1/services", Some(body)).await;
    assert!(status.is_success(), "{reply}");
    store_workflow(
        &stack,
        "ship",
        r#"
[workflow]
name = "ship"

[inputs.version]
required = true

[steps.deploy]
kind = "call"
service = "deployer"
path = "/deploy"
body = { version = "${{ inputs.version }}" }

[steps.probe]
kind = "call"
service = "deployer"
method = "GET"
path = "/broken"
needs = ["deploy"]
retry = { attempts = 2, backoff = "10ms" }
on_failure = "continue"

[steps.elsewhere]
kind = "call"
service = "nobody"
path = "/x"
needs = ["probe"]
on_failure = "continue"
"#,
    )
    .await;
    let id = start_execution(&stack, "ship", json!({ "version": "2.1" })).await;
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let steps = &ended["steps"];
    assert_eq!(steps["deploy"]["output"], json!({ "deployed": "2.1", "key": format!("{id}:deploy:1") }), "{ended}");
    assert_eq!((steps["probe"]["status"].as_str(), steps["probe"]["attempt"].as_u64()), (Some("failed"), Some(2)));
    let error = steps["probe"]["error"]["message"].as_str().unwrap();
    assert!(error.contains("503") && error.contains("deployer-1"), "{error}");
    assert_eq!(steps["elsewhere"]["error"]["kind"], "unavailable", "{ended}");
}

/// The processes the embedded agent runs now (`orch.agent.local.status`).
async fn agent_processes(stack: &Stack) -> Vec<(String, u64)> {
    let reply = stack.client.request(stack.subjects.agent("local", "status"), "{}".into()).await.unwrap();
    let status: Value = serde_json::from_slice(&reply.payload).unwrap();
    status["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["service"].as_str().unwrap().to_string(), r["pid"].as_u64().unwrap()))
        .collect()
}

/// A job runs a real process on the node's agent: its exit code decides the step, its output's
/// last lines are kept; a cancelled job's process is stopped; a restart of the orchestrator in
/// the middle re-attaches to the same process instead of starting another.
#[tokio::test]
async fn a_job_runs_a_process_on_the_agent_and_outlives_a_restart() {
    let mut stack = Stack::start().await;
    let dir = orch_testkit::TempDir::new("orch-workflow-job");
    let release = dir.path().join("release");
    store_workflow(
        &stack,
        "jobs",
        r#"
[workflow]
name = "jobs"

[inputs.who]
default = "world"

[inputs.release]
required = true

[steps.hello]
kind = "job"
command = "sh"
args = ["-c", "echo hello $WHO; echo warning >&2"]
env = { WHO = "${{ inputs.who }}" }

[steps.held]
kind = "job"
command = "sh"
args = ["-c", "while [ ! -e '${{ inputs.release }}' ]; do sleep 0.05; done; echo released"]
needs = ["hello"]

[steps.fails]
kind = "job"
command = "sh"
args = ["-c", "echo about to fail; exit 3"]
needs = ["held"]
on_failure = "continue"
"#,
    )
    .await;
    let id = start_execution(&stack, "jobs", json!({ "release": release.display().to_string() })).await;
    until_step_running(&stack, &id, "held").await;
    let before = eventually(Duration::from_secs(30), "the held job's process", || async {
        agent_processes(&stack).await.into_iter().find(|(name, _)| name.starts_with("job-"))
    })
    .await;

    // The orchestrator goes away and comes back (an upgrade, a failover): the job goes on.
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    until_step_running(&stack, &id, "held").await;
    std::fs::write(&release, "").unwrap();
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let steps = &ended["steps"];
    assert_eq!(steps["hello"]["output"]["exit"], json!({ "by": "code", "code": 0 }));
    let lines: Vec<&str> =
        steps["hello"]["output"]["output"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(lines.iter().any(|l| l.ends_with("stdout hello world")), "{lines:?}");
    assert!(lines.iter().any(|l| l.ends_with("stderr warning")), "{lines:?}");
    let held = &steps["held"];
    assert_eq!(
        (held["attempt"].as_u64(), held["output"]["pid"].as_u64()),
        (Some(1), Some(before.1)),
        "the same process, re-attached: {held}"
    );
    assert_eq!(held["output"]["process"], before.0.as_str());
    let fails = &steps["fails"];
    assert_eq!(fails["status"], "failed");
    let message = fails["error"]["message"].as_str().unwrap();
    assert!(message.contains("exit code 3") && message.contains("about to fail"), "{message}");

    // Cancelled while it runs: its process is stopped.
    std::fs::remove_file(&release).unwrap();
    let id = start_execution(&stack, "jobs", json!({ "release": release.display().to_string() })).await;
    until_step_running(&stack, &id, "held").await;
    eventually(Duration::from_secs(30), "the held job's process", || async {
        agent_processes(&stack).await.into_iter().find(|(name, _)| name.starts_with("job-"))
    })
    .await;
    let (status, _) = call(&stack, "POST", &format!("/api/v1/executions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(30), "the cancelled job's process stopped", || async {
        agent_processes(&stack).await.iter().all(|(name, _)| !name.starts_with("job-")).then_some(())
    })
    .await;
}

/// A restart step restarts a managed service of the applied stack: a new process, ready again,
/// recorded as the workflow's.
#[tokio::test]
async fn a_restart_step_restarts_a_managed_service() {
    use common::lifecycle::{apply, service, sleeper, wait_for};
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    apply(&stack, &sleeper("web", orch_testkit::free_port(), "0ms", "")).await;
    let before = wait_for(&stack, &[("web", "ready")]).await;
    let pid = service(&before, "web")["pid"].clone();
    store_workflow(
        &stack,
        "bounce",
        "[workflow]\nname = \"bounce\"\n[steps.restart]\nkind = \"restart\"\nservice = \"web\"\n",
    )
    .await;
    let id = start_execution(&stack, "bounce", json!({})).await;
    let ended = until_ended(&stack, &id).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["steps"]["restart"]["output"], json!({ "restarting": true, "service": "web" }));
    let after = eventually(Duration::from_secs(30), "web ready in a new process", || async {
        let view = wait_for(&stack, &[("web", "ready")]).await;
        (service(&view, "web")["pid"] != pid).then_some(view)
    })
    .await;
    assert!(service(&after, "web")["pid"].as_u64().is_some(), "{after}");
}
