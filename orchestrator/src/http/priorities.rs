//! Service priorities over HTTP: the same operations as `<prefix>.req.priority.*`. Engines set and
//! clear adjustments; operators set a service's policy (baseline, bounds, pin) and release a
//! mass-change hold. Every change, refused ones included, is in `GET /priorities/{service}`'s
//! history.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::error::ErrorReply;
use orch_protocol::priority::{
    ChangeReply, ClearRequest, GetReply, GetRequest, GuardView, ListReply, Outcome, PolicyRequest, ReleaseReply,
    ReleaseRequest, SetRequest,
};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{self, query_pairs, unknown_parameter};
use super::openapi::{BadRequest, Internal, PayloadTooLarge, Unavailable, tags};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one, set, clear))
        .routes(routes!(policy))
        .routes(routes!(guard))
        .routes(routes!(release))
}

/// Who asks when the body does not say.
fn api() -> String {
    "api".to_string()
}

/// An engine's adjustment of a service's priority.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetBody {
    /// Wanted priority, 0-100; clamped to the service's bounds.
    #[schema(minimum = 0, maximum = 100)]
    value: i64,
    /// Who asks, e.g. `engine:attention`.
    #[serde(default = "api")]
    #[schema(default = "api")]
    source: String,
    /// Why, in words an operator can read.
    reason: String,
    /// After this many seconds the adjustment lapses (at most 30 days).
    #[serde(default)]
    ttl_seconds: Option<f64>,
}

/// A refused change as an answer: a `rate_limited` one carries `Retry-After`, the guard's window
/// (the longest a caller waits before a change of the service is taken again).
struct Refusal(ApiError, Option<u64>);

impl Refusal {
    fn of(error: orch_protocol::ProtocolError, state: &AppState) -> Refusal {
        let retry =
            (error.code() == orch_protocol::ErrorCode::RateLimited).then(|| state.priorities.retry_after_seconds());
        Refusal(error.into(), retry)
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal(error, None)
    }
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if let Some(seconds) = self.1 {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Adjust a service's priority (engines)
///
/// `200` when applied or clamped, `202` when held by the mass-change guard; `409 refused`
/// (pinned) and `429 rate_limited` are recorded too.
#[utoipa::path(
    put,
    path = "/priorities/{service}",
    operation_id = "set_priority",
    tag = tags::PRIORITIES,
    params(("service" = String, Path, description = "Service name", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")),
    request_body(content = SetBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied or clamped", body = ChangeReply),
        (status = 202, description = "Held by the mass-change guard", body = ChangeReply),
        BadRequest,
        (status = 409, description = "`refused`: the service is pinned by an operator", body = ErrorReply),
        PayloadTooLarge,
        (status = 429, description = "`rate_limited`: too many changes of this service within the rate window",
            body = ErrorReply,
            headers(("Retry-After" = u32, description = "Seconds to wait: the guard's rate window"))),
        Internal, Unavailable,
    )
)]
async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(service): Path<String>,
    extract::Json(body): extract::Json<SetBody>,
) -> Result<Response, Refusal> {
    let request = SetRequest {
        service,
        value: body.value,
        source: body.source,
        reason: body.reason,
        ttl_seconds: body.ttl_seconds,
    };
    let reply = state.priorities.set(request, caller.principal).await.map_err(|e| Refusal::of(e, &state))?;
    let status = if reply.change.outcome == Outcome::Held { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(reply)).into_response())
}

/// Withdraw an engine's adjustment; the baseline applies again
///
/// `200` when applied, `202` when held by the mass-change guard; `409 refused` (pinned) and `429
/// rate_limited` are recorded too.
#[utoipa::path(
    delete,
    path = "/priorities/{service}",
    operation_id = "clear_priority",
    tag = tags::PRIORITIES,
    params(
        ("service" = String, Path, description = "Service name", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("source" = Option<String>, Query, description = "Who asks (default `api`)"),
        ("reason" = Option<String>, Query, description = "Why"),
    ),
    responses(
        (status = 200, description = "Applied", body = ChangeReply),
        (status = 202, description = "Held by the mass-change guard", body = ChangeReply),
        BadRequest,
        (status = 409, description = "`refused`: the service is pinned by an operator", body = ErrorReply),
        (status = 429, description = "`rate_limited`: too many changes of this service within the rate window",
            body = ErrorReply,
            headers(("Retry-After" = u32, description = "Seconds to wait: the guard's rate window"))),
        Internal, Unavailable,
    )
)]
async fn clear(
    State(state): State<AppState>,
    caller: Caller,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let mut request = ClearRequest { service, source: api(), reason: String::new() };
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "source" => request.source = value,
            "reason" => request.reason = value,
            other => return Err(unknown_parameter(other, "source, reason").into()),
        }
    }
    let reply = state.priorities.clear(request, caller.principal).await.map_err(|e| Refusal::of(e, &state))?;
    let status = if reply.change.outcome == Outcome::Held { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(reply)).into_response())
}

/// A service's priority and its latest changes
#[utoipa::path(
    get,
    path = "/priorities/{service}",
    operation_id = "get_priority",
    tag = tags::PRIORITIES,
    params(
        ("service" = String, Path, description = "Service name", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("history" = Option<u32>, Query, minimum = 0, maximum = 1000,
            description = "Changes to include, newest first: 0-1000 (default 50)"),
    ),
    responses(
        (status = 200, description = "The priority and its history, newest first", body = GetReply),
        BadRequest, Internal, Unavailable,
    )
)]
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

/// Every known service's priority and the mass-change guard
///
/// Query parameters are ignored.
#[utoipa::path(
    get,
    path = "/priorities",
    operation_id = "list_priorities",
    tag = tags::PRIORITIES,
    responses(
        (status = 200, description = "The priorities and the guard", body = ListReply),
        Internal, Unavailable,
    )
)]
async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.priorities.list().await?).into_response())
}

/// The mass-change guard
#[utoipa::path(
    get,
    path = "/priority-guard",
    operation_id = "priority_guard",
    tag = tags::PRIORITIES,
    responses(
        (status = 200, description = "The guard's state", body = GuardView),
        Internal, Unavailable,
    )
)]
async fn guard(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.priorities.list().await?.guard).into_response())
}

/// An operator's policy of a service; fields left out keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// The priority without adjustments, 0-100, within the bounds.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    baseline: Option<i64>,
    /// Lowest priority an adjustment may give, 0-100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    min: Option<i64>,
    /// Highest priority an adjustment may give, 0-100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    max: Option<i64>,
    /// A pinned service keeps its baseline: engine changes are refused.
    #[serde(default)]
    pinned: Option<bool>,
    /// Who asks.
    #[serde(default = "api")]
    #[schema(default = "api")]
    source: String,
    /// Why.
    #[serde(default)]
    reason: String,
}

/// Set a service's baseline, bounds and pin (operators)
#[utoipa::path(
    patch,
    path = "/priorities/{service}/policy",
    operation_id = "set_priority_policy",
    tag = tags::PRIORITIES,
    params(("service" = String, Path, description = "Service name", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")),
    request_body(content = PolicyBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The change and the priority after it", body = ChangeReply),
        BadRequest, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn policy(
    State(state): State<AppState>,
    caller: Caller,
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
    Ok(Json(state.priorities.policy(request, caller.principal).await?).into_response())
}

/// An operator ends a mass-change hold.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    /// Who asks.
    #[serde(default = "api")]
    #[schema(default = "api")]
    source: String,
    /// Why.
    #[serde(default)]
    reason: String,
    /// Apply the held changes (the latest per service); without, they are dropped.
    #[serde(default = "yes")]
    #[schema(default = true)]
    apply: bool,
}

fn yes() -> bool {
    true
}

/// End a mass-change hold (operators)
///
/// Every field of the body is optional; `{}` is fine, but a body is required.
#[utoipa::path(
    post,
    path = "/priority-guard/release",
    operation_id = "release_priority_guard",
    tag = tags::PRIORITIES,
    request_body(content = ReleaseBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The changes applied (or dropped) and the guard after", body = ReleaseReply),
        BadRequest, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    extract::Json(body): extract::Json<ReleaseBody>,
) -> Result<Response, ApiError> {
    let request = ReleaseRequest { source: body.source, reason: body.reason, apply: body.apply };
    Ok(Json(state.priorities.release(request, caller.principal).await?).into_response())
}
