//! `/api/v1/services`: register, list, get, deregister and heartbeat instances. Writes go through
//! the same registry writer as NATS commands.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use orch_protocol::registry::{Health, Registration, validate_instance_id};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract;
use super::openapi::{BadRequest, Conflict, Internal, NotFound, PayloadTooLarge, Unavailable, tags};
use crate::registry::{Beat, Body, Command, InstanceView, Meta, Outcome, Page, Reply, Status, Submission, with_id};
use crate::storage::instances::{Filter, PAGE_DEFAULT, PAGE_MAX};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, register)).routes(routes!(get_one, deregister)).routes(routes!(heartbeat))
}

/// Header that makes a POST or DELETE idempotent: the same key is applied once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header as documented on the routes that take it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes a header the handlers read from the `HeaderMap`
pub(super) struct IdempotencyKey {
    /// 1-200 visible ASCII characters. A repeat of the request with the same key returns the
    /// first outcome; the key on another request is `409`. Remembered for 7 days.
    #[param(rename = "Idempotency-Key", value_type = String, required = false, pattern = "^[!-~]{1,200}$")]
    idempotency_key: Option<String>,
}

/// Where an HTTP command came from. `route` and `body` make the fingerprint, so a key reused for
/// another request is refused rather than answered with the first request's outcome.
fn meta(caller: &Caller, headers: &HeaderMap, route: &str, body: Vec<u8>) -> Result<Meta, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| (1..=200).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| {
                    ApiError::field(
                        ErrorCode::ValidationFailed,
                        "Idempotency-Key",
                        "must be 1-200 visible ASCII characters (no spaces)",
                    )
                })?
                .to_string(),
        ),
    };
    Ok(Meta::new("http", key, route, body.into(), caller.principal.clone()))
}

fn respond(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Failed(e) => ApiError::from(e.error).into_response(),
        Outcome::Applied(reply) => {
            let status = if reply.status == Status::Registered { StatusCode::CREATED } else { StatusCode::OK };
            let mut response = (status, Json(&reply)).into_response();
            if let (StatusCode::CREATED, Some(instance)) = (status, &reply.instance)
                && let Ok(location) = format!("/api/v1/services/{}", instance.id).parse()
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    }
}

/// Submits `command` from `caller`, received on `route` with `body` (the fingerprint of its
/// idempotency key), and answers with its outcome.
pub(super) async fn submit(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    body: Vec<u8>,
    command: Command,
) -> Result<Response, ApiError> {
    let submission = Submission { meta: meta(caller, headers, route, body)?, body: Body::Command(command) };
    Ok(respond(state.registry.submit(submission).await?))
}

/// Register an instance, or update it
///
/// The same body again changes nothing (`unchanged`). With an `Idempotency-Key`, a repeat of the
/// request returns the first outcome.
#[utoipa::path(
    post,
    path = "/services",
    operation_id = "register_instance",
    tag = tags::SERVICES,
    params(IdempotencyKey),
    request_body(content = Registration, content_type = "application/json"),
    responses(
        (status = 201, description = "`registered`: a new instance", body = Reply,
            headers(("Location" = String, description = "`/api/v1/services/{id}` of the new instance"))),
        (status = 200, description = "`updated` (`changed` lists the fields) or `unchanged`", body = Reply),
        BadRequest, Conflict, PayloadTooLarge, Internal, Unavailable,
    )
)]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    extract::Json(mut registration): extract::Json<Registration>,
) -> Result<Response, ApiError> {
    registration.normalize();
    registration.validate()?;
    let body = serde_json::to_vec(&registration).expect("a registration serializes");
    submit(&state, &caller, &headers, "POST /api/v1/services", body, Command::Register(with_id(registration))).await
}

/// Deregister an instance
#[utoipa::path(
    delete,
    path = "/services/{id}",
    operation_id = "deregister_instance",
    tag = tags::SERVICES,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$"), IdempotencyKey),
    responses(
        (status = 200, description = "`deregistered`, with the instance as it was", body = Reply),
        BadRequest, NotFound, Conflict, Internal, Unavailable,
    )
)]
async fn deregister(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let body = id.clone().into_bytes();
    submit(&state, &caller, &headers, "DELETE /api/v1/services/{id}", body, Command::Deregister { id }).await
}

/// One instance with its lease
#[utoipa::path(
    get,
    path = "/services/{id}",
    operation_id = "get_instance",
    tag = tags::SERVICES,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        BadRequest, NotFound, Internal, Unavailable,
    )
)]
async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    match state.registry.get(&id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(crate::errors::no_instance(&id).into()),
    }
}

/// The answer to a heartbeat.
#[derive(Serialize, ToSchema)]
struct Heartbeat {
    status: HeartbeatStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum HeartbeatStatus {
    /// The lease runs again for `ttl_seconds`.
    Renewed,
    /// The lease had run out (the instance was critical); it recovers.
    Recovering,
}

/// Renew the lease of an instance
///
/// The body is ignored. An unknown id is `404`: register the instance again.
#[utoipa::path(
    put,
    path = "/services/{id}/heartbeat",
    operation_id = "heartbeat",
    tag = tags::SERVICES,
    params(("id" = String, Path, description = "Instance id", pattern = r"^[A-Za-z0-9_-]{1,128}$")),
    responses(
        (status = 200, description = "`renewed`, or `recovering` when the lease had run out", body = Heartbeat),
        BadRequest, NotFound,
    )
)]
async fn heartbeat(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let status = match state.registry.heartbeat(&id) {
        Beat::Unknown => {
            return Err(ApiError::field(
                ErrorCode::NotFound,
                "id",
                format!("no instance with id {id:?} is registered; register it again"),
            ));
        }
        Beat::Renewed => HeartbeatStatus::Renewed,
        Beat::NeedsRecovery => HeartbeatStatus::Recovering,
    };
    Ok(Json(Heartbeat { status }).into_response())
}

/// Parses `?name=&tag=a,b&tag=c&health=&meta.<key>=<value>&limit=&after=`. Unknown parameters
/// are an error, so a misspelt filter never silently returns everything.
fn parse_filter(query: Option<&str>) -> Result<Filter, ApiError> {
    let pairs = super::extract::query_pairs(query)?;
    let mut filter = Filter { limit: PAGE_DEFAULT, ..Default::default() };
    let mut metadata = BTreeMap::new();
    for (key, value) in pairs {
        match key.as_str() {
            "name" => filter.name = Some(value),
            "tag" => filter.tags.extend(value.split(',').filter(|t| !t.is_empty()).map(String::from)),
            "health" => {
                filter.health = Some(Health::parse(&value).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "health", "must be passing, warning or critical")
                })?)
            }
            "limit" => {
                filter.limit = value.parse::<i64>().ok().filter(|l| (1..=PAGE_MAX).contains(l)).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "limit", format!("must be 1-{PAGE_MAX}"))
                })?
            }
            "after" => filter.after = Some(value),
            other => match other.strip_prefix("meta.") {
                Some(k) if !k.is_empty() => {
                    metadata.insert(k.to_string(), value);
                }
                _ => {
                    return Err(super::extract::unknown_parameter(
                        other,
                        "name, tag, health, meta.<key>, limit or after",
                    ));
                }
            },
        }
    }
    filter.metadata = metadata;
    Ok(filter)
}

/// List instances, a page at a time
///
/// Besides the parameters below, `meta.<key>=<value>` keeps the instances whose metadata has that
/// value (exact, repeatable for different keys). Any other parameter is `400` naming it. Pass
/// `next` of a page as `after` for the next one; `next` is `null` on the last page.
#[utoipa::path(
    get,
    path = "/services",
    operation_id = "list_instances",
    tag = tags::SERVICES,
    params(
        ("name" = Option<String>, Query, description = "Service name (exact)"),
        ("tag" = Option<Vec<String>>, Query, style = Form, explode,
            description = "Tags the instance must all have: comma-separated and repeatable (`tag=a,b&tag=c`)"),
        ("health" = Option<Health>, Query, description = "Health of the instance"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size, 1-1000 (default 100)"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of instances, ordered by id", body = Page),
        BadRequest, Internal, Unavailable,
    )
)]
async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let filter = parse_filter(query.as_deref())?;
    Ok(Json(state.registry.list(&filter).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_every_parameter() {
        let f = parse_filter(Some("name=web&tag=a,b&tag=c&health=passing&meta.zone=eu&limit=5&after=x")).unwrap();
        assert_eq!(f.name.as_deref(), Some("web"));
        assert_eq!(f.tags, vec!["a", "b", "c"]);
        assert_eq!(f.health, Some(Health::Passing));
        assert_eq!(f.metadata.get("zone").map(String::as_str), Some("eu"));
        assert_eq!((f.limit, f.after.as_deref()), (5, Some("x")));
    }

    #[test]
    fn filter_names_the_bad_parameter() {
        assert_eq!(parse_filter(Some("colour=red")).unwrap_err().0.field.as_deref(), Some("colour"));
        assert_eq!(parse_filter(Some("limit=0")).unwrap_err().0.field.as_deref(), Some("limit"));
        assert_eq!(parse_filter(Some("health=sad")).unwrap_err().0.field.as_deref(), Some("health"));
    }
}
