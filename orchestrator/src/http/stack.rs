//! The managed stack: apply a manifest (`PUT /stack`, TOML body), see its services and their
//! states, take it down, restart one service, search and follow a service's output, the dependency graph
//! (DOT or levels) and the start-up profile.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use orch_protocol::ErrorCode;
use orch_protocol::agent::LogStream;
use orch_protocol::error::ErrorReply;
use orch_protocol::lifecycle::{ServiceLogLine, ServiceLogs, ServiceLogsRequest};
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

/// Most log follows open at once (each holds a NATS subscription per unit of its service).
pub const FOLLOWERS_MAX: usize = 256;

/// `manifest_max_bytes`: the body limit of `PUT /stack` (a manifest can be larger than a command).
pub fn router(manifest_max_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(view, apply, down).layer(axum::extract::DefaultBodyLimit::max(manifest_max_bytes)))
        .routes(routes!(graph))
        .routes(routes!(profile))
        .routes(routes!(restart))
        .routes(routes!(logs))
        .routes(routes!(follow))
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

/// Search a managed service's output
///
/// The last lines that match every filter given, read from the agents of all the service's units
/// (each replica, on whichever node runs it) at once and merged in time order, oldest first;
/// each line names its unit and node. Each agent reads at most `scan_bytes` of its files (newest
/// first): `truncated` says a scan stopped there, or a unit's agent did not answer (named in
/// `units`). A service that never ran has no lines.
#[utoipa::path(
    get,
    path = "/stack/services/{name}/logs",
    operation_id = "service_logs",
    tag = tags::STACK,
    params(
        ("name" = String, Path, description = "Name of a managed service", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000,
            description = "How many of the last matching lines, 1-10000 (default 100); `lines` is the same"),
        ("lines" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "The older name of `limit`"),
        ("since" = Option<String>, Query, format = DateTime, description = "Only lines written at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Only lines written before this time (RFC 3339)"),
        ("stream" = Option<LogStream>, Query, description = "Only lines of this stream"),
        ("q" = Option<String>, Query, description = "Only lines containing this text (case-sensitive)"),
        ("regex" = Option<String>, Query, description = "Only lines matching this regular expression (not with `q`)"),
        ("scan_bytes" = Option<u64>, Query, minimum = 1, maximum = 1073741824,
            description = "Most bytes each agent reads (default 64 MiB)"),
    ),
    responses(
        (status = 200, description = "The matching lines, oldest first", body = ServiceLogs),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let request = log_query(name, query.as_deref(), LogQuery::Search)?;
    Ok(Json(state.controller.logs(request).await?).into_response())
}

/// Follow a managed service's output
///
/// New lines of every unit of the service as they are written, one JSON object a line
/// (`application/x-ndjson`), until the client goes away. Only lines written after the request
/// are sent (search for older ones); the units are those of the service when the request came.
#[utoipa::path(
    get,
    path = "/stack/services/{name}/logs/follow",
    operation_id = "follow_service_logs",
    tag = tags::STACK,
    params(
        ("name" = String, Path, description = "Name of a managed service", pattern = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"),
        ("stream" = Option<LogStream>, Query, description = "Only lines of this stream"),
        ("q" = Option<String>, Query, description = "Only lines containing this text (case-sensitive)"),
        ("regex" = Option<String>, Query, description = "Only lines matching this regular expression (not with `q`)"),
    ),
    responses(
        (status = 200, description = "One `ServiceLogLine` as JSON a line", body = ServiceLogLine, content_type = "application/x-ndjson"),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn follow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let request = log_query(name, query.as_deref(), LogQuery::Follow)?;
    let filter = crate::agent::search::LogFilter::new(
        None,
        None,
        request.stream,
        request.contains.as_deref(),
        request.regex.as_deref(),
    )?;
    // Each follow holds NATS subscriptions for as long as its client stays: bounded, so that
    // clients that open follows and never read cannot take the orchestrator's memory.
    let Ok(permit) = state.followers.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("{FOLLOWERS_MAX} log follows are open; close one, or retry later"),
        ));
    };
    let units = state.controller.units(request.service).await?;
    let lines =
        crate::lifecycle::follow::follow(&state.nats, &state.subjects, units.into_iter().map(|(u, _)| u), filter)
            .await
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("subscribing to the service's output: {e}")))?;
    let body = lines.map(move |line| {
        let _held = &permit;
        let mut json = serde_json::to_vec(&line).expect("a log line serializes");
        json.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(json))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson"), (axum::http::header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogQuery {
    Search,
    Follow,
}

/// The query of a logs route, each parameter checked, a bad one named.
fn log_query(service: String, query: Option<&str>, kind: LogQuery) -> Result<ServiceLogsRequest, ApiError> {
    let max = orch_protocol::agent::LOG_LINES_MAX;
    let mut request = ServiceLogsRequest::last(service, 100);
    let known = match kind {
        LogQuery::Search => "limit, lines, since, until, stream, q, regex or scan_bytes",
        LogQuery::Follow => "stream, q or regex",
    };
    let invalid = |field: &str, message: String| ApiError::field(ErrorCode::ValidationFailed, field, message);
    let time = |field: &str, value: &str| {
        chrono::DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| invalid(field, "must be an RFC 3339 time such as 2026-01-01T00:00:00Z".into()))
    };
    for (key, value) in query_pairs(query)? {
        match (kind, key.as_str()) {
            (LogQuery::Search, "lines" | "limit") => {
                request.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| invalid(&key, format!("must be 1-{max}")))?
            }
            (LogQuery::Search, "since") => request.since = Some(time("since", &value)?),
            (LogQuery::Search, "until") => request.until = Some(time("until", &value)?),
            (LogQuery::Search, "scan_bytes") => {
                request.scan_bytes =
                    Some(value.parse().map_err(|_| invalid("scan_bytes", "must be a number of bytes".into()))?)
            }
            (_, "stream") => request.stream = Some(value.parse().map_err(|e: String| invalid("stream", e))?),
            (_, "q") if value.is_empty() => return Err(invalid("q", "must not be empty".into())),
            (_, "q") => request.contains = Some(value),
            (_, "regex") => request.regex = Some(value),
            (_, other) => return Err(unknown_parameter(other, known)),
        }
    }
    if request.contains.is_some() && request.regex.is_some() {
        return Err(invalid("regex", "give q or regex, not both".into()));
    }
    request.validate()?;
    Ok(request)
}
