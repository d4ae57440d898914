//! The core's one error type, and its translation into the Python exception hierarchy of
//! `orch_bridge._errors` (one function, [`to_pyerr`], does the mapping by error code).

use orch_protocol::{ErrorBody, ProtocolError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `Result` of the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the core. The variants name who is to blame; the Python side
/// branches on [`Error::code`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The orchestrator answered with an error reply (`{"error": {...}}`, protocol.md §7).
    #[error("{}", .0.message)]
    Remote(ErrorBody),
    /// An argument was refused before anything was sent (same codes as the server's checks).
    #[error("{}", .0.message)]
    Invalid(ErrorBody),
    /// NATS is unreachable, the connection is closed, or nobody answers on a subject.
    #[error("{0}")]
    Connection(String),
    /// No reply within the timeout.
    #[error("{0}")]
    Timeout(String),
    /// A reply or an event that this bridge cannot read (a protocol mismatch).
    #[error("{0}")]
    Decode(String),
    /// A durable consumer exists with other settings.
    #[error("{0}")]
    Conflict(String),
    /// Something that should exist does not (the events stream, a consumer).
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// A client-side argument error on `field`, with the code the server would use.
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid(ProtocolError::invalid(field, message).0)
    }

    /// The machine-readable code: the server's for remote and argument errors, else a code of
    /// the bridge's own (`connection`, `timeout`, `bad_reply`, `conflict`, `not_found`).
    pub fn code(&self) -> &str {
        match self {
            Error::Remote(body) | Error::Invalid(body) => body.code.as_str(),
            Error::Connection(_) => "connection",
            Error::Timeout(_) => "timeout",
            Error::Decode(_) => "bad_reply",
            Error::Conflict(_) => "conflict",
            Error::NotFound(_) => "not_found",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Remote(body) | Error::Invalid(body) => body.field.as_deref(),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Invalid(e.0)
    }
}

static MAKE_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for `error`: `orch_bridge._errors._make(code, message, field)` picks the
/// class by code. Falls back to `RuntimeError` if that module cannot be imported.
pub fn to_pyerr(py: Python<'_>, error: &Error) -> PyErr {
    let make = MAKE_ERROR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("orch_bridge._errors")?.getattr("_make")?.unbind())
    });
    let made = make.and_then(|make| make.bind(py).call1((error.code(), error.message(), error.field())));
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
    use orch_protocol::ErrorCode;

    #[test]
    fn codes_follow_the_server_and_the_bridge() {
        let remote =
            Error::Remote(ErrorBody { code: ErrorCode::RateLimited, message: "slow down".into(), field: None });
        assert_eq!(remote.code(), "rate_limited");
        assert_eq!(remote.message(), "slow down");
        let invalid = Error::invalid("value", "must be 0-100");
        assert_eq!((invalid.code(), invalid.field()), ("validation_failed", Some("value")));
        assert_eq!(Error::Timeout("late".into()).code(), "timeout");
        assert_eq!(Error::Connection("down".into()).code(), "connection");
    }
}
