//! Request/reply on `orch.req.<domain>.<verb>`: writes are answered after their commit, reads
//! straight from PostgreSQL. Each request runs in its own task, so concurrent writes share a
//! transaction in the writer.
//!
//! Each domain is answered by a loop of its own over a subscription of its own, with its own
//! lane of requests in flight, so a flood of one kind (an engine's priority changes) never queues
//! ahead of another (registrations); the priority domain is answered on a lane of its own
//! (`engine_lane`: its own connection and thread), so the flood is not even read from the same
//! socket.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use orch_protocol::{ErrorCode, ProtocolError, Subjects, headers, principal};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    ConfigRequest, LifecycleRequest, PriorityRequest, Request, WorkflowRequest, decode_request, reply_message,
};
use crate::errors;
use crate::health::Monitor;
use crate::lifecycle::{ControlError, Controller};
use crate::nats::error_message;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::storage::instances::{Filter, PAGE_DEFAULT, PAGE_MAX};

/// Most requests of one domain handled at once; beyond it they are answered `unavailable`.
const MAX_IN_FLIGHT: usize = 4096;

/// What requests are answered from.
#[derive(Clone)]
pub struct Backends {
    pub registry: Arc<Registry>,
    pub health: Arc<Monitor>,
    pub controller: Controller,
    pub priorities: crate::priority::Priorities,
    pub workflows: crate::workflow::executor::Workflows,
    pub nodes: crate::resources::Nodes,
    pub config: crate::config_store::ConfigStore,
}

/// How a domain's requests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Each in a task of its own, on any worker thread: for the domains of many concurrent
    /// callers (registrations).
    Tasks,
    /// All within the domain's loop, one task: a flood of them then wakes one task rather than
    /// one per request, and takes one worker thread at most, leaving the others to the other
    /// domains. For the engine's priority changes, which are decided one at a time anyway.
    InLoop,
}

/// Answers the requests of `domain`'s subscription (`orch.req.<domain>.>`) until shutdown.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    domain: &'static str,
    concurrency: Concurrency,
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    subjects: Subjects,
    backends: Backends,
    max_bytes: usize,
    mut shutdown: Shutdown,
) {
    tracing::info!(subject = %subjects.requests_of(domain), ?concurrency, "answering requests");
    let lane = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut in_loop = FuturesUnordered::new();
    loop {
        let message = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            Some(()) = in_loop.next(), if !in_loop.is_empty() => continue,
            _ = shutdown.requested() => break,
        };
        let Ok(permit) = lane.clone().try_acquire_owned() else {
            // Waiting here would hold up this domain's later requests behind the full lane.
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
        let answered = async move {
            let (headers, body) = answer(&subjects, &backends, &message, max_bytes).await;
            if let Some(reply) = message.reply {
                let _ = client.publish_with_headers(reply, headers, body).await;
            }
            drop(permit);
        };
        match concurrency {
            Concurrency::Tasks => drop(tokio::spawn(answered)),
            Concurrency::InLoop => in_loop.push(answered),
        }
    }
    let _ = sub.unsubscribe().await;
    // Those taken are answered, as spawned ones are (with `unavailable` if their domain stopped).
    while in_loop.next().await.is_some() {}
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
        Request::EndSelfPreservation(request) => {
            reply(registry.end_self_preservation(sender(subjects, message), request.reason).await)
        }
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
        Request::Lifecycle(request) => lifecycle(backends, request, sender(subjects, message)).await,
        Request::Priority(request) => priority(&backends.priorities, request, sender(subjects, message)).await,
        Request::Workflow(request) => workflow(backends, request, sender(subjects, message)).await,
        Request::Config(request) => config(&backends.config, request, sender(subjects, message)).await,
        Request::Nodes => ok(&orch_protocol::resources::NodeList { nodes: backends.nodes.list().to_vec() }),
        Request::Node(name) => reply(backends.nodes.get(&name).ok_or_else(|| errors::no_node(&name))),
    }
}

async fn workflow(backends: &Backends, request: WorkflowRequest, by: String) -> (async_nats::HeaderMap, bytes::Bytes) {
    use crate::workflow::api;
    let pool = backends.registry.pool();
    match request {
        WorkflowRequest::Run { workflow, inputs } => {
            reply(api::run(pool, &backends.workflows, &workflow, inputs, &by).await)
        }
        WorkflowRequest::Get(id) => reply(api::execution_view(pool, id).await),
        WorkflowRequest::List { workflow, limit } => reply(api::executions(pool, workflow.as_deref(), limit).await),
        WorkflowRequest::Cancel(id) => reply(api::cancel(pool, &backends.workflows, id, &by).await),
        WorkflowRequest::Signal { id, step, decision, comment } => {
            reply(api::signal(pool, &backends.workflows, id, &step, decision, comment, &by).await)
        }
        WorkflowRequest::Retry { id, from } => reply(api::retry(pool, &backends.workflows, id, from, &by).await),
        WorkflowRequest::Schedules => reply(api::schedules(pool).await),
        WorkflowRequest::Queues => reply(api::queues(pool).await),
    }
}

async fn config(
    store: &crate::config_store::ConfigStore,
    request: ConfigRequest,
    by: String,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    match request {
        ConfigRequest::Get(key) => reply(store.get(&key).await),
        ConfigRequest::Put { key, value, revision } => reply(store.put(&key, value, revision, &by).await),
        ConfigRequest::Delete { key, revision } => reply(store.delete(&key, revision, &by).await),
        ConfigRequest::List(prefix) => reply(store.list(&prefix).await),
        ConfigRequest::History(key) => reply(store.history(&key).await),
        ConfigRequest::Revert { key, to } => reply(store.revert(&key, to, &by).await),
        ConfigRequest::Schemas => reply(store.schemas().await),
        ConfigRequest::SchemaPut { prefix, schema } => reply(store.set_schema(&prefix, schema, &by).await),
        ConfigRequest::SchemaDelete(prefix) => reply(
            store.clear_schema(&prefix, &by).await.map(|()| serde_json::json!({ "prefix": prefix, "removed": true })),
        ),
    }
}

/// Who sent a request: `nats:<user>` when its subject names the user, else `nats`.
fn sender(subjects: &Subjects, message: &async_nats::Message) -> String {
    principal::nats_sender(subjects.sender(&message.subject, "req"))
}

async fn priority(
    priorities: &crate::priority::Priorities,
    request: PriorityRequest,
    by: String,
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
        PriorityRequest::Set(r) => limited(priorities.set(r, by).await),
        PriorityRequest::Clear(r) => limited(priorities.clear(r, by).await),
        PriorityRequest::Get(r) => reply(priorities.get(r).await),
        PriorityRequest::List => reply(priorities.list().await),
        PriorityRequest::Policy(r) => reply(priorities.policy(r, by).await),
        PriorityRequest::Release(r) => reply(priorities.release(r, by).await),
    }
}

async fn lifecycle(
    backends: &Backends,
    request: LifecycleRequest,
    by: String,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    use crate::lifecycle::history;
    let (controller, pool) = (&backends.controller, backends.registry.pool());
    match request {
        LifecycleRequest::Status => {
            reply(controller.view().await.and_then(|v| v.map(|(view, _)| view).ok_or(ControlError::NoStack)))
        }
        LifecycleRequest::Profile => reply(controller.profile().await.and_then(|p| p.ok_or(ControlError::NoRun))),
        LifecycleRequest::Apply { manifest, text, source } => {
            reply(controller.apply(*manifest, text, source, by).await)
        }
        LifecycleRequest::Down => reply(controller.down(by).await.map(|n| serde_json::json!({ "stopped": n }))),
        LifecycleRequest::Logs(request) => reply(controller.logs(request).await),
        LifecycleRequest::Restart(service) => reply(
            controller
                .restart(service.clone(), by)
                .await
                .map(|()| serde_json::json!({ "service": service, "restarting": true })),
        ),
        LifecycleRequest::Versions(r) => reply(history::versions(pool, r.limit, r.before).await),
        LifecycleRequest::Version(version) => reply(history::version(pool, version).await),
        LifecycleRequest::Diff { from, to } => reply(history::diff_versions(pool, from, to).await),
        LifecycleRequest::Rollback(version) => reply(controller.rollback(version, by).await),
    }
}
