//! The managed stack: apply a manifest (`PUT /stack`, TOML body), see its services and their
//! states, take it down, restart one service, read a service's output, the dependency graph
//! (DOT or levels) and the start-up profile.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orch_protocol::ErrorCode;
use orch_protocol::registry::validate_name;

use super::AppState;
use super::error::ApiError;
use super::extract::{query_pairs, unknown_parameter};
use crate::lifecycle::{ControlError, Graph, Manifest};

/// `manifest_max_bytes`: the body limit of `PUT /stack` (a manifest can be larger than a command).
pub fn router(manifest_max_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/stack",
            get(view).put(apply).delete(down).layer(axum::extract::DefaultBodyLimit::max(manifest_max_bytes)),
        )
        .route("/stack/graph", get(graph))
        .route("/stack/profile", get(profile))
        .route("/stack/services/{name}/restart", post(restart))
        .route("/stack/services/{name}/logs", get(logs))
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Storage(e) => e.into(),
            other => orch_protocol::ProtocolError::from(other).into(),
        }
    }
}

/// Body: the manifest as TOML text. Query: `source` (who applies it; recorded with the version).
async fn apply(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::field(ErrorCode::PayloadTooLarge, "manifest", "the manifest is larger than --manifest-max-bytes")
        } else {
            ApiError::field(ErrorCode::MalformedPayload, "manifest", rejection.body_text())
        }
    })?;
    let mut source = "api".to_string();
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "source" => source = value,
            other => return Err(unknown_parameter(other, "source")),
        }
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::field(ErrorCode::MalformedPayload, "manifest", "the manifest must be UTF-8 TOML"))?;
    let manifest =
        Manifest::parse(text).and_then(|m| Graph::new(&m).map(|_| m)).map_err(orch_protocol::ProtocolError::from)?;
    let applied = state.controller.apply(manifest, text.to_string(), source).await?;
    Ok((StatusCode::ACCEPTED, Json(applied)).into_response())
}

async fn view(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (view, _) = state.controller.view().await?.ok_or(ControlError::NoStack)?;
    Ok(Json(view).into_response())
}

async fn down(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stopped = state.controller.down().await?;
    Ok(Json(serde_json::json!({ "stopped": stopped })).into_response())
}

/// `?format=dot` (default: GraphViz DOT with states as colours) or `?format=json` (levels and
/// edges).
async fn graph(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut format = "dot".to_string();
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "format" => format = value,
            other => return Err(unknown_parameter(other, "format")),
        }
    }
    let (view, graph) = state.controller.view().await?.ok_or(ControlError::NoStack)?;
    match format.as_str() {
        "dot" => {
            let states = view.services.iter().map(|s| (s.name.clone(), s.state.as_str().to_string())).collect();
            Ok(([(axum::http::header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], graph.to_dot(Some(&states)))
                .into_response())
        }
        "json" => {
            let edges: Vec<serde_json::Value> = view
                .services
                .iter()
                .flat_map(|s| {
                    graph.dependencies(&s.name).into_iter().map(|(dep, d)| {
                        serde_json::json!({"from": s.name, "to": dep, "condition": d.condition.as_str(), "required": d.required})
                    })
                })
                .collect();
            Ok(Json(serde_json::json!({ "levels": graph.layers(), "edges": edges, "services": view.services }))
                .into_response())
        }
        other => Err(ApiError::field(ErrorCode::ValidationFailed, "format", format!("{other:?}: use dot or json"))),
    }
}

async fn profile(State(state): State<AppState>) -> Result<Response, ApiError> {
    let profile = state.controller.profile().await?.ok_or(ControlError::NoRun)?;
    Ok(Json(profile).into_response())
}

async fn restart(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    state.controller.restart(name.clone()).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "service": name, "restarting": true }))).into_response())
}

/// `?lines=N`: the last N lines (default 100, at most 10,000).
async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let max = orch_protocol::agent::LOG_LINES_MAX;
    let mut lines = 100;
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "lines" => {
                lines =
                    value.parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        ApiError::field(ErrorCode::ValidationFailed, "lines", format!("must be 1-{max}"))
                    })?
            }
            other => return Err(unknown_parameter(other, "lines")),
        }
    }
    Ok(Json(state.controller.logs(name, lines).await?).into_response())
}
