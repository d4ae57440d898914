//! Queues against a real orchestrator, NATS and PostgreSQL: an execution that follows a
//! service's effective priority (which the AI engine steers) passes a higher static priority
//! when the service's priority is raised; a schedule with `overlap = "queue"` runs its firings
//! one at a time, in order, none skipped.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::call;
use common::workflows::{start_execution, store_workflow, until_status};
use common::{Stack, eventually};
use serde_json::{Value, json};

#[tokio::test]
async fn an_execution_following_a_service_priority_passes_when_the_engine_raises_it() {
    // One place in the queue: the order of admission is visible.
    let stack = Stack::start_with(|s| s.workflow.queue_concurrency = 1).await;
    store_workflow(
        &stack,
        "blocker",
        "[workflow]\nname = \"blocker\"\nqueue = \"ops\"\n[steps.hold]\nkind = \"wait\"\nduration = \"1h\"\n",
    )
    .await;
    store_workflow(&stack, "static", "[workflow]\nname = \"static\"\nqueue = \"ops\"\npriority = 50\n[steps.a]\nkind = \"wait\"\nduration = \"10ms\"\n").await;
    store_workflow(
        &stack,
        "follower",
        "[workflow]\nname = \"follower\"\nqueue = \"ops\"\npriority = 10\nfollow_priority_of = \"web\"\n[steps.a]\nkind = \"wait\"\nduration = \"10ms\"\n",
    )
    .await;
    let blocker = start_execution(&stack, "blocker", json!({})).await;
    until_status(&stack, &blocker, "running").await;
    let fixed = start_execution(&stack, "static", json!({})).await;
    let follower = start_execution(&stack, "follower", json!({})).await;
    // The engine raises web above the static workflow's 50.
    let body = json!({ "value": 90, "reason": "web is what users wait for" });
    let (status, reply) = call(&stack, "PUT", "/api/v1/priorities/web", Some(body)).await;
    assert!(status.is_success(), "{reply}");
    let (status, _) = call(&stack, "POST", &format!("/api/v1/executions/{blocker}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK);
    let fixed = until_status(&stack, &fixed, "succeeded").await;
    let follower = until_status(&stack, &follower, "succeeded").await;
    let started = |v: &Value| v["started_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert!(
        started(&follower) < started(&fixed),
        "priority 10 following web (90) started first: {} vs {}",
        follower["started_at"],
        fixed["started_at"]
    );
}

#[tokio::test]
async fn a_queued_schedule_runs_its_firings_one_at_a_time_in_order() {
    let stack = Stack::start().await;
    let text = r#"
[workflow]
name = "serial"

[steps.slow]
kind = "wait"
duration = "1500ms"

[[schedule]]
cron = "* * * * * *"
overlap = "queue"
"#;
    store_workflow(&stack, "serial", text).await;
    let rows = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, String, Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>)>(
            "SELECT fire_at, status, started_at, finished_at FROM workflow_executions WHERE workflow = 'serial' ORDER BY fire_at",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // Firings come every second and each runs 1.5 s: they pile up, none is skipped.
    eventually(Duration::from_secs(30), "three finished firings", || async {
        let rows = rows(stack.pool.clone()).await;
        (rows.iter().filter(|r| r.1 == "succeeded").count() >= 3).then_some(())
    })
    .await;
    store_workflow(&stack, "serial", text.split("[[schedule]]").next().unwrap()).await;
    let rows = rows(stack.pool.clone()).await;
    assert!(rows.len() >= 4, "every second fired: {rows:?}");
    let finished: Vec<_> = rows.iter().filter(|r| r.1 == "succeeded").collect();
    for pair in finished.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        assert!(
            later.2.unwrap() >= earlier.3.unwrap(),
            "the firing of {} started after the one of {} ended: {rows:?}",
            later.0,
            earlier.0
        );
    }
    for pair in rows.windows(2) {
        assert_eq!((pair[1].0 - pair[0].0).num_milliseconds(), 1000, "no firing skipped: {rows:?}");
    }
    let running = rows.iter().filter(|r| r.1 == "running").count();
    assert!(running <= 1, "at most one runs: {rows:?}");
}
