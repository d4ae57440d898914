//! The dashboard's files (`--dashboard-dir`, built by `scripts/dashboard.sh`), served for every
//! path no route claims, with headers that keep untrusted text from ever running as code: a
//! strict Content-Security-Policy (scripts only from this origin, no inline script), no MIME
//! sniffing, no framing. Unknown paths under `/api/` answer the API's JSON 404 instead.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::AppState;
use super::error;

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; connect-src 'self'; \
     img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

pub async fn files(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") || path == "/api" {
        return error::not_found(request.uri().clone()).await.into_response();
    }
    if !state.dashboard_dir.join("index.html").is_file() {
        if path == "/" {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!(
                    "The dashboard is not built: no index.html in {}.\nBuild it with scripts/dashboard.sh (make dev does), \
                     or point --dashboard-dir at a built copy. The API is at /api/v1.\n",
                    state.dashboard_dir.display()
                ),
            )
                .into_response();
        }
        return error::not_found(request.uri().clone()).await.into_response();
    }
    let uri = request.uri().clone();
    let serve = ServeDir::new(&state.dashboard_dir).append_index_html_on_directories(true);
    let mut response = match serve.oneshot(request).await {
        Ok(response) if response.status() == axum::http::StatusCode::NOT_FOUND => {
            return error::not_found(uri).await.into_response();
        }
        Ok(response) => response.into_response(),
        Err(infallible) => match infallible {},
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // index.html names the hashed asset files of its build: never cache it.
    if uri.path() == "/" || uri.path().ends_with(".html") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}
