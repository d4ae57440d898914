//! What each kind of step does, once the state machine says to run an attempt: the effects, each
//! ending in the attempt's output or a [`StepError`] of the kind its retry policy looks at.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::{ProtocolError, Subjects, headers};
use serde_json::{Value, json};

use super::definition::{Retryable, StepKind, StepSpec};
use super::expr;
use super::machine::{Millis, StepError};

/// The header that carries a call's idempotency key: the same for every delivery of one attempt.
pub const IDEMPOTENCY_KEY: &str = "Orch-Idempotency-Key";

/// How long a call waits for its reply when its step has no `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What steps act on.
#[derive(Clone)]
pub struct Effects {
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub controller: crate::lifecycle::Controller,
    pub priorities: crate::priority::Priorities,
}

/// One attempt to run.
pub struct Attempt {
    pub workflow: String,
    pub execution: String,
    pub step: String,
    pub key: String,
    /// The attempt's start (the original one for a wait that goes on after a restart).
    pub started_at: Millis,
    pub spec: StepSpec,
    pub scope: Value,
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

/// Runs the attempt to its end.
pub async fn run(effects: &Effects, attempt: &Attempt) -> Result<Value, StepError> {
    match attempt.spec.kind {
        StepKind::Wait => wait(attempt).await,
        StepKind::Call => call(effects, attempt).await,
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
        other => Err(StepError::new(
            Retryable::Error,
            format!("{} steps cannot run in this version (the definition should have been refused)", other.as_str()),
        )),
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
