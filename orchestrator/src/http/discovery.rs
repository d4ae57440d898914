//! `/api/v1/discovery/{name}`: passing instances of a service and one picked by a strategy.

use axum::Json;
use axum::extract::{Path, Query, State};
use orch_protocol::ErrorCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::openapi::{BadRequest, Internal, Unavailable, tags};
use crate::registry::{Discovery, Strategy};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(discover))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    strategy: Option<String>,
}

/// Passing instances of a service, and one picked by a strategy
///
/// Instances in maintenance and instances that are not passing are left out.
#[utoipa::path(
    get,
    path = "/discovery/{name}",
    operation_id = "discover",
    tag = tags::DISCOVERY,
    params(
        ("name" = String, Path, description = "Service name", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("strategy" = Option<Strategy>, Query, description = "How to pick `instance` (default `round_robin`); \
            the only parameter"),
    ),
    responses(
        (status = 200, description = "The passing instances and the one picked (`null` when none)", body = Discovery),
        BadRequest, Internal, Unavailable,
    )
)]
async fn discover(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Discovery>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    orch_protocol::registry::validate_name("name", &name)?;
    let strategy = match params.strategy.as_deref() {
        None => Strategy::default(),
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            ApiError::field(ErrorCode::ValidationFailed, "strategy", "must be round_robin, weighted or random")
        })?,
    };
    Ok(Json(state.registry.discover(&name, strategy).await?))
}
