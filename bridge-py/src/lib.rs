//! The Rust core of the Python package `orch_bridge`. For now it exposes the protocol's subject
//! names, so a Python client and the orchestrator agree on them; the event stream and commands
//! arrive with the bridge issue.

use pyo3::prelude::*;

/// Subject of a command, e.g. `subject_for_command("registry", "register")` ->
/// `"orch.cmd.registry.register"`.
#[pyfunction]
#[pyo3(signature = (domain, verb, prefix = "orch"))]
fn subject_for_command(domain: &str, verb: &str, prefix: &str) -> PyResult<String> {
    let subjects =
        orch_protocol::Subjects::new(prefix).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(subjects.command(domain, verb))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(subject_for_command, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_subject_uses_the_protocol() {
        assert_eq!(super::subject_for_command("registry", "register", "orch").unwrap(), "orch.cmd.registry.register");
    }
}
