//! The controller's side of the agent protocol: requests to the agent of a node over NATS, with
//! the agent's error replies turned into typed errors.

use std::time::Duration;

use orch_protocol::agent::{self, LogsRequest, StartRequest, StopRequest, verbs};
use orch_protocol::error::ErrorReply;
use orch_protocol::{ErrorCode, Subjects};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no agent of node {0:?} is running (nothing answers on NATS)")]
    NoAgent(String),
    #[error("the agent of node {node:?} refused: {message}")]
    Refused { node: String, code: ErrorCode, message: String },
    #[error("the agent of node {0:?} did not answer in time")]
    Timeout(String),
    #[error("asking the agent of node {node:?}: {message}")]
    Transport { node: String, message: String },
}

#[derive(Clone)]
pub struct AgentClient {
    nats: async_nats::Client,
    subjects: Subjects,
}

impl AgentClient {
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> AgentClient {
        AgentClient { nats, subjects }
    }

    pub async fn start(&self, node: &str, request: &StartRequest) -> Result<agent::Started, AgentError> {
        self.call(node, verbs::START, request, Duration::from_secs(10)).await
    }

    /// Waits for the process to end: the grace period, plus time for the SIGKILL after it.
    pub async fn stop(&self, node: &str, request: &StopRequest) -> Result<agent::Stopped, AgentError> {
        self.call(node, verbs::STOP, request, request.grace_period + Duration::from_secs(10)).await
    }

    pub async fn status(&self, node: &str) -> Result<agent::Status, AgentError> {
        self.call(node, verbs::STATUS, &serde_json::json!({}), Duration::from_secs(5)).await
    }

    pub async fn logs(&self, node: &str, request: &LogsRequest) -> Result<agent::Logs, AgentError> {
        self.call(node, verbs::LOGS, request, Duration::from_secs(10)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        node: &str,
        verb: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let payload = serde_json::to_vec(body).expect("an agent request serializes");
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(timeout));
        let reply = self.nats.send_request(self.subjects.agent(node, verb), request).await.map_err(|e| {
            use async_nats::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => AgentError::NoAgent(node.to_string()),
                K::TimedOut => AgentError::Timeout(node.to_string()),
                _ => AgentError::Transport { node: node.to_string(), message: e.to_string() },
            }
        })?;
        let failed =
            reply.headers.as_ref().is_some_and(|h| h.get(orch_protocol::headers::SERVICE_ERROR_CODE).is_some());
        if failed {
            let error = serde_json::from_slice::<ErrorReply>(&reply.payload).map(|r| r.error).map_err(|e| {
                AgentError::Transport { node: node.to_string(), message: format!("unreadable error reply: {e}") }
            })?;
            return Err(AgentError::Refused { node: node.to_string(), code: error.code, message: error.message });
        }
        serde_json::from_slice(&reply.payload)
            .map_err(|e| AgentError::Transport { node: node.to_string(), message: format!("unreadable reply: {e}") })
    }
}
