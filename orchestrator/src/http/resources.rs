//! Resources over HTTP: `GET /api/v1/nodes` and `GET /api/v1/nodes/{name}`, the node inventory
//! (docs/resources.md) from the leader's snapshot (at most a second old); and the quotas,
//! `GET /api/v1/quotas`, `PUT` and `DELETE /api/v1/quotas/{name}` (admins).

use axum::Json;
use axum::extract::{Path, State};
use orch_protocol::registry::validate_name;
use orch_protocol::resources::{NodeInfo, NodeList, QuotaList, QuotaRequest, QuotaView, Resources};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, Internal, NotFound, tags};
use super::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(quotas))
        .routes(routes!(set_quota, clear_quota))
}

/// Largest quota in either dimension: what no group can reach, but a number PostgreSQL keeps.
const QUOTA_MAX: u64 = i64::MAX as u64;

/// Every quota with what the applied stack's services of its group ask for now
#[utoipa::path(get, path = "/quotas", operation_id = "list_quotas", tag = tags::RESOURCES,
    responses((status = 200, description = "The quotas, by name", body = QuotaList), Internal))]
async fn quotas(State(state): State<AppState>) -> Result<Json<QuotaList>, ApiError> {
    let stored = crate::storage::quotas::all(&state.pool).await?;
    let view = state.controller.view().await.ok().flatten().map(|(view, _)| view);
    let used = crate::resources::quota::usage_of(
        view.iter().flat_map(|v| v.services.iter()).map(|s| (s.group.as_deref(), s.resources)),
    );
    let quotas = stored
        .into_iter()
        .map(|q| QuotaView {
            used: used.get(&q.name).copied().unwrap_or_default(),
            quota: Resources::new(q.cpu as u64, q.memory as u64),
            name: q.name,
            set_by: q.set_by,
            set_at: q.set_at,
        })
        .collect();
    Ok(Json(QuotaList { quotas }))
}

/// Sets a group's quota (admins)
///
/// Manifests applied from then on are checked against it; what already runs is left as it is.
#[utoipa::path(put, path = "/quotas/{name}", operation_id = "set_quota", tag = tags::RESOURCES,
    params(("name" = String, Path, description = "The group's name, as services' `group` names it")),
    request_body(content = QuotaRequest, content_type = "application/json"),
    responses((status = 200, description = "Set", body = QuotaView), BadRequest, Internal))]
async fn set_quota(
    State(state): State<AppState>,
    caller: super::auth::Caller,
    Path(name): Path<String>,
    super::extract::Json(request): super::extract::Json<QuotaRequest>,
) -> Result<Json<QuotaView>, ApiError> {
    validate_name("name", &name)?;
    for (field, value) in [("cpu", request.cpu), ("memory", request.memory)] {
        if value > QUOTA_MAX {
            return Err(orch_protocol::ProtocolError::invalid(field, format!("at most {QUOTA_MAX}")).into());
        }
    }
    let q = crate::storage::quotas::set(&state.pool, &name, request.cpu, request.memory, &caller.principal).await?;
    tracing::info!(group = %name, cpu = request.cpu, memory = request.memory, by = %caller.principal, "quota set");
    Ok(Json(QuotaView {
        name: q.name,
        quota: Resources::new(q.cpu as u64, q.memory as u64),
        used: Resources::ZERO,
        set_by: q.set_by,
        set_at: q.set_at,
    }))
}

/// Removes a group's quota (admins)
#[utoipa::path(delete, path = "/quotas/{name}", operation_id = "clear_quota", tag = tags::RESOURCES,
    params(("name" = String, Path, description = "The group's name")),
    responses((status = 204, description = "Removed"), BadRequest, NotFound, Internal))]
async fn clear_quota(
    State(state): State<AppState>,
    caller: super::auth::Caller,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    validate_name("name", &name)?;
    if !crate::storage::quotas::clear(&state.pool, &name).await? {
        return Err(orch_protocol::ProtocolError::field(
            orch_protocol::ErrorCode::NotFound,
            "name",
            format!("no quota named {name:?}"),
        )
        .into());
    }
    tracing::info!(group = %name, by = %caller.principal, "quota removed");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Every node whose agent ever reported: capacity, reservation, labels, what runs there, measured
/// use, and whether it is heard from
#[utoipa::path(get, path = "/nodes", operation_id = "list_nodes", tag = tags::RESOURCES,
    responses((status = 200, description = "The nodes, by name", body = NodeList), Internal))]
async fn list(State(state): State<AppState>) -> Json<NodeList> {
    Json(NodeList { nodes: state.nodes.list().to_vec() })
}

/// One node
#[utoipa::path(get, path = "/nodes/{name}", operation_id = "get_node", tag = tags::RESOURCES,
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, description = "The node", body = NodeInfo), BadRequest, NotFound, Internal))]
async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<NodeInfo>, ApiError> {
    validate_name("name", &name)?;
    Ok(Json(state.nodes.get(&name).ok_or_else(|| crate::errors::no_node(&name))?))
}
