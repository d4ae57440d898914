//! The managed stack: apply a manifest (`PUT /stack`, TOML body), see its services and their
//! states, take it down, restart one service, read a service's output, the dependency graph
//! (DOT or levels) and the start-up profile.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::agent::Logs;
use orch_protocol::error::ErrorReply;
use orch_protocol::registry::validate_name;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{query_pairs, unknown_parameter};
use super::openapi::{BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unavailable, tags};
use crate::lifecycle::manifest::Condition;
use crate::lifecycle::{ControlError, Graph, Manifest};
use orch_protocol::stack::{ManagedService, RunProfile, StackApplied, StackView, Stopped};

/// `manifest_max_bytes`: the body limit of `PUT /stack` (a manifest can be larger than a command).
pub fn router(manifest_max_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(view, apply, down).layer(axum::extract::DefaultBodyLimit::max(manifest_max_bytes)))
        .routes(routes!(graph))
        .routes(routes!(profile))
        .routes(routes!(restart))
        .routes(routes!(logs))
}

/// A restart on its way.
#[derive(Serialize, ToSchema)]
struct Restarting {
    service: String,
    /// Always true.
    restarting: bool,
}

/// The dependency graph as JSON.
#[derive(Serialize, ToSchema)]
struct GraphLevels {
    /// Names level by level: level 0 has no dependencies; names sorted within a level.
    levels: Vec<Vec<String>>,
    edges: Vec<Edge>,
    /// As in `GET /stack`.
    services: Vec<ManagedService>,
}

/// A dependency: `from` depends on `to`.
#[derive(Serialize, ToSchema)]
struct Edge {
    from: String,
    to: String,
    condition: Condition,
    /// False for an optional dependency.
    required: bool,
}

/// Apply a manifest
///
/// The body is the manifest as UTF-8 TOML text, whatever its `Content-Type`. The services the
/// manifest changes or drops are stopped first, then a start-up run starts the stack in dependency
/// order.
#[utoipa::path(
    put,
    path = "/stack",
    operation_id = "apply_stack",
    tag = tags::STACK,
    params(("source" = Option<String>, Query, description = "Who applies it, recorded with the version \
        (default `api`)")),
    request_body(content = String, content_type = "application/toml",
        description = "The manifest (docs/manifest.md); any `Content-Type` is accepted"),
    responses(
        (status = 202, description = "Accepted: the version and the start-up run", body = StackApplied),
        (status = 400, description = "`malformed_payload` (not UTF-8, not TOML) or `validation_failed` (the \
            manifest's problems, each with its field), or a bad query parameter", body = ErrorReply),
        (status = 409, description = "`conflict`: a start-up run or a shutdown is in progress", body = ErrorReply),
        PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn apply(
    State(state): State<AppState>,
    caller: Caller,
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
    let applied = state.controller.apply(manifest, text.to_string(), source, caller.principal).await?;
    Ok((StatusCode::ACCEPTED, Json(applied)).into_response())
}

/// The stack and the state of each service
#[utoipa::path(
    get,
    path = "/stack",
    operation_id = "get_stack",
    tag = tags::STACK,
    responses(
        (status = 200, description = "The stack", body = StackView),
        (status = 404, description = "`not_found`: no manifest was ever applied", body = ErrorReply),
        Internal, Unavailable,
    )
)]
async fn view(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (view, _) = state.controller.view().await?.ok_or(ControlError::NoStack)?;
    Ok(Json(view).into_response())
}

/// Take the stack down
///
/// Stops every service in reverse dependency order and answers once all have stopped.
#[utoipa::path(
    delete,
    path = "/stack",
    operation_id = "stack_down",
    tag = tags::STACK,
    responses(
        (status = 200, description = "Every service has stopped", body = Stopped),
        (status = 404, description = "`not_found`: no manifest was ever applied", body = ErrorReply),
        Internal, Unavailable,
    )
)]
async fn down(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let stopped = state.controller.down(caller.principal).await?;
    Ok(Json(Stopped { stopped }).into_response())
}

/// The dependency graph
///
/// `format=dot` (the default): GraphViz DOT, one rank per level, each service filled by its state,
/// an edge from each service to each dependency labelled with the condition (dashed when
/// optional). `format=json`: levels, edges and services.
#[utoipa::path(
    get,
    path = "/stack/graph",
    operation_id = "stack_graph",
    tag = tags::STACK,
    params(("format" = Option<String>, Query, description = "`dot` (default) or `json`")),
    responses(
        (status = 200, description = "The graph in the format asked for", content(
            (String = "text/vnd.graphviz"),
            (GraphLevels = "application/json"),
        )),
        BadRequest,
        (status = 404, description = "`not_found`: no manifest was ever applied", body = ErrorReply),
        Internal, Unavailable,
    )
)]
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
            let edges = view
                .services
                .iter()
                .flat_map(|s| {
                    graph.dependencies(&s.name).into_iter().map(|(dep, d)| Edge {
                        from: s.name.clone(),
                        to: dep.to_string(),
                        condition: d.condition,
                        required: d.required,
                    })
                })
                .collect();
            Ok(Json(GraphLevels { levels: graph.layers(), edges, services: view.services }).into_response())
        }
        other => Err(ApiError::field(ErrorCode::ValidationFailed, "format", format!("{other:?}: use dot or json"))),
    }
}

/// The profile of the start-up run in progress, else of the last one
///
/// Times are milliseconds from the start of the run.
#[utoipa::path(
    get,
    path = "/stack/profile",
    operation_id = "stack_profile",
    tag = tags::STACK,
    responses(
        (status = 200, description = "The run's profile", body = RunProfile),
        (status = 404, description = "`not_found`: no start-up run since the orchestrator started", body = ErrorReply),
        Internal, Unavailable,
    )
)]
async fn profile(State(state): State<AppState>) -> Result<Response, ApiError> {
    let profile = state.controller.profile().await?.ok_or(ControlError::NoRun)?;
    Ok(Json(profile).into_response())
}

/// Restart a managed service
///
/// The body is ignored. A service that is `pending`, `starting` or `stopping` is `409`.
#[utoipa::path(
    post,
    path = "/stack/services/{name}/restart",
    operation_id = "restart_service",
    tag = tags::STACK,
    params(("name" = String, Path, description = "Name of a managed service", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")),
    responses(
        (status = 202, description = "The restart is on its way", body = Restarting),
        BadRequest, NotFound, Conflict, Internal, Unavailable,
    )
)]
async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    state.controller.restart(name.clone(), caller.principal).await?;
    Ok((StatusCode::ACCEPTED, Json(Restarting { service: name, restarting: true })).into_response())
}

/// The last lines of a managed service's output
///
/// Read from the agent of the service's node, oldest first; a service that never ran has none.
#[utoipa::path(
    get,
    path = "/stack/services/{name}/logs",
    operation_id = "service_logs",
    tag = tags::STACK,
    params(
        ("name" = String, Path, description = "Name of a managed service", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("lines" = Option<usize>, Query, minimum = 1, maximum = 10000,
            description = "How many of the last lines, 1-10000 (default 100)"),
    ),
    responses(
        (status = 200, description = "`<RFC 3339 time> <stdout|stderr> <text>` per line", body = Logs),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
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
