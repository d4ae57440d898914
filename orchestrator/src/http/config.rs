//! The config store over HTTP (protocol.md §18): keys with JSON values, compare-and-set on the
//! revision, history and revert; JSON Schemas per key prefix (admins).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::config_store::{
    ConfigChange, ConfigEntry, ConfigHistory, ConfigList, ConfigSchema, ConfigSchemas, PutRequest, RevertRequest,
    SchemaRequest,
};
use orch_protocol::error::ErrorReply;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{self, query_pairs, unknown_parameter};
use super::openapi::{BadRequest, Internal, NotFound, PayloadTooLarge, Unavailable, tags};
use super::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_key, put_key, delete_key))
        .routes(routes!(history))
        .routes(routes!(revert))
        .routes(routes!(schemas))
        .routes(routes!(set_schema, clear_schema))
}

/// A key given in the body besides the path must be the same.
fn same_key(path: &str, body: Option<&str>) -> Result<(), ApiError> {
    match body {
        Some(key) if key != path => Err(ApiError::field(
            ErrorCode::ValidationFailed,
            "key",
            format!("{key:?} differs from the path's {path:?}"),
        )),
        _ => Ok(()),
    }
}

/// The keys under a prefix, with their values
#[utoipa::path(
    get,
    path = "/config",
    operation_id = "list_config",
    tag = tags::CONFIG,
    params(("prefix" = Option<String>, Query, description = "Whole dot-separated parts (`web`, `web.db`); \
        none: every key")),
    responses((status = 200, description = "The keys, sorted (at most 1000)", body = ConfigList), BadRequest, Internal, Unavailable)
)]
async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut prefix = String::new();
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "prefix" => prefix = value,
            other => return Err(unknown_parameter(other, "prefix")),
        }
    }
    Ok(Json(state.config.list(&prefix).await?).into_response())
}

/// One key's value and revision
#[utoipa::path(
    get,
    path = "/config/{key}",
    operation_id = "get_config",
    tag = tags::CONFIG,
    params(("key" = String, Path, description = "A key: dot-separated parts of letters, digits, `_`, `-`")),
    responses((status = 200, description = "The value", body = ConfigEntry), BadRequest, NotFound, Internal, Unavailable)
)]
async fn get_key(State(state): State<AppState>, Path(key): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.config.get(&key).await?).into_response())
}

/// Set a key
///
/// With `revision`, only if the key's revision is still that one (`0`: only if it does not exist);
/// otherwise `409 conflict` on `revision`. The value must satisfy the schema of the key's longest
/// covering prefix.
#[utoipa::path(
    put,
    path = "/config/{key}",
    operation_id = "put_config",
    tag = tags::CONFIG,
    params(("key" = String, Path, description = "A key")),
    request_body(content = PutRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The change as recorded", body = ConfigChange),
        (status = 400, description = "`validation_failed`: a bad key, or a value its schema refuses (field `value`)", body = ErrorReply),
        (status = 409, description = "`conflict`: the revision given is not the key's (field `revision`)", body = ErrorReply),
        PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn put_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    extract::Json(request): extract::Json<PutRequest>,
) -> Result<Response, ApiError> {
    same_key(&key, request.key.as_deref())?;
    Ok(Json(state.config.put(&key, request.value, request.revision, &caller.principal).await?).into_response())
}

/// Delete a key
#[utoipa::path(
    delete,
    path = "/config/{key}",
    operation_id = "delete_config",
    tag = tags::CONFIG,
    params(
        ("key" = String, Path, description = "A key"),
        ("revision" = Option<u64>, Query, description = "Only if the key's revision is still this one"),
    ),
    responses(
        (status = 200, description = "The deletion as recorded", body = ConfigChange),
        (status = 409, description = "`conflict`: the revision given is not the key's", body = ErrorReply),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut revision = None;
    for (name, value) in query_pairs(query.as_deref())? {
        match name.as_str() {
            "revision" => {
                revision = Some(value.parse().map_err(|_| {
                    ApiError::field(ErrorCode::ValidationFailed, "revision", format!("{value:?} is not a revision"))
                })?)
            }
            other => return Err(unknown_parameter(other, "revision")),
        }
    }
    Ok(Json(state.config.delete(&key, revision, &caller.principal).await?).into_response())
}

/// The recorded changes of a key, newest first
///
/// Who made each, when, the value before and after.
#[utoipa::path(
    get,
    path = "/config/{key}/history",
    operation_id = "config_history",
    tag = tags::CONFIG,
    params(("key" = String, Path, description = "A key")),
    responses((status = 200, description = "The changes", body = ConfigHistory), BadRequest, NotFound, Internal, Unavailable)
)]
async fn history(State(state): State<AppState>, Path(key): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.config.history(&key).await?).into_response())
}

/// Put a key's earlier value again
///
/// A new revision with the value of revision `to` (one of the last 64 of the key).
#[utoipa::path(
    post,
    path = "/config/{key}/revert",
    operation_id = "revert_config",
    tag = tags::CONFIG,
    params(("key" = String, Path, description = "A key")),
    request_body(content = RevertRequest, content_type = "application/json"),
    responses((status = 200, description = "The revert as recorded", body = ConfigChange), BadRequest, NotFound, Internal, Unavailable)
)]
async fn revert(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    extract::Json(request): extract::Json<RevertRequest>,
) -> Result<Response, ApiError> {
    same_key(&key, request.key.as_deref())?;
    Ok(Json(state.config.revert(&key, request.to, &caller.principal).await?).into_response())
}

/// The JSON Schemas of key prefixes
#[utoipa::path(
    get,
    path = "/config-schemas",
    operation_id = "config_schemas",
    tag = tags::CONFIG,
    responses((status = 200, description = "Every schema, by prefix", body = ConfigSchemas), Internal, Unavailable)
)]
async fn schemas(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.config.schemas().await?).into_response())
}

/// Set the JSON Schema of a key prefix (admins)
///
/// Every later write of a key under the prefix (whose longest covering prefix it is) must satisfy
/// it; values already stored are not checked again.
#[utoipa::path(
    put,
    path = "/config-schemas/{prefix}",
    operation_id = "set_config_schema",
    tag = tags::CONFIG,
    params(("prefix" = String, Path, description = "Whole dot-separated parts of keys")),
    request_body(content = SchemaRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Set", body = ConfigSchema),
        (status = 400, description = "`validation_failed`: a bad prefix, or not a JSON Schema (field `schema`)", body = ErrorReply),
        Internal, Unavailable,
    )
)]
async fn set_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(prefix): Path<String>,
    extract::Json(request): extract::Json<SchemaRequest>,
) -> Result<Response, ApiError> {
    if request.prefix.as_deref().is_some_and(|p| p != prefix) {
        return Err(ApiError::field(ErrorCode::ValidationFailed, "prefix", "differs from the path's"));
    }
    let schema = request.schema.ok_or_else(|| ApiError::field(ErrorCode::ValidationFailed, "schema", "required"))?;
    Ok(Json(state.config.set_schema(&prefix, schema, &caller.principal).await?).into_response())
}

/// Remove the JSON Schema of a key prefix (admins)
#[utoipa::path(
    delete,
    path = "/config-schemas/{prefix}",
    operation_id = "clear_config_schema",
    tag = tags::CONFIG,
    params(("prefix" = String, Path, description = "Whole dot-separated parts of keys")),
    responses((status = 204, description = "Removed"), BadRequest, NotFound, Internal, Unavailable)
)]
async fn clear_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(prefix): Path<String>,
) -> Result<Response, ApiError> {
    state.config.clear_schema(&prefix, &caller.principal).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
