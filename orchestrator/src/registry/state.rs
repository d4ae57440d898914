//! The registry's state machine, free of I/O: given a command, the current instance and the time,
//! it decides the outcome, the new state, the events and the health history. The writer runs it
//! inside a transaction; tests run it directly. The health rules (aggregation, flap damping) are
//! in [`super::instance_health`].

use chrono::{DateTime, Utc};
use orch_protocol::ErrorCode;
use orch_protocol::error::ProtocolError;
use orch_protocol::events::{
    CheckChangedData, DeregisterReason, DeregisteredData, EventKind, ExpiredData, FlappingData, MaintenanceData,
    RecoveredData, RegisteredData, SYSTEM_SERVICE, SelfPreservationData, ServiceChangedData, SystemChangedData,
    UpdatedData,
};
use orch_protocol::health::{Check, CheckSpec, Maintenance};
use orch_protocol::registry::{Health, Instance, Registration};
use serde::{Deserialize, Serialize};

use super::decision::{Context, Effects, Emit};
use super::instance_health as health;
use crate::storage::health::Transition;

/// A command the registry applies. Registration, deregistration, check changes and maintenance
/// come from clients; the rest are issued by the orchestrator itself (lease sweeper, heartbeat
/// path, health checker and tracker) and go through the same path.
#[derive(Debug, Clone)]
pub enum Command {
    Register(Registration),
    Deregister {
        id: String,
    },
    /// The lease ran out.
    Expire {
        id: String,
        last_heartbeat_at: Option<DateTime<Utc>>,
    },
    /// A heartbeat arrived for an instance whose lease was critical.
    Recover {
        id: String,
    },
    /// Deregister if still critical since before `critical_before` (and not in maintenance).
    Reap {
        id: String,
        critical_before: DateTime<Utc>,
    },
    SelfPreservation {
        entered: bool,
        data: SelfPreservationData,
    },
    /// A check crossed a threshold (or a TTL check was updated or ran out): its new status.
    CheckResult {
        id: String,
        check: String,
        status: Health,
        output: String,
    },
    /// Adds a check to an instance, or replaces the check with the same id.
    PutCheck {
        id: String,
        spec: CheckSpec,
    },
    RemoveCheck {
        id: String,
        check: String,
    },
    /// Maintenance of one instance: on with a reason, or off (`None`).
    Maintenance {
        id: String,
        reason: Option<String>,
    },
    /// Ends flap damping if the instance has been stable for a whole window.
    Settle {
        id: String,
    },
    /// Maintenance of a whole service: on with a reason, or off (`None`).
    ServiceMaintenance {
        service: String,
        reason: Option<String>,
    },
    /// The tracker saw the aggregate of a service change; `None`: no longer tracked.
    ServiceHealth {
        service: String,
        data: Option<ServiceChangedData>,
    },
    /// The tracker saw the health of the whole system change.
    SystemHealth(SystemChangedData),
    /// An event about the orchestrator itself, with no state of its own (e.g. checker lag).
    Announce {
        kind: EventKind,
        data: serde_json::Value,
    },
}

impl Command {
    /// The command's name, a label of the command metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Register(_) => "register",
            Command::Deregister { .. } => "deregister",
            Command::Expire { .. } => "expire",
            Command::Recover { .. } => "recover",
            Command::Reap { .. } => "reap",
            Command::SelfPreservation { .. } => "self_preservation",
            Command::CheckResult { .. } => "check_result",
            Command::PutCheck { .. } => "put_check",
            Command::RemoveCheck { .. } => "remove_check",
            Command::Maintenance { .. } => "maintenance",
            Command::Settle { .. } => "settle",
            Command::ServiceMaintenance { .. } => "service_maintenance",
            Command::ServiceHealth { .. } => "service_health",
            Command::SystemHealth(_) => "system_health",
            Command::Announce { .. } => "announce",
        }
    }

    /// The instance the command touches, if any.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Command::Register(r) => r.id.as_deref(),
            Command::Deregister { id }
            | Command::Expire { id, .. }
            | Command::Recover { id }
            | Command::Reap { id, .. }
            | Command::CheckResult { id, .. }
            | Command::PutCheck { id, .. }
            | Command::RemoveCheck { id, .. }
            | Command::Maintenance { id, .. }
            | Command::Settle { id } => Some(id),
            Command::SelfPreservation { .. }
            | Command::ServiceMaintenance { .. }
            | Command::ServiceHealth { .. }
            | Command::SystemHealth(_)
            | Command::Announce { .. } => None,
        }
    }

    /// What decides the writer shard: the instance, or else the service, so that the commands on
    /// one of them are applied in the order they were submitted.
    pub fn shard_key(&self) -> &str {
        match self {
            Command::ServiceMaintenance { service, .. } | Command::ServiceHealth { service, .. } => service,
            other => other.instance_id().unwrap_or(""),
        }
    }
}

/// Writes beside the instance row that a decision asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SideWrite {
    ServiceMaintenance { service: String, maintenance: Option<Maintenance> },
    ServiceHealth { service: String, data: Option<ServiceChangedData> },
    SystemHealth(SystemChangedData),
    SelfPreservation { entered: bool, data: SelfPreservationData },
}

// The wire names are the protocol's; the registry's decisions call them `Status` and `Reply`.
pub use orch_protocol::registry::{CommandReply as Reply, CommandStatus as Status};

/// The outcome of one command, in the shape of the wire reply: a [`Reply`] or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
// Outcomes live for one reply; boxing the common variant would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Applied(Reply),
    Failed(orch_protocol::error::ErrorReply),
}

impl Outcome {
    pub fn failed(err: ProtocolError) -> Outcome {
        Outcome::Failed(orch_protocol::error::ErrorReply { error: err.0 })
    }

    pub fn error(&self) -> Option<&orch_protocol::ErrorBody> {
        match self {
            Outcome::Failed(e) => Some(&e.error),
            Outcome::Applied(_) => None,
        }
    }
}

/// The state after the command, for the one instance it touched.
#[derive(Debug, Clone, PartialEq)]
// Short-lived, one per command in a batch; `Put` is the common case.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Keep,
    Put(Instance),
    Delete,
}

/// The decision for one command.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub next: Next,
    /// Events to publish, in order, and health transitions to record.
    pub effects: Effects,
    pub side: Option<SideWrite>,
    /// True when the command was refused because of what the client sent (it is dead-lettered when
    /// it came through the durable stream).
    pub rejected: bool,
}

impl Decision {
    fn applied(status: Status, instance: Option<Instance>, next: Next, effects: Effects) -> Decision {
        Decision {
            outcome: Outcome::Applied(Reply { status, instance, changed: Vec::new() }),
            next,
            effects,
            side: None,
            rejected: false,
        }
    }

    /// A changed instance: replied with its new state, stored, with its effects.
    fn put(status: Status, instance: Instance, effects: Effects) -> Decision {
        Decision::applied(status, Some(instance.clone()), Next::Put(instance), effects)
    }

    fn ignored() -> Decision {
        Decision::applied(Status::Ignored, None, Next::Keep, Effects::default())
    }

    fn unchanged(instance: &Instance) -> Decision {
        Decision::applied(Status::Unchanged, Some(instance.clone()), Next::Keep, Effects::default())
    }

    fn recorded(effects: Effects, side: SideWrite) -> Decision {
        Decision { side: Some(side), ..Decision::applied(Status::Recorded, None, Next::Keep, effects) }
    }

    fn failed(error: ProtocolError) -> Decision {
        Decision {
            outcome: Outcome::failed(error),
            next: Next::Keep,
            effects: Effects::default(),
            side: None,
            rejected: false,
        }
    }

    fn not_found(id: &str) -> Decision {
        Decision::failed(ProtocolError::field(
            ErrorCode::NotFound,
            "id",
            format!("no instance with id {id:?} is registered"),
        ))
    }

    fn check_not_found(id: &str, check: &str) -> Decision {
        Decision::failed(ProtocolError::field(
            ErrorCode::NotFound,
            "check",
            format!("instance {id:?} has no check {check:?}"),
        ))
    }
}

/// Applies `command` to `current` (the instance with the command's id, if it exists). A
/// registration always carries its id here: the writer's callers assign one when the client did not.
pub fn decide(command: &Command, current: Option<&Instance>, ctx: &Context) -> Decision {
    let now = ctx.now;
    match command {
        Command::Register(reg) => register(reg, current, ctx),
        Command::Deregister { id } => match current {
            None => Decision::not_found(id),
            Some(inst) => deregistered(inst, DeregisterReason::Requested),
        },
        Command::Expire { last_heartbeat_at, .. } => match current {
            Some(inst) if inst.lease != Health::Critical => {
                let mut next = revised(inst, ctx);
                next.lease = Health::Critical;
                let mut effects = Effects::default();
                effects.transitions.push(Transition::check(&next, "lease", Health::Passing, Health::Critical, "", now));
                health::reassess(inst, &mut next, "lease", ctx, &mut effects);
                effects.lead(Emit::new(
                    EventKind::Expired,
                    &inst.name,
                    &inst.id,
                    ExpiredData {
                        instance: next.clone(),
                        previous_health: inst.health,
                        last_heartbeat_at: *last_heartbeat_at,
                    },
                ));
                Decision::put(Status::Expired, next, effects)
            }
            _ => Decision::ignored(),
        },
        Command::Recover { .. } => match current {
            Some(inst) if inst.lease == Health::Critical => {
                let mut next = revised(inst, ctx);
                next.lease = Health::Passing;
                let mut effects = Effects::default();
                let critical_for_ms =
                    inst.critical_since.map(|since| (now - since).num_milliseconds().max(0)).unwrap_or(0);
                effects.transitions.push(Transition::check(&next, "lease", Health::Critical, Health::Passing, "", now));
                health::reassess(inst, &mut next, "lease", ctx, &mut effects);
                effects.lead(Emit::new(
                    EventKind::Recovered,
                    &inst.name,
                    &inst.id,
                    RecoveredData { instance: next.clone(), previous_health: inst.health, critical_for_ms },
                ));
                Decision::put(Status::Recovered, next, effects)
            }
            _ => Decision::ignored(),
        },
        Command::Reap { critical_before, .. } => match current {
            Some(inst)
                if inst.health == Health::Critical
                    && inst.maintenance.is_none()
                    && inst.critical_since.is_some_and(|s| s <= *critical_before) =>
            {
                deregistered(inst, DeregisterReason::CriticalTooLong)
            }
            _ => Decision::ignored(),
        },
        Command::SelfPreservation { entered, data } => {
            let kind = if *entered { EventKind::SelfPreservationEntered } else { EventKind::SelfPreservationExited };
            let effects = Effects::with(Emit::new(kind, SYSTEM_SERVICE, "registry", data));
            Decision::recorded(effects, SideWrite::SelfPreservation { entered: *entered, data: data.clone() })
        }
        Command::CheckResult { id, check, status, output } => {
            let Some(inst) = current else { return Decision::not_found(id) };
            check_result(inst, check, *status, output, ctx)
        }
        Command::PutCheck { id, spec } => {
            let Some(inst) = current else { return Decision::not_found(id) };
            let mut checks: Vec<CheckSpec> = inst.checks.iter().map(|c| c.spec.clone()).collect();
            match checks.iter_mut().find(|c| c.id == spec.id) {
                Some(existing) if existing == spec => return Decision::unchanged(inst),
                Some(existing) => *existing = spec.clone(),
                None => checks.push(spec.clone()),
            }
            if let Err(e) = orch_protocol::health::validate_checks("checks", &checks)
                .and_then(|()| ctx.policy.allows(&checks, &inst.address, inst.port))
            {
                return Decision { rejected: true, ..Decision::failed(e) };
            }
            checks_changed(inst, &checks, ctx)
        }
        Command::RemoveCheck { id, check } => {
            let Some(inst) = current else { return Decision::not_found(id) };
            if !inst.checks.iter().any(|c| &c.spec.id == check) {
                return Decision::check_not_found(id, check);
            }
            let checks: Vec<CheckSpec> =
                inst.checks.iter().filter(|c| &c.spec.id != check).map(|c| c.spec.clone()).collect();
            checks_changed(inst, &checks, ctx)
        }
        Command::Maintenance { id, reason } => {
            let Some(inst) = current else { return Decision::not_found(id) };
            let next_maintenance = reason.as_ref().map(|reason| Maintenance {
                reason: reason.clone(),
                since: inst.maintenance.as_ref().map_or(now, |m| m.since),
            });
            if next_maintenance == inst.maintenance {
                return Decision::unchanged(inst);
            }
            let mut next = revised(inst, ctx);
            next.maintenance = next_maintenance;
            let kind = if reason.is_some() { EventKind::MaintenanceEntered } else { EventKind::MaintenanceExited };
            let data = MaintenanceData {
                service: inst.name.clone(),
                instance_id: Some(inst.id.clone()),
                reason: reason
                    .clone()
                    .or_else(|| inst.maintenance.as_ref().map(|m| m.reason.clone()))
                    .unwrap_or_default(),
            };
            Decision::put(Status::Updated, next, Effects::with(Emit::new(kind, &inst.name, &inst.id, data)))
        }
        Command::Settle { id } => match current {
            Some(inst) if health::settled(inst, ctx) => {
                let mut next = revised(inst, ctx);
                next.flapping_since = None;
                next.health_changes.clear();
                let window = humantime::format_duration(ctx.policy.flap_window).to_string();
                let data = FlappingData { instance: next.clone(), changes: 0, window };
                let effects = Effects::with(Emit::new(EventKind::FlappingStopped, &inst.name, &inst.id, data));
                Decision::put(Status::Updated, next, effects)
            }
            Some(_) => Decision::ignored(),
            None => Decision::not_found(id),
        },
        Command::ServiceMaintenance { service, reason } => {
            let current = ctx.service_maintenance;
            let next = reason
                .as_ref()
                .map(|reason| Maintenance { reason: reason.clone(), since: current.map_or(now, |m| m.since) });
            if next.as_ref() == current {
                return Decision::applied(Status::Unchanged, None, Next::Keep, Effects::default());
            }
            let kind = if reason.is_some() { EventKind::MaintenanceEntered } else { EventKind::MaintenanceExited };
            let data = MaintenanceData {
                service: service.clone(),
                instance_id: None,
                reason: reason.clone().or_else(|| current.map(|m| m.reason.clone())).unwrap_or_default(),
            };
            let effects = Effects::with(Emit::new(kind, service, service, data));
            let side = SideWrite::ServiceMaintenance { service: service.clone(), maintenance: next };
            Decision { side: Some(side), ..Decision::applied(Status::Updated, None, Next::Keep, effects) }
        }
        Command::ServiceHealth { service, data } => {
            let mut effects = Effects::default();
            if let Some(data) = data {
                effects.emit(Emit::new(EventKind::ServiceChanged, service, service, data));
                effects.transitions.push(Transition::service(data, now));
            }
            Decision::recorded(effects, SideWrite::ServiceHealth { service: service.clone(), data: data.clone() })
        }
        Command::SystemHealth(data) => {
            let mut effects = Effects::with(Emit::new(EventKind::SystemChanged, SYSTEM_SERVICE, "system", data));
            effects.transitions.push(Transition::system(data, now));
            Decision::recorded(effects, SideWrite::SystemHealth(data.clone()))
        }
        Command::Announce { kind, data } => Decision::applied(
            Status::Recorded,
            None,
            Next::Keep,
            Effects::with(Emit::new(*kind, SYSTEM_SERVICE, "orchestrator", data)),
        ),
    }
}

/// The instance leaves the registry, for `reason`.
fn deregistered(inst: &Instance, reason: DeregisterReason) -> Decision {
    let emit =
        Emit::new(EventKind::Deregistered, &inst.name, &inst.id, DeregisteredData { instance: inst.clone(), reason });
    Decision::applied(Status::Deregistered, Some(inst.clone()), Next::Delete, Effects::with(emit))
}

/// The instance as the start of a change: a new revision at `ctx.now` by `ctx.principal`,
/// everything else kept.
fn revised(inst: &Instance, ctx: &Context) -> Instance {
    Instance {
        updated_at: ctx.now,
        revision: inst.revision + 1,
        changed_by: Some(ctx.principal.to_string()),
        ..inst.clone()
    }
}

/// A check crossed a threshold. Only a change of status is stored: the output of runs that change
/// nothing stays in the checker's memory.
fn check_result(inst: &Instance, check: &str, status: Health, output: &str, ctx: &Context) -> Decision {
    let Some(index) = inst.checks.iter().position(|c| c.spec.id == check) else {
        return Decision::check_not_found(&inst.id, check);
    };
    let previous = inst.checks[index].status;
    if previous == status {
        return Decision::ignored();
    }
    let mut next = revised(inst, ctx);
    let output = orch_protocol::health::cap_output(output.to_string());
    next.checks[index] = Check { status, output: output.clone(), since: ctx.now, ..inst.checks[index].clone() };
    let mut effects = Effects::default();
    let mut transition = Transition::check(&next, check, previous, status, &output, ctx.now);
    health::reassess(inst, &mut next, &format!("check:{check}"), ctx, &mut effects);
    if next.flapping_since.is_some() {
        transition.damped = true;
    } else {
        let data = CheckChangedData {
            service: inst.name.clone(),
            instance_id: inst.id.clone(),
            check: check.to_string(),
            kind: inst.checks[index].spec.kind,
            previous,
            status,
            output,
        };
        effects.lead(Emit::new(EventKind::CheckChanged, &inst.name, &inst.id, data));
    }
    effects.transitions.insert(0, transition);
    Decision::put(Status::Updated, next, effects)
}

/// The checks of `inst` after a change of their specs: an unchanged spec keeps its state, a new or
/// changed one starts from its initial status.
fn merge_checks(inst: &Instance, specs: &[CheckSpec], now: DateTime<Utc>) -> Vec<Check> {
    specs
        .iter()
        .map(|spec| match inst.checks.iter().find(|c| &c.spec == spec) {
            Some(existing) => existing.clone(),
            None => Check { spec: spec.clone(), status: spec.initial_status, output: String::new(), since: now },
        })
        .collect()
}

/// An instance whose declared checks were added, replaced or removed through the API.
fn checks_changed(inst: &Instance, specs: &[CheckSpec], ctx: &Context) -> Decision {
    let mut next = revised(inst, ctx);
    next.checks = merge_checks(inst, specs, ctx.now);
    updated(inst, next, vec!["checks".into()], ctx)
}

/// `inst` became `next` by a change of the `changed` fields: its health is reassessed (its
/// checks may have changed), and the `updated` event leads the effects.
fn updated(inst: &Instance, mut next: Instance, changed: Vec<String>, ctx: &Context) -> Decision {
    let mut effects = Effects::default();
    health::reassess(inst, &mut next, "checks", ctx, &mut effects);
    effects.lead(Emit::new(
        EventKind::Updated,
        &next.name,
        &next.id,
        UpdatedData { instance: next.clone(), changed: changed.clone() },
    ));
    Decision {
        outcome: Outcome::Applied(Reply { status: Status::Updated, instance: Some(next.clone()), changed }),
        ..Decision::put(Status::Updated, next, effects)
    }
}

fn register(reg: &Registration, current: Option<&Instance>, ctx: &Context) -> Decision {
    let now = ctx.now;
    if let Err(e) = ctx.policy.allows(&reg.checks, &reg.address, reg.port) {
        return Decision { rejected: true, ..Decision::failed(e) };
    }
    let id = reg.id.clone().expect("the writer assigns an id before deciding");
    match current {
        None => {
            let mut instance = Instance {
                changed_by: Some(ctx.principal.to_string()),
                id,
                name: reg.name.clone(),
                version: reg.version.clone(),
                address: reg.address.clone(),
                port: reg.port,
                protocol: reg.protocol.clone(),
                tags: reg.tags.clone(),
                metadata: reg.metadata.clone(),
                dependencies: reg.dependencies.clone(),
                weight: reg.weight,
                ttl_seconds: reg.ttl_seconds,
                health: Health::Passing,
                lease: Health::Passing,
                checks: reg
                    .checks
                    .iter()
                    .map(|spec| Check {
                        spec: spec.clone(),
                        status: spec.initial_status,
                        output: String::new(),
                        since: now,
                    })
                    .collect(),
                maintenance: None,
                flapping_since: None,
                health_changes: Vec::new(),
                registered_at: now,
                updated_at: now,
                critical_since: None,
                revision: 1,
            };
            // The starting health is not a transition: no health event, no flap count.
            instance.health = health::worst(&instance);
            instance.critical_since = (instance.health == Health::Critical).then_some(now);
            let emit = Emit::new(
                EventKind::Registered,
                &instance.name,
                &instance.id,
                RegisteredData { instance: instance.clone() },
            );
            Decision::put(Status::Registered, instance, Effects::with(emit))
        }
        Some(inst) if inst.name != reg.name => Decision {
            rejected: true,
            ..Decision::failed(ProtocolError::field(
                ErrorCode::Conflict,
                "id",
                format!(
                    "instance id {:?} is registered for service {:?}, not {:?}; deregister it first or choose another id",
                    inst.id, inst.name, reg.name
                ),
            ))
        },
        Some(inst) => {
            let changed: Vec<String> = inst.differs_from(reg).into_iter().map(String::from).collect();
            if changed.is_empty() {
                return Decision::unchanged(inst);
            }
            // An update keeps identity, health, lease and maintenance: only the described fields
            // change, and checks whose spec is unchanged keep their state.
            let mut next = revised(inst, ctx);
            next.version = reg.version.clone();
            next.address = reg.address.clone();
            next.port = reg.port;
            next.protocol = reg.protocol.clone();
            next.tags = reg.tags.clone();
            next.metadata = reg.metadata.clone();
            next.dependencies = reg.dependencies.clone();
            next.weight = reg.weight;
            next.ttl_seconds = reg.ttl_seconds;
            next.checks = merge_checks(inst, &reg.checks, now);
            updated(inst, next, changed, ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::decision::Policy;

    fn ctx(now: DateTime<Utc>) -> Context<'static> {
        static POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(|| Policy {
            flap_threshold: 2,
            flap_window: std::time::Duration::from_secs(60),
            ..Policy::default()
        });
        Context { now, policy: &POLICY, service_maintenance: None, principal: "key:test" }
    }

    fn at(command: &Command, current: Option<&Instance>, now: DateTime<Utc>) -> Decision {
        decide(command, current, &ctx(now))
    }

    fn kinds(d: &Decision) -> Vec<EventKind> {
        d.effects.events.iter().map(|e| e.kind).collect()
    }

    fn reg(id: &str, name: &str) -> Registration {
        let mut r: Registration = orch_protocol::error::parse_json(
            format!(r#"{{"id": "{id}", "name": "{name}", "address": "127.0.0.1", "port": 80}}"#).as_bytes(),
        )
        .unwrap();
        r.id = Some(id.into());
        r
    }

    fn registered(id: &str) -> Instance {
        let Next::Put(i) = at(&Command::Register(reg(id, "web")), None, Utc::now()).next else { panic!() };
        i
    }

    #[test]
    fn register_creates_passing_instance_with_event() {
        let d = at(&Command::Register(reg("a", "web")), None, Utc::now());
        let Next::Put(inst) = &d.next else { panic!("{d:?}") };
        assert_eq!(inst.health, Health::Passing);
        assert_eq!(inst.revision, 1);
        assert_eq!(d.effects.events[0].kind, EventKind::Registered);
    }

    #[test]
    fn identical_reregistration_changes_nothing() {
        let inst = registered("a");
        let d = at(&Command::Register(reg("a", "web")), Some(&inst), Utc::now());
        assert_eq!(d.next, Next::Keep);
        assert!(d.effects.events.is_empty());
        assert!(matches!(d.outcome, Outcome::Applied(Reply { status: Status::Unchanged, .. })));
    }

    #[test]
    fn reregistration_keeps_health_and_reports_changes() {
        let mut inst = registered("a");
        inst.health = Health::Critical;
        inst.lease = Health::Critical;
        inst.critical_since = Some(Utc::now());
        let mut r = reg("a", "web");
        r.port = 81;
        r.tags = vec!["blue".into()];
        let d = at(&Command::Register(r), Some(&inst), Utc::now());
        let Next::Put(next) = &d.next else { panic!() };
        assert_eq!(next.health, Health::Critical);
        assert_eq!(next.critical_since, inst.critical_since);
        assert_eq!(next.registered_at, inst.registered_at);
        assert_eq!(next.revision, 2);
        let Outcome::Applied(reply) = d.outcome else { panic!() };
        assert_eq!(reply.changed, vec!["port", "tags"]);
    }

    #[test]
    fn reregistration_under_another_name_is_a_conflict() {
        let inst = registered("a");
        let d = at(&Command::Register(reg("a", "api")), Some(&inst), Utc::now());
        assert!(d.rejected);
        assert_eq!(d.outcome.error().unwrap().code, ErrorCode::Conflict);
    }

    #[test]
    fn expire_then_recover() {
        let inst = registered("a");
        let t0 = Utc::now();
        let d = at(&Command::Expire { id: "a".into(), last_heartbeat_at: None }, Some(&inst), t0);
        let Next::Put(critical) = d.next else { panic!() };
        assert_eq!(critical.health, Health::Critical);
        // Expiring twice does nothing.
        let again = at(&Command::Expire { id: "a".into(), last_heartbeat_at: None }, Some(&critical), t0);
        assert_eq!(again.next, Next::Keep);
        let later = t0 + chrono::Duration::milliseconds(1500);
        let d = at(&Command::Recover { id: "a".into() }, Some(&critical), later);
        let Next::Put(ok) = d.next else { panic!() };
        assert_eq!(ok.health, Health::Passing);
        assert_eq!(ok.critical_since, None);
        assert_eq!(d.effects.events[0].data["critical_for_ms"], 1500);
    }

    #[test]
    fn reap_only_when_critical_long_enough() {
        let now = Utc::now();
        let mut inst = registered("a");
        let reap = |before| Command::Reap { id: "a".into(), critical_before: before };
        assert_eq!(at(&reap(now), Some(&inst), now).next, Next::Keep);
        inst.health = Health::Critical;
        inst.critical_since = Some(now);
        assert_eq!(at(&reap(now - chrono::Duration::seconds(1)), Some(&inst), now).next, Next::Keep);
        let d = at(&reap(now), Some(&inst), now);
        assert_eq!(d.next, Next::Delete);
        assert_eq!(d.effects.events[0].data["reason"], "critical_too_long");
    }

    #[test]
    fn deregister_unknown_is_not_found_but_not_rejected() {
        let d = at(&Command::Deregister { id: "zz".into() }, None, Utc::now());
        assert!(!d.rejected);
        assert_eq!(d.outcome.error().unwrap().code, ErrorCode::NotFound);
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let d = at(&Command::Register(reg("a", "web")), None, Utc::now());
        let json = serde_json::to_string(&d.outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), d.outcome);
        let nf = at(&Command::Deregister { id: "zz".into() }, None, Utc::now()).outcome;
        let json = serde_json::to_string(&nf).unwrap();
        assert!(json.starts_with(r#"{"error":"#), "{json}");
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), nf);
    }

    fn with_http_check(id: &str) -> Instance {
        let mut r = reg(id, "web");
        r.checks = vec![CheckSpec::new(orch_protocol::health::CheckKind::Http)];
        let Next::Put(i) = at(&Command::Register(r), None, Utc::now()).next else { panic!() };
        i
    }

    fn result(status: Health) -> Command {
        Command::CheckResult { id: "a".into(), check: "http".into(), status, output: "out".into() }
    }

    #[test]
    fn a_declared_check_starts_critical_without_a_transition() {
        let inst = with_http_check("a");
        assert_eq!(inst.health, Health::Critical);
        assert!(inst.critical_since.is_some());
        assert!(inst.health_changes.is_empty(), "the starting state is not a change");
    }

    #[test]
    fn check_results_change_the_instance_with_events_and_history() {
        let inst = with_http_check("a");
        let d = at(&result(Health::Passing), Some(&inst), Utc::now());
        assert_eq!(kinds(&d), vec![EventKind::CheckChanged, EventKind::InstanceChanged]);
        let levels: Vec<_> = d.effects.transitions.iter().map(|t| t.level).collect();
        assert_eq!(levels, vec!["check", "instance"]);
        let Next::Put(passing) = d.next else { panic!() };
        assert_eq!((passing.health, passing.critical_since), (Health::Passing, None));
        assert_eq!(passing.checks[0].output, "out");
        let same = at(&result(Health::Passing), Some(&passing), Utc::now());
        assert_eq!(same.next, Next::Keep, "no change, nothing stored");
        let missing = at(
            &Command::CheckResult {
                id: "a".into(),
                check: "nope".into(),
                status: Health::Passing,
                output: String::new(),
            },
            Some(&passing),
            Utc::now(),
        );
        assert_eq!(missing.outcome.error().unwrap().field.as_deref(), Some("check"));
    }

    #[test]
    fn flapping_damps_events_until_settled() {
        let mut inst = with_http_check("a");
        let t0 = Utc::now();
        let mut all = Vec::new();
        for (i, status) in
            [Health::Passing, Health::Critical, Health::Passing, Health::Critical].into_iter().enumerate()
        {
            let d = at(&result(status), Some(&inst), t0 + chrono::Duration::seconds(i as i64));
            all.push(kinds(&d));
            let Next::Put(next) = d.next else { panic!() };
            inst = next;
        }
        assert_eq!(all[2], vec![EventKind::FlappingStarted], "third change within the window: flapping, damped");
        assert!(all[3].is_empty(), "damped while flapping");
        assert!(inst.flapping_since.is_some());
        let early = at(&Command::Settle { id: "a".into() }, Some(&inst), t0 + chrono::Duration::seconds(30));
        assert_eq!(early.next, Next::Keep, "not stable for a whole window yet");
        let d = at(&Command::Settle { id: "a".into() }, Some(&inst), t0 + chrono::Duration::seconds(200));
        assert_eq!(kinds(&d), vec![EventKind::FlappingStopped]);
        let Next::Put(settled) = d.next else { panic!() };
        assert!(settled.flapping_since.is_none());
    }

    #[test]
    fn maintenance_on_off_and_protects_from_reaping() {
        let mut inst = registered("a");
        inst.health = Health::Critical;
        inst.critical_since = Some(Utc::now() - chrono::Duration::hours(1));
        let on = Command::Maintenance { id: "a".into(), reason: Some("upgrade".into()) };
        let d = at(&on, Some(&inst), Utc::now());
        assert_eq!(kinds(&d), vec![EventKind::MaintenanceEntered]);
        let Next::Put(in_maintenance) = d.next else { panic!() };
        assert_eq!(at(&on, Some(&in_maintenance), Utc::now()).next, Next::Keep, "idempotent");
        let reap = Command::Reap { id: "a".into(), critical_before: Utc::now() };
        assert_eq!(at(&reap, Some(&in_maintenance), Utc::now()).next, Next::Keep);
        let off = at(&Command::Maintenance { id: "a".into(), reason: None }, Some(&in_maintenance), Utc::now());
        assert_eq!(kinds(&off), vec![EventKind::MaintenanceExited]);
        assert_eq!(off.effects.events[0].data["reason"], "upgrade");
    }

    #[test]
    fn lease_expiry_is_a_check_transition_too() {
        let inst = registered("a");
        let d = at(&Command::Expire { id: "a".into(), last_heartbeat_at: None }, Some(&inst), Utc::now());
        assert_eq!(kinds(&d), vec![EventKind::Expired, EventKind::InstanceChanged]);
        assert_eq!(d.effects.events[0].data["instance"]["health"], "critical");
        let Next::Put(expired) = d.next else { panic!() };
        assert_eq!((expired.lease, expired.health), (Health::Critical, Health::Critical));
    }

    #[test]
    fn exec_checks_are_refused_unless_enabled() {
        let mut r = reg("a", "web");
        let mut exec = CheckSpec::new(orch_protocol::health::CheckKind::Exec);
        exec.command = vec!["/bin/true".into()];
        r.checks = vec![exec];
        let d = at(&Command::Register(r), None, Utc::now());
        assert!(d.rejected);
        assert_eq!(d.outcome.error().unwrap().field.as_deref(), Some("checks[0].kind"));
    }
}
