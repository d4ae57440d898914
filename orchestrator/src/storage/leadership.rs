//! The leadership lease in PostgreSQL (`leadership`, one row): claimed and renewed on the
//! database's clock. The fence of a leader's writes is in the database itself (migration `fence`:
//! a trigger on every table checks the lease its connection names, `DatabaseSettings::fence`).

use chrono::{DateTime, Utc};
use orch_protocol::Subjects;
use orch_protocol::events::{self, EventKind, LeaderElectedData, LeaderLostData, Succession};
use orch_protocol::principal::ORCHESTRATOR;
use sqlx::PgPool;

use super::{Result, StorageError};

/// Who holds the lease, and until when (PostgreSQL's clock).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Holder {
    pub holder: String,
    pub term: i64,
    pub since: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The lease as read without a lock, and whether it runs still (on the database's clock).
type Seen = (String, i64, DateTime<Utc>, DateTime<Utc>, bool);

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// `me` holds the lease now (renewed, or taken with a new term) until its `expires_at`.
    Claimed(Holder),
    /// Nothing changed: the lease is held as shown. It may even name `me` with a term this
    /// claim did not know (an earlier process of the same name): that is not a lease held.
    HeldBy(Holder),
}

/// Claims the lease for `me` for `ttl`, or renews it: renewed when `me` holds `term` and it has
/// not expired; taken with the next term when it has expired (or was never held), or at once
/// when it is still held by `gone` (holder and term whose database sessions are known to be gone:
/// its writes are fenced by the new term anyway). Several standbys may see the holder gone at
/// once: the first takes the lease, and the others, finding another holder or term, leave it. A new term is committed with its `leader_elected` event (and the `leader_lost`
/// of the term it ends) in the outbox, so the group's history is on the events stream.
pub async fn claim(
    pool: &PgPool,
    subjects: &Subjects,
    me: &str,
    term: Option<i64>,
    ttl: std::time::Duration,
    gone: Option<(&str, i64)>,
) -> Result<Claim> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    // Read first, without a lock: a standby asks every fraction of a second, and the upsert below
    // locks the row, which would queue behind (and hold up) every fenced write of the leader.
    let seen: Option<Seen> =
        sqlx::query_as("SELECT holder, term, since, expires_at, expires_at > now() FROM leadership")
            .fetch_optional(pool)
            .await?;
    if let Some((holder, held_term, since, expires_at, live)) = &seen {
        let renewal = holder == me && term == Some(*held_term);
        let forced = gone.is_some_and(|(h, t)| h == holder && t == *held_term);
        if *live && !renewal && !forced {
            return Ok(Claim::HeldBy(Holder {
                holder: holder.clone(),
                term: *held_term,
                since: *since,
                expires_at: *expires_at,
            }));
        }
    }
    let mut tx = pool.begin().await?;
    let claimed: Option<Holder> = sqlx::query_as(
        "INSERT INTO leadership AS l (singleton, holder, term, since, expires_at)
         VALUES (true, $1, 1, now(), now() + make_interval(secs => $3::double precision / 1000))
         ON CONFLICT (singleton) DO UPDATE SET
             holder = EXCLUDED.holder,
             term = CASE WHEN l.holder = $1 AND l.term = $2 AND l.expires_at > now() THEN l.term ELSE l.term + 1 END,
             since = CASE WHEN l.holder = $1 AND l.term = $2 AND l.expires_at > now() THEN l.since ELSE now() END,
             expires_at = EXCLUDED.expires_at
         WHERE (l.holder = $1 AND l.term = $2 AND l.expires_at > now()) OR l.expires_at <= now()
            OR (l.holder = $4 AND l.term = $5)
         RETURNING l.holder, l.term, l.since, l.expires_at",
    )
    .bind(me)
    .bind(term.unwrap_or(-1))
    .bind(ttl_ms)
    .bind(gone.map(|(holder, _)| holder))
    .bind(gone.map_or(-1, |(_, term)| term))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(new) = &claimed
        && term != Some(new.term)
    {
        // The term before is the one just read, unless another claim came between (then who
        // held it is not known here, and no `leader_lost` is made up for it).
        let previous = seen
            .as_ref()
            .filter(|(_, held, ..)| *held == new.term - 1)
            .map(|(holder, held, .., live)| (holder, *held, *live));
        let reason = match previous {
            Some((.., true)) => Succession::HolderGone,
            Some(_) => Succession::LeaseEnded,
            None if new.term == 1 => Succession::First,
            None => Succession::LeaseEnded,
        };
        let mut rows = Vec::new();
        if let Some((holder, held, _)) = previous {
            let lost = LeaderLostData {
                replica: holder.clone(),
                term: held,
                successor: me.to_string(),
                successor_term: new.term,
                reason,
            };
            rows.push(
                events::encode(subjects, EventKind::LeaderLost, holder, holder, ORCHESTRATOR, new.since, &lost).into(),
            );
        }
        let elected = LeaderElectedData {
            replica: me.to_string(),
            term: new.term,
            since: new.since,
            previous: previous.map(|(holder, ..)| holder.clone()),
            reason,
        };
        rows.push(events::encode(subjects, EventKind::LeaderElected, me, me, ORCHESTRATOR, new.since, &elected).into());
        super::outbox::insert(&mut tx, super::outbox::shard::CLUSTER, &rows).await?;
    }
    tx.commit().await?;
    match claimed {
        Some(holder) => Ok(Claim::Claimed(holder)),
        None => current(pool).await?.map(Claim::HeldBy).ok_or_else(|| {
            StorageError::Sqlx(sqlx::Error::Protocol("the leadership row vanished while it was claimed".into()))
        }),
    }
}

/// The lease as it is (`None` before any replica claimed it).
pub async fn current(pool: &PgPool) -> Result<Option<Holder>> {
    Ok(sqlx::query_as("SELECT holder, term, since, expires_at FROM leadership").fetch_optional(pool).await?)
}

/// Gives the lease up at once (a leader stopping), so a standby need not wait for it to expire.
pub async fn release(pool: &PgPool, me: &str, term: i64) -> Result<()> {
    sqlx::query("UPDATE leadership SET expires_at = now() WHERE holder = $1 AND term = $2 AND expires_at > now()")
        .bind(me)
        .bind(term)
        .execute(pool)
        .await?;
    Ok(())
}

/// A replica of the group as it last said (`replicas`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Replica {
    pub name: String,
    /// Where it answers HTTP.
    pub http_url: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Its last refresh.
    pub seen_at: DateTime<Utc>,
    /// Seconds since `seen_at` on PostgreSQL's clock.
    pub silent_for: f64,
}

/// Records (or refreshes) `name` as a replica answering HTTP at `http_url`.
pub async fn announce(
    pool: &PgPool,
    name: &str,
    http_url: &str,
    version: &str,
    started_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO replicas (name, http_url, version, started_at, seen_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (name) DO UPDATE SET http_url = EXCLUDED.http_url, version = EXCLUDED.version,
             started_at = EXCLUDED.started_at, seen_at = now()",
    )
    .bind(name)
    .bind(http_url)
    .bind(version)
    .bind(started_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every replica that ever announced itself, by name.
pub async fn replicas(pool: &PgPool) -> Result<Vec<Replica>> {
    Ok(sqlx::query_as(
        "SELECT name, http_url, version, started_at, seen_at,
                EXTRACT(EPOCH FROM now() - seen_at)::float8 AS silent_for
         FROM replicas ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Where the leader answers HTTP, when a live lease names a replica that announced itself.
pub async fn leader_url(pool: &PgPool) -> Result<Option<(String, i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT l.holder, l.term, r.http_url FROM leadership l JOIN replicas r ON r.name = l.holder
         WHERE l.expires_at > now()",
    )
    .fetch_optional(pool)
    .await?)
}

/// The lease and whether it runs still (`None` before any replica claimed it).
pub async fn current_with_liveness(pool: &PgPool) -> Result<Option<(Holder, bool)>> {
    let row: Option<Seen> =
        sqlx::query_as("SELECT holder, term, since, expires_at, expires_at > now() FROM leadership")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(holder, term, since, expires_at, live)| (Holder { holder, term, since, expires_at }, live)))
}
