//! Health rules of one instance, free of I/O: its health is the worst of its lease and its checks;
//! every change of it is a transition, recorded in the history and announced by an event, unless
//! the instance flaps. Flapping means more than `flap_threshold` changes inside `flap_window`; while
//! it lasts, check and instance events are held back (the history still records every change,
//! marked `damped`), and it ends once the instance stayed stable for a whole window.

use orch_protocol::events::{EventKind, FlappingData, InstanceChangedData};
use orch_protocol::registry::{Health, Instance};

use super::decision::{Context, Effects, Emit};
use crate::storage::health::Transition;

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
