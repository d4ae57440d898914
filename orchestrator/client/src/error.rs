//! The client's one error type. The variants name who is to blame; [`Error::code`] gives a
//! machine-readable code (the server's own for its error replies, protocol.md §7).

use std::time::Duration;

use orch_protocol::{ErrorBody, ProtocolError};

/// `Result` of the client.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong talking to the orchestrator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The orchestrator answered with an error reply (`{"error": {...}}`, protocol.md §7), and
    /// when to retry if it said (`Orch-Retry-After` over NATS, `Retry-After` over HTTP: a
    /// `rate_limited` change, an `unavailable` answer).
    #[error("{}", .0.message)]
    Remote(ErrorBody, Option<Duration>),
    /// An argument was refused before anything was sent (same codes as the server's checks).
    #[error("{}", .0.message)]
    Invalid(ErrorBody),
    /// NATS or the HTTP API is unreachable, the connection is closed, or nobody answers.
    #[error("{0}")]
    Connection(String),
    /// No reply within the timeout.
    #[error("{0}")]
    Timeout(String),
    /// A reply or an event that this client cannot read (a protocol mismatch).
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

    /// The machine-readable code: the server's for remote and argument errors, else the client's
    /// own (`connection`, `timeout`, `bad_reply`, `conflict`, `not_found`).
    pub fn code(&self) -> &str {
        match self {
            Error::Remote(body, _) | Error::Invalid(body) => body.code.as_str(),
            Error::Connection(_) => "connection",
            Error::Timeout(_) => "timeout",
            Error::Decode(_) => "bad_reply",
            Error::Conflict(_) => "conflict",
            Error::NotFound(_) => "not_found",
        }
    }

    /// The field an argument or remote error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Remote(body, _) | Error::Invalid(body) => body.field.as_deref(),
            _ => None,
        }
    }

    /// How long the orchestrator asked the caller to wait before retrying, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Remote(_, retry_after) => *retry_after,
            _ => None,
        }
    }

    /// A retry hint as sent: whole seconds.
    pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
        value?.trim().parse::<u64>().ok().map(Duration::from_secs)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Invalid(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_protocol::ErrorCode;

    #[test]
    fn codes_follow_the_server_and_the_client() {
        let remote =
            Error::Remote(ErrorBody { code: ErrorCode::RateLimited, message: "slow down".into(), field: None }, None);
        assert_eq!(remote.code(), "rate_limited");
        assert_eq!(remote.to_string(), "slow down");
        let invalid = Error::invalid("value", "must be 0-100");
        assert_eq!((invalid.code(), invalid.field()), ("validation_failed", Some("value")));
        assert_eq!(Error::Timeout("late".into()).code(), "timeout");
        assert_eq!(Error::Connection("down".into()).code(), "connection");
    }
}
