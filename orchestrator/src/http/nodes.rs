//! `GET /api/v1/nodes` and `GET /api/v1/nodes/{name}`: the node inventory (docs/resources.md),
//! from the leader's snapshot (at most a second old).

use axum::Json;
use axum::extract::{Path, State};
use orch_protocol::registry::validate_name;
use orch_protocol::resources::{NodeInfo, NodeList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{BadRequest, Internal, NotFound, tags};
use super::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get_one))
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
