//! Failures stay contained: an event JetStream refuses does not stop the others, an agent's report
//! speaks only for the node of its subject, and a read-only PostgreSQL (as during a failover)
//! loses nothing.

mod common;

use std::time::Duration;

use common::lifecycle::{apply, sleeper, wait_for};
use common::{Stack, eventually, registration};
use orch_testkit::free_port;
use serde_json::{Value, json};

/// Rows the relay must refuse: a subject the client refuses (white space), and one no stream
/// captures (one the orchestrator's NATS user may publish, so JetStream's "no responders" is
/// the refusal). One on a registry writer's shard, one on the lifecycle shard.
const POISON: [(i16, &str); 2] = [(0, "orch.evt.resource.bad node.pressure_high"), (-1, "orch.replies.no_stream")];

#[tokio::test]
async fn a_poisoned_outbox_row_is_set_aside_and_the_rest_is_published() {
    let stack = Stack::start().await;
    for (shard, subject) in POISON {
        sqlx::query("INSERT INTO outbox (shard, msg_id, subject, payload) VALUES ($1, gen_random_uuid(), $2, '{}')")
            .bind(shard)
            .bind(subject)
            .execute(&stack.pool)
            .await
            .unwrap();
    }
    // Events committed behind the poisoned rows, on the same shard and on others.
    for i in 0..5 {
        let (code, reply) = stack.request("register", &registration(&format!("after-{i}"), "after", 30)).await;
        assert_eq!(code, None, "{reply}");
    }

    let registered = stack
        .wait_events(5, "the events behind the poisoned rows", |e| e["type"] == "io.orch.registry.registered.v1")
        .await;
    assert_eq!(registered.len(), 5);
    let isolated =
        stack.wait_events(2, "an alarm per poisoned row", |e| e["type"] == "io.orch.system.event_isolated.v1").await;
    let mut subjects: Vec<&str> = isolated.iter().map(|e| e["data"]["subject"].as_str().unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, ["orch.evt.resource.bad node.pressure_high", "orch.replies.no_stream"]);
    for alarm in &isolated {
        assert_eq!(alarm["data"]["attempts"], 5, "{alarm}");
        assert!(!alarm["data"]["error"].as_str().unwrap().is_empty(), "{alarm}");
    }

    let dead: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, code, payload FROM dead_letters ORDER BY subject")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[1].0, "orch.replies.no_stream");
    assert!(dead.iter().all(|(_, code, payload)| code == "unpublishable_event" && payload == b"{}"), "{dead:?}");
    assert_eq!(stack.count("SELECT count(*) FROM outbox WHERE subject IN ('orch.replies.no_stream')").await, 0);

    let port = stack.http_port();
    let metrics =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/metrics").unwrap().1).await.unwrap();
    assert!(metrics.contains("orch_outbox_isolated_total 2"), "{metrics}");
}

#[tokio::test]
async fn an_agent_report_speaks_for_the_node_of_its_subject_only() {
    let stack = Stack::start_with(|s| s.lifecycle.shedding.memory = 0.9).await;
    apply(&stack, &sleeper("web", free_port(), "0ms", "")).await;
    wait_for(&stack, &[("web", "ready")]).await;

    let report = |node: &str| {
        json!({"node": node, "cpu": 0.1, "memory": 0.99, "at": chrono::Utc::now()}).to_string().into_bytes()
    };
    // A node name in the payload that is no subject token, on node "edge"'s subject.
    stack.client.publish("orch.agent.edge.pressure", report("bad node.x").into()).await.unwrap();
    // A report on a subject whose node is not a valid name is dropped.
    stack.client.publish("orch.agent.Edge_2.pressure", report("other").into()).await.unwrap();
    stack.client.flush().await.unwrap();

    let high = stack.wait_events(1, "pressure on edge", |e| e["type"] == "io.orch.resource.pressure_high.v1").await;
    assert_eq!(high[0]["data"]["node"], "edge", "{}", high[0]);
    assert_eq!(high[0]["subject"], "edge", "{}", high[0]);
    // The events stream stores each event's NATS subject: the node's, never the payload's.
    let raw = common::read_stream_raw(&stack.js, "ORCH_EVENTS", Some("orch.evt.resource.*.pressure_high")).await;
    let subjects: Vec<&str> = raw.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["orch.evt.resource.edge.pressure_high"]);
}

#[tokio::test]
async fn read_only_postgres_loses_no_durable_command() {
    use sqlx::Connection;
    let stack = Stack::start().await;
    let database = stack.database_url.rsplit_once('/').unwrap().1.to_string();
    let mut admin = sqlx::PgConnection::connect(&stack.database_url).await.unwrap();
    let reconnect_everyone = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                              WHERE datname = current_database() AND pid <> pg_backend_pid()";

    // As during a failover: the database turns read-only, and the orchestrator's connections
    // are cut (admin shutdown) and come back read-only.
    sqlx::query(&format!("ALTER DATABASE {database} SET default_transaction_read_only = on"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(reconnect_everyone).execute(&mut admin).await.unwrap();

    let js = &stack.js;
    let consumer_name = stack.subjects.commands_consumer();
    for i in 0..3 {
        stack.publish_command("register", &registration(&format!("ro-{i}"), "ro", 30), Some(&format!("ro-{i}"))).await;
    }
    // The orchestrator has taken all three and holds them, unacknowledged, while it cannot write.
    eventually(Duration::from_secs(20), "the commands delivered to the orchestrator", || async {
        let stream = js.get_stream(stack.subjects.commands_stream()).await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&consumer_name).await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.delivered.stream_sequence >= 3 && info.num_ack_pending >= 1).then_some(())
    })
    .await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&mut admin).await.unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered while the database is read-only");

    sqlx::query("SET default_transaction_read_only = off").execute(&mut admin).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {database} RESET default_transaction_read_only"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(reconnect_everyone).execute(&mut admin).await.unwrap();

    eventually(Duration::from_secs(30), "the three registrations stored", || async {
        let pool = sqlx::PgPool::connect(&stack.database_url).await.ok()?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM instances WHERE name = 'ro'").fetch_one(&pool).await.ok()?;
        (n == 3).then_some(())
    })
    .await;
    let pool = sqlx::PgPool::connect(&stack.database_url).await.unwrap();
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&pool).await.unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
    let events: Vec<Value> = stack
        .wait_events(3, "the three registrations announced", |e| e["type"] == "io.orch.registry.registered.v1")
        .await;
    assert_eq!(events.len(), 3);
}

/// Every table that grows with use is held to its bound by the maintenance round (which runs at
/// start), its size is in the metrics, and every stream has a byte limit besides its age.
#[tokio::test]
async fn growth_is_bounded() {
    let mut stack = Stack::start_with(|s| {
        let r = &mut s.retention;
        r.dead_letters = Duration::from_secs(3600);
        r.dead_letters_max = 3;
        r.priority_changes = Duration::from_secs(3600);
        r.priority_changes_max = 3;
        r.manifests = 2;
        r.startup_runs = 2;
    })
    .await;
    let pool = stack.pool.clone();
    for age_minutes in [120, 5, 4, 3, 2, 1] {
        let at = format!("now() - interval '{age_minutes} minutes'");
        sqlx::query(&format!(
            "INSERT INTO dead_letters (id, received_at, subject, code, message, payload, payload_truncated)
             VALUES (gen_random_uuid(), {at}, 'orch.cmd.registry.register', 'validation_failed', '{age_minutes}', '', false)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "INSERT INTO priority_changes (id, service, at, action, outcome, change)
             VALUES (gen_random_uuid(), 'web', {at}, 'set', 'applied', '{{}}')"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "INSERT INTO startup_runs (id, manifest_version, started_at) VALUES (gen_random_uuid(), 1, {at})"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO manifests (body, source, desired) VALUES ('', 'test', 'down')")
            .execute(&pool)
            .await
            .unwrap();
    }
    let newest_manifest: i64 = sqlx::query_scalar("SELECT max(version) FROM manifests").fetch_one(&pool).await.unwrap();

    stack.stop_orchestrator().await;
    stack.start_orchestrator().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    eventually(Duration::from_secs(20), "every table at its bound", || async {
        let counts = (
            count("SELECT count(*) FROM dead_letters").await,
            count("SELECT count(*) FROM priority_changes").await,
            count("SELECT count(*) FROM manifests").await,
            count("SELECT count(*) FROM startup_runs").await,
        );
        (counts == (3, 3, 2, 2)).then_some(())
    })
    .await;
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT message FROM dead_letters ORDER BY received_at").fetch_all(&pool).await.unwrap();
    assert_eq!(kept, ["3", "2", "1"], "the newest are kept");
    assert_eq!(count("SELECT max(version) FROM manifests").await, newest_manifest, "the current manifest stays");

    let port = stack.http_port();
    let metrics = eventually(Duration::from_secs(20), "the table sizes in the metrics", || async move {
        let text =
            tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/metrics").unwrap().1).await.unwrap();
        text.contains("orch_table_rows{table=\"dead_letters\"} 3").then_some(text)
    })
    .await;
    assert!(metrics.contains("orch_table_rows{table=\"manifests\"} 2"), "{metrics}");
    assert!(metrics.contains("orch_stream_bytes{stream=\"ORCH_EVENTS\"}"), "{metrics}");

    for (stream, bytes) in [("ORCH_COMMANDS", 1 << 30), ("ORCH_EVENTS", 1 << 30), ("ORCH_DLQ", 256 << 20)] {
        let mut stream = stack.js.get_stream(stream).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(config.max_bytes, bytes, "{stream:?}");
    }
}

/// The NUL character, which PostgreSQL cannot store, is refused at the edge naming its field on
/// every path (HTTP body and query, NATS request, durable command) instead of failing the batch
/// it would be written with: the registrations and priority changes around it go through.
#[tokio::test]
async fn the_nul_character_is_refused_naming_its_field_and_fails_nothing_else() {
    let stack = Stack::start().await;
    let poisoned = r#"{"name": "web", "address": "127.0.0.1", "port": 9000, "metadata": {"owner": "a\u0000b"}}"#;
    let (status, reply) =
        common::http::call_raw(&stack, "POST", "/api/v1/services", Some(poisoned.into()), "application/json", &[])
            .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["field"], "metadata.owner");
    let (status, reply) = common::http::call(&stack, "GET", "/api/v1/services?tag=a%00b", None).await;
    assert_eq!((status.as_u16(), reply["error"]["field"].as_str()), (400, Some("tag")), "{reply}");
    let (status, reply) = common::http::call(&stack, "GET", "/api/v1/health/history?service=a%00b", None).await;
    assert_eq!((status.as_u16(), reply["error"]["field"].as_str()), (400, Some("service")), "{reply}");
    let (status, reply) = common::http::call_raw(
        &stack,
        "PATCH",
        "/api/v1/priorities/web/policy",
        Some("[null, null]".into()),
        "application/json",
        &[],
    )
    .await;
    assert_eq!((status.as_u16(), reply["error"]["code"].as_str()), (400, Some("malformed_payload")), "{reply}");

    // Over NATS, a poisoned priority change among good ones: only it is refused.
    let changes = futures::future::join_all((0..8).map(|i| {
        let reason = if i == 3 { "load \\u0000" } else { "load" };
        let body = format!(r#"{{"service": "s{i}", "value": 60, "source": "engine:test", "reason": "{reason}"}}"#);
        let stack = &stack;
        async move { stack.request_on("priority", "set", &body).await }
    }))
    .await;
    for (i, (code, reply)) in changes.iter().enumerate() {
        if i == 3 {
            assert_eq!((code.as_deref(), reply["error"]["field"].as_str()), (Some("400"), Some("reason")), "{reply}");
        } else {
            assert_eq!(code.as_deref(), None, "s{i}: {reply}");
        }
    }

    // On the durable path it is dead-lettered with its field; the command after it is applied.
    stack.publish_command("register", &poisoned.replace("\"web\"", "\"poisoned\""), Some("nul-1")).await;
    stack.publish_command("register", &registration("good-1", "good", 30), Some("nul-2")).await;
    stack.wait_events(1, "the good registration", |e| e["subject"] == "good-1").await;
    let field = eventually(Duration::from_secs(10), "the poisoned command dead-lettered", || async {
        sqlx::query_as::<_, (Option<String>,)>("SELECT field FROM dead_letters WHERE command_id = 'nul-1'")
            .fetch_optional(&stack.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(field.0.as_deref(), Some("metadata.owner"));
}
