//! What the orchestrator consumes from NATS: durable commands (JetStream), requests
//! (request/reply) and heartbeats (core NATS).

pub mod commands;
mod decode;
pub mod engine_lane;
#[cfg(test)]
mod fuzz_tests;
pub mod heartbeats;
pub mod requests;

pub use decode::{
    ConfigRequest, LifecycleRequest, PriorityRequest, Request, StreamPosition, WorkflowRequest, decode_command,
    decode_request,
};

/// Queue group shared by orchestrator replicas for core-NATS subscriptions.
pub const QUEUE_GROUP: &str = "orchestrator";

/// The reply body and headers of an outcome: a success body, or `{"error": …}` with the ADR-32
/// error headers.
pub fn reply_message(outcome: &crate::registry::Outcome) -> (async_nats::HeaderMap, bytes::Bytes) {
    crate::nats::reply(outcome, outcome.error())
}
