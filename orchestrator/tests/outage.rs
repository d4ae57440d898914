//! Outages of NATS and PostgreSQL during load stall progress, not correctness: the orchestrator
//! keeps running, nothing accepted is lost, nothing is applied twice, and it resumes by itself.

mod common;

use std::time::Duration;

use common::load::{Load, wait_drained};
use common::{as_shipped, read_stream, settings};
use orch_protocol::Subjects;
use orch_testkit::{Postgres, ShippedUsers, http_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_during_load() {
    common::init_logs();
    let mut users = ShippedUsers::start_with_harness(&[]);
    let database_url = orch_testkit::fresh_database().await;
    let mut settings = settings("", &database_url);
    as_shipped(&mut settings, &users);
    let running = orchestrator::start(settings).await.unwrap();
    let client = async_nats::ConnectOptions::with_user_and_password("harness".into(), users.password("harness"))
        .retry_on_initial_connect()
        .connect(users.nats.url())
        .await
        .unwrap();
    let nats = &mut users.nats;
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::default();
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();

    let load = Load { registers: 1500, updates: 300, deregisters: 300, pace: Duration::from_millis(300) };
    let publisher = load.spawn_publish(&js, &subjects);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A crash of the server, not a polite stop; then a second, graceful restart.
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.start_again();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart();
    let retries = publisher.await.unwrap();

    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;
    let events = read_stream(&js, &subjects.events_stream(), None).await;
    load.verify(&pool, &events).await;
    eprintln!("publisher retried {retries} commands across the restarts");

    // Still serving.
    let port = running.http_addr.port();
    let (status, body) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz").unwrap()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_ten_seconds_during_load() {
    common::init_logs();
    let users = ShippedUsers::start_with_harness(&[]);
    let postgres = Postgres::start();
    let database_url = orch_testkit::fresh_database_on(&postgres.url).await;
    let running = orchestrator::start({
        let mut settings = settings("", &database_url);
        as_shipped(&mut settings, &users);
        settings.registry.request_timeout = Duration::from_secs(2);
        settings
    })
    .await
    .unwrap();
    let js = async_nats::jetstream::new(users.connect("harness").await);
    let subjects = Subjects::default();

    let load = Load { registers: 1500, updates: 300, deregisters: 300, pace: Duration::from_millis(300) };
    let publisher = load.spawn_publish(&js, &subjects);
    tokio::time::sleep(Duration::from_millis(300)).await;
    postgres.stop();
    let down_since = std::time::Instant::now();

    // While PostgreSQL is down, HTTP writes answer 503 with a JSON reason instead of hanging.
    let port = running.http_addr.port();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http_request(port, "POST", "/api/v1/services", Some(r#"{"name":"during","address":"h","port":1}"#)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");
    let (status, _) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz").unwrap()).await.unwrap();
    assert_eq!(status, 503, "not ready without PostgreSQL");

    let remaining = Duration::from_secs(10).saturating_sub(down_since.elapsed());
    tokio::time::sleep(remaining).await;
    postgres.start_again();
    publisher.await.unwrap();

    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;
    let events = read_stream(&js, &subjects.events_stream(), None).await;
    load.verify(&pool, &events).await;
    let (status, _) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz").unwrap()).await.unwrap();
    assert_eq!(status, 200, "ready again by itself");
    running.shutdown().await;
}

/// A three-node NATS cluster with every stream replicated three times (`--stream-replicas 3`):
/// the NATS server the orchestrator is connected to is killed (SIGKILL) under a command load.
/// The orchestrator moves to another member by itself, and every command is applied exactly
/// once, with exactly one event per change; nothing is restarted by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_under_load_loses_nothing() {
    common::init_logs();
    let mut users = ShippedUsers::start_cluster_with_harness(&[], 3);
    let database_url = orch_testkit::fresh_database().await;
    let mut settings = settings("", &database_url);
    as_shipped(&mut settings, &users);
    settings.nats.streams.replicas = 3;
    let name = settings.nats.name.clone();
    let running = orchestrator::start(settings).await.unwrap();
    let js = async_nats::jetstream::new(users.connect("harness").await);
    let subjects = Subjects::default();
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let commands = js.get_stream(subjects.commands_stream()).await.unwrap().info().await.unwrap().config.clone();
    assert_eq!(commands.num_replicas, 3);

    let load = Load { registers: 1500, updates: 300, deregisters: 300, pace: Duration::from_millis(300) };
    let publisher = load.spawn_publish(&js, &subjects);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The member the orchestrator's main connection is on.
    let mut members: Vec<&mut orch_testkit::NatsServer> =
        std::iter::once(&mut users.nats).chain(&mut users.peers).collect();
    let connected = members
        .iter()
        .position(|m| m.client_names().contains(&name))
        .expect("the orchestrator is connected to a member");
    members[connected].kill();
    let retries = publisher.await.unwrap();

    wait_drained(&js, &subjects, &pool, Duration::from_secs(120)).await;
    let events = read_stream(&js, &subjects.events_stream(), None).await;
    load.verify(&pool, &events).await;
    eprintln!("publisher retried {retries} commands across the loss of a member");
    let port = running.http_addr.port();
    let (status, body) =
        tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz").unwrap()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    running.shutdown().await;
}
