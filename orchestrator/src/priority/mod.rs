//! Service priorities: an operator's baseline, bounds and pin per service, an engine's adjustments
//! within them, and the guardrails against a runaway engine (clamping, a per-service rate limit, a
//! mass-change hold). One task owns the [`book::Book`]; every change, whatever its outcome, is
//! stored in the audit history with its event before it is answered.
//!
//! The effective priorities are published on a watch channel: the lifecycle controller orders
//! start-up and recovery by them and sheds the lowest first under node pressure.

pub mod book;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;

use orch_protocol::priority::{
    ChangeReply, ClearRequest, GetReply, GetRequest, ListReply, PolicyRequest, PriorityView, ReleaseReply,
    ReleaseRequest, SetRequest,
};
use orch_protocol::{ErrorCode, ProtocolError, Subjects};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::shutdown::Shutdown;
pub use book::Limits;
use book::{EngineOp, EngineRequest};

/// The effective priority of every service with a policy, an adjustment or a manifest priority.
pub type Effective = Arc<BTreeMap<String, u8>>;

/// Settings of the priority task.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    pub subjects: Subjects,
}

enum Input {
    Engine(EngineRequest, oneshot::Sender<Result<ChangeReply, ProtocolError>>),
    Policy(PolicyRequest, String, oneshot::Sender<Result<ChangeReply, ProtocolError>>),
    Release(ReleaseRequest, String, oneshot::Sender<Result<ReleaseReply, ProtocolError>>),
    View(String, oneshot::Sender<PriorityView>),
    List(oneshot::Sender<ListReply>),
}

/// Handle to the priority task; cheap to clone.
#[derive(Clone)]
pub struct Priorities {
    inputs: mpsc::Sender<Input>,
    defaults: Arc<watch::Sender<BTreeMap<String, u8>>>,
    effective: watch::Receiver<Effective>,
    pool: PgPool,
    /// The runtime the pool's connections are driven by: reads run there, whichever thread asks
    /// (the priority requests are answered on a thread of their own, consumers::engine_lane).
    runtime: tokio::runtime::Handle,
    /// The rate guard's window: a rate-limited caller may retry after it at the latest.
    rate_window: std::time::Duration,
}

/// Inputs waiting for the task beyond which callers wait to send.
const QUEUE: usize = 8192;

fn stopped() -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, "the orchestrator is shutting down; retry later")
}

impl Priorities {
    /// Loads the stored priorities and starts the task. It stops at `shutdown` (or when every
    /// handle is dropped); requests after that are answered `unavailable`.
    pub async fn start(
        config: Config,
        pool: PgPool,
        outbox_written: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: Shutdown,
    ) -> crate::storage::Result<(Priorities, tokio::task::JoinHandle<()>)> {
        let stored = crate::storage::retry("loading priorities", || crate::storage::priorities::load(&pool)).await?;
        let rate_window = config.limits.rate_window;
        let hold =
            crate::storage::retry("loading the priority hold", || crate::storage::priorities::load_hold(&pool)).await?;
        let within = config.limits.rate_window.max(config.limits.mass_window);
        let recent = crate::storage::retry("loading the recent priority changes", || {
            crate::storage::priorities::recent_engine_changes(&pool, within)
        })
        .await?;
        let book = book::Book::new(config.limits, stored, hold, recent, std::time::Instant::now(), chrono::Utc::now());
        let (effective_tx, effective) = watch::channel(Arc::new(book.effective_map()));
        let (inputs, rx) = mpsc::channel(QUEUE);
        let (defaults, defaults_rx) = watch::channel(BTreeMap::new());
        let task = task::Task { config, pool: pool.clone(), book, effective: effective_tx, outbox_written, metrics };
        let handle = tokio::spawn(task.run(rx, defaults_rx, shutdown));
        let runtime = tokio::runtime::Handle::current();
        Ok((Priorities { inputs, defaults: Arc::new(defaults), effective, pool, runtime, rate_window }, handle))
    }

    /// How long a caller refused as `rate_limited` waits, in whole seconds (at least 1): the
    /// guard's rate window, the longest before a change of the service is taken again. HTTP sends
    /// it as `Retry-After`, NATS as `Orch-Retry-After`.
    pub fn retry_after_seconds(&self) -> u64 {
        let window = self.rate_window;
        (window.as_secs() + u64::from(window.subsec_nanos() > 0)).max(1)
    }

    async fn ask<T>(&self, input: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, ProtocolError> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(input(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// An engine's adjustment, sent by `principal` (orch-protocol `principal`, as for every
    /// change here). Refusals by a guardrail come back as errors (`refused`, `rate_limited`) and
    /// are recorded all the same.
    pub async fn set(&self, request: SetRequest, principal: String) -> Result<ChangeReply, ProtocolError> {
        let (value, ttl) = request.validate()?;
        let request = EngineRequest {
            service: request.service,
            op: EngineOp::Set { value, ttl },
            principal,
            source: request.source,
            reason: request.reason,
        };
        self.ask(|tx| Input::Engine(request, tx)).await?
    }

    /// Withdraws an engine's adjustment.
    pub async fn clear(&self, request: ClearRequest, principal: String) -> Result<ChangeReply, ProtocolError> {
        request.validate()?;
        let request = EngineRequest {
            service: request.service,
            op: EngineOp::Clear,
            principal,
            source: request.source,
            reason: request.reason,
        };
        self.ask(|tx| Input::Engine(request, tx)).await?
    }

    /// An operator's baseline, bounds and pin.
    pub async fn policy(&self, request: PolicyRequest, principal: String) -> Result<ChangeReply, ProtocolError> {
        self.ask(|tx| Input::Policy(request, principal, tx)).await?
    }

    /// An operator ends a mass-change hold.
    pub async fn release(&self, request: ReleaseRequest, principal: String) -> Result<ReleaseReply, ProtocolError> {
        request.validate()?;
        self.ask(|tx| Input::Release(request, principal, tx)).await?
    }

    /// One service's priority and its newest changes.
    pub async fn get(&self, request: GetRequest) -> Result<GetReply, ProtocolError> {
        let limit = request.validate()?;
        let priority = self.ask(|tx| Input::View(request.service.clone(), tx)).await?;
        let (pool, service) = (self.pool.clone(), request.service.clone());
        let read = self.runtime.spawn(async move { crate::storage::priorities::history(&pool, &service, limit).await });
        let unavailable = || ProtocolError::new(ErrorCode::Unavailable, "PostgreSQL is unavailable; retry later");
        let history = read.await.map_err(|_| unavailable())?.map_err(|e| {
            tracing::warn!(error = %e, "reading priority history failed");
            unavailable()
        })?;
        Ok(GetReply { priority, history })
    }

    /// Every known service's priority and the mass-change guard.
    pub async fn list(&self) -> Result<ListReply, ProtocolError> {
        self.ask(Input::List).await
    }

    /// The priorities of the applied manifest's services: their baselines unless an operator set
    /// one.
    pub fn set_defaults(&self, defaults: BTreeMap<String, u8>) {
        self.defaults.send_replace(defaults);
    }

    /// The effective priorities, updated after each stored change.
    pub fn watch(&self) -> watch::Receiver<Effective> {
        self.effective.clone()
    }
}
