//! Tests of the controller's decisions, without NATS, PostgreSQL or processes: the tests play the
//! agents, probes and timers, feeding their reports in, and check the effects and states that
//! come out. Time only moves when a test moves it.

mod agents;
mod apply;
mod config;
mod notify;
mod placement;
mod restarts;
mod rollout;
mod shedding;
mod shutdown;
mod startup;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use orch_protocol::agent::{self, Exit};
use orch_protocol::lifecycle::ServiceState;
use uuid::Uuid;

use super::{Asked, Desired, Effect, Event, Input, Machine, Now, Reply, RequestId};
use crate::lifecycle::LifecycleSettings;
use crate::lifecycle::controller::ManagedService;
use crate::lifecycle::graph::Graph;
use crate::lifecycle::manifest::Manifest;
use crate::lifecycle::shedding::ShedSettings;

/// The node every test service runs on (the manifest's default).
const NODE: &str = "local";

/// A node that is up, with `cpu` millicores and `memory` MiB to place on and no labels.
fn node(name: &str, cpu: u64, memory: u64) -> orch_protocol::resources::NodeInfo {
    use orch_protocol::resources::{Enforcement, NodeInfo, NodeReport, NodeStatus, Resources};
    let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let report = NodeReport {
        node: name.into(),
        capacity: Resources::new(cpu, memory),
        reserved: Resources::ZERO,
        labels: BTreeMap::new(),
        enforcement: Enforcement::CgroupV2,
        allocations: Vec::new(),
        cpu_used: 0.0,
        memory_used: 0.0,
        agent_version: "test".into(),
        agent_started: at,
        at,
    };
    NodeInfo::new(&report, NodeStatus::Ready, at, at)
}

/// Reconciliation with the agents at most this often.
const RECONCILE: Duration = Duration::from_secs(5);

fn shedding() -> ShedSettings {
    ShedSettings { cpu: 0.9, memory: 0.9, step: Duration::from_secs(10), restore_after: Duration::from_secs(30) }
}

fn manifest(text: &str) -> Box<Manifest> {
    let manifest = Manifest::parse(text).expect("a valid test manifest");
    Graph::new(&manifest).expect("a test manifest without cycles");
    Box::new(manifest)
}

/// A machine driven by a test, which plays everything around it.
struct Harness {
    machine: Machine,
    now: Now,
    /// The generation of each service's current process, from the effects that named it.
    generations: HashMap<String, u64>,
    /// The pid each service was given at its last launch.
    pids: HashMap<String, u32>,
    next_pid: u32,
    next_request: u64,
}

impl Harness {
    /// A machine with no stack.
    fn new() -> Harness {
        let now = Now { instant: Instant::now(), wall: DateTime::from_timestamp(1_767_225_600, 0).unwrap() };
        let settings =
            LifecycleSettings { reconcile_interval: RECONCILE, shedding: shedding(), ..LifecycleSettings::default() };
        let mut machine = Machine::new(settings, Arc::new(BTreeMap::new()), now);
        machine.handle(Input::Nodes(Arc::new(vec![node(NODE, 64_000, 256 * 1024)])), now);
        Harness { machine, now, generations: HashMap::new(), pids: HashMap::new(), next_pid: 1000, next_request: 0 }
    }

    /// A machine that resumed `text` as version 1, wanted up: its start-up run has begun; the
    /// effects of that.
    fn up(text: &str) -> (Harness, Vec<Effect>) {
        let mut h = Harness::new();
        let effects = h.resume(text);
        (h, effects)
    }

    /// Resumes `text` as version 1, wanted up, with nothing placed before; the effects.
    fn resume(&mut self, text: &str) -> Vec<Effect> {
        self.send(Input::Resume {
            version: 1,
            manifest: manifest(text),
            desired: Desired::Up,
            run_id: Uuid::nil(),
            placed: BTreeMap::new(),
        })
    }

    /// A machine that resumed `text` and brought every service to ready.
    fn ready(text: &str) -> Harness {
        let (mut h, effects) = Harness::up(text);
        h.settle(effects);
        assert!(h.machine.profile().is_some_and(|p| p.finished), "the start-up run finished");
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now.instant += by;
        self.now.wall += by;
    }

    fn send(&mut self, input: Input) -> Vec<Effect> {
        let effects = self.machine.handle(input, self.now);
        for effect in &effects {
            let named = match effect {
                Effect::Launch { service, generation, .. }
                | Effect::Stop { service, generation, .. }
                | Effect::WaitReady { service, generation, .. }
                | Effect::WaitNotified { service, generation, .. }
                | Effect::WatchLiveness { service, generation, .. }
                | Effect::ScheduleRestart { service, generation, .. } => Some((service, *generation)),
                _ => None,
            };
            if let Some((service, generation)) = named {
                self.generations.insert(service.clone(), generation);
            }
        }
        effects
    }

    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn generation(&self, service: &str) -> u64 {
        self.generations[service]
    }

    fn pid(&self, service: &str) -> u32 {
        self.pids[service]
    }

    /// The agent started the service's current process.
    fn launched(&mut self, service: &str) -> Vec<Effect> {
        self.next_pid += 1;
        self.pids.insert(service.to_string(), self.next_pid);
        let generation = self.generation(service);
        self.send(Input::Launched { service: service.into(), generation, result: Ok(self.next_pid) })
    }

    fn launch_failed(&mut self, service: &str, error: &str) -> Vec<Effect> {
        let generation = self.generation(service);
        self.send(Input::Launched { service: service.into(), generation, result: Err(error.into()) })
    }

    /// The readiness check of the service's current process passed.
    fn probed_ready(&mut self, service: &str) -> Vec<Effect> {
        let generation = self.generation(service);
        self.send(Input::Ready { service: service.into(), generation })
    }

    /// The agent reports that the service's current process said `READY=1`.
    fn notified(&mut self, service: &str) -> Vec<Effect> {
        let pid = self.pid(service);
        self.send(Input::Notified(notification(service, pid)))
    }

    fn unhealthy(&mut self, service: &str, reason: &str) -> Vec<Effect> {
        let generation = self.generation(service);
        self.send(Input::Unhealthy { service: service.into(), generation, reason: reason.into() })
    }

    /// The agent stopped the service's current process (by SIGTERM).
    fn stopped(&mut self, service: &str) -> Vec<Effect> {
        let generation = self.generation(service);
        let exit = Some(Exit::Signal { signal: 15 });
        self.send(Input::Stopped { service: service.into(), generation, exit })
    }

    /// The agent reports that the service's process ended by itself with `code`.
    fn exited(&mut self, service: &str, code: i32) -> Vec<Effect> {
        let pid = self.pid(service);
        self.send(Input::Exited(agent::Exited {
            node: NODE.into(),
            service: service.into(),
            pid,
            exit: Exit::Code { code },
            ran_for_ms: 10,
            stopped: false,
            oom_killed: false,
        }))
    }

    fn restart_due(&mut self, service: &str) -> Vec<Effect> {
        let generation = self.generation(service);
        self.send(Input::RestartDue { service: service.into(), generation })
    }

    /// Plays agents and probes under which every service starts and becomes ready: answers
    /// each launch in `effects`, and in what follows, and each readiness probe. Returns every
    /// effect seen.
    fn settle(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut seen = Vec::new();
        let mut pending: VecDeque<Effect> = effects.into();
        while let Some(effect) = pending.pop_front() {
            let next = match &effect {
                Effect::Launch { service, .. } => self.launched(service),
                Effect::WaitReady { service, .. } => self.probed_ready(service),
                Effect::WaitNotified { service, .. } => self.notified(service),
                _ => Vec::new(),
            };
            seen.push(effect);
            pending.extend(next);
        }
        seen
    }

    /// Plays agents that stop every process asked: answers each stop in `effects`, and in
    /// what follows. Returns every effect seen.
    fn stop_all(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut seen = Vec::new();
        let mut pending: VecDeque<Effect> = effects.into();
        while let Some(effect) = pending.pop_front() {
            let next = match &effect {
                Effect::Stop { service, .. } => self.stopped(service),
                _ => Vec::new(),
            };
            seen.push(effect);
            pending.extend(next);
        }
        seen
    }

    fn service(&self, name: &str) -> ManagedService {
        let (view, _) = self.machine.view().expect("a stack is applied");
        view.services.into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name}"))
    }

    fn state(&self, name: &str) -> ServiceState {
        self.service(name).state
    }
}

/// The report of a `READY=1` from process `pid` of `service` on the test node.
fn notification(service: &str, pid: u32) -> agent::Notified {
    agent::Notified {
        node: NODE.into(),
        service: service.into(),
        pid,
        ready: true,
        status: Some("serving".into()),
        at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
    }
}

/// The services launched, in order.
fn launches(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch { service, .. } => Some(service.as_str()),
            _ => None,
        })
        .collect()
}

/// The services whose stop is asked of their agent, in order.
fn stops(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Stop { service, .. } => Some(service.as_str()),
            _ => None,
        })
        .collect()
}

/// The transitions recorded, in order.
fn transitions(effects: &[Effect]) -> Vec<(&str, ServiceState)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(t) => Some((t.data.service.as_str(), t.data.state)),
            _ => None,
        })
        .collect()
}

/// The transitions of `service`, in order.
fn states_of(effects: &[Effect], service: &str) -> Vec<ServiceState> {
    transitions(effects).into_iter().filter(|(s, _)| *s == service).map(|(_, state)| state).collect()
}

/// The reason recorded with the last transition of `service` to `state`.
#[track_caller]
fn reason(effects: &[Effect], service: &str, state: ServiceState) -> String {
    effects
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Record(t) if t.data.service == service && t.data.state == state => t.data.reason.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no transition of {service} to {state} with a reason"))
}

/// The events published, in order.
fn events(effects: &[Effect]) -> Vec<&Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

/// The outcome of the run that finished among `effects`.
#[track_caller]
fn run_outcome(effects: &[Effect]) -> String {
    let finished: Vec<&str> = events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::RunFinished(data) => Some(data.outcome.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "one run finished");
    finished[0].to_string()
}

/// The replies among `effects`.
fn replies(effects: &[Effect]) -> Vec<&Reply> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(reply) => Some(reply),
            _ => None,
        })
        .collect()
}
