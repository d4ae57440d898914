//! What the orchestrator consumes from NATS: durable commands (JetStream), requests
//! (request/reply) and heartbeats (core NATS).

pub mod commands;
mod decode;
pub mod heartbeats;
pub mod requests;

pub use decode::{LifecycleRequest, PriorityRequest, Request, StreamPosition, decode_command, decode_request};

/// Queue group shared by orchestrator replicas for core-NATS subscriptions.
pub const QUEUE_GROUP: &str = "orchestrator";

/// The reply body and headers of an outcome: a success body, or `{"error": …}` with the ADR-32
/// error headers.
pub fn reply_message(outcome: &crate::registry::Outcome) -> (async_nats::HeaderMap, bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(error) = outcome.error() {
        headers.insert(orch_protocol::headers::SERVICE_ERROR_CODE, error.code.status().to_string().as_str());
        headers.insert(orch_protocol::headers::SERVICE_ERROR, error.message.replace(['\r', '\n'], " ").as_str());
    }
    (headers, serde_json::to_vec(outcome).expect("outcome serializes").into())
}

/// Error reply for a protocol error.
pub fn error_message(error: orch_protocol::ProtocolError) -> (async_nats::HeaderMap, bytes::Bytes) {
    reply_message(&crate::registry::Outcome::failed(error))
}
