//! The tracker: a view in memory of every instance's health, kept current from the stream of
//! committed changes. From it come the aggregates of services and of the system (announced only
//! when they change), the deregistration of instances critical for too long, and the end of flap
//! damping. Pure logic: it returns commands, the caller submits them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::events::{ServiceChangedData, SystemChangedData};
use orch_protocol::health::{Aggregate, Counts};
use orch_protocol::registry::{Health, Instance};
use serde::Serialize;

use crate::registry::{Change, Command};
use crate::storage::instances::Summary;

/// Retry an internal command (reap, settle) that changed nothing after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Tracked {
    service: String,
    health: Health,
    maintenance: bool,
    flapping: bool,
    critical_since: Option<DateTime<Utc>>,
    last_change: Option<DateTime<Utc>>,
}

impl Tracked {
    fn of(inst: &Instance) -> Tracked {
        Tracked {
            service: inst.name.clone(),
            health: inst.health,
            maintenance: inst.maintenance.is_some(),
            flapping: inst.flapping_since.is_some(),
            critical_since: inst.critical_since,
            last_change: inst.health_changes.last().copied(),
        }
    }

    fn count_into(&self, counts: &mut Counts, sign: i32) {
        let field = if self.maintenance {
            &mut counts.maintenance
        } else if self.flapping {
            counts.flapping = counts.flapping.saturating_add_signed(sign);
            &mut counts.warning
        } else {
            match self.health {
                Health::Passing => &mut counts.passing,
                Health::Warning => &mut counts.warning,
                Health::Critical => &mut counts.critical,
            }
        };
        *field = field.saturating_add_signed(sign);
    }
}

/// The health of one service as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ServiceHealth)]
pub struct ServiceView {
    pub service: String,
    pub state: Aggregate,
    pub counts: Counts,
    /// Marked critical: the system is critical while this service is.
    pub critical: bool,
    pub in_maintenance: bool,
}

/// The health of the whole system as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SystemView {
    pub state: Aggregate,
    pub healthy: u32,
    pub degraded: u32,
    pub critical: u32,
    /// Services marked critical (configuration).
    pub critical_services: Vec<String>,
    /// Of those, the ones that are critical now.
    pub critical_services_down: Vec<String>,
    pub services_in_maintenance: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    instances: HashMap<String, Tracked>,
    counts: HashMap<String, Counts>,
    /// The aggregate last recorded (submitted) for each tracked service.
    recorded: HashMap<String, Aggregate>,
    recorded_system: Option<Aggregate>,
    /// Services whose counts changed since the last `publish`.
    dirty: HashSet<String>,
    service_maintenance: HashSet<String>,
    critical_services: BTreeSet<String>,
    /// Internal commands in flight, by instance id, with when they were sent.
    pending: HashMap<String, DateTime<Utc>>,
}

impl Tracker {
    pub fn new(critical_services: impl IntoIterator<Item = String>) -> Tracker {
        let critical_services: BTreeSet<String> = critical_services.into_iter().collect();
        // A critical service is tracked from the start, even before its first instance.
        let dirty = critical_services.iter().cloned().collect();
        Tracker { critical_services, dirty, ..Default::default() }
    }

    /// Loads the state found in PostgreSQL at start-up: instances, services in maintenance, and the
    /// aggregates recorded before the restart (so only real transitions are announced).
    pub fn load(
        &mut self,
        summaries: &[Summary],
        service_maintenance: impl IntoIterator<Item = String>,
        recorded: HashMap<String, Aggregate>,
        recorded_system: Option<Aggregate>,
    ) {
        self.service_maintenance = service_maintenance.into_iter().collect();
        for s in summaries {
            let tracked = Tracked {
                service: s.name.clone(),
                health: Health::parse(&s.health).unwrap_or(Health::Critical),
                maintenance: s.in_maintenance,
                flapping: s.flapping_since.is_some(),
                critical_since: s.critical_since,
                last_change: s.last_change,
            };
            tracked.count_into(self.counts.entry(s.name.clone()).or_default(), 1);
            self.instances.insert(s.id.clone(), tracked);
        }
        self.dirty.extend(recorded.keys().cloned());
        self.dirty.extend(self.counts.keys().cloned());
        self.dirty.extend(self.critical_services.iter().cloned());
        self.recorded = recorded;
        self.recorded_system = recorded_system;
    }

    /// Takes one committed change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Instance { id, now } => {
                self.pending.remove(id);
                if let Some(old) = self.instances.remove(id) {
                    old.count_into(self.counts.entry(old.service.clone()).or_default(), -1);
                    self.dirty.insert(old.service);
                }
                if let Some(inst) = now {
                    let tracked = Tracked::of(inst);
                    tracked.count_into(self.counts.entry(inst.name.clone()).or_default(), 1);
                    self.dirty.insert(inst.name.clone());
                    self.instances.insert(id.clone(), tracked);
                }
            }
            Change::ServiceMaintenance { service, on } => {
                if *on {
                    self.service_maintenance.insert(service.clone());
                } else {
                    self.service_maintenance.remove(service);
                }
                self.dirty.insert(service.clone());
            }
        }
    }

    fn state_of(&self, service: &str) -> Option<Aggregate> {
        let counts = self.counts.get(service).copied().unwrap_or_default();
        let tracked = counts.active() + counts.maintenance > 0 || self.critical_services.contains(service);
        tracked.then(|| counts.aggregate())
    }

    /// Commands that record the aggregates that changed since the last call.
    pub fn publish(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut dirty: Vec<String> = self.dirty.drain().collect();
        dirty.sort();
        for service in dirty {
            let state = self.state_of(&service);
            let counts = self.counts.get(&service).copied().unwrap_or_default();
            if state.is_none() {
                self.counts.remove(&service);
            }
            let previous = self.recorded.get(&service).copied();
            if state == previous {
                continue;
            }
            let data = state.map(|state| ServiceChangedData {
                service: service.clone(),
                previous,
                state,
                counts,
                critical: self.critical_services.contains(&service),
            });
            match state {
                Some(state) => self.recorded.insert(service.clone(), state),
                None => self.recorded.remove(&service),
            };
            commands.push(Command::ServiceHealth { service, data });
        }
        let system = self.system();
        if Some(system.state) != self.recorded_system {
            commands.push(Command::SystemHealth(SystemChangedData {
                previous: self.recorded_system,
                state: system.state,
                healthy: system.healthy,
                degraded: system.degraded,
                critical: system.critical,
                critical_services_down: system.critical_services_down,
            }));
            self.recorded_system = Some(system.state);
        }
        commands
    }

    /// Deregistrations and flap settlements due now. `reap_before`: instances critical since
    /// before it are deregistered (`None` while self-preservation holds).
    pub fn due(
        &mut self,
        now: DateTime<Utc>,
        reap_before: Option<DateTime<Utc>>,
        flap_window: Duration,
    ) -> Vec<Command> {
        let retry_before = now - chrono::Duration::from_std(RETRY_AFTER).unwrap_or_default();
        let settle_before = now - chrono::Duration::from_std(flap_window).unwrap_or_default();
        let mut commands = Vec::new();
        for (id, t) in &self.instances {
            if self.pending.get(id).is_some_and(|at| *at > retry_before) {
                continue;
            }
            if let Some(before) = reap_before
                && t.health == Health::Critical
                && !t.maintenance
                && !self.service_maintenance.contains(&t.service)
                && t.critical_since.is_some_and(|since| since <= before)
            {
                tracing::info!(instance = %id, service = %t.service, "critical too long; deregistering");
                commands.push(Command::Reap { id: id.clone(), critical_before: before });
            } else if t.flapping && t.last_change.is_none_or(|last| last <= settle_before) {
                tracing::info!(instance = %id, service = %t.service, "stable for a whole flap window; ending damping");
                commands.push(Command::Settle { id: id.clone() });
            }
        }
        for command in &commands {
            if let Some(id) = command.instance_id() {
                self.pending.insert(id.to_string(), now);
            }
        }
        commands
    }

    pub fn service(&self, service: &str) -> Option<ServiceView> {
        Some(ServiceView {
            service: service.to_string(),
            state: self.state_of(service)?,
            counts: self.counts.get(service).copied().unwrap_or_default(),
            critical: self.critical_services.contains(service),
            in_maintenance: self.service_maintenance.contains(service),
        })
    }

    /// Services in maintenance, and services whose every instance is, take no part in the
    /// system's health.
    pub fn system(&self) -> SystemView {
        let mut view = SystemView {
            state: Aggregate::Healthy,
            healthy: 0,
            degraded: 0,
            critical: 0,
            critical_services: self.critical_services.iter().cloned().collect(),
            critical_services_down: Vec::new(),
            services_in_maintenance: self.service_maintenance.iter().cloned().collect(),
        };
        view.services_in_maintenance.sort();
        let services: BTreeSet<&String> = self.counts.keys().chain(self.critical_services.iter()).collect();
        for service in services {
            // A service in maintenance, or whose every instance is, is out on purpose.
            let counts = self.counts.get(service).copied().unwrap_or_default();
            if self.service_maintenance.contains(service) || (counts.active() == 0 && counts.maintenance > 0) {
                continue;
            }
            let Some(state) = self.state_of(service) else { continue };
            match state {
                Aggregate::Healthy => view.healthy += 1,
                Aggregate::Degraded => view.degraded += 1,
                Aggregate::Critical => view.critical += 1,
            }
            if state == Aggregate::Critical && self.critical_services.contains(service) {
                view.critical_services_down.push(service.clone());
            }
        }
        view.state = if !view.critical_services_down.is_empty() {
            Aggregate::Critical
        } else if view.degraded + view.critical > 0 {
            Aggregate::Degraded
        } else {
            Aggregate::Healthy
        };
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, service: &str, health: Health) -> Instance {
        crate::registry::sample_instance(id, service, health)
    }

    fn put(t: &mut Tracker, i: Instance) {
        t.apply(&Change::Instance { id: i.id.clone(), now: Some(Box::new(i)) });
    }

    fn service_states(commands: &[Command]) -> Vec<(String, Option<Aggregate>)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::ServiceHealth { service, data } => Some((service.clone(), data.as_ref().map(|d| d.state))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn announces_only_changes_of_the_aggregate() {
        let mut t = Tracker::new([]);
        put(&mut t, inst("a", "web", Health::Passing));
        let first = t.publish();
        assert_eq!(service_states(&first), vec![("web".into(), Some(Aggregate::Healthy))]);
        assert!(matches!(first.last(), Some(Command::SystemHealth(d)) if d.state == Aggregate::Healthy));
        put(&mut t, inst("b", "web", Health::Passing));
        assert!(t.publish().is_empty(), "counts changed, state did not");
        put(&mut t, inst("b", "web", Health::Critical));
        let c = t.publish();
        assert_eq!(service_states(&c), vec![("web".into(), Some(Aggregate::Degraded))]);
        assert!(matches!(c.last(), Some(Command::SystemHealth(d)) if d.state == Aggregate::Degraded));
        t.apply(&Change::Instance { id: "a".into(), now: None });
        t.apply(&Change::Instance { id: "b".into(), now: None });
        assert_eq!(service_states(&t.publish()), vec![("web".into(), None)], "no instance left: untracked");
    }

    #[test]
    fn critical_service_down_makes_the_system_critical() {
        let mut t = Tracker::new(["db".to_string()]);
        put(&mut t, inst("w", "web", Health::Passing));
        let c = t.publish();
        assert!(service_states(&c).contains(&("db".into(), Some(Aggregate::Critical))), "no instance of db");
        assert_eq!(t.system().state, Aggregate::Critical);
        assert_eq!(t.system().critical_services_down, vec!["db".to_string()]);
        put(&mut t, inst("d", "db", Health::Passing));
        t.publish();
        assert_eq!(t.system().state, Aggregate::Healthy);
    }

    #[test]
    fn maintenance_and_flapping_are_counted_apart() {
        let mut t = Tracker::new([]);
        let mut m = inst("a", "web", Health::Critical);
        m.maintenance = Some(orch_protocol::health::Maintenance { reason: "x".into(), since: Utc::now() });
        put(&mut t, m);
        let mut f = inst("b", "web", Health::Passing);
        f.flapping_since = Some(Utc::now());
        put(&mut t, f);
        let view = t.service("web").unwrap();
        assert_eq!((view.counts.maintenance, view.counts.warning, view.counts.flapping), (1, 1, 1));
        assert_eq!(view.state, Aggregate::Degraded);
        t.apply(&Change::Instance { id: "b".into(), now: None });
        assert_eq!(t.service("web").unwrap().state, Aggregate::Critical, "nothing can serve it");
        assert_eq!(t.system().state, Aggregate::Healthy, "but it is out on purpose");
    }

    #[test]
    fn reaps_once_and_not_in_maintenance() {
        let mut t = Tracker::new([]);
        let mut a = inst("a", "web", Health::Critical);
        a.critical_since = Some(Utc::now() - chrono::Duration::minutes(20));
        put(&mut t, a.clone());
        let before = Some(Utc::now() - chrono::Duration::minutes(10));
        assert_eq!(t.due(Utc::now(), before, Duration::from_secs(60)).len(), 1);
        assert!(t.due(Utc::now(), before, Duration::from_secs(60)).is_empty(), "in flight");
        assert!(t.due(Utc::now(), None, Duration::from_secs(60)).is_empty());
        a.maintenance = Some(orch_protocol::health::Maintenance { reason: String::new(), since: Utc::now() });
        put(&mut t, a);
        assert!(t.due(Utc::now(), before, Duration::from_secs(60)).is_empty(), "maintenance protects");
        let mut b = inst("b", "api", Health::Critical);
        b.critical_since = Some(Utc::now() - chrono::Duration::minutes(20));
        put(&mut t, b);
        t.apply(&Change::ServiceMaintenance { service: "api".into(), on: true });
        assert!(t.due(Utc::now(), before, Duration::from_secs(60)).is_empty(), "service maintenance protects");
    }
}
