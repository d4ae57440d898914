//! The executor: one task on the leader that owns every execution under way. It feeds each
//! execution's state machine what happened, stores the new state with its events (one
//! transaction) **before** it does what the machine says, then runs the attempts (each in a task
//! of its own, reporting back here), cancels attempts, and wakes executions when a back-off or a
//! timeout is due. Queued executions start by queue, highest priority first, within each queue's
//! concurrency limit ([`super::queue`]).
//!
//! A new leader loads every execution that has not ended and resumes it ([`Input::Resumed`]):
//! nothing that completed runs again, and an attempt that was in flight is retried only under its
//! policy.

use std::collections::HashMap;
use std::sync::Arc;

use orch_protocol::events::{self, EventKind};
use orch_protocol::principal::ORCHESTRATOR;
use orch_protocol::workflow::{WorkflowEvent, WorkflowEventData};
use orch_protocol::{ErrorCode, ProtocolError};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::api::Decision;
use super::definition::{Definition, Retryable, StepKind};
use super::machine::{Action, Event, Execution, ExecutionStatus, Input, Millis, StepError, StepStatus};
use super::queue::{self, Waiting};
use super::schedule::Overlap;
use super::steps::{self, Attempt, Effects};
use crate::shutdown::Shutdown;
use crate::storage::{self, StorageError, batch::OutboxRow, workflows};

/// Settings of the executor.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorSettings {
    /// Executions under way at once per queue.
    pub queue_concurrency: usize,
    /// Priority points a waiting execution gains per minute of waiting (so none starves).
    pub aging_per_minute: f64,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings { queue_concurrency: 16, aging_per_minute: 1.0 }
    }
}

/// Most inputs taken in one batch (one transaction).
const BATCH: usize = 1024;

/// What the API asks of the executor.
enum Command {
    /// A new execution was stored (queued).
    Queued {
        id: Uuid,
    },
    Cancel {
        id: Uuid,
        reason: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A decision for an approval step.
    Signal {
        id: Uuid,
        step: String,
        decision: Decision,
        comment: Option<String>,
        by: String,
        reply: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// Answer once execution `id` is no longer under way (at once if it is not).
    WatchEnd {
        id: Uuid,
        reply: oneshot::Sender<()>,
    },
}

/// A handle on the executor (cheap to clone).
#[derive(Clone)]
pub struct Workflows {
    commands: mpsc::UnboundedSender<Command>,
    /// Counts the definitions stored: the scheduler and the event triggers look again when it
    /// changes.
    definitions: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Workflows {
    /// Says a new version of a definition was stored.
    pub fn definitions_changed(&self) {
        self.definitions.send_modify(|n| *n += 1);
    }

    /// Changes whenever a new version of a definition is stored.
    pub fn watch_definitions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.definitions.subscribe()
    }

    /// Tells the executor a stored execution is queued.
    pub fn queued(&self, id: Uuid) {
        let _ = self.commands.send(Command::Queued { id });
    }

    /// Cancels an execution that has not ended.
    pub async fn cancel(&self, id: Uuid, reason: String) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Cancel { id, reason, reply })
            .map_err(|_| "the workflow executor has stopped".to_string())?;
        answer.await.map_err(|_| "the workflow executor has stopped".to_string())?
    }

    /// Sends a decision to an approval step that waits for one; answers once it is stored.
    pub async fn signal(
        &self,
        id: Uuid,
        step: String,
        decision: Decision,
        comment: Option<String>,
        by: String,
    ) -> Result<(), ProtocolError> {
        let stopped = || ProtocolError::new(ErrorCode::Unavailable, "the workflow executor has stopped");
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Signal { id, step, decision, comment, by, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Returns once execution `id` has ended, or this executor stopped (read the stored status).
    pub async fn ended(&self, id: Uuid) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::WatchEnd { id, reply }).is_ok() {
            let _ = answer.await;
        }
    }
}

/// An execution under way (or queued) in memory.
struct Live {
    workflow: String,
    version: i32,
    queue: String,
    priority: i16,
    queued_at: Millis,
    definition: Arc<Definition>,
    execution: Execution,
    wake: Option<Millis>,
    attempts: HashMap<String, AbortHandle>,
    /// Started by a step of another execution: admitted at once, whatever its queue holds, since
    /// its parent already holds a place (waiting there could deadlock a full queue).
    child: bool,
    /// Tasks waiting for its end (sub-workflow steps).
    watchers: Vec<oneshot::Sender<()>>,
    /// What started it: `manual`, `cron:<n>`, …
    trigger: String,
}

impl Live {
    /// Executions that run one at a time share this key: those of a schedule with
    /// `overlap = "queue"`.
    fn serial_key(&self) -> Option<(String, String)> {
        let index: usize = self.trigger.strip_prefix("cron:")?.parse().ok()?;
        let overlap = self.definition.schedules.get(index)?.overlap;
        (overlap == Overlap::Queue).then(|| (self.workflow.clone(), self.trigger.clone()))
    }

    /// The priority it waits with: the effective priority of the service it follows (which the
    /// AI engine steers) when it has one, else its workflow's.
    fn priority(&self, effective: &crate::priority::Effective) -> i16 {
        self.definition
            .workflow
            .follow_priority_of
            .as_ref()
            .and_then(|service| effective.get(service))
            .map_or(self.priority, |p| i16::from(*p))
    }
}

/// An attempt's end, as its task reports it.
struct Ended {
    id: Uuid,
    step: String,
    attempt: u32,
    result: Result<Value, StepError>,
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Starts the executor; it resumes every execution that has not ended.
pub async fn start(
    pool: sqlx::PgPool,
    effects: Effects,
    settings: ExecutorSettings,
    written: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
) -> Result<(Workflows, tokio::task::JoinHandle<()>), StorageError> {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let handle = Workflows { commands: commands_tx, definitions: Arc::new(tokio::sync::watch::Sender::new(0)) };
    let effective = effects.priorities.watch();
    let mut executor = Executor {
        pool,
        effects,
        handle: handle.clone(),
        effective,
        settings,
        written,
        live: HashMap::new(),
        ended: mpsc::unbounded_channel(),
        cascade: Vec::new(),
        definitions: super::definitions::Definitions::default(),
    };
    let stored = storage::retry("loading workflow executions", || workflows::active_executions(&executor.pool)).await?;
    let resumed = stored.len();
    for row in stored {
        executor.load(row).await;
    }
    if resumed > 0 {
        tracing::info!(executions = resumed, "workflow executions taken up again");
    }
    let task = tokio::spawn(executor.run(commands, shutdown));
    Ok((handle, task))
}

struct Executor {
    pool: sqlx::PgPool,
    effects: Effects,
    /// Its own handle, for the steps that start sub-workflows.
    handle: Workflows,
    /// The services' effective priorities, for executions that follow one.
    effective: tokio::sync::watch::Receiver<crate::priority::Effective>,
    settings: ExecutorSettings,
    written: Arc<tokio::sync::Notify>,
    live: HashMap<Uuid, Live>,
    ended: (mpsc::UnboundedSender<Ended>, mpsc::UnboundedReceiver<Ended>),
    /// Sub-workflows to cancel because the step that started them was cancelled.
    cascade: Vec<(Uuid, String)>,
    definitions: super::definitions::Definitions,
}

impl Executor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut shutdown: Shutdown) {
        // Executions under way when the last leader stopped go on; queued ones wait their turn.
        let under_way: Vec<(Uuid, Input)> = self
            .live
            .iter()
            .filter(|(_, l)| l.execution.status != ExecutionStatus::Queued)
            .map(|(id, _)| (*id, Input::Resumed))
            .collect();
        self.advance_all(under_way).await;
        self.admit().await;
        loop {
            let next_wake = self.live.values().filter_map(|l| l.wake).min();
            let sleep = async {
                match next_wake {
                    Some(at) => {
                        let left = (at - now_ms()).max(0) as u64;
                        tokio::time::sleep(std::time::Duration::from_millis(left)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.requested() => break,
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    // Commands that came together: queued executions are loaded in one read.
                    let mut batch = vec![command];
                    while batch.len() < BATCH
                        && let Ok(more) = commands.try_recv()
                    {
                        batch.push(more);
                    }
                    self.handle(batch).await;
                }
                Some(first) = self.ended.1.recv() => {
                    // Every attempt that has ended by now, in one batch.
                    let mut batch = Vec::new();
                    let mut next = Some(first);
                    while let Some(ended) = next {
                        if let Some(live) = self.live.get_mut(&ended.id) {
                            live.attempts.remove(&ended.step);
                        }
                        let input = Input::StepEnded { step: ended.step, attempt: ended.attempt, result: ended.result };
                        batch.push((ended.id, input));
                        next = if batch.len() < BATCH { self.ended.1.try_recv().ok() } else { None };
                    }
                    self.advance_all(batch).await;
                }
                _ = sleep => {
                    let now = now_ms();
                    let due: Vec<(Uuid, Input)> = self
                        .live
                        .iter()
                        .filter(|(_, l)| l.wake.is_some_and(|w| w <= now))
                        .map(|(id, _)| (*id, Input::Tick))
                        .collect();
                    self.advance_all(due).await;
                }
            }
            // Cancelling a child may cancel its own children: until none is left.
            while !self.cascade.is_empty() {
                let cascade = self.cascade.drain(..).map(|(id, reason)| (id, Input::Cancel { reason })).collect();
                self.advance_all(cascade).await;
            }
            self.admit().await;
        }
        // The attempts stop with the executor; the next leader resumes the executions.
        for live in self.live.values() {
            for attempt in live.attempts.values() {
                attempt.abort();
            }
        }
    }

    /// Does what the API asked, in order; consecutive `Queued` are loaded together.
    async fn handle(&mut self, commands: Vec<Command>) {
        let mut queued = Vec::new();
        for command in commands {
            if let Command::Queued { id } = command {
                // Already here when a sub-workflow step taken up again starts its child again.
                if !self.live.contains_key(&id) {
                    queued.push(id);
                }
                continue;
            }
            self.load_all(std::mem::take(&mut queued)).await;
            match command {
                Command::Queued { .. } => unreachable!("handled above"),
                Command::Signal { id, step, decision, comment, by, reply } => {
                    let answer = self.signal(id, &step, decision, comment, &by).await;
                    let _ = reply.send(answer);
                }
                Command::WatchEnd { id, reply } => match self.live.get_mut(&id) {
                    Some(live) => live.watchers.push(reply),
                    None => {
                        let _ = reply.send(());
                    }
                },
                Command::Cancel { id, reason, reply } => {
                    let answer = if self.live.contains_key(&id) {
                        self.advance(id, Input::Cancel { reason }).await;
                        Ok(())
                    } else {
                        Err(format!("execution {id} is not under way"))
                    };
                    let _ = reply.send(answer);
                }
            }
        }
        self.load_all(queued).await;
    }

    /// Loads the stored executions `ids` into memory, in one read.
    async fn load_all(&mut self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        match workflows::executions_by_id(&self.pool, &ids).await {
            Ok(rows) => {
                for row in rows {
                    self.load(row).await;
                }
            }
            Err(e) => {
                tracing::warn!(executions = ids.len(), error = %e, "queued executions could not be read; the next leader takes them up")
            }
        }
    }

    /// Takes a stored execution into memory (unless it has ended: a trigger that starts an
    /// execution again finds the one it started before).
    async fn load(&mut self, row: workflows::StoredExecution) {
        if matches!(row.status.as_str(), "succeeded" | "failed" | "cancelled") {
            return;
        }
        let definition = match self.definitions.get(&self.pool, &row.workflow, row.version).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(execution = %row.id, error = %e, "the execution's definition cannot be read");
                return;
            }
        };
        let execution: Execution = match serde_json::from_value(row.state.0) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(execution = %row.id, error = %e, "a stored execution cannot be read");
                return;
            }
        };
        self.live.insert(
            row.id,
            Live {
                workflow: row.workflow,
                version: row.version,
                queue: row.queue,
                priority: row.priority,
                queued_at: row.created_at.timestamp_millis(),
                definition,
                execution,
                wake: None,
                attempts: HashMap::new(),
                child: row.trigger.starts_with("parent:"),
                watchers: Vec::new(),
                trigger: row.trigger,
            },
        );
    }

    /// A decision for the approval step `step` of `id`: the end of its running attempt.
    async fn signal(
        &mut self,
        id: Uuid,
        step: &str,
        decision: Decision,
        comment: Option<String>,
        by: &str,
    ) -> Result<(), ProtocolError> {
        let live = self
            .live
            .get(&id)
            .ok_or_else(|| ProtocolError::new(ErrorCode::Conflict, format!("execution {id} is not under way")))?;
        let spec = live.definition.steps.get(step).ok_or_else(|| {
            ProtocolError::field(ErrorCode::NotFound, "step", format!("execution {id} has no step {step:?}"))
        })?;
        if spec.kind != StepKind::Approval {
            return Err(ProtocolError::invalid(
                "step",
                format!("{step:?} is a {} step; only approval steps take a decision", spec.kind.as_str()),
            ));
        }
        let state = &live.execution.steps[step];
        if state.status != StepStatus::Running {
            return Err(ProtocolError::new(
                ErrorCode::Conflict,
                format!("step {step:?} is not waiting for a decision (it is {})", state.status.as_str()),
            ));
        }
        let attempt = state.attempt;
        let result = match decision {
            Decision::Approve => Ok(json!({ "decision": "approve", "by": by, "comment": comment })),
            Decision::Reject => Err(StepError::new(
                Retryable::Rejected,
                match &comment {
                    Some(c) => format!("rejected by {by}: {c}"),
                    None => format!("rejected by {by}"),
                },
            )),
        };
        if !self.advance(id, Input::StepEnded { step: step.to_string(), attempt, result }).await {
            return Err(ProtocolError::new(ErrorCode::Unavailable, "the decision could not be stored; send it again"));
        }
        if let Some(live) = self.live.get_mut(&id)
            && let Some(waiting) = live.attempts.remove(step)
        {
            waiting.abort();
        }
        tracing::info!(execution = %id, step, by, decision = ?decision, "approval decided");
        Ok(())
    }

    /// Starts queued executions while their queues have room.
    async fn admit(&mut self) {
        let now = now_ms();
        let effective = self.effective.borrow().clone();
        let mut running: HashMap<String, usize> = HashMap::new();
        let mut serial_running = std::collections::HashSet::new();
        // Of each serial key, only the oldest waiting execution may start.
        let mut serial_next: HashMap<(String, String), (Millis, Uuid)> = HashMap::new();
        for (id, live) in &self.live {
            match (live.execution.status, live.serial_key()) {
                (ExecutionStatus::Queued, Some(key)) => {
                    let candidate = (live.queued_at, *id);
                    let next = serial_next.entry(key).or_insert(candidate);
                    *next = (*next).min(candidate);
                }
                (ExecutionStatus::Queued, None) => {}
                (_, key) => {
                    serial_running.extend(key);
                }
            }
        }
        let mut waiting = Vec::new();
        for (id, live) in &self.live {
            if live.execution.status == ExecutionStatus::Queued {
                if let Some(key) = live.serial_key()
                    && (serial_running.contains(&key) || serial_next.get(&key).is_some_and(|(_, next)| next != id))
                {
                    continue;
                }
                waiting.push(Waiting {
                    id: *id,
                    queue: live.queue.clone(),
                    priority: live.priority(&effective),
                    queued_at: live.queued_at,
                });
            } else {
                *running.entry(live.queue.clone()).or_default() += 1;
            }
        }
        let children: Vec<Uuid> = self
            .live
            .iter()
            .filter(|(_, l)| l.child && l.execution.status == ExecutionStatus::Queued)
            .map(|(id, _)| *id)
            .collect();
        waiting.retain(|w| !children.contains(&w.id));
        let chosen =
            queue::admit(&waiting, &running, self.settings.queue_concurrency, self.settings.aging_per_minute, now);
        let starts = children.into_iter().chain(chosen).map(|id| (id, Input::Start)).collect();
        self.advance_all(starts).await;
    }

    /// Feeds `input` to execution `id`, stores the result, then does what it says. False when
    /// the result could not be stored (nothing was done; it is tried again at the next wake-up).
    async fn advance(&mut self, id: Uuid, input: Input) -> bool {
        self.advance_all(vec![(id, input)]).await.contains(&id)
    }

    /// [`Executor::advance`] for many inputs at once: each execution takes its inputs in order,
    /// then every changed execution is stored with its events in **one** transaction, and only
    /// then are the actions done. A burst (a thousand steps of a fan-out ending together, a
    /// thousand executions starting on the same second) costs one commit, not one per input.
    /// Returns the executions stored.
    async fn advance_all(&mut self, inputs: Vec<(Uuid, Input)>) -> std::collections::HashSet<Uuid> {
        let now = now_ms();
        // Per execution, in the order first seen: its new state and the actions, in order.
        let mut order: Vec<Uuid> = Vec::new();
        let mut changed: HashMap<Uuid, (ExecutionStatus, Execution, Vec<Action>)> = HashMap::new();
        for (id, input) in inputs {
            let Some(live) = self.live.get(&id) else { continue };
            let (_, execution, actions) = changed.entry(id).or_insert_with(|| {
                order.push(id);
                (live.execution.status, live.execution.clone(), Vec::new())
            });
            actions.extend(execution.advance(&live.definition, input, now));
        }
        let mut saves = Vec::with_capacity(order.len());
        for id in &order {
            let (before, execution, actions) = &changed[id];
            let live = &self.live[id];
            saves.push(workflows::ExecutionChange {
                id: *id,
                status: execution.status.as_str(),
                state: serde_json::to_value(execution).expect("an execution serializes"),
                started: *before == ExecutionStatus::Queued && execution.status != ExecutionStatus::Queued,
                finished: execution.status.is_final(),
                events: event_rows(&self.effects.subjects, *id, live, execution, actions),
            });
        }
        if let Err(e) = workflows::save_executions(&self.pool, &saves).await {
            // Nothing of this is done: the states stay as stored, and they are tried again at
            // the next wake-up (or by the next leader, when this one was fenced).
            tracing::warn!(executions = order.len(), error = %e, "workflow executions' changes could not be stored; they are tried again");
            for id in &order {
                if let Some(live) = self.live.get_mut(id) {
                    live.wake = Some(now_ms() + 1000);
                }
            }
            return Default::default();
        }
        if saves.iter().any(|s| !s.events.is_empty()) {
            self.written.notify_one();
        }
        for id in &order {
            let (_, execution, actions) = changed.remove(id).expect("changed");
            self.act(*id, execution, actions);
        }
        order.into_iter().collect()
    }

    /// Does what the machine said for execution `id`, whose new state `execution` is stored.
    fn act(&mut self, id: Uuid, execution: Execution, actions: Vec<Action>) {
        let Some(live) = self.live.get_mut(&id) else { return };
        let finished = execution.status.is_final();
        live.execution = execution;
        live.wake = None;
        let mut cascade = Vec::new();
        // What the steps started now render their inputs over: built once, shared by them all (a
        // fan-out of a thousand steps would otherwise build it a thousand times).
        let mut scope: Option<Arc<Value>> = None;
        for action in actions {
            match action {
                Action::Run { step, attempt, key, resumed } => {
                    let scope = scope.get_or_insert_with(|| Arc::new(live.execution.scope())).clone();
                    let Some(spec) = live.definition.steps.get(&step).cloned() else { continue };
                    let started_at = live.execution.steps.get(&step).and_then(|s| s.started_at).unwrap_or_else(now_ms);
                    let attempt_run = Attempt {
                        workflow: live.workflow.clone(),
                        execution: id.to_string(),
                        step: step.clone(),
                        key,
                        started_at,
                        spec,
                        scope,
                        attempt,
                        resumed,
                        depth: live.execution.depth,
                    };
                    let effects = self.effects.clone();
                    let workflows = self.handle.clone();
                    let report = self.ended.0.clone();
                    let handle = tokio::spawn(async move {
                        let result = steps::run(&effects, &workflows, &attempt_run).await;
                        let _ = report.send(Ended { id, step: attempt_run.step, attempt, result });
                    });
                    live.attempts.insert(step, handle.abort_handle());
                }
                Action::Cancel { step } => {
                    if let Some(handle) = live.attempts.remove(&step) {
                        handle.abort();
                    }
                    // A sub-workflow ends with the step that waits for it; a job's process is stopped.
                    let kind = live.definition.steps.get(&step).map(|s| s.kind);
                    if kind == Some(StepKind::Job)
                        && let Some(state) = live.execution.steps.get(&step)
                        && let Some(spec) = live.definition.steps.get(&step)
                        && let Ok(node) = steps::job_node(&self.effects, spec, &live.execution.scope())
                    {
                        let (effects, key) = (self.effects.clone(), live.execution.key(&step, state.attempt));
                        tokio::spawn(async move { steps::stop_job(&effects, &node, &key).await });
                    }
                    if kind == Some(StepKind::Workflow)
                        && let Some(state) = live.execution.steps.get(&step)
                    {
                        let child = super::api::child_id(id, &step, state.attempt);
                        cascade.push((child, format!("its parent's step {step:?} was cancelled")));
                    }
                }
                Action::WakeAt(at) => live.wake = Some(at),
                Action::Event(_) => {}
            }
        }
        self.cascade.extend(cascade);
        if finished {
            let status = live.execution.status;
            tracing::info!(execution = %id, workflow = %live.workflow, status = status.as_str(), "workflow execution ended");
            if let Some(live) = self.live.remove(&id) {
                for watcher in live.watchers {
                    let _ = watcher.send(());
                }
            }
        }
    }
}

/// The outbox rows of the events among `actions`.
fn event_rows(
    subjects: &orch_protocol::Subjects,
    id: Uuid,
    live: &Live,
    execution: &Execution,
    actions: &[Action],
) -> Vec<OutboxRow> {
    {
        let now = chrono::Utc::now();
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                _ => None,
            })
            .map(|event| {
                let mut data = WorkflowEventData {
                    execution_id: id.to_string(),
                    workflow: live.workflow.clone(),
                    version: live.version,
                    status: execution.status.as_str().to_string(),
                    step: None,
                    attempt: None,
                    error: None,
                    reason: None,
                    next_at: None,
                    compensation: None,
                };
                let kind = match event {
                    Event::ExecutionStarted => WorkflowEvent::Started,
                    Event::StepStarted { step, attempt } => {
                        (data.step, data.attempt) = (Some(step.clone()), Some(*attempt));
                        WorkflowEvent::StepStarted
                    }
                    Event::StepSucceeded { step, attempt } => {
                        (data.step, data.attempt) = (Some(step.clone()), Some(*attempt));
                        WorkflowEvent::StepSucceeded
                    }
                    Event::StepRetrying { step, attempt, error, next_at } => {
                        (data.step, data.attempt, data.error) =
                            (Some(step.clone()), Some(*attempt), Some(error.clone()));
                        data.next_at = chrono::DateTime::from_timestamp_millis(*next_at).map(|t| t.to_rfc3339());
                        WorkflowEvent::StepRetrying
                    }
                    Event::StepFailed { step, attempt, error } => {
                        (data.step, data.attempt, data.error) =
                            (Some(step.clone()), Some(*attempt), Some(error.clone()));
                        WorkflowEvent::StepFailed
                    }
                    Event::StepSkipped { step, reason } => {
                        (data.step, data.reason) = (Some(step.clone()), Some(reason.clone()));
                        WorkflowEvent::StepSkipped
                    }
                    Event::CompensationStarted { step, compensation } => {
                        (data.step, data.compensation) = (Some(step.clone()), Some(compensation.clone()));
                        WorkflowEvent::CompensationStarted
                    }
                    Event::ExecutionSucceeded => WorkflowEvent::Succeeded,
                    Event::ExecutionFailed { reason } => {
                        data.reason = Some(reason.clone());
                        WorkflowEvent::Failed
                    }
                    Event::ExecutionCancelled { reason } => {
                        data.reason = Some(reason.clone());
                        WorkflowEvent::Cancelled
                    }
                };
                let id = id.to_string();
                events::encode(subjects, EventKind::Workflow(kind), &live.workflow, &id, ORCHESTRATOR, now, &data)
                    .into()
            })
            .collect()
    }
}
