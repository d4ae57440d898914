//! One replica of a group on the same PostgreSQL and NATS (`serve --replica NAME`): it claims
//! and renews the group's lease as the [`Lease`] machine says, runs the orchestrator's work
//! ([`crate::start`]) while it leads, and stops it when it steps down. Its connections to
//! PostgreSQL name the lease they write under, so the database refuses its writes once another
//! replica leads (migration `fence`), whatever this process believes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::front::Front;
use super::{Action, Lease, LeaseSettings};
use crate::Settings;
use crate::shutdown::Stopper;
use crate::storage::{self, leadership};

/// How long the leader's work gets to stop when the replica steps down or stops.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A replica's name, lease and address.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSettings {
    /// Unique in the group; a subject token.
    pub name: String,
    pub lease: LeaseSettings,
    /// Where the other replicas reach this one's HTTP front; `None`: from the listen address.
    pub advertise_url: Option<String>,
}

/// Runs the replica until `stop`: a standby until it is elected, then the leader until it steps
/// down or stops (it then gives the lease up at once). Its HTTP front listens at
/// `settings.http.addr` the whole time ([`super::front`]).
pub async fn run(
    settings: Settings,
    replica: ReplicaSettings,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ReplicaSettings { name, lease, advertise_url } = replica;
    let mut settings = settings;
    settings.validate()?;
    settings.replica = Some(name.clone());
    settings.database.application_name = application_name(&name);
    let subjects = orch_protocol::Subjects::new(&settings.subject_prefix)?;
    let pool = storage::pool(&settings.database)?;
    storage::migrate(&pool).await?;

    let listener = tokio::net::TcpListener::bind(settings.http.addr)
        .await
        .with_context(|| format!("binding the HTTP API to {}", settings.http.addr))?;
    let http_addr = listener.local_addr()?;
    let http_url = advertise_url.unwrap_or_else(|| advertised(http_addr));
    let auth = crate::http::auth::Authenticator::new(&settings.http.auth).map_err(anyhow::Error::msg)?;
    let front = Front::new(
        name.clone(),
        pool.clone(),
        auth,
        settings.http.browser_guard(http_addr),
        settings.http.manifest_max_bytes.max(settings.registry.command_max_bytes),
    )?;
    // Recorded before the front answers: a replica that says it is ready is in the cluster view.
    let started_at = chrono::Utc::now();
    storage::retry("recording this replica", || {
        leadership::announce(&pool, &name, &http_url, env!("CARGO_PKG_VERSION"), started_at)
    })
    .await?;
    let (front_stop, front_stopped) = Stopper::new();
    let front_task =
        tokio::spawn(crate::http::server::serve(listener, front.app(), settings.http.limits, front_stopped.clone()));
    let announcing = tokio::spawn(announce_loop(pool.clone(), name.clone(), http_url.clone(), started_at));
    let client = crate::nats::connect(&crate::nats::NatsSettings {
        name: format!("{}-{name}", settings.nats.name),
        ..settings.nats.clone()
    })
    .await?;
    let status =
        super::requests::start(client, subjects.clone(), pool.clone(), Some(name.clone()), front_stopped).await?;

    let (actions_tx, mut actions) = mpsc::unbounded_channel();
    let claims = tokio::spawn(claim_loop(pool.clone(), subjects, name.clone(), lease, actions_tx));
    tracing::info!(replica = %name, ttl = ?lease.ttl, http = %http_addr, advertised = %http_url,
        "replica started: a standby until it holds the lease (it forwards HTTP requests to the leader)");
    let mut leading: Option<(i64, crate::Running)> = None;
    tokio::pin!(stop);
    let result = loop {
        let action = tokio::select! {
            _ = &mut stop => break Ok(()),
            action = actions.recv() => action,
        };
        match action {
            Some(Action::Elected { term }) => {
                tracing::info!(replica = %name, term, "elected leader: starting the orchestrator's work");
                let mut fenced = settings.clone();
                fenced.database.fence = Some(format!("{name}:{term}"));
                match crate::start_behind(fenced, http_addr).await {
                    Ok(running) => {
                        front.lead(running.router());
                        leading = Some((term, running));
                    }
                    Err(e) => {
                        let _ = leadership::release(&pool, &name, term).await;
                        break Err(e.context("the elected replica could not start the orchestrator's work"));
                    }
                }
            }
            Some(Action::SteppedDown { term, reason }) => {
                tracing::warn!(replica = %name, term, %reason, "stepped down: stopping the orchestrator's work");
                front.stand_by();
                if let Some((_, running)) = leading.take() {
                    stop_work(running).await;
                }
            }
            Some(Action::Claim { .. }) | None => {}
        }
    };
    claims.abort();
    front.stand_by();
    if let Some((term, running)) = leading.take() {
        stop_work(running).await;
        match leadership::release(&pool, &name, term).await {
            Ok(()) => tracing::info!(replica = %name, term, "lease given up"),
            Err(e) => tracing::warn!(replica = %name, error = %e, "could not give the lease up; it expires by itself"),
        }
    }
    announcing.abort();
    front_stop.stop();
    let _ = front_task.await;
    let _ = status.await;
    result
}

/// `http://<addr>`, with the host's name for an address that means "every interface".
fn advertised(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Keeps this replica's row fresh, so the others know where it answers and that it runs.
async fn announce_loop(pool: sqlx::PgPool, name: String, http_url: String, started_at: chrono::DateTime<chrono::Utc>) {
    let mut tick = tokio::time::interval(super::view::ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match leadership::announce(&pool, &name, &http_url, env!("CARGO_PKG_VERSION"), started_at).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(replica = %name, error = %e, "could not record this replica in PostgreSQL");
            }
            Err(_) => {}
        }
    }
}

async fn stop_work(running: crate::Running) {
    if tokio::time::timeout(STOP_GRACE, running.shutdown()).await.is_err() {
        tracing::warn!(grace = ?STOP_GRACE, "the leader's work did not stop in time");
    }
}

/// The name a replica's connections carry (`application_name`): a standby sees whether the
/// leader still has any session, and when it has none (its process died) need not wait for the
/// lease to run out. Safety does not rest on it: a claim it forces takes a new term, which fences
/// a leader that was only cut off.
pub fn application_name(replica: &str) -> String {
    format!("orchestrator:{replica}")
}

/// True when the lease's holder has no session left in PostgreSQL.
async fn sessions_gone(pool: &sqlx::PgPool, holder: &str) -> bool {
    // Of this database only: groups in other databases of the cluster may use the same names.
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database())",
    )
        .bind(application_name(holder))
        .fetch_one(pool)
        .await
        .unwrap_or(false)
}

/// Claims or renews the lease whenever the machine says so; sends on what it decided.
async fn claim_loop(
    pool: sqlx::PgPool,
    subjects: orch_protocol::Subjects,
    name: String,
    settings: LeaseSettings,
    out: mpsc::UnboundedSender<Action>,
) {
    let mut lease = Lease::new(settings);
    // Often enough that a dead leader is seen within a quarter of a second, whatever the TTL.
    let mut tick =
        tokio::time::interval((settings.renew_every / 4).clamp(Duration::from_millis(10), Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A standby whose leader has no session left knows it died.
        let gone = match lease.role() {
            super::Role::Standby { leader: Some(leader) } if leader.holder != name => {
                sessions_gone(&pool, &leader.holder).await.then(|| (leader.holder.clone(), leader.term))
            }
            _ => None,
        };
        for action in lease.tick(Instant::now(), gone.is_some()) {
            let Action::Claim { term, force } = action else {
                let _ = out.send(action);
                continue;
            };
            let asked = Instant::now();
            // Forced only from the holder seen gone: of standbys that saw it at once, the first
            // takes the lease; the others find it held by that one.
            let from = gone.as_ref().filter(|_| force).map(|(holder, term)| (holder.as_str(), *term));
            let claim = leadership::claim(&pool, &subjects, &name, term, settings.ttl, from);
            // Up to half the lease: a renewal may wait for the leader's own writes to commit.
            let patience = settings.ttl / 2;
            let answer = match tokio::time::timeout(patience, claim).await {
                Ok(Ok(claimed)) => Ok(claimed),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {patience:?}")),
            };
            if let Err(e) = &answer {
                tracing::warn!(replica = %name, error = %e, "the lease could not be claimed or renewed");
            }
            for decided in lease.claimed(asked, Instant::now(), answer) {
                let _ = out.send(decided);
            }
        }
    }
}
