//! The registry: instances with leases, discovery, and the single writer that applies every change.

pub mod check_targets;
pub mod decision;
pub mod discovery;
pub mod instance_health;
pub mod leases;
pub mod state;
pub mod sweeper;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orch_protocol::registry::{Health, Instance, Registration};
use serde::Serialize;
use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::storage::{self, instances};
pub use discovery::Strategy;
pub use leases::{Beat, LeaseView, Leases};
pub use state::{Command, Outcome, Reply, Status};
pub use writer::{Body, Change, Meta, Submission, WriteError, Writer};

/// How the registry takes and applies commands.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// Largest command payload accepted (bytes); larger ones are dead-lettered, and HTTP bodies
    /// other than manifests take the same limit.
    pub command_max_bytes: usize,
    /// Most commands applied in one PostgreSQL transaction (group commit).
    pub batch_max: usize,
    /// Parallel writers. Commands on one instance always go to the same writer, so they keep
    /// their order; more writers overlap transactions on more cores.
    pub writer_shards: usize,
    /// How long an HTTP or NATS request waits for its command to commit before answering
    /// `unavailable`.
    pub request_timeout: Duration,
    pub sweep: sweeper::SweepSettings,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            command_max_bytes: 64 * 1024,
            batch_max: 512,
            writer_shards: 2,
            request_timeout: Duration::from_secs(10),
            sweep: sweeper::SweepSettings::default(),
        }
    }
}

/// An instance with its live lease information.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    #[serde(flatten)]
    pub instance: Instance,
    // Flattened, `None` adds no field: the schema is that of the fields it adds when present.
    #[serde(flatten)]
    #[schema(value_type = LeaseView)]
    pub lease: Option<LeaseView>,
}

/// A page of a listing: `{"items": [...], "next": "<id>" | null}`; pass `next` as `after`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = InstancePage)]
pub struct Page {
    pub items: Vec<InstanceView>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// Result of a discovery query.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Discovery {
    pub service: String,
    pub strategy: Strategy,
    /// The instance the strategy picked; `null` when none is healthy.
    #[schema(required = true)]
    pub instance: Option<Instance>,
    /// Every passing instance of the service.
    pub instances: Vec<Instance>,
}

pub struct Registry {
    pub writer: Writer,
    pub leases: Arc<Leases>,
    /// Set by the sweeper while too many leases run out at once; the health tracker deregisters
    /// nothing meanwhile.
    self_preservation: AtomicBool,
    /// Operators' requests to end self-preservation, for the sweeper (which takes the receiver).
    end_requests: tokio::sync::mpsc::Sender<sweeper::EndRequest>,
    end_receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<sweeper::EndRequest>>>,
    pool: PgPool,
    balancer: discovery::Balancer,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(
        writer: Writer,
        leases: Arc<Leases>,
        pool: PgPool,
        request_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Registry {
        let (end_requests, end_receiver) = tokio::sync::mpsc::channel(16);
        Registry {
            writer,
            leases,
            self_preservation: AtomicBool::new(false),
            end_requests,
            end_receiver: std::sync::Mutex::new(Some(end_receiver)),
            pool,
            balancer: Default::default(),
            request_timeout,
            metrics,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn self_preservation(&self) -> bool {
        self.self_preservation.load(Ordering::Relaxed)
    }

    pub fn set_self_preservation(&self, active: bool) {
        self.self_preservation.store(active, Ordering::Relaxed);
    }

    /// Ends self-preservation at an operator's request (`principal`, with an optional `reason`),
    /// for a deliberate mass shutdown that would otherwise keep it on: the end is committed with
    /// its `self_preservation_exited` event by `principal`, then the overdue leases expire.
    /// `conflict` when it is not on.
    pub async fn end_self_preservation(
        &self,
        principal: String,
        reason: Option<String>,
    ) -> Result<orch_protocol::events::SelfPreservationData, orch_protocol::ProtocolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = sweeper::EndRequest { principal, reason, reply };
        let stopped = || WriteError::Unavailable("the lease sweeper is not running; retry shortly".into());
        self.end_requests.send(request).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The receiver of [`Registry::end_self_preservation`]'s requests, for the one sweeper.
    pub(crate) fn take_end_requests(&self) -> Option<tokio::sync::mpsc::Receiver<sweeper::EndRequest>> {
        self.end_receiver.lock().expect("not poisoned").take()
    }

    /// Submits a command on behalf of a caller that waits (HTTP, request/reply): gives up with
    /// `Unavailable` after the request timeout, and the writer then drops the command if it has not
    /// been applied yet.
    pub async fn submit(&self, submission: Submission) -> Result<Outcome, WriteError> {
        match tokio::time::timeout(self.request_timeout, self.writer.submit(submission)).await {
            Ok(result) => result,
            Err(_) => Err(WriteError::Unavailable(format!(
                "the command was not committed within {:?}; PostgreSQL may be unavailable. Retrying is safe",
                self.request_timeout
            ))),
        }
    }

    /// A heartbeat: renews the lease in memory, and submits a recovery if the instance was critical.
    pub fn heartbeat(&self, id: &str) -> Beat {
        let beat = self.leases.beat(id);
        self.metrics.heartbeat(match beat {
            Beat::Renewed => "renewed",
            Beat::NeedsRecovery => "recovering",
            Beat::Unknown => "unknown",
        });
        if beat == Beat::NeedsRecovery {
            // Spawned, so a writer stalled by a database outage never holds up the heartbeat loop.
            let (writer, id) = (self.writer.clone(), id.to_string());
            tokio::spawn(async move { writer.submit_detached(writer::internal(Command::Recover { id })).await });
        }
        beat
    }

    pub async fn get(&self, id: &str) -> storage::Result<Option<InstanceView>> {
        Ok(instances::get(&self.pool, id).await?.map(|instance| self.view(instance)))
    }

    /// One page of instances matching `filter`, and the cursor of the next page when there is one.
    pub async fn list(&self, filter: &instances::Filter) -> storage::Result<Page> {
        // One row more than asked tells whether another page exists.
        let probe = instances::Filter { limit: filter.limit + 1, ..filter.clone() };
        let mut found = instances::list(&self.pool, &probe).await?;
        let more = found.len() as i64 > filter.limit;
        found.truncate(filter.limit as usize);
        let next = if more { found.last().map(|i| i.id.clone()) } else { None };
        Ok(Page { items: found.into_iter().map(|i| self.view(i)).collect(), next })
    }

    /// Passing instances of `service` and the one `strategy` picks.
    pub async fn discover(&self, service: &str, strategy: Strategy) -> storage::Result<Discovery> {
        let filter = instances::Filter {
            name: Some(service.to_string()),
            health: Some(Health::Passing),
            limit: 10_000,
            discoverable: true,
            ..Default::default()
        };
        let instances = instances::list(&self.pool, &filter).await?;
        let instance = self.balancer.choose(service, &instances, strategy).cloned();
        Ok(Discovery { service: service.to_string(), strategy, instance, instances })
    }

    fn view(&self, instance: Instance) -> InstanceView {
        let lease = self.leases.view(&instance.id);
        InstanceView { instance, lease }
    }
}

/// Gives a registration without an id a fresh UUIDv7.
pub fn with_id(mut registration: Registration) -> Registration {
    if registration.id.is_none() {
        registration.id = Some(uuid::Uuid::now_v7().to_string());
    }
    registration
}

/// An instance with every field set plainly, for unit tests.
#[cfg(test)]
pub(crate) fn sample_instance(id: &str, service: &str, health: Health) -> Instance {
    let now = chrono::Utc::now();
    Instance {
        id: id.into(),
        name: service.into(),
        version: String::new(),
        address: "127.0.0.1".into(),
        port: 80,
        protocol: "http".into(),
        tags: vec![],
        metadata: Default::default(),
        dependencies: vec![],
        weight: 100,
        ttl_seconds: 30,
        health,
        lease: Health::Passing,
        checks: vec![],
        maintenance: None,
        flapping_since: None,
        health_changes: vec![],
        registered_at: now,
        updated_at: now,
        critical_since: (health == Health::Critical).then_some(now),
        revision: 1,
        changed_by: None,
    }
}
