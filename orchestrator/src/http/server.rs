//! Serving the API on a socket with limits a public endpoint needs: a client that sends its
//! headers slowly (or opens connections and sends nothing) is cut off after the header-read
//! timeout; a request that takes longer than the request timeout answers 503; beyond the
//! concurrency limit requests answer 503 at once. Every 503 carries `Retry-After`.
//!
//! axum's own `serve` sets no header-read timeout, so connections are served here with hyper's
//! HTTP/1 connection (upgrades for the live feed), as axum does, plus a timer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use orch_protocol::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::ApiError;
use crate::shutdown::Shutdown;

/// How long connections still serving requests get after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A client must send a request's headers within this long (also a new connection's first,
    /// and the next one on a kept-alive connection: hyper starts it when it waits for a request,
    /// so it is the idle timeout too).
    pub header_read_timeout: Duration,
    /// Longest a request may take before it answers 503 (`DELETE /api/v1/stack`, which waits for
    /// every service's grace period, is exempt).
    pub request_timeout: Duration,
    /// Most requests in flight; more answer 503 at once. Probes (`/healthz`, `/readyz`) are exempt.
    pub max_concurrent: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_concurrent: 1024,
        }
    }
}

/// The request limits as a middleware's state.
#[derive(Clone)]
pub struct RequestLimits {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
}

impl RequestLimits {
    pub fn new(limits: &ServerLimits) -> RequestLimits {
        RequestLimits {
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            max_concurrent: limits.max_concurrent,
            timeout: limits.request_timeout,
        }
    }
}

/// The middleware: a permit per request (or 503 at once), and the request timeout.
pub async fn limit(State(limits): State<RequestLimits>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let probe = matches!(path, "/healthz" | "/readyz");
    let waits_for_services = request.method() == axum::http::Method::DELETE && path == "/api/v1/stack";
    let _permit = if probe {
        None
    } else {
        match limits.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the API is saturated ({} requests in flight); retry shortly", limits.max_concurrent),
                )
                .into_response();
            }
        }
    };
    if waits_for_services {
        return next.run(request).await;
    }
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the request took longer than {}; it may still complete, so retry only what is idempotent",
                humantime::format_duration(limits.timeout)
            ),
        )
        .into_response(),
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their requests
/// for up to [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, app: Router, limits: ServerLimits, mut shutdown: Shutdown) {
    // HTTP/1.1 (browsers, curl and the clients speak it over plain TCP; the live feed upgrades
    // from it), served by hyper's own HTTP/1 connection so the header-read timeout runs from the
    // first byte awaited: telling HTTP/2 apart first would wait for bytes without any timeout.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.requested() => break,
        };
        let service = app.clone().map_request(|request: Request<Incoming>| request.map(axum::body::Body::new));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).with_upgrades();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop.requested() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %remote, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them");
        connections.abort_all();
    }
}
