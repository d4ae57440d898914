//! Workflow definitions (with versions) and executions (with their whole state), and the events
//! of each change of an execution, written to the outbox in the change's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use super::batch::OutboxRow;

/// A stored version of a definition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredDefinition {
    pub name: String,
    pub version: i32,
    pub text: String,
    pub definition: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// Stores `text` as the next version of `name` (1 for a new workflow); returns the version. The
/// same text as the latest version is not stored again: its version is returned.
/// A new version of a definition, to store.
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub definition: &'a serde_json::Value,
    /// Its schedules: spec and first firing.
    pub schedules: &'a [(serde_json::Value, DateTime<Utc>)],
    /// Its event triggers' specs.
    pub triggers: &'a [serde_json::Value],
    /// Its webhooks: name and spec.
    pub hooks: &'a [(String, serde_json::Value)],
    pub by: &'a str,
}

/// A new version replaces the workflow's schedules, its event triggers (their count windows
/// start empty) and its webhooks, in the same transaction.
pub async fn put_definition(pool: &PgPool, new: NewVersion<'_>) -> Result<Put> {
    let NewVersion { name, text, definition, schedules, triggers, hooks, by } = new;
    let mut tx = pool.begin().await?;
    // One writer of a name's versions at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('workflow:' || $1))").bind(name).execute(&mut *tx).await?;
    let latest: Option<(i32, String)> =
        sqlx::query_as("SELECT version, text FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((version, latest_text)) = &latest
        && latest_text == text
    {
        tx.commit().await?;
        return Ok(Put::Stored { version: *version, created: false });
    }
    let names: Vec<&str> = hooks.iter().map(|(n, _)| n.as_str()).collect();
    let taken: Option<(String, String)> = sqlx::query_as(
        "SELECT name, workflow FROM workflow_hooks WHERE name = ANY($1) AND workflow <> $2 ORDER BY name LIMIT 1",
    )
    .bind(&names)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((hook, workflow)) = taken {
        return Ok(Put::HookTaken { hook, workflow });
    }
    let version = latest.map_or(1, |(v, _)| v + 1);
    sqlx::query(
        "INSERT INTO workflow_definitions (name, version, text, definition, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(version)
    .bind(text)
    .bind(sqlx::types::Json(definition))
    .bind(by)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM workflow_schedules WHERE workflow = $1").bind(name).execute(&mut *tx).await?;
    for (idx, (spec, first)) in schedules.iter().enumerate() {
        sqlx::query(
            "INSERT INTO workflow_schedules (workflow, idx, version, spec, next_fire_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(idx as i32)
        .bind(version)
        .bind(sqlx::types::Json(spec))
        .bind(first)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM workflow_event_triggers WHERE workflow = $1").bind(name).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM workflow_event_windows WHERE workflow = $1").bind(name).execute(&mut *tx).await?;
    for (idx, spec) in triggers.iter().enumerate() {
        sqlx::query("INSERT INTO workflow_event_triggers (workflow, idx, version, spec) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(idx as i32)
            .bind(version)
            .bind(sqlx::types::Json(spec))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM workflow_hooks WHERE workflow = $1").bind(name).execute(&mut *tx).await?;
    for (idx, (hook, spec)) in hooks.iter().enumerate() {
        sqlx::query("INSERT INTO workflow_hooks (name, workflow, idx, version, spec) VALUES ($1, $2, $3, $4, $5)")
            .bind(hook)
            .bind(name)
            .bind(idx as i32)
            .bind(version)
            .bind(sqlx::types::Json(spec))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Put::Stored { version, created: true })
}

/// What storing a definition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Stored as `version` (`created`: false when the text equals the latest version's).
    Stored { version: i32, created: bool },
    /// Nothing stored: the webhook `hook` belongs to another workflow.
    HookTaken { hook: String, workflow: String },
}

/// Version `version` of `name`, or its latest.
pub async fn definition(pool: &PgPool, name: &str, version: Option<i32>) -> Result<Option<StoredDefinition>> {
    Ok(sqlx::query_as(
        "SELECT name, version, text, definition, created_at, created_by FROM workflow_definitions
         WHERE name = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?)
}

/// The latest version of every workflow, by name.
pub async fn definitions(pool: &PgPool) -> Result<Vec<StoredDefinition>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (name) name, version, text, definition, created_at, created_by FROM workflow_definitions
         ORDER BY name, version DESC",
    )
    .fetch_all(pool)
    .await?)
}

/// An execution as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredExecution {
    pub id: Uuid,
    pub workflow: String,
    pub version: i32,
    pub status: String,
    pub queue: String,
    pub priority: i16,
    pub state: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub trigger: String,
    pub fire_at: Option<DateTime<Utc>>,
}

const EXECUTION_COLUMNS: &str = "id, workflow, version, status, queue, priority, state, created_at, created_by, \
     started_at, finished_at, updated_at, trigger, fire_at";

/// A new execution, queued.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: Uuid,
    pub workflow: &'a str,
    pub version: i32,
    pub queue: &'a str,
    pub priority: i16,
    pub state: serde_json::Value,
    pub by: &'a str,
    /// `manual`, or `cron:<idx>`.
    pub trigger: String,
    /// The firing it was started for.
    pub fire_at: Option<DateTime<Utc>>,
}

async fn insert_with<'e>(executor: impl sqlx::PgExecutor<'e>, new: &NewExecution<'_>) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO workflow_executions (id, workflow, version, status, queue, priority, state, created_by, trigger, fire_at)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(new.id)
    .bind(new.workflow)
    .bind(new.version)
    .bind(new.queue)
    .bind(new.priority)
    .bind(sqlx::types::Json(&new.state))
    .bind(new.by)
    .bind(&new.trigger)
    .bind(new.fire_at)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn insert_execution(pool: &PgPool, new: NewExecution<'_>) -> Result<()> {
    insert_with(pool, &new).await?;
    Ok(())
}

/// A schedule as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredSchedule {
    pub workflow: String,
    pub idx: i32,
    pub version: i32,
    pub spec: sqlx::types::Json<serde_json::Value>,
    pub next_fire_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
}

/// The earliest next firing of any schedule.
pub async fn next_firing(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar("SELECT min(next_fire_at) FROM workflow_schedules").fetch_one(pool).await?)
}

/// The schedules whose next firing is at or before `now`.
pub async fn due_schedules(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<StoredSchedule>> {
    Ok(sqlx::query_as(
        "SELECT workflow, idx, version, spec, next_fire_at, last_fired_at FROM workflow_schedules WHERE next_fire_at <= $1
         ORDER BY next_fire_at",
    )
    .bind(now)
    .fetch_all(pool)
    .await?)
}

/// What a committed firing did.
#[derive(Debug, Default)]
pub struct Fired {
    /// Executions started (queued).
    pub started: Vec<Uuid>,
    /// Executions of the schedule still under way that the firing replaces (to cancel).
    pub replaced: Vec<Uuid>,
    /// Firings not started because one of the schedule's executions still runs.
    pub skipped: usize,
}

/// The firings of one schedule to commit: the executions of `executions` (skipped with
/// `skip_overlap` while one of the schedule's executions is under way; the ones under way
/// returned to cancel with `replace`), and the schedule's `next` firing, if its next firing is
/// still `expected` (else another commit took them: nothing is done).
pub struct Firing<'a> {
    pub schedule: &'a StoredSchedule,
    pub expected: DateTime<Utc>,
    pub executions: Vec<NewExecution<'a>>,
    pub skip_overlap: bool,
    pub replace: bool,
    pub next: DateTime<Utc>,
}

/// Commits `firings` in one transaction; what each did, in order.
pub async fn fire_all(pool: &PgPool, firings: &[Firing<'_>]) -> Result<Vec<Fired>> {
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(firings.len());
    for firing in firings {
        out.push(fire_in(&mut tx, firing).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn fire_in(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, firing: &Firing<'_>) -> Result<Fired> {
    let Firing { schedule, expected, executions, skip_overlap, replace, next } = firing;
    let current: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT next_fire_at FROM workflow_schedules WHERE workflow = $1 AND idx = $2 AND version = $3 FOR UPDATE",
    )
    .bind(&schedule.workflow)
    .bind(schedule.idx)
    .bind(schedule.version)
    .fetch_optional(&mut **tx)
    .await?;
    if current != Some(*expected) {
        return Ok(Fired::default());
    }
    let trigger = format!("cron:{}", schedule.idx);
    let active: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM workflow_executions WHERE workflow = $1 AND trigger = $2
           AND status NOT IN ('succeeded', 'failed', 'cancelled')",
    )
    .bind(&schedule.workflow)
    .bind(&trigger)
    .fetch_all(&mut **tx)
    .await?;
    let mut fired = Fired::default();
    for (i, new) in executions.iter().enumerate() {
        // Only the last of several firings replaces (or is skipped for) what runs.
        let overlapping = !active.is_empty() || i > 0;
        if *skip_overlap && overlapping {
            fired.skipped += 1;
            continue;
        }
        if insert_with(&mut **tx, new).await? {
            fired.started.push(new.id);
        }
    }
    if *replace && !fired.started.is_empty() {
        fired.replaced = active;
    }
    sqlx::query(
        "UPDATE workflow_schedules SET next_fire_at = $3, last_fired_at = CASE WHEN $4 THEN now() ELSE last_fired_at END
         WHERE workflow = $1 AND idx = $2",
    )
    .bind(&schedule.workflow)
    .bind(schedule.idx)
    .bind(next)
    .bind(!fired.started.is_empty())
    .execute(&mut **tx)
    .await?;
    Ok(fired)
}

/// An execution's new state, to store.
pub struct ExecutionChange {
    pub id: Uuid,
    pub status: &'static str,
    pub state: serde_json::Value,
    /// It left its queue (`started_at` is set).
    pub started: bool,
    /// It ended (`finished_at` is set).
    pub finished: bool,
    pub events: Vec<OutboxRow>,
}

/// Stores the new states of executions with their events, in one transaction.
pub async fn save_executions(pool: &PgPool, changes: &[ExecutionChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for change in changes {
        sqlx::query(
            "UPDATE workflow_executions SET status = $2, state = $3, updated_at = now(),
                 started_at = CASE WHEN $4 THEN coalesce(started_at, now()) ELSE started_at END,
                 finished_at = CASE WHEN $5 THEN now() ELSE finished_at END
             WHERE id = $1",
        )
        .bind(change.id)
        .bind(change.status)
        .bind(sqlx::types::Json(&change.state))
        .bind(change.started)
        .bind(change.finished)
        .execute(&mut *tx)
        .await?;
    }
    let events: Vec<OutboxRow> = changes.iter().flat_map(|c| c.events.iter().cloned()).collect();
    if !events.is_empty() {
        super::outbox::insert(&mut tx, super::outbox::shard::WORKFLOWS, &events).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn execution(pool: &PgPool, id: Uuid) -> Result<Option<StoredExecution>> {
    Ok(sqlx::query_as(&format!("SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The executions `ids` (those that exist).
pub async fn executions_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<StoredExecution>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE id = ANY($1) ORDER BY created_at"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// The newest executions (of `workflow` when given), at most `limit`.
pub async fn executions(pool: &PgPool, workflow: Option<&str>, limit: i64) -> Result<Vec<StoredExecution>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE ($1::text IS NULL OR workflow = $1)
         ORDER BY created_at DESC LIMIT $2"
    ))
    .bind(workflow)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Every execution that has not ended (queued or under way), oldest first.
pub async fn active_executions(pool: &PgPool) -> Result<Vec<StoredExecution>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM workflow_executions
         WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await?)
}

/// Every schedule, by workflow and index.
pub async fn schedules(pool: &PgPool) -> Result<Vec<StoredSchedule>> {
    Ok(sqlx::query_as(
        "SELECT workflow, idx, version, spec, next_fire_at, last_fired_at FROM workflow_schedules
         ORDER BY workflow, idx",
    )
    .fetch_all(pool)
    .await?)
}

/// One queue's figures: what waits and runs now, what ended in the last day, and how long
/// executions of the last day waited before they started.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub queue: String,
    pub waiting: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub wait_p50_ms: Option<f64>,
    pub wait_p99_ms: Option<f64>,
}

/// The figures of every queue that has an execution under way or one from the last day.
pub async fn queues(pool: &PgPool) -> Result<Vec<QueueRow>> {
    Ok(sqlx::query_as(
        "SELECT queue,
                count(*) FILTER (WHERE status = 'queued') AS waiting,
                count(*) FILTER (WHERE status IN ('running', 'compensating')) AS running,
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000)
                    FILTER (WHERE started_at IS NOT NULL) AS wait_p50_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000)
                    FILTER (WHERE started_at IS NOT NULL) AS wait_p99_ms
         FROM workflow_executions
         WHERE status NOT IN ('succeeded', 'failed', 'cancelled') OR created_at > now() - interval '1 day'
         GROUP BY queue ORDER BY queue",
    )
    .fetch_all(pool)
    .await?)
}

/// An event trigger as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredTrigger {
    pub workflow: String,
    pub idx: i32,
    pub version: i32,
    pub spec: sqlx::types::Json<serde_json::Value>,
    pub since: DateTime<Utc>,
}

/// Every event trigger, by workflow and index.
pub async fn event_triggers(pool: &PgPool) -> Result<Vec<StoredTrigger>> {
    Ok(sqlx::query_as("SELECT workflow, idx, version, spec, since FROM workflow_event_triggers ORDER BY workflow, idx")
        .fetch_all(pool)
        .await?)
}

/// The events' times counted in a trigger's window for `group` (oldest first).
pub async fn event_window(pool: &PgPool, workflow: &str, idx: i32, group: &str) -> Result<Vec<i64>> {
    let times: Option<sqlx::types::Json<Vec<i64>>> = sqlx::query_scalar(
        "SELECT times FROM workflow_event_windows WHERE workflow = $1 AND idx = $2 AND group_key = $3",
    )
    .bind(workflow)
    .bind(idx)
    .bind(group)
    .fetch_optional(pool)
    .await?;
    Ok(times.map(|t| t.0).unwrap_or_default())
}

/// The sequence of the last event the triggers took, if they ever took one.
pub async fn event_position(pool: &PgPool) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT stream_seq FROM workflow_event_position").fetch_optional(pool).await?)
}

async fn set_position<'e>(executor: impl sqlx::PgExecutor<'e>, seq: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO workflow_event_position (one, stream_seq) VALUES (true, $1)
         ON CONFLICT (one) DO UPDATE SET stream_seq = $1",
    )
    .bind(seq)
    .execute(executor)
    .await?;
    Ok(())
}

/// Records that the triggers have taken every event up to `seq`.
pub async fn set_event_position(pool: &PgPool, seq: i64) -> Result<()> {
    set_position(pool, seq).await
}

/// Stores a trigger's window for `group` (empty: deleted) with the position `seq` of the event
/// just counted, in one transaction.
pub async fn count_event(pool: &PgPool, workflow: &str, idx: i32, group: &str, times: &[i64], seq: i64) -> Result<()> {
    let mut tx = pool.begin().await?;
    if times.is_empty() {
        sqlx::query("DELETE FROM workflow_event_windows WHERE workflow = $1 AND idx = $2 AND group_key = $3")
            .bind(workflow)
            .bind(idx)
            .bind(group)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO workflow_event_windows (workflow, idx, group_key, times) VALUES ($1, $2, $3, $4)
             ON CONFLICT (workflow, idx, group_key) DO UPDATE SET times = $4",
        )
        .bind(workflow)
        .bind(idx)
        .bind(group)
        .bind(sqlx::types::Json(times))
        .execute(&mut *tx)
        .await?;
    }
    set_position(&mut *tx, seq).await?;
    tx.commit().await?;
    Ok(())
}

/// A webhook as stored, with who set its secret and when (never the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HookRow {
    pub name: String,
    pub workflow: String,
    pub version: i32,
    pub spec: sqlx::types::Json<serde_json::Value>,
    pub secret_set_by: Option<String>,
    pub secret_set_at: Option<DateTime<Utc>>,
}

const HOOK_COLUMNS: &str =
    "h.name, h.workflow, h.version, h.spec, s.set_by AS secret_set_by, s.set_at AS secret_set_at";

/// Every webhook, by name.
pub async fn hooks(pool: &PgPool) -> Result<Vec<HookRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {HOOK_COLUMNS} FROM workflow_hooks h LEFT JOIN workflow_hook_secrets s USING (name) ORDER BY h.name"
    ))
    .fetch_all(pool)
    .await?)
}

#[derive(sqlx::FromRow)]
struct HookWithSecret {
    #[sqlx(flatten)]
    hook: HookRow,
    secret: Option<String>,
}

/// One webhook and its secret, if it has one.
pub async fn hook(pool: &PgPool, name: &str) -> Result<Option<(HookRow, Option<String>)>> {
    let row: Option<HookWithSecret> = sqlx::query_as(&format!(
        "SELECT {HOOK_COLUMNS}, s.secret FROM workflow_hooks h LEFT JOIN workflow_hook_secrets s USING (name)
         WHERE h.name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.hook, r.secret)))
}

/// Sets (or replaces) a webhook's secret.
pub async fn set_hook_secret(pool: &PgPool, name: &str, secret: &str, by: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO workflow_hook_secrets (name, secret, set_by) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET secret = $2, set_by = $3, set_at = now()",
    )
    .bind(name)
    .bind(secret)
    .bind(by)
    .execute(pool)
    .await?;
    Ok(())
}
