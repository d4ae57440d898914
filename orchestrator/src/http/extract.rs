//! A JSON body extractor whose rejections are JSON errors naming the field, like every other error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use orch_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
        if !json_type {
            return Err(ApiError::new(
                ErrorCode::MalformedPayload,
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the limit")
            } else {
                ApiError::new(ErrorCode::MalformedPayload, rejection.body_text())
            }
        })?;
        Ok(Json(orch_protocol::error::parse_json(&bytes)?))
    }
}

/// True for `application/json` and `application/<anything>+json`, with any parameters: the media
/// type itself is compared, so `text/plain;x=+json` (which a cross-site form may send without a
/// CORS preflight) is not JSON.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json") && !sub.contains('/'))
}

/// The `key=value` pairs of a query string; each route checks its own keys and names the one at
/// fault, so a misspelt parameter is an error instead of being ignored.
/// A value holding the NUL character (`%00`) is refused here for every route: PostgreSQL cannot
/// store or compare it.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::MalformedPayload, format!("query string: {e}")))?;
    if let Some((name, _)) = pairs.iter().find(|(name, value)| name.contains('\0') || value.contains('\0')) {
        let name = if name.contains('\0') { "query" } else { name.as_str() };
        return Err(ApiError::field(ErrorCode::ValidationFailed, name, "must not contain the NUL character (%00)"));
    }
    Ok(pairs)
}

/// The error for a query parameter the route does not know.
pub fn unknown_parameter(name: &str, known: &str) -> ApiError {
    ApiError::field(ErrorCode::ValidationFailed, name, format!("unknown query parameter; use {known}"))
}

/// A body that may be empty; when it is not, it is JSON, declared as such (a cross-site form
/// cannot send that without a preflight).
pub fn optional_json<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
    if !json {
        return Err(ApiError::new(ErrorCode::MalformedPayload, "expected a body with Content-Type: application/json"));
    }
    Ok(Some(orch_protocol::error::parse_json(body)?))
}

#[cfg(test)]
mod tests {
    use super::{is_json, query_pairs};

    #[test]
    fn a_query_value_with_the_nul_character_is_refused_naming_its_parameter() {
        let err = query_pairs(Some("service=web&tag=a%00b")).unwrap_err();
        assert_eq!((err.0.field.as_deref(), err.0.code), (Some("tag"), orch_protocol::ErrorCode::ValidationFailed));
        assert_eq!(query_pairs(Some("service=web")).unwrap(), [("service".to_string(), "web".to_string())]);
    }

    #[test]
    fn only_json_media_types_are_json() {
        for yes in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain;x=+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; a=+json",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
