//! Liveness and readiness of the orchestrator itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use crate::storage;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok"
}

/// PostgreSQL answers and NATS is connected: 200, else 503 with what is missing.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = storage::ping(&state.pool).await;
    let nats = state.nats.connection_state() == async_nats::connection::State::Connected;
    let status = if postgres && nats { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "postgres": postgres, "nats": nats, "instances": state.registry.leases.len() })))
}
