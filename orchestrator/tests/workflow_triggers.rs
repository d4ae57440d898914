//! Event triggers against a real orchestrator, NATS and PostgreSQL: a count window per group
//! fires once per `count` events within `within`, its inputs read from the event; the windows
//! and the position in the events stream survive a restart of the orchestrator, so nothing is
//! started twice and no count is lost; a bad trigger is refused naming its field and line.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::{call, call_raw};
use common::{Stack, eventually};
use serde_json::{Value, json};

const FIX: &str = r#"
[workflow]
name = "fix"

[inputs.service]
required = true

[inputs.count]
default = 0

[steps.note]
kind = "wait"
duration = "10ms"

[[on_event]]
subject = "registry.*.registered"
filter = 'event.data.instance.address != "10.9.9.9"'
count = 2
within = "10m"
group_by = "event.data.instance.name"
inputs = { service = "${{ event.data.instance.name }}", count = "${{ trigger.count }}" }
"#;

async fn register(stack: &Stack, id: &str, address: &str) {
    let service = id.split('-').next().unwrap();
    let body = json!({ "id": id, "name": service, "address": address, "port": 80 });
    let (status, reply) = call(stack, "POST", "/api/v1/services", Some(body)).await;
    assert!(status.is_success(), "{reply}");
}

async fn executions(stack: &Stack) -> Vec<Value> {
    let (_, list) = call(stack, "GET", "/api/v1/executions?workflow=fix", None).await;
    let mut list = list.as_array().cloned().unwrap_or_default();
    list.sort_by_key(|e| e["created_at"].as_str().unwrap_or_default().to_string());
    list
}

async fn until_executions(stack: &Stack, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), &format!("{n} executions of fix"), || async {
        let list = executions(stack).await;
        (list.len() >= n).then_some(list)
    })
    .await
}

/// Waits until the triggers have read every event published so far (the stored position is the
/// stream's last sequence): what they would start, they have started.
async fn triggers_caught_up(stack: &Stack) {
    let mut stream = stack.js.get_stream(stack.subjects.events_stream()).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence as i64;
    eventually(Duration::from_secs(30), "the triggers read every event", || async {
        let position: Option<i64> = sqlx::query_scalar("SELECT stream_seq FROM workflow_event_position")
            .fetch_optional(&stack.pool)
            .await
            .unwrap();
        position.is_some_and(|p| p >= last).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_count_window_per_group_fires_once_per_count_and_survives_a_restart() {
    let mut stack = Stack::start().await;
    let (status, stored) =
        call_raw(&stack, "PUT", "/api/v1/workflows/fix", Some(FIX.to_string()), "application/toml", &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    // The listener starts reading at the end of the stream when the first trigger appears.
    eventually(Duration::from_secs(30), "the triggers' position", || async {
        stack.count("SELECT count(*) FROM workflow_event_position").await.eq(&1).then_some(())
    })
    .await;

    register(&stack, "web-1", "10.0.0.1").await;
    register(&stack, "api-1", "10.0.0.2").await;
    register(&stack, "web-9", "10.9.9.9").await; // filtered out: does not count
    register(&stack, "web-2", "10.0.0.3").await;
    let list = until_executions(&stack, 1).await;
    let first = &list[0];
    assert_eq!(first["inputs"], json!({ "service": "web", "count": 2 }), "{first}");
    assert_eq!(first["trigger"], "event:0");
    assert!(first["created_by"].as_str().unwrap().starts_with("event:"), "{first}");

    // The window started empty again: one more web registration is not enough.
    register(&stack, "web-3", "10.0.0.4").await;
    triggers_caught_up(&stack).await;
    assert_eq!(executions(&stack).await.len(), 1, "a third registration of web starts a new count");

    // A restart, as in an upgrade or a failover: the events are not counted twice, and the
    // windows under way (api: 1, web: 1) go on.
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    register(&stack, "api-2", "10.0.0.5").await;
    let list = until_executions(&stack, 2).await;
    assert_eq!(list[1]["inputs"], json!({ "service": "api", "count": 2 }), "api's window kept its first event");
    register(&stack, "web-4", "10.0.0.6").await;
    let list = until_executions(&stack, 3).await;
    assert_eq!(list[2]["inputs"], json!({ "service": "web", "count": 2 }));
    triggers_caught_up(&stack).await;
    assert_eq!(executions(&stack).await.len(), 3, "nothing started twice");
    eventually(Duration::from_secs(30), "the executions ran", || async {
        let list = executions(&stack).await;
        list.iter().all(|e| e["status"] == "succeeded").then_some(())
    })
    .await;

    // A new version without the trigger stops it. Another workflow's trigger, on an event
    // published after these, shows they were read (the events are read in order).
    let text = FIX.split("[[on_event]]").next().unwrap().to_string();
    let (status, _) = call_raw(&stack, "PUT", "/api/v1/workflows/fix", Some(text), "application/toml", &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    let sentinel = "[workflow]\nname = \"sentinel\"\n[steps.a]\nkind = \"wait\"\nduration = \"1ms\"\n\n[[on_event]]\nsubject = \"registry.zzz.registered\"\n";
    let (status, _) =
        call_raw(&stack, "PUT", "/api/v1/workflows/sentinel", Some(sentinel.into()), "application/toml", &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    register(&stack, "web-5", "10.0.0.7").await;
    register(&stack, "web-6", "10.0.0.8").await;
    register(&stack, "zzz-1", "10.0.0.9").await;
    eventually(Duration::from_secs(30), "the sentinel's execution", || async {
        let (_, list) = call(&stack, "GET", "/api/v1/executions?workflow=sentinel", None).await;
        (list.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    assert_eq!(executions(&stack).await.len(), 3, "the trigger of the old version counts no more");
}

#[tokio::test]
async fn a_bad_trigger_is_refused_naming_its_field_and_line() {
    let stack = Stack::start().await;
    let bad = FIX.replace("within = \"10m\"\n", "").replace("count = \"${{ trigger.count }}\"", "colour = \"red\"");
    let (status, error) = call_raw(&stack, "PUT", "/api/v1/workflows/fix", Some(bad), "application/toml", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 15: on_event[0].within: a count of more than 1 needs `within`"), "{message}");
    assert!(message.contains("on_event[0].inputs.colour: the workflow has no input \"colour\""), "{message}");
}

const ADMIN: &str = "admin:hooks-admin:hooks-admin-secret-0123";
const ADMIN_AUTH: (&str, &str) = ("authorization", "Bearer hooks-admin-secret-0123");
const HOOK_SECRET: &str = "a-secret-of-at-least-16";

const DEPLOY: &str = r#"
[workflow]
name = "deploy"

[inputs.sha]
required = true

[steps.roll]
kind = "wait"
duration = "10ms"

[[webhook]]
name = "deploy-hook"
inputs = { sha = "${{ body.after }}" }
replay_window = "5m"
"#;

/// A signed delivery of `body` at `at` (Unix seconds) under `secret`.
async fn deliver(stack: &Stack, body: &str, at: i64, secret: &str) -> (StatusCode, Value) {
    let timestamp = at.to_string();
    let signature = orchestrator::workflow::hook::sign(secret.as_bytes(), &timestamp, body.as_bytes());
    let headers = [("x-orch-timestamp", timestamp.as_str()), ("x-orch-signature", signature.as_str())];
    call_raw(stack, "POST", "/api/v1/hooks/deploy-hook", Some(body.into()), "application/json", &headers).await
}

/// A webhook needs no API token but a body signed with its secret, at a time within its replay
/// window: the same delivery starts its execution once; anything else is refused naming the
/// header at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_starts_its_workflow_once_and_anything_else_is_refused() {
    let stack = Stack::start_with(|s| s.http.auth.api_keys = vec![ADMIN.parse().unwrap()]).await;
    let put = |name: &'static str, text: String| {
        let stack = &stack;
        async move {
            call_raw(stack, "PUT", &format!("/api/v1/workflows/{name}"), Some(text), "application/toml", &[ADMIN_AUTH])
                .await
        }
    };
    let (status, stored) = put("deploy", DEPLOY.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let now = chrono::Utc::now().timestamp();
    let secret = HOOK_SECRET;
    let body = r#"{"ref": "refs/heads/main", "after": "abc123"}"#;

    // No secret yet: refused.
    let (status, error) = deliver(&stack, body, now, secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("no secret yet"), "{error}");
    let (_, hooks) = call_raw(&stack, "GET", "/api/v1/hooks", None, "application/json", &[ADMIN_AUTH]).await;
    assert_eq!(
        (hooks[0]["name"].as_str(), hooks[0]["has_secret"].as_bool()),
        (Some("deploy-hook"), Some(false)),
        "{hooks}"
    );

    let set = |name: &'static str, secret: &'static str| {
        let stack = &stack;
        async move {
            let body = json!({ "secret": secret }).to_string();
            call_raw(
                stack,
                "PUT",
                &format!("/api/v1/hooks/{name}/secret"),
                Some(body),
                "application/json",
                &[ADMIN_AUTH],
            )
            .await
        }
    };
    let (status, error) = set("deploy-hook", "short").await;
    assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("secret")), "{error}");
    let (status, _) = set("nobody", HOOK_SECRET).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body_json = json!({ "secret": secret }).to_string();
    let (status, _) =
        call_raw(&stack, "PUT", "/api/v1/hooks/deploy-hook/secret", Some(body_json), "application/json", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "setting a secret needs an admin token");
    // Set from the command line, the secret on standard input.
    let api = format!("http://127.0.0.1:{}", stack.http_port());
    let cli = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(args)
            .args(["--api-url", &api, "--api-token", ADMIN_AUTH.1.trim_start_matches("Bearer ")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, said) =
        tokio::task::block_in_place(|| cli(&["workflow", "hook-secret", "deploy-hook"], &format!("{HOOK_SECRET}\n")));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("secret set by key:hooks-admin"), "{said}");
    let (code, said) = tokio::task::block_in_place(|| cli(&["workflow", "hooks"], ""));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.lines().any(|l| l.contains("deploy-hook") && l.contains("yes")), "{said}");
    let (_, hooks) = call_raw(&stack, "GET", "/api/v1/hooks", None, "application/json", &[ADMIN_AUTH]).await;
    let view = &hooks[0];
    assert_eq!(
        (view["has_secret"].as_bool(), view["secret_set_by"].as_str()),
        (Some(true), Some("key:hooks-admin")),
        "{view}"
    );
    assert!(view.get("secret").is_none(), "the secret is never shown: {view}");

    // Signed: started, with the inputs from the body; the same delivery again: the same execution.
    let (status, started) = deliver(&stack, body, now, secret).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["inputs"], json!({ "sha": "abc123" }));
    assert_eq!(
        (started["trigger"].as_str(), started["created_by"].as_str()),
        (Some("hook:deploy-hook"), Some("hook:deploy-hook"))
    );
    let (status, again) = deliver(&stack, body, now, secret).await;
    assert_eq!((status, again["id"].clone()), (StatusCode::OK, started["id"].clone()), "a replay starts nothing new");

    // Refused, naming the header at fault; nothing started.
    let (status, error) = deliver(&stack, body, now, "another-secret-0123456").await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("X-Orch-Signature")),
        "{error}"
    );
    let (status, error) = deliver(&stack, body, now - 600, secret).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("X-Orch-Timestamp")),
        "{error}"
    );
    let (status, error) =
        call_raw(&stack, "POST", "/api/v1/hooks/deploy-hook", Some(body.into()), "application/json", &[]).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("X-Orch-Timestamp")),
        "{error}"
    );
    let (status, error) = deliver(&stack, "not json", now, secret).await;
    assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body")), "{error}");
    let (status, error) = deliver(&stack, r#"{"ref": "x"}"#, now, secret).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the body lacks what the inputs need: {error}");
    assert_eq!(stack.count("SELECT count(*) FROM workflow_executions").await, 1);

    // A hook's name belongs to one workflow.
    let (status, error) = put("other", DEPLOY.replace("name = \"deploy\"", "name = \"other\"")).await;
    assert_eq!((status, error["error"]["field"].as_str()), (StatusCode::CONFLICT, Some("webhook[0].name")), "{error}");

    let ended = eventually(Duration::from_secs(30), "the execution ended", || async {
        let id = started["id"].as_str().unwrap();
        let (_, view) =
            call_raw(&stack, "GET", &format!("/api/v1/executions/{id}"), None, "application/json", &[ADMIN_AUTH]).await;
        (view["status"] == "succeeded").then_some(view)
    })
    .await;
    assert_eq!(ended["steps"]["roll"]["status"], "succeeded");
}
