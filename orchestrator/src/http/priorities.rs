//! Service priorities over HTTP: the same operations as `<prefix>.req.priority.*`. Engines set and
//! clear adjustments; operators set a service's policy (baseline, bounds, pin) and release a
//! mass-change hold. Every change, refused ones included, is in `GET /priorities/{service}`'s
//! history.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use orch_protocol::priority::{ClearRequest, GetRequest, Outcome, PolicyRequest, ReleaseRequest, SetRequest};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{self, query_pairs, unknown_parameter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/priorities", get(list))
        .route("/priorities/{service}", get(one).put(set).delete(clear))
        .route("/priorities/{service}/policy", patch(policy))
        .route("/priority-guard", get(guard))
        .route("/priority-guard/release", post(release))
}

/// Who asks when the body does not say.
fn api() -> String {
    "api".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: i64,
    #[serde(default = "api")]
    source: String,
    reason: String,
    #[serde(default)]
    ttl_seconds: Option<f64>,
}

/// Body `{"value": 80, "reason": "...", "source": "engine:x", "ttl_seconds": 300}`. 200 when
/// applied or clamped, 202 when held by the mass-change guard; 409 `refused` (pinned) and 429
/// `rate_limited` are recorded too.
async fn set(
    State(state): State<AppState>,
    Path(service): Path<String>,
    extract::Json(body): extract::Json<SetBody>,
) -> Result<Response, ApiError> {
    let request = SetRequest {
        service,
        value: body.value,
        source: body.source,
        reason: body.reason,
        ttl_seconds: body.ttl_seconds,
    };
    let reply = state.priorities.set(request).await?;
    let status = if reply.change.outcome == Outcome::Held { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(reply)).into_response())
}

/// Query: `source`, `reason`.
async fn clear(
    State(state): State<AppState>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut request = ClearRequest { service, source: api(), reason: String::new() };
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "source" => request.source = value,
            "reason" => request.reason = value,
            other => return Err(unknown_parameter(other, "source, reason")),
        }
    }
    let reply = state.priorities.clear(request).await?;
    let status = if reply.change.outcome == Outcome::Held { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(reply)).into_response())
}

/// Query: `history` (changes to include, newest first; 0-1000, default 50).
async fn one(
    State(state): State<AppState>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut request = GetRequest { service, history: None };
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "history" => {
                let n = value.parse().map_err(|_| {
                    ApiError::field(orch_protocol::ErrorCode::ValidationFailed, "history", "must be a number 0-1000")
                })?;
                request.history = Some(n);
            }
            other => return Err(unknown_parameter(other, "history")),
        }
    }
    Ok(Json(state.priorities.get(request).await?).into_response())
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.priorities.list().await?).into_response())
}

async fn guard(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.priorities.list().await?.guard).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default)]
    baseline: Option<i64>,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
    #[serde(default)]
    pinned: Option<bool>,
    #[serde(default = "api")]
    source: String,
    #[serde(default)]
    reason: String,
}

/// Operators: body `{"baseline": 70, "min": 20, "max": 90, "pinned": false, "source": "...",
/// "reason": "..."}`; fields left out keep their value.
async fn policy(
    State(state): State<AppState>,
    Path(service): Path<String>,
    extract::Json(body): extract::Json<PolicyBody>,
) -> Result<Response, ApiError> {
    let request = PolicyRequest {
        service,
        baseline: body.baseline,
        min: body.min,
        max: body.max,
        pinned: body.pinned,
        source: body.source,
        reason: body.reason,
    };
    Ok(Json(state.priorities.policy(request).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default = "api")]
    source: String,
    #[serde(default)]
    reason: String,
    #[serde(default = "yes")]
    apply: bool,
}

fn yes() -> bool {
    true
}

/// Operators: body `{"apply": true, "source": "...", "reason": "..."}` (all optional).
async fn release(
    State(state): State<AppState>,
    extract::Json(body): extract::Json<ReleaseBody>,
) -> Result<Response, ApiError> {
    let request = ReleaseRequest { source: body.source, reason: body.reason, apply: body.apply };
    Ok(Json(state.priorities.release(request).await?).into_response())
}
