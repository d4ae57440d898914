//! A workflow definition: a TOML document naming the workflow, its inputs and its steps, the
//! steps forming a DAG through `needs`. Parsing reports TOML errors with their line; validation
//! reports every problem at once, each with its field path (`steps.restart.service`) and the line
//! of its step, like the manifest of managed services. `docs/workflows.md` documents every field.
//!
//! ```toml
//! [workflow]
//! name = "remediate"
//! queue = "remediation"
//! priority = 70
//!
//! [inputs.service]
//! required = true
//!
//! [steps.restart]
//! kind = "restart"
//! service = "${{ inputs.service }}"
//!
//! [steps.healthy]
//! kind = "wait_event"
//! needs = ["restart"]
//! subject = "orch.evt.lifecycle.*.ready"
//! filter = "event.subject == inputs.service"
//! timeout = "2m"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use orch_protocol::health::duration;
use orch_protocol::registry::is_valid_name;
use serde::{Deserialize, Serialize};

use super::expr::{self, Expr};
use crate::problems::{Problem, line_of};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 1000;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Calls a service: a NATS request to `subject`, or HTTP `method` `path` on a healthy
    /// instance of `service` chosen by `strategy`; `body` is sent.
    Call,
    /// Runs `command` with `args` as a one-shot process on `node`'s agent: its exit code, the
    /// tail of its output and its log.
    Job,
    /// Waits `duration`, or `until` a time.
    Wait,
    /// Waits for an event on `subject` (of the events stream) for which `filter` holds, at most
    /// `timeout`.
    WaitEvent,
    /// Waits for a person's decision, sent as a signal (`approve` or `reject`) through the API.
    Approval,
    /// Runs the workflow `workflow` with `inputs` and waits for its end.
    Workflow,
    /// Restarts the managed service `service`.
    Restart,
    /// Sets the priority of `service` to `value` (through the guardrails), for `ttl` if given.
    SetPriority,
    /// Puts `service` (or the instance `instance`) in maintenance, or out with `enabled = false`.
    Maintenance,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Call => "call",
            StepKind::Job => "job",
            StepKind::Wait => "wait",
            StepKind::WaitEvent => "wait_event",
            StepKind::Approval => "approval",
            StepKind::Workflow => "workflow",
            StepKind::Restart => "restart",
            StepKind::SetPriority => "set_priority",
            StepKind::Maintenance => "maintenance",
        }
    }

    /// The kind's own fields: which it needs and which it also takes.
    fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            StepKind::Call => (&[], &["service", "subject", "method", "path", "body", "strategy"]),
            StepKind::Job => (&["command"], &["args", "node", "env"]),
            StepKind::Wait => (&[], &["duration", "until"]),
            StepKind::WaitEvent => (&["subject", "timeout"], &["filter"]),
            StepKind::Approval => (&[], &["prompt"]),
            StepKind::Workflow => (&["workflow"], &["inputs"]),
            StepKind::Restart => (&["service"], &[]),
            StepKind::SetPriority => (&["service", "value"], &["ttl", "reason"]),
            StepKind::Maintenance => (&[], &["service", "instance", "enabled", "reason"]),
        }
    }
}

/// What happens when a step fails for good (its retries spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The execution fails; steps under way are cancelled (the default).
    #[default]
    Fail,
    /// The step counts as done (failed); the steps that need it run.
    Continue,
    /// The step named by `compensate_with` runs, then the execution fails.
    Compensate,
}

/// Which failures a step retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retryable {
    /// The step ran longer than its `timeout`.
    Timeout,
    /// The step reported an error (a call's error reply, a job's non-zero exit).
    Error,
    /// What the step needed was not there (no healthy instance, no agent, NATS unavailable).
    Unavailable,
    /// A person rejected an approval. Not retried unless listed (a retry asks again).
    Rejected,
}

/// A step's retry policy: `attempts` in all (1: no retry), waiting `backoff`, multiplied by
/// `multiplier` after each attempt up to `max_backoff`, on the failures listed in `on`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "one")]
    pub attempts: u32,
    #[serde(default = "second", with = "duration")]
    pub backoff: Duration,
    #[serde(default = "two")]
    pub multiplier: f64,
    #[serde(default = "minute", with = "duration")]
    pub max_backoff: Duration,
    #[serde(default = "all_retryable")]
    pub on: Vec<Retryable>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 1, backoff: second(), multiplier: 2.0, max_backoff: minute(), on: all_retryable() }
    }
}

impl Retry {
    /// The wait before attempt `next` (2 for the first retry).
    pub fn delay_before(&self, next: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(next.saturating_sub(2).min(60) as i32);
        self.backoff.mul_f64(factor.min(1e6)).min(self.max_backoff)
    }
}

fn one() -> u32 {
    1
}
fn two() -> f64 {
    2.0
}
fn second() -> Duration {
    Duration::from_secs(1)
}
fn minute() -> Duration {
    Duration::from_secs(60)
}
fn all_retryable() -> Vec<Retryable> {
    vec![Retryable::Timeout, Retryable::Error, Retryable::Unavailable]
}
fn default_queue() -> String {
    "default".into()
}
fn default_priority() -> u8 {
    50
}

/// `[workflow]`: the workflow's name and where its executions wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The queue its executions wait in.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// 0-100; higher runs first within the queue.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// A service whose effective priority (which the AI engine steers) the executions take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_priority_of: Option<String>,
    /// The longest an execution may run.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `[inputs.<name>]`: an input of the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `[steps.<id>]`: one step. The fields after `on_failure` belong to the kinds (see
/// [`StepKind`]); a field the kind does not take is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub kind: StepKind,
    /// Steps that must be done first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// A CEL condition: the step is skipped when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The longest one attempt may run.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The compensating step (with `on_failure = "compensate"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate_with: Option<String>,
    /// Runs only as another step's compensation, never in the normal flow.
    #[serde(default)]
    pub compensation: bool,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::registry::discovery::Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl StepSpec {
    /// The kind fields that are set, by name.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut mark = |name: &'static str, present: bool| {
            if present {
                set.push(name);
            }
        };
        mark("service", self.service.is_some());
        mark("instance", self.instance.is_some());
        mark("subject", self.subject.is_some());
        mark("method", self.method.is_some());
        mark("path", self.path.is_some());
        mark("body", self.body.is_some());
        mark("strategy", self.strategy.is_some());
        mark("command", self.command.is_some());
        mark("args", self.args.is_some());
        mark("node", self.node.is_some());
        mark("env", self.env.is_some());
        mark("duration", self.duration.is_some());
        mark("until", self.until.is_some());
        mark("filter", self.filter.is_some());
        mark("prompt", self.prompt.is_some());
        mark("workflow", self.workflow.is_some());
        mark("inputs", self.inputs.is_some());
        mark("value", self.value.is_some());
        mark("ttl", self.ttl.is_some());
        mark("reason", self.reason.is_some());
        mark("enabled", self.enabled.is_some());
        // `timeout` is a common field but one kind needs it: checked with the kind's fields.
        mark("timeout", self.timeout.is_some());
        set
    }

    /// The values whose strings may hold `${{ … }}`, by field.
    fn templated(&self) -> Vec<(&'static str, serde_json::Value)> {
        let text = |v: &Option<String>| v.clone().map(serde_json::Value::String);
        let mut out = Vec::new();
        for (name, value) in [
            ("service", text(&self.service)),
            ("instance", text(&self.instance)),
            ("subject", text(&self.subject)),
            ("path", text(&self.path)),
            ("command", text(&self.command)),
            ("node", text(&self.node)),
            ("until", text(&self.until)),
            ("prompt", text(&self.prompt)),
            ("reason", text(&self.reason)),
            ("body", self.body.clone()),
            ("value", self.value.clone()),
            ("args", self.args.clone().map(|a| serde_json::json!(a))),
            ("env", self.env.clone().map(|e| serde_json::json!(e))),
            ("inputs", self.inputs.clone().map(|i| serde_json::json!(i))),
        ] {
            if let Some(value) = value {
                out.push((name, value));
            }
        }
        out
    }
}

/// The whole definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub workflow: Header,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    pub steps: BTreeMap<String, StepSpec>,
    /// `[[schedule]]`: cron schedules that start executions.
    #[serde(default, rename = "schedule", skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<super::schedule::ScheduleSpec>,
    /// `[[on_event]]`: events that start executions.
    #[serde(default, rename = "on_event", skip_serializing_if = "Vec::is_empty")]
    pub event_triggers: Vec<super::trigger::EventTrigger>,
    /// `[[webhook]]`: signed HTTP deliveries that start executions.
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<super::hook::WebhookSpec>,
}

/// Everything wrong with a definition.
pub type DefinitionError = crate::problems::Problems;

/// Step ids and input names: letters, digits, `-` and `_`, starting with a letter (CEL reads
/// `steps.<id>` and `inputs.<name>`, so `-` is allowed only where CEL can index: see docs).
fn is_valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Definition {
    /// Parses and validates `text`. Every problem is reported, each with the line of its step.
    pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
        let definition: Definition = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            DefinitionError::one("workflow", "workflow", line, e.message())
        })?;
        let problems = definition.problems();
        if problems.is_empty() {
            return Ok(definition);
        }
        let problems = problems
            .into_iter()
            .map(|mut p| {
                p.line = match p.field.split('.').collect::<Vec<_>>().as_slice() {
                    ["steps", id, ..] => table_line(text, "steps", id),
                    ["inputs", name, ..] => table_line(text, "inputs", name),
                    ["workflow", ..] => table_line(text, "workflow", ""),
                    [first, ..] if first.starts_with("schedule[") => array_line(text, "schedule", first),
                    [first, ..] if first.starts_with("on_event[") => array_line(text, "on_event", first),
                    [first, ..] if first.starts_with("webhook[") => array_line(text, "webhook", first),
                    _ => None,
                };
                p
            })
            .collect();
        Err(DefinitionError { document: "workflow", problems })
    }

    /// `inputs` checked against the definition's: unknown ones refused, required ones present,
    /// defaults filled in (`null` for an optional input without one). `field` prefixes the
    /// field the error names (`inputs`, or `schedule[0].inputs`).
    pub fn check_inputs(
        &self,
        field: &str,
        inputs: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, orch_protocol::ProtocolError> {
        use orch_protocol::ProtocolError;
        let mut given = match inputs {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(map)) => map,
            Some(_) => return Err(ProtocolError::invalid(field, "an object of input names and values")),
        };
        if let Some(unknown) = given.keys().find(|k| !self.inputs.contains_key(*k)) {
            let known: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(ProtocolError::invalid(
                format!("{field}.{unknown}"),
                format!("the workflow takes no input {unknown:?} (it takes: {known})"),
            ));
        }
        for (name, spec) in &self.inputs {
            if !given.contains_key(name) {
                match (&spec.default, spec.required) {
                    (Some(default), _) => {
                        given.insert(name.clone(), default.clone());
                    }
                    (None, true) => return Err(ProtocolError::invalid(format!("{field}.{name}"), "required")),
                    (None, false) => {
                        given.insert(name.clone(), serde_json::Value::Null);
                    }
                }
            }
        }
        Ok(serde_json::Value::Object(given))
    }

    /// The steps of the normal flow (not the compensations), by id.
    pub fn flow(&self) -> impl Iterator<Item = (&String, &StepSpec)> {
        self.steps.iter().filter(|(_, s)| !s.compensation)
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(Problem { field, line: None, message });
        let header = &self.workflow;
        if !is_valid_name(&header.name) {
            problem(
                "workflow.name".into(),
                format!(
                    "{:?}: 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit",
                    header.name
                ),
            );
        }
        if !is_valid_name(&header.queue) {
            problem("workflow.queue".into(), format!("{:?}: a name like the workflow's", header.queue));
        }
        if header.priority > 100 {
            problem("workflow.priority".into(), format!("{} is not within 0-100", header.priority));
        }
        if let Some(service) = &header.follow_priority_of
            && !is_valid_name(service)
        {
            problem("workflow.follow_priority_of".into(), format!("{service:?} is not a service name"));
        }
        for name in self.inputs.keys() {
            if !is_valid_id(name) {
                problem(
                    format!("inputs.{name}"),
                    "an input name is 1-63 lowercase letters, digits or '_', starting with a letter".into(),
                );
            }
        }
        for (name, input) in &self.inputs {
            if input.required && input.default.is_some() {
                problem(format!("inputs.{name}.default"), "a required input has no default".into());
            }
        }
        if self.steps.is_empty() {
            problem("steps".into(), "the workflow declares no step".into());
        }
        if self.steps.len() > MAX_STEPS {
            problem("steps".into(), format!("{} steps; at most {MAX_STEPS}", self.steps.len()));
        }
        for (id, step) in &self.steps {
            let at = |field: &str| format!("steps.{id}.{field}");
            if !is_valid_id(id) {
                problem(
                    format!("steps.{id}"),
                    "a step id is 1-63 lowercase letters, digits or '_', starting with a letter".into(),
                );
            }
            let (needed, taken) = step.kind.fields();
            let set = step.set_fields();
            for field in needed {
                if !set.contains(field) {
                    problem(at(field), format!("a {} step needs `{field}`", step.kind.as_str()));
                }
            }
            for field in &set {
                if *field != "timeout" && !needed.contains(field) && !taken.contains(field) {
                    problem(at(field), format!("a {} step takes no `{field}`", step.kind.as_str()));
                }
            }
            match step.kind {
                StepKind::Call if step.subject.is_none() && (step.service.is_none() || step.path.is_none()) => problem(
                    at("subject"),
                    "a call step needs a NATS `subject`, or a `service` and the HTTP `path` to call on it".into(),
                ),
                StepKind::Call if step.subject.is_some() && step.path.is_some() => {
                    problem(at("path"), "a call step is either a NATS `subject` or an HTTP `path`, not both".into())
                }
                StepKind::Wait if step.duration.is_some() == step.until.is_some() => {
                    problem(at("duration"), "a wait step takes either `duration` or `until`".into())
                }
                StepKind::Maintenance if step.service.is_some() == step.instance.is_some() => {
                    problem(at("service"), "a maintenance step names either a `service` or an `instance`".into())
                }
                _ => {}
            }
            if let Some(method) = &step.method
                && !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str())
            {
                problem(at("method"), format!("{method:?}: one of GET, POST, PUT, PATCH, DELETE"));
            }
            if step.retry.attempts == 0 || step.retry.attempts > 100 {
                problem(at("retry.attempts"), "1-100 (1: no retry)".into());
            }
            if !(1.0..=10.0).contains(&step.retry.multiplier) {
                problem(at("retry.multiplier"), "1-10".into());
            }
            if step.timeout.is_some_and(|t| t.is_zero()) {
                problem(at("timeout"), "must be more than 0".into());
            }
            for need in &step.needs {
                match self.steps.get(need) {
                    None => problem(at("needs"), format!("no step {need:?}")),
                    Some(s) if s.compensation => {
                        problem(at("needs"), format!("{need:?} is a compensation, not part of the flow"))
                    }
                    Some(_) if need == id => problem(at("needs"), "a step cannot need itself".into()),
                    Some(_) => {}
                }
            }
            if step.compensation && !step.needs.is_empty() {
                problem(at("needs"), "a compensation runs when its step fails: it needs nothing".into());
            }
            match (step.on_failure, &step.compensate_with) {
                (OnFailure::Compensate, None) => {
                    problem(at("compensate_with"), "`on_failure = \"compensate\"` needs `compensate_with`".into())
                }
                (OnFailure::Compensate, Some(with)) => match self.steps.get(with) {
                    Some(s) if s.compensation => {}
                    Some(_) => {
                        problem(at("compensate_with"), format!("{with:?} must be declared with `compensation = true`"))
                    }
                    None => problem(at("compensate_with"), format!("no step {with:?}")),
                },
                (_, Some(_)) => problem(at("compensate_with"), "only with `on_failure = \"compensate\"`".into()),
                (_, None) => {}
            }
            if let Some(when) = &step.when
                && let Err(e) = Expr::parse(when)
            {
                problem(at("when"), e.0);
            }
            if let Some(filter) = &step.filter
                && let Err(e) = Expr::parse(filter)
            {
                problem(at("filter"), e.0);
            }
            for (field, value) in step.templated() {
                for message in expr::template_problems(&value) {
                    problem(at(field), message);
                }
            }
        }
        for (i, spec) in self.schedules.iter().enumerate() {
            if let Err((field, message)) = super::schedule::Schedule::new(spec.clone()) {
                problem(format!("schedule[{i}].{field}"), message);
            }
            let inputs = serde_json::to_value(&spec.inputs).unwrap_or_default();
            if let Err(e) = self.check_inputs(&format!("schedule[{i}].inputs"), Some(inputs)) {
                problem(e.0.field.clone().unwrap_or_else(|| format!("schedule[{i}].inputs")), e.0.message);
            }
        }
        for (i, trigger) in self.event_triggers.iter().enumerate() {
            for (field, message) in trigger.problems() {
                problem(format!("on_event[{i}].{field}"), message);
            }
            for name in trigger.inputs.keys() {
                if !self.inputs.contains_key(name) {
                    problem(format!("on_event[{i}].inputs.{name}"), format!("the workflow has no input {name:?}"));
                }
            }
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            for (field, message) in hook.problems() {
                problem(format!("webhook[{i}].{field}"), message);
            }
            if self.webhooks[..i].iter().any(|h| h.name == hook.name) {
                problem(format!("webhook[{i}].name"), format!("another [[webhook]] is named {:?}", hook.name));
            }
            for name in hook.inputs.keys() {
                if !self.inputs.contains_key(name) {
                    problem(format!("webhook[{i}].inputs.{name}"), format!("the workflow has no input {name:?}"));
                }
            }
        }
        // Cycles, named in full.
        let (graph, _) = crate::dag::graph(
            self.steps.keys().map(String::as_str),
            self.steps.iter().flat_map(|(id, s)| s.needs.iter().map(move |n| (id.as_str(), n.as_str()))),
        );
        for cycle in crate::dag::cycles(&graph) {
            problem(format!("steps.{}.needs", cycle[0]), format!("the steps need each other: {}", cycle.join(" -> ")));
        }
        problems
    }
}

/// The line of the `n`th `[[<array>]]` of `<array>[n]`.
fn array_line(text: &str, array: &str, field: &str) -> Option<usize> {
    let n: usize = field.strip_prefix(array)?.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?;
    let header = format!("[[{array}]]");
    text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with(&header)).nth(n).map(|(i, _)| i + 1)
}

/// The line of `[<table>.<key>]` (or of `[<table>]` for an empty key).
fn table_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = if key.is_empty() { format!("[{table}]") } else { format!("[{table}.{key}") };
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(&header) && (key.is_empty() || l[header.len()..].starts_with([']', '.']))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMEDIATE: &str = r#"
[workflow]
name = "remediate"
queue = "remediation"
priority = 70

[inputs.service]
required = true

[steps.restart]
kind = "restart"
service = "${{ inputs.service }}"
retry = { attempts = 3, backoff = "2s" }

[steps.healthy]
kind = "call"
needs = ["restart"]
subject = "checks.healthy"
body = { service = "${{ inputs.service }}" }
timeout = "2m"
on_failure = "compensate"
compensate_with = "page"

[steps.raise]
kind = "set_priority"
needs = ["healthy"]
when = 'steps.healthy.status == "succeeded"'
service = "${{ inputs.service }}"
value = 90
ttl = "1h"
reason = "recovered after ${{ inputs.service }} crashed"

[steps.page]
kind = "call"
compensation = true
subject = "pager.notify"
body = { service = "${{ inputs.service }}" }
"#;

    #[test]
    fn a_complete_definition_parses_with_its_defaults() {
        let d = Definition::parse(REMEDIATE).unwrap();
        assert_eq!(
            (d.workflow.name.as_str(), d.workflow.queue.as_str(), d.workflow.priority),
            ("remediate", "remediation", 70)
        );
        assert_eq!(d.steps.len(), 4);
        assert_eq!(d.flow().count(), 3, "the compensation is not in the flow");
        let restart = &d.steps["restart"];
        assert_eq!((restart.retry.attempts, restart.retry.backoff), (3, Duration::from_secs(2)));
        assert_eq!(restart.on_failure, OnFailure::Fail);
        assert_eq!(d.steps["healthy"].timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_its_bound() {
        let retry = Retry { attempts: 10, backoff: Duration::from_secs(1), multiplier: 2.0, ..Retry::default() };
        let delays: Vec<u64> = (2..=9).map(|n| retry.delay_before(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    fn problems(text: &str) -> Vec<String> {
        Definition::parse(text).unwrap_err().problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_field_and_line() {
        let text = r#"
[workflow]
name = "Bad Name"

[steps.a]
kind = "job"
needs = ["b", "ghost"]

[steps.b]
kind = "wait"
needs = ["a"]
duration = "1s"
command = "x"
when = "inputs.x >"

[steps.c]
kind = "call"
subject = "${{ inputs.x + }}"
"#;
        let found = problems(text);
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("line 2: workflow.name"), "{found:#?}");
        assert!(has("line 5: steps.a.command: a job step needs `command`"), "{found:#?}");
        assert!(has("line 5: steps.a.needs: no step \"ghost\""), "{found:#?}");
        assert!(has("line 9: steps.b.command: a wait step takes no `command`"), "{found:#?}");
        assert!(has("line 9: steps.b.when"), "{found:#?}");
        assert!(has("line 16: steps.c.subject"), "{found:#?}");
        assert!(has("steps.a.needs: the steps need each other: a -> b -> a"), "{found:#?}");
    }

    #[test]
    fn toml_errors_and_unknown_fields_name_their_line() {
        let found =
            problems("[workflow]\nname = \"x\"\n\n[steps.a]\nkind = \"wait\"\nduration = \"1s\"\ncolour = \"red\"\n");
        assert!(found[0].starts_with("line 7: workflow: unknown field `colour`"), "{found:?}");
        let found = problems("[workflow]\nname = \"x\"\n[steps.a]\nkind = \"teleport\"\n");
        assert!(found[0].contains("unknown variant `teleport`"), "{found:?}");
    }

    #[test]
    fn compensations_and_their_references_are_checked() {
        let text = r#"
[workflow]
name = "w"

[steps.a]
kind = "wait"
duration = "1s"
on_failure = "compensate"
compensate_with = "b"

[steps.b]
kind = "wait"
duration = "1s"

[steps.c]
kind = "wait"
duration = "1s"
needs = ["d"]

[steps.d]
kind = "wait"
duration = "1s"
compensation = true
"#;
        let found = problems(text);
        assert!(
            found
                .iter()
                .any(|p| p.contains("steps.a.compensate_with: \"b\" must be declared with `compensation = true`")),
            "{found:#?}"
        );
        assert!(found.iter().any(|p| p.contains("steps.c.needs: \"d\" is a compensation")), "{found:#?}");
    }
}
