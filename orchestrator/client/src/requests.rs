//! The requests a client sends (`<prefix>.req.<domain>.<verb>`, protocol.md §2), built from the
//! protocol crate's request types and checked with its own validation before anything is sent,
//! and the reply each one expects.

use orch_protocol::priority::{
    ChangeReply, ClearRequest, GetReply, GetRequest, ListReply, MAX_HISTORY, PolicyRequest, ReleaseReply,
    ReleaseRequest, SetRequest,
};
use orch_protocol::registry::{CommandReply, InstanceRef, Registration, validate_instance_id, validate_name};
use orch_protocol::subjects::verbs;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The reply a request expects; the reply is checked against the protocol type before it is
/// handed over, so a mismatch between client and orchestrator is reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `CommandReply`: registry commands.
    Command,
    /// `ChangeReply`: set, clear and policy.
    Change,
    /// `GetReply`.
    Get,
    /// `ListReply`.
    List,
    /// `ReleaseReply`.
    Release,
    /// Any JSON value (replies the protocol crate has no type for).
    Json,
}

impl ReplyKind {
    /// Checks that `payload` has the shape of this reply.
    pub fn check(self, subject: &str, payload: &[u8]) -> Result<()> {
        fn shape<T: serde::de::DeserializeOwned>(subject: &str, payload: &[u8]) -> Result<()> {
            decode::<T>(subject, payload).map(|_| ())
        }
        match self {
            ReplyKind::Command => shape::<CommandReply>(subject, payload),
            ReplyKind::Change => shape::<ChangeReply>(subject, payload),
            ReplyKind::Get => shape::<GetReply>(subject, payload),
            ReplyKind::List => shape::<ListReply>(subject, payload),
            ReplyKind::Release => shape::<ReleaseReply>(subject, payload),
            ReplyKind::Json => shape::<serde::de::IgnoredAny>(subject, payload),
        }
    }
}

/// A request ready to send: its subject (relative to the connection's prefix), the JSON body, and
/// the reply it expects. Built by the constructors, sent by [`crate::Client::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub domain: String,
    pub verb: String,
    pub body: Vec<u8>,
    pub reply: ReplyKind,
}

impl Request {
    fn new(domain: &str, verb: &str, body: &impl Serialize, reply: ReplyKind) -> Result<Request> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Decode(format!("cannot encode the request: {e}")))?;
        Ok(Request { domain: domain.to_string(), verb: verb.to_string(), body, reply })
    }

    /// `<domain>.<verb>`, e.g. `priority.set`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.domain, self.verb)
    }

    /// `<prefix>.req.registry.register`, answered once the registration is committed.
    pub fn register(registration: &Registration) -> Result<Request> {
        let mut registration = registration.clone();
        registration.normalize();
        registration.validate()?;
        Request::new(verbs::REGISTRY, verbs::REGISTER, &registration, ReplyKind::Command)
    }

    /// `<prefix>.req.registry.deregister`.
    pub fn deregister(id: &str) -> Result<Request> {
        validate_instance_id("id", id)?;
        Request::new(verbs::REGISTRY, verbs::DEREGISTER, &InstanceRef { id: id.to_string() }, ReplyKind::Command)
    }

    /// `<prefix>.req.priority.set`, checked as the orchestrator checks it.
    pub fn set_priority(request: &SetRequest) -> Result<Request> {
        request.validate()?;
        Request::new(verbs::PRIORITY, verbs::SET, request, ReplyKind::Change)
    }

    /// `<prefix>.req.priority.clear`.
    pub fn clear_priority(request: &ClearRequest) -> Result<Request> {
        request.validate()?;
        Request::new(verbs::PRIORITY, verbs::CLEAR, request, ReplyKind::Change)
    }

    /// `<prefix>.req.priority.get` with up to `history` recent changes (0-1000).
    pub fn get_priority(service: String, history: i64) -> Result<Request> {
        let history = u32::try_from(history)
            .map_err(|_| Error::invalid("history", format!("must be 0-{MAX_HISTORY} (got {history})")))?;
        let request = GetRequest { service, history: Some(history) };
        request.validate()?;
        Request::new(verbs::PRIORITY, verbs::GET, &request, ReplyKind::Get)
    }

    /// `<prefix>.req.priority.list` (body `{}`).
    pub fn list_priorities() -> Result<Request> {
        Request::new(verbs::PRIORITY, verbs::LIST, &serde_json::json!({}), ReplyKind::List)
    }

    /// `<prefix>.req.priority.policy` (operators): baseline, bounds and pin.
    pub fn set_policy(request: &PolicyRequest) -> Result<Request> {
        request.validate()?;
        Request::new(verbs::PRIORITY, verbs::POLICY, request, ReplyKind::Change)
    }

    /// `<prefix>.req.priority.release` (operators): ends a mass-change hold.
    pub fn release_hold(request: &ReleaseRequest) -> Result<Request> {
        request.validate()?;
        Request::new(verbs::PRIORITY, verbs::RELEASE, request, ReplyKind::Release)
    }

    /// `<prefix>.req.registry.list` with a filter (protocol.md §3.7): `filter` is the JSON object.
    pub fn list_services(filter: Vec<u8>) -> Request {
        Request { domain: verbs::REGISTRY.into(), verb: verbs::LIST.into(), body: filter, reply: ReplyKind::Json }
    }

    /// `<prefix>.req.health.service`: the health of one service with its instances.
    pub fn service_health(name: &str) -> Result<Request> {
        validate_name("name", name)?;
        Request::new(verbs::HEALTH, verbs::SERVICE, &serde_json::json!({ "name": name }), ReplyKind::Json)
    }

    /// `<prefix>.req.lifecycle.restart` of a managed service (protocol.md §12.7).
    pub fn restart(service: &str) -> Result<Request> {
        validate_name("service", service)?;
        let body = orch_protocol::lifecycle::ServiceRef { service: service.to_string() };
        Request::new(verbs::LIFECYCLE, verbs::RESTART, &body, ReplyKind::Json)
    }

    /// `<prefix>.req.cluster.status`: the replicas, the leader, its term (protocol.md §15.2).
    pub fn cluster_status() -> Result<Request> {
        Request::new(verbs::CLUSTER, verbs::STATUS, &serde_json::json!({}), ReplyKind::Json)
    }

    /// Any request: `body` is sent as it is, the reply returned as JSON.
    pub fn raw(domain: String, verb: String, body: Vec<u8>) -> Result<Request> {
        for (field, token) in [("domain", &domain), ("verb", &verb)] {
            if token.is_empty() || token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']) {
                return Err(Error::invalid(field, format!("must be one subject token (got {token:?})")));
            }
        }
        Ok(Request { domain, verb, body, reply: ReplyKind::Json })
    }
}

/// Decodes a reply as `T`, naming the subject when it does not fit.
pub(crate) fn decode<T: DeserializeOwned>(subject: &str, payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        Error::Decode(format!(
            "the reply on {subject} does not have the shape this client expects ({e}); \
             are the client and the orchestrator of the same version?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(service: &str, value: i64, reason: &str) -> SetRequest {
        SetRequest { service: service.into(), value, source: "engine".into(), reason: reason.into(), ttl_seconds: None }
    }

    #[test]
    fn set_priority_is_checked_like_the_server_does() {
        let ok = Request::set_priority(&SetRequest { ttl_seconds: Some(30.0), ..set("api", 80, "load") }).unwrap();
        assert_eq!(ok.name(), "priority.set");
        let body: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"service": "api", "value": 80, "source": "engine", "reason": "load", "ttl_seconds": 30.0})
        );
        assert!(Request::set_priority(&set("api", 101, "x")).is_err());
        assert!(Request::set_priority(&set("a b", 1, "x")).is_err());
        assert!(Request::set_priority(&set("api", 1, " ")).is_err());
    }

    #[test]
    fn a_registration_is_checked_before_it_is_sent() {
        let registration: Registration =
            serde_json::from_value(serde_json::json!({"name": "api", "address": "10.0.0.1", "port": 8080})).unwrap();
        assert_eq!(Request::register(&registration).unwrap().name(), "registry.register");
        let bad = Registration { port: 0, ..registration };
        assert_eq!(Request::register(&bad).unwrap_err().field(), Some("port"));
        assert_eq!(Request::deregister("has space").unwrap_err().field(), Some("id"));
    }

    #[test]
    fn replies_are_checked_against_the_protocol() {
        assert!(ReplyKind::Json.check("s", b"{}").is_ok());
        let err = ReplyKind::Change.check("orch.req.priority.set", b"{}").unwrap_err();
        assert!(err.to_string().contains("orch.req.priority.set"), "{err}");
        assert!(ReplyKind::Command.check("s", br#"{"status":"registered"}"#).is_ok());
    }
}
