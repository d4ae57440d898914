//! The health API: system and service health (HTTP status 200 / 429 / 503 by state, like Consul's
//! agent health endpoint), checks of an instance with TTL updates, maintenance of an instance or a
//! whole service, and the history of transitions.
//!
//! `/services/{id}/…` takes a service name here; the older instance routes (`GET`/`DELETE
//! /services/{id}`, `/services/{id}/heartbeat`) take an instance id. Instance-level health routes
//! live under `/instances/{id}/…`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use orch_protocol::ErrorCode;
use orch_protocol::health::{Aggregate, CheckSpec, MaintenanceRequest, TtlUpdate, validate_check_id};
use orch_protocol::registry::{Instance, validate_instance_id, validate_name};

use super::AppState;
use super::error::ApiError;
use super::extract;
use super::services::submit;
use crate::health::checker::TtlError;
use crate::registry::Command;
use crate::storage::health::{self as store, HistoryFilter};
use crate::storage::instances::PAGE_MAX;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(system))
        .route("/health/history", get(history))
        .route("/services/{id}/health", get(service))
        .route("/services/{id}/maintenance", put(service_maintenance_on).delete(service_maintenance_off))
        .route("/instances/{id}/checks", get(list_checks))
        .route("/instances/{id}/checks/{check}", put(put_check).delete(remove_check))
        .route("/instances/{id}/checks/{check}/ttl", put(ttl_update))
        .route("/instances/{id}/maintenance", put(maintenance_on).delete(maintenance_off))
        .route("/instances/{id}/health/history", get(instance_history))
}

fn status_of(state: Aggregate) -> StatusCode {
    StatusCode::from_u16(state.http_status()).expect("a valid status code")
}

async fn system(State(state): State<AppState>) -> Response {
    let report = state.health.system_report(&state.registry);
    (status_of(report.system.state), Json(report)).into_response()
}

async fn service(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    match state.health.service_report(&state.pool, &name).await? {
        Some(report) => Ok((status_of(report.view.state), Json(report)).into_response()),
        None => {
            Err(ApiError::field(ErrorCode::NotFound, "name", format!("no instance of service {name:?} is registered")))
        }
    }
}

async fn service_maintenance_on(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    extract::Json(request): extract::Json<MaintenanceRequest>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    request.validate()?;
    let body = format!("{name}\n{}", request.reason).into_bytes();
    let command = Command::ServiceMaintenance { service: name, reason: Some(request.reason) };
    submit(&state, &headers, "PUT /api/v1/services/{name}/maintenance", body, command).await
}

async fn service_maintenance_off(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let body = name.clone().into_bytes();
    let command = Command::ServiceMaintenance { service: name, reason: None };
    submit(&state, &headers, "DELETE /api/v1/services/{name}/maintenance", body, command).await
}

async fn instance(state: &AppState, id: &str) -> Result<Instance, ApiError> {
    validate_instance_id("id", id)?;
    state
        .registry
        .get(id)
        .await?
        .map(|view| view.instance)
        .ok_or_else(|| ApiError::field(ErrorCode::NotFound, "id", format!("no instance with id {id:?} is registered")))
}

async fn list_checks(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let inst = instance(&state, &id).await?;
    Ok(Json(serde_json::json!({ "checks": state.health.checks(&state.registry, &inst) })).into_response())
}

async fn put_check(
    State(state): State<AppState>,
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
    submit(&state, &headers, "PUT /api/v1/instances/{id}/checks/{check}", body, Command::PutCheck { id, spec }).await
}

async fn remove_check(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, check)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    validate_check_id("check", &check)?;
    let body = format!("{id}\n{check}").into_bytes();
    submit(&state, &headers, "DELETE /api/v1/instances/{id}/checks/{check}", body, Command::RemoveCheck { id, check })
        .await
}

async fn ttl_update(
    State(state): State<AppState>,
    Path((id, check)): Path<(String, String)>,
    extract::Json(update): extract::Json<TtlUpdate>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    validate_check_id("check", &check)?;
    match state.health.checker.ttl_update(&id, &check, update.status, update.output).await {
        Ok(reply) => Ok(Json(reply).into_response()),
        Err(e) => Err(ttl_error(e)),
    }
}

/// The protocol error of a refused TTL update (shared with NATS).
pub fn ttl_error(e: TtlError) -> ApiError {
    match e {
        TtlError::NotFound(..) => ApiError::field(ErrorCode::NotFound, "check", e.to_string()),
        TtlError::NotTtl { .. } => ApiError::field(ErrorCode::Conflict, "check", e.to_string()),
        TtlError::Write(w) => w.into(),
    }
}

async fn maintenance_on(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    extract::Json(request): extract::Json<MaintenanceRequest>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    request.validate()?;
    let body = format!("{id}\n{}", request.reason).into_bytes();
    let command = Command::Maintenance { id, reason: Some(request.reason) };
    submit(&state, &headers, "PUT /api/v1/instances/{id}/maintenance", body, command).await
}

async fn maintenance_off(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let body = id.clone().into_bytes();
    submit(
        &state,
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

async fn history(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let filter = history_filter(query.as_deref(), true)?;
    let items = store::history(&state.pool, &filter).await?;
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

async fn instance_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let filter = HistoryFilter { instance_id: Some(id), ..history_filter(query.as_deref(), false)? };
    let items = store::history(&state.pool, &filter).await?;
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}
