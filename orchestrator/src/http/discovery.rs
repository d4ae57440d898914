//! `/api/v1/discovery/{name}`: passing instances of a service and one picked by a strategy.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use orch_protocol::ErrorCode;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::registry::{Discovery, Strategy};

pub fn router() -> Router<AppState> {
    Router::new().route("/discovery/{name}", get(discover))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    strategy: Option<String>,
}

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
