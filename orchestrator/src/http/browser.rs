//! What keeps web pages in a browser from driving the API: a page on another site can make the
//! browser send requests here (a form post, a WebSocket), and a site whose name is rebound to
//! 127.0.0.1 (DNS rebinding) can even read the answers. Tokens stop most of this, but not
//! without tokens (development) and not for a browser that holds a token in a cookie-less page.
//!
//! - **Origin**: a request that changes something (any method but GET, HEAD and OPTIONS) and every
//!   WebSocket upgrade that carries an `Origin` must come from the API's own origin (the `Host` it
//!   was sent to) or from an allowed origin. Clients outside browsers send no `Origin` and pass.
//! - **Host**: when the API listens on a loopback address, the `Host` must be a loopback name or
//!   address (or an allowed host): a rebound name is refused.
//!
//! Bodies are strictly JSON ([`super::extract::Json`]), so a form cannot post one without a CORS
//! preflight, which the API never answers.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orch_protocol::ErrorCode;

use super::ApiError;

/// Origins and hosts the API accepts besides its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserGuard {
    /// Origins (`scheme://host[:port]`) allowed to send changes and open the live feed.
    pub allowed_origins: Vec<String>,
    /// Host names accepted in `Host` when the API listens on loopback.
    pub allowed_hosts: Vec<String>,
    /// The API listens on a loopback address.
    pub loopback: bool,
}

impl BrowserGuard {
    /// Refuses a request a browser may have been made to send; `None` lets it through.
    pub fn judge(&self, method: &Method, headers: &HeaderMap) -> Option<ApiError> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if self.loopback
            && let Some(host) = host
            && !self.is_loopback_host(host)
        {
            return Some(ApiError::field(
                ErrorCode::Forbidden,
                "host",
                format!(
                    "this API listens on loopback and answers only loopback names, not {host:?} \
                     (an operator can allow more with --http-allowed-hosts)"
                ),
            ));
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let websocket = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !(changes || websocket) {
            return None;
        }
        let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("<not text>"))?;
        let same_origin =
            host.is_some_and(|host| origin_authority(origin).is_some_and(|a| a.eq_ignore_ascii_case(host)));
        if same_origin || self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return None;
        }
        Some(ApiError::field(
            ErrorCode::Forbidden,
            "origin",
            format!(
                "requests from the web page at {origin:?} may not {}; an operator can allow its origin with \
                 --http-allowed-origins",
                if websocket { "open the live feed" } else { "change anything" }
            ),
        ))
    }

    fn is_loopback_host(&self, host: &str) -> bool {
        let name = host_name(host);
        name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// `host[:port]` of an origin `scheme://host[:port]`, with the scheme's port left out as browsers do.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The name of a `Host` header without its port (IPv6 without brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host })
}

/// The middleware: refuses with 403 naming `origin` or `host`.
pub async fn guard(State(guard): State<std::sync::Arc<BrowserGuard>>, request: Request, next: Next) -> Response {
    match guard.judge(request.method(), request.headers()) {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn field(refusal: Option<ApiError>) -> Option<String> {
        refusal.map(|e| e.0.field.clone().unwrap_or_default())
    }

    fn loopback() -> BrowserGuard {
        BrowserGuard { loopback: true, ..BrowserGuard::default() }
    }

    #[test]
    fn clients_outside_browsers_send_no_origin_and_pass() {
        let g = loopback();
        assert!(g.judge(&Method::POST, &headers(&[("host", "127.0.0.1:8080")])).is_none());
        assert!(g.judge(&Method::DELETE, &HeaderMap::new()).is_none());
    }

    #[test]
    fn a_page_of_another_origin_cannot_change_anything_or_open_the_feed() {
        let g = loopback();
        let foreign = [("host", "127.0.0.1:8080"), ("origin", "https://evil.example")];
        assert_eq!(field(g.judge(&Method::POST, &headers(&foreign))), Some("origin".into()));
        assert_eq!(field(g.judge(&Method::PUT, &headers(&foreign))), Some("origin".into()));
        let ws = [("host", "127.0.0.1:8080"), ("origin", "null"), ("upgrade", "websocket")];
        assert_eq!(field(g.judge(&Method::GET, &headers(&ws))), Some("origin".into()));
        // Reads from any page are harmless without the answers, which CORS keeps from the page.
        assert!(g.judge(&Method::GET, &headers(&foreign)).is_none());
    }

    #[test]
    fn the_api_s_own_origin_and_allowed_origins_pass() {
        let own = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("upgrade", "websocket")];
        assert!(loopback().judge(&Method::GET, &headers(&own)).is_none());
        assert!(loopback().judge(&Method::POST, &headers(&own)).is_none());
        let other_port = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:3000")];
        assert_eq!(field(loopback().judge(&Method::POST, &headers(&other_port))), Some("origin".into()));
        let allowed = BrowserGuard { allowed_origins: vec!["http://127.0.0.1:3000".into()], ..loopback() };
        assert!(allowed.judge(&Method::POST, &headers(&other_port)).is_none());
    }

    #[test]
    fn on_loopback_a_rebound_name_is_refused() {
        let g = loopback();
        for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "app.localhost:8080", "127.0.0.2:80"] {
            assert!(g.judge(&Method::GET, &headers(&[("host", host)])).is_none(), "{host}");
        }
        let rebound = [("host", "attacker.example:8080")];
        assert_eq!(field(g.judge(&Method::GET, &headers(&rebound))), Some("host".into()));
        let allowed = BrowserGuard { allowed_hosts: vec!["attacker.example".into()], ..loopback() };
        assert!(allowed.judge(&Method::GET, &headers(&rebound)).is_none());
        let public = BrowserGuard::default();
        assert!(public.judge(&Method::GET, &headers(&rebound)).is_none(), "not on loopback: any name");
    }
}
