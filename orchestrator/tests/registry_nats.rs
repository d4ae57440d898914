//! The NATS side of the registry: durable commands on JetStream, request/reply, heartbeats, and
//! what happens to bad input on each path.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{Stack, eventually, of_type, publish_raw, read_stream_raw, registration};
use futures::StreamExt;
use orch_protocol::headers;
use serde_json::{Value, json};

#[tokio::test]
async fn durable_command_is_applied_and_announced() {
    let stack = Stack::start().await;
    stack.publish_command("register", &registration("svc-1", "web", 30), Some("cmd-1")).await;
    let events = stack.wait_events(1, "registered event", |e| e["subject"] == "svc-1").await;
    assert_eq!(events[0]["type"], "io.orch.registry.registered.v1");
    assert_eq!(stack.count("SELECT count(*) FROM instances WHERE id = 'svc-1'").await, 1);
    assert_eq!(stack.count("SELECT count(*) FROM processed_commands WHERE command_id = 'js:cmd-1'").await, 1);

    stack.publish_command("deregister", r#"{"id":"svc-1"}"#, None).await;
    stack.wait_events(1, "deregistered event", |e| e["type"] == "io.orch.registry.deregistered.v1").await;
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 0);
}

#[tokio::test]
async fn reply_to_header_gets_the_outcome_after_commit() {
    let stack = Stack::start().await;
    // Under the shipped users the orchestrator may publish outcomes on `orch.replies.>` only
    // (docs/protocol.md §14.2), each client on a branch of its own.
    let inbox = format!("{}.replies.harness.{}", stack.subjects.prefix(), uuid::Uuid::now_v7().simple());
    let mut replies = stack.client.subscribe(inbox.clone()).await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::REPLY_TO, inbox.as_str());
    stack
        .js
        .publish_with_headers(stack.subjects.command("registry", "register"), h, registration("r-1", "web", 30).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await.unwrap().unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["status"], "registered");
    // The reply comes after the commit.
    assert_eq!(stack.count("SELECT count(*) FROM instances WHERE id = 'r-1'").await, 1);
}

#[tokio::test]
async fn request_reply_writes_and_reads() {
    let stack = Stack::start().await;
    let (err, reply) = stack.request("register", &registration("q-1", "api", 30)).await;
    assert_eq!((err, &reply["status"]), (None, &json!("registered")));
    assert_eq!(stack.count("SELECT count(*) FROM instances WHERE id = 'q-1'").await, 1, "answered after commit");

    let (err, got) = stack.request("get", r#"{"id":"q-1"}"#).await;
    assert_eq!((err, &got["name"]), (None, &json!("api")));
    let (_, list) = stack.request("list", r#"{"name":"api"}"#).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, all) = stack.request("list", "").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let (_, found) = stack.request("discover", r#"{"name":"api","strategy":"random"}"#).await;
    assert_eq!(found["instance"]["id"], "q-1");

    let (err, missing) = stack.request("get", r#"{"id":"nope"}"#).await;
    assert_eq!(err.as_deref(), Some("404"));
    assert_eq!(missing["error"]["code"], "not_found");

    let (err, bad) = stack.request("register", r#"{"name":"api","address":"h","port":-1}"#).await;
    assert_eq!(err.as_deref(), Some("400"));
    assert_eq!(bad["error"]["field"], "port");
    let (err, bad) = stack.request("register", "{oops").await;
    assert_eq!((err.as_deref(), &bad["error"]["code"]), (Some("400"), &json!("malformed_payload")));
    let (err, bad) = stack.request("teleport", "{}").await;
    assert_eq!((err.as_deref(), &bad["error"]["code"]), (Some("404"), &json!("unknown_command")));
    // A domain nobody answers (each domain has a subscription of its own): NATS says so at once.
    let nobody = stack.client.request(stack.subjects.request("teleport", "now"), "{}".into()).await.unwrap_err();
    assert_eq!(nobody.kind(), async_nats::RequestErrorKind::NoResponders);

    let (err, gone) = stack.request("deregister", r#"{"id":"q-1"}"#).await;
    assert_eq!((err, &gone["status"]), (None, &json!("deregistered")));
}

#[tokio::test]
async fn heartbeats_over_nats_renew_and_report_unknown() {
    let stack = Stack::start().await;
    stack.request("register", &registration("hb-1", "web", 30)).await;
    let reply = stack.client.request(stack.subjects.heartbeat("hb-1"), "".into()).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap()["status"], "renewed");
    let reply = stack.client.request(stack.subjects.heartbeat("ghost"), "".into()).await.unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(reply.headers.unwrap().get(headers::SERVICE_ERROR_CODE).unwrap().as_str(), "404");
    // Fire-and-forget beats (no reply subject) are accepted too.
    stack.client.publish(stack.subjects.heartbeat("hb-1"), "".into()).await.unwrap();
    stack.client.flush().await.unwrap();
    let view = stack.running().registry().get("hb-1").await.unwrap().unwrap();
    assert!(view.lease.unwrap().last_heartbeat_at.is_some());
}

/// Every kind of bad input on the durable path: dead-letter record, dead-letter message with the
/// reason, `command_rejected` event, and the message is acknowledged (never redelivered forever).
#[tokio::test]
async fn bad_durable_commands_are_dead_lettered_once() {
    let stack = Stack::start_with(|s| s.registry.command_max_bytes = 4096).await;
    let register = stack.subjects.command("registry", "register");
    let cases: Vec<(String, Vec<u8>, &str, Option<&str>)> = vec![
        (register.clone(), b"{not json".to_vec(), "malformed_payload", None),
        (register.clone(), br#"{"name":"web","address":"h","port":"80"}"#.to_vec(), "malformed_payload", Some("port")),
        (
            register.clone(),
            br#"{"name":"web","address":"h","port":80,"colour":1}"#.to_vec(),
            "malformed_payload",
            Some("colour"),
        ),
        (register.clone(), br#"{"name":"web","address":"h","port":0}"#.to_vec(), "validation_failed", Some("port")),
        (register.clone(), vec![b' '; 5000], "payload_too_large", None),
        (stack.subjects.command("registry", "explode"), b"{}".to_vec(), "unknown_command", None),
        (format!("{}.cmd.nonsense", stack.subjects.prefix()), b"{}".to_vec(), "unknown_command", None),
        (format!("{}.cmd.registry.register.by.two", stack.subjects.prefix()), b"{}".to_vec(), "unknown_command", None),
    ];
    for (i, (subject, payload, _, _)) in cases.iter().enumerate() {
        publish_raw(&stack.js, subject, payload, Some(&format!("bad-{i}"))).await;
    }
    // A good command after the bad ones is still applied: nothing is stuck.
    stack.publish_command("register", &registration("good-1", "web", 30), None).await;
    stack.wait_events(1, "the good command's event", |e| e["subject"] == "good-1").await;

    let rejected = stack
        .wait_events(cases.len(), "command_rejected events", |e| e["type"] == "io.orch.system.command_rejected.v1")
        .await;
    assert_eq!(rejected.len(), cases.len());
    for (i, (subject, _, code, field)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let row: (String, String, Option<String>, String) =
            sqlx::query_as("SELECT code, message, field, subject FROM dead_letters WHERE command_id = $1")
                .bind(&id)
                .fetch_one(&stack.pool)
                .await
                .unwrap_or_else(|e| panic!("dead letter for case {i} ({subject}): {e}"));
        assert_eq!(row.0, *code, "case {i}: {}", row.1);
        assert_eq!(row.2.as_deref(), *field, "case {i}: {}", row.1);
        assert_eq!(row.3, *subject);
        let event = rejected.iter().find(|e| e["data"]["command_id"] == id.as_str()).expect("event per rejection");
        assert_eq!(event["data"]["error"]["code"], *code);
    }
    // Dead-letter messages carry the reason in headers and the original bytes. (Rejections of
    // different commands may be committed by different writers, so find it by content.)
    let dlq = read_stream_raw(&stack.js, &stack.subjects.dead_letter_stream(), None).await;
    assert_eq!(dlq.len(), cases.len());
    let first = dlq.iter().find(|m| m.payload.as_ref() == b"{not json").expect("dead letter of case 0");
    assert_eq!(first.subject.as_str(), "orch.dlq.cmd.registry.register");
    let h = first.headers.as_ref().unwrap();
    assert_eq!(h.get(headers::DLQ_REASON).unwrap().as_str(), "malformed_payload");
    assert_eq!(h.get(headers::DLQ_ORIGINAL_SUBJECT).unwrap().as_str(), register);
    assert_eq!(first.payload.as_ref(), b"{not json");

    // Everything was acknowledged: nothing waits for redelivery.
    let consumer: jetstream::consumer::PullConsumer = stack
        .js
        .get_consumer_from_stream(stack.subjects.commands_consumer(), stack.subjects.commands_stream())
        .await
        .unwrap();
    let info = eventually(Duration::from_secs(10), "all commands acknowledged", || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.unwrap().clone();
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
        }
    })
    .await;
    assert_eq!(info.num_redelivered, 0, "no rejected command was redelivered");
    assert_eq!(stack.count("SELECT count(*) FROM dead_letters").await, cases.len() as i64);
    // Only the good command changed the registry.
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 1);
    // The event reaches the stream through the outbox relay, a moment after the commit.
    stack.wait_events(1, "the registration's event", |e| e["type"] == "io.orch.registry.registered.v1").await;
    let events = stack.events().await;
    assert_eq!(of_type(&events, "io.orch.registry.registered.v1").len(), 1);
}

/// A retry that arrives after JetStream's duplicate window reaches the orchestrator as a new
/// message; the processed-command ledger answers it without applying it again.
#[tokio::test]
async fn late_retry_with_the_same_command_id_is_not_applied_twice() {
    let stack = Stack::start_with(|s| s.nats.streams.duplicate_window = Duration::from_millis(200)).await;
    stack.publish_command("register", &registration("d-1", "web", 30), Some("same")).await;
    stack.wait_events(1, "first registration", |e| e["subject"] == "d-1").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Same command id, different content: must be recognised as the same command, not applied.
    let mut changed: Value = serde_json::from_str(&registration("d-1", "web", 30)).unwrap();
    changed["port"] = json!(1234);
    stack.publish_command("register", &changed.to_string(), Some("same")).await;
    stack.publish_command("register", &registration("d-2", "web", 30), Some("other")).await;
    stack.wait_events(1, "a later command", |e| e["subject"] == "d-2").await;
    let port: i32 =
        sqlx::query_scalar("SELECT port FROM instances WHERE id = 'd-1'").fetch_one(&stack.pool).await.unwrap();
    assert_eq!(port, 8080, "the retry was not applied");
    let stream_messages: u64 = {
        let mut s = stack.js.get_stream(stack.subjects.commands_stream()).await.unwrap();
        s.info().await.unwrap().state.messages
    };
    assert_eq!(stream_messages, 0, "every command, the retry included, was acknowledged");
    let events = stack.events().await;
    assert_eq!(events.iter().filter(|e| e["subject"] == "d-1").count(), 1, "one event for d-1");
    assert_eq!(stack.count("SELECT count(*) FROM processed_commands WHERE command_id = 'js:same'").await, 1);
    // The reuse of the id for different content is refused and dead-lettered, not silently dropped.
    let code: String = sqlx::query_scalar("SELECT code FROM dead_letters WHERE command_id = 'same'")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(code, "conflict");
    // The same command again (same id, same content) is answered from the ledger: no dead letter.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stack.publish_command("register", &registration("d-1", "web", 30), Some("same")).await;
    stack.publish_command("register", &registration("d-3", "web", 30), Some("third")).await;
    stack.wait_events(1, "a later command", |e| e["subject"] == "d-3").await;
    assert_eq!(stack.count("SELECT count(*) FROM dead_letters").await, 1);
}

/// Ids are namespaced by path: a request's Nats-Msg-Id never meets a durable command's.
#[tokio::test]
async fn request_and_durable_ids_never_collide() {
    let stack = Stack::start().await;
    stack.publish_command("register", &registration("n-1", "web", 30), Some("dup")).await;
    stack.wait_events(1, "durable registration", |e| e["subject"] == "n-1").await;
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::MSG_ID, "dup");
    let reply = stack
        .client
        .request_with_headers(stack.subjects.request("registry", "register"), h, registration("n-2", "web", 30).into())
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["status"], "registered", "{body}");
    assert_eq!(body["instance"]["id"], "n-2");
    assert_eq!(stack.count("SELECT count(*) FROM instances").await, 2);
}

/// The client crate end to end: a typed registration answered after the commit, its event taken
/// from a durable subscription and acknowledged, a refusal with the server's code and field, and
/// the acknowledged event not delivered again to the same durable consumer.
#[tokio::test]
async fn the_client_crate_registers_follows_events_and_acknowledges() {
    use orch_client::{AckKind, Client, ConnectSettings, Request, SubscribeOptions};
    use orch_protocol::registry::{CommandReply, CommandStatus, Registration};

    let stack = Stack::start().await;
    let mut settings = ConnectSettings::new(stack.nats.url("operator"));
    settings.prefix = stack.subjects.prefix().to_string();
    let client = Client::connect(settings).await.expect("connects");
    let filter = format!("{}.evt.registry.>", stack.subjects.prefix());
    let options = |deliver: &str| {
        SubscribeOptions::new(
            client.subjects(),
            Some(filter.clone()),
            Some("client-test".into()),
            None,
            deliver,
            false,
            Duration::from_secs(30),
            16,
        )
        .unwrap()
    };
    let events = orch_client::events::open(&client, options("all")).await.expect("durable subscription");

    let registration = Registration { id: Some("c-1".into()), ..Registration::new("web", "10.0.0.1", 8080) };
    let reply: CommandReply =
        client.call_as(&Request::register(&registration).unwrap(), None).await.expect("registered");
    assert_eq!(reply.status, CommandStatus::Registered);
    assert_eq!(reply.instance.map(|i| i.id), Some("c-1".to_string()));

    // The same id under another service's name: refused with the server's code.
    let conflict = Request::register(&Registration { name: "other".into(), ..registration.clone() }).unwrap();
    let error = client.call(&conflict, None).await.unwrap_err();
    assert_eq!(error.code(), "conflict", "{error}");

    let batch = events.next(16).await.expect("no error").expect("not ended");
    let first = &batch[0];
    assert_eq!((first.ty(), first.ce_subject()), ("io.orch.registry.registered.v1", Some("c-1")));
    assert_eq!(first.deliveries(), 1);
    first.ackable().expect("durable events are acknowledged").send(AckKind::Ack);
    events.close(false).await;

    // The same durable consumer again: the acknowledged event is not delivered a second time.
    let again = orch_client::events::open(&client, options("all")).await.expect("reopened");
    let registration = Registration { id: Some("c-2".into()), ..registration };
    client.call(&Request::register(&registration).unwrap(), None).await.expect("registered");
    let batch = again.next(16).await.expect("no error").expect("not ended");
    assert_eq!(batch[0].ce_subject(), Some("c-2"), "c-1's event was acknowledged");
    again.close(true).await;
    assert!(orch_client::events::delete_durable(&client, "client-test").await.unwrap());
    client.close().await;
}
