//! The one error format of the protocol, used in NATS replies, HTTP responses, `command_rejected`
//! events and dead-letter records.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. Clients branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not valid JSON, or a field has the wrong type, or an unknown field is present.
    MalformedPayload,
    /// The payload parsed but a value breaks a rule (range, syntax, size).
    ValidationFailed,
    /// The payload is larger than the configured limit.
    PayloadTooLarge,
    /// The subject names no known command.
    UnknownCommand,
    /// The command conflicts with the current state (e.g. an id registered for another service).
    Conflict,
    /// The target does not exist.
    NotFound,
    /// HTTP only: the route exists, but not with this method.
    MethodNotAllowed,
    /// A dependency (PostgreSQL, NATS) is unavailable; retrying later is safe.
    Unavailable,
    /// Authentication is missing or wrong.
    Unauthorized,
    /// Authenticated, but the caller's role does not allow the request.
    Forbidden,
    /// A guardrail refused the change (e.g. a pinned service's priority).
    Refused,
    /// Too many changes of one target within the rate window; retry later.
    RateLimited,
    /// Something failed inside the orchestrator; details are in its log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that matches the code; also sent in `Nats-Service-Error-Code`.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedPayload | ErrorCode::ValidationFailed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::UnknownCommand => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::Refused => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedPayload => "malformed_payload",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Refused => "refused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `{"code": "...", "message": "...", "field": "..."}`: the error object of every reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Path of the offending field (`port`, `metadata.owner`, `tags[2]`) when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A protocol-level failure: what the client sent cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", .0.message, .0.field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
pub struct ProtocolError(pub ErrorBody);

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError(ErrorBody { code, message: message.into(), field: None })
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ProtocolError(ErrorBody { code, message: message.into(), field: Some(field.into()) })
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::field(ErrorCode::ValidationFailed, field, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    pub fn body(&self) -> &ErrorBody {
        &self.0
    }
}

/// `{"error": {...}}`: the envelope of an error reply on NATS and HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorReply {
    pub error: ErrorBody,
}

/// Parses a JSON payload into `T`, naming the offending field on failure
/// (`tags[1]: invalid type: integer `3`, expected a string`).
///
/// Every payload of the protocol is a JSON object: an array is refused even where serde would
/// read one as a struct's fields in order. A string holding the NUL character (`\u0000`) is refused
/// wherever it is, naming its field: PostgreSQL cannot store it, so it would otherwise fail the
/// whole batch it is written with.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtocolError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|first| *first == b'[') {
        return Err(ProtocolError::new(
            ErrorCode::MalformedPayload,
            "payload must be a JSON object ({...}), not an array",
        ));
    }
    let value = parse_typed(bytes)?;
    if let Some(field) = nul_field(bytes) {
        let (field, what) = match field {
            Some(field) => (field, "must not contain the NUL character (\\u0000)"),
            None => ("payload".into(), "no key may contain the NUL character (\\u0000)"),
        };
        return Err(ProtocolError::invalid(field, what));
    }
    Ok(value)
}

/// Where a string of `bytes` (valid JSON) holds the NUL character: `Some(Some(path))` for a
/// value (`metadata.owner`, `tags[2]`), `Some(None)` for a key, `None` when nowhere. Payloads without
/// the escape `\u0000` are not parsed again.
fn nul_field(bytes: &[u8]) -> Option<Option<String>> {
    // The escape is a backslash (itself not escaped: an odd run of them) before `u0000`.
    let escaped = bytes
        .windows(5)
        .enumerate()
        .any(|(i, w)| w == b"u0000" && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1);
    if !escaped {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fn walk(value: &serde_json::Value, path: &str) -> Option<Option<String>> {
        match value {
            serde_json::Value::String(s) if s.contains('\0') => Some(Some(path.to_string())),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().find_map(|(i, item)| walk(item, &format!("{path}[{i}]")))
            }
            serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
                if key.contains('\0') {
                    return Some(None);
                }
                walk(item, &if path.is_empty() { key.clone() } else { format!("{path}.{key}") })
            }),
            _ => None,
        }
    }
    walk(&value, "")
}

fn parse_typed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtocolError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_eof() {
            format!("payload is not complete JSON: {inner}")
        } else if inner.is_syntax() {
            format!("payload is not valid JSON: {inner}")
        } else {
            inner.to_string()
        };
        if path.is_empty() || path == "." || path == "?" {
            ProtocolError::new(ErrorCode::MalformedPayload, message)
        } else {
            ProtocolError::field(ErrorCode::MalformedPayload, path, message)
        }
    })?;
    de.end().map_err(|e| {
        ProtocolError::new(ErrorCode::MalformedPayload, format!("trailing data after the JSON value: {e}"))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        port: u32,
        tags: Vec<String>,
    }

    #[test]
    fn the_nul_character_is_refused_naming_its_field_and_an_array_is_no_object() {
        let err = parse_json::<serde_json::Value>(br#"{"metadata": {"owner": "a\u0000b"}}"#).unwrap_err();
        assert_eq!((err.code(), err.body().field.as_deref()), (ErrorCode::ValidationFailed, Some("metadata.owner")));
        let err = parse_json::<serde_json::Value>(br#"{"tags": ["x", "\u0000"]}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("tags[1]"));
        let err = parse_json::<serde_json::Value>(br#"{"a\u0000": 1}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("payload"));
        // An escaped backslash followed by the text u0000 is no NUL.
        parse_json::<serde_json::Value>(br#"{"path": "C:\\u0000"}"#).unwrap();
        let err = parse_json::<Sample>(br#" [1, ["a"]]"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedPayload);
        assert!(err.body().message.contains("JSON object"), "{}", err.body().message);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<Sample>(br#"{"port": "x", "tags": []}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("port"));
        assert_eq!(err.code(), ErrorCode::MalformedPayload);
    }

    #[test]
    fn nested_wrong_type_names_the_path() {
        let err = parse_json::<Sample>(br#"{"port": 1, "tags": ["a", 3]}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("tags[1]"));
    }

    #[test]
    fn unknown_field_is_rejected_and_named() {
        let err = parse_json::<Sample>(br#"{"port": 1, "tags": [], "colour": 1}"#).unwrap_err();
        assert!(err.body().message.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn syntax_error_is_malformed_without_field() {
        let err = parse_json::<Sample>(b"{not json").unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedPayload);
        assert!(err.body().message.starts_with("payload is not valid JSON"), "{err}");
    }
}
