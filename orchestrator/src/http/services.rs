//! `/api/v1/services`: register, list, get, deregister and heartbeat instances. Writes go through
//! the same registry writer as NATS commands.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use orch_protocol::ErrorCode;
use orch_protocol::registry::{Health, Registration, validate_instance_id};

use super::AppState;
use super::error::ApiError;
use super::extract;
use crate::registry::{Beat, Body, Command, Meta, Outcome, Status, Submission, with_id};
use crate::storage::instances::{Filter, PAGE_DEFAULT, PAGE_MAX};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/services", get(list).post(register))
        .route("/services/{id}", get(get_one).delete(deregister))
        .route("/services/{id}/heartbeat", put(heartbeat))
}

/// Header that makes a POST or DELETE idempotent: the same key is applied once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where an HTTP command came from. `route` and `body` make the fingerprint, so a key reused for
/// another request is refused rather than answered with the first request's outcome.
fn meta(headers: &HeaderMap, route: &str, body: Vec<u8>) -> Result<Meta, ApiError> {
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
    Ok(Meta::new("http", key, route, body.into()))
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

/// Submits `command`, received on `route` with `body` (the fingerprint of its idempotency key),
/// and answers with its outcome.
pub(super) async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    body: Vec<u8>,
    command: Command,
) -> Result<Response, ApiError> {
    let submission = Submission { meta: meta(headers, route, body)?, body: Body::Command(command) };
    Ok(respond(state.registry.submit(submission).await?))
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    extract::Json(mut registration): extract::Json<Registration>,
) -> Result<Response, ApiError> {
    registration.normalize();
    registration.validate()?;
    let body = serde_json::to_vec(&registration).expect("a registration serializes");
    submit(&state, &headers, "POST /api/v1/services", body, Command::Register(with_id(registration))).await
}

async fn deregister(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    let body = id.clone().into_bytes();
    submit(&state, &headers, "DELETE /api/v1/services/{id}", body, Command::Deregister { id }).await
}

async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    match state.registry.get(&id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::field(ErrorCode::NotFound, "id", format!("no instance with id {id:?}"))),
    }
}

async fn heartbeat(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    validate_instance_id("id", &id)?;
    match state.registry.heartbeat(&id) {
        Beat::Unknown => Err(ApiError::field(
            ErrorCode::NotFound,
            "id",
            format!("no instance with id {id:?} is registered; register it again"),
        )),
        Beat::Renewed => Ok(Json(serde_json::json!({ "status": "renewed" })).into_response()),
        Beat::NeedsRecovery => Ok(Json(serde_json::json!({ "status": "recovering" })).into_response()),
    }
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
