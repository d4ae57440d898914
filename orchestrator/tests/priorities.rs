//! Service priorities with a real nats-server and PostgreSQL: engine changes and their guardrails
//! (clamp, pin, rate limit, mass-change hold with release or expiry, adjustment expiry), the audit
//! history and the priority events, persistence across a restart, and the effects of priority:
//! start-up order, recovery order and load shedding under node pressure.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::http::{assert_error, call};
use common::lifecycle::*;
use common::{Stack, eventually};
use orch_testkit::free_port;
use serde_json::{Value, json};

async fn set(stack: &Stack, service: &str, value: i64) -> (Option<String>, Value) {
    let body = json!({"service": service, "value": value, "source": "engine:test", "reason": "test load"});
    stack.request_on("priority", "set", &body.to_string()).await
}

async fn policy(stack: &Stack, body: Value) -> Value {
    let (code, reply) = stack.request_on("priority", "policy", &body.to_string()).await;
    assert_eq!(code, None, "{reply}");
    reply
}

/// Priority events of the events stream, as (service, outcome, data).
async fn priority_events(stack: &Stack) -> Vec<(String, String, Value)> {
    stack
        .events()
        .await
        .into_iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("io.orch.priority.")))
        .map(|e| {
            let data = e["data"].clone();
            (data["service"].as_str().unwrap().to_string(), data["outcome"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

#[tokio::test]
async fn engine_changes_are_clamped_pinned_rate_limited_and_audited() {
    let stack = Stack::start_with(|s| s.priority.rate_limit = 3).await;

    let reply = policy(&stack, json!({"service": "api", "max": 70, "source": "operator:ann", "reason": "cap"})).await;
    assert_eq!(reply["priority"]["max"], 70);
    let (code, reply) = set(&stack, "api", 90).await;
    assert_eq!(code, None, "{reply}");
    let change = &reply["change"];
    assert_eq!((change["outcome"].as_str(), change["requested"].as_i64()), (Some("clamped"), Some(90)));
    assert_eq!((change["previous"].as_i64(), change["effective"].as_i64()), (Some(50), Some(70)));
    assert!(change["detail"].as_str().unwrap().contains("bounds 0-70"), "{change}");
    assert_eq!(reply["priority"]["effective"], 70);
    let id = change["id"].as_str().unwrap().to_string();
    // The change's id is its event's id.
    let events = stack.wait_events(1, "the clamped event", |e| e["id"] == id.as_str()).await;
    assert_eq!(events[0]["type"], "io.orch.priority.clamped.v1");
    assert_eq!(events[0]["data"]["source"], "engine:test");

    // Pinned: the engine is refused, and the refusal is recorded.
    let (code, reply) = set(&stack, "web", 80).await;
    assert_eq!((code, reply["change"]["outcome"].as_str()), (None, Some("applied")));
    let reply =
        policy(&stack, json!({"service": "web", "pinned": true, "baseline": 40, "source": "operator:ann"})).await;
    assert_eq!(reply["priority"]["effective"], 40, "pinning drops the adjustment: {reply}");
    let (code, reply) = set(&stack, "web", 90).await;
    assert_eq!(code.as_deref(), Some("409"));
    assert_eq!(reply["error"]["code"], "refused", "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("pinned"));

    // Rate limit: api had one change; two more pass, the fourth within the window is refused.
    for value in [60, 65] {
        assert_eq!(set(&stack, "api", value).await.0, None);
    }
    let (code, reply) = set(&stack, "api", 20).await;
    assert_eq!(code.as_deref(), Some("429"));
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");

    // The history holds every change, newest first, refused ones included.
    let (status, got) = call(&stack, "GET", "/api/v1/priorities/api?history=10", None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let outcomes: Vec<&str> =
        got["history"].as_array().unwrap().iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["refused", "applied", "applied", "clamped", "applied"]);
    assert_eq!(got["history"][0]["guardrail"], "rate_limited");
    assert_eq!(got["priority"]["effective"], 65);
    assert_eq!(stack.count("SELECT count(*) FROM priority_changes").await, 8);
    // Every change is an event, refused ones too.
    let events = eventually(Duration::from_secs(10), "all priority events", || async {
        let events = priority_events(&stack).await;
        (events.len() == 8).then_some(events)
    })
    .await;
    assert_eq!(events.iter().filter(|(_, o, _)| o == "refused").count(), 2);

    // Bad input is refused naming the field, and not recorded.
    let bad = [
        (json!({"service": "api", "value": 101, "source": "e", "reason": "r"}), "value"),
        (json!({"service": "api", "value": 1, "source": "e", "reason": ""}), "reason"),
        (json!({"service": "a b", "value": 1, "source": "e", "reason": "r"}), "service"),
        (json!({"service": "api", "value": 1, "source": "e", "reason": "r", "ttl_seconds": -1}), "ttl_seconds"),
        (json!({"service": "api", "value": "high", "source": "e", "reason": "r"}), "value"),
        (json!({"service": "api", "value": 1, "source": "e", "reason": "r", "colour": 1}), "colour"),
    ];
    for (body, field) in bad {
        let (code, reply) = stack.request_on("priority", "set", &body.to_string()).await;
        assert_eq!(code.as_deref(), Some("400"), "{body}: {reply}");
        assert_eq!(reply["error"]["field"], field, "{body}: {reply}");
    }
    let (code, reply) =
        stack.request_on("priority", "policy", &json!({"service": "api", "min": 80, "source": "op"}).to_string()).await;
    assert_eq!((code.as_deref(), reply["error"]["field"].as_str()), (Some("400"), Some("min")), "{reply}");
    let result = call(&stack, "PUT", "/api/v1/priorities/api", Some(json!({"value": 300, "reason": "x"}))).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "validation_failed", Some("value"));
    let result = call(&stack, "GET", "/api/v1/priorities/api?history=5000", None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "validation_failed", Some("history"));
    assert_eq!(stack.count("SELECT count(*) FROM priority_changes").await, 8);
}

#[tokio::test]
async fn a_mass_change_is_held_until_an_operator_releases_it() {
    // At most 2 services may move per window.
    let stack = Stack::start_with(|s| {
        s.priority.mass_min = 2;
        s.priority.mass_share = 0.0;
    })
    .await;
    for service in ["a", "b"] {
        let body = json!({"value": 80, "reason": "hot", "source": "engine:test"});
        let (status, reply) = call(&stack, "PUT", &format!("/api/v1/priorities/{service}"), Some(body)).await;
        assert_eq!((status, reply["change"]["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{reply}");
    }
    let body = json!({"value": 90, "reason": "hot", "source": "engine:test"});
    let (status, reply) = call(&stack, "PUT", "/api/v1/priorities/c", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(
        (reply["change"]["outcome"].as_str(), reply["change"]["guardrail"].as_str()),
        (Some("held"), Some("mass_change"))
    );
    assert_eq!(reply["priority"]["effective"], 50, "not applied while held");
    let alarm =
        stack.wait_events(1, "the hold alarm", |e| e["type"] == "io.orch.system.priority_hold_started.v1").await;
    assert!(alarm[0]["data"]["message"].as_str().unwrap().contains("held"), "{}", alarm[0]);
    // Everything the engine asks is held now, even for services it moved before.
    let body = json!({"value": 10, "reason": "cold", "source": "engine:test"});
    let (status, _) = call(&stack, "PUT", "/api/v1/priorities/a", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, guard) = call(&stack, "GET", "/api/v1/priority-guard", None).await;
    assert_eq!((guard["holding"].as_bool(), guard["held"].clone()), (Some(true), json!(["a", "c"])), "{guard}");

    // The hold survives a restart of the orchestrator (an upgrade, a new leader): the same
    // window, the same held requests.
    let mut stack = stack;
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let (_, after) = call(&stack, "GET", "/api/v1/priority-guard", None).await;
    assert_eq!((&after["holding"], &after["held"], &after["until"]), (&json!(true), &guard["held"], &guard["until"]));

    let body = json!({"source": "operator:ann", "reason": "looked right"});
    let (status, released) = call(&stack, "POST", "/api/v1/priority-guard/release", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    let applied: Vec<(&str, i64)> = released["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["service"].as_str().unwrap(), c["effective"].as_i64().unwrap()))
        .collect();
    assert_eq!(applied, [("a", 10), ("c", 90)]);
    assert_eq!(released["guard"]["holding"], false);
    let ended = stack.wait_events(1, "the hold ends", |e| e["type"] == "io.orch.system.priority_hold_ended.v1").await;
    assert_eq!(ended[0]["data"]["ended_by"], "released by operator:ann");
    let (_, c) = call(&stack, "GET", "/api/v1/priorities/c", None).await;
    let actions: Vec<(&str, &str)> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("release", "applied"), ("set", "held")]);
}

#[tokio::test]
async fn holds_lapse_with_their_window_and_adjustments_expire() {
    let stack = Stack::start_with(|s| {
        s.priority.mass_min = 1;
        s.priority.mass_share = 0.0;
        s.priority.mass_window = Duration::from_secs(1);
    })
    .await;
    let body = json!({"service": "a", "value": 90, "source": "engine:test", "reason": "burst", "ttl_seconds": 0.5});
    let (code, reply) = stack.request_on("priority", "set", &body.to_string()).await;
    assert_eq!(code, None, "{reply}");
    assert!(reply["change"]["expires_at"].is_string());
    assert_eq!(set(&stack, "b", 70).await.1["change"]["outcome"], "held");
    let events = eventually(Duration::from_secs(10), "expiry and the end of the hold", || async {
        let events = priority_events(&stack).await;
        let done = events.iter().any(|(s, o, _)| s == "a" && o == "expired")
            && events.iter().any(|(s, o, _)| s == "b" && o == "dropped");
        done.then_some(events)
    })
    .await;
    let expired = &events.iter().find(|(_, o, _)| o == "expired").unwrap().2["data"];
    assert_eq!((expired["previous"].as_i64(), expired["effective"].as_i64()), (Some(90), Some(50)), "{expired}");
    let ended = stack.wait_events(1, "the hold ends", |e| e["type"] == "io.orch.system.priority_hold_ended.v1").await;
    assert!(ended[0]["data"]["ended_by"].as_str().unwrap().contains("window"), "{}", ended[0]);
    let (_, b) = call(&stack, "GET", "/api/v1/priorities/b", None).await;
    assert_eq!(b["priority"]["effective"], 50);
    // After the hold, the engine may move services again.
    assert_eq!(set(&stack, "b", 70).await.1["change"]["outcome"], "applied");
}

#[tokio::test]
async fn priorities_survive_a_restart_of_the_orchestrator() {
    let mut stack = Stack::start().await;
    policy(&stack, json!({"service": "db", "baseline": 80, "min": 60, "source": "operator:ann"})).await;
    assert_eq!(set(&stack, "api", 30).await.0, None);
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let (status, list) = call(&stack, "GET", "/api/v1/priorities", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let view =
        |name: &str| list["priorities"].as_array().unwrap().iter().find(|p| p["service"] == name).unwrap().clone();
    let db = view("db");
    assert_eq!(
        (db["effective"].as_i64(), db["min"].as_i64(), db["baseline_source"].as_str()),
        (Some(80), Some(60), Some("operator"))
    );
    let api = view("api");
    assert_eq!((api["effective"].as_i64(), api["adjustment"]["source"].as_str()), (Some(30), Some("engine:test")));
    let (_, history) = call(&stack, "GET", "/api/v1/priorities/api", None).await;
    assert_eq!(history["history"].as_array().unwrap().len(), 1);
}

/// Launch order (`starting` transitions) among the given services.
fn starts<'a>(events: &'a [(String, String, Value)], among: &[&str]) -> Vec<&'a str> {
    events
        .iter()
        .filter(|(s, st, _)| st == "starting" && among.contains(&s.as_str()))
        .map(|(s, _, _)| s.as_str())
        .collect()
}

#[tokio::test]
async fn engine_priorities_order_start_up_and_recovery() {
    let stack = Stack::start().await;
    // The manifest says low < mid < high; the engine turns that around before the start-up.
    let always = r#"restart = { policy = "always", backoff = "300ms" }"#;
    let manifest = format!(
        "max_parallel = 1\n{}{}{}",
        sleeper("low", free_port(), "300ms", &format!("priority = 10\n{always}")),
        sleeper("mid", free_port(), "300ms", &format!("priority = 50\n{always}")),
        sleeper("high", free_port(), "300ms", &format!("priority = 90\n{always}")),
    );
    // Known before the manifest exists: an operator baseline and an engine adjustment.
    policy(&stack, json!({"service": "low", "baseline": 95, "source": "operator:ann"})).await;
    assert_eq!(set(&stack, "high", 5).await.0, None);
    apply(&stack, &manifest).await;
    let view = wait_for(&stack, &[("low", "ready"), ("mid", "ready"), ("high", "ready")]).await;
    let events = wait_event(&stack, "high", "ready").await;
    assert_eq!(starts(&events, &["low", "mid", "high"]), ["low", "mid", "high"]);
    assert_eq!(service(&view, "low")["priority"], 95, "the API shows the effective priority");

    // Recovery: turn it around again, then kill all three; after the first restart took the
    // only slot, the others follow the new priorities.
    assert_eq!(set(&stack, "high", 99).await.0, None);
    policy(&stack, json!({"service": "low", "baseline": 1, "source": "operator:ann"})).await;
    let before = transitions(&stack).await.len();
    for name in ["low", "mid", "high"] {
        // SAFETY: kill(2) on a pid the test read from the API.
        unsafe { libc::kill(pid(&view, name) as i32, libc::SIGKILL) };
    }
    let events = eventually(Duration::from_secs(30), "all three restart", || async {
        let events: Vec<_> = transitions(&stack).await.into_iter().skip(before).collect();
        (starts(&events, &["low", "mid", "high"]).len() == 3).then_some(events)
    })
    .await;
    let order = starts(&events, &["low", "mid", "high"]);
    let priority = |s: &str| match s {
        "high" => 99,
        "mid" => 50,
        _ => 1,
    };
    let mut waited = order[1..].to_vec();
    waited.sort_by_key(|s| std::cmp::Reverse(priority(s)));
    assert_eq!(order[1..], waited[..], "{order:?}");
}

#[tokio::test]
async fn sheddable_services_are_shed_lowest_priority_first_and_restored_highest_first() {
    let dir = orch_testkit::TempDir::new("orch-pressure");
    let file = dir.path().join("pressure.json");
    let write = |memory: f64| std::fs::write(&file, json!({"cpu": 0.1, "memory": memory}).to_string()).unwrap();
    write(0.2);
    let pressure_file = file.clone();
    let stack = Stack::start_with(move |s| {
        let pressure = &mut s.agent.as_mut().unwrap().pressure;
        pressure.file = Some(pressure_file.clone());
        pressure.interval = Duration::from_millis(50);
        let shedding = &mut s.lifecycle.shedding;
        shedding.memory = 0.9;
        shedding.step = Duration::from_millis(200);
        shedding.restore_after = Duration::from_millis(500);
    })
    .await;
    let manifest = format!(
        "{}{}{}{}",
        sleeper("s10", free_port(), "0ms", "priority = 10\nsheddable = true"),
        sleeper("s50", free_port(), "0ms", "priority = 50\nsheddable = true"),
        sleeper("s90", free_port(), "0ms", "priority = 90\nsheddable = true"),
        sleeper("keep", free_port(), "0ms", "priority = 1"),
    );
    apply(&stack, &manifest).await;
    wait_for(&stack, &[("s10", "ready"), ("s50", "ready"), ("s90", "ready"), ("keep", "ready")]).await;
    // The engine lowers s90 below the others: it goes first.
    assert_eq!(set(&stack, "s90", 5).await.0, None);
    eventually(Duration::from_secs(10), "the controller sees the new priority", || async {
        let view = stack_view(&stack).await;
        (service(&view, "s90")["priority"] == 5).then_some(())
    })
    .await;

    write(0.95);
    let shed = stack.wait_events(3, "three services shed", |e| e["type"] == "io.orch.lifecycle.shed.v1").await;
    let order: Vec<&str> = shed.iter().map(|e| e["data"]["service"].as_str().unwrap()).collect();
    assert_eq!(order, ["s90", "s10", "s50"]);
    let reason = shed[0]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("memory 95% >= 90%"), "{reason}");
    let view = wait_for(&stack, &[("s10", "stopped"), ("s50", "stopped"), ("s90", "stopped"), ("keep", "ready")]).await;
    assert!(service(&view, "s10")["reason"].as_str().unwrap().starts_with("shed:"), "{view}");
    let high = stack.wait_events(1, "pressure announced", |e| e["type"] == "io.orch.resource.pressure_high.v1").await;
    assert_eq!(high[0]["data"]["node"], "local");

    write(0.2);
    let restored =
        stack.wait_events(3, "three services restored", |e| e["type"] == "io.orch.lifecycle.restored.v1").await;
    let order: Vec<&str> = restored.iter().map(|e| e["data"]["service"].as_str().unwrap()).collect();
    assert_eq!(order, ["s50", "s10", "s90"]);
    wait_for(&stack, &[("s10", "ready"), ("s50", "ready"), ("s90", "ready"), ("keep", "ready")]).await;
    stack.wait_events(1, "pressure cleared", |e| e["type"] == "io.orch.resource.pressure_cleared.v1").await;
}

/// A rate-limited change says when to retry, the guard's window: over HTTP in `Retry-After`,
/// over NATS in `Orch-Retry-After`.
#[tokio::test]
async fn a_rate_limited_change_says_when_to_retry() {
    let stack = Stack::start_with(|s| s.priority.rate_limit = 1).await;
    let put = |value: u8| {
        axum::http::Request::builder()
            .method("PUT")
            .uri("/api/v1/priorities/api")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(format!(r#"{{"value": {value}, "reason": "load", "source": "engine:test"}}"#)))
            .unwrap()
    };
    let first = tower::ServiceExt::oneshot(stack.running().router(), put(60)).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = tower::ServiceExt::oneshot(stack.running().router(), put(70)).await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "60", "the default window");

    let body = json!({"service": "api", "value": 80, "source": "engine:test", "reason": "load"});
    let reply = stack
        .client
        .request(stack.subjects.request("priority", "set"), body.to_string().into())
        .await
        .expect("answered");
    let headers = reply.headers.expect("error headers");
    assert_eq!(headers.get(orch_protocol::headers::SERVICE_ERROR_CODE).unwrap().as_str(), "429");
    assert_eq!(headers.get(orch_protocol::headers::RETRY_AFTER).unwrap().as_str(), "60");
}

/// A runaway engine's refused requests are each answered, and counted rather than recorded one
/// by one: the first of a window is recorded at once, the rest as one record with their count
/// when the window ends. None is lost: the counts add up to the refusals answered.
#[tokio::test]
async fn a_flood_of_refused_requests_is_counted_and_none_is_lost() {
    let stack = Stack::start_with(|s| {
        s.priority.rate_limit = 1;
        s.priority.rate_window = Duration::from_secs(3);
    })
    .await;
    assert_eq!(set(&stack, "api", 60).await.0, None);
    let answers = futures::future::join_all((0..300).map(|i| set(&stack, "api", i % 100))).await;
    let refused = answers.iter().filter(|(code, _)| code.as_deref() == Some("429")).count();
    assert!(refused > 0);
    for (code, reply) in &answers {
        assert!(code.is_none() || code.as_deref() == Some("429"), "{reply}");
    }
    // Once the windows have ended, the refused records account for every refusal answered.
    let records = eventually(Duration::from_secs(30), "every refusal recorded", || async {
        let (_, got) = call(&stack, "GET", "/api/v1/priorities/api?history=1000", None).await;
        let refused_records: Vec<Value> =
            got["history"].as_array().unwrap().iter().filter(|c| c["outcome"] == "refused").cloned().collect();
        let counted: u64 = refused_records.iter().map(|c| c["count"].as_u64().unwrap_or(1)).sum();
        (counted == refused as u64).then_some(refused_records)
    })
    .await;
    assert!(records.len() < refused, "{} records for {refused} refusals: they are counted", records.len());
    let counted = records.iter().find(|c| c["count"].is_u64()).expect("a counted record");
    assert_eq!(counted["guardrail"], "rate_limited");
    assert_eq!(counted["principal"], "nats");
    assert!(counted["detail"].as_str().unwrap().contains("more requests were refused alike (rate_limited)"));
    // Each record is an event, too.
    let events = eventually(Duration::from_secs(10), "the refused events", || async {
        let events: Vec<_> = priority_events(&stack).await.into_iter().filter(|(_, o, _)| o == "refused").collect();
        (events.len() == records.len()).then_some(events)
    })
    .await;
    let counted_events: u64 = events.iter().map(|(_, _, e)| e["data"]["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(counted_events, refused as u64);
}

#[tokio::test]
async fn held_changes_during_a_hold_are_counted_and_the_one_kept_is_in_the_history() {
    // At most 1 service may move per window: the second service's change starts a hold.
    let stack = Stack::start_with(|s| {
        s.priority.mass_min = 1;
        s.priority.mass_share = 0.0;
        s.priority.rate_limit = 100;
    })
    .await;
    assert_eq!(set(&stack, "a", 80).await.1["change"]["outcome"], "applied");
    // Ten changes of "b", one after the other: each is answered held, with an id of its own.
    let mut ids = Vec::new();
    for value in 1..=10 {
        let (code, reply) = set(&stack, "b", value).await;
        assert_eq!((code, reply["change"]["outcome"].as_str()), (None, Some("held")), "{reply}");
        ids.push(reply["change"]["id"].as_str().unwrap().to_string());
    }
    let last = ids.last().unwrap().clone();
    // The release applies the last one, naming it; its record is in the history before that.
    let body = json!({"source": "operator:ann", "reason": "looked right"});
    let (status, released) = call(&stack, "POST", "/api/v1/priority-guard/release", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["changes"][0]["effective"], 10);
    assert!(released["changes"][0]["detail"].as_str().unwrap().contains(&last), "{released}");
    let (_, b) = call(&stack, "GET", "/api/v1/priorities/b", None).await;
    let history = b["history"].as_array().unwrap();
    let summary: Vec<(&str, Option<u64>)> =
        history.iter().map(|h| (h["outcome"].as_str().unwrap(), h["count"].as_u64())).collect();
    // Newest first: the release, the count of the nine that replaced the first, the first.
    assert_eq!(summary, [("applied", None), ("held", Some(9)), ("held", None)], "{b}");
    assert_eq!(history[1]["id"], json!(last), "the count keeps the id of the change the hold kept");
    assert_eq!(history[1]["requested"], 10);
    assert_eq!(history[2]["id"], json!(ids[0]));
    // Each record is an event too: every held answer is accounted for.
    let held = eventually(Duration::from_secs(10), "the held events", || async {
        let held: Vec<_> =
            priority_events(&stack).await.into_iter().filter(|(s, o, _)| s == "b" && o == "held").collect();
        (held.len() == 2).then_some(held)
    })
    .await;
    let answered: u64 = held.iter().map(|(_, _, e)| e["data"]["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(answered, 10);
}

#[tokio::test]
async fn the_engine_lane_runs_on_a_thread_of_its_own_at_a_lower_cpu_priority() {
    let stack = Stack::start().await;
    // Answered there, as before.
    let (code, reply) = set(&stack, "api", 60).await;
    assert_eq!((code, reply["change"]["outcome"].as_str()), (None, Some("applied")), "{reply}");
    // /proc/self/task/<tid>/stat: field 19 is the nice value (after the command in parentheses).
    let mut lanes = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() == "priority-lane" {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i64 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
            lanes.push(nice);
        }
    }
    assert_eq!(lanes, [10], "one lane thread, at nice 10");
}
