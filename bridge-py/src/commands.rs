//! The requests the bridge sends (`<prefix>.req.<domain>.<verb>`, protocol.md §2): Python
//! constructors over `orch_client::Request`, which builds each one from the protocol crate's types,
//! checks it as the orchestrator does, and knows the reply it expects.

use orch_protocol::priority::{ClearRequest, PolicyRequest, ReleaseRequest, SetRequest};
use orch_protocol::registry::validate_name;
use orch_protocol::subjects::verbs;
use pyo3::prelude::*;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Most executions one `workflow.list` returns (protocol.md §16.4).
pub const MAX_EXECUTIONS: i64 = 1000;
/// Longest comment of an approval's decision, in bytes (as the orchestrator checks it).
pub const MAX_COMMENT_LEN: usize = 1024;
/// Longest step id of a workflow definition (docs/workflows.md).
const MAX_STEP_ID_LEN: usize = 63;

/// A `<prefix>.req.workflow.<verb>` request with `body`; its reply is JSON (an execution, or a
/// list), read by the Python layer.
fn workflow(verb: &str, body: &Value) -> Result<Request> {
    let body = serde_json::to_vec(body).map_err(|e| Error::decode(format!("cannot encode the request: {e}")))?;
    Ok(Request(orch_client::Request::raw(verbs::WORKFLOW.into(), verb.into(), body)?))
}

/// A `<prefix>.req.resource.<verb>` request with `body` (protocol.md §17.3); its reply is JSON
/// (a node, or the list of them), read by the Python layer.
fn resource(verb: &str, body: &Value) -> Result<Request> {
    let body = serde_json::to_vec(body).map_err(|e| Error::decode(format!("cannot encode the request: {e}")))?;
    Ok(Request(orch_client::Request::raw(verbs::RESOURCE.into(), verb.into(), body)?))
}

/// An execution id is a UUID; refused here, naming `id`, as the orchestrator would.
fn execution_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Error::invalid("id", format!("{id:?} is not an execution id (a UUID)")))
}

/// The inputs of a run: JSON text of an object (or `null`: none).
fn run_inputs(inputs: Option<&[u8]>) -> Result<Option<Map<String, Value>>> {
    let Some(text) = inputs else { return Ok(None) };
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(Error::invalid("inputs", "an object of input names and values")),
        Err(e) => Err(Error::invalid("inputs", format!("not JSON: {e}"))),
    }
}

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

    /// `<prefix>.req.workflow.run`: queues an execution of the latest version of `workflow`
    /// with `inputs` (JSON text of an object; protocol.md §16.4).
    #[staticmethod]
    #[pyo3(signature = (workflow, inputs=None))]
    fn run_workflow(workflow: String, inputs: Option<Vec<u8>>) -> Result<Request> {
        validate_name("workflow", &workflow)?;
        let mut body = json!({ "workflow": workflow });
        if let Some(inputs) = run_inputs(inputs.as_deref())? {
            body["inputs"] = Value::Object(inputs);
        }
        self::workflow(verbs::RUN, &body)
    }

    /// `<prefix>.req.workflow.get`: one execution by id (a UUID).
    #[staticmethod]
    fn get_execution(id: String) -> Result<Request> {
        workflow(verbs::GET, &json!({ "id": execution_id(&id)? }))
    }

    /// `<prefix>.req.workflow.list`: the newest executions first, of one workflow when given,
    /// at most `limit` (1-1000).
    #[staticmethod]
    #[pyo3(signature = (workflow=None, limit=100))]
    fn list_executions(workflow: Option<String>, limit: i64) -> Result<Request> {
        let mut body = json!({ "limit": limit });
        if let Some(name) = workflow {
            validate_name("workflow", &name)?;
            body["workflow"] = Value::String(name);
        }
        if !(1..=MAX_EXECUTIONS).contains(&limit) {
            return Err(Error::invalid("limit", format!("must be 1-{MAX_EXECUTIONS} (got {limit})")));
        }
        self::workflow(verbs::LIST, &body)
    }

    /// `<prefix>.req.workflow.cancel` (operators): cancels an execution that has not ended.
    #[staticmethod]
    fn cancel_execution(id: String) -> Result<Request> {
        workflow(verbs::CANCEL, &json!({ "id": execution_id(&id)? }))
    }

    /// `<prefix>.req.workflow.signal` (operators): the decision (`approve` or `reject`) on the
    /// approval step `step` of an execution, with an optional comment (at most 1024 bytes).
    #[staticmethod]
    #[pyo3(signature = (id, step, decision, comment=None))]
    fn signal_execution(id: String, step: String, decision: String, comment: Option<String>) -> Result<Request> {
        let id = execution_id(&id)?;
        if step.is_empty() || step.len() > MAX_STEP_ID_LEN {
            return Err(Error::invalid("step", format!("a step id is 1-{MAX_STEP_ID_LEN} characters (got {step:?})")));
        }
        if decision != "approve" && decision != "reject" {
            return Err(Error::invalid("decision", format!("\"approve\" or \"reject\" (got {decision:?})")));
        }
        if comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT_LEN) {
            return Err(Error::invalid("comment", format!("at most {MAX_COMMENT_LEN} bytes")));
        }
        let mut body = json!({ "id": id, "step": step, "decision": decision });
        if let Some(comment) = comment {
            body["comment"] = Value::String(comment);
        }
        workflow(verbs::SIGNAL, &body)
    }

    /// `<prefix>.req.workflow.retry` (operators): a new execution that retries an ended one,
    /// from its failed steps (`from = "failed"`) or from the start (`"start"`).
    #[staticmethod]
    #[pyo3(signature = (id, from_="failed"))]
    fn retry_execution(id: String, from_: &str) -> Result<Request> {
        if from_ != "failed" && from_ != "start" {
            return Err(Error::invalid("from", format!("\"failed\" or \"start\" (got {from_:?})")));
        }
        workflow(verbs::RETRY, &json!({ "id": execution_id(&id)?, "from": from_ }))
    }

    /// `<prefix>.req.workflow.schedules` (body `{}`): every cron schedule and its next firing.
    #[staticmethod]
    fn workflow_schedules() -> Result<Request> {
        workflow(verbs::SCHEDULES, &json!({}))
    }

    /// `<prefix>.req.workflow.queues` (body `{}`): each queue's figures.
    #[staticmethod]
    fn workflow_queues() -> Result<Request> {
        workflow(verbs::QUEUES, &json!({}))
    }

    /// `<prefix>.req.resource.nodes` (body `{}`): every node whose agent ever reported
    /// (protocol.md §17.3).
    #[staticmethod]
    fn list_nodes() -> Result<Request> {
        resource(verbs::NODES, &json!({}))
    }

    /// `<prefix>.req.resource.node`: one node by name, checked (field `name`) as the orchestrator
    /// checks it.
    #[staticmethod]
    fn get_node(name: String) -> Result<Request> {
        validate_name("name", &name)?;
        resource(verbs::NODE, &json!({ "name": name }))
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

    fn body(request: &Request) -> Value {
        serde_json::from_slice(&request.0.body).unwrap()
    }

    #[test]
    fn workflow_requests_are_checked_like_the_server_does() {
        pyo3::Python::initialize();
        let run = Request::run_workflow("deploy".into(), Some(br#"{"service": "api"}"#.to_vec())).unwrap();
        assert_eq!(run.name(), "workflow.run");
        assert_eq!(body(&run), json!({"workflow": "deploy", "inputs": {"service": "api"}}));
        assert_eq!(body(&Request::run_workflow("deploy".into(), None).unwrap()), json!({"workflow": "deploy"}));
        let field = |r: Result<Request>| r.unwrap_err().field().map(str::to_string);
        assert_eq!(field(Request::run_workflow("Not A Name".into(), None)).as_deref(), Some("workflow"));
        assert_eq!(field(Request::run_workflow("deploy".into(), Some(b"[1]".to_vec()))).as_deref(), Some("inputs"));

        let id = "0190b1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(body(&Request::get_execution(id.into()).unwrap()), json!({"id": id}));
        assert_eq!(field(Request::get_execution("nope".into())).as_deref(), Some("id"));
        assert_eq!(Request::cancel_execution(id.into()).unwrap().name(), "workflow.cancel");
        assert_eq!(Request::retry_execution(id.into(), "start").unwrap().name(), "workflow.retry");
        assert!(Request::retry_execution(id.into(), "middle").is_err());

        let list = Request::list_executions(Some("deploy".into()), 5).unwrap();
        assert_eq!((list.name().as_str(), body(&list)), ("workflow.list", json!({"workflow": "deploy", "limit": 5})));
        assert_eq!(body(&Request::list_executions(None, 100).unwrap()), json!({"limit": 100}));
        assert_eq!(field(Request::list_executions(None, 0)).as_deref(), Some("limit"));

        let signal = Request::signal_execution(id.into(), "ask".into(), "approve".into(), Some("ok".into())).unwrap();
        assert_eq!(body(&signal), json!({"id": id, "step": "ask", "decision": "approve", "comment": "ok"}));
        let bad = Request::signal_execution(id.into(), "ask".into(), "maybe".into(), None);
        assert_eq!(field(bad).as_deref(), Some("decision"));
        let long = Request::signal_execution(id.into(), "ask".into(), "reject".into(), Some("x".repeat(1025)));
        assert_eq!(field(long).as_deref(), Some("comment"));

        assert_eq!(body(&Request::workflow_schedules().unwrap()), json!({}));
        assert_eq!(Request::workflow_queues().unwrap().name(), "workflow.queues");
    }

    #[test]
    fn node_requests_are_checked_like_the_server_does() {
        pyo3::Python::initialize();
        let nodes = Request::list_nodes().unwrap();
        assert_eq!((nodes.name().as_str(), body(&nodes)), ("resource.nodes", json!({})));
        let node = Request::get_node("n2".into()).unwrap();
        assert_eq!((node.name().as_str(), body(&node)), ("resource.node", json!({"name": "n2"})));
        assert_eq!(Request::get_node("Not A Node".into()).unwrap_err().field(), Some("name"));
        assert_eq!(Request::get_node(String::new()).unwrap_err().field(), Some("name"));
    }
}
