//! The requests the bridge sends (`<prefix>.req.<domain>.<verb>`, protocol.md §2): Python
//! constructors over `orch_client::Request`, which builds each one from the protocol crate's types,
//! checks it as the orchestrator does, and knows the reply it expects.

use orch_protocol::priority::{ClearRequest, PolicyRequest, ReleaseRequest, SetRequest};
use pyo3::prelude::*;

use crate::error::Result;

/// A request ready to send: which subject (relative to the connection's prefix), the JSON body,
/// and the reply it expects. Built by the static constructors, sent by `Connection.call`.
#[pyclass(frozen, module = "orch_bridge._core")]
#[derive(Debug, Clone)]
pub struct Request(pub orch_client::Request);

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
    ) -> Result<Request> {
        let request = SetRequest { service, value, source, reason, ttl_seconds };
        Ok(Request(orch_client::Request::set_priority(&request)?))
    }

    /// `<prefix>.req.priority.clear`.
    #[staticmethod]
    fn clear_priority(service: String, source: String, reason: String) -> Result<Request> {
        Ok(Request(orch_client::Request::clear_priority(&ClearRequest { service, source, reason })?))
    }

    /// `<prefix>.req.priority.get` with up to `history` recent changes (0-1000).
    #[staticmethod]
    fn get_priority(service: String, history: i64) -> Result<Request> {
        Ok(Request(orch_client::Request::get_priority(service, history)?))
    }

    /// `<prefix>.req.priority.list` (body `{}`).
    #[staticmethod]
    fn list_priorities() -> Result<Request> {
        Ok(Request(orch_client::Request::list_priorities()?))
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
    ) -> Result<Request> {
        let request = PolicyRequest { service, baseline, min, max, pinned, source, reason };
        Ok(Request(orch_client::Request::set_policy(&request)?))
    }

    /// `<prefix>.req.priority.release` (operators): ends a mass-change hold.
    #[staticmethod]
    fn release_hold(source: String, reason: String, apply: bool) -> Result<Request> {
        Ok(Request(orch_client::Request::release_hold(&ReleaseRequest { source, reason, apply })?))
    }

    /// `<prefix>.req.registry.list` with a filter (protocol.md §3.7); `filter` is the JSON object.
    #[staticmethod]
    fn list_services(filter: Vec<u8>) -> Request {
        Request(orch_client::Request::list_services(filter))
    }

    /// `<prefix>.req.health.service`: the health of one service with its instances.
    #[staticmethod]
    fn service_health(name: String) -> Result<Request> {
        Ok(Request(orch_client::Request::service_health(&name)?))
    }

    /// `<prefix>.req.lifecycle.restart` of a managed service (protocol.md §12.7).
    #[staticmethod]
    fn restart(service: String) -> Result<Request> {
        Ok(Request(orch_client::Request::restart(&service)?))
    }

    /// `<prefix>.req.cluster.status` (body `{}`): the group of replicas, the leader and its term
    /// (protocol.md §15.2).
    #[staticmethod]
    fn cluster_status() -> Result<Request> {
        Ok(Request(orch_client::Request::cluster_status()?))
    }

    /// Any request: `body` is sent as it is, the reply returned as JSON.
    #[staticmethod]
    fn raw(domain: String, verb: String, body: Vec<u8>) -> Result<Request> {
        Ok(Request(orch_client::Request::raw(domain, verb, body)?))
    }

    /// `<domain>.<verb>`, e.g. `priority.set`.
    #[getter]
    fn name(&self) -> String {
        self.0.name()
    }

    /// The JSON body that will be sent.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.0.body)
    }

    fn __repr__(&self) -> String {
        format!("Request({}, {})", self.0.name(), String::from_utf8_lossy(&self.0.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_like_the_server_does() {
        pyo3::Python::initialize();
        let ok = Request::set_priority("api".into(), 80, "engine".into(), "load".into(), Some(30.0)).unwrap();
        assert_eq!(ok.name(), "priority.set");
        let e = Request::set_priority("api".into(), 101, "engine".into(), "x".into(), None).unwrap_err();
        assert_eq!((e.code(), e.field()), ("validation_failed", Some("value")));
        let status = Request::cluster_status().unwrap();
        assert_eq!((status.name().as_str(), status.0.body.as_slice()), ("cluster.status", &b"{}"[..]));
        assert_eq!(Request::raw("a.b".into(), "set".into(), Vec::new()).unwrap_err().field(), Some("domain"));
    }
}
