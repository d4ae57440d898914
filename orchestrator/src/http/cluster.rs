//! `GET /api/v1/cluster`: the replicas of the group, the leader, its term and since when
//! ([`crate::cluster::view`]). A standby answers it too (`cluster::front`), from the same rows.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{Internal, tags};
use super::{ApiError, AppState};
use crate::cluster::view::{self, ClusterView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cluster))
}

/// The group of replicas: who leads, in which term, since when; each replica's role and address
#[utoipa::path(
    get,
    path = "/cluster",
    operation_id = "cluster",
    tag = tags::SYSTEM,
    responses((status = 200, description = "The group as PostgreSQL has it", body = ClusterView), Internal)
)]
pub(crate) async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(view::load(&state.pool, state.replica.as_deref()).await?))
}
