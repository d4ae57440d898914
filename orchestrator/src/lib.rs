//! The orchestrator as a library: [`start`] takes [`Settings`], provisions NATS, migrates
//! PostgreSQL, loads the registry and starts every task; the binary (`main.rs`) only turns the
//! command line into settings ([`config`]), sets up logging and waits for a signal.
//!
//! # Layout
//!
//! The hops of a registration, from the wire to its event:
//!
//! 1. **In.** `POST /api/v1/services` (`http/services.rs`), or a NATS request on
//!    `<prefix>.req.registry.register` ([`consumers::requests`]) or a durable command on
//!    `<prefix>.cmd.registry.register` ([`consumers::commands`]). Each path decodes and validates
//!    the payload (`consumers/decode.rs` and the protocol crate's validators) into a
//!    [`registry::Submission`].
//! 2. **Registry.** [`registry::Registry::submit`] queues it for the writer shard that owns the
//!    instance ([`registry::writer`]), so commands on one instance keep their order.
//! 3. **Writer.** For a batch of commands the writer decides ([`registry::state::decide`], pure:
//!    outcome, next state, events, health transitions) and commits everything in one PostgreSQL
//!    transaction ([`storage::batch`]): the instance rows, the ledger of processed command ids
//!    (exactly once), the health history and one outbox row per event.
//! 4. **Reply.** After the commit: the HTTP response, the NATS reply, or the JetStream ack. A
//!    failure reaches the caller through the one mapping of [`errors`].
//! 5. **Relay.** [`workers::outbox_relay`] publishes each outbox row on the events stream with the
//!    event id as `Nats-Msg-Id`, then deletes it: one event per committed change, never one for a
//!    change that did not commit.
//!
//! Beside that path: leases and their sweeper ([`registry::leases`], [`registry::sweeper`]), health
//! checks ([`health`]), managed services ([`lifecycle`]) run by node agents ([`agent`]), priorities
//! ([`priority`]), and the HTTP API's live feed, metrics and dashboard ([`http`], [`metrics`]).
//! Every task stops through one [`shutdown::Shutdown`]. The command line's client commands
//! ([`cli`]) talk to a running orchestrator through the `orch-client` crate, as the benchmarks
//! and the Python bridge do.

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_store;
pub mod consumers;
pub mod dag;
pub mod errors;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod nats;
pub mod priority;
pub mod problems;
pub mod process;
pub mod registry;
pub mod resources;
pub mod settings;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod workers;
pub mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orch_protocol::Subjects;
use orch_protocol::registry::Health;
use orch_protocol::subjects::verbs;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::http::Profile;
use crate::registry::sweeper;
use crate::registry::writer::WriterTask;
use crate::registry::{Leases, Registry};
pub use crate::settings::Settings;
use crate::shutdown::Stopper;

/// How long the relay keeps publishing committed events after a stop was asked.
const OUTBOX_DRAIN: Duration = Duration::from_secs(5);

/// A started orchestrator.
pub struct Running {
    /// The address the HTTP API listens on (useful with port 0).
    pub http_addr: SocketAddr,
    /// Stops every task but the relay and the writer, which drain after them.
    shutdown: Stopper,
    relay_shutdown: Stopper,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    relay: JoinHandle<()>,
    registry: Arc<Registry>,
    /// The HTTP application, built once: building it makes the OpenAPI document.
    router: axum::Router,
    controller: lifecycle::Controller,
    /// The embedded agent; its services outlive it.
    agent: Option<(Stopper, JoinHandle<()>)>,
}

impl Running {
    /// The HTTP application, for driving the API in-process (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The registry, for tests that inspect leases.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops taking new work, finishes in-flight commands, publishes committed events, then returns.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: finishing in-flight work");
        if let Some((stop, task)) = self.agent {
            // The managed services keep running under their shims: the next start adopts them
            // (an upgrade restarts nothing). `down` is what stops them.
            stop.stop();
            let _ = task.await;
        }
        drop(self.controller);
        self.shutdown.stop();
        for task in self.tasks {
            let _ = task.await;
        }
        // Every submitter is gone once the tasks ended; dropping the last handle lets the writer
        // drain its queue and stop.
        drop(self.registry);
        drop(self.router);
        let _ = self.writer.await;
        self.relay_shutdown.stop();
        let _ = self.relay.await;
        tracing::info!("stopped");
    }
}

/// The API's token checker. An open API is allowed in the development profile, with a warning,
/// and in production only with `--insecure`.
fn api_authentication(settings: &http::HttpSettings) -> anyhow::Result<http::auth::Authenticator> {
    let auth = http::auth::Authenticator::new(&settings.auth).map_err(anyhow::Error::msg)?;
    if auth.enabled() {
        return Ok(auth);
    }
    match (settings.profile, settings.insecure) {
        (Profile::Production, false) => anyhow::bail!(
            "refusing to start: the production profile needs API authentication. Configure --api-key, \
             --api-keys-file, --jwt-secret or --jwt-jwks-file, or pass --insecure to run with an open API"
        ),
        _ => tracing::warn!(
            profile = ?settings.profile,
            "API authentication is OFF: every HTTP caller is an admin. Configure --api-key or --jwt-secret"
        ),
    }
    Ok(auth)
}

/// NATS without credentials is allowed in the development profile, with a warning, and in
/// production only with `--insecure`: the NATS subjects can do what the admin-only routes do.
fn nats_authentication(settings: &Settings) -> anyhow::Result<()> {
    let anonymous = settings.nats.credentials == nats::Credentials::None
        && orch_client::url_credentials(&settings.nats.url).is_none()
        && settings.nats.tls.client.is_none();
    if !anonymous {
        return Ok(());
    }
    match (settings.http.profile, settings.http.insecure) {
        (Profile::Production, false) => anyhow::bail!(
            "refusing to start: the production profile needs NATS credentials. Configure --nats-user and \
             --nats-password, --nats-token, --nats-nkey-file, --nats-creds or a client certificate, or pass \
             --insecure to connect without"
        ),
        _ => tracing::warn!(
            profile = ?settings.http.profile,
            "connecting to NATS without credentials: whoever reaches that NATS can do what the admin can"
        ),
    }
    Ok(())
}

/// Starts the orchestrator. Waits for PostgreSQL and NATS when they are not reachable yet.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    start_with(settings, Listen::Bind).await
}

/// Starts the orchestrator behind a listener it does not own (a replica's front, at
/// `front_addr`): the caller serves [`Running::router`].
pub async fn start_behind(settings: Settings, front_addr: SocketAddr) -> anyhow::Result<Running> {
    start_with(settings, Listen::Behind(front_addr)).await
}

/// Where the HTTP application is served.
enum Listen {
    /// On a listener of its own, at `settings.http.addr`.
    Bind,
    /// By the caller, at this address.
    Behind(SocketAddr),
}

async fn start_with(settings: Settings, listen: Listen) -> anyhow::Result<Running> {
    let started = Instant::now();
    settings.validate()?;
    let subjects = Subjects::new(&settings.subject_prefix)?;
    let auth = api_authentication(&settings.http)?;
    nats_authentication(&settings)?;

    let pool = storage::pool(&settings.database)?;
    storage::migrate(&pool).await.context("applying database migrations")?;

    let client = nats::connect(&settings.nats).await?;
    let js = async_nats::jetstream::new(client.clone());
    nats::provision(&js, &settings.nats.streams, &subjects).await?;
    let config_kv = config_store::provision(&js, &subjects, settings.nats.streams.replicas)
        .await
        .map_err(|e| anyhow::anyhow!(e.0.message))?;
    let config = config_store::ConfigStore::open(config_kv, pool.clone(), subjects.clone())
        .await
        .map_err(|e| anyhow::anyhow!("opening the config store: {}", e.0.message))?;

    let leases = Arc::new(Leases::default());
    let summaries = storage::retry("loading instances", || storage::instances::all_summaries(&pool)).await?;
    let instance_count = summaries.len();
    leases.load(summaries.iter().map(|r| {
        (r.id.clone(), Duration::from_secs(r.ttl_seconds.max(1) as u64), r.lease == Health::Critical.as_str())
    }));
    let self_preservation =
        storage::retry("reading system state", || storage::system::get(&pool, storage::system::SELF_PRESERVATION))
            .await?
            .and_then(|v| v.get("active").and_then(|a| a.as_bool()))
            .unwrap_or(false);
    let tracker = health::load_tracker(&pool, &summaries, &settings.health.critical_services).await?;
    drop(summaries);
    let with_checks = storage::retry("loading checks", || storage::instances::all_with_checks(&pool)).await?;

    let metrics = Arc::new(metrics::Metrics::default());
    let outbox_written = Arc::new(Notify::new());
    let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let (writer, writer_task) = WriterTask {
        pool: pool.clone(),
        subjects: subjects.clone(),
        leases: leases.clone(),
        batch_max: settings.registry.batch_max,
        outbox_written: outbox_written.clone(),
        max_payload_kept: settings.registry.command_max_bytes,
        metrics: metrics.clone(),
        shards: settings.registry.writer_shards,
        shard: 0,
        policy: settings.health.policy(),
        changes: Some(changes_tx),
    }
    .spawn();
    let registry =
        Arc::new(Registry::new(writer, leases, pool.clone(), settings.registry.request_timeout, metrics.clone()));
    // Before any task starts, so the tracker never deregisters during a persisted self-preservation.
    registry.set_self_preservation(self_preservation);

    // nats checks go over a connection of their own when one is configured, so its user's
    // permissions bound them, not only what registration admits.
    let check_client = match &settings.health.nats_user {
        None => client.clone(),
        Some((user, password)) => {
            let checks = nats::NatsSettings {
                name: format!("{}-checks", settings.nats.name),
                credentials: nats::Credentials::UserPassword { user: user.clone(), password: password.clone() },
                ..settings.nats.clone()
            };
            tracing::info!(user = %user, "nats checks are sent over a connection of their own");
            nats::connect(&checks).await?
        }
    };
    let prober =
        health::probe::Prober::new(check_client, settings.health.exec_enabled, settings.health.targets.clone())?;
    let checker =
        Arc::new(health::Checker::new(prober.clone(), registry.clone(), metrics.clone(), settings.health.concurrency));
    for instance in &with_checks {
        checker.sync(&instance.id, Some(instance));
    }
    let checks = checker.len();
    drop(with_checks);
    let monitor = Arc::new(health::Monitor::new(checker, tracker));

    let (shutdown, shutdown_rx) = Stopper::new();
    let (relay_shutdown, relay_shutdown_rx) = Stopper::new();
    let relay = tokio::spawn(
        workers::outbox_relay::OutboxRelay {
            pool: pool.clone(),
            js: js.clone(),
            written: outbox_written.clone(),
            metrics: metrics.clone(),
            shards: settings.registry.writer_shards,
            subjects: subjects.clone(),
        }
        .run(relay_shutdown_rx, OUTBOX_DRAIN),
    );

    // Subscribe before reporting ready, so no request or heartbeat finds nobody listening.
    // The priority domain, which an engine may flood, has a lane of its own (consumers::engine_lane);
    // the others share the main connection, each with a subscription of its own.
    let mut request_subs = Vec::new();
    for domain in orch_protocol::subjects::REQUEST_DOMAINS.into_iter().filter(|d| *d != verbs::PRIORITY) {
        let sub = client.queue_subscribe(subjects.requests_of(domain), consumers::QUEUE_GROUP.into()).await?;
        request_subs.push((domain, sub));
    }
    let heartbeat_sub = client.queue_subscribe(subjects.heartbeats_all(), consumers::QUEUE_GROUP.into()).await?;
    // The node inventory subscribes to the agents' reports before the embedded agent sends its
    // first, so the nodes are known as early as possible.
    let (nodes, nodes_task) = resources::tracker::start(
        pool.clone(),
        client.clone(),
        subjects.clone(),
        settings.nodes,
        outbox_written.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    // A round trip: the server handles a connection's messages in order, so once this is
    // answered the subscriptions above are registered.
    js.query_account().await.context("confirming subscriptions with the NATS server")?;

    let agent = settings.agent.clone().map(|agent_settings| {
        let (stop, stopped) = Stopper::new();
        let run = agent::run(client.clone(), subjects.clone(), agent_settings, stopped);
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(error = format!("{e:#}"), "the embedded agent failed");
            }
        });
        (stop, task)
    });
    let (priorities, priority_task) = priority::Priorities::start(
        priority::Config { limits: settings.priority, subjects: subjects.clone() },
        pool.clone(),
        outbox_written.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let (records_tx, records_rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder_task = tokio::spawn(lifecycle::recorder::run(pool.clone(), records_rx, outbox_written.clone()));
    let (controller, controller_task) = lifecycle::Controller::start(
        lifecycle::ControllerConfig { settings: settings.lifecycle.clone(), subjects: subjects.clone() },
        lifecycle::Collaborators {
            pool: pool.clone(),
            nats: client.clone(),
            registry: registry.clone(),
            prober: prober.clone(),
            records: records_tx,
            priorities: priorities.clone(),
            metrics: metrics.clone(),
            nodes: nodes.clone(),
            config: config.clone(),
        },
        shutdown_rx.clone(),
    )
    .await?;

    let (workflows, workflow_task) = workflow::executor::start(
        pool.clone(),
        workflow::steps::Effects {
            pool: pool.clone(),
            nats: client.clone(),
            subjects: subjects.clone(),
            registry: registry.clone(),
            controller: controller.clone(),
            priorities: priorities.clone(),
            prober: prober.clone(),
            local_node: settings.agent.as_ref().map(|a| a.node.clone()),
        },
        settings.workflow.clone(),
        outbox_written.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let scheduler_task = tokio::spawn(workflow::scheduler::run(pool.clone(), workflows.clone(), shutdown_rx.clone()));
    let listener_task = tokio::spawn(workflow::listener::run(
        pool.clone(),
        client.clone(),
        subjects.clone(),
        workflows.clone(),
        shutdown_rx.clone(),
    ));
    let backends = consumers::requests::Backends {
        registry: registry.clone(),
        health: monitor.clone(),
        controller: controller.clone(),
        priorities: priorities.clone(),
        workflows: workflows.clone(),
        nodes: nodes.clone(),
        config: config.clone(),
    };
    let request_tasks = request_subs.into_iter().map(|(domain, sub)| {
        tokio::spawn(consumers::requests::run(
            domain,
            consumers::requests::Concurrency::Tasks,
            client.clone(),
            sub,
            subjects.clone(),
            backends.clone(),
            settings.registry.command_max_bytes,
            shutdown_rx.clone(),
        ))
    });
    let engine_lane = consumers::engine_lane::start(
        nats::NatsSettings { name: format!("{}-priority", settings.nats.name), ..settings.nats.clone() },
        subjects.clone(),
        backends.clone(),
        settings.registry.command_max_bytes,
        shutdown_rx.clone(),
    )
    .await?;
    let mut tasks = vec![
        tokio::spawn(
            consumers::commands::CommandConsumer {
                js: js.clone(),
                subjects: subjects.clone(),
                registry: registry.clone(),
                batch_max: settings.registry.batch_max,
                command_max_bytes: settings.registry.command_max_bytes,
            }
            .run(shutdown_rx.clone()),
        ),
        tokio::spawn(consumers::heartbeats::run(
            client.clone(),
            heartbeat_sub,
            subjects.clone(),
            registry.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(sweeper::run(
            registry.clone(),
            settings.registry.sweep.clone(),
            self_preservation,
            shutdown_rx.clone(),
        )),
        tokio::spawn(health::run(
            monitor.clone(),
            registry.clone(),
            metrics.clone(),
            settings.health.clone(),
            changes_rx,
            shutdown_rx.clone(),
        )),
        tokio::spawn(workers::maintenance::run(pool.clone(), settings.retention, metrics.clone(), shutdown_rx.clone())),
    ];

    tasks.extend(request_tasks);
    tasks.push(engine_lane);
    tasks.push(recorder_task);
    tasks.push(priority_task);
    tasks.push(controller_task);
    tasks.push(workflow_task);
    tasks.push(scheduler_task);
    tasks.push(listener_task);
    tasks.push(nodes_task);

    // One orchestrator alone answers `orch.req.cluster.status` itself; replicas answer it from
    // their own connection, standbys too (`cluster::replica`).
    if settings.replica.is_none() {
        tasks.push(
            cluster::requests::start(client.clone(), subjects.clone(), pool.clone(), None, shutdown_rx.clone()).await?,
        );
    }
    let (listener, http_addr) = match listen {
        Listen::Bind => {
            let listener = tokio::net::TcpListener::bind(settings.http.addr)
                .await
                .with_context(|| format!("binding the HTTP API to {}", settings.http.addr))?;
            let addr = listener.local_addr()?;
            (Some(listener), addr)
        }
        Listen::Behind(addr) => (None, addr),
    };
    let state = http::AppState {
        registry: registry.clone(),
        pool: pool.clone(),
        nats: client.clone(),
        max_body_bytes: settings.registry.command_max_bytes,
        manifest_max_bytes: settings.http.manifest_max_bytes,
        metrics,
        health: monitor,
        controller: controller.clone(),
        priorities,
        subjects: subjects.clone(),
        auth,
        feed: http::ws::Feed::new(&settings.http.feed, shutdown_rx.clone()),
        dashboard_dir: settings.http.dashboard_dir.clone(),
        browser: Arc::new(settings.http.browser_guard(http_addr)),
        limits: http::server::RequestLimits::new(&settings.http.limits),
        replica: settings.replica.clone(),
        workflows,
        nodes,
        config,
        followers: Arc::new(tokio::sync::Semaphore::new(http::FOLLOWERS_MAX)),
    };
    if !settings.http.dashboard_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %settings.http.dashboard_dir.display(),
            "the dashboard is not built there; `/` explains how to build it (scripts/dashboard.sh)"
        );
    }
    let app = http::app(state);
    let router = app.clone();
    if let Some(listener) = listener {
        tasks.push(tokio::spawn(http::server::serve(listener, app, settings.http.limits, shutdown_rx.clone())));
    }

    tracing::info!(
        http = %http_addr,
        nats = %nats::redacted_url(&settings.nats.url),
        prefix = %subjects.prefix(),
        instances = instance_count,
        checks,
        self_preservation,
        startup_ms = started.elapsed().as_millis() as u64,
        "orchestrator ready"
    );
    Ok(Running {
        http_addr,
        shutdown,
        relay_shutdown,
        tasks,
        writer: writer_task,
        relay,
        registry,
        router,
        controller,
        agent,
    })
}
