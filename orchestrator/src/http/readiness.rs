//! Liveness and readiness of the orchestrator itself.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::tags;
use crate::storage;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The process is up and serving HTTP
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = tags::SYSTEM,
    responses((status = 200, description = "Always `ok`", body = String, content_type = "text/plain", example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// What the orchestrator depends on.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// PostgreSQL answers.
    postgres: bool,
    /// NATS is connected.
    nats: bool,
    /// Leases held.
    instances: usize,
    /// `single` for one orchestrator alone, `leader` for the replica that leads (a standby
    /// answers `standby`, see docs/protocol.md).
    role: &'static str,
}

/// The orchestrator can serve: PostgreSQL answers and NATS is connected
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = tags::SYSTEM,
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the body says what is missing", body = Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = storage::ping(&state.pool).await;
    let nats = state.nats.connection_state() == async_nats::connection::State::Connected;
    let status = if postgres && nats { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let role = if state.replica.is_some() { "leader" } else { "single" };
    (status, Json(Readiness { postgres, nats, instances: state.registry.leases.len(), role }))
}
