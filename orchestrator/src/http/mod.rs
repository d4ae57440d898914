//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz`, `/metrics` and the dashboard at `/`.
//! Each resource module exposes its own `router()`; [`app`] merges them, so tests can drive the
//! whole API without a socket. The routers are `OpenApiRouter`s: the OpenAPI document
//! (`/api/v1/openapi.json`) is made from the same registrations as the routes. Every route passes
//! the [`auth`] check; every request gets an id, a span and a line in the HTTP metrics
//! ([`observe`]).

pub mod auth;
pub(crate) mod browser;
mod cluster;
mod config;
mod dashboard;
mod discovery;
mod error;
mod extract;
mod health;
mod history;
mod observe;
mod openapi;
mod priorities;
mod readiness;
mod resources;
pub mod server;
mod services;
mod stack;
mod workflows;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use openapi::apply_roles;
pub use stack::FOLLOWERS_MAX;

use crate::registry::Registry;

/// Where the API listens, who may call it, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Listen address.
    pub addr: SocketAddr,
    pub profile: Profile,
    /// Run the production profile without API tokens: every caller is admin.
    pub insecure: bool,
    pub auth: auth::AuthSettings,
    /// The built dashboard, served at `/`.
    pub dashboard_dir: PathBuf,
    pub feed: ws::FeedSettings,
    /// Largest manifest `PUT /api/v1/stack` takes (bytes); other bodies take the largest command.
    pub manifest_max_bytes: usize,
    /// Web origins besides the API's own that may send changes and open the live feed.
    pub allowed_origins: Vec<String>,
    /// Host names besides loopback ones answered when listening on loopback.
    pub allowed_hosts: Vec<String>,
    /// Timeouts and the concurrency limit.
    pub limits: server::ServerLimits,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            profile: Profile::Development,
            insecure: false,
            auth: auth::AuthSettings::default(),
            dashboard_dir: PathBuf::from("dashboard/dist"),
            feed: ws::FeedSettings::default(),
            manifest_max_bytes: 1024 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            limits: server::ServerLimits::default(),
        }
    }
}

/// Where the orchestrator runs: the production profile refuses to start with an open API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Local use: without tokens the API is open (every caller is admin), with a warning.
    #[default]
    Development,
    /// Refuses to start without API tokens unless told `insecure`.
    Production,
}

impl Profile {
    /// The names the settings take.
    pub const NAMES: [&'static str; 2] = ["development", "production"];
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "development" => Ok(Profile::Development),
            "production" => Ok(Profile::Production),
            other => Err(format!("unknown profile {other:?}: one of {}", Profile::NAMES.join(", "))),
        }
    }
}

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
    pub subjects: orch_protocol::Subjects,
    pub auth: auth::Authenticator,
    pub feed: ws::Feed,
    /// The built dashboard, served at `/`.
    pub dashboard_dir: std::path::PathBuf,
    /// Which browser origins and hosts are answered.
    pub browser: Arc<browser::BrowserGuard>,
    /// Requests in flight and how long each may take.
    pub limits: server::RequestLimits,
    /// The replica this runs as (`serve --replica`), `None` for one orchestrator alone.
    pub replica: Option<String>,
    /// The workflow executor.
    pub workflows: crate::workflow::executor::Workflows,
    /// The node inventory.
    pub nodes: crate::resources::Nodes,
    /// The config store.
    pub config: crate::config_store::ConfigStore,
    /// Log follows open now, at most [`stack::FOLLOWERS_MAX`].
    pub followers: Arc<tokio::sync::Semaphore>,
}

impl HttpSettings {
    /// The browser guard these settings ask for.
    pub fn browser_guard(&self, listening: SocketAddr) -> browser::BrowserGuard {
        browser::BrowserGuard {
            allowed_origins: self.allowed_origins.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            loopback: listening.ip().is_loopback(),
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let (api, mut document) = api_routes(state.manifest_max_bytes).split_for_parts();
    openapi::apply_roles(&mut document, auth::role_of);
    api
        // The dashboard's files are pages, not part of the API: they stay out of the document.
        .fallback(dashboard::files)
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::require_role))
        .layer(axum::Extension(openapi::Document::new(&document)))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.browser.clone(), browser::guard))
        .layer(axum::middleware::from_fn_with_state(state.limits.clone(), server::limit))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), observe::observe))
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
                .merge(history::router())
                .merge(cluster::router())
                .merge(workflows::router(manifest_max_bytes))
                .merge(resources::router())
                .merge(config::router())
                .merge(openapi::router())
                .routes(routes!(auth::whoami))
                .routes(routes!(ws::feed)),
        )
        .merge(readiness::router())
        .routes(routes!(metrics))
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
    let js = async_nats::jetstream::new(state.nats.clone());
    state.metrics.collect(&state.pool, &js, &state.subjects).await;
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}
