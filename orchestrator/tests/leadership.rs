//! The leadership lease of a replica group against a real PostgreSQL: one holder at a time, each
//! new holder with the next term, renewals by the holder only, and the fence (migration `fence`:
//! a trigger on every table checks the lease a connection names): once a successor is elected,
//! nothing the old leader writes commits; a successor waits for a transaction it had open
//! instead of overtaking it.

use std::time::Duration;

use orch_testkit::eventually;
use orchestrator::storage::leadership::{self, Claim, Holder};
use orchestrator::storage::{self, StorageError};
use sqlx::PgPool;

const TTL: Duration = Duration::from_secs(30);

async fn database() -> PgPool {
    let url = orch_testkit::fresh_database().await;
    let pool = PgPool::connect(&url).await.unwrap();
    storage::migrate(&pool).await.unwrap();
    sqlx::query("CREATE TABLE scratch (writer text, term bigint)").execute(&pool).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER orch_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON scratch
         FOR EACH STATEMENT EXECUTE FUNCTION orch_fence()",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Connections as a replica's leader makes them: naming the lease they write under.
async fn leader(pool: &PgPool, me: &str, term: i64) -> PgPool {
    let options = pool.connect_options().as_ref().clone().options([("orch.fence", format!("{me}:{term}"))]);
    PgPool::connect_with(options).await.unwrap()
}

/// The lease a claim left, and whether the claim got it.
/// `force`: from the holder as it is now, as a standby that saw its sessions gone claims.
async fn claim(pool: &PgPool, me: &str, term: Option<i64>, ttl: Duration, force: bool) -> (Holder, bool) {
    let now = if force { leadership::current(pool).await.unwrap() } else { None };
    let gone = now.as_ref().map(|h| (h.holder.as_str(), h.term));
    match leadership::claim(pool, &orch_protocol::Subjects::default(), me, term, ttl, gone).await.unwrap() {
        Claim::Claimed(holder) => (holder, true),
        Claim::HeldBy(holder) => (holder, false),
    }
}

/// A leader's write, on a connection that names its lease: the database fences it.
async fn fenced_write(pool: &PgPool, me: &str, term: i64) -> Result<(), StorageError> {
    let leader = leader(pool, me, term).await;
    sqlx::query("INSERT INTO scratch VALUES ($1, $2)").bind(me).bind(term).execute(&leader).await?;
    Ok(())
}

#[tokio::test]
async fn one_holder_at_a_time_renewed_by_it_alone_released_to_the_next() {
    let pool = database().await;
    let (a, got) = claim(&pool, "a", None, TTL, false).await;
    assert_eq!((a.holder.as_str(), a.term, got), ("a", 1, true));
    let (seen_by_b, got) = claim(&pool, "b", None, TTL, false).await;
    assert_eq!((seen_by_b, got), (a.clone(), false), "b sees a's lease and changes nothing");
    // A process named "a" that does not know the term (a restarted "a") gets nothing either.
    assert_eq!(claim(&pool, "a", None, TTL, false).await, (a.clone(), false));
    let (renewed, got) = claim(&pool, "a", Some(1), TTL, false).await;
    assert_eq!((renewed.term, renewed.since, got), (1, a.since, true));
    assert!(renewed.expires_at >= a.expires_at);
    fenced_write(&pool, "a", 1).await.unwrap();
    assert!(matches!(fenced_write(&pool, "b", 1).await, Err(e) if e.is_fenced()));

    // A leader that stops gives the lease up: the next replica takes it at once, with term 2.
    leadership::release(&pool, "a", 1).await.unwrap();
    let (b, got) = claim(&pool, "b", None, TTL, false).await;
    assert_eq!((b.holder.as_str(), b.term, got), ("b", 2, true));
    assert_eq!(claim(&pool, "a", Some(1), TTL, false).await, (b, false), "a renewing an old term gets nothing");
}

/// The leader pauses past its lease (as under SIGSTOP): a successor is elected on the database's
/// clock. Woken up, the old leader's writes are refused, its renewal finds the successor.
#[tokio::test]
async fn a_leader_paused_past_its_lease_commits_nothing_after_its_successor_is_elected() {
    let pool = database().await;
    let short = Duration::from_millis(200);
    claim(&pool, "a", None, short, false).await;
    // b tries as a standby does, until a's lease has expired.
    let b = eventually(Duration::from_secs(10), "b elected once a's lease expired", || async {
        let (seen, got) = claim(&pool, "b", None, TTL, false).await;
        got.then_some(seen)
    })
    .await;
    assert_eq!(b.term, 2);

    assert!(matches!(fenced_write(&pool, "a", 1).await, Err(e) if e.is_fenced()));
    let (renewal, got) = claim(&pool, "a", Some(1), TTL, false).await;
    assert_eq!((renewal.holder.as_str(), renewal.term, got), ("b", 2, false));
    fenced_write(&pool, "b", 2).await.unwrap();
    let writes: Vec<(String, i64)> = sqlx::query_as("SELECT writer, term FROM scratch").fetch_all(&pool).await.unwrap();
    assert_eq!(writes, [("b".to_string(), 2)]);
}

/// A successor forcing the lease (the holder's sessions looked gone) while the holder has a fenced
/// transaction open waits for it: the holder's commit comes before the new term, never after.
#[tokio::test]
async fn a_successor_waits_for_the_fenced_transaction_under_way() {
    let pool = database().await;
    claim(&pool, "a", None, TTL, false).await;
    let a = leader(&pool, "a", 1).await;
    let mut tx = a.begin().await.unwrap();
    sqlx::query("INSERT INTO scratch VALUES ('a', 1)").execute(&mut *tx).await.unwrap();

    let takeover = tokio::spawn({
        let pool = pool.clone();
        async move { claim(&pool, "b", None, TTL, true).await }
    });
    // The takeover is waiting on the lease row's lock (seen in pg_stat_activity, not guessed from
    // time).
    eventually(Duration::from_secs(10), "the takeover waiting on the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE '%INSERT INTO leadership%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (waiting == 1).then_some(())
    })
    .await;
    assert!(!takeover.is_finished());
    tx.commit().await.unwrap();
    let (b, got) = takeover.await.unwrap();
    assert_eq!((b.holder.as_str(), b.term, got), ("b", 2, true));
    assert!(matches!(fenced_write(&pool, "a", 1).await, Err(e) if e.is_fenced()));
    let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM scratch").fetch_one(&pool).await.unwrap();
    assert_eq!(writes, 1, "the write committed before the takeover, and nothing after it");
}

/// Every table but the lease's own is fenced: a table added later without the trigger fails here.
#[tokio::test]
async fn every_table_is_fenced() {
    let pool = database().await;
    let unfenced: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables t WHERE schemaname = current_schema()
           AND tablename NOT IN ('leadership', '_sqlx_migrations')
           AND NOT EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
                           WHERE c.relname = t.tablename AND g.tgname = 'orch_fence')
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(unfenced.is_empty(), "tables without the orch_fence trigger (add it in their migration): {unfenced:?}");
}

/// A connection that names a lease (a replica's leader) writes while the lease is held, and its
/// writes are refused with SQLSTATE OR001 once another replica holds a newer term.
#[tokio::test]
async fn a_connection_under_a_lost_lease_is_refused_by_every_table() {
    let pool = database().await;
    claim(&pool, "a", None, TTL, false).await;
    let leader = leader(&pool, "a", 1).await;
    sqlx::query("INSERT INTO scratch VALUES ('a', 1)").execute(&leader).await.unwrap();

    leadership::release(&pool, "a", 1).await.unwrap();
    claim(&pool, "b", None, TTL, false).await;
    let refused = sqlx::query("INSERT INTO scratch VALUES ('a', 1)").execute(&leader).await.unwrap_err();
    assert!(StorageError::from(refused).is_fenced());
    let refused = sqlx::query("DELETE FROM instances").execute(&leader).await.unwrap_err();
    assert!(StorageError::from(refused).is_fenced(), "every table");
    // An unfenced connection (one orchestrator alone, tools) is not affected.
    sqlx::query("DELETE FROM scratch").execute(&pool).await.unwrap();
}

/// Each new term is committed with its events in the outbox (shard -3): `leader_elected`, and the
/// `leader_lost` of the term it ended; a renewal writes none.
#[tokio::test]
async fn each_new_term_is_committed_with_its_elected_and_lost_events() {
    let pool = database().await;
    let events = || async {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT subject, payload FROM outbox WHERE shard = -3 ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(subject, payload)| (subject, serde_json::from_slice::<serde_json::Value>(&payload).unwrap()))
            .collect::<Vec<_>>()
    };
    claim(&pool, "a", None, TTL, false).await;
    claim(&pool, "a", Some(1), TTL, false).await;
    let first = events().await;
    assert_eq!(first.len(), 1, "the renewal made no event: {first:?}");
    assert_eq!(first[0].0, "orch.evt.cluster.a.leader_elected");
    assert_eq!(first[0].1["type"], "io.orch.cluster.leader_elected.v1");
    assert_eq!(first[0].1["data"]["term"], 1);
    assert_eq!(first[0].1["data"]["reason"], "first");

    // b forces the lease (a's sessions are gone): a's term ends, b's begins.
    claim(&pool, "b", None, TTL, true).await;
    let all = events().await;
    let subjects: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        ["orch.evt.cluster.a.leader_elected", "orch.evt.cluster.a.leader_lost", "orch.evt.cluster.b.leader_elected"]
    );
    let lost = &all[1].1["data"];
    assert_eq!((lost["replica"].as_str(), lost["term"].as_i64()), (Some("a"), Some(1)));
    assert_eq!((lost["successor"].as_str(), lost["successor_term"].as_i64()), (Some("b"), Some(2)));
    assert_eq!(lost["reason"], "holder_gone");
    let elected = &all[2].1["data"];
    assert_eq!((elected["term"].as_i64(), elected["previous"].as_str()), (Some(2), Some("a")));

    // A lease that ran out: the next term names why.
    leadership::release(&pool, "b", 2).await.unwrap();
    claim(&pool, "c", None, TTL, false).await;
    let all = events().await;
    assert_eq!(all.last().unwrap().1["data"]["reason"], "lease_ended");
    assert_eq!(all[all.len() - 2].0, "orch.evt.cluster.b.leader_lost");
}

/// Standbys that both saw the holder's sessions gone: the first takes the lease from it; the
/// second, forcing from the same holder and term, finds the lease held by the first and leaves it.
#[tokio::test]
async fn of_two_standbys_forcing_from_a_gone_holder_only_the_first_takes_the_lease() {
    let pool = database().await;
    claim(&pool, "a", None, TTL, false).await;
    let subjects = orch_protocol::Subjects::default();
    let b = leadership::claim(&pool, &subjects, "b", None, TTL, Some(("a", 1))).await.unwrap();
    assert!(matches!(&b, Claim::Claimed(h) if h.holder == "b" && h.term == 2), "{b:?}");
    let c = leadership::claim(&pool, &subjects, "c", None, TTL, Some(("a", 1))).await.unwrap();
    assert!(matches!(&c, Claim::HeldBy(h) if h.holder == "b" && h.term == 2), "c leaves b's lease: {c:?}");
}
