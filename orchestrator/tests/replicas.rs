//! Replicas on one PostgreSQL and NATS (`serve --replica NAME`): one leads and does the work, the
//! other waits. The leader is paused (SIGSTOP) past its lease: the standby is elected and takes
//! the work over; the instance that kept beating is never expired, neither by the new leader nor
//! by the old one when it wakes up (SIGCONT) with its stale view, whose writes the database
//! refuses; and the old leader steps down by itself. A leader that dies is replaced at once,
//! without waiting for its lease to run out.

mod common;

use std::time::Duration;

use common::{eventually, read_stream, registration, replica};
use orch_protocol::Subjects;
use orch_testkit::{OrchestratorProcess, ShippedUsers, TempDir};

use serde_json::Value;

/// Two replicas with a lease of `ttl`: `a`, the leader (serving), and `b`, started after it.
struct Pair {
    a: OrchestratorProcess,
    b: OrchestratorProcess,
    pool: sqlx::PgPool,
    _leftovers: common::KillServicesOf,
    dir: TempDir,
    users: ShippedUsers,
}

impl Pair {
    async fn start(ttl: &str) -> Pair {
        let users = ShippedUsers::start_with_harness(&[]);
        let database_url = orch_testkit::fresh_database().await;
        let dir = TempDir::new("orch-replicas");
        let _leftovers = common::KillServicesOf(dir.path().join("agent-logs"));
        let mut a = replica("a", &users, &database_url, &dir, ttl);
        a.wait_ready(Duration::from_secs(60));
        let b = replica("b", &users, &database_url, &dir, ttl);
        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        Pair { a, b, pool, _leftovers, dir, users }
    }
}

/// Waits until `replica` answers `/readyz` with 200 as the leader: it leads and serves.
async fn serving(replica: &OrchestratorProcess) {
    let port = replica.http_port;
    eventually(Duration::from_secs(60), "the new leader serving", || async move {
        let ready = tokio::task::spawn_blocking(move || orch_testkit::http_get(port, "/readyz")).await.unwrap();
        let (status, body) = ready.ok()?;
        (status == 200 && serde_json::from_str::<Value>(&body).ok()?["role"] == "leader").then_some(())
    })
    .await;
}

async fn holder(pool: &sqlx::PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT holder, term FROM leadership").fetch_optional(pool).await.unwrap()
}

fn signal(process: &OrchestratorProcess, signal: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(process.pid().expect("running") as i32, signal) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_its_late_writes_are_refused_and_it_steps_down() {
    let Pair { a, b, pool, dir, users, .. } = &mut Pair::start("2s").await;
    assert_eq!(holder(pool).await, Some(("a".into(), 1)));

    // An instance that keeps beating (every 300 ms, TTL 3 s), registered through the leader.
    let client = users.connect("harness").await;
    let subjects = Subjects::default();
    let reply = client.request(subjects.request("registry", "register"), registration("beater", "web", 3).into());
    let reply = reply.await.expect("the leader answers");
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap()["status"], "registered");
    let beats = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                let _ = client.publish("orch.hb.beater", "".into()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    // The leader pauses past its lease: b is elected with the next term and takes over.
    signal(a, libc::SIGSTOP);
    let term = eventually(Duration::from_secs(30), "b elected", || async {
        holder(pool).await.and_then(|(name, term)| (name == "b").then_some(term))
    })
    .await;
    assert!(term >= 2, "a new term: {term}");
    serving(b).await;
    // A request reaches the new leader (asked again while it went to the paused one).
    eventually(Duration::from_secs(30), "a registration answered by b", || async {
        let request = client.request(subjects.request("registry", "register"), registration("later", "web", 30).into());
        let reply = tokio::time::timeout(Duration::from_secs(2), request).await.ok()?.ok()?;
        (serde_json::from_slice::<Value>(&reply.payload).ok()?["status"] == "registered").then_some(())
    })
    .await;

    // a wakes up with a stale view (its lease of `beater` long overdue): it steps down by itself,
    // and nothing it tried to write on the way landed.
    signal(a, libc::SIGCONT);
    let log = dir.path().join("a.log");
    eventually(Duration::from_secs(30), "a steps down", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("stepped down").then_some(())
    })
    .await;
    assert_eq!(holder(pool).await, Some(("b".into(), term)), "b still leads, in the term it was elected for");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    for line in said.lines().filter(|l| l.contains("lease") || l.contains("stepped down")) {
        eprintln!("a: {line}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    beats.abort();
    let js = async_nats::jetstream::new(client.clone());
    let events = read_stream(&js, &subjects.events_stream(), None).await;
    let expired: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "io.orch.registry.expired.v1" && e["subject"] == "beater").collect();
    assert!(expired.is_empty(), "the instance that kept beating was expired: {expired:?}");
    let health: String =
        sqlx::query_scalar("SELECT health FROM instances WHERE id = 'beater'").fetch_one(&*pool).await.unwrap();
    assert_eq!(health, "passing");
}

/// A leader that dies (SIGKILL) is replaced without waiting for its lease to run out: its
/// standby sees that it has no session left in PostgreSQL and takes the lease over at once with
/// the next term. The lease here lasts 30 s; the takeover must come well before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_before_its_lease_runs_out() {
    let Pair { a, b, pool, dir, .. } = &mut Pair::start("30s").await;
    // b has seen a's lease (its standby claims run).
    let b_log = dir.path().join("b.log");
    eventually(Duration::from_secs(30), "b a standby", || async {
        std::fs::read_to_string(&b_log).unwrap_or_default().contains("replica started").then_some(())
    })
    .await;
    let killed_at = std::time::Instant::now();
    a.kill();
    let term = eventually(Duration::from_secs(10), "b elected before a's 30 s lease ran out", || async {
        holder(pool).await.and_then(|(name, term)| (name == "b").then_some(term))
    })
    .await;
    assert_eq!(term, 2);
    eprintln!("b elected {:?} after a was killed", killed_at.elapsed());
    serving(b).await;
}

fn http(replica: &OrchestratorProcess, method: &'static str, path: &str, body: Option<String>) -> (u16, Value) {
    let (status, text) = orch_testkit::http_request(replica.http_port, method, path, body.as_deref()).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A client may talk to any replica: a standby answers who leads (HTTP and NATS), forwards
/// writes and reads to the leader, and, when the leader dies, becomes it and takes writes
/// itself; the group's history is on the events stream (`leader_lost`, `leader_elected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_a_standby_forwards_to_the_leader_and_takes_over() {
    let Pair { a, b, users, .. } = &mut Pair::start("30s").await;
    let b_port = b.http_port;
    eventually(Duration::from_secs(60), "b a ready standby", || async move {
        let (status, body) =
            tokio::task::spawn_blocking(move || orch_testkit::http_get(b_port, "/readyz")).await.unwrap().ok()?;
        (status == 200 && body.contains(r#""role":"standby""#)).then_some(())
    })
    .await;

    let (status, view) = http(b, "GET", "/api/v1/cluster", None);
    assert_eq!(status, 200, "{view}");
    assert_eq!((view["mode"].as_str(), view["answered_by"].as_str()), (Some("replicated"), Some("b")));
    assert_eq!((view["leader"]["replica"].as_str(), view["leader"]["term"].as_i64()), (Some("a"), Some(1)));
    let roles: Vec<(String, String)> = view["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().into(), r["role"].as_str().unwrap().into()))
        .collect();
    assert_eq!(roles, [("a".into(), "leader".into()), ("b".into(), "standby".into())]);
    let a_url = format!("http://127.0.0.1:{}", a.http_port);
    assert_eq!(view["replicas"][0]["http_url"], a_url.as_str());

    // The command line, through the standby.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["cluster", "--api-url", &format!("http://127.0.0.1:{}", b.http_port)])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && said.contains("leader a (term 1)") && said.contains("answered by b"), "{said}");
    assert!(said.lines().any(|l| l.starts_with('b') && l.contains("standby")), "{said}");

    // The same over NATS, answered by whichever replica.
    let client = users.connect("harness").await;
    let subjects = Subjects::default();
    let reply = client.request(subjects.request("cluster", "status"), "".into()).await.unwrap();
    let over_nats: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(over_nats["leader"]["replica"], "a");
    let refused = client.request(subjects.request("cluster", "status"), "[1]".into()).await.unwrap();
    let refused: Value = serde_json::from_slice(&refused.payload).unwrap();
    assert_eq!(refused["error"]["field"], "payload", "{refused}");

    // A write and a read sent to the standby are answered by the leader.
    let body = registration("via-standby", "web", 30).to_string();
    let (status, registered) = http(b, "POST", "/api/v1/services", Some(body));
    assert_eq!(status, 201, "{registered}");
    let (status, got) = http(a, "GET", "/api/v1/services/via-standby", None);
    assert_eq!((status, got["id"].as_str()), (200, Some("via-standby")), "the leader has it: {got}");
    let (status, got) = http(b, "GET", "/api/v1/services/via-standby", None);
    assert_eq!((status, got["id"].as_str()), (200, Some("via-standby")), "read through the standby: {got}");
    // Bad input is refused by the leader with the usual error, through the standby.
    let (status, refused) = http(b, "POST", "/api/v1/services", Some(r#"{"name": 7}"#.into()));
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["code"].is_string(), "{refused}");

    // The leader dies: b takes over and takes writes itself.
    a.kill();
    let after = eventually(Duration::from_secs(60), "a write answered after the failover", || async {
        let body = registration("after-failover", "web", 30).to_string();
        let (status, _) = tokio::task::spawn_blocking(move || {
            orch_testkit::http_request(b_port, "POST", "/api/v1/services", Some(&body))
        })
        .await
        .unwrap()
        .ok()?;
        // 201 the first time, 200 if an earlier try was applied without its answer arriving.
        matches!(status, 200 | 201).then_some(status)
    })
    .await;
    eprintln!("write after the failover answered {after}");
    serving(b).await;
    let (_, view) = http(b, "GET", "/api/v1/cluster", None);
    assert_eq!((view["leader"]["replica"].as_str(), view["leader"]["term"].as_i64()), (Some("b"), Some(2)));
    let (_, metrics) = http(b, "GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains(r#"orch_cluster_leader{replica="b"} 1"#), "{metrics}");
    assert!(metrics.contains("orch_commands_total"), "the orchestrator's own figures too");

    let js = async_nats::jetstream::new(client.clone());
    let history = eventually(Duration::from_secs(30), "the leadership events", || {
        let js = js.clone();
        let subjects = subjects.clone();
        async move {
            let events = read_stream(&js, &subjects.events_stream(), Some("orch.evt.cluster.>")).await;
            let kinds: Vec<String> = events
                .iter()
                .map(|e| {
                    format!("{} {}", e["type"].as_str().unwrap_or(""), e["data"]["replica"].as_str().unwrap_or(""))
                })
                .collect();
            (kinds.len() >= 3).then_some(kinds)
        }
    })
    .await;
    assert_eq!(
        history,
        [
            "io.orch.cluster.leader_elected.v1 a",
            "io.orch.cluster.leader_lost.v1 a",
            "io.orch.cluster.leader_elected.v1 b",
        ]
    );
}

/// A schedule firing every second, across a leader killed in the middle: the new leader runs the
/// seconds the old one missed (`catch_up = "all"`) and every second has exactly one execution,
/// none lost and none doubled (Nomad issues 11052 and 14505 are this, done wrong).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_each_second_exactly_once_across_a_leader_failover() {
    let Pair { a, b, pool, dir, .. } = &mut Pair::start("30s").await;
    let b_log = dir.path().join("b.log");
    eventually(Duration::from_secs(30), "b a standby", || async {
        std::fs::read_to_string(&b_log).unwrap_or_default().contains("replica started").then_some(())
    })
    .await;
    let text = "[workflow]\nname = \"ticker\"\n[steps.tick]\nkind = \"wait\"\nduration = \"10ms\"\n\n[[schedule]]\ncron = \"* * * * * *\"\noverlap = \"allow\"\ncatch_up = \"all\"\n";
    let (status, stored) = http(a, "PUT", "/api/v1/workflows/ticker", Some(text.into()));
    assert_eq!(status, 201, "{stored}");
    let fired = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT fire_at FROM workflow_executions WHERE workflow = 'ticker' ORDER BY fire_at",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(30), "three firings on a", || async {
        (fired(pool.clone()).await.len() >= 3).then_some(())
    })
    .await;
    a.kill();
    let before = fired(pool.clone()).await.len();
    serving(b).await;
    eventually(Duration::from_secs(60), "five more firings on b", || async {
        (fired(pool.clone()).await.len() >= before + 5).then_some(())
    })
    .await;
    let unscheduled = text.split("[[schedule]]").next().unwrap();
    let (status, _) = http(b, "PUT", "/api/v1/workflows/ticker", Some(unscheduled.into()));
    assert_eq!(status, 201);
    let times = fired(pool.clone()).await;
    for pair in times.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "each second once, none lost: {times:?}");
    }
    let (_, list) = http(b, "GET", "/api/v1/executions?workflow=ticker&limit=1000", None);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), times.len());
    eventually(Duration::from_secs(30), "every firing ran", || async {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workflow_executions WHERE workflow = 'ticker' AND status <> 'succeeded'",
        )
        .fetch_one(&*pool)
        .await
        .unwrap();
        (unfinished == 0).then_some(())
    })
    .await;
}
