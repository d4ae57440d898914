//! The Rust core of the Python package `orch_bridge` (imported as `orch_bridge._core`). It speaks
//! the orchestrator's wire protocol through the protocol crate: requests (`commands`), the
//! connection that sends them (`connection`), the event streams (`events`) and plain subscriptions
//! (`messages`, e.g. the services' output). The Python layer
//! (`python/orch_bridge`) adds the sync and asyncio clients, typed results and exceptions; this
//! crate only translates between Python and the protocol.

use pyo3::prelude::*;

pub mod commands;
pub mod connection;
pub mod convert;
pub mod error;
pub mod events;
pub mod messages;
pub mod runtime;

/// Subject of a command, e.g. `subject_for_command("registry", "register")` ->
/// `"orch.cmd.registry.register"`.
#[pyfunction]
#[pyo3(signature = (domain, verb, prefix = "orch"))]
fn subject_for_command(domain: &str, verb: &str, prefix: &str) -> PyResult<String> {
    let subjects = orch_protocol::Subjects::new(prefix).map_err(error::Error::from)?;
    Ok(subjects.command(domain, verb))
}

/// Subject of a request, e.g. `subject_for_request("priority", "set")` -> `"orch.req.priority.set"`.
#[pyfunction]
#[pyo3(signature = (domain, verb, prefix = "orch"))]
fn subject_for_request(domain: &str, verb: &str, prefix: &str) -> PyResult<String> {
    let subjects = orch_protocol::Subjects::new(prefix).map_err(error::Error::from)?;
    Ok(subjects.request(domain, verb))
}

/// Name of the events stream for a prefix, e.g. `ORCH_EVENTS`.
#[pyfunction]
#[pyo3(signature = (prefix = "orch"))]
fn events_stream_name(prefix: &str) -> PyResult<String> {
    let subjects = orch_protocol::Subjects::new(prefix).map_err(error::Error::from)?;
    Ok(subjects.events_stream())
}

/// Parses an RFC 3339 timestamp (as in the orchestrator's replies) into an aware `datetime`.
#[pyfunction]
fn parse_time<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let at = convert::parse_time("time", text)?;
    convert::datetime_to_py(py, &at)
}

/// Parses JSON text into Python objects (the decoder behind `Event.data`).
#[pyfunction]
fn json_loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    convert::json_to_py(py, data)
}

/// The kinds of workflow events (`<prefix>.evt.workflow.<workflow>.<kind>`, type
/// `io.orch.workflow.<kind>.v1`), as the protocol crate lists them.
fn workflow_event_kinds() -> Vec<&'static str> {
    orch_protocol::workflow::WorkflowEvent::ALL.iter().map(|k| k.as_str()).collect()
}

/// The kinds of node events (`<prefix>.evt.resource.<node>.<kind>`, type
/// `io.orch.resource.<kind>.v1`, data `NodeEventData`), as the protocol crate names them.
fn node_event_kinds() -> Vec<&'static str> {
    use orch_protocol::EventKind;
    [EventKind::NodeJoined, EventKind::NodeDown, EventKind::NodeUp].iter().map(|k| k.name()).collect()
}

/// The kinds of a rolling update's events (`<prefix>.evt.lifecycle.<service>.<kind>`, type
/// `io.orch.lifecycle.<kind>.v1`, data `RolloutData`), as the protocol crate names them.
fn rollout_event_kinds() -> Vec<&'static str> {
    use orch_protocol::EventKind;
    [EventKind::RolloutStarted, EventKind::RolloutProgressed, EventKind::RolloutCompleted, EventKind::RolloutFailed]
        .iter()
        .map(|k| k.name())
        .collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::init_async();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_PRIORITY", orch_protocol::priority::DEFAULT_PRIORITY)?;
    m.add("MAX_PRIORITY", orch_protocol::priority::MAX_PRIORITY)?;
    m.add("MAX_REASON_LEN", orch_protocol::priority::MAX_REASON_LEN)?;
    m.add("MAX_SOURCE_LEN", orch_protocol::priority::MAX_SOURCE_LEN)?;
    m.add("MAX_TTL_SECONDS", orch_protocol::priority::MAX_TTL_SECONDS)?;
    m.add("WORKFLOW_EVENT_KINDS", pyo3::types::PyTuple::new(m.py(), workflow_event_kinds())?)?;
    m.add("NODE_EVENT_KINDS", pyo3::types::PyTuple::new(m.py(), node_event_kinds())?)?;
    m.add("ROLLOUT_EVENT_KINDS", pyo3::types::PyTuple::new(m.py(), rollout_event_kinds())?)?;
    m.add("MAX_EXECUTIONS", commands::MAX_EXECUTIONS)?;
    m.add("MAX_COMMENT_LEN", commands::MAX_COMMENT_LEN)?;
    m.add_function(wrap_pyfunction!(subject_for_command, m)?)?;
    m.add_function(wrap_pyfunction!(subject_for_request, m)?)?;
    m.add_function(wrap_pyfunction!(events_stream_name, m)?)?;
    m.add_function(wrap_pyfunction!(parse_time, m)?)?;
    m.add_function(wrap_pyfunction!(json_loads, m)?)?;
    m.add_class::<commands::Request>()?;
    m.add_class::<connection::Connection>()?;
    m.add_class::<events::Event>()?;
    m.add_class::<events::EventStream>()?;
    m.add_class::<messages::MessageStream>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_use_the_protocol() {
        assert_eq!(super::subject_for_command("registry", "register", "orch").unwrap(), "orch.cmd.registry.register");
        assert_eq!(super::subject_for_request("priority", "set", "t-1").unwrap(), "t-1.req.priority.set");
        assert_eq!(super::events_stream_name("t-1").unwrap(), "T_1_EVENTS");
    }

    /// The events the bridge types as workflow events are the protocol's: every kind is an
    /// `EventKind` of the domain `workflow`, with the type `io.orch.workflow.<kind>.v1`.
    #[test]
    fn workflow_event_kinds_are_the_protocols() {
        use orch_protocol::EventKind;
        use orch_protocol::workflow::WorkflowEvent;
        let kinds = super::workflow_event_kinds();
        assert_eq!(kinds.len(), 10);
        for kind in WorkflowEvent::ALL {
            assert!(EventKind::ALL.contains(&EventKind::Workflow(kind)), "{kind:?} missing from EventKind::ALL");
            let event = EventKind::Workflow(kind);
            assert_eq!(event.domain(), "workflow");
            assert_eq!(event.name(), kind.as_str());
            assert_eq!(kind.type_str(), format!("io.orch.workflow.{}.v1", kind.as_str()));
            assert!(kinds.contains(&kind.as_str()));
        }
    }

    /// The node events the bridge types are the protocol's resource events, with their types.
    #[test]
    fn node_event_kinds_are_the_protocols() {
        use orch_protocol::EventKind;
        assert_eq!(super::node_event_kinds(), ["node_joined", "node_down", "node_up"]);
        for kind in
            [EventKind::NodeJoined, EventKind::NodeDown, EventKind::NodeUp, EventKind::Lost, EventKind::Preempted]
        {
            assert!(EventKind::ALL.contains(&kind), "{kind:?} missing from EventKind::ALL");
            assert_eq!(kind.domain(), "resource");
            assert_eq!(kind.type_str(), format!("io.orch.resource.{}.v1", kind.name()));
        }
    }

    /// The rollout events the bridge types are the protocol's lifecycle events, with their types.
    #[test]
    fn rollout_event_kinds_are_the_protocols() {
        use orch_protocol::EventKind;
        assert_eq!(
            super::rollout_event_kinds(),
            ["rollout_started", "rollout_progressed", "rollout_completed", "rollout_failed"]
        );
        for kind in [
            EventKind::RolloutStarted,
            EventKind::RolloutProgressed,
            EventKind::RolloutCompleted,
            EventKind::RolloutFailed,
        ] {
            assert!(EventKind::ALL.contains(&kind), "{kind:?} missing from EventKind::ALL");
            assert_eq!(kind.domain(), "lifecycle");
            assert_eq!(kind.type_str(), format!("io.orch.lifecycle.{}.v1", kind.name()));
        }
    }
}
