//! The requests the bridge sends (`<prefix>.req.<domain>.<verb>`, protocol.md §2), built from the
//! protocol crate's request types and checked with its own validation before anything is sent,
//! and what each reply must look like.

use orch_protocol::priority::{
    ChangeReply, ClearRequest, GetReply, GetRequest, ListReply, MAX_HISTORY, PolicyRequest, ReleaseReply,
    ReleaseRequest, SetRequest,
};
use orch_protocol::registry::validate_name;
use orch_protocol::subjects::verbs;
use pyo3::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};

/// The reply a request expects; the reply is checked against the protocol type before it reaches
/// Python, so a mismatch between bridge and orchestrator is reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
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
            serde_json::from_slice::<T>(payload).map(|_| ()).map_err(|e| {
                Error::Decode(format!(
                    "the reply on {subject} does not have the shape this bridge expects ({e}); \
                     are the bridge and the orchestrator of the same version?"
                ))
            })
        }
        match self {
            ReplyKind::Change => shape::<ChangeReply>(subject, payload),
            ReplyKind::Get => shape::<GetReply>(subject, payload),
            ReplyKind::List => shape::<ListReply>(subject, payload),
            ReplyKind::Release => shape::<ReleaseReply>(subject, payload),
            ReplyKind::Json => shape::<serde_json::Value>(subject, payload),
        }
    }
}

/// A request ready to send: which subject (relative to the connection's prefix), the JSON body,
/// and the reply it expects. Built by the static constructors, sent by `Connection.call`.
#[pyclass(frozen, module = "orch_bridge._core")]
#[derive(Debug, Clone)]
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
}

#[pymethods]
impl Request {
    /// `<prefix>.req.priority.set`, checked as the orchestrator checks it.
    #[staticmethod]
    #[pyo3(signature = (service, value, source, reason, ttl_seconds=None))]
    fn set_priority(
        service: String,
        value: i64,
        source: String,
        reason: String,
        ttl_seconds: Option<f64>,
    ) -> PyResult<Request> {
        let request = SetRequest { service, value, source, reason, ttl_seconds };
        request.validate().map_err(Error::from)?;
        Ok(Request::new(verbs::PRIORITY, verbs::SET, &request, ReplyKind::Change)?)
    }

    /// `<prefix>.req.priority.clear`.
    #[staticmethod]
    fn clear_priority(service: String, source: String, reason: String) -> PyResult<Request> {
        let request = ClearRequest { service, source, reason };
        request.validate().map_err(Error::from)?;
        Ok(Request::new(verbs::PRIORITY, verbs::CLEAR, &request, ReplyKind::Change)?)
    }

    /// `<prefix>.req.priority.get` with up to `history` recent changes (0-1000).
    #[staticmethod]
    fn get_priority(service: String, history: i64) -> PyResult<Request> {
        let history = u32::try_from(history)
            .map_err(|_| Error::invalid("history", format!("must be 0-{MAX_HISTORY} (got {history})")))?;
        let request = GetRequest { service, history: Some(history) };
        request.validate().map_err(Error::from)?;
        Ok(Request::new(verbs::PRIORITY, verbs::GET, &request, ReplyKind::Get)?)
    }

    /// `<prefix>.req.priority.list` (body `{}`).
    #[staticmethod]
    fn list_priorities() -> PyResult<Request> {
        Ok(Request::new(verbs::PRIORITY, verbs::LIST, &serde_json::json!({}), ReplyKind::List)?)
    }

    /// `<prefix>.req.priority.policy` (operators): baseline, bounds and pin.
    #[staticmethod]
    #[pyo3(signature = (service, source, reason, baseline=None, min=None, max=None, pinned=None))]
    fn set_policy(
        service: String,
        source: String,
        reason: String,
        baseline: Option<i64>,
        min: Option<i64>,
        max: Option<i64>,
        pinned: Option<bool>,
    ) -> PyResult<Request> {
        let request = PolicyRequest { service, baseline, min, max, pinned, source, reason };
        request.validate().map_err(Error::from)?;
        Ok(Request::new(verbs::PRIORITY, verbs::POLICY, &request, ReplyKind::Change)?)
    }

    /// `<prefix>.req.priority.release` (operators): ends a mass-change hold.
    #[staticmethod]
    fn release_hold(source: String, reason: String, apply: bool) -> PyResult<Request> {
        let request = ReleaseRequest { source, reason, apply };
        request.validate().map_err(Error::from)?;
        Ok(Request::new(verbs::PRIORITY, verbs::RELEASE, &request, ReplyKind::Release)?)
    }

    /// `<prefix>.req.registry.list` with a filter (protocol.md §3.7); `filter` is the JSON object.
    #[staticmethod]
    fn list_services(filter: Vec<u8>) -> PyResult<Request> {
        Ok(Request { domain: verbs::REGISTRY.into(), verb: verbs::LIST.into(), body: filter, reply: ReplyKind::Json })
    }

    /// `<prefix>.req.health.service`: the health of one service with its instances.
    #[staticmethod]
    fn service_health(name: String) -> PyResult<Request> {
        validate_name("name", &name).map_err(Error::from)?;
        let body = serde_json::json!({ "name": name });
        Ok(Request::new(verbs::HEALTH, verbs::SERVICE, &body, ReplyKind::Json)?)
    }

    /// `<prefix>.req.lifecycle.restart` of a managed service (protocol.md §12.7).
    #[staticmethod]
    fn restart(service: String) -> PyResult<Request> {
        validate_name("service", &service).map_err(Error::from)?;
        let body = orch_protocol::lifecycle::ServiceRef { service };
        Ok(Request::new(verbs::LIFECYCLE, verbs::RESTART, &body, ReplyKind::Json)?)
    }

    /// Any request: `body` is sent as it is, the reply returned as JSON.
    #[staticmethod]
    fn raw(domain: String, verb: String, body: Vec<u8>) -> PyResult<Request> {
        for (field, token) in [("domain", &domain), ("verb", &verb)] {
            if token.is_empty() || token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']) {
                return Err(Error::invalid(field, format!("must be one subject token (got {token:?})")).into());
            }
        }
        Ok(Request { domain, verb, body, reply: ReplyKind::Json })
    }

    /// `<domain>.<verb>`, e.g. `priority.set`.
    #[getter]
    fn name(&self) -> String {
        format!("{}.{}", self.domain, self.verb)
    }

    /// The JSON body that will be sent.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.body)
    }

    fn __repr__(&self) -> String {
        format!("Request({}.{}, {})", self.domain, self.verb, String::from_utf8_lossy(&self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_priority_is_checked_like_the_server_does() {
        pyo3::Python::initialize();
        let ok = Request::set_priority("api".into(), 80, "engine".into(), "load".into(), Some(30.0)).unwrap();
        assert_eq!(ok.name(), "priority.set");
        let body: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"service": "api", "value": 80, "source": "engine", "reason": "load", "ttl_seconds": 30.0})
        );
        assert!(Request::set_priority("api".into(), 101, "engine".into(), "x".into(), None).is_err());
        assert!(Request::set_priority("a b".into(), 1, "engine".into(), "x".into(), None).is_err());
        assert!(Request::set_priority("api".into(), 1, "engine".into(), " ".into(), None).is_err());
    }

    #[test]
    fn replies_are_checked_against_the_protocol() {
        assert!(ReplyKind::Json.check("s", b"{}").is_ok());
        let err = ReplyKind::Change.check("orch.req.priority.set", b"{}").unwrap_err();
        assert!(err.to_string().contains("orch.req.priority.set"), "{err}");
    }
}
