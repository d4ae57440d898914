//! An execution of a workflow as a state machine: given what happened (it started, a step ended,
//! time passed, someone cancelled it, the orchestrator came back after a crash), it updates the
//! steps' states and returns what to do (run a step, cancel one, the events to record, when to
//! look again). Pure and deterministic: times are milliseconds since the epoch passed in, and the
//! executor that runs steps and stores states does nothing but what it is told.
//!
//! The rules:
//! - A step of the flow runs once every step it `needs` is done (succeeded, skipped, or failed
//!   with `on_failure = "continue"`), and its `when` holds; when `when` is false it is skipped.
//! - A failed attempt is retried, after its back-off, while attempts remain and the failure is
//!   of a kind its policy retries; an attempt that outlives its `timeout` fails as `timeout`.
//! - A step that fails for good fails the execution (cancelling what runs), lets the flow go on
//!   (`continue`), or runs its compensation and then fails the execution (`compensate`).
//! - After a crash or a failover, steps that were waiting (`wait`, `wait_event`, `approval`,
//!   `workflow`) go on waiting; any other step that was in flight counts as a failed attempt of
//!   kind `unavailable`, retried only under its policy. A step that completed never runs again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::definition::{Definition, OnFailure, Retryable, StepKind};
use super::expr::Expr;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Queued,
    Running,
    /// A step failed for good and its compensation runs; the execution fails after it.
    Compensating,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        matches!(self, ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Compensating => "compensating",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Waiting for its next attempt (back-off).
    Retrying,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Retrying => "retrying",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub kind: Retryable,
    pub message: String,
}

impl StepError {
    pub fn new(kind: Retryable, message: impl Into<String>) -> StepError {
        StepError { kind, message: message.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// The attempt running or last run (0 before the first).
    pub attempt: u32,
    /// When the running attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When the running attempt times out, or the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

impl StepState {
    fn pending() -> StepState {
        StepState { status: StepStatus::Pending, attempt: 0, started_at: None, due_at: None, output: None, error: None }
    }
}

/// An execution's state: what is stored, all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub status: ExecutionStatus,
    pub inputs: Value,
    pub steps: BTreeMap<String, StepState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How deep it nests: 0, or one more than the execution whose step started it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What happened to an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// It leaves its queue and starts.
    Start,
    /// Time passed: timeouts and back-offs that are due.
    Tick,
    /// An attempt of a step ended.
    StepEnded { step: String, attempt: u32, result: Result<Value, StepError> },
    /// Someone cancelled it.
    Cancel { reason: String },
    /// The orchestrator took it up again after a crash or a failover.
    Resumed,
}

/// What the executor is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run attempt `attempt` of `step` (its inputs rendered over [`Execution::scope`]); the idempotency
    /// key is stable for that attempt. `resumed` when an attempt that was waiting goes on
    /// waiting after a restart (its `started_at` is the original one).
    Run { step: String, attempt: u32, key: String, resumed: bool },
    /// Stop the running attempt of `step` (it timed out, or the execution ended).
    Cancel { step: String },
    /// Record and publish this event.
    Event(Event),
    /// Look again (send [`Input::Tick`]) at this time.
    WakeAt(Millis),
}

/// The events of an execution (`orch.evt.workflow.<workflow>.<kind>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ExecutionStarted,
    StepStarted { step: String, attempt: u32 },
    StepSucceeded { step: String, attempt: u32 },
    StepRetrying { step: String, attempt: u32, error: String, next_at: Millis },
    StepFailed { step: String, attempt: u32, error: String },
    StepSkipped { step: String, reason: String },
    CompensationStarted { step: String, compensation: String },
    ExecutionSucceeded,
    ExecutionFailed { reason: String },
    ExecutionCancelled { reason: String },
}

impl Event {
    /// The event's kind: the last token of its subject.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ExecutionStarted => "started",
            Event::StepStarted { .. } => "step_started",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepRetrying { .. } => "step_retrying",
            Event::StepFailed { .. } => "step_failed",
            Event::StepSkipped { .. } => "step_skipped",
            Event::CompensationStarted { .. } => "compensation_started",
            Event::ExecutionSucceeded => "succeeded",
            Event::ExecutionFailed { .. } => "failed",
            Event::ExecutionCancelled { .. } => "cancelled",
        }
    }
}

/// Step kinds that wait for something that goes on without the orchestrator: after a restart
/// they go on waiting (a job re-attaches to its process) rather than count as failed.
fn waits(kind: StepKind) -> bool {
    matches!(kind, StepKind::Wait | StepKind::WaitEvent | StepKind::Approval | StepKind::Workflow | StepKind::Job)
}

impl Execution {
    /// A queued execution of `definition` with `inputs` (already checked against its inputs).
    pub fn new(id: impl Into<String>, definition: &Definition, inputs: Value) -> Execution {
        Execution {
            id: id.into(),
            status: ExecutionStatus::Queued,
            inputs,
            steps: definition.steps.keys().map(|id| (id.clone(), StepState::pending())).collect(),
            deadline: None,
            reason: None,
            depth: 0,
        }
    }

    /// A new execution `id` that re-runs this ended one from where it failed: the steps that
    /// succeeded or were skipped keep their state and outputs (they do not run again); every
    /// other step is pending. Queued, with the same inputs and depth.
    pub fn rerun(&self, id: impl Into<String>, definition: &Definition) -> Execution {
        let mut next = Execution::new(id, definition, self.inputs.clone());
        next.depth = self.depth;
        for (step, state) in &self.steps {
            let kept = matches!(state.status, StepStatus::Succeeded | StepStatus::Skipped);
            let compensation = definition.steps.get(step).is_some_and(|s| s.compensation);
            if kept && !compensation && next.steps.contains_key(step) {
                next.steps.insert(step.clone(), state.clone());
            }
        }
        next
    }

    /// What the expressions of a step read.
    pub fn scope(&self) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .map(|(id, s)| {
                (id.clone(), json!({ "status": s.status.as_str(), "output": s.output.clone().unwrap_or(Value::Null) }))
            })
            .collect();
        json!({ "inputs": self.inputs, "steps": steps, "execution": { "id": self.id } })
    }

    /// The idempotency key of an attempt: a service called by it can de-duplicate on it.
    pub fn key(&self, step: &str, attempt: u32) -> String {
        format!("{}:{step}:{attempt}", self.id)
    }

    /// Takes `input` at `now`; returns what to do.
    pub fn advance(&mut self, definition: &Definition, input: Input, now: Millis) -> Vec<Action> {
        let mut out = Vec::new();
        if self.status.is_final() {
            return out;
        }
        match input {
            Input::Start => {
                if self.status == ExecutionStatus::Queued {
                    self.status = ExecutionStatus::Running;
                    self.deadline = definition.workflow.timeout.map(|t| now + t.as_millis() as Millis);
                    out.push(Action::Event(Event::ExecutionStarted));
                }
            }
            Input::Tick => self.expire(definition, now, &mut out),
            Input::StepEnded { step, attempt, result } => {
                let current =
                    self.steps.get(&step).is_some_and(|s| s.status == StepStatus::Running && s.attempt == attempt);
                if current {
                    match result {
                        Ok(output) => {
                            let state = self.steps.get_mut(&step).expect("checked");
                            state.status = StepStatus::Succeeded;
                            state.output = Some(output);
                            state.due_at = None;
                            state.error = None;
                            out.push(Action::Event(Event::StepSucceeded { step, attempt }));
                        }
                        Err(error) => self.failed(definition, &step, error, now, &mut out),
                    }
                }
            }
            Input::Cancel { reason } => {
                self.end(ExecutionStatus::Cancelled, reason.clone(), &mut out);
                out.push(Action::Event(Event::ExecutionCancelled { reason }));
                return out;
            }
            Input::Resumed => {
                let running: Vec<String> = self
                    .steps
                    .iter()
                    .filter(|(_, s)| s.status == StepStatus::Running)
                    .map(|(id, _)| id.clone())
                    .collect();
                for step in running {
                    // An earlier step's failure may have ended the execution meanwhile.
                    let state = &self.steps[&step];
                    if state.status != StepStatus::Running || self.status.is_final() {
                        continue;
                    }
                    let kind = definition.steps.get(&step).map(|s| s.kind);
                    if kind.is_some_and(waits) {
                        out.push(Action::Run {
                            step: step.clone(),
                            attempt: state.attempt,
                            key: self.key(&step, state.attempt),
                            resumed: true,
                        });
                    } else {
                        let error = StepError::new(
                            Retryable::Unavailable,
                            "the orchestrator stopped while this attempt ran; whether it took effect is not known",
                        );
                        self.failed(definition, &step, error, now, &mut out);
                    }
                }
                self.expire(definition, now, &mut out);
            }
        }
        if !self.status.is_final() && self.status != ExecutionStatus::Queued {
            self.schedule(definition, now, &mut out);
            self.finish(&mut out);
        }
        if let Some(at) = self.next_wake() {
            out.push(Action::WakeAt(at));
        }
        out
    }

    /// The steps in `status` whose `due_at` has come by `now`: running attempts that timed out,
    /// retries whose back-off is over.
    fn due(&self, status: StepStatus, now: Millis) -> Vec<String> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status == status && s.due_at.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Timeouts of attempts and of the execution that are due at `now`.
    fn expire(&mut self, definition: &Definition, now: Millis, out: &mut Vec<Action>) {
        if self.deadline.is_some_and(|d| d <= now) && self.status == ExecutionStatus::Running {
            let reason = "the execution ran longer than its timeout".to_string();
            self.end(ExecutionStatus::Failed, reason.clone(), out);
            out.push(Action::Event(Event::ExecutionFailed { reason }));
            return;
        }
        for step in self.due(StepStatus::Running, now) {
            out.push(Action::Cancel { step: step.clone() });
            let timeout = definition.steps.get(&step).and_then(|s| s.timeout).unwrap_or_default();
            let error =
                StepError::new(Retryable::Timeout, format!("the attempt ran longer than its timeout ({timeout:?})"));
            self.failed(definition, &step, error, now, out);
        }
    }

    /// A failed attempt: retried, or the step fails for good and its `on_failure` applies.
    fn failed(&mut self, definition: &Definition, step: &str, error: StepError, now: Millis, out: &mut Vec<Action>) {
        let Some(spec) = definition.steps.get(step) else { return };
        let state = self.steps.get_mut(step).expect("every step has a state");
        let attempt = state.attempt;
        if attempt < spec.retry.attempts && spec.retry.on.contains(&error.kind) && !spec.compensation {
            let next_at = now + spec.retry.delay_before(attempt + 1).as_millis() as Millis;
            state.status = StepStatus::Retrying;
            state.due_at = Some(next_at);
            out.push(Action::Event(Event::StepRetrying {
                step: step.to_string(),
                attempt,
                error: error.message.clone(),
                next_at,
            }));
            state.error = Some(error);
            return;
        }
        self.fail_for_good(definition, step, error, now, out);
    }

    /// The step fails with no attempt left: its `on_failure` applies.
    fn fail_for_good(
        &mut self,
        definition: &Definition,
        step: &str,
        error: StepError,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(spec) = definition.steps.get(step) else { return };
        let state = self.steps.get_mut(step).expect("every step has a state");
        let attempt = state.attempt;
        state.status = StepStatus::Failed;
        state.due_at = None;
        out.push(Action::Event(Event::StepFailed { step: step.to_string(), attempt, error: error.message.clone() }));
        let message = format!("step {step} failed: {}", error.message);
        state.error = Some(error);
        if spec.compensation {
            // A compensation that fails ends the execution all the same.
            return;
        }
        match (spec.on_failure, &spec.compensate_with) {
            (OnFailure::Continue, _) => {}
            (OnFailure::Compensate, Some(with)) if self.status == ExecutionStatus::Running => {
                self.cancel_running(out);
                self.status = ExecutionStatus::Compensating;
                self.reason = Some(message);
                out.push(Action::Event(Event::CompensationStarted {
                    step: step.to_string(),
                    compensation: with.clone(),
                }));
                self.start_attempt(definition, with, now, out);
            }
            _ => {
                if self.status == ExecutionStatus::Running {
                    self.end(ExecutionStatus::Failed, message.clone(), out);
                    out.push(Action::Event(Event::ExecutionFailed { reason: message }));
                }
            }
        }
    }

    /// Starts what can start: flow steps whose needs are done, and retries that are due.
    fn schedule(&mut self, definition: &Definition, now: Millis, out: &mut Vec<Action>) {
        if self.status != ExecutionStatus::Running {
            return;
        }
        for step in self.due(StepStatus::Retrying, now) {
            self.start_attempt(definition, &step, now, out);
        }
        // Repeat: a skipped step can make its dependents ready at once.
        loop {
            let ready: Vec<String> = definition
                .flow()
                .filter(|(id, spec)| {
                    self.steps[*id].status == StepStatus::Pending && spec.needs.iter().all(|n| self.done(definition, n))
                })
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                return;
            }
            for step in ready {
                let spec = &definition.steps[&step];
                let holds = match &spec.when {
                    None => Ok(true),
                    Some(when) => Expr::parse(when).and_then(|e| e.eval_bool(&self.scope())),
                };
                match holds {
                    Ok(true) => self.start_attempt(definition, &step, now, out),
                    Ok(false) => {
                        self.steps.get_mut(&step).expect("known").status = StepStatus::Skipped;
                        let reason = format!("`when` is false: {}", spec.when.as_deref().unwrap_or_default());
                        out.push(Action::Event(Event::StepSkipped { step, reason }));
                    }
                    Err(e) => {
                        // A condition that cannot be evaluated fails the step (no retry: it
                        // would give the same answer).
                        self.steps.get_mut(&step).expect("known").attempt = 1;
                        self.fail_for_good(definition, &step, StepError::new(Retryable::Error, e.0), now, out);
                        if self.status != ExecutionStatus::Running {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn start_attempt(&mut self, definition: &Definition, step: &str, now: Millis, out: &mut Vec<Action>) {
        let timeout = definition.steps.get(step).and_then(|s| s.timeout);
        let state = self.steps.get_mut(step).expect("every step has a state");
        state.attempt += 1;
        state.status = StepStatus::Running;
        state.started_at = Some(now);
        state.due_at = timeout.map(|t| now + t.as_millis() as Millis);
        let attempt = state.attempt;
        out.push(Action::Event(Event::StepStarted { step: step.to_string(), attempt }));
        out.push(Action::Run { step: step.to_string(), attempt, key: self.key(step, attempt), resumed: false });
    }

    /// Done, as far as the steps that need it are concerned.
    fn done(&self, definition: &Definition, step: &str) -> bool {
        match self.steps.get(step).map(|s| s.status) {
            Some(StepStatus::Succeeded | StepStatus::Skipped) => true,
            Some(StepStatus::Failed) => definition.steps.get(step).is_some_and(|s| s.on_failure == OnFailure::Continue),
            _ => false,
        }
    }

    /// Ends the execution once nothing is left to do.
    fn finish(&mut self, out: &mut Vec<Action>) {
        let active = self.steps.values().any(|s| matches!(s.status, StepStatus::Running | StepStatus::Retrying));
        match self.status {
            ExecutionStatus::Compensating if !active => {
                let reason = self.reason.clone().unwrap_or_else(|| "a step failed".into());
                self.end(ExecutionStatus::Failed, reason.clone(), out);
                out.push(Action::Event(Event::ExecutionFailed { reason }));
            }
            ExecutionStatus::Running if !active => {
                // Nothing runs and nothing can start: every flow step has ended.
                self.status = ExecutionStatus::Succeeded;
                out.push(Action::Event(Event::ExecutionSucceeded));
            }
            _ => {}
        }
    }

    fn cancel_running(&mut self, out: &mut Vec<Action>) {
        for (id, state) in self.steps.iter_mut() {
            match state.status {
                StepStatus::Running => {
                    state.status = StepStatus::Cancelled;
                    state.due_at = None;
                    out.push(Action::Cancel { step: id.clone() });
                }
                StepStatus::Retrying => {
                    state.status = StepStatus::Cancelled;
                    state.due_at = None;
                }
                _ => {}
            }
        }
    }

    /// Ends the execution with `status`: what runs is cancelled, what waits will not run.
    fn end(&mut self, status: ExecutionStatus, reason: String, out: &mut Vec<Action>) {
        self.cancel_running(out);
        for state in self.steps.values_mut() {
            if state.status == StepStatus::Pending {
                state.status = StepStatus::Cancelled;
            }
        }
        self.status = status;
        self.reason = Some(reason);
    }

    /// The earliest time something is due: a back-off, an attempt's timeout, the deadline.
    fn next_wake(&self) -> Option<Millis> {
        if self.status.is_final() {
            return None;
        }
        let steps = self
            .steps
            .values()
            .filter(|s| matches!(s.status, StepStatus::Running | StepStatus::Retrying))
            .filter_map(|s| s.due_at);
        steps.chain(self.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(steps: &str) -> Definition {
        Definition::parse(&format!("[workflow]\nname = \"w\"\n{steps}")).unwrap()
    }

    fn runs(actions: &[Action]) -> Vec<(String, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { step, attempt, .. } => Some((step.clone(), *attempt)),
                _ => None,
            })
            .collect()
    }

    fn events(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e.kind()),
                _ => None,
            })
            .collect()
    }

    fn ok(step: &str, attempt: u32, output: Value) -> Input {
        Input::StepEnded { step: step.into(), attempt, result: Ok(output) }
    }

    fn err(step: &str, attempt: u32, kind: Retryable) -> Input {
        Input::StepEnded { step: step.into(), attempt, result: Err(StepError::new(kind, "boom")) }
    }

    #[test]
    fn a_rerun_keeps_what_succeeded_and_runs_the_rest() {
        let def = definition(FAN);
        let mut first = Execution::new("x", &def, json!({}));
        first.advance(&def, Input::Start, 0);
        first.advance(&def, ok("a", 1, json!(1)), 1);
        first.advance(&def, ok("b", 1, json!(2)), 2);
        first.advance(&def, err("c", 1, Retryable::Error), 3);
        assert_eq!(first.status, ExecutionStatus::Failed);
        let mut again = first.rerun("y", &def);
        assert_eq!(again.status, ExecutionStatus::Queued);
        assert_eq!(again.steps["a"].output, Some(json!(1)));
        assert_eq!(again.steps["b"].status, StepStatus::Succeeded);
        assert_eq!(again.steps["c"].status, StepStatus::Pending);
        assert_eq!(again.steps["d"].status, StepStatus::Pending);
        let actions = again.advance(&def, Input::Start, 10);
        assert_eq!(runs(&actions), [("c".to_string(), 1)], "only the failed step runs; d waits for it");
        let actions = again.advance(&def, ok("c", 1, json!(3)), 11);
        assert_eq!(runs(&actions), [("d".to_string(), 1)]);
    }

    const FAN: &str = r#"
[steps.a]
kind = "wait"
duration = "1s"
[steps.b]
kind = "wait"
duration = "1s"
needs = ["a"]
[steps.c]
kind = "wait"
duration = "1s"
needs = ["a"]
[steps.d]
kind = "wait"
duration = "1s"
needs = ["b", "c"]
"#;

    #[test]
    fn steps_run_in_dependency_order_fanning_out_and_in() {
        let d = definition(FAN);
        let mut e = Execution::new("x1", &d, json!({}));
        let first = e.advance(&d, Input::Start, 0);
        assert_eq!(runs(&first), [("a".into(), 1)]);
        assert_eq!(events(&first), ["started", "step_started"]);
        let fan_out = e.advance(&d, ok("a", 1, json!(1)), 10);
        assert_eq!(runs(&fan_out), [("b".into(), 1), ("c".into(), 1)]);
        assert!(runs(&e.advance(&d, ok("b", 1, json!(2)), 20)).is_empty(), "d waits for c too");
        assert_eq!(runs(&e.advance(&d, ok("c", 1, json!(3)), 30)), [("d".into(), 1)]);
        let end = e.advance(&d, ok("d", 1, json!(4)), 40);
        assert_eq!(events(&end), ["step_succeeded", "succeeded"]);
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        // Nothing happens to an ended execution, and a late report changes nothing.
        assert!(e.advance(&d, ok("d", 1, json!(5)), 50).is_empty());
    }

    #[test]
    fn the_idempotency_key_is_stable_per_attempt() {
        let d = definition(FAN);
        let mut e = Execution::new("x1", &d, json!({}));
        let actions = e.advance(&d, Input::Start, 0);
        assert!(actions.iter().any(|a| matches!(a, Action::Run { key, .. } if key == "x1:a:1")));
    }

    #[test]
    fn a_failed_attempt_is_retried_after_its_backoff_then_fails_the_execution() {
        let d = definition(
            r#"
[steps.call]
kind = "call"
subject = "svc.do"
retry = { attempts = 3, backoff = "1s", multiplier = 2.0 }
[steps.after]
kind = "wait"
duration = "1s"
needs = ["call"]
"#,
        );
        let mut e = Execution::new("x", &d, json!({}));
        e.advance(&d, Input::Start, 0);
        let retry = e.advance(&d, err("call", 1, Retryable::Error), 100);
        assert_eq!(events(&retry), ["step_retrying"]);
        assert!(retry.contains(&Action::WakeAt(1100)), "{retry:?}");
        assert!(runs(&e.advance(&d, Input::Tick, 1099)).is_empty(), "not before its back-off");
        assert_eq!(runs(&e.advance(&d, Input::Tick, 1100)), [("call".into(), 2)]);
        // A report of the earlier attempt is stale: ignored.
        assert!(events(&e.advance(&d, err("call", 1, Retryable::Error), 1150)).is_empty());
        let second = e.advance(&d, err("call", 2, Retryable::Error), 1200);
        assert!(second.contains(&Action::WakeAt(3200)), "doubled back-off: {second:?}");
        e.advance(&d, Input::Tick, 3200);
        let last = e.advance(&d, err("call", 3, Retryable::Error), 3300);
        assert_eq!(events(&last), ["step_failed", "failed"]);
        assert_eq!(e.status, ExecutionStatus::Failed);
        assert_eq!(e.steps["after"].status, StepStatus::Cancelled);
        assert!(e.reason.as_deref().unwrap().contains("step call failed"));
    }

    #[test]
    fn only_the_failures_a_policy_names_are_retried() {
        let d = definition(
            "[steps.call]\nkind = \"call\"\nsubject = \"x\"\nretry = { attempts = 5, on = [\"timeout\"] }\n",
        );
        let mut e = Execution::new("x", &d, json!({}));
        e.advance(&d, Input::Start, 0);
        assert_eq!(events(&e.advance(&d, err("call", 1, Retryable::Error), 10)), ["step_failed", "failed"]);
    }

    #[test]
    fn an_attempt_past_its_timeout_is_cancelled_and_counts_as_a_timeout() {
        let d = definition(
            "[steps.call]\nkind = \"call\"\nsubject = \"s\"\ntimeout = \"5s\"\nretry = { attempts = 2, backoff = \"1s\" }\n",
        );
        let mut e = Execution::new("x", &d, json!({}));
        let start = e.advance(&d, Input::Start, 0);
        assert!(start.contains(&Action::WakeAt(5000)));
        let late = e.advance(&d, Input::Tick, 5000);
        assert!(late.contains(&Action::Cancel { step: "call".into() }));
        assert_eq!(events(&late), ["step_retrying"]);
        assert_eq!(e.steps["call"].error.as_ref().unwrap().kind, Retryable::Timeout);
    }

    #[test]
    fn conditions_skip_steps_and_a_skipped_need_counts_as_done() {
        let d = definition(
            r#"
[inputs.crashes]
required = true
[steps.check]
kind = "call"
subject = "s"
[steps.page]
kind = "call"
subject = "pager"
needs = ["check"]
when = "inputs.crashes >= 3 && steps.check.output.code != 200"
[steps.report]
kind = "wait"
duration = "1s"
needs = ["page"]
"#,
        );
        let mut e = Execution::new("x", &d, json!({ "crashes": 5 }));
        e.advance(&d, Input::Start, 0);
        let next = e.advance(&d, ok("check", 1, json!({ "code": 200 })), 10);
        assert_eq!(events(&next), ["step_succeeded", "step_skipped", "step_started"]);
        assert_eq!(runs(&next), [("report".into(), 1)]);
        assert_eq!(e.steps["page"].status, StepStatus::Skipped);
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_fails_its_step() {
        let d = definition("[steps.a]\nkind = \"wait\"\nduration = \"1s\"\nwhen = \"inputs.missing > 1\"\n");
        let mut e = Execution::new("x", &d, json!({}));
        let actions = e.advance(&d, Input::Start, 0);
        assert_eq!(events(&actions), ["started", "step_failed", "failed"]);
    }

    #[test]
    fn continue_lets_the_flow_go_on_after_a_failure() {
        let d = definition(
            r#"
[steps.optional]
kind = "call"
subject = "s"
on_failure = "continue"
[steps.next]
kind = "wait"
duration = "1s"
needs = ["optional"]
"#,
        );
        let mut e = Execution::new("x", &d, json!({}));
        e.advance(&d, Input::Start, 0);
        assert_eq!(runs(&e.advance(&d, err("optional", 1, Retryable::Error), 10)), [("next".into(), 1)]);
        e.advance(&d, ok("next", 1, json!(null)), 20);
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(e.steps["optional"].status, StepStatus::Failed);
    }

    #[test]
    fn a_compensated_failure_runs_the_compensation_then_fails() {
        let d = definition(
            r#"
[steps.deploy]
kind = "call"
subject = "deploy"
on_failure = "compensate"
compensate_with = "rollback"
[steps.side]
kind = "wait"
duration = "1m"
[steps.rollback]
kind = "call"
subject = "rollback"
compensation = true
"#,
        );
        let mut e = Execution::new("x", &d, json!({}));
        assert_eq!(runs(&e.advance(&d, Input::Start, 0)), [("deploy".into(), 1), ("side".into(), 1)]);
        let failing = e.advance(&d, err("deploy", 1, Retryable::Error), 10);
        assert_eq!(events(&failing), ["step_failed", "compensation_started", "step_started"]);
        assert!(failing.contains(&Action::Cancel { step: "side".into() }));
        assert_eq!(runs(&failing), [("rollback".into(), 1)]);
        assert_eq!(e.status, ExecutionStatus::Compensating);
        let end = e.advance(&d, ok("rollback", 1, json!("rolled back")), 20);
        assert_eq!(events(&end), ["step_succeeded", "failed"]);
        assert_eq!(e.status, ExecutionStatus::Failed);
    }

    #[test]
    fn cancel_stops_what_runs_and_what_waits() {
        let d = definition(FAN);
        let mut e = Execution::new("x", &d, json!({}));
        e.advance(&d, Input::Start, 0);
        let actions = e.advance(&d, Input::Cancel { reason: "by operator".into() }, 5);
        assert!(actions.contains(&Action::Cancel { step: "a".into() }));
        assert_eq!(events(&actions), ["cancelled"]);
        assert!(e.steps.values().all(|s| s.status == StepStatus::Cancelled));
    }

    #[test]
    fn after_a_restart_waits_go_on_and_other_steps_in_flight_count_as_failed_attempts() {
        let d = definition(
            r#"
[steps.pause]
kind = "wait"
duration = "1h"
[steps.call]
kind = "call"
subject = "s"
retry = { attempts = 2, backoff = "1s" }
[steps.once]
kind = "restart"
service = "db"
on_failure = "continue"
"#,
        );
        let mut e = Execution::new("x", &d, json!({}));
        e.advance(&d, Input::Start, 0);
        // The stored state, as a new leader loads it.
        let mut resumed: Execution = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        let actions = resumed.advance(&d, Input::Resumed, 60_000);
        let resumed_runs: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { step, attempt, resumed, .. } => Some((step.as_str(), *attempt, *resumed)),
                _ => None,
            })
            .collect();
        assert_eq!(resumed_runs, [("pause", 1, true)], "the wait goes on; nothing else runs again at once");
        assert_eq!(resumed.steps["call"].status, StepStatus::Retrying, "retried under its policy");
        assert_eq!(resumed.steps["once"].status, StepStatus::Failed, "no retry allowed: not run twice");
        assert_eq!(resumed.status, ExecutionStatus::Running);
        assert!(actions.contains(&Action::WakeAt(61_000)), "the call's retry is due after its back-off: {actions:?}");
    }

    #[test]
    fn the_execution_timeout_fails_it() {
        let d = Definition::parse(
            "[workflow]\nname = \"w\"\ntimeout = \"10s\"\n[steps.a]\nkind = \"wait\"\nduration = \"1h\"\n",
        )
        .unwrap();
        let mut e = Execution::new("x", &d, json!({}));
        assert!(e.advance(&d, Input::Start, 0).contains(&Action::WakeAt(10_000)));
        let actions = e.advance(&d, Input::Tick, 10_000);
        assert_eq!(events(&actions), ["failed"]);
        assert!(actions.contains(&Action::Cancel { step: "a".into() }));
    }
}
