//! Request/reply on `orch.req.<domain>.<verb>`: writes are answered after their commit, reads
//! straight from PostgreSQL. Each request runs in its own task, so concurrent writes share a
//! transaction in the writer. Each domain has its own lane of requests in flight, so a flood of
//! one kind (an engine's priority changes) never holds up another (registrations).

use std::sync::Arc;

use futures::StreamExt;
use orch_protocol::subjects::verbs;
use orch_protocol::{ErrorCode, ProtocolError, Subjects, headers, principal};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{LifecycleRequest, PriorityRequest, Request, decode_request, reply_message};
use crate::errors;
use crate::health::Monitor;
use crate::lifecycle::{ControlError, Controller};
use crate::nats::error_message;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::storage::instances::{Filter, PAGE_DEFAULT, PAGE_MAX};

/// Most requests of one domain handled at once; beyond it they are answered `unavailable`.
const MAX_IN_FLIGHT: usize = 4096;

/// The requests in flight of each domain (`registry`, `health`, `lifecycle`, `priority`, and one
/// lane for subjects of no known domain).
struct Lanes {
    lanes: Vec<(&'static str, Arc<Semaphore>)>,
    other: Arc<Semaphore>,
}

impl Lanes {
    fn new() -> Lanes {
        let lane = |domain| (domain, Arc::new(Semaphore::new(MAX_IN_FLIGHT)));
        let lanes = [verbs::REGISTRY, verbs::HEALTH, verbs::LIFECYCLE, verbs::PRIORITY].map(lane).to_vec();
        Lanes { lanes, other: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }

    /// A place in the lane of `domain`, or `None` when it is full.
    fn enter(&self, domain: Option<&str>) -> Option<OwnedSemaphorePermit> {
        let lane = self.lanes.iter().find(|(d, _)| Some(*d) == domain).map_or(&self.other, |(_, lane)| lane);
        lane.clone().try_acquire_owned().ok()
    }
}

/// What requests are answered from.
#[derive(Clone)]
pub struct Backends {
    pub registry: Arc<Registry>,
    pub health: Arc<Monitor>,
    pub controller: Controller,
    pub priorities: crate::priority::Priorities,
}

pub async fn run(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    subjects: Subjects,
    backends: Backends,
    max_bytes: usize,
    mut shutdown: Shutdown,
) {
    tracing::info!(subject = %subjects.requests_all(), "answering requests");
    let lanes = Lanes::new();
    loop {
        let message = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = shutdown.requested() => break,
        };
        let domain = subjects.parse_command(&message.subject, "req").map(|(domain, _)| domain);
        let Some(permit) = lanes.enter(domain) else {
            // Waiting here would hold up every other domain's requests behind this one's.
            tracing::debug!(subject = %message.subject, "request lane full; answered unavailable");
            if let Some(reply) = message.reply {
                let (headers, body) = error_message(ProtocolError::new(
                    ErrorCode::Unavailable,
                    format!("{MAX_IN_FLIGHT} requests of this kind are in progress; retry later"),
                ));
                let _ = client.publish_with_headers(reply, headers, body).await;
            }
            continue;
        };
        let (client, subjects, backends) = (client.clone(), subjects.clone(), backends.clone());
        tokio::spawn(async move {
            let (headers, body) = answer(&subjects, &backends, &message, max_bytes).await;
            if let Some(reply) = message.reply {
                let _ = client.publish_with_headers(reply, headers, body).await;
            }
            drop(permit);
        });
    }
    let _ = sub.unsubscribe().await;
}

fn ok(value: &impl Serialize) -> (async_nats::HeaderMap, bytes::Bytes) {
    (async_nats::HeaderMap::new(), serde_json::to_vec(value).expect("reply serializes").into())
}

/// The reply to a request: the value, or the error through the one mapping of [`crate::errors`]
/// (the HTTP API's too).
fn reply<T: Serialize, E: Into<ProtocolError>>(result: Result<T, E>) -> (async_nats::HeaderMap, bytes::Bytes) {
    match result {
        Ok(value) => ok(&value),
        Err(e) => error_message(e.into()),
    }
}

async fn answer(
    subjects: &Subjects,
    backends: &Backends,
    message: &async_nats::Message,
    max_bytes: usize,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    let (registry, health) = (&backends.registry, &backends.health);
    let request =
        match decode_request(subjects, &message.subject, message.headers.as_ref(), &message.payload, max_bytes) {
            Ok(r) => r,
            Err(e) => return error_message(e),
        };
    match request {
        Request::Write(submission) => match registry.submit(*submission).await {
            Ok(outcome) => reply_message(&outcome),
            Err(e) => error_message(e.into()),
        },
        Request::Get(id) => reply(
            registry
                .get(&id)
                .await
                .map_err(ProtocolError::from)
                .and_then(|view| view.ok_or_else(|| errors::no_instance(&id))),
        ),
        Request::List(list) => {
            let filter = Filter {
                name: list.name,
                tags: list.tags,
                health: list.health,
                metadata: list.metadata,
                after: list.after,
                limit: list.limit.unwrap_or(PAGE_DEFAULT),
                discoverable: false,
            };
            if !(1..=PAGE_MAX).contains(&filter.limit) {
                return error_message(ProtocolError::invalid("limit", format!("must be 1-{PAGE_MAX}")));
            }
            reply(registry.list(&filter).await)
        }
        Request::Discover(d) => reply(registry.discover(&d.name, d.strategy).await),
        Request::Ttl(t) => reply(health.checker.ttl_update(&t.id, &t.check, t.status, t.output).await),
        Request::SystemHealth => ok(&health.system_report(registry)),
        Request::ServiceHealth(name) => reply(
            health
                .service_report(registry.pool(), &name)
                .await
                .map_err(ProtocolError::from)
                .and_then(|report| report.ok_or_else(|| errors::no_service(&name))),
        ),
        Request::Checks(id) => reply(
            registry
                .get(&id)
                .await
                .map_err(ProtocolError::from)
                .and_then(|view| view.ok_or_else(|| errors::no_instance(&id)))
                .map(|view| serde_json::json!({ "checks": health.checks(registry, &view.instance) })),
        ),
        Request::Lifecycle(request) => lifecycle(&backends.controller, request).await,
        Request::Priority(request) => priority(&backends.priorities, request).await,
    }
}

async fn priority(
    priorities: &crate::priority::Priorities,
    request: PriorityRequest,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    // A rate-limited change says when to retry, as over HTTP.
    let limited = |result: Result<_, ProtocolError>| {
        let rate_limited = matches!(&result, Err(e) if e.code() == ErrorCode::RateLimited);
        let (mut head, body) = reply(result);
        if rate_limited {
            head.insert(headers::RETRY_AFTER, priorities.retry_after_seconds().to_string().as_str());
        }
        (head, body)
    };
    match request {
        PriorityRequest::Set(r) => limited(priorities.set(r, principal::NATS.into()).await),
        PriorityRequest::Clear(r) => limited(priorities.clear(r, principal::NATS.into()).await),
        PriorityRequest::Get(r) => reply(priorities.get(r).await),
        PriorityRequest::List => reply(priorities.list().await),
        PriorityRequest::Policy(r) => reply(priorities.policy(r, principal::NATS.into()).await),
        PriorityRequest::Release(r) => reply(priorities.release(r, principal::NATS.into()).await),
    }
}

async fn lifecycle(controller: &Controller, request: LifecycleRequest) -> (async_nats::HeaderMap, bytes::Bytes) {
    match request {
        LifecycleRequest::Status => {
            reply(controller.view().await.and_then(|v| v.map(|(view, _)| view).ok_or(ControlError::NoStack)))
        }
        LifecycleRequest::Profile => reply(controller.profile().await.and_then(|p| p.ok_or(ControlError::NoRun))),
        LifecycleRequest::Apply { manifest, text, source } => {
            reply(controller.apply(*manifest, text, source, principal::NATS.into()).await)
        }
        LifecycleRequest::Down => {
            reply(controller.down(principal::NATS.into()).await.map(|n| serde_json::json!({ "stopped": n })))
        }
        LifecycleRequest::Restart(service) => reply(
            controller
                .restart(service.clone(), principal::NATS.into())
                .await
                .map(|()| serde_json::json!({ "service": service, "restarting": true })),
        ),
    }
}
