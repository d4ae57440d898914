//! Manifest history: the stored versions (`GET /stack/versions`), one with its text, the
//! difference between two (`GET /stack/diff`), and a rollback to one (a new version equal to it).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::error::ErrorReply;
use orch_protocol::history::{ManifestDiff, ManifestVersionText, ManifestVersions, VERSIONS_MAX, validate_version};
use orch_protocol::stack::StackApplied;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{query_pairs, unknown_parameter};
use super::openapi::{BadRequest, Internal, NotFound, Unavailable, tags};
use crate::lifecycle::history;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(diff))
        .routes(routes!(rollback))
}

/// A version number from the path or the query, named by `field` when it is not one.
fn parse_version(field: &str, value: &str) -> Result<i64, ApiError> {
    let version = value.parse().map_err(|_| {
        ApiError::field(ErrorCode::ValidationFailed, field, format!("{value:?} is not a version number"))
    })?;
    validate_version(field, version)?;
    Ok(version)
}

/// The stored manifest versions, newest first
///
/// Each with who applied it and when; page with `before` (the previous page's `next_before`).
#[utoipa::path(
    get,
    path = "/stack/versions",
    operation_id = "manifest_versions",
    tag = tags::STACK,
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "1-500 (default 50)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only versions older than this one"),
    ),
    responses(
        (status = 200, description = "A page of versions", body = ManifestVersions),
        BadRequest, Internal, Unavailable,
    )
)]
async fn versions(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (mut limit, mut before) = (None, None);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "limit" => {
                limit = Some(value.parse().ok().filter(|n| (1..=VERSIONS_MAX).contains(n)).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "limit", format!("must be 1-{VERSIONS_MAX}"))
                })?)
            }
            "before" => before = Some(parse_version("before", &value)?),
            other => return Err(unknown_parameter(other, "limit, before")),
        }
    }
    Ok(Json(history::versions(&state.pool, limit, before).await?).into_response())
}

/// One stored manifest version with its text
#[utoipa::path(
    get,
    path = "/stack/versions/{version}",
    operation_id = "manifest_version",
    tag = tags::STACK,
    params(("version" = i64, Path, minimum = 1, description = "A manifest version")),
    responses(
        (status = 200, description = "The version, with the manifest as applied", body = ManifestVersionText),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn version(State(state): State<AppState>, Path(version): Path<String>) -> Result<Response, ApiError> {
    let version = parse_version("version", &version)?;
    Ok(Json(history::version(&state.pool, version).await?).into_response())
}

/// The difference between two manifest versions
///
/// Service by service (added, removed, changed) and field by field, with the value in each
/// version; defaults are filled in, so a field written out with its default is no change.
#[utoipa::path(
    get,
    path = "/stack/diff",
    operation_id = "manifest_diff",
    tag = tags::STACK,
    params(
        ("from" = i64, Query, minimum = 1, description = "The version compared from (usually the older)"),
        ("to" = i64, Query, minimum = 1, description = "The version compared to"),
    ),
    responses(
        (status = 200, description = "The difference", body = ManifestDiff),
        (status = 400, description = "`validation_failed`: `from` or `to` missing or not a version, or a \
            version that today's rules refuse", body = ErrorReply),
        NotFound, Internal, Unavailable,
    )
)]
async fn diff(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (mut from, mut to) = (None, None);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "from" => from = Some(parse_version("from", &value)?),
            "to" => to = Some(parse_version("to", &value)?),
            other => return Err(unknown_parameter(other, "from, to")),
        }
    }
    let missing = |field: &str| ApiError::field(ErrorCode::ValidationFailed, field, "required: a version number");
    let (from, to) = (from.ok_or_else(|| missing("from"))?, to.ok_or_else(|| missing("to"))?);
    Ok(Json(history::diff_versions(&state.pool, from, to).await?).into_response())
}

/// Roll back to a manifest version
///
/// Applies the stored text of `version` again as a new version, by the caller, with the source
/// `rollback to v<version>`, like any apply: validated under today's rules, within the quotas,
/// changed services replaced (rolling where they have an `update` block). The body is ignored.
#[utoipa::path(
    post,
    path = "/stack/versions/{version}/rollback",
    operation_id = "rollback_stack",
    tag = tags::STACK,
    params(("version" = i64, Path, minimum = 1, description = "The version to apply again")),
    responses(
        (status = 202, description = "Accepted: the new version and its start-up run", body = StackApplied),
        (status = 400, description = "`validation_failed`: not a version, or a manifest today's rules or \
            quotas refuse", body = ErrorReply),
        (status = 409, description = "`conflict`: a start-up run or a shutdown is in progress", body = ErrorReply),
        NotFound, Internal, Unavailable,
    )
)]
async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = parse_version("version", &version)?;
    let applied = state.controller.rollback(version, caller.principal).await?;
    Ok((StatusCode::ACCEPTED, Json(applied)).into_response())
}
