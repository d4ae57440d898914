//! Health rules of one instance, free of I/O: its health is the worst of its lease and its checks;
//! every change of it is a transition, recorded in the history and announced by an event, unless
//! the instance flaps. Flapping means more than `flap_threshold` changes inside `flap_window`; while
//! it lasts, check and instance events are held back (the history still records every change,
//! marked `damped`), and it ends once the instance stayed stable for a whole window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::events::{EventKind, FlappingData, InstanceChangedData, ServiceChangedData, SystemChangedData};
use orch_protocol::health::Aggregate;
use orch_protocol::registry::{Health, Instance};
use serde::Serialize;

use super::state::{Context, Emit};

/// Settings of health decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// More health changes than this inside the window make an instance flap.
    pub flap_threshold: usize,
    pub flap_window: Duration,
    /// Whether `exec` checks may be declared.
    pub exec_enabled: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { flap_threshold: 4, flap_window: Duration::from_secs(120), exec_enabled: false }
    }
}

impl Policy {
    /// Refuses checks this orchestrator will not run.
    pub fn allows(&self, checks: &[orch_protocol::health::CheckSpec]) -> Result<(), orch_protocol::ProtocolError> {
        match checks.iter().position(|c| c.kind == orch_protocol::health::CheckKind::Exec) {
            Some(i) if !self.exec_enabled => Err(orch_protocol::ProtocolError::invalid(
                format!("checks[{i}].kind"),
                "exec checks are disabled on this orchestrator; an operator can enable them with \
                 --health-exec-enabled (ORCH_HEALTH_EXEC_ENABLED=true)",
            )),
            _ => Ok(()),
        }
    }

    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.flap_window).unwrap_or(chrono::Duration::MAX)
    }
}

/// One row of the health history (`health_transitions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    /// `check`, `instance`, `service` or `system`.
    pub level: &'static str,
    pub service: Option<String>,
    pub instance_id: Option<String>,
    pub check_id: Option<String>,
    pub previous: Option<String>,
    pub state: String,
    pub output: Option<String>,
    /// No event was published for it: the instance was flapping.
    pub damped: bool,
    pub detail: Option<serde_json::Value>,
}

impl Transition {
    pub fn check(
        inst: &Instance,
        check: &str,
        previous: Health,
        status: Health,
        output: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Transition {
            at,
            level: "check",
            service: Some(inst.name.clone()),
            instance_id: Some(inst.id.clone()),
            check_id: Some(check.to_string()),
            previous: Some(previous.as_str().to_string()),
            state: status.as_str().to_string(),
            output: (!output.is_empty()).then(|| output.to_string()),
            damped: false,
            detail: None,
        }
    }

    pub fn service(data: &ServiceChangedData, at: DateTime<Utc>) -> Self {
        let detail = serde_json::to_value(data.counts).ok();
        Transition::aggregate("service", Some(data.service.clone()), data.previous, data.state, detail, at)
    }

    pub fn system(data: &SystemChangedData, at: DateTime<Utc>) -> Self {
        Transition::aggregate("system", None, data.previous, data.state, serde_json::to_value(data).ok(), at)
    }

    fn aggregate(
        level: &'static str,
        service: Option<String>,
        previous: Option<Aggregate>,
        state: Aggregate,
        detail: Option<serde_json::Value>,
        at: DateTime<Utc>,
    ) -> Self {
        Transition {
            at,
            level,
            service,
            instance_id: None,
            check_id: None,
            previous: previous.map(|p| p.as_str().to_string()),
            state: state.as_str().to_string(),
            output: None,
            damped: false,
            detail,
        }
    }
}

/// What a decision publishes and records.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub events: Vec<Emit>,
    pub transitions: Vec<Transition>,
}

impl Effects {
    pub fn with(event: Emit) -> Effects {
        Effects { events: vec![event], transitions: Vec::new() }
    }

    pub fn emit(&mut self, event: Emit) {
        self.events.push(event);
    }

    /// Puts `event` first: the event of the command itself comes before the health events its
    /// change caused.
    pub fn lead(&mut self, event: Emit) {
        self.events.insert(0, event);
    }
}

/// The health of an instance: the worst of its lease and its checks.
pub fn worst(inst: &Instance) -> Health {
    inst.checks.iter().map(|c| c.status).fold(inst.lease, Health::max)
}

/// Recomputes the health of `next` (the instance after a change of its lease or checks) against
/// `prev`, and records the transition if there is one. `cause` says what changed.
pub fn reassess(prev: &Instance, next: &mut Instance, cause: &str, ctx: &Context, effects: &mut Effects) {
    let now = ctx.now;
    let health = worst(next);
    if health != prev.health {
        next.health = health;
        next.critical_since = match health {
            Health::Critical => prev.critical_since.or(Some(now)),
            _ => None,
        };
        let since = now - ctx.policy.window();
        next.health_changes.retain(|t| *t > since);
        next.health_changes.push(now);
        let keep = ctx.policy.flap_threshold + 1;
        if next.health_changes.len() > keep {
            next.health_changes.drain(..next.health_changes.len() - keep);
        }
        let flapping = next.health_changes.len() > ctx.policy.flap_threshold;
        if flapping && next.flapping_since.is_none() {
            next.flapping_since = Some(now);
            let data = FlappingData {
                instance: next.clone(),
                changes: next.health_changes.len(),
                window: humantime::format_duration(ctx.policy.flap_window).to_string(),
            };
            effects.emit(Emit::new(EventKind::FlappingStarted, &next.name, &next.id, data));
        }
        let damped = next.flapping_since.is_some();
        effects.transitions.push(Transition {
            at: now,
            level: "instance",
            service: Some(next.name.clone()),
            instance_id: Some(next.id.clone()),
            check_id: None,
            previous: Some(prev.health.as_str().to_string()),
            state: health.as_str().to_string(),
            output: Some(cause.to_string()),
            damped,
            detail: None,
        });
        if !damped {
            let data =
                InstanceChangedData { instance: next.clone(), previous: prev.health, health, cause: cause.to_string() };
            effects.emit(Emit::new(EventKind::InstanceChanged, &next.name, &next.id, data));
        }
    }
    if next.flapping_since.is_some() {
        for t in effects.transitions.iter_mut().filter(|t| t.level == "check") {
            t.damped = true;
        }
    }
}

/// True when a flapping instance has had no health change for a whole window.
pub fn settled(inst: &Instance, ctx: &Context) -> bool {
    inst.flapping_since.is_some()
        && inst.health_changes.last().is_none_or(|last| *last <= ctx.now - ctx.policy.window())
}
