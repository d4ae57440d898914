//! The client crate's error as the core passes it on, and its translation into the Python
//! exception hierarchy of `orch_bridge._errors` (one function, [`to_pyerr`], maps by error code).

use orch_protocol::ProtocolError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `Result` of the core.
pub type Result<T> = std::result::Result<T, Error>;

/// The client crate's error on its way to Python: everything that can go wrong comes from
/// `orch-client` (or from a check of an argument here); this type only adds the translation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub orch_client::Error);

impl Error {
    /// An argument error on `field`, with the code the server would use.
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error(orch_client::Error::invalid(field, message))
    }

    /// A reply or value this bridge cannot read.
    pub fn decode(message: impl Into<String>) -> Error {
        Error(orch_client::Error::Decode(message.into()))
    }

    /// The connection or a background task failed.
    pub fn connection(message: impl Into<String>) -> Error {
        Error(orch_client::Error::Connection(message.into()))
    }

    /// The machine-readable code (`orch_client::Error::code`).
    pub fn code(&self) -> &str {
        self.0.code()
    }

    pub fn field(&self) -> Option<&str> {
        self.0.field()
    }

    pub fn message(&self) -> String {
        self.0.to_string()
    }
}

impl From<orch_client::Error> for Error {
    fn from(e: orch_client::Error) -> Self {
        Error(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error(e.into())
    }
}

static MAKE_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for `error`: `orch_bridge._errors._make(code, message, field,
/// retry_after)` picks the class by code; `retry_after` is in seconds, or None. Falls back to `RuntimeError` if that module cannot be imported.
pub fn to_pyerr(py: Python<'_>, error: &Error) -> PyErr {
    let make = MAKE_ERROR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("orch_bridge._errors")?.getattr("_make")?.unbind())
    });
    let retry_after = error.0.retry_after().map(|d| d.as_secs_f64());
    let made = make.and_then(|make| make.bind(py).call1((error.code(), error.message(), error.field(), retry_after)));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(import_error) => PyRuntimeError::new_err(format!(
            "{} [{}] (orch_bridge._errors unavailable: {import_error})",
            error,
            error.code()
        )),
    }
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        Python::attach(|py| to_pyerr(py, &error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_protocol::{ErrorBody, ErrorCode};

    #[test]
    fn codes_follow_the_server_and_the_bridge() {
        let remote = Error(orch_client::Error::Remote(
            ErrorBody { code: ErrorCode::RateLimited, message: "slow down".into(), field: None },
            Some(std::time::Duration::from_secs(60)),
        ));
        assert_eq!(remote.code(), "rate_limited");
        assert_eq!(remote.message(), "slow down");
        let invalid = Error::invalid("value", "must be 0-100");
        assert_eq!((invalid.code(), invalid.field()), ("validation_failed", Some("value")));
        assert_eq!(Error(orch_client::Error::Timeout("late".into())).code(), "timeout");
        assert_eq!(Error::connection("down").code(), "connection");
    }
}
