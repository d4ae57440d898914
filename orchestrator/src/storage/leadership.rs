//! The leadership lease in PostgreSQL (`leadership`, one row): claimed and renewed on the
//! database's clock. The fence of a leader's writes is in the database itself (migration `fence`:
//! a trigger on every table checks the lease its connection names, `DatabaseSettings::fence`).

use chrono::{DateTime, Utc};
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
/// not expired; taken with the next term when it has expired (or was never held), or at once with
/// `force` (the holder's database sessions are known to be gone: its writes are fenced by the new
/// term anyway).
pub async fn claim(pool: &PgPool, me: &str, term: Option<i64>, ttl: std::time::Duration, force: bool) -> Result<Claim> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    // Read first, without a lock: a standby asks every fraction of a second, and the upsert below
    // locks the row, which would queue behind (and hold up) every fenced write of the leader.
    let seen: Option<Seen> =
        sqlx::query_as("SELECT holder, term, since, expires_at, expires_at > now() FROM leadership")
            .fetch_optional(pool)
            .await?;
    if let Some((holder, held_term, since, expires_at, live)) = seen {
        let renewal = holder == me && term == Some(held_term);
        if live && !renewal && !force {
            return Ok(Claim::HeldBy(Holder { holder, term: held_term, since, expires_at }));
        }
    }
    let claimed: Option<Holder> = sqlx::query_as(
        "INSERT INTO leadership AS l (singleton, holder, term, since, expires_at)
         VALUES (true, $1, 1, now(), now() + make_interval(secs => $3::double precision / 1000))
         ON CONFLICT (singleton) DO UPDATE SET
             holder = EXCLUDED.holder,
             term = CASE WHEN l.holder = $1 AND l.term = $2 AND l.expires_at > now() THEN l.term ELSE l.term + 1 END,
             since = CASE WHEN l.holder = $1 AND l.term = $2 AND l.expires_at > now() THEN l.since ELSE now() END,
             expires_at = EXCLUDED.expires_at
         WHERE (l.holder = $1 AND l.term = $2 AND l.expires_at > now()) OR l.expires_at <= now() OR $4
         RETURNING l.holder, l.term, l.since, l.expires_at",
    )
    .bind(me)
    .bind(term.unwrap_or(-1))
    .bind(ttl_ms)
    .bind(force)
    .fetch_optional(pool)
    .await?;
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
