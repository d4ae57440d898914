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
use super::hook::{self, WebhookSpec};
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

/// A webhook: where deliveries go and whether it can take them (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    /// `POST /api/v1/hooks/<name>`.
    pub name: String,
    pub workflow: String,
    /// The workflow version that declares it.
    pub version: i32,
    /// How far a delivery's `X-Orch-Timestamp` may be from the orchestrator's clock.
    pub replay_window_seconds: u64,
    /// The inputs it maps from the body (expressions over `body`).
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// False until an admin sets its secret: deliveries are refused until then.
    pub has_secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_set_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_set_at: Option<DateTime<Utc>>,
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
    let hooks: Vec<(String, Value)> = definition
        .webhooks
        .iter()
        .map(|h| (h.name.clone(), serde_json::to_value(h).expect("a webhook serializes")))
        .collect();
    let (version, created) = match workflows::put_definition(
        pool,
        workflows::NewVersion {
            name,
            text,
            definition: &json,
            schedules: &schedules,
            triggers: &triggers,
            hooks: &hooks,
            by,
        },
    )
    .await?
    {
        workflows::Put::Stored { version, created } => (version, created),
        workflows::Put::HookTaken { hook, workflow } => {
            let index = definition.webhooks.iter().position(|h| h.name == hook).unwrap_or_default();
            return Err(ProtocolError::field(
                ErrorCode::Conflict,
                format!("webhook[{index}].name"),
                format!("the webhook {hook:?} belongs to the workflow {workflow:?}"),
            ));
        }
    };
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
    queue(pool, executor, name, inputs, start).await
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
/// one with `start.id` exists already. Returns it as stored, before the executor takes it up
/// (so a new one is `queued`).
pub async fn queue(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    name: &str,
    inputs: Option<Value>,
    start: Start,
) -> Result<ExecutionView, ProtocolError> {
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
    let view = execution_view(pool, start.id).await?;
    executor.queued(start.id);
    Ok(view)
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

/// Where a retry starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryFrom {
    /// The steps that did not succeed (nor were skipped): what succeeded is not run again.
    #[default]
    Failed,
    /// Every step, with the same inputs.
    Start,
}

/// Starts a new execution that retries the ended execution `id`, of the same version and with
/// the same inputs, from its failed steps or from the start.
pub async fn retry(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    id: Uuid,
    from: RetryFrom,
    by: &str,
) -> Result<ExecutionView, ProtocolError> {
    let row = workflows::execution(pool, id).await?.ok_or_else(|| not_found(format!("no execution {id}")))?;
    match (row.status.as_str(), from) {
        ("failed" | "cancelled", _) | ("succeeded", RetryFrom::Start) => {}
        ("succeeded", RetryFrom::Failed) => {
            return Err(ProtocolError::new(
                ErrorCode::Conflict,
                format!("execution {id} succeeded: nothing failed to run again (retry from the start instead)"),
            ));
        }
        (status, _) => {
            return Err(ProtocolError::new(
                ErrorCode::Conflict,
                format!("execution {id} is {status}: only an ended execution is retried (cancel it first)"),
            ));
        }
    }
    let stored = workflows::definition(pool, &row.workflow, Some(row.version))
        .await?
        .ok_or_else(|| not_found(format!("version {} of {:?} is missing", row.version, row.workflow)))?;
    let definition: Definition = serde_json::from_value(stored.definition.0)
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored definition cannot be read: {e}")))?;
    let old: Execution = serde_json::from_value(row.state.0)
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored execution cannot be read: {e}")))?;
    let new_id = Uuid::now_v7();
    let execution = match from {
        RetryFrom::Failed => old.rerun(new_id.to_string(), &definition),
        RetryFrom::Start => {
            let mut fresh = Execution::new(new_id.to_string(), &definition, old.inputs.clone());
            fresh.depth = old.depth;
            fresh
        }
    };
    workflows::insert_execution(
        pool,
        NewExecution {
            id: new_id,
            workflow: &row.workflow,
            version: row.version,
            queue: &row.queue,
            priority: row.priority,
            state: serde_json::to_value(&execution).expect("an execution serializes"),
            by,
            trigger: format!("retry:{id}"),
            fire_at: None,
        },
    )
    .await?;
    let view = execution_view(pool, new_id).await?;
    executor.queued(new_id);
    Ok(view)
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

fn hook_view(row: workflows::HookRow) -> Result<HookView, ProtocolError> {
    let spec: WebhookSpec = serde_json::from_value(row.spec.0)
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored webhook cannot be read: {e}")))?;
    Ok(HookView {
        name: row.name,
        workflow: row.workflow,
        version: row.version,
        replay_window_seconds: spec.replay_window.as_secs(),
        inputs: serde_json::to_value(&spec.inputs).unwrap_or_default(),
        has_secret: row.secret_set_by.is_some(),
        secret_set_by: row.secret_set_by,
        secret_set_at: row.secret_set_at,
    })
}

/// Every webhook.
pub async fn hooks(pool: &sqlx::PgPool) -> Result<Vec<HookView>, ProtocolError> {
    workflows::hooks(pool).await?.into_iter().map(hook_view).collect()
}

/// Sets the secret of the webhook `name`.
pub async fn set_hook_secret(
    pool: &sqlx::PgPool,
    name: &str,
    secret: &str,
    by: &str,
) -> Result<HookView, ProtocolError> {
    if secret.len() < hook::MIN_SECRET_LEN || secret.len() > hook::MAX_SECRET_LEN {
        return Err(ProtocolError::invalid(
            "secret",
            format!("{}-{} bytes (a short secret can be guessed)", hook::MIN_SECRET_LEN, hook::MAX_SECRET_LEN),
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtocolError::invalid("secret", "visible ASCII characters only"));
    }
    if workflows::hook(pool, name).await?.is_none() {
        return Err(not_found(format!("no webhook {name:?}: declare it in a workflow's [[webhook]]")));
    }
    workflows::set_hook_secret(pool, name, secret, by).await?;
    let (row, _) = workflows::hook(pool, name).await?.ok_or_else(|| not_found(format!("no webhook {name:?}")))?;
    hook_view(row)
}

/// A delivery of a webhook, as received.
pub struct Delivery<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Checks a delivery to the webhook `name` and starts its workflow. `Ok((view, true))` for a
/// new execution; `false` when the same delivery came before (its execution, nothing new).
pub async fn deliver(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    name: &str,
    delivery: Delivery<'_>,
) -> Result<(ExecutionView, bool), ProtocolError> {
    let (row, secret) = workflows::hook(pool, name).await?.ok_or_else(|| not_found(format!("no webhook {name:?}")))?;
    let spec: WebhookSpec = serde_json::from_value(row.spec.0.clone())
        .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("a stored webhook cannot be read: {e}")))?;
    let Some(secret) = secret else {
        return Err(ProtocolError::new(
            ErrorCode::Unauthorized,
            format!("the webhook {name:?} has no secret yet: an admin sets it with PUT /api/v1/hooks/{name}/secret"),
        ));
    };
    let now = Utc::now().timestamp();
    hook::verify(secret.as_bytes(), delivery.timestamp, delivery.signature, delivery.body, now, spec.replay_window)
        .map_err(|refusal| {
            tracing::warn!(hook = name, header = refusal.header, reason = %refusal.message, "a webhook delivery was refused");
            ProtocolError::field(ErrorCode::Unauthorized, refusal.header, refusal.message)
        })?;
    let body: Value = if delivery.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(delivery.body)
            .map_err(|e| ProtocolError::field(ErrorCode::MalformedPayload, "body", format!("not JSON: {e}")))?
    };
    let inputs = spec.render_inputs(&body).map_err(|e| ProtocolError::invalid("inputs", e.0))?;
    let signature = delivery.signature.unwrap_or_default();
    let id = hook::execution_id(name, signature);
    let existed = workflows::execution(pool, id).await?.is_some();
    if !existed {
        let start = Start { id, by: format!("hook:{name}"), trigger: format!("hook:{name}"), depth: 0 };
        queue(pool, executor, &row.workflow, Some(inputs), start).await?;
        tracing::info!(hook = name, workflow = %row.workflow, execution = %id, "a webhook started an execution");
    }
    Ok((execution_view(pool, id).await?, !existed))
}
