//! Stream provisioning: idempotent across restarts, drift reconciled in place where it can be,
//! reported where it cannot, and a stream holding data is never deleted.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream;
use common::{Stack, as_shipped, registration, settings};
use orch_protocol::Subjects;
use orch_testkit::ShippedUsers;
use serde_json::Value;

#[tokio::test]
async fn restart_keeps_streams_and_their_data() {
    let mut stack = Stack::start().await;
    stack.request("register", &registration("p-1", "web", 30)).await;
    let registry = |e: &Value| e["type"].as_str().unwrap().starts_with("io.orch.registry.");
    stack.wait_events(1, "event", registry).await;
    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    stack.request("register", &registration("p-2", "web", 30)).await;
    let events = stack.wait_events(2, "both events", registry).await;
    assert_eq!(events.len(), 2, "the first event survived the restart");
    for name in [stack.subjects.commands_stream(), stack.subjects.events_stream(), stack.subjects.dead_letter_stream()]
    {
        let mut s = stack.js.get_stream(&name).await.unwrap();
        let info = s.info().await.unwrap();
        assert_eq!(info.config.storage, stream::StorageType::File, "{name}");
    }
    let mut commands = stack.js.get_stream(stack.subjects.commands_stream()).await.unwrap();
    let config = commands.info().await.unwrap().config.clone();
    assert_eq!(config.retention, stream::RetentionPolicy::WorkQueue);
    assert_eq!(config.discard, stream::DiscardPolicy::New);
}

#[tokio::test]
async fn drift_is_reconciled_in_place_and_data_kept() {
    common::init_logs();
    let nats = ShippedUsers::start_with_harness(&[]);
    let client = nats.connect("harness").await;
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::default();
    // Someone created the events stream by hand with a short max age and a message in it, and the
    // dead-letter stream with memory storage (which cannot change in place).
    js.create_stream(stream::Config {
        name: subjects.events_stream(),
        subjects: vec![subjects.events_all()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(subjects.event("registry", "x", "registered"), "{}".into()).await.unwrap().await.unwrap();
    js.create_stream(stream::Config {
        name: subjects.dead_letter_stream(),
        subjects: vec![subjects.dead_letters_all()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(format!("{}.dlq.cmd.x", subjects.prefix()), "old".into()).await.unwrap().await.unwrap();

    let database_url = orch_testkit::fresh_database().await;
    let mut settings = settings("", &database_url);
    as_shipped(&mut settings, &nats);
    let running = orchestrator::start(settings).await.unwrap();

    let mut events = js.get_stream(subjects.events_stream()).await.unwrap();
    let info = events.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(7 * 24 * 3600), "max age reconciled in place");
    // The event written before is still the first (the orchestrator may have added its own since,
    // such as its node joining the inventory).
    assert!(info.state.messages >= 1);
    let first = events.get_raw_message(1).await.expect("the existing event was kept");
    assert_eq!(first.subject.as_str(), subjects.event("registry", "x", "registered"));
    let mut dlq = js.get_stream(subjects.dead_letter_stream()).await.unwrap();
    let info = dlq.info().await.unwrap();
    assert_eq!(info.config.storage, stream::StorageType::Memory, "immutable drift left alone, reported in the log");
    assert_eq!(info.state.messages, 1, "never deleted");
    running.shutdown().await;
}
