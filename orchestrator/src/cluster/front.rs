//! The HTTP front of a replica: one listener for the replica's whole life, so a client may talk
//! to any replica. While the replica leads, every request goes to the orchestrator's own
//! application in-process; while it stands by, it answers what it knows itself (liveness,
//! readiness, `GET /api/v1/cluster`, its metrics) and forwards the rest to the leader's
//! `http_url` (table `replicas`), where the request is authenticated and answered as if sent
//! there. During a failover a forwarded request waits for the next leader (up to
//! [`FORWARD_PATIENCE`]) rather than failing at once.
//!
//! A request is sent to the leader again only when the leader could not be reached at all (the
//! connection was refused): then it was not applied. A request that reached a leader that died
//! before answering is answered `503`, since it may or may not have been applied; clients retry
//! it with the same `Idempotency-Key`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tower::ServiceExt as _;

use crate::http::ApiError;
use crate::http::auth::{self, Authenticator};
use crate::http::browser::BrowserGuard;
use crate::storage::leadership;

/// How long a forwarded request waits for a leader to answer during a failover.
pub const FORWARD_PATIENCE: Duration = Duration::from_secs(10);

/// How often a waiting request looks for the next leader.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The response header naming the replica that answered a forwarded request.
pub const FORWARDED_BY: &str = "orch-forwarded-by";

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the front reaches.
pub struct Front {
    me: String,
    pool: sqlx::PgPool,
    auth: Authenticator,
    browser: Arc<BrowserGuard>,
    /// The orchestrator's application while this replica leads.
    leading: RwLock<Option<Router>>,
    client: reqwest::Client,
    body_limit: usize,
    metrics: ClusterMetrics,
}

impl Front {
    pub fn new(
        me: String,
        pool: sqlx::PgPool,
        auth: Authenticator,
        browser: BrowserGuard,
        body_limit: usize,
    ) -> anyhow::Result<Arc<Front>> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let metrics = ClusterMetrics::new(&me);
        Ok(Arc::new(Front {
            me,
            pool,
            auth,
            browser: Arc::new(browser),
            leading: RwLock::new(None),
            client,
            body_limit,
            metrics,
        }))
    }

    /// This replica leads: its application answers from now on.
    pub fn lead(&self, app: Router) {
        *self.leading.write().expect("front lock") = Some(app);
        self.metrics.leader.set(1);
        self.metrics.elections.inc();
    }

    /// This replica stopped leading: forward again.
    pub fn stand_by(&self) {
        *self.leading.write().expect("front lock") = None;
        self.metrics.leader.set(0);
    }

    fn leader_app(&self) -> Option<Router> {
        self.leading.read().expect("front lock").clone()
    }

    /// The front's application.
    pub fn app(self: &Arc<Self>) -> Router {
        let local = Router::new()
            .route("/api/v1/cluster", axum::routing::get(cluster))
            .route("/metrics", axum::routing::get(metrics))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(readyz))
            .route_layer(axum::middleware::from_fn_with_state(self.auth.clone(), auth::require_role))
            .with_state(self.clone());
        Router::new().fallback(dispatch).with_state((self.clone(), local))
    }
}

/// Leading: the application. Standing by: what the front answers itself, else the leader.
async fn dispatch(State((front, local)): State<(Arc<Front>, Router)>, request: Request) -> Response {
    if let Some(app) = front.leader_app() {
        // `/metrics` of a leader adds the group's figures to the orchestrator's.
        if request.uri().path() == "/metrics" {
            return leader_metrics(&front, app, request).await;
        }
        return app.oneshot(request).await.into_response();
    }
    if answered_by_standby(request.uri().path()) {
        return local.oneshot(request).await.into_response();
    }
    if let Some(refusal) = front.browser.judge(request.method(), request.headers()) {
        return refusal.into_response();
    }
    forward(&front, request).await
}

async fn cluster(State(front): State<Arc<Front>>) -> Result<axum::Json<super::view::ClusterView>, ApiError> {
    Ok(axum::Json(super::view::load(&front.pool, Some(&front.me)).await?))
}

/// A standby is ready while PostgreSQL answers and another replica leads (it can forward). A
/// replica elected but still starting its work is not ready yet.
async fn readyz(State(front): State<Arc<Front>>) -> Response {
    let leader = leadership::current_with_liveness(&front.pool).await;
    let postgres = leader.is_ok();
    let leader = leader.ok().flatten().filter(|(_, live)| *live).map(|(h, _)| h.holder);
    let forwards = leader.as_ref().is_some_and(|l| *l != front.me);
    let status = if postgres && forwards { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({ "role": "standby", "replica": front.me, "postgres": postgres, "leader": leader });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(front): State<Arc<Front>>) -> Response {
    front.metrics.collect(&front.pool).await;
    openmetrics(front.metrics.encode())
}

async fn leader_metrics(front: &Front, app: Router, request: Request) -> Response {
    let response = app.oneshot(request).await.into_response();
    if response.status() != StatusCode::OK {
        return response;
    }
    let Ok(body) = axum::body::to_bytes(response.into_body(), 64 << 20).await else {
        return ApiError::new(ErrorCode::Internal, "the metrics could not be read").into_response();
    };
    front.metrics.collect(&front.pool).await;
    let text = String::from_utf8_lossy(&body);
    let orchestrator = text.trim_end().strip_suffix("# EOF").unwrap_or(&text);
    openmetrics(format!("{orchestrator}{}", front.metrics.encode()))
}

fn openmetrics(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Sends the request to the leader, waiting for one during a failover.
async fn forward(front: &Front, request: Request) -> Response {
    let websocket = request.headers().get(header::UPGRADE).is_some();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, front.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is over {} bytes", front.body_limit))
                .into_response();
        }
    };
    let deadline = tokio::time::Instant::now() + FORWARD_PATIENCE;
    let mut last_problem;
    loop {
        // Elected while this request waited: answer it here.
        if let Some(app) = front.leader_app() {
            return app.oneshot(Request::from_parts(parts, Body::from(body))).await.into_response();
        }
        match leadership::leader_url(&front.pool).await {
            Ok(Some((leader, _, _))) if leader == front.me => {
                last_problem = "this replica was elected and is starting".into();
            }
            Ok(Some((leader, _, url))) if websocket => {
                return ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the live feed is served by the leader {leader:?}: open it at {url}{}", parts.uri.path()),
                )
                .into_response();
            }
            Ok(Some((leader, _, url))) => match send(front, &leader, &url, &parts, body.clone()).await {
                Ok(response) => {
                    front.metrics.forwarded.get_or_create(&ResultLabel { result: "answered" }).inc();
                    return response;
                }
                Err(Unsent(problem)) => last_problem = problem,
                Err(Unanswered(problem)) => {
                    front.metrics.forwarded.get_or_create(&ResultLabel { result: "unanswered" }).inc();
                    return ApiError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the leader {leader:?} did not answer ({problem}); the request may or may not have \
                             been applied: send it again (with the same Idempotency-Key)"
                        ),
                    )
                    .into_response();
                }
            },
            Ok(None) => last_problem = "no replica holds the lease".into(),
            Err(e) => last_problem = format!("PostgreSQL does not answer: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            front.metrics.forwarded.get_or_create(&ResultLabel { result: "no_leader" }).inc();
            return ApiError::new(
                ErrorCode::Unavailable,
                format!("no leader answered within {FORWARD_PATIENCE:?} ({last_problem}); try again shortly"),
            )
            .into_response();
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}

use SendError::{Unanswered, Unsent};

enum SendError {
    /// The leader was not reached: nothing was applied, the request may be sent again.
    Unsent(String),
    /// The request may have reached the leader.
    Unanswered(String),
}

async fn send(
    front: &Front,
    leader: &str,
    url: &str,
    parts: &axum::http::request::Parts,
    body: bytes::Bytes,
) -> Result<Response, SendError> {
    let target = format!("{}{}", url.trim_end_matches('/'), parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut headers = end_to_end(&parts.headers);
    headers.insert(HeaderName::from_static(FORWARDED_BY), value(&front.me));
    let sent = front.client.request(parts.method.clone(), &target).headers(headers).body(body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Err(Unsent(format!("{leader:?} at {url} refused the connection"))),
        Err(e) => return Err(Unanswered(e.to_string())),
    };
    let mut answer = Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = end_to_end(response.headers());
        headers.insert(HeaderName::from_static(FORWARDED_BY), value(&front.me));
    }
    Ok(answer.body(Body::from_stream(response.bytes_stream())).unwrap_or_else(|e| {
        ApiError::new(ErrorCode::Internal, format!("the leader's answer could not be passed on: {e}")).into_response()
    }))
}

/// The headers without those of one hop; `Host` is kept, so the leader judges the request
/// (its browser guard) as sent to the address the client used.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in HOP_BY_HOP {
        kept.remove(name);
    }
    kept.remove(header::CONTENT_LENGTH);
    kept
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("replica"))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// The group's figures, from this replica's side (`orch_cluster_*`).
struct ClusterMetrics {
    registry: prometheus_client::registry::Registry,
    leader: Gauge,
    elections: Counter,
    term: Gauge,
    replicas: Family<RoleLabel, Gauge>,
    forwarded: Family<ResultLabel, Counter>,
}

impl ClusterMetrics {
    fn new(me: &str) -> ClusterMetrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix_and_labels(
            "orch_cluster",
            [(std::borrow::Cow::Borrowed("replica"), std::borrow::Cow::Owned(me.to_string()))].into_iter(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica leads, else 0", leader.clone());
        let elections = Counter::default();
        registry.register("elections", "Terms this replica was elected for", elections.clone());
        let term = Gauge::default();
        registry.register("term", "The group's current term, as last read", term.clone());
        let replicas = Family::<RoleLabel, Gauge>::default();
        registry.register("replicas", "Replicas of the group by role (leader, standby, gone)", replicas.clone());
        let forwarded = Family::<ResultLabel, Counter>::default();
        registry.register(
            "forwarded_requests",
            "HTTP requests this standby forwarded to the leader, by result (answered, unanswered, no_leader)",
            forwarded.clone(),
        );
        ClusterMetrics { registry, leader, elections, term, replicas, forwarded }
    }

    async fn collect(&self, pool: &sqlx::PgPool) {
        let Ok(view) = super::view::load(pool, None).await else { return };
        self.term.set(view.leader.as_ref().map_or(0, |l| l.term));
        for role in super::view::ReplicaRole::ALL {
            let count = view.replicas.iter().filter(|r| r.role == role).count() as i64;
            self.replicas.get_or_create(&RoleLabel { role: role.as_str() }).set(count);
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Whether requests for `path` are answered by the front of a standby itself.
pub fn answered_by_standby(path: &str) -> bool {
    matches!(path, "/api/v1/cluster" | "/metrics" | "/healthz" | "/readyz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded_host_and_authorization_are() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let kept = end_to_end(&headers);
        assert!(kept.contains_key(header::HOST) && kept.contains_key(header::AUTHORIZATION));
        assert!(!kept.contains_key(header::CONNECTION) && !kept.contains_key(header::TRANSFER_ENCODING));
        assert!(!kept.contains_key(header::CONTENT_LENGTH), "reqwest sets it from the body");
    }

    #[test]
    fn a_standby_answers_only_what_it_knows_itself() {
        assert!(answered_by_standby("/api/v1/cluster") && answered_by_standby("/readyz"));
        assert!(!answered_by_standby("/api/v1/services") && !answered_by_standby("/"));
    }
}
