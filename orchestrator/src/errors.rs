//! The one mapping from the orchestrator's domain errors to the protocol's error (code, message,
//! field). The HTTP API ([`crate::http::ApiError`]) and NATS request/reply
//! ([`crate::consumers::requests`]) both go through it, so a failure has the same code and the same
//! message whichever way the request came.
//!
//! Internal failures are logged here, once, with their details; the caller only learns that the
//! request failed inside the orchestrator. A dependency that is down (PostgreSQL, a node's agent)
//! is `unavailable`: retrying later is safe.

use orch_protocol::{ErrorCode, ProtocolError};

use crate::agent::client::AgentError;
use crate::health::checker::TtlError;
use crate::lifecycle::ControlError;
use crate::registry::WriteError;
use crate::storage::StorageError;

/// What a caller is told when PostgreSQL does not answer.
const STORAGE_UNAVAILABLE: &str = "PostgreSQL is unavailable; retry later";
/// What a caller is told when something failed inside the orchestrator.
const INTERNAL: &str = "internal error; see the orchestrator's log";

fn internal(what: &str, error: &dyn std::fmt::Display) -> ProtocolError {
    tracing::error!(error = %error, "{what}");
    ProtocolError::new(ErrorCode::Internal, INTERNAL)
}

impl From<StorageError> for ProtocolError {
    fn from(e: StorageError) -> ProtocolError {
        if e.is_transient() {
            tracing::warn!(error = %e, "request failed: storage unavailable");
            ProtocolError::new(ErrorCode::Unavailable, STORAGE_UNAVAILABLE)
        } else {
            internal("request failed in storage", &e)
        }
    }
}

impl From<WriteError> for ProtocolError {
    fn from(e: WriteError) -> ProtocolError {
        match e {
            WriteError::Unavailable(message) => ProtocolError::new(ErrorCode::Unavailable, message),
            WriteError::Internal(message) => internal("command failed", &message),
        }
    }
}

impl From<TtlError> for ProtocolError {
    fn from(e: TtlError) -> ProtocolError {
        match e {
            TtlError::NotFound(..) => ProtocolError::field(ErrorCode::NotFound, "check", e.to_string()),
            TtlError::NotTtl { .. } => ProtocolError::field(ErrorCode::Conflict, "check", e.to_string()),
            TtlError::Write(w) => w.into(),
        }
    }
}

impl From<ControlError> for ProtocolError {
    fn from(e: ControlError) -> ProtocolError {
        // A storage failure maps like any other, whoever met it.
        let e = match e {
            ControlError::Storage(storage) => return storage.into(),
            ControlError::Refused(problems) => return problems.into(),
            ControlError::Invalid(e) => return e,
            other => other,
        };
        let code = match &e {
            ControlError::NoStack
            | ControlError::NoRun
            | ControlError::UnknownService(_)
            | ControlError::UnknownVersion { .. } => ErrorCode::NotFound,
            ControlError::Busy(_) => ErrorCode::Conflict,
            ControlError::Agent(AgentError::Refused { code, .. }) => *code,
            ControlError::Agent(_) | ControlError::Stopped | ControlError::Storage(_) => ErrorCode::Unavailable,
            ControlError::Refused(_) | ControlError::Invalid(_) => ErrorCode::ValidationFailed,
        };
        match e {
            ControlError::UnknownService(_) => ProtocolError::field(code, "service", e.to_string()),
            ControlError::UnknownVersion { field, .. } => ProtocolError::field(code, field, e.to_string()),
            _ => ProtocolError::new(code, e.to_string()),
        }
    }
}

/// `not_found` on `id`: no instance has this id.
pub fn no_instance(id: &str) -> ProtocolError {
    ProtocolError::field(ErrorCode::NotFound, "id", format!("no instance with id {id:?}"))
}

/// `not_found` on `name`: no instance of this service is registered.
pub fn no_service(name: &str) -> ProtocolError {
    ProtocolError::field(ErrorCode::NotFound, "name", format!("no instance of service {name:?} is registered"))
}

pub fn no_node(name: &str) -> ProtocolError {
    ProtocolError::field(ErrorCode::NotFound, "name", format!("no node named {name:?} has reported"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = ProtocolError::from(WriteError::Internal("relation \"instances\" does not exist".into()));
        assert_eq!(e.0.code, ErrorCode::Internal);
        assert!(!e.0.message.contains("instances"), "{}", e.0.message);
    }

    #[test]
    fn storage_failures_in_the_controller_map_like_any_storage_failure() {
        let unavailable = || StorageError::Sqlx(sqlx::Error::PoolTimedOut);
        assert_eq!(ProtocolError::from(ControlError::Storage(unavailable())).0, ProtocolError::from(unavailable()).0);
        assert_eq!(ProtocolError::from(unavailable()).0.code, ErrorCode::Unavailable);
    }

    #[test]
    fn an_unknown_service_names_the_field() {
        let e = ProtocolError::from(ControlError::UnknownService("db".into()));
        assert_eq!((e.0.code, e.0.field.as_deref()), (ErrorCode::NotFound, Some("service")));
    }
}
