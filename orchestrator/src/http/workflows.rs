//! `/api/v1/workflows` and `/api/v1/executions`: store workflow definitions (TOML, with
//! versions), start executions, read and cancel them ([`crate::workflow::api`]).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::registry::validate_name;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{optional_json, query_pairs, unknown_parameter};
use super::openapi::{BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unavailable, tags};
use crate::workflow::api::{
    self, Decision, ExecutionView, HookView, QueueView, RetryFrom, ScheduleView, Stored, WorkflowView,
};
use crate::workflow::hook;

pub fn router(definition_max_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one, put).layer(axum::extract::DefaultBodyLimit::max(definition_max_bytes)))
        .routes(routes!(run))
        .routes(routes!(executions))
        .routes(routes!(execution))
        .routes(routes!(cancel))
        .routes(routes!(signal))
        .routes(routes!(retry))
        .routes(routes!(schedules))
        .routes(routes!(queues))
        .routes(routes!(hooks))
        .routes(routes!(set_hook_secret))
        .routes(routes!(deliver))
}

fn execution_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field(ErrorCode::ValidationFailed, "id", format!("{text:?} is not an execution id (a UUID)"))
    })
}

/// Every workflow, its latest version
#[utoipa::path(get, path = "/workflows", operation_id = "list_workflows", tag = tags::WORKFLOWS,
    responses((status = 200, description = "The latest version of each workflow, by name", body = Vec<WorkflowView>), Internal))]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkflowView>>, ApiError> {
    Ok(Json(api::list(&state.pool).await?))
}

/// One workflow's latest version, with its text
#[utoipa::path(get, path = "/workflows/{name}", operation_id = "get_workflow", tag = tags::WORKFLOWS,
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, description = "The latest version", body = WorkflowView), BadRequest, NotFound, Internal))]
async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<WorkflowView>, ApiError> {
    validate_name("name", &name)?;
    Ok(Json(api::get(&state.pool, &name).await?))
}

/// Stores a workflow definition (TOML) as its next version
///
/// Validated in full: every problem is named with its field and line (`validation_failed`). The
/// same text as the latest version stores nothing and answers that version (`created: false`).
#[utoipa::path(put, path = "/workflows/{name}", operation_id = "put_workflow", tag = tags::WORKFLOWS,
    params(("name" = String, Path, description = "The workflow's name, as its `[workflow] name` says")),
    request_body(content = String, content_type = "application/toml", description = "The definition (docs/workflows.md)"),
    responses(
        (status = 201, description = "Stored as a new version", body = Stored),
        (status = 200, description = "The same as the latest version: nothing stored", body = Stored),
        BadRequest, PayloadTooLarge, Internal,
    ))]
async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::field(
                ErrorCode::PayloadTooLarge,
                "workflow",
                "the definition is larger than --manifest-max-bytes",
            )
        } else {
            ApiError::field(ErrorCode::MalformedPayload, "workflow", rejection.body_text())
        }
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::field(ErrorCode::MalformedPayload, "workflow", "the definition must be UTF-8 TOML"))?;
    let stored = api::put(&state.pool, &state.workflows, &name, text, &caller.principal).await?;
    let status = if stored.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(stored)).into_response())
}

/// The inputs of a new execution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// The workflow's inputs by name; defaults fill in the missing ones.
    #[serde(default)]
    #[schema(value_type = Object)]
    inputs: Option<serde_json::Value>,
}

/// Starts an execution of the workflow's latest version
///
/// It waits in the workflow's queue (highest priority first) and starts when the queue has room.
#[utoipa::path(post, path = "/workflows/{name}/executions", operation_id = "run_workflow", tag = tags::WORKFLOWS,
    params(("name" = String, Path, description = "The workflow's name")),
    request_body(content = RunRequest, description = "Inputs (an empty body runs with none)"),
    responses((status = 202, description = "Queued", body = ExecutionView), BadRequest, NotFound, Internal))]
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let request: RunRequest = optional_json(&headers, &body)?.unwrap_or(RunRequest { inputs: None });
    let view = api::run(&state.pool, &state.workflows, &name, request.inputs, &caller.principal).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// The newest executions
#[utoipa::path(get, path = "/executions", operation_id = "list_executions", tag = tags::WORKFLOWS,
    params(("workflow" = Option<String>, Query, description = "Of this workflow only"),
           ("limit" = Option<i64>, Query, description = "At most this many (1-1000, default 100)")),
    responses((status = 200, description = "Newest first", body = Vec<ExecutionView>), BadRequest, Internal))]
async fn executions(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ExecutionView>>, ApiError> {
    let (mut workflow, mut limit) = (None, 100i64);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "workflow" => {
                validate_name("workflow", &value)?;
                workflow = Some(value);
            }
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::field(ErrorCode::ValidationFailed, "limit", "1-1000"))?;
            }
            other => return Err(unknown_parameter(other, "workflow, limit")),
        }
    }
    Ok(Json(api::executions(&state.pool, workflow.as_deref(), limit).await?))
}

/// One execution: its status and each step's
#[utoipa::path(get, path = "/executions/{id}", operation_id = "get_execution", tag = tags::WORKFLOWS,
    params(("id" = String, Path, description = "The execution's id (a UUID)")),
    responses((status = 200, description = "The execution", body = ExecutionView), BadRequest, NotFound, Internal))]
async fn execution(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ExecutionView>, ApiError> {
    Ok(Json(api::execution_view(&state.pool, execution_id(&id)?).await?))
}

/// Cancels an execution that has not ended
#[utoipa::path(post, path = "/executions/{id}/cancel", operation_id = "cancel_execution", tag = tags::WORKFLOWS,
    params(("id" = String, Path, description = "The execution's id (a UUID)")),
    responses((status = 200, description = "Cancelled", body = ExecutionView), BadRequest, NotFound, Conflict, Unavailable, Internal))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    let id = execution_id(&id)?;
    Ok(Json(api::cancel(&state.pool, &state.workflows, id, &caller.principal).await?))
}

/// Where a retry starts.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// `failed` (the default): the steps that did not succeed run again, what succeeded keeps
    /// its output; `start`: every step.
    #[serde(default)]
    from: RetryFrom,
}

/// Retries an ended execution as a new one
///
/// Of the same version, with the same inputs; its `trigger` is `retry:<id>`.
#[utoipa::path(post, path = "/executions/{id}/retry", operation_id = "retry_execution", tag = tags::WORKFLOWS,
    params(("id" = String, Path, description = "The ended execution's id (a UUID)")),
    request_body(content = RetryRequest, description = "Where to start (an empty body: from the failed steps)"),
    responses((status = 202, description = "The new execution, queued", body = ExecutionView),
        BadRequest, NotFound, Conflict, Internal))]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = execution_id(&id)?;
    let request: RetryRequest = optional_json(&headers, &body)?.unwrap_or_default();
    let view = api::retry(&state.pool, &state.workflows, id, request.from, &caller.principal).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// A decision for an approval step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignalRequest {
    /// The approval step that waits for it.
    step: String,
    /// `approve` (the step succeeds) or `reject` (it fails, not retried unless its policy lists
    /// `rejected`).
    decision: Decision,
    /// Why; kept in the step's output or error (at most 1024 bytes).
    #[serde(default)]
    comment: Option<String>,
}

/// Approves or rejects an approval step that waits
///
/// Who decided is kept in the step's output (`by`) or error.
#[utoipa::path(post, path = "/executions/{id}/signal", operation_id = "signal_execution", tag = tags::WORKFLOWS,
    params(("id" = String, Path, description = "The execution's id (a UUID)")),
    request_body(content = SignalRequest, content_type = "application/json"),
    responses((status = 200, description = "Decided: the execution as it is now", body = ExecutionView),
        BadRequest, NotFound, Conflict, Unavailable, Internal))]
async fn signal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    super::extract::Json(request): super::extract::Json<SignalRequest>,
) -> Result<Json<ExecutionView>, ApiError> {
    let id = execution_id(&id)?;
    let view = api::signal(
        &state.pool,
        &state.workflows,
        id,
        &request.step,
        request.decision,
        request.comment,
        &caller.principal,
    )
    .await?;
    Ok(Json(view))
}

/// Every cron schedule with its next firing
#[utoipa::path(get, path = "/schedules", operation_id = "list_schedules", tag = tags::WORKFLOWS,
    responses((status = 200, description = "By workflow, then index", body = Vec<ScheduleView>), Internal))]
async fn schedules(State(state): State<AppState>) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    Ok(Json(api::schedules(&state.pool).await?))
}

/// Every queue's figures
///
/// Waiting and running now; succeeded, failed, cancelled and the wait before starting (p50,
/// p99) over executions of the last day.
#[utoipa::path(get, path = "/queues", operation_id = "list_queues", tag = tags::WORKFLOWS,
    responses((status = 200, description = "By name", body = Vec<QueueView>), Internal))]
async fn queues(State(state): State<AppState>) -> Result<Json<Vec<QueueView>>, ApiError> {
    Ok(Json(api::queues(&state.pool).await?))
}

/// Every webhook, without secrets
#[utoipa::path(get, path = "/hooks", operation_id = "list_hooks", tag = tags::WORKFLOWS,
    responses((status = 200, description = "By name", body = Vec<HookView>), Internal))]
async fn hooks(State(state): State<AppState>) -> Result<Json<Vec<HookView>>, ApiError> {
    Ok(Json(api::hooks(&state.pool).await?))
}

/// A webhook's secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    /// 16-512 visible ASCII characters; deliveries are signed with it.
    secret: String,
}

/// Sets a webhook's secret
///
/// The secret is never shown again; setting it anew replaces it (deliveries signed with the old
/// one are refused from then on).
#[utoipa::path(put, path = "/hooks/{name}/secret", operation_id = "set_hook_secret", tag = tags::WORKFLOWS,
    params(("name" = String, Path, description = "The webhook's name, as its workflow's [[webhook]] declares it")),
    request_body(content = SecretRequest, content_type = "application/json"),
    responses((status = 200, description = "Set", body = HookView), BadRequest, NotFound, Internal))]
async fn set_hook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    super::extract::Json(request): super::extract::Json<SecretRequest>,
) -> Result<Json<HookView>, ApiError> {
    validate_name("name", &name)?;
    Ok(Json(api::set_hook_secret(&state.pool, &name, &request.secret, &caller.principal).await?))
}

/// Delivers a webhook: starts its workflow
///
/// Needs no token: the body is signed instead. `X-Orch-Timestamp` is the time in Unix seconds
/// (within the hook's replay window of the orchestrator's clock) and `X-Orch-Signature` is
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the hook's secret>`. The body is JSON;
/// the hook's `inputs` map it to the workflow's inputs. The same delivery sent again starts
/// nothing new: it is answered `200` with the execution it started.
#[utoipa::path(post, path = "/hooks/{name}", operation_id = "deliver_hook", tag = tags::WORKFLOWS,
    params(("name" = String, Path, description = "The webhook's name"),
        ("X-Orch-Timestamp" = String, Header, description = "The delivery's time, Unix seconds"),
        ("X-Orch-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">")),
    request_body(content = Object, content_type = "application/json", description = "Mapped to inputs by the hook"),
    responses(
        (status = 202, description = "An execution was queued", body = ExecutionView),
        (status = 200, description = "The same delivery came before: its execution", body = ExecutionView),
        (status = 401, description = "No secret set, a signature that does not match, or a time outside the replay window (`field` names the header)", body = orch_protocol::error::ErrorReply),
        BadRequest, NotFound, PayloadTooLarge, Internal,
    ),
    security(()))]
async fn deliver(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    validate_name("name", &name)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = api::Delivery {
        timestamp: header(hook::TIMESTAMP_HEADER),
        signature: header(hook::SIGNATURE_HEADER),
        body: &body,
    };
    let (view, created) = api::deliver(&state.pool, &state.workflows, &name, delivery).await?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}
