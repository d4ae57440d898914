//! The start-up of a stack, free of I/O: which services to launch next, and what becomes of the
//! others when something fails. The caller launches what [`Startup::due`] returns, reports what
//! happened (`started`, `ready`, `completed`, `failed`), and asks again.
//!
//! Rules:
//! - a service is launched as soon as every dependency meets its condition, at most `max_parallel`
//!   at a time (from launch until ready, completed or failed); among services that can launch at
//!   the same moment, higher priority first, then by name;
//! - a failed service blocks the services that require it (and theirs in turn), each saying why;
//!   an optional dependency that fails is skipped; everything independent goes on;
//! - a failed critical service aborts the start-up when `stop_on_critical_failure` is set: nothing
//!   more is launched and what was started is stopped, most recently started first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::graph::Graph;
use super::manifest::{Condition, Manifest};

/// Where a service is in the start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum State {
    /// Waiting for its dependencies or for a free slot.
    Pending,
    /// Launched; the process is not confirmed running yet.
    Starting,
    /// Running, not ready yet.
    Started,
    Ready,
    /// A one-shot task that exited with code 0.
    Completed,
    /// Could not be started, with the reason (after its retries).
    Failed(String),
    /// Will not start: a required dependency failed or is blocked.
    Blocked(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Started => "started",
            State::Ready => "ready",
            State::Completed => "completed",
            State::Failed(_) => "failed",
            State::Blocked(_) => "blocked",
        }
    }

    /// Launched and not settled: takes a slot of `max_parallel`.
    fn in_flight(&self) -> bool {
        matches!(self, State::Starting | State::Started)
    }

    /// Will never meet a condition it does not meet now.
    fn dead(&self) -> bool {
        matches!(self, State::Failed(_) | State::Blocked(_))
    }

    fn meets(&self, condition: Condition) -> bool {
        match condition {
            Condition::Started => matches!(self, State::Started | State::Ready | State::Completed),
            Condition::Healthy => matches!(self, State::Ready),
            Condition::Completed => matches!(self, State::Completed),
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Launch(String),
    /// Stop a started service (the start-up was aborted).
    Stop(String),
}

/// One start-up run.
#[derive(Debug, Clone)]
pub struct Startup {
    graph: Graph,
    priority: BTreeMap<String, u8>,
    critical: BTreeMap<String, bool>,
    max_parallel: usize,
    stop_on_critical_failure: bool,
    states: BTreeMap<String, State>,
    /// Services in the order they were launched, for stopping in reverse.
    launched: Vec<String>,
    aborted: Option<String>,
}

impl Startup {
    pub fn new(manifest: &Manifest, graph: Graph) -> Startup {
        Startup {
            graph,
            priority: manifest.services.iter().map(|(n, s)| (n.clone(), s.priority)).collect(),
            critical: manifest.services.iter().map(|(n, s)| (n.clone(), s.critical)).collect(),
            max_parallel: manifest.max_parallel.max(1),
            stop_on_critical_failure: manifest.stop_on_critical_failure,
            states: manifest.services.keys().map(|n| (n.clone(), State::Pending)).collect(),
            launched: Vec::new(),
            aborted: None,
        }
    }

    /// Replaces the priorities of the services named in `priorities` (the effective ones, which
    /// operators and engines may have changed since the manifest was written).
    pub fn set_priorities(&mut self, priorities: &BTreeMap<String, u8>) {
        for (name, p) in self.priority.iter_mut() {
            if let Some(&effective) = priorities.get(name) {
                *p = effective;
            }
        }
    }

    pub fn states(&self) -> &BTreeMap<String, State> {
        &self.states
    }

    pub fn state(&self, service: &str) -> Option<&State> {
        self.states.get(service)
    }

    /// The critical service whose failure aborted the start-up.
    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// True when nothing is pending or in flight any more.
    pub fn finished(&self) -> bool {
        self.states.values().all(|s| !matches!(s, State::Pending | State::Starting | State::Started))
    }

    /// Services to launch now, highest priority first. Marks them `starting`.
    pub fn due(&mut self) -> Vec<Action> {
        if self.aborted.is_some() {
            return Vec::new();
        }
        self.propagate_blocks();
        let in_flight = self.states.values().filter(|s| s.in_flight()).count();
        let free = self.max_parallel.saturating_sub(in_flight);
        let mut ready: Vec<&String> =
            self.states.iter().filter(|(n, s)| **s == State::Pending && self.can_launch(n)).map(|(n, _)| n).collect();
        ready.sort_by_key(|n| (std::cmp::Reverse(self.priority[*n]), (*n).clone()));
        let chosen: Vec<String> = ready.into_iter().take(free).cloned().collect();
        for name in &chosen {
            self.states.insert(name.clone(), State::Starting);
            self.launched.push(name.clone());
        }
        chosen.into_iter().map(Action::Launch).collect()
    }

    /// Pending services whose dependencies are met (waiting only for a slot).
    pub fn launchable(&mut self) -> Vec<String> {
        self.propagate_blocks();
        self.states
            .iter()
            .filter(|(n, s)| **s == State::Pending && self.can_launch(n))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A service already running and ready when the run begins (kept from an earlier stack).
    pub fn already_ready(&mut self, service: &str) {
        if self.states.get(service) == Some(&State::Pending) {
            self.states.insert(service.to_string(), State::Ready);
        }
    }

    /// Every required dependency meets its condition; every optional one meets it or is dead.
    fn can_launch(&self, name: &str) -> bool {
        self.graph.dependencies(name).into_iter().all(|(dep, d)| {
            let state = &self.states[dep];
            state.meets(d.condition) || (!d.required && state.dead())
        })
    }

    /// Blocks pending services whose required dependency is dead, until nothing changes.
    fn propagate_blocks(&mut self) {
        loop {
            let mut changed = false;
            let names: Vec<String> = self.states.keys().cloned().collect();
            for name in names {
                if self.states[&name] != State::Pending {
                    continue;
                }
                let cause = self.graph.dependencies(&name).into_iter().find_map(|(dep, d)| {
                    let state = &self.states[dep];
                    (d.required && state.dead() && !state.meets(d.condition))
                        .then(|| format!("requires {dep} ({}), which is {}", d.condition.as_str(), state.name()))
                });
                if let Some(reason) = cause {
                    self.states.insert(name, State::Blocked(reason));
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    pub fn started(&mut self, service: &str) {
        if self.states.get(service) == Some(&State::Starting) {
            self.states.insert(service.to_string(), State::Started);
        }
    }

    pub fn ready(&mut self, service: &str) {
        if matches!(self.states.get(service), Some(State::Starting | State::Started)) {
            self.states.insert(service.to_string(), State::Ready);
        }
    }

    pub fn completed(&mut self, service: &str) {
        if matches!(self.states.get(service), Some(State::Starting | State::Started | State::Ready)) {
            self.states.insert(service.to_string(), State::Completed);
        }
    }

    /// The service failed for good (its retries are spent). Returns the services to stop when
    /// this aborts the start-up, most recently launched first.
    pub fn failed(&mut self, service: &str, reason: &str) -> Vec<Action> {
        if !self.states.contains_key(service) {
            return Vec::new();
        }
        self.states.insert(service.to_string(), State::Failed(reason.to_string()));
        if !(self.critical[service] && self.stop_on_critical_failure) || self.aborted.is_some() {
            self.propagate_blocks();
            return Vec::new();
        }
        self.aborted = Some(service.to_string());
        let why = format!("start-up aborted: critical service {service} failed");
        for state in self.states.values_mut() {
            if *state == State::Pending {
                *state = State::Blocked(why.clone());
            }
        }
        self.launched
            .iter()
            .rev()
            .filter(|n| matches!(self.states[*n], State::Starting | State::Started | State::Ready | State::Completed))
            .filter(|n| !matches!(self.states[*n], State::Completed))
            .map(|n| Action::Stop(n.clone()))
            .collect()
    }
}

/// Shutdown in reverse dependency order: a service is stopped once everything that depends on it,
/// directly or through services that are not running, has stopped. Returns the waves, each of which may stop in parallel.
pub fn shutdown_waves(graph: &Graph, running: &[String]) -> Vec<Vec<String>> {
    let mut left: Vec<String> = running.to_vec();
    left.sort();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let wave: Vec<String> = left
            .iter()
            .filter(|n| !graph.all_dependents(n).iter().any(|d| left.iter().any(|l| l == d)))
            .cloned()
            .collect();
        if wave.is_empty() {
            // Cannot happen on a graph without cycles; stop the rest together rather than hang.
            waves.push(std::mem::take(&mut left));
            break;
        }
        left.retain(|n| !wave.contains(n));
        waves.push(wave);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(text: &str) -> Startup {
        let manifest = Manifest::parse(text).unwrap();
        let graph = Graph::new(&manifest).unwrap();
        Startup::new(&manifest, graph)
    }

    fn launches(actions: Vec<Action>) -> Vec<String> {
        actions
            .into_iter()
            .map(|a| match a {
                Action::Launch(n) => n,
                Action::Stop(n) => panic!("unexpected stop of {n}"),
            })
            .collect()
    }

    const STACK: &str = r#"
max_parallel = 2
[services.db]
command = "x"
priority = 90
port = 1
readiness = { kind = "tcp" }
[services.cache]
command = "x"
priority = 10
[services.queue]
command = "x"
priority = 50
[services.migrate]
command = "x"
restart = { policy = "never" }
depends_on = { db = "healthy" }
[services.api]
command = "x"
depends_on = { migrate = "completed", cache = { condition = "started", required = false } }
[services.web]
command = "x"
depends_on = { api = "started" }
"#;

    #[test]
    fn launches_by_conditions_priority_and_parallelism() {
        let mut s = stack(STACK);
        assert_eq!(launches(s.due()), ["db", "queue"], "two slots, highest priority first");
        assert!(s.due().is_empty(), "no free slot");
        s.started("queue");
        s.ready("queue");
        assert_eq!(launches(s.due()), ["cache"]);
        s.started("db");
        assert!(s.due().is_empty(), "migrate waits for db to be healthy, not just started");
        s.ready("db");
        s.ready("cache");
        assert_eq!(launches(s.due()), ["migrate"]);
        s.started("migrate");
        s.ready("migrate");
        assert!(s.due().is_empty(), "api waits for migrate to complete");
        s.completed("migrate");
        assert_eq!(launches(s.due()), ["api"]);
        s.started("api");
        assert_eq!(launches(s.due()), ["web"], "web needs api started only");
        s.ready("api");
        s.ready("web");
        assert!(s.finished());
    }

    #[test]
    fn a_failure_blocks_only_what_requires_it() {
        let mut s = stack(STACK);
        s.due();
        s.failed("db", "exit code 1 after 5 starts");
        assert!(matches!(s.state("migrate"), Some(State::Blocked(r)) if r == "requires db (healthy), which is failed"));
        assert!(matches!(s.state("api"), Some(State::Blocked(r)) if r.contains("requires migrate")));
        assert!(matches!(s.state("web"), Some(State::Blocked(r)) if r.contains("requires api")));
        s.ready("queue");
        assert_eq!(launches(s.due()), ["cache"], "independent services go on");
        s.ready("cache");
        assert!(s.finished());
    }

    #[test]
    fn an_optional_dependency_that_fails_is_skipped() {
        let mut s = stack(STACK);
        s.due();
        s.ready("db");
        s.ready("queue");
        assert_eq!(launches(s.due()), ["migrate", "cache"], "priority 50 before 10");
        s.failed("cache", "could not start");
        s.completed("migrate");
        assert_eq!(launches(s.due()), ["api"], "cache was optional");
    }

    #[test]
    fn a_critical_failure_aborts_and_stops_in_reverse() {
        let text = STACK.replace("priority = 90\n", "priority = 90\ncritical = true\n");
        let mut s = stack(&text);
        s.due();
        s.ready("queue");
        s.due(); // cache
        s.started("cache");
        let stops = s.failed("db", "startup timeout");
        assert_eq!(stops, [Action::Stop("cache".into()), Action::Stop("queue".into())]);
        assert_eq!(s.aborted(), Some("db"));
        assert!(s.due().is_empty());
        assert!(matches!(s.state("web"), Some(State::Blocked(r)) if r.contains("aborted")));
    }

    #[test]
    fn shutdown_goes_in_reverse_dependency_order() {
        let manifest = Manifest::parse(STACK).unwrap();
        let graph = Graph::new(&manifest).unwrap();
        let running: Vec<String> = ["db", "cache", "queue", "api", "web"].map(String::from).to_vec();
        let waves = shutdown_waves(&graph, &running);
        // api depends on db through migrate, which is not running: still stopped before db.
        assert_eq!(waves, [vec!["queue", "web"], vec!["api"], vec!["cache", "db"]]);
    }
}
