//! Who may call the HTTP API. Callers present a bearer token: a configured API key, or a JWT signed
//! with the configured HS256 secret or one of the keys of a JWKS file. Every token carries one of
//! four roles; [`required_role`] says which each route needs: reads need `viewer`, an engine's
//! priority adjustments need `engine`, anything else that changes state needs `operator`, and
//! replacing or stopping the whole stack needs `admin`.
//!
//! With no key and no JWT setting, authentication is off and every caller is an anonymous admin;
//! the production profile refuses to start that way unless `--insecure` is given.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use orch_protocol::{ErrorCode, principal};
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// What a caller may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// An AI engine: also sets and clears priority adjustments (through the guardrails), and
    /// nothing else: not a policy, a pin, the bounds, or the release of a hold it tripped.
    Engine,
    /// Also registers, deregisters, restarts, sets priorities and health.
    Operator,
    /// Also replaces or stops the whole stack.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "engine" => Some(Role::Engine),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Engine => "engine",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller, put in the request's extensions for handlers that record who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// What the orchestrator records as the author of this caller's changes: `key:<name>` for an
    /// API key, `jwt:<sub>` for a JWT, `anonymous` while authentication is off.
    pub principal: String,
}

impl Caller {
    /// Every caller while authentication is off.
    fn anonymous() -> Caller {
        Caller { name: "anonymous".into(), role: Role::Admin, principal: principal::ANONYMOUS.into() }
    }

    fn with_key(name: &str, role: Role) -> Caller {
        Caller { name: name.into(), role, principal: principal::api_key(name) }
    }

    fn with_jwt(subject: Option<String>, role: Role) -> Caller {
        let principal = principal::jwt(subject.as_deref().unwrap_or_default());
        Caller { name: subject.unwrap_or_else(|| "jwt".into()), role, principal }
    }
}

/// Handlers that change something take the caller, to record who did. Every such route needs a
/// role, so [`require_role`] has put the caller in the request.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a route that records its caller has no role to check");
            ApiError::new(ErrorCode::Internal, "the caller of this route is not known")
        })
    }
}

/// The routes anyone may call: probes, the API description and the dashboard's files. `/metrics`
/// needs a viewer unless the operator opens it (`--metrics-public`).
/// Webhook deliveries (`POST /api/v1/hooks/{name}`) are signed with the hook's secret instead.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/api/v1/openapi.json", "/api/v1/hooks/{name}"];

/// The Prometheus endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// The role a route needs, or `None` for a public route. `path` is the route's template as
/// registered (`/api/v1/services/{id}`), so the rule cannot be dodged with another spelling.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if path == METRICS_PATH {
        return Some(Role::Viewer);
    }
    if PUBLIC.contains(&path) || !path.starts_with("/api/") {
        return None;
    }
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return Some(Role::Viewer);
    }
    // The stack runs commands on the nodes' hosts: replacing or stopping it is for admins.
    if path == "/api/v1/stack" || path == "/api/v1/stack/versions/{version}/rollback" {
        return Some(Role::Admin);
    }
    // A workflow's steps act on services and, in time, run commands: defining one is for admins;
    // running and cancelling executions is for operators.
    if path == "/api/v1/workflows/{name}" && *method == Method::PUT {
        return Some(Role::Admin);
    }
    // Quotas bound what every stack may ask for; schemas what every value of a prefix may be.
    if path == "/api/v1/quotas/{name}" || path == "/api/v1/config-schemas/{prefix}" {
        return Some(Role::Admin);
    }
    // A webhook's secret lets anyone who holds it start the workflow.
    if path == "/api/v1/hooks/{name}/secret" {
        return Some(Role::Admin);
    }
    // An engine's adjustments; their policy, pins, bounds and the guard stay the operator's.
    if path == "/api/v1/priorities/{service}" && (*method == Method::PUT || *method == Method::DELETE) {
        return Some(Role::Engine);
    }
    Some(Role::Operator)
}

/// [`required_role`] for the OpenAPI document, which names methods and roles as text.
pub fn role_of(method: &str, path: &str) -> Option<&'static str> {
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    required_role(&method, path).map(Role::as_str)
}

/// An API key as configured: `ROLE:NAME:SECRET`. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    pub role: Role,
    pub name: String,
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("role", &self.role).field("name", &self.name).field("secret", &"***").finish()
    }
}

/// Shortest secret accepted: a guessable key is worse than none, because it looks like security.
pub const MIN_SECRET_LEN: usize = 16;

impl std::str::FromStr for ApiKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().splitn(3, ':');
        let (role, name, secret) = match (parts.next(), parts.next(), parts.next()) {
            (Some(r), Some(n), Some(s)) => (r, n, s),
            _ => return Err("an API key is ROLE:NAME:SECRET, e.g. operator:deploy-bot:<secret>".into()),
        };
        let role =
            Role::parse(role).ok_or_else(|| format!("unknown role {role:?}: use viewer, engine, operator or admin"))?;
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("key name {name:?}: 1-64 visible ASCII characters"));
        }
        if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the secret of key {name:?} must be at least {MIN_SECRET_LEN} visible ASCII characters"
            ));
        }
        Ok(ApiKey { role, name: name.to_string(), secret: secret.to_string() })
    }
}

/// The tokens the API accepts. Roles: `viewer` reads, `operator` also changes state (register,
/// restart, priorities, health), `admin` also replaces or stops the whole stack. With none of
/// them, the API is open.
#[derive(Clone, PartialEq, Default)]
pub struct AuthSettings {
    /// API keys given directly.
    pub api_keys: Vec<ApiKey>,
    /// A file of API keys, one `ROLE:NAME:SECRET` per line (`#` starts a comment).
    pub api_keys_file: Option<PathBuf>,
    /// Accept JWTs signed with this HS256 secret (at least 32 bytes).
    pub jwt_secret: Option<String>,
    /// Accept JWTs signed by the keys of this JWKS file (each key with `kid` and `alg`).
    pub jwt_jwks_file: Option<PathBuf>,
    /// Required `iss` claim of JWTs.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim of JWTs.
    pub jwt_audience: Option<String>,
    /// Serve `/metrics` to anyone, without a token (a scraper on a trusted network).
    pub metrics_public: bool,
}

/// Shows everything but the JWT secret.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_keys", &self.api_keys)
            .field("api_keys_file", &self.api_keys_file)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("jwt_jwks_file", &self.jwt_jwks_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

/// Checks bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

struct Inner {
    /// API keys by the SHA-256 of their secret: the secrets themselves are not kept.
    keys: HashMap<[u8; 32], Caller>,
    jwt: Option<Jwt>,
    metrics_public: bool,
}

struct Jwt {
    /// HS256 secret, and the public keys of the JWKS file by key id.
    secret: Option<DecodingKey>,
    public: HashMap<String, (DecodingKey, Algorithm)>,
    validation: Validation,
}

/// The claims the orchestrator reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

fn digest(secret: &str) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl Authenticator {
    /// Authentication off: every caller is an anonymous admin.
    pub fn disabled() -> Self {
        Authenticator(Arc::new(Inner { keys: HashMap::new(), jwt: None, metrics_public: false }))
    }

    /// Builds the checker from the settings; errors name the setting at fault.
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        let mut keys: Vec<ApiKey> = settings.api_keys.clone();
        if let Some(path) = &settings.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--api-keys-file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(line.parse().map_err(|e| format!("--api-keys-file {} line {}: {e}", path.display(), n + 1))?);
            }
        }
        let mut by_digest = HashMap::new();
        for key in keys {
            let caller = Caller::with_key(&key.name, key.role);
            if by_digest.insert(digest(&key.secret), caller).is_some() {
                return Err(format!("API key {:?}: the same secret is configured twice", key.name));
            }
        }
        let jwt = Jwt::new(settings)?;
        Ok(Authenticator(Arc::new(Inner { keys: by_digest, jwt, metrics_public: settings.metrics_public })))
    }

    /// Whether `/metrics` is served without a token.
    pub fn metrics_public(&self) -> bool {
        self.0.metrics_public
    }

    /// Whether any token is configured; if not, every request is let through as admin.
    pub fn enabled(&self) -> bool {
        !self.0.keys.is_empty() || self.0.jwt.is_some()
    }

    /// The caller a token belongs to.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        let token = token.ok_or_else(|| {
            ApiError::field(
                ErrorCode::Unauthorized,
                "Authorization",
                "a bearer token is required: Authorization: Bearer <token>",
            )
        })?;
        if let Some(caller) = self.0.keys.get(&digest(token)) {
            return Ok(caller.clone());
        }
        match &self.0.jwt {
            Some(jwt) if token.matches('.').count() == 2 => jwt.verify(token),
            _ => Err(ApiError::field(ErrorCode::Unauthorized, "Authorization", "the bearer token is not valid")),
        }
    }
}

impl Jwt {
    fn new(settings: &AuthSettings) -> Result<Option<Jwt>, String> {
        let secret = match &settings.jwt_secret {
            Some(s) if s.len() < 32 => return Err("--jwt-secret must be at least 32 bytes".into()),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let mut public = HashMap::new();
        if let Some(path) = &settings.jwt_jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--jwt-jwks-file {}: {e}", path.display()))?;
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_str(&text).map_err(|e| format!("--jwt-jwks-file {}: {e}", path.display()))?;
            for jwk in &set.keys {
                let kid = jwk
                    .common
                    .key_id
                    .clone()
                    .ok_or_else(|| format!("--jwt-jwks-file {}: every key needs a \"kid\"", path.display()))?;
                let algorithm =
                    jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()).ok_or_else(
                        || format!("--jwt-jwks-file {}: key {kid:?} needs a signing \"alg\"", path.display()),
                    )?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("--jwt-jwks-file key {kid:?}: {e}"))?;
                public.insert(kid, (key, algorithm));
            }
            if public.is_empty() {
                return Err(format!("--jwt-jwks-file {}: no keys", path.display()));
            }
        }
        if secret.is_none() && public.is_empty() {
            return Ok(None);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 30;
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        match &settings.jwt_audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Jwt { secret, public, validation }))
    }

    fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = |why: String| ApiError::field(ErrorCode::Unauthorized, "Authorization", why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("the JWT is malformed: {e}")))?;
        let (key, algorithm) = match (&header.kid, header.alg) {
            (Some(kid), _) if !self.public.is_empty() => {
                let (key, algorithm) =
                    self.public.get(kid).ok_or_else(|| invalid(format!("the JWT's key {kid:?} is not configured")))?;
                (key, *algorithm)
            }
            (_, Algorithm::HS256) if self.secret.is_some() => {
                (self.secret.as_ref().expect("checked"), Algorithm::HS256)
            }
            _ => return Err(invalid(format!("a JWT signed with {:?} is not accepted here", header.alg))),
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| invalid(format!("the JWT is not valid: {e}")))?
            .claims;
        let role =
            claims.role.iter().chain(claims.roles.iter()).filter_map(|r| Role::parse(r)).max().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Forbidden,
                    "the JWT carries no role: add a \"role\" claim (viewer, operator or admin)",
                )
            })?;
        Ok(Caller::with_jwt(claims.sub, role))
    }
}

/// The token of a request: the `Authorization: Bearer` header, or, for the WebSocket feed only
/// (browsers cannot set headers on a WebSocket), the `token` query parameter.
fn bearer(request: &Request) -> Result<Option<String>, ApiError> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default();
        return match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Some(token.trim().to_string()))
            }
            _ => Err(ApiError::field(
                ErrorCode::Unauthorized,
                "Authorization",
                "use the Bearer scheme: Authorization: Bearer <token>",
            )),
        };
    }
    if request.uri().path() == super::ws::PATH {
        let pairs = super::extract::query_pairs(request.uri().query())?;
        return Ok(pairs.into_iter().rev().find(|(k, _)| k == "token").map(|(_, v)| v));
    }
    Ok(None)
}

/// Middleware on every route: authenticates the caller and checks the route's role.
pub async fn require_role(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let Some(needed) = path.as_deref().and_then(|p| required_role(request.method(), p)) else {
        return next.run(request).await;
    };
    if auth.metrics_public() && path.as_deref() == Some(METRICS_PATH) {
        return next.run(request).await;
    }
    let caller = match bearer(&request).and_then(|token| auth.authenticate(token.as_deref())) {
        Ok(caller) => caller,
        Err(e) => return challenge(e),
    };
    if caller.role < needed {
        tracing::info!(caller = %caller.name, role = caller.role.as_str(), needed = needed.as_str(), "request refused: role too low");
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} {} needs the {} role; {:?} has {}",
                request.method(),
                path.unwrap_or_default(),
                needed.as_str(),
                caller.name,
                caller.role.as_str()
            ),
        )
        .into_response();
    }
    tracing::Span::current().record("caller", caller.name.as_str());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// A 401 says how to authenticate (RFC 6750).
fn challenge(error: ApiError) -> Response {
    let unauthorized = error.0.code == ErrorCode::Unauthorized;
    let mut response = error.into_response();
    if unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"orchestrator\""));
    }
    response
}

/// `GET /api/v1/auth/whoami`: the caller's name and role, so a client can show what it may do.
#[utoipa::path(
    get,
    path = "/auth/whoami",
    operation_id = "whoami",
    tag = super::openapi::tags::SYSTEM,
    responses((status = 200, description = "The caller: the token's name and role", body = Caller))
)]
pub async fn whoami(caller: Option<axum::Extension<Caller>>) -> axum::Json<Caller> {
    axum::Json(caller.map_or_else(Caller::anonymous, |c| c.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_method_and_the_route() {
        assert_eq!(required_role(&Method::GET, "/api/v1/services"), Some(Role::Viewer));
        assert_eq!(required_role(&Method::POST, "/api/v1/services"), Some(Role::Operator));
        assert_eq!(required_role(&Method::PUT, "/api/v1/stack"), Some(Role::Admin));
        assert_eq!(required_role(&Method::DELETE, "/api/v1/stack"), Some(Role::Admin));
        assert_eq!(required_role(&Method::POST, "/api/v1/stack/versions/{version}/rollback"), Some(Role::Admin));
        assert_eq!(required_role(&Method::GET, "/api/v1/stack/diff"), Some(Role::Viewer));
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(required_role(&Method::PUT, "/api/v1/priorities/{service}"), Some(Role::Engine));
        assert_eq!(required_role(&Method::DELETE, "/api/v1/priorities/{service}"), Some(Role::Engine));
        assert_eq!(required_role(&Method::PATCH, "/api/v1/priorities/{service}/policy"), Some(Role::Operator));
        assert_eq!(required_role(&Method::POST, "/api/v1/priority-guard/release"), Some(Role::Operator));
        assert!(Role::Viewer < Role::Engine && Role::Engine < Role::Operator);
        assert_eq!(required_role(&Method::GET, "/api/v1/openapi.json"), None);
    }

    #[test]
    fn api_keys_parse_and_name_their_fault() {
        let key: ApiKey = "operator:deploy:0123456789abcdef".parse().unwrap();
        assert_eq!((key.role, key.name.as_str()), (Role::Operator, "deploy"));
        assert!("boss:x:0123456789abcdef".parse::<ApiKey>().unwrap_err().contains("unknown role"));
        assert!("viewer:x:short".parse::<ApiKey>().unwrap_err().contains("at least 16"));
        assert!("viewer-only".parse::<ApiKey>().unwrap_err().contains("ROLE:NAME:SECRET"));
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            api_keys: vec!["viewer:v:0123456789abcdef".parse().unwrap()],
            api_keys_file: None,
            jwt_secret: Some("s".repeat(32)),
            jwt_jwks_file: None,
            jwt_issuer: Some("issuer".into()),
            jwt_audience: None,
            metrics_public: false,
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let shown = format!("{:?}", settings());
        assert!(!shown.contains("0123456789abcdef") && !shown.contains(&"s".repeat(32)), "{shown}");
        assert!(shown.contains("\"v\"") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn keys_and_jwts_authenticate() {
        let auth = Authenticator::new(&settings()).unwrap();
        assert_eq!(auth.authenticate(Some("0123456789abcdef")).unwrap().role, Role::Viewer);
        assert_eq!(auth.authenticate(Some("nope")).unwrap_err().0.code, ErrorCode::Unauthorized);
        assert_eq!(auth.authenticate(None).unwrap_err().0.code, ErrorCode::Unauthorized);
        let exp = chrono::Utc::now().timestamp() + 60;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret("s".repeat(32).as_bytes()),
            )
            .unwrap()
        };
        let good = sign(serde_json::json!({"sub": "ci", "roles": ["viewer", "operator"], "exp": exp, "iss": "issuer"}));
        assert_eq!(auth.authenticate(Some(&good)).unwrap(), Caller::with_jwt(Some("ci".into()), Role::Operator));
        assert_eq!(auth.authenticate(Some(&good)).unwrap().principal, "jwt:ci");
        let wrong_issuer = sign(serde_json::json!({"sub": "ci", "role": "admin", "exp": exp, "iss": "other"}));
        assert_eq!(auth.authenticate(Some(&wrong_issuer)).unwrap_err().0.code, ErrorCode::Unauthorized);
        let expired = sign(serde_json::json!({"sub": "ci", "role": "admin", "exp": exp - 3600, "iss": "issuer"}));
        assert_eq!(auth.authenticate(Some(&expired)).unwrap_err().0.code, ErrorCode::Unauthorized);
        let no_role = sign(serde_json::json!({"sub": "ci", "exp": exp, "iss": "issuer"}));
        assert_eq!(auth.authenticate(Some(&no_role)).unwrap_err().0.code, ErrorCode::Forbidden);
    }

    #[test]
    fn without_settings_everyone_is_admin() {
        let auth = Authenticator::disabled();
        assert!(!auth.enabled());
        assert_eq!(auth.authenticate(None).unwrap().role, Role::Admin);
    }
}
