//! The health API: system and service health (HTTP status 200 / 429 / 503 by state, like Consul's
//! agent health endpoint), checks of an instance with TTL updates, maintenance of an instance or a
//! whole service, and the history of transitions.
//!
//! `/services/{id}/…` takes a service name here; the older instance routes (`GET`/`DELETE
//! /services/{id}`, `/services/{id}/heartbeat`) take an instance id. Instance-level health routes
//! live under `/instances/{id}/…`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::error::ErrorReply;
use orch_protocol::events::SelfPreservationData;
use orch_protocol::health::{
    Aggregate, CheckSpec, EndSelfPreservationRequest, MaintenanceRequest, TtlUpdate, validate_check_id,
};
use orch_protocol::registry::{Instance, validate_instance_id, validate_name};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract;
use super::openapi::{BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unavailable, tags};
use super::services::{IdempotencyKey, submit};
use crate::health::checker::TtlReply;
use crate::health::{CheckView, ServiceReport, SystemReport};
use crate::registry::{Command, Reply};
use crate::storage::health::{self as store, HistoryEntry, HistoryFilter};
use crate::storage::instances::PAGE_MAX;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system))
        .routes(routes!(end_self_preservation))
        .routes(routes!(history))
        .routes(routes!(service))
        .routes(routes!(service_maintenance_on, service_maintenance_off))
        .routes(routes!(list_checks))
        .routes(routes!(put_check, remove_check))
        .routes(routes!(ttl_update))
        .routes(routes!(maintenance_on, maintenance_off))
        .routes(routes!(instance_history))
}

/// The checks of an instance.
#[derive(Serialize, ToSchema)]
struct CheckList {
    /// The lease first, then the declared checks.
    checks: Vec<CheckView>,
}

/// Recorded transitions, newest first.
#[derive(Serialize, ToSchema)]
struct History {
    items: Vec<HistoryEntry>,
}

/// The `503` of a service's health: its report when the service is critical, or the error object
/// when the orchestrator cannot answer. The body tells them apart.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes two bodies the handler sends under one status
enum CriticalOrUnavailable {
    Critical(ServiceReport),
    Unavailable(ErrorReply),
}

fn status_of(state: Aggregate) -> StatusCode {
    StatusCode::from_u16(state.http_status()).expect("a valid status code")
}

/// Health of the whole system
///
/// The status follows the state: `200` healthy, `429` degraded, `503` critical, so a load
/// balancer or probe can use it as it is. `status_codes=false` answers `200` whatever the state,
/// for a page or a script that reads the body (browsers log every non-2xx answer as an error).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "system_health",
    tag = tags::HEALTH,
    params(("status_codes" = Option<bool>, Query, description = "`false`: answer 200 whatever the state (default `true`)")),
    responses(
        (status = 200, description = "Healthy (or any state with `status_codes=false`)", body = SystemReport),
        (status = 429, description = "Degraded", body = SystemReport),
        (status = 503, description = "Critical", body = SystemReport),
        BadRequest,
    )
)]
async fn system(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut status_codes = true;
    for (key, value) in super::extract::query_pairs(query.as_deref())? {
        match (key.as_str(), value.as_str()) {
            ("status_codes", "true") => status_codes = true,
            ("status_codes", "false") => status_codes = false,
            ("status_codes", _) => {
                return Err(ApiError::field(ErrorCode::ValidationFailed, "status_codes", "must be true or false"));
            }
            (other, _) => return Err(super::extract::unknown_parameter(other, "status_codes")),
        }
    }
    let report = state.health.system_report(&state.registry);
    let status = if status_codes { status_of(report.system.state) } else { StatusCode::OK };
    Ok((status, Json(report)).into_response())
}

/// Health of one service with its instances
///
/// The status follows the state: `200` healthy, `429` degraded, `503` critical.
#[utoipa::path(
    get,
    path = "/services/{id}/health",
    operation_id = "service_health",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Service name (not an instance id)", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")),
    responses(
        (status = 200, description = "Healthy", body = ServiceReport),
        (status = 429, description = "Degraded", body = ServiceReport),
        (status = 503, description = "Critical (the report), or the orchestrator cannot answer (the error \
            object, with `Retry-After`)", body = CriticalOrUnavailable),
        BadRequest, NotFound, Internal,
    )
)]
async fn service(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    match state.health.service_report(&state.pool, &name).await? {
        Some(report) => Ok((status_of(report.view.state), Json(report)).into_response()),
        None => Err(crate::errors::no_service(&name).into()),
    }
}

/// End self-preservation
///
/// For a deliberate large scale-down, which otherwise keeps self-preservation on: the end is
/// recorded with a `self_preservation_exited` event by the caller (with the reason), then every
/// overdue lease expires at once. The body may be empty. `409` when it is not active.
#[utoipa::path(
    post,
    path = "/health/self-preservation/end",
    operation_id = "end_self_preservation",
    tag = tags::HEALTH,
    request_body(content = Option<EndSelfPreservationRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Ended: the data of its `self_preservation_exited` event", body = SelfPreservationData),
        BadRequest, Conflict, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn end_self_preservation(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: EndSelfPreservationRequest = super::extract::optional_json(&headers, &body)?.unwrap_or_default();
    request.validate()?;
    let data = state.registry.end_self_preservation(caller.principal, request.reason).await?;
    Ok(Json(data).into_response())
}

/// Put every instance of a service in maintenance
///
/// Instances in maintenance are hidden from discovery and kept in the registry.
#[utoipa::path(
    put,
    path = "/services/{id}/maintenance",
    operation_id = "service_maintenance_on",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Service name (not an instance id)", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"), IdempotencyKey),
    request_body(content = MaintenanceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`updated` or `unchanged`", body = Reply),
        BadRequest, Conflict, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn service_maintenance_on(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    extract::Json(request): extract::Json<MaintenanceRequest>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    request.validate()?;
    let body = format!("{name}\n{}", request.reason).into_bytes();
    let command = Command::ServiceMaintenance { service: name, reason: Some(request.reason) };
    submit(&state, &caller, &headers, "PUT /api/v1/services/{name}/maintenance", body, command).await
}

/// Take a service out of maintenance
#[utoipa::path(
    delete,
    path = "/services/{id}/maintenance",
    operation_id = "service_maintenance_off",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Service name (not an instance id)", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"), IdempotencyKey),
    responses(
        (status = 200, description = "`updated` or `unchanged`", body = Reply),
        BadRequest, Conflict, Internal, Unavailable,
    )
)]
async fn service_maintenance_off(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let body = name.clone().into_bytes();
    let command = Command::ServiceMaintenance { service: name, reason: None };
    submit(&state, &caller, &headers, "DELETE /api/v1/services/{name}/maintenance", body, command).await
}

async fn instance(state: &AppState, id: &str) -> Result<Instance, ApiError> {
    validate_instance_id("id", id)?;
    state.registry.get(id).await?.map(|view| view.instance).ok_or_else(|| crate::errors::no_instance(id).into())
}

/// The checks of an instance
#[utoipa::path(
    get,
    path = "/instances/{id}/checks",
    operation_id = "list_checks",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$")),
    responses(
        (status = 200, description = "The lease first, then the declared checks", body = CheckList),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn list_checks(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let inst = instance(&state, &id).await?;
    Ok(Json(CheckList { checks: state.health.checks(&state.registry, &inst) }).into_response())
}

/// Add or replace a check of an instance
///
/// The body's `id` may be left out; when given it must be the one in the path.
#[utoipa::path(
    put,
    path = "/instances/{id}/checks/{check}",
    operation_id = "put_check",
    tag = tags::HEALTH,
    params(
        ("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"),
        ("check" = String, Path, description = "Check id", pattern = r"^[a-z0-9_-]{1,64}$"),
        IdempotencyKey,
    ),
    request_body(content = CheckSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "`updated` (`changed` is `[\"checks\"]`) or `unchanged`", body = Reply),
        BadRequest, NotFound, Conflict, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn put_check(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, check)): Path<(String, String)>,
    extract::Json(mut spec): extract::Json<CheckSpec>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    validate_check_id("check", &check)?;
    if spec.id.is_empty() {
        spec.id = check.clone();
    }
    spec.normalize();
    if spec.id != check {
        return Err(ApiError::field(
            ErrorCode::ValidationFailed,
            "id",
            format!("the body names check {:?} but the path names {check:?}", spec.id),
        ));
    }
    spec.validate("check")?;
    let body = serde_json::to_vec(&(&id, &spec)).expect("a check serializes");
    submit(&state, &caller, &headers, "PUT /api/v1/instances/{id}/checks/{check}", body, Command::PutCheck { id, spec })
        .await
}

/// Remove a check of an instance
#[utoipa::path(
    delete,
    path = "/instances/{id}/checks/{check}",
    operation_id = "remove_check",
    tag = tags::HEALTH,
    params(
        ("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"),
        ("check" = String, Path, description = "Check id", pattern = r"^[a-z0-9_-]{1,64}$"),
        IdempotencyKey,
    ),
    responses(
        (status = 200, description = "`updated`", body = Reply),
        BadRequest, NotFound, Conflict, Internal, Unavailable,
    )
)]
async fn remove_check(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, check)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    validate_check_id("check", &check)?;
    let body = format!("{id}\n{check}").into_bytes();
    submit(
        &state,
        &caller,
        &headers,
        "DELETE /api/v1/instances/{id}/checks/{check}",
        body,
        Command::RemoveCheck { id, check },
    )
    .await
}

/// Report the status of a TTL check
///
/// The check turns critical when no report comes within its `ttl`.
#[utoipa::path(
    put,
    path = "/instances/{id}/checks/{check}/ttl",
    operation_id = "ttl_update",
    tag = tags::HEALTH,
    params(
        ("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"),
        ("check" = String, Path, description = "Id of a `ttl` check", pattern = r"^[a-z0-9_-]{1,64}$"),
    ),
    request_body(content = TtlUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "The check's status after the update", body = TtlReply),
        BadRequest, NotFound,
        (status = 409, description = "`conflict`: the check is not a `ttl` check", body = ErrorReply),
        PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn ttl_update(
    State(state): State<AppState>,
    Path((id, check)): Path<(String, String)>,
    extract::Json(update): extract::Json<TtlUpdate>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    validate_check_id("check", &check)?;
    match state.health.checker.ttl_update(&id, &check, update.status, update.output).await {
        Ok(reply) => Ok(Json(reply).into_response()),
        Err(e) => Err(e.into()),
    }
}

/// Put an instance in maintenance
///
/// An instance in maintenance is hidden from discovery and kept in the registry.
#[utoipa::path(
    put,
    path = "/instances/{id}/maintenance",
    operation_id = "instance_maintenance_on",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"), IdempotencyKey),
    request_body(content = MaintenanceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`updated` or `unchanged`, with the instance", body = Reply),
        BadRequest, NotFound, Conflict, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn maintenance_on(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    extract::Json(request): extract::Json<MaintenanceRequest>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    request.validate()?;
    let body = format!("{id}\n{}", request.reason).into_bytes();
    let command = Command::Maintenance { id, reason: Some(request.reason) };
    submit(&state, &caller, &headers, "PUT /api/v1/instances/{id}/maintenance", body, command).await
}

/// Take an instance out of maintenance
#[utoipa::path(
    delete,
    path = "/instances/{id}/maintenance",
    operation_id = "instance_maintenance_off",
    tag = tags::HEALTH,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"), IdempotencyKey),
    responses(
        (status = 200, description = "`updated` or `unchanged`, with the instance", body = Reply),
        BadRequest, NotFound, Conflict, Internal, Unavailable,
    )
)]
async fn maintenance_off(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let body = id.clone().into_bytes();
    submit(
        &state,
        &caller,
        &headers,
        "DELETE /api/v1/instances/{id}/maintenance",
        body,
        Command::Maintenance { id, reason: None },
    )
    .await
}

/// Parses `?limit=&before=` (and, when `filters` is true, `service=&instance=&level=`).
fn history_filter(query: Option<&str>, filters: bool) -> Result<HistoryFilter, ApiError> {
    let pairs = super::extract::query_pairs(query)?;
    let mut f = HistoryFilter { limit: 100, ..Default::default() };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                f.limit = value.parse().ok().filter(|l| (1..=PAGE_MAX).contains(l)).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "limit", format!("must be 1-{PAGE_MAX}"))
                })?
            }
            "before" => {
                f.before = Some(value.parse().map_err(|_| {
                    ApiError::field(ErrorCode::ValidationFailed, "before", "must be the seq of an earlier entry")
                })?)
            }
            "service" if filters => f.service = Some(value),
            "instance" if filters => f.instance_id = Some(value),
            "level" if filters => {
                if !["check", "instance", "service", "system"].contains(&value.as_str()) {
                    return Err(ApiError::field(
                        ErrorCode::ValidationFailed,
                        "level",
                        "must be check, instance, service or system",
                    ));
                }
                f.level = Some(value)
            }
            other => {
                let known = if filters { "limit, before, service, instance or level" } else { "limit or before" };
                return Err(super::extract::unknown_parameter(other, known));
            }
        }
    }
    Ok(f)
}

/// Health transitions of checks, instances, services and the system
#[utoipa::path(
    get,
    path = "/health/history",
    operation_id = "health_history",
    tag = tags::HEALTH,
    params(
        ("service" = Option<String>, Query, description = "Only transitions of this service"),
        ("instance" = Option<String>, Query, description = "Only transitions of this instance"),
        ("level" = Option<String>, Query, description = "`check`, `instance`, `service` or `system`"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many, 1-1000 \
            (default 100)"),
        ("before" = Option<i64>, Query, description = "Only entries older than this `seq` (the next page)"),
    ),
    responses(
        (status = 200, description = "Transitions, newest first", body = History),
        BadRequest, Internal, Unavailable,
    )
)]
async fn history(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let filter = history_filter(query.as_deref(), true)?;
    let items = store::history(&state.pool, &filter).await?;
    Ok(Json(History { items }).into_response())
}

/// Health transitions of one instance and its checks
#[utoipa::path(
    get,
    path = "/instances/{id}/health/history",
    operation_id = "instance_health_history",
    tag = tags::HEALTH,
    params(
        ("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many, 1-1000 \
            (default 100)"),
        ("before" = Option<i64>, Query, description = "Only entries older than this `seq` (the next page)"),
    ),
    responses(
        (status = 200, description = "Transitions, newest first", body = History),
        BadRequest, Internal, Unavailable,
    )
)]
async fn instance_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let filter = HistoryFilter { instance_id: Some(id), ..history_filter(query.as_deref(), false)? };
    let items = store::history(&state.pool, &filter).await?;
    Ok(Json(History { items }).into_response())
}
