//! What the API does with workflows, apart from the wire: store a definition as a new version,
//! start an execution (its inputs checked against the definition), read and cancel executions.

use chrono::{DateTime, Utc};
use orch_protocol::{ErrorCode, ProtocolError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::definition::Definition;
use super::executor::Workflows;
use super::machine::Execution;
use super::schedule::Schedule;
use crate::storage::workflows::{self, NewExecution, StoredDefinition, StoredExecution};

/// Most bytes of an execution's inputs (as JSON).
pub const MAX_INPUTS_BYTES: usize = 64 * 1024;

/// A stored definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub name: String,
    pub version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub queue: String,
    pub priority: u8,
    pub created_at: DateTime<Utc>,
    /// Who stored this version.
    pub created_by: String,
    /// The steps with their kinds and what they need.
    pub steps: Vec<StepSummary>,
    /// The TOML text as stored (in the answer for one workflow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepSummary {
    pub id: String,
    pub kind: String,
    pub needs: Vec<String>,
    /// Runs only as another step's compensation.
    pub compensation: bool,
}

/// The answer to storing a definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stored {
    pub name: String,
    pub version: i32,
    /// False when the text equals the latest version (nothing new was stored).
    pub created: bool,
}

/// An execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    pub id: Uuid,
    pub workflow: String,
    pub version: i32,
    /// `queued`, `running`, `compensating`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub queue: String,
    pub priority: i16,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Each step: `status` (`pending`, `retrying`, `running`, `succeeded`, `failed`, `skipped`,
    /// `cancelled`), `attempt`, and when they apply `started_at` / `due_at` (ms since the epoch),
    /// `output`, `error` (`kind`, `message`).
    #[schema(value_type = Object)]
    pub steps: Value,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Who started it.
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What started it: `manual`, or `cron:<n>` for the `n`th schedule of the workflow.
    pub trigger: String,
    /// The firing a scheduled execution was started for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<DateTime<Utc>>,
}

/// A cron schedule of a workflow and its next firing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub workflow: String,
    /// Its place among the workflow's `[[schedule]]` (0 first): executions it starts have the
    /// trigger `cron:<index>`.
    pub index: i32,
    /// The workflow version the schedule comes from.
    pub version: i32,
    pub cron: String,
    pub timezone: String,
    /// `allow`, `skip` or `replace`.
    pub overlap: String,
    /// `skip`, `once` or `all`.
    pub catch_up: String,
    pub next_fire_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<DateTime<Utc>>,
}

/// A queue's figures: executions waiting and under way now; those that ended, and the wait
/// before starting (p50, p99, in milliseconds), over the last day.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    pub waiting: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_p99_ms: Option<f64>,
}

fn not_found(what: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, what)
}

fn view_of(stored: StoredDefinition, with_text: bool) -> Result<WorkflowView, ProtocolError> {
    let definition: Definition = serde_json::from_value(stored.definition.0)
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored definition cannot be read: {e}")))?;
    Ok(WorkflowView {
        name: stored.name,
        version: stored.version,
        description: definition.workflow.description.clone(),
        queue: definition.workflow.queue.clone(),
        priority: definition.workflow.priority,
        created_at: stored.created_at,
        created_by: stored.created_by,
        steps: definition
            .steps
            .iter()
            .map(|(id, s)| StepSummary {
                id: id.clone(),
                kind: s.kind.as_str().into(),
                needs: s.needs.clone(),
                compensation: s.compensation,
            })
            .collect(),
        text: with_text.then_some(stored.text),
    })
}

/// Parses `text` and stores it as the next version of `name` (which it must declare).
pub async fn put(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    name: &str,
    text: &str,
    by: &str,
) -> Result<Stored, ProtocolError> {
    let definition = Definition::parse(text)?;
    if definition.workflow.name != name {
        return Err(ProtocolError::field(
            ErrorCode::ValidationFailed,
            "workflow.name",
            format!("the definition is named {:?}, not {name:?} as in the path", definition.workflow.name),
        ));
    }
    let json = serde_json::to_value(&definition).expect("a definition serializes");
    let now = Utc::now();
    let mut schedules = Vec::new();
    for spec in &definition.schedules {
        let schedule = Schedule::new(spec.clone()).map_err(|(field, m)| ProtocolError::invalid(field, m))?;
        let first = schedule.next_after(now).ok_or_else(|| {
            ProtocolError::invalid("schedule", format!("the pattern {:?} never fires after now", spec.cron))
        })?;
        schedules.push((serde_json::to_value(spec).expect("a schedule serializes"), first));
    }
    let triggers: Vec<Value> =
        definition.event_triggers.iter().map(|t| serde_json::to_value(t).expect("a trigger serializes")).collect();
    let (version, created) = workflows::put_definition(pool, name, text, &json, &schedules, &triggers, by).await?;
    if created {
        executor.definitions_changed();
    }
    Ok(Stored { name: name.to_string(), version, created })
}

pub async fn list(pool: &sqlx::PgPool) -> Result<Vec<WorkflowView>, ProtocolError> {
    workflows::definitions(pool).await?.into_iter().map(|d| view_of(d, false)).collect()
}

pub async fn get(pool: &sqlx::PgPool, name: &str) -> Result<WorkflowView, ProtocolError> {
    let stored =
        workflows::definition(pool, name, None).await?.ok_or_else(|| not_found(format!("no workflow {name:?}")))?;
    view_of(stored, true)
}

/// Queues an execution of the latest version of `name`, started by hand; the executor starts it.
pub async fn run(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    name: &str,
    inputs: Option<Value>,
    by: &str,
) -> Result<ExecutionView, ProtocolError> {
    let start = Start { id: Uuid::now_v7(), by: by.to_string(), trigger: "manual".into(), depth: 0 };
    let id = queue(pool, executor, name, inputs, start).await?;
    execution_view(pool, id).await
}

/// Who and what starts an execution.
#[derive(Debug, Clone)]
pub struct Start {
    /// The new execution's id: a derived one makes starting it again a no-op.
    pub id: Uuid,
    pub by: String,
    /// `manual`, `cron:<n>`, `parent:<execution>/<step>`, `event:<n>` or `hook:<name>`.
    pub trigger: String,
    /// How deep it nests (0 unless a sub-workflow).
    pub depth: u32,
}

/// The id of the sub-workflow that attempt `attempt` of `step` of `parent` starts: the same
/// each time the attempt is taken up, so it is started once.
pub fn child_id(parent: Uuid, step: &str, attempt: u32) -> Uuid {
    Uuid::new_v5(&parent, format!("{step}:{attempt}").as_bytes())
}

/// Checks `inputs` against the latest version of `name` and queues an execution of it, unless
/// one with `start.id` exists already. Returns the id.
pub async fn queue(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    name: &str,
    inputs: Option<Value>,
    start: Start,
) -> Result<Uuid, ProtocolError> {
    let stored =
        workflows::definition(pool, name, None).await?.ok_or_else(|| not_found(format!("no workflow {name:?}")))?;
    let definition: Definition = serde_json::from_value(stored.definition.0.clone())
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored definition cannot be read: {e}")))?;
    if inputs.as_ref().and_then(|i| serde_json::to_vec(i).ok()).is_some_and(|bytes| bytes.len() > MAX_INPUTS_BYTES) {
        return Err(ProtocolError::invalid("inputs", format!("larger than {MAX_INPUTS_BYTES} bytes")));
    }
    let inputs = definition.check_inputs("inputs", inputs)?;
    let mut execution = Execution::new(start.id.to_string(), &definition, inputs);
    execution.depth = start.depth;
    let state = serde_json::to_value(&execution).expect("an execution serializes");
    workflows::insert_execution(
        pool,
        NewExecution {
            id: start.id,
            workflow: name,
            version: stored.version,
            queue: &definition.workflow.queue,
            priority: i16::from(definition.workflow.priority),
            state,
            by: &start.by,
            trigger: start.trigger,
            fire_at: None,
        },
    )
    .await?;
    executor.queued(start.id);
    Ok(start.id)
}

fn to_view(row: StoredExecution) -> ExecutionView {
    let state = row.state.0;
    ExecutionView {
        id: row.id,
        workflow: row.workflow,
        version: row.version,
        status: row.status,
        queue: row.queue,
        priority: row.priority,
        inputs: state.get("inputs").cloned().unwrap_or(Value::Null),
        steps: state.get("steps").cloned().unwrap_or(Value::Null),
        reason: state.get("reason").and_then(Value::as_str).map(str::to_string),
        created_at: row.created_at,
        created_by: row.created_by,
        started_at: row.started_at,
        finished_at: row.finished_at,
        trigger: row.trigger,
        fire_at: row.fire_at,
    }
}

pub async fn execution_view(pool: &sqlx::PgPool, id: Uuid) -> Result<ExecutionView, ProtocolError> {
    let row = workflows::execution(pool, id).await?.ok_or_else(|| not_found(format!("no execution {id}")))?;
    Ok(to_view(row))
}

pub async fn executions(
    pool: &sqlx::PgPool,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<ExecutionView>, ProtocolError> {
    Ok(workflows::executions(pool, workflow, limit).await?.into_iter().map(to_view).collect())
}

/// A person's decision on an approval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// Sends `decision` to the approval step `step` of execution `id`, which must be waiting for it.
pub async fn signal(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    id: Uuid,
    step: &str,
    decision: Decision,
    comment: Option<String>,
    by: &str,
) -> Result<ExecutionView, ProtocolError> {
    if comment.as_ref().is_some_and(|c| c.len() > 1024) {
        return Err(ProtocolError::invalid("comment", "at most 1024 bytes"));
    }
    let view = execution_view(pool, id).await?;
    if matches!(view.status.as_str(), "succeeded" | "failed" | "cancelled") {
        return Err(ProtocolError::new(ErrorCode::Conflict, format!("execution {id} has ended ({})", view.status)));
    }
    executor.signal(id, step.to_string(), decision, comment, by.to_string()).await?;
    execution_view(pool, id).await
}

/// Cancels an execution that has not ended.
pub async fn cancel(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    id: Uuid,
    by: &str,
) -> Result<ExecutionView, ProtocolError> {
    let view = execution_view(pool, id).await?;
    if matches!(view.status.as_str(), "succeeded" | "failed" | "cancelled") {
        return Err(ProtocolError::new(ErrorCode::Conflict, format!("execution {id} has ended ({})", view.status)));
    }
    executor
        .cancel(id, format!("cancelled by {by}"))
        .await
        .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, e))?;
    execution_view(pool, id).await
}

/// Every cron schedule with its next firing.
pub async fn schedules(pool: &sqlx::PgPool) -> Result<Vec<ScheduleView>, ProtocolError> {
    let text = |spec: &Value, field: &str, default: &str| {
        spec.get(field).and_then(Value::as_str).unwrap_or(default).to_string()
    };
    Ok(workflows::schedules(pool)
        .await?
        .into_iter()
        .map(|row| ScheduleView {
            cron: text(&row.spec.0, "cron", ""),
            timezone: text(&row.spec.0, "timezone", "UTC"),
            overlap: text(&row.spec.0, "overlap", "skip"),
            catch_up: text(&row.spec.0, "catch_up", "once"),
            workflow: row.workflow,
            index: row.idx,
            version: row.version,
            next_fire_at: row.next_fire_at,
            last_fired_at: row.last_fired_at,
        })
        .collect())
}

/// Every queue's figures.
pub async fn queues(pool: &sqlx::PgPool) -> Result<Vec<QueueView>, ProtocolError> {
    Ok(workflows::queues(pool)
        .await?
        .into_iter()
        .map(|q| QueueView {
            queue: q.queue,
            waiting: q.waiting,
            running: q.running,
            succeeded: q.succeeded,
            failed: q.failed,
            cancelled: q.cancelled,
            wait_p50_ms: q.wait_p50_ms,
            wait_p99_ms: q.wait_p99_ms,
        })
        .collect())
}
