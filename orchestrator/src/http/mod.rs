//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz` and the dashboard at `/`. Each
//! resource module exposes its own `router()`; [`app`] merges them, so tests can drive the whole
//! API without a socket.

mod discovery;
mod error;
mod extract;
mod health;
mod priorities;
mod readiness;
mod services;
mod stack;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::PgPool;

pub use error::ApiError;
pub use health::ttl_error;

use crate::registry::Registry;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub max_body_bytes: usize,
    /// Body limit of `PUT /api/v1/stack`.
    pub manifest_max_bytes: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub health: Arc<crate::health::Monitor>,
    pub controller: crate::lifecycle::Controller,
    pub priorities: crate::priority::Priorities,
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .nest(
            "/api/v1",
            services::router()
                .merge(discovery::router())
                .merge(health::router())
                .merge(priorities::router())
                .merge(stack::router(state.manifest_max_bytes)),
        )
        .merge(readiness::router())
        .route("/", axum::routing::get(dashboard))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The dashboard placeholder until the dashboard is built.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../../dashboard/index.html"))
}

/// Prometheus metrics in the OpenMetrics text format.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    state.metrics.instances.set(state.registry.leases.len() as i64);
    state.metrics.checks.set(state.health.checker.len() as i64);
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
