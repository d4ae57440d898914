//! The API's error type: knows its status code and renders the protocol's error JSON
//! `{"error": {"code", "message", "field"}}`. Domain errors become protocol errors through
//! [`crate::errors`], the mapping NATS replies use too.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::error::ErrorReply;
use orch_protocol::{ErrorBody, ErrorCode, ProtocolError};

use crate::health::checker::TtlError;
use crate::lifecycle::ControlError;
use crate::registry::WriteError;
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError::new(code, message).into()
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ProtocolError::field(code, field, message).into()
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError(e.0)
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        ApiError(body)
    }
}

/// Domain errors reach the wire through the one mapping of [`crate::errors`].
macro_rules! through_protocol_error {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                ProtocolError::from(e).into()
            }
        }
    )*};
}

through_protocol_error!(StorageError, WriteError, TtlError, ControlError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorReply { error: self.0 })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Unknown routes answer in the same JSON shape.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

/// A known route with another method answers 405 in the same JSON shape.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
