//! The registry's state machine, free of I/O: given a command, the current instance and the time,
//! it decides the outcome, the new state and the events. The writer runs it inside a transaction;
//! tests run it directly.

use chrono::{DateTime, Utc};
use orch_protocol::ErrorCode;
use orch_protocol::error::ProtocolError;
use orch_protocol::events::{
    DeregisterReason, DeregisteredData, EventKind, ExpiredData, RecoveredData, RegisteredData, SYSTEM_SERVICE,
    SelfPreservationData, UpdatedData,
};
use orch_protocol::registry::{Health, Instance, Registration};
use serde::{Deserialize, Serialize};

/// A command the registry applies. The first two come from clients; the rest are issued by the
/// orchestrator itself (lease sweeper, heartbeat path) and go through the same path.
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
    /// A heartbeat arrived for a critical instance.
    Recover {
        id: String,
    },
    /// Deregister if still critical since before `critical_before`.
    Reap {
        id: String,
        critical_before: DateTime<Utc>,
    },
    SelfPreservation {
        entered: bool,
        data: SelfPreservationData,
    },
}

impl Command {
    /// The instance the command touches, if any.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Command::Register(r) => r.id.as_deref(),
            Command::Deregister { id }
            | Command::Expire { id, .. }
            | Command::Recover { id }
            | Command::Reap { id, .. } => Some(id),
            Command::SelfPreservation { .. } => None,
        }
    }
}

/// What happened, as replied to the client and remembered for redeliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Registered,
    Updated,
    Unchanged,
    Deregistered,
    Expired,
    Recovered,
    /// An internal command found nothing to do (the instance changed meanwhile).
    Ignored,
    Recorded,
}

/// A successful outcome: `{"status": "...", "instance": {...}, "changed": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

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

/// An event to emit if the transaction commits.
#[derive(Debug, Clone)]
pub struct Emit {
    pub kind: EventKind,
    pub service: String,
    pub subject: String,
    pub data: serde_json::Value,
}

impl Emit {
    fn new(kind: EventKind, service: &str, subject: &str, data: impl Serialize) -> Emit {
        Emit {
            kind,
            service: service.to_string(),
            subject: subject.to_string(),
            data: serde_json::to_value(data).expect("event data serializes"),
        }
    }
}

/// The decision for one command.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub next: Next,
    pub emit: Option<Emit>,
    /// True when the command was refused because of what the client sent (it is dead-lettered when
    /// it came through the durable stream).
    pub rejected: bool,
}

impl Decision {
    fn applied(status: Status, instance: Option<Instance>, next: Next, emit: Option<Emit>) -> Decision {
        Decision {
            outcome: Outcome::Applied(Reply { status, instance, changed: Vec::new() }),
            next,
            emit,
            rejected: false,
        }
    }

    fn ignored() -> Decision {
        Decision::applied(Status::Ignored, None, Next::Keep, None)
    }

    fn not_found(id: &str) -> Decision {
        Decision {
            outcome: Outcome::failed(ProtocolError::field(
                ErrorCode::NotFound,
                "id",
                format!("no instance with id {id:?} is registered"),
            )),
            next: Next::Keep,
            emit: None,
            rejected: false,
        }
    }
}

/// Applies `command` to `current` (the instance with the command's id, if it exists). A
/// registration always carries its id here: the writer's callers assign one when the client did not.
pub fn decide(command: &Command, current: Option<&Instance>, now: DateTime<Utc>) -> Decision {
    match command {
        Command::Register(reg) => register(reg, current, now),
        Command::Deregister { id } => match current {
            None => Decision::not_found(id),
            Some(inst) => deregistered(inst, DeregisterReason::Requested),
        },
        Command::Expire { last_heartbeat_at, .. } => match current {
            Some(inst) if inst.health != Health::Critical => {
                let next = with_health(inst, Health::Critical, Some(now), now);
                let emit = Emit::new(
                    EventKind::Expired,
                    &inst.name,
                    &inst.id,
                    ExpiredData {
                        instance: next.clone(),
                        previous_health: inst.health,
                        last_heartbeat_at: *last_heartbeat_at,
                    },
                );
                Decision::applied(Status::Expired, Some(next.clone()), Next::Put(next), Some(emit))
            }
            _ => Decision::ignored(),
        },
        Command::Recover { .. } => match current {
            Some(inst) if inst.health == Health::Critical => {
                let next = with_health(inst, Health::Passing, None, now);
                let critical_for_ms =
                    inst.critical_since.map(|since| (now - since).num_milliseconds().max(0)).unwrap_or(0);
                let emit = Emit::new(
                    EventKind::Recovered,
                    &inst.name,
                    &inst.id,
                    RecoveredData { instance: next.clone(), previous_health: inst.health, critical_for_ms },
                );
                Decision::applied(Status::Recovered, Some(next.clone()), Next::Put(next), Some(emit))
            }
            _ => Decision::ignored(),
        },
        Command::Reap { critical_before, .. } => match current {
            Some(inst)
                if inst.health == Health::Critical && inst.critical_since.is_some_and(|s| s <= *critical_before) =>
            {
                deregistered(inst, DeregisterReason::CriticalTooLong)
            }
            _ => Decision::ignored(),
        },
        Command::SelfPreservation { entered, data } => {
            let kind = if *entered { EventKind::SelfPreservationEntered } else { EventKind::SelfPreservationExited };
            Decision::applied(
                Status::Recorded,
                None,
                Next::Keep,
                Some(Emit::new(kind, SYSTEM_SERVICE, "registry", data)),
            )
        }
    }
}

/// The instance leaves the registry, for `reason`.
fn deregistered(inst: &Instance, reason: DeregisterReason) -> Decision {
    let emit =
        Emit::new(EventKind::Deregistered, &inst.name, &inst.id, DeregisteredData { instance: inst.clone(), reason });
    Decision::applied(Status::Deregistered, Some(inst.clone()), Next::Delete, Some(emit))
}

/// The instance after a change of health: a new revision, everything else kept.
fn with_health(inst: &Instance, health: Health, critical_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Instance {
    Instance { health, critical_since, updated_at: now, revision: inst.revision + 1, ..inst.clone() }
}

fn register(reg: &Registration, current: Option<&Instance>, now: DateTime<Utc>) -> Decision {
    let id = reg.id.clone().expect("the writer assigns an id before deciding");
    match current {
        None => {
            let instance = Instance {
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
                checks: Vec::new(),
                maintenance: None,
                flapping_since: None,
                health_changes: Vec::new(),
                registered_at: now,
                updated_at: now,
                critical_since: None,
                revision: 1,
            };
            let emit = Emit::new(
                EventKind::Registered,
                &instance.name,
                &instance.id,
                RegisteredData { instance: instance.clone() },
            );
            Decision::applied(Status::Registered, Some(instance.clone()), Next::Put(instance), Some(emit))
        }
        Some(inst) if inst.name != reg.name => Decision {
            outcome: Outcome::failed(ProtocolError::field(
                ErrorCode::Conflict,
                "id",
                format!(
                    "instance id {:?} is registered for service {:?}, not {:?}; deregister it first or choose another id",
                    inst.id, inst.name, reg.name
                ),
            )),
            next: Next::Keep,
            emit: None,
            rejected: true,
        },
        Some(inst) => {
            let changed: Vec<String> = inst.differs_from(reg).into_iter().map(String::from).collect();
            if changed.is_empty() {
                return Decision::applied(Status::Unchanged, Some(inst.clone()), Next::Keep, None);
            }
            // An update keeps identity, health and lease: only the described fields change.
            let mut next = inst.clone();
            next.version = reg.version.clone();
            next.address = reg.address.clone();
            next.port = reg.port;
            next.protocol = reg.protocol.clone();
            next.tags = reg.tags.clone();
            next.metadata = reg.metadata.clone();
            next.dependencies = reg.dependencies.clone();
            next.weight = reg.weight;
            next.ttl_seconds = reg.ttl_seconds;
            next.updated_at = now;
            next.revision += 1;
            let emit = Emit::new(
                EventKind::Updated,
                &next.name,
                &next.id,
                UpdatedData { instance: next.clone(), changed: changed.clone() },
            );
            Decision {
                outcome: Outcome::Applied(Reply { status: Status::Updated, instance: Some(next.clone()), changed }),
                next: Next::Put(next),
                emit: Some(emit),
                rejected: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, name: &str) -> Registration {
        let mut r: Registration = orch_protocol::error::parse_json(
            format!(r#"{{"id": "{id}", "name": "{name}", "address": "127.0.0.1", "port": 80}}"#).as_bytes(),
        )
        .unwrap();
        r.id = Some(id.into());
        r
    }

    fn registered(id: &str) -> Instance {
        let Next::Put(i) = decide(&Command::Register(reg(id, "web")), None, Utc::now()).next else { panic!() };
        i
    }

    #[test]
    fn register_creates_passing_instance_with_event() {
        let d = decide(&Command::Register(reg("a", "web")), None, Utc::now());
        let Next::Put(inst) = &d.next else { panic!("{d:?}") };
        assert_eq!(inst.health, Health::Passing);
        assert_eq!(inst.revision, 1);
        assert_eq!(d.emit.unwrap().kind, EventKind::Registered);
    }

    #[test]
    fn identical_reregistration_changes_nothing() {
        let inst = registered("a");
        let d = decide(&Command::Register(reg("a", "web")), Some(&inst), Utc::now());
        assert_eq!(d.next, Next::Keep);
        assert!(d.emit.is_none());
        assert!(matches!(d.outcome, Outcome::Applied(Reply { status: Status::Unchanged, .. })));
    }

    #[test]
    fn reregistration_keeps_health_and_reports_changes() {
        let mut inst = registered("a");
        inst.health = Health::Critical;
        inst.critical_since = Some(Utc::now());
        let mut r = reg("a", "web");
        r.port = 81;
        r.tags = vec!["blue".into()];
        let d = decide(&Command::Register(r), Some(&inst), Utc::now());
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
        let d = decide(&Command::Register(reg("a", "api")), Some(&inst), Utc::now());
        assert!(d.rejected);
        assert_eq!(d.outcome.error().unwrap().code, ErrorCode::Conflict);
    }

    #[test]
    fn expire_then_recover() {
        let inst = registered("a");
        let t0 = Utc::now();
        let d = decide(&Command::Expire { id: "a".into(), last_heartbeat_at: None }, Some(&inst), t0);
        let Next::Put(critical) = d.next else { panic!() };
        assert_eq!(critical.health, Health::Critical);
        // Expiring twice does nothing.
        let again = decide(&Command::Expire { id: "a".into(), last_heartbeat_at: None }, Some(&critical), t0);
        assert_eq!(again.next, Next::Keep);
        let later = t0 + chrono::Duration::milliseconds(1500);
        let d = decide(&Command::Recover { id: "a".into() }, Some(&critical), later);
        let Next::Put(ok) = d.next else { panic!() };
        assert_eq!(ok.health, Health::Passing);
        assert_eq!(ok.critical_since, None);
        assert_eq!(d.emit.unwrap().data["critical_for_ms"], 1500);
    }

    #[test]
    fn reap_only_when_critical_long_enough() {
        let now = Utc::now();
        let mut inst = registered("a");
        let reap = |before| Command::Reap { id: "a".into(), critical_before: before };
        assert_eq!(decide(&reap(now), Some(&inst), now).next, Next::Keep);
        inst.health = Health::Critical;
        inst.critical_since = Some(now);
        assert_eq!(decide(&reap(now - chrono::Duration::seconds(1)), Some(&inst), now).next, Next::Keep);
        let d = decide(&reap(now), Some(&inst), now);
        assert_eq!(d.next, Next::Delete);
        assert_eq!(d.emit.unwrap().data["reason"], "critical_too_long");
    }

    #[test]
    fn deregister_unknown_is_not_found_but_not_rejected() {
        let d = decide(&Command::Deregister { id: "zz".into() }, None, Utc::now());
        assert!(!d.rejected);
        assert_eq!(d.outcome.error().unwrap().code, ErrorCode::NotFound);
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let d = decide(&Command::Register(reg("a", "web")), None, Utc::now());
        let json = serde_json::to_string(&d.outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), d.outcome);
        let nf = decide(&Command::Deregister { id: "zz".into() }, None, Utc::now()).outcome;
        let json = serde_json::to_string(&nf).unwrap();
        assert!(json.starts_with(r#"{"error":"#), "{json}");
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), nf);
    }
}
