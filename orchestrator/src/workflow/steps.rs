//! What each kind of step does, once the state machine says to run an attempt: the effects, each
//! ending in the attempt's output or a [`StepError`] of the kind its retry policy looks at.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::{ProtocolError, Subjects, headers};
use serde_json::{Value, json};

use super::definition::{Retryable, StepKind, StepSpec};
use super::executor::Workflows;
use super::expr::{self, Expr};
use super::machine::{Millis, StepError};

/// The header that carries a call's idempotency key: the same for every delivery of one attempt.
pub const IDEMPOTENCY_KEY: &str = "Orch-Idempotency-Key";

/// How long a call waits for its reply when its step has no `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What steps act on.
#[derive(Clone)]
pub struct Effects {
    pub pool: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub registry: std::sync::Arc<crate::registry::Registry>,
    pub controller: crate::lifecycle::Controller,
    pub priorities: crate::priority::Priorities,
    /// Its HTTP client reaches only the addresses health checks may (no metadata endpoints).
    pub prober: crate::health::probe::Prober,
    /// The node of the embedded agent: where `job` steps run when they name none.
    pub local_node: Option<String>,
}

/// The most bytes of an HTTP call's answer kept as the step's output.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How deep sub-workflows may nest: an execution at this depth cannot start another.
pub const MAX_DEPTH: u32 = 8;

/// One attempt to run.
pub struct Attempt {
    pub workflow: String,
    pub execution: String,
    pub step: String,
    pub key: String,
    /// The attempt's start (the original one for a wait that goes on after a restart).
    pub started_at: Millis,
    pub spec: StepSpec,
    /// What its expressions read ([`super::machine::Execution::scope`]).
    pub scope: std::sync::Arc<Value>,
    /// The attempt's number (1 for the first).
    pub attempt: u32,
    /// Taken up again after a restart or a failover (a job re-attaches to its process).
    pub resumed: bool,
    /// How deep the execution is nested (0: not a sub-workflow).
    pub depth: u32,
}

impl Attempt {
    /// Who the step's effects are recorded as made by.
    fn principal(&self) -> String {
        format!("workflow:{}", self.workflow)
    }

    fn text(&self, field: &str, value: &Option<String>) -> Result<String, StepError> {
        let value = value.as_ref().ok_or_else(|| StepError::new(Retryable::Error, format!("no `{field}`")))?;
        match expr::render(&Value::String(value.clone()), &self.scope).map_err(|e| bad_input(field, e))? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }
}

fn bad_input(field: &str, e: expr::ExprError) -> StepError {
    StepError::new(Retryable::Error, format!("`{field}`: {e}"))
}

/// Runs the attempt to its end. `workflows` starts and follows sub-workflows.
pub async fn run(effects: &Effects, workflows: &Workflows, attempt: &Attempt) -> Result<Value, StepError> {
    match attempt.spec.kind {
        StepKind::Wait => wait(attempt).await,
        StepKind::Call if attempt.spec.path.is_some() => http_call(effects, attempt).await,
        StepKind::Call => call(effects, attempt).await,
        StepKind::WaitEvent => wait_event(effects, attempt).await,
        // The decision comes as a signal, which the executor turns into the attempt's end.
        StepKind::Approval => std::future::pending().await,
        StepKind::Workflow => sub_workflow(effects, workflows, attempt).await,
        StepKind::Maintenance => maintenance(effects, attempt).await,
        StepKind::Job => job(effects, attempt).await,
        StepKind::Restart => {
            let service = attempt.text("service", &attempt.spec.service)?;
            effects.controller.restart(service.clone(), attempt.principal()).await.map_err(|e| {
                let e = ProtocolError::from(e);
                let kind = if e.0.code.status() >= 500 { Retryable::Unavailable } else { Retryable::Error };
                StepError::new(kind, e.0.message)
            })?;
            Ok(json!({ "restarting": true, "service": service }))
        }
        StepKind::SetPriority => {
            let service = attempt.text("service", &attempt.spec.service)?;
            let value = match attempt.spec.value.as_ref().map(|v| expr::render(v, &attempt.scope)) {
                Some(Ok(v)) => v
                    .as_i64()
                    .ok_or_else(|| StepError::new(Retryable::Error, format!("`value` is {v}, not a whole number")))?,
                Some(Err(e)) => return Err(bad_input("value", e)),
                None => return Err(StepError::new(Retryable::Error, "no `value`")),
            };
            let reason = match &attempt.spec.reason {
                Some(_) => attempt.text("reason", &attempt.spec.reason)?,
                None => format!("workflow {} (execution {})", attempt.workflow, attempt.execution),
            };
            let request = orch_protocol::priority::SetRequest {
                service,
                value,
                source: attempt.principal(),
                reason,
                ttl_seconds: attempt.spec.ttl.map(|t| t.as_secs_f64()),
            };
            let reply = effects.priorities.set(request, attempt.principal()).await.map_err(|e| {
                let kind = if e.0.code.status() >= 500 { Retryable::Unavailable } else { Retryable::Error };
                StepError::new(kind, e.0.message)
            })?;
            Ok(serde_json::to_value(reply.change).unwrap_or(Value::Null))
        }
    }
}

/// `duration` after the attempt began, or `until` a time.
async fn wait(attempt: &Attempt) -> Result<Value, StepError> {
    let until: DateTime<Utc> = match (&attempt.spec.duration, &attempt.spec.until) {
        (Some(d), _) => {
            DateTime::from_timestamp_millis(attempt.started_at).unwrap_or_else(Utc::now)
                + chrono::Duration::from_std(*d).unwrap_or_default()
        }
        (None, Some(_)) => {
            let text = attempt.text("until", &attempt.spec.until)?;
            text.parse::<DateTime<Utc>>().map_err(|e| {
                StepError::new(Retryable::Error, format!("`until` is {text:?}, not an RFC 3339 time: {e}"))
            })?
        }
        (None, None) => return Err(StepError::new(Retryable::Error, "a wait needs `duration` or `until`")),
    };
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
    Ok(json!({ "waited_until": until.to_rfc3339() }))
}

/// A NATS request to `subject` with the rendered `body`; the reply's JSON (or text) is the output.
async fn call(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    let subject = attempt.text("subject", &attempt.spec.subject)?;
    let body = match &attempt.spec.body {
        Some(body) => expr::render(body, &attempt.scope).map_err(|e| bad_input("body", e))?,
        None => Value::Null,
    };
    let mut request_headers = async_nats::HeaderMap::new();
    request_headers.insert(IDEMPOTENCY_KEY, attempt.key.as_str());
    let payload = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap_or_default() };
    let timeout = attempt.spec.timeout.unwrap_or(CALL_TIMEOUT);
    let request = async_nats::Request::new().headers(request_headers).payload(payload.into()).timeout(Some(timeout));
    let reply = effects.nats.send_request(subject.clone(), request).await.map_err(|e| {
        use async_nats::client::RequestErrorKind;
        match e.kind() {
            RequestErrorKind::NoResponders => {
                StepError::new(Retryable::Unavailable, format!("nobody answers on {subject}"))
            }
            RequestErrorKind::TimedOut => {
                StepError::new(Retryable::Timeout, format!("no reply on {subject} within {timeout:?}"))
            }
            RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                StepError::new(Retryable::Error, format!("the request on {subject} cannot be sent: {e}"))
            }
            RequestErrorKind::Other => {
                StepError::new(Retryable::Unavailable, format!("the request on {subject} failed: {e}"))
            }
        }
    })?;
    let output = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.payload).into_owned()));
    let error = reply.headers.as_ref().and_then(|h| h.get(headers::SERVICE_ERROR_CODE)).map(|v| v.to_string());
    match error {
        Some(code) => Err(StepError::new(Retryable::Error, format!("{subject} answered error {code}: {output}"))),
        None => Ok(output),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::new(Retryable::Unavailable, format!("{what}: {e}"))
}

/// The first event on `<prefix>.evt.<subject>` since the attempt began for which `filter` holds
/// (over the step's scope with `event`, the CloudEvent). It reads the events stream from the
/// attempt's start, so an event published while the orchestrator was away still counts.
async fn wait_event(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;

    let pattern = attempt.text("subject", &attempt.spec.subject)?;
    let subject = format!("{}.evt.{pattern}", effects.subjects.prefix());
    let filter = match &attempt.spec.filter {
        Some(f) => Some(Expr::parse(f).map_err(|e| bad_input("filter", e))?),
        None => None,
    };
    let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(attempt.started_at) * 1_000_000)
        .map_err(|e| StepError::new(Retryable::Error, format!("the attempt's start: {e}")))?;
    let js = async_nats::jetstream::new(effects.nats.clone());
    let stream = js
        .get_stream(effects.subjects.events_stream())
        .await
        .map_err(|e| unavailable("the events stream cannot be read", e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("the events stream cannot be read", e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable("the events stream cannot be read", e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable("reading the events stream", e))?;
        let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else { continue };
        let matches = match &filter {
            None => true,
            Some(filter) => {
                let mut scope = (*attempt.scope).clone();
                scope["event"] = event.clone();
                // An event the filter cannot read (a field it names is missing) is not the one.
                filter.eval_bool(&scope).unwrap_or(false)
            }
        };
        if matches {
            return Ok(event);
        }
    }
    Err(StepError::new(Retryable::Unavailable, format!("the events stream stopped while waiting on {subject}")))
}

/// Starts the sub-workflow (once per attempt: its id comes from this execution, step and
/// attempt) and waits for its end; its steps' outputs are this step's output.
async fn sub_workflow(effects: &Effects, workflows: &Workflows, attempt: &Attempt) -> Result<Value, StepError> {
    let name = attempt.text("workflow", &attempt.spec.workflow)?;
    if attempt.depth >= MAX_DEPTH {
        return Err(StepError::new(
            Retryable::Error,
            format!("sub-workflows nest at most {MAX_DEPTH} deep; {name:?} would be deeper"),
        ));
    }
    let inputs = match &attempt.spec.inputs {
        Some(inputs) => Some(
            expr::render(&serde_json::to_value(inputs).unwrap_or_default(), &attempt.scope)
                .map_err(|e| bad_input("inputs", e))?,
        ),
        None => None,
    };
    let parent: uuid::Uuid =
        attempt.execution.parse().map_err(|_| StepError::new(Retryable::Error, "bad execution id"))?;
    let child = super::api::child_id(parent, &attempt.step, attempt.attempt);
    let start = super::api::Start {
        id: child,
        by: attempt.principal(),
        trigger: format!("parent:{}/{}", attempt.execution, attempt.step),
        depth: attempt.depth + 1,
    };
    super::api::queue(&effects.pool, workflows, &name, inputs, start).await.map_err(|e| {
        let kind = if e.0.code.status() >= 500 { Retryable::Unavailable } else { Retryable::Error };
        StepError::new(kind, format!("sub-workflow {name:?}: {}", e.0.message))
    })?;
    workflows.ended(child).await;
    let view = super::api::execution_view(&effects.pool, child)
        .await
        .map_err(|e| unavailable("reading the sub-workflow's end", e.0.message))?;
    let outputs: serde_json::Map<String, Value> = view
        .steps
        .as_object()
        .map(|steps| {
            steps.iter().map(|(id, s)| (id.clone(), s.get("output").cloned().unwrap_or(Value::Null))).collect()
        })
        .unwrap_or_default();
    match view.status.as_str() {
        "succeeded" => Ok(json!({ "execution_id": child, "status": view.status, "outputs": outputs })),
        status => Err(StepError::new(
            Retryable::Error,
            format!(
                "sub-workflow {name:?} (execution {child}) {status}: {}",
                view.reason.as_deref().unwrap_or("no reason given")
            ),
        )),
    }
}

/// Puts a service (every instance) or one instance in maintenance, or takes it out
/// (`enabled = false`), as a registry command made by the workflow.
async fn maintenance(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    use crate::registry::state::Command;
    use crate::registry::writer::{Body, Meta, Submission};

    let enabled = attempt.spec.enabled.unwrap_or(true);
    let reason = match &attempt.spec.reason {
        Some(_) => attempt.text("reason", &attempt.spec.reason)?,
        None => format!("workflow {} (execution {})", attempt.workflow, attempt.execution),
    };
    let reason = enabled.then_some(reason);
    let (command, target) = match &attempt.spec.instance {
        Some(_) => {
            let id = attempt.text("instance", &attempt.spec.instance)?;
            orch_protocol::registry::validate_instance_id("instance", &id)
                .map_err(|e| StepError::new(Retryable::Error, e.0.message))?;
            (Command::Maintenance { id: id.clone(), reason: reason.clone() }, json!({ "instance": id }))
        }
        None => {
            let service = attempt.text("service", &attempt.spec.service)?;
            orch_protocol::registry::validate_name("service", &service)
                .map_err(|e| StepError::new(Retryable::Error, e.0.message))?;
            (
                Command::ServiceMaintenance { service: service.clone(), reason: reason.clone() },
                json!({ "service": service }),
            )
        }
    };
    let payload =
        serde_json::to_vec(&json!({ "target": target, "enabled": enabled, "reason": reason })).unwrap_or_default();
    let meta =
        Meta::new("workflow", Some(attempt.key.clone()), "workflow:maintenance", payload.into(), attempt.principal());
    let outcome = effects
        .registry
        .submit(Submission { meta, body: Body::Command(command) })
        .await
        .map_err(|e| unavailable("the registry", e))?;
    match outcome {
        crate::registry::state::Outcome::Applied(reply) => {
            Ok(json!({ "target": target, "maintenance": enabled, "status": reply.status }))
        }
        crate::registry::state::Outcome::Failed(e) => {
            let kind = if e.error.code.status() >= 500 { Retryable::Unavailable } else { Retryable::Error };
            Err(StepError::new(kind, e.error.message))
        }
    }
}

/// An HTTP request to `path` on a passing instance of `service`, chosen by `strategy` (as
/// discovery does), with the rendered `body` as JSON; a 2xx answer's body (JSON, or text) is the
/// output.
async fn http_call(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    let service = attempt.text("service", &attempt.spec.service)?;
    orch_protocol::registry::validate_name("service", &service)
        .map_err(|e| StepError::new(Retryable::Error, e.0.message))?;
    let path = attempt.text("path", &attempt.spec.path)?;
    if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(StepError::new(Retryable::Error, format!("`path` {path:?} must start with / and hold no spaces")));
    }
    let body = match &attempt.spec.body {
        Some(body) => Some(expr::render(body, &attempt.scope).map_err(|e| bad_input("body", e))?),
        None => None,
    };
    let strategy = attempt.spec.strategy.unwrap_or_default();
    let found = effects.registry.discover(&service, strategy).await.map_err(|e| unavailable("the registry", e))?;
    let instance = found
        .instance
        .ok_or_else(|| StepError::new(Retryable::Unavailable, format!("no passing instance of {service:?} to call")))?;
    let host = if instance.address.contains(':') { format!("[{}]", instance.address) } else { instance.address };
    let url = format!("http://{host}:{}{path}", instance.port);
    let method = attempt.spec.method.clone().unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| StepError::new(Retryable::Error, format!("`method` {method:?} is not an HTTP method")))?;
    let timeout = attempt.spec.timeout.unwrap_or(CALL_TIMEOUT);
    let mut request = effects
        .prober
        .http_client()
        .request(method.clone(), &url)
        .header(IDEMPOTENCY_KEY, &attempt.key)
        .timeout(timeout);
    if let Some(body) = &body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default());
    }
    let what = format!("{method} {url} (instance {})", instance.id);
    let mut response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            StepError::new(Retryable::Timeout, format!("{what}: no answer within {timeout:?}"))
        } else {
            StepError::new(Retryable::Unavailable, format!("{what}: {e}"))
        }
    })?;
    let status = response.status();
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout(timeout, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(StepError::new(
                        Retryable::Error,
                        format!("{what}: the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(StepError::new(Retryable::Unavailable, format!("{what}: reading the answer: {e}")));
            }
            Err(_) => {
                return Err(StepError::new(Retryable::Timeout, format!("{what}: the answer took over {timeout:?}")));
            }
        }
    }
    let output =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if status.is_success() {
        Ok(output)
    } else {
        let excerpt: String = output.to_string().chars().take(200).collect();
        Err(StepError::new(Retryable::Error, format!("{what} answered {status}: {excerpt}")))
    }
}

/// Lines of a job's output kept in its step's output.
const JOB_OUTPUT_LINES: usize = 20;

/// The agent's name for the process of a job attempt: the same whenever the attempt is taken up
/// (so a new leader finds it), unlike any managed service's.
pub fn job_service(key: &str) -> String {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).simple().to_string();
    format!("job-{}", &id[..20])
}

/// The node a job step runs on: its `node`, rendered, or the embedded agent's.
pub fn job_node(effects: &Effects, spec: &StepSpec, scope: &Value) -> Result<String, StepError> {
    match &spec.node {
        Some(node) => match expr::render(&Value::String(node.clone()), scope).map_err(|e| bad_input("node", e))? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        },
        None => effects.local_node.clone().ok_or_else(|| {
            StepError::new(Retryable::Error, "the orchestrator runs no embedded agent: name the job's `node`")
        }),
    }
}

/// Runs `command` with `args` and `env` as a process on `node`'s agent (or re-attaches to it
/// after a restart) and waits for its end: exit code 0 succeeds with the exit, the pid, the run
/// time and the last lines of its output; another end fails as `error`.
async fn job(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    use futures::StreamExt;
    use orch_protocol::agent::{LogsRequest, StartRequest};

    let node = job_node(effects, &attempt.spec, &attempt.scope)?;
    let command = attempt.text("command", &attempt.spec.command)?;
    let args = match &attempt.spec.args {
        Some(args) => match expr::render(&json!(args), &attempt.scope).map_err(|e| bad_input("args", e))? {
            Value::Array(items) => {
                items.into_iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect()
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let env = match &attempt.spec.env {
        Some(env) => match expr::render(&json!(env), &attempt.scope).map_err(|e| bad_input("env", e))? {
            Value::Object(map) => {
                map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
            }
            _ => Default::default(),
        },
        None => Default::default(),
    };
    let agent = crate::agent::client::AgentClient::new(effects.nats.clone(), effects.subjects.clone());
    let failed = |e: crate::agent::client::AgentError| {
        use crate::agent::client::AgentError;
        let kind = match &e {
            AgentError::Refused { code, .. } if code.status() < 500 => Retryable::Error,
            AgentError::Timeout(_) => Retryable::Timeout,
            _ => Retryable::Unavailable,
        };
        StepError::new(kind, e.to_string())
    };
    let service = job_service(&attempt.key);
    // Listen for its end before starting it (or looking for it), so the end is never missed.
    let mut exits = effects
        .nats
        .subscribe(effects.subjects.agent(&node, "exited"))
        .await
        .map_err(|e| unavailable("listening for the job's end", e))?;
    let running = if attempt.resumed {
        agent.status(&node).await.map_err(failed)?.running.into_iter().find(|r| r.service == service).map(|r| r.pid)
    } else {
        None
    };
    let pid = match running {
        Some(pid) => pid,
        None if attempt.resumed => {
            return Err(StepError::new(
                Retryable::Unavailable,
                format!("the job's process ({service} on {node}) ended while no leader ran: its exit is not known"),
            ));
        }
        None => {
            let request = StartRequest {
                service: service.clone(),
                command: command.clone(),
                args,
                env,
                workdir: None,
                stop_signal: "SIGTERM".into(),
                grace_period: Duration::from_secs(10),
                limits: Default::default(),
                notify: false,
                logs: Default::default(),
            };
            agent.start(&node, &request).await.map_err(failed)?.pid
        }
    };
    let ended = loop {
        let Some(message) = exits.next().await else {
            return Err(StepError::new(Retryable::Unavailable, "the NATS connection closed while the job ran"));
        };
        if let Ok(report) = serde_json::from_slice::<orch_protocol::agent::Exited>(&message.payload)
            && report.service == service
        {
            break report;
        }
    };
    let lines = agent
        .logs(&node, &LogsRequest::last(service.clone(), JOB_OUTPUT_LINES))
        .await
        .map(|l| l.lines)
        .unwrap_or_default();
    let output = json!({
        "node": node,
        "process": service,
        "pid": pid,
        "exit": ended.exit,
        "ran_for_ms": ended.ran_for_ms,
        "output": lines,
    });
    match ended.exit {
        orch_protocol::agent::Exit::Code { code: 0 } => Ok(output),
        exit => {
            let how = match exit {
                orch_protocol::agent::Exit::Code { code } => format!("exit code {code}"),
                orch_protocol::agent::Exit::Signal { signal } => format!("signal {signal}"),
            };
            let last = lines.last().map(|l| format!("; its last line: {l}")).unwrap_or_default();
            Err(StepError::new(Retryable::Error, format!("{command} on {node} ended with {how}{last}")))
        }
    }
}

/// Stops the process of a job attempt that was cancelled or timed out.
pub async fn stop_job(effects: &Effects, node: &str, key: &str) {
    let agent = crate::agent::client::AgentClient::new(effects.nats.clone(), effects.subjects.clone());
    let request = orch_protocol::agent::StopRequest {
        service: job_service(key),
        signal: "SIGTERM".into(),
        grace_period: Duration::from_secs(10),
    };
    match agent.stop(node, &request).await {
        Ok(_) => tracing::info!(node, process = %request.service, "a cancelled job's process was stopped"),
        Err(crate::agent::client::AgentError::Refused { code: orch_protocol::ErrorCode::NotFound, .. }) => {}
        Err(e) => {
            tracing::warn!(node, process = %request.service, error = %e, "a cancelled job's process could not be stopped")
        }
    }
}
