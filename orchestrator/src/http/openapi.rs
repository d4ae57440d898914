//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/v1/openapi.json`.
//!
//! Each handler carries `#[utoipa::path]` and each resource module registers its handlers with
//! `routes!`, so the router and the document come from the same registrations and cannot drift
//! apart. This module holds what the whole document shares: its info, the `bearer` security
//! scheme, the tags, the error answers, and [`apply_roles`], which marks what each operation needs.
//!
//! A copy of the served document is committed as `docs/openapi.json`, and the dashboard's wire
//! types are generated from it: a change here or in a documented handler or type makes
//! `tests/openapi.rs` fail until the copy is regenerated (`ORCH_BLESS=1`, as its message says).

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use orch_protocol::error::ErrorReply;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// Tags group the operations by resource; every operation has one of these.
pub mod tags {
    pub const SERVICES: &str = "services";
    pub const DISCOVERY: &str = "discovery";
    pub const HEALTH: &str = "health";
    pub const STACK: &str = "stack";
    pub const PRIORITIES: &str = "priorities";
    pub const SYSTEM: &str = "system";
    pub const WORKFLOWS: &str = "workflows";
    pub const RESOURCES: &str = "resources";
    pub const CONFIG: &str = "config";
}

/// The name of the security scheme that [`apply_roles`] asks for.
pub const SECURITY_SCHEME: &str = "bearer";

/// The extension that names the role an operation needs.
pub const ROLE_EXTENSION: &str = "x-required-role";

const DESCRIPTION: &str = "Event-driven service orchestrator: a service registry with leases and \
health checks, discovery, managed services started in dependency order, and service priorities. \
Every error is `{\"error\": {\"code\", \"message\", \"field\"}}`; clients branch on `code`. \
docs/protocol.md is the contract this document is generated for.";

#[derive(OpenApi)]
#[openapi(
    info(title = "orchestrator", version = env!("CARGO_PKG_VERSION"), description = DESCRIPTION),
    components(schemas(ErrorReply)),
    modifiers(&BearerScheme),
    tags(
        (name = tags::SERVICES, description = "Instances of services: register, list, read, deregister, heartbeat; \
            maintenance of a whole service."),
        (name = tags::DISCOVERY, description = "Passing instances of a service, and one picked by a strategy."),
        (name = tags::HEALTH, description = "System and service health, the checks of an instance, TTL updates, \
            maintenance of an instance, and the history of transitions."),
        (name = tags::STACK, description = "Managed services: apply a manifest, see their states, the dependency \
            graph and the start-up profile, restart one, read its output, take the stack down."),
        (name = tags::PRIORITIES, description = "Service priorities: engine adjustments, operator policy and the \
            mass-change guard."),
        (name = tags::SYSTEM, description = "The orchestrator itself: liveness, readiness, metrics, the group of \
            replicas and this document."),
        (name = tags::WORKFLOWS, description = "Workflow definitions with their versions, and their executions: \
            start, follow, cancel."),
        (name = tags::RESOURCES, description = "Nodes: their capacity, reservation, labels, what runs there and \
            whether their agent is heard from."),
        (name = tags::CONFIG, description = "The config store: keys with JSON values, compare-and-set on the \
            revision, history and revert, JSON Schemas per key prefix (protocol.md §18)."),
    )
)]
struct ApiDoc;

/// Adds the `bearer` scheme that [`apply_roles`] refers to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT or API key")
            .description(Some(
                "`Authorization: Bearer <token>`. Each operation names the role it needs in `x-required-role` \
                 (viewer, operator or admin).",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The base document: info, security scheme, tags and the error schema. Resource routers add
/// their paths to it.
pub(super) fn base() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// The route of the document itself, nested under `/api/v1`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

/// The document as served: serialized once when the app is built.
#[derive(Clone)]
pub(super) struct Document(Bytes);

impl Document {
    pub(super) fn new(openapi: &utoipa::openapi::OpenApi) -> Document {
        Document(openapi.to_json().expect("the OpenAPI document serializes").into())
    }
}

/// This document: the OpenAPI 3.1 description of every route of the API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = tags::SYSTEM,
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
    )
)]
async fn document(Extension(Document(json)): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// Sets what each operation of `doc` needs: `role_of(METHOD, path template)` (method upper-case,
/// path as in the document, e.g. `/api/v1/services/{id}`) gives the role, and the operation then
/// asks for the `bearer` scheme and names the role in `x-required-role`; `None` makes it public
/// (an empty `security`).
pub fn apply_roles(doc: &mut utoipa::openapi::OpenApi, role_of: impl Fn(&str, &str) -> Option<&'static str>) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("OPTIONS", &mut item.options),
            ("HEAD", &mut item.head),
            ("PATCH", &mut item.patch),
            ("TRACE", &mut item.trace),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let extensions = operation.extensions.get_or_insert_with(Default::default);
            match role_of(method, path) {
                Some(role) => {
                    operation.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, Vec::<String>::new())]);
                    extensions.insert(ROLE_EXTENSION.to_string(), role.into());
                    let responses = &mut operation.responses.responses;
                    responses.entry("401".into()).or_insert_with(|| {
                        RefOr::T(error_response(401, "No bearer token, or one that is not valid (`unauthorized`)"))
                    });
                    responses.entry("403".into()).or_insert_with(|| {
                        RefOr::T(error_response(
                            403,
                            "The token's role is below the one this operation needs (`forbidden`)",
                        ))
                    });
                }
                None => {
                    operation.security = Some(Vec::new());
                    extensions.remove(ROLE_EXTENSION);
                }
            }
            if extensions.is_empty() {
                operation.extensions = None;
            }
        }
    }
}

/// An error answer: the error object under one status. `503` adds its `Retry-After`.
fn error_response(status: u16, description: &str) -> Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorReply::name()))).build();
    let response = ResponseBuilder::new().description(description).content("application/json", content);
    let response = if status == 503 {
        let seconds =
            HeaderBuilder::new().schema(u32::schema()).description(Some("Seconds to wait before retrying (1)")).build();
        response.header("Retry-After", seconds)
    } else {
        response
    };
    response.build()
}

/// Error answers for `responses(...)` of `#[utoipa::path]`, one type per status, so each route lists
/// the errors it can give without repeating their shape.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_string(), error_response($status, $description).into())])
            }
        }
    )*};
}

error_responses! {
    /// A malformed or invalid request.
    BadRequest = 400, "`malformed_payload` (not JSON, a wrong type, an unknown or missing field, a wrong \
        `Content-Type`) or `validation_failed` (a value breaks a rule, a bad path or query parameter); \
        `field` names the culprit";
    /// The target does not exist.
    NotFound = 404, "`not_found`: the target does not exist";
    /// The request conflicts with the current state.
    Conflict = 409, "`conflict`: the request conflicts with the current state, or an `Idempotency-Key` was \
        used for another request";
    /// The body is over the limit.
    PayloadTooLarge = 413, "`payload_too_large`: the body is larger than the limit";
    /// A failure inside the orchestrator.
    Internal = 500, "`internal`: a failure inside the orchestrator; details are in its log";
    /// A dependency is unavailable.
    Unavailable = 503, "`unavailable`: PostgreSQL, NATS or an agent is unavailable, or the orchestrator is \
        shutting down; retrying is safe";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn document() -> serde_json::Value {
        let (_, doc) = super::super::api_routes(1024).split_for_parts();
        serde_json::from_str(&doc.to_json().unwrap()).unwrap()
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} is not in the document");
        }
    }

    #[test]
    fn operations_have_a_declared_tag_and_a_unique_id() {
        let doc = document();
        let declared: BTreeSet<&str> =
            doc["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let tags = operation["tags"].as_array().unwrap_or_else(|| panic!("{method} {path} has no tag"));
                assert_eq!(tags.len(), 1, "{method} {path}: {tags:?}");
                assert!(declared.contains(tags[0].as_str().unwrap()), "{method} {path}: undeclared tag {}", tags[0]);
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
    }

    #[test]
    fn roles_mark_each_operation() {
        let (_, mut doc) = super::super::api_routes(1024).split_for_parts();
        apply_roles(&mut doc, |method, path| match (method, path) {
            ("GET", "/api/v1/openapi.json") => None,
            ("DELETE", "/api/v1/stack") => Some("admin"),
            ("GET", _) => Some("viewer"),
            _ => Some("operator"),
        });
        let doc: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        let public = &doc["paths"]["/api/v1/openapi.json"]["get"];
        assert_eq!(public["security"], serde_json::json!([]));
        assert!(public.get(ROLE_EXTENSION).is_none());
        let admin = &doc["paths"]["/api/v1/stack"]["delete"];
        assert_eq!(admin["security"], serde_json::json!([{ "bearer": [] }]));
        assert_eq!(admin[ROLE_EXTENSION], "admin");
        assert_eq!(doc["paths"]["/api/v1/services"]["get"][ROLE_EXTENSION], "viewer");
        assert_eq!(doc["paths"]["/api/v1/services"]["post"][ROLE_EXTENSION], "operator");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
