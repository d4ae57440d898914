//! What the registry's decisions read and what they return, shared by the decision of each
//! command ([`super::state`]) and the health rules of an instance ([`super::instance_health`]):
//! the context (time, health policy), the events to publish and the health transitions to record.
//! Pure data: the writer carries the effects out in the command's transaction.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::events::EventKind;
use orch_protocol::health::Maintenance;
use serde::Serialize;

use super::check_targets::CheckTargets;
use crate::storage::health::Transition;

/// Settings of health decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// More health changes than this inside the window make an instance flap.
    pub flap_threshold: usize,
    pub flap_window: Duration,
    /// Whether `exec` checks may be declared.
    pub exec_enabled: bool,
    /// Where checks may reach beyond their instance's own address and port.
    pub targets: Arc<CheckTargets>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            flap_threshold: 4,
            flap_window: Duration::from_secs(120),
            exec_enabled: false,
            targets: Arc::new(CheckTargets::default()),
        }
    }
}

impl Policy {
    /// Refuses checks this orchestrator will not run: exec checks unless enabled, and checks that
    /// reach elsewhere than the instance at `address`:`port` and the allowed targets.
    pub fn allows(
        &self,
        checks: &[orch_protocol::health::CheckSpec],
        address: &str,
        port: u32,
    ) -> Result<(), orch_protocol::ProtocolError> {
        let port = u16::try_from(port).unwrap_or(0);
        for (i, check) in checks.iter().enumerate() {
            if check.kind == orch_protocol::health::CheckKind::Exec && !self.exec_enabled {
                return Err(orch_protocol::ProtocolError::invalid(
                    format!("checks[{i}].kind"),
                    "exec checks are disabled on this orchestrator; an operator can enable them with \
                     --health-exec-enabled (ORCH_HEALTH_EXEC_ENABLED=true)",
                ));
            }
            self.targets.admit(check, address, port, &format!("checks[{i}]"))?;
        }
        Ok(())
    }

    pub(super) fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.flap_window).unwrap_or(chrono::Duration::MAX)
    }
}

/// What a decision reads besides the instance: the time, the health policy, and for service-wide
/// maintenance the service's current maintenance.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
    pub service_maintenance: Option<&'a Maintenance>,
    /// Who sent the command (orch-protocol `principal`): the author of the change it makes.
    pub principal: &'a str,
}

/// An event to emit if the transaction commits.
#[derive(Debug, Clone)]
pub struct Emit {
    pub kind: EventKind,
    pub service: String,
    pub subject: String,
    pub data: serde_json::Value,
}

impl Emit {
    pub fn new(kind: EventKind, service: &str, subject: &str, data: impl Serialize) -> Emit {
        Emit {
            kind,
            service: service.to_string(),
            subject: subject.to_string(),
            data: serde_json::to_value(data).expect("event data serializes"),
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
