//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz` and the dashboard at `/`. Each
//! resource module exposes its own `router()`; [`app`] merges them, so tests can drive the whole
//! API without a socket. The routers are `OpenApiRouter`s: the OpenAPI document
//! (`/api/v1/openapi.json`) is made from the same registrations as the routes.

mod discovery;
mod error;
mod extract;
mod health;
mod openapi;
mod priorities;
mod readiness;
mod services;
mod stack;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use health::ttl_error;
pub use openapi::apply_roles;

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
    let (api, document) = api_routes(state.manifest_max_bytes).split_for_parts();
    api
        // A page, not part of the API: it stays out of the document.
        .route("/", axum::routing::get(dashboard))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::Extension(openapi::Document::new(&document)))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Every documented route with its document: the API under `/api/v1`, readiness and metrics.
/// `manifest_max_bytes` is the body limit of `PUT /api/v1/stack`.
pub(crate) fn api_routes(manifest_max_bytes: usize) -> OpenApiRouter<AppState> {
    openapi::base()
        .nest(
            "/api/v1",
            services::router()
                .merge(discovery::router())
                .merge(health::router())
                .merge(priorities::router())
                .merge(stack::router(manifest_max_bytes))
                .merge(openapi::router()),
        )
        .merge(readiness::router())
        .routes(routes!(metrics))
}

/// The dashboard placeholder until the dashboard is built.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../../dashboard/index.html"))
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = openapi::tags::SYSTEM,
    responses(
        (status = 200, description = "Prometheus metrics in the OpenMetrics text format", body = String,
            content_type = "application/openmetrics-text"),
    )
)]
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    state.metrics.instances.set(state.registry.leases.len() as i64);
    state.metrics.checks.set(state.health.checker.len() as i64);
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
