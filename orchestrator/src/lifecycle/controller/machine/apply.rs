//! Bringing a stack in: the stored one at start-up, a new manifest version (stopping first what
//! it changes or removes, keeping what runs unchanged), and restarts on request.

use std::collections::{BTreeMap, BTreeSet};

use orch_protocol::events::ManifestAppliedData;
use orch_protocol::lifecycle::ServiceState;
use uuid::Uuid;

use super::{
    ControlError, Desired, Effect, Event, Machine, Managed, Replacement, Reply, RequestId, Stack, StopIntent, Teardown,
};
use crate::lifecycle::controller::StackApplied;
use crate::lifecycle::graph::Graph;
use crate::lifecycle::manifest::Manifest;
use crate::lifecycle::manifest::OnChange;
use crate::lifecycle::restart::Restarts;
use crate::lifecycle::startup;

impl Machine {
    /// Installs the stored stack, and begins a start-up run when it is wanted up.
    /// `placed`: the node each unpinned service ran on, as stored; it keeps it while that node is
    /// up, so what still runs there is adopted, not started twice.
    pub(super) fn resume(
        &mut self,
        version: i64,
        manifest: Manifest,
        desired: Desired,
        run_id: Uuid,
        placed: BTreeMap<String, String>,
    ) {
        let graph = Graph::new(&manifest).expect("the caller validated the stored manifest");
        tracing::info!(
            version,
            services = manifest.services.len(),
            up = desired == Desired::Up,
            "resuming the applied stack"
        );
        self.install(version, manifest, graph, desired, &placed);
        if desired == Desired::Up {
            self.begin_run(run_id, &BTreeSet::new());
        }
    }

    /// Replaces the stack in memory (nothing runs yet). Each service keeps its pin, else the node
    /// it was `placed` on.
    fn install(
        &mut self,
        version: i64,
        manifest: Manifest,
        graph: Graph,
        desired: Desired,
        placed: &BTreeMap<String, String>,
    ) {
        let since = self.now.wall;
        let services = manifest
            .services
            .iter()
            .map(|(name, spec)| {
                let managed = Managed {
                    node: placed.get(name).cloned(),
                    resumed: placed.contains_key(name),
                    placement: None,
                    spec: spec.clone(),
                    state: ServiceState::Stopped,
                    reason: None,
                    since,
                    pid: None,
                    generation: 0,
                    restarts: Restarts::new(spec.restart.clone()),
                    restart_count: 0,
                    watch: None,
                    registered: false,
                    stop: None,
                    rebind: false,
                    shed: false,
                    notified: None,
                    config_stale: false,
                };
                (name.clone(), managed)
            })
            .collect();
        let defaults =
            manifest.services.iter().map(|(n, s)| (manifest.service_of(n).to_string(), s.priority)).collect();
        self.out.push(Effect::SetDefaultPriorities(defaults));
        self.stack = Some(Stack {
            version,
            manifest,
            graph,
            services,
            run: None,
            queue: BTreeSet::new(),
            teardown: None,
            desired,
            unplaced: BTreeMap::new(),
            rollouts: BTreeMap::new(),
        });
    }

    /// A new manifest: refused while the stack is being stopped or started, else stored first.
    pub(super) fn apply(&mut self, request: RequestId, manifest: Box<Manifest>, body: String, source: String) {
        if let Some(stack) = &self.stack {
            let busy = if stack.teardown.is_some() {
                Some("the stack is being stopped; apply again once it has stopped")
            } else if stack.run.is_some() {
                Some("a start-up run is in progress; apply again once it has finished (GET /api/v1/stack/profile)")
            } else {
                None
            };
            if let Some(why) = busy {
                return self.reply(Reply::Applied(request, Err(ControlError::Busy(why.into()))));
            }
        }
        self.out.push(Effect::StoreManifest { request, manifest, body, source });
    }

    /// The new manifest is stored as `version`: services that run and changed or left the stack
    /// are stopped first (in reverse dependency order), unchanged ready ones are kept, and a
    /// start-up run begins for the rest.
    pub(super) fn manifest_stored(
        &mut self,
        request: RequestId,
        manifest: Manifest,
        source: String,
        run_id: Uuid,
        version: i64,
        reverting: bool,
    ) {
        let graph = Graph::new(&manifest).expect("the caller validated the manifest");
        let services = manifest.services.len();
        self.publish(Event::ManifestApplied(ManifestAppliedData { version, source, services }));
        tracing::info!(version, services, "manifest applied");
        let from_version = self.stack.as_ref().map_or(0, |s| s.version);
        let good = self.supersede_rollouts(version);
        let mut replaced = Vec::new();
        let mut keep = BTreeSet::new();
        let mut rolled = BTreeSet::new();
        if let Some(stack) = &self.stack {
            for (name, m) in &stack.services {
                if !(m.state.running() || m.state == ServiceState::Restarting) {
                    continue;
                }
                let ready = m.state == ServiceState::Ready;
                match manifest.services.get(name) {
                    Some(new) if ready && new.same_process(&m.spec) => {
                        keep.insert(name.clone());
                    }
                    // Changed, with an update strategy: it keeps running the old version until a
                    // rolling update replaces it.
                    Some(new) if ready && new.update.is_some() => {
                        rolled.insert(name.clone());
                    }
                    _ => replaced.push(name.clone()),
                }
            }
        }
        let applied = StackApplied { version, run_id, services, replaced, rolling: rolled.iter().cloned().collect() };
        if applied.replaced.is_empty() {
            keep.extend(rolled.iter().cloned());
            self.adopt(version, manifest, graph, &keep);
            self.begin_run(run_id, &keep);
            self.begin_rollouts(&rolled, from_version, &good, reverting);
        } else {
            let stack = self.stack.as_mut().expect("services were running");
            let waves = startup::shutdown_waves(&stack.graph, &applied.replaced);
            stack.run = None;
            stack.teardown = Some(Teardown {
                waves: waves.into(),
                waiting: BTreeSet::new(),
                replies: Vec::new(),
                stopped: 0,
                then: Some(Replacement { version, manifest, graph, run_id, rolled, from_version, good, reverting }),
                reason: format!("replaced by manifest version {version}"),
            });
            self.next_wave();
        }
        self.reply(Reply::Applied(request, Ok(applied)));
    }

    /// Installs a new stack wanted up, carrying over the services in `keep` (running: unchanged,
    /// which take the new entry, or to be replaced by a rolling update, which keep the old one
    /// until then); what was pending for the others is dropped.
    pub(super) fn adopt(&mut self, version: i64, manifest: Manifest, graph: Graph, keep: &BTreeSet<String>) {
        let mut carried: BTreeMap<String, Managed> = BTreeMap::new();
        let mut placed = BTreeMap::new();
        if let Some(old) = self.stack.take() {
            for (name, m) in old.services {
                if let Some(node) = &m.node {
                    placed.insert(name.clone(), node.clone());
                }
                if keep.contains(&name) {
                    carried.insert(name, m);
                } else if m.watch.is_some() {
                    self.out.push(Effect::Cancel { service: name });
                }
            }
        }
        self.install(version, manifest, graph, Desired::Up, &placed);
        let stack = self.stack.as_mut().expect("just installed");
        for (name, m) in carried.iter_mut() {
            if let Some(new) = stack.manifest.services.get(name)
                && new.same_process(&m.spec)
            {
                m.spec = new.clone();
            }
        }
        stack.services.extend(carried);
    }

    /// A restart asked for: a running service is stopped and started again (the services bound
    /// to it follow once it is ready); one that does not run is started now.
    /// A replicated service restarts each of its replicas (none is restarted unless all can be).
    pub(super) fn restart_request(&mut self, name: &str) -> Result<(), ControlError> {
        let stack = self.stack.as_ref().ok_or(ControlError::NoStack)?;
        let units = stack.manifest.units_of(name);
        if units.len() > 1 || units.first().is_some_and(|u| u != name) {
            for unit in &units {
                let m = &stack.services[unit];
                if matches!(m.state, ServiceState::Starting | ServiceState::Stopping | ServiceState::Pending) {
                    return Err(ControlError::Busy(format!("{unit} is {}; try again in a moment", m.state)));
                }
            }
            for unit in &units {
                self.restart_unit(unit)?;
            }
            return Ok(());
        }
        self.restart_unit(name)
    }

    /// A config key changed: each unit that reads it and restarts on a change is restarted if
    /// its process runs, or marked to restart once it does (its launch may have read the old
    /// value); a unit not running reads the new value at its next start.
    pub(super) fn config_changed(&mut self, key: &str) {
        let Some(stack) = self.stack.as_mut() else { return };
        let mut restart = Vec::new();
        for (name, m) in stack.services.iter_mut() {
            let Some(config) = m.spec.config.as_ref().filter(|c| c.on_change == OnChange::Restart) else { continue };
            if !config.reads(key) {
                continue;
            }
            match m.state {
                ServiceState::Started | ServiceState::Ready => restart.push(name.clone()),
                ServiceState::Starting => m.config_stale = true,
                _ => {}
            }
        }
        for name in restart {
            self.restart_running(&name, format!("config key {key} changed"));
        }
    }

    /// Stops `name`'s running process to start it again (`why`); the services bound to it follow
    /// once it is ready again.
    pub(super) fn restart_running(&mut self, name: &str, why: String) {
        let Some(m) = self.managed(name) else { return };
        m.config_stale = false;
        m.rebind = true;
        self.stop_process(name, StopIntent::Restart(why));
    }

    fn restart_unit(&mut self, name: &str) -> Result<(), ControlError> {
        let stack = self.stack.as_mut().ok_or(ControlError::NoStack)?;
        let m = stack.services.get_mut(name).ok_or_else(|| ControlError::UnknownService(name.to_string()))?;
        match m.state {
            ServiceState::Started | ServiceState::Ready => self.restart_running(name, "restart requested".into()),
            ServiceState::Starting | ServiceState::Stopping | ServiceState::Pending => {
                return Err(ControlError::Busy(format!("{name} is {}; try again in a moment", m.state)));
            }
            _ => {
                // Not running: start it now, with a fresh start-rate budget.
                m.restarts = Restarts::new(m.spec.restart.clone());
                m.shed = false;
                self.cancel_watch(name);
                self.enqueue(name);
            }
        }
        Ok(())
    }
}
