//! What `GET /api/v1/cluster` and `orch.req.cluster.status` answer: the replicas of the group,
//! which one leads, in which term and since when. Every replica answers it from PostgreSQL (where
//! the lease and the replicas' rows are), so a standby answers it while the leader is gone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage::{self, leadership};

/// How often a replica refreshes its row.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// A replica silent this long is shown `gone`.
pub const GONE_AFTER: Duration = Duration::from_secs(5);

/// The group as PostgreSQL has it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterView {
    /// `replicated` when orchestrators run as replicas (`serve --replica`), `single` for one
    /// orchestrator alone (then `leader` and `replicas` are empty).
    pub mode: Mode,
    /// The replica that answered (absent for one orchestrator alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The replica that holds the lease, while it runs.
    pub leader: Option<LeaderView>,
    /// Every replica that announced itself, by name.
    pub replicas: Vec<ReplicaView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Single,
    Replicated,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaderView {
    pub replica: String,
    /// Grows by one with each election; writes under an older term are refused.
    pub term: i64,
    /// When this term began.
    pub since: DateTime<Utc>,
    /// When the lease runs out unless renewed (the leader renews it every fifth of its length).
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplicaView {
    pub name: String,
    /// Where it answers HTTP (a standby forwards to the leader's).
    pub http_url: String,
    /// The orchestrator's version it runs.
    pub version: String,
    pub role: ReplicaRole,
    pub started_at: DateTime<Utc>,
    /// Its last sign of life.
    pub seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    /// Holds the lease and does the orchestrator's work.
    Leader,
    /// Runs, ready to take over; forwards what it does not answer itself to the leader.
    Standby,
    /// Has not refreshed its row for a while (stopped, or cut off from PostgreSQL).
    Gone,
}

impl ReplicaRole {
    pub const ALL: [ReplicaRole; 3] = [ReplicaRole::Leader, ReplicaRole::Standby, ReplicaRole::Gone];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaRole::Leader => "leader",
            ReplicaRole::Standby => "standby",
            ReplicaRole::Gone => "gone",
        }
    }
}

/// The view from the lease and the replicas' rows (pure).
pub fn assemble(
    me: Option<&str>,
    lease: Option<(leadership::Holder, bool)>,
    rows: Vec<leadership::Replica>,
) -> ClusterView {
    let leader = lease.filter(|(_, live)| *live).map(|(h, _)| LeaderView {
        replica: h.holder,
        term: h.term,
        since: h.since,
        expires_at: h.expires_at,
    });
    let replicas = rows
        .into_iter()
        .map(|r| {
            let role = if leader.as_ref().is_some_and(|l| l.replica == r.name) {
                ReplicaRole::Leader
            } else if r.silent_for > GONE_AFTER.as_secs_f64() {
                ReplicaRole::Gone
            } else {
                ReplicaRole::Standby
            };
            ReplicaView {
                name: r.name,
                http_url: r.http_url,
                version: r.version,
                role,
                started_at: r.started_at,
                seen_at: r.seen_at,
            }
        })
        .collect();
    let mode = if me.is_some() { Mode::Replicated } else { Mode::Single };
    ClusterView { mode, answered_by: me.map(str::to_string), leader, replicas }
}

/// Reads the view (`me`: the replica answering, `None` for one orchestrator alone).
pub async fn load(pool: &sqlx::PgPool, me: Option<&str>) -> storage::Result<ClusterView> {
    let lease = leadership::current_with_liveness(pool).await?;
    let rows = leadership::replicas(pool).await?;
    Ok(assemble(me, lease, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, silent_for: f64) -> leadership::Replica {
        leadership::Replica {
            name: name.into(),
            http_url: format!("http://{name}:8080"),
            version: "1".into(),
            started_at: Utc::now(),
            seen_at: Utc::now(),
            silent_for,
        }
    }

    fn holder(name: &str, term: i64) -> leadership::Holder {
        leadership::Holder { holder: name.into(), term, since: Utc::now(), expires_at: Utc::now() }
    }

    #[test]
    fn the_holder_of_a_live_lease_leads_silent_replicas_are_gone_the_others_stand_by() {
        let view =
            assemble(Some("b"), Some((holder("a", 3), true)), vec![row("a", 0.2), row("b", 0.5), row("c", 60.0)]);
        assert_eq!(view.mode, Mode::Replicated);
        assert_eq!(view.leader.as_ref().map(|l| (l.replica.as_str(), l.term)), Some(("a", 3)));
        let roles: Vec<_> = view.replicas.iter().map(|r| (r.name.as_str(), r.role)).collect();
        assert_eq!(roles, [("a", ReplicaRole::Leader), ("b", ReplicaRole::Standby), ("c", ReplicaRole::Gone)]);
    }

    #[test]
    fn an_expired_lease_names_no_leader() {
        let view = assemble(Some("b"), Some((holder("a", 3), false)), vec![row("a", 9.0), row("b", 0.1)]);
        assert!(view.leader.is_none());
        assert_eq!(view.replicas[0].role, ReplicaRole::Gone);
        assert_eq!(view.replicas[1].role, ReplicaRole::Standby);
    }

    #[test]
    fn one_orchestrator_alone_is_single() {
        let view = assemble(None, None, vec![]);
        assert_eq!(view.mode, Mode::Single);
        assert!(view.leader.is_none() && view.replicas.is_empty() && view.answered_by.is_none());
    }
}
