//! Rolling updates (Nomad's `update` block): the replicas of a changed service with an `update`
//! block keep running the old version when the new manifest is installed, and are then replaced
//! a batch of at most `max_parallel` at a time. A batch is stopped, started on the new definition,
//! and must be `ready` for `min_healthy_time` before the next batch begins. A batch that crashes,
//! or is not healthy within `healthy_deadline`, fails the update; with `auto_revert` the last good
//! manifest version is applied again, as a new version (which rolls the replaced replicas back
//! the same way, when the good version has an `update` block too).
//!
//! Each replica is replaced in place (stopped before its successor starts), so old and new of one
//! replica never run together: what a group asks for never exceeds, at any moment, the sum of
//! each replica's larger version (the quota check counts that, `resources::quota::peak`).
//!
//! Updates progress only while no start-up run or shutdown is under way; a manifest applied
//! during an update supersedes it (the replicas are wherever they are, and compared with the
//! newest version as any running service is).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};
use orch_protocol::lifecycle::ServiceState;
use orch_protocol::stack::RolloutData;

use super::{Detail, Effect, Event, Machine, StopIntent};
use crate::lifecycle::manifest::UpdateSpec;
use crate::lifecycle::restart::Restarts;

/// A rolling update of one service in progress.
#[derive(Debug, Clone)]
pub(super) struct Rollout {
    pub service: String,
    pub version: i64,
    pub from_version: i64,
    /// The version applied again if it fails; `None`: it does not revert.
    pub revert_to: Option<i64>,
    /// The last version known good, carried to an update that supersedes this one.
    pub good_version: i64,
    pub policy: UpdateSpec,
    pub todo: VecDeque<String>,
    /// The batch being replaced: each replica, with since when it is ready on the new version.
    pub batch: BTreeMap<String, Option<Instant>>,
    pub batch_deadline: Option<Instant>,
    pub done: Vec<String>,
    pub started_at: DateTime<Utc>,
    /// Why it failed: set when a replica of the batch crashed on the new version or the batch
    /// was late. A failed update stays in the view (with its reason) until a newer version
    /// supersedes it, and moves no further.
    pub failure: Option<String>,
    pub failed: bool,
}

impl Rollout {
    /// As the stack view shows it and its events carry it.
    pub fn data(&self) -> RolloutData {
        RolloutData {
            service: self.service.clone(),
            version: self.version,
            from_version: self.from_version,
            revert_to: self.revert_to,
            max_parallel: self.policy.max_parallel,
            replaced: self.done.clone(),
            batch: self.batch.keys().cloned().collect(),
            remaining: self.todo.iter().cloned().collect(),
            started_at: self.started_at,
            reason: self.failed.then(|| self.failure.clone()).flatten(),
        }
    }
}

/// What the previous stack leaves to the rollouts of a new version: per service, the version to
/// revert to (carried from an update the new version supersedes).
pub(super) type GoodVersions = BTreeMap<String, i64>;

impl Machine {
    /// Begins a rolling update of each service with replicas in `rolled` (running the old
    /// version, carried into the stack of `version` just installed). `reverting`: this version is
    /// itself a revert, which does not revert again.
    pub(super) fn begin_rollouts(
        &mut self,
        rolled: &BTreeSet<String>,
        from_version: i64,
        good: &GoodVersions,
        reverting: bool,
    ) {
        let now = self.now.wall;
        let Some(stack) = self.stack.as_mut() else { return };
        let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for unit in rolled {
            if stack.services.contains_key(unit) {
                by_service.entry(stack.manifest.service_of(unit).to_string()).or_default().push(unit.clone());
            }
        }
        let version = stack.version;
        let mut started = Vec::new();
        for (service, units) in by_service {
            let policy = stack.manifest.services[&units[0]].update.unwrap_or_default();
            let good_version = good.get(&service).copied().unwrap_or(from_version);
            let rollout = Rollout {
                revert_to: (policy.auto_revert && !reverting && good_version != version).then_some(good_version),
                service: service.clone(),
                version,
                from_version,
                good_version,
                policy,
                todo: units.into(),
                batch: BTreeMap::new(),
                batch_deadline: None,
                done: Vec::new(),
                started_at: now,
                failure: None,
                failed: false,
            };
            tracing::info!(
                service,
                version,
                from_version,
                replicas = rollout.todo.len(),
                max_parallel = policy.max_parallel,
                "rolling update begins"
            );
            started.push(rollout.data());
            stack.rollouts.insert(service, rollout);
        }
        for data in started {
            self.publish(Event::RolloutStarted(data));
        }
    }

    /// The rollouts of the stack being replaced, ended: the versions they would have reverted to,
    /// for the updates of the new version.
    pub(super) fn supersede_rollouts(&mut self, by: i64) -> GoodVersions {
        let Some(stack) = self.stack.as_mut() else { return GoodVersions::new() };
        let mut good = GoodVersions::new();
        for (service, rollout) in std::mem::take(&mut stack.rollouts) {
            tracing::info!(service, version = rollout.version, by, "rolling update superseded by a newer version");
            good.insert(service, rollout.good_version);
        }
        good
    }

    /// A replica crashed (or could not start): if it was being replaced, its update fails.
    pub(super) fn rollout_crash(&mut self, name: &str, reason: &str) {
        let Some(stack) = self.stack.as_mut() else { return };
        let service = stack.manifest.service_of(name).to_string();
        if let Some(rollout) = stack.rollouts.get_mut(&service)
            && rollout.batch.contains_key(name)
            && rollout.failure.is_none()
        {
            rollout.failure = Some(format!("{name} crashed on version {}: {reason}", rollout.version));
        }
    }

    /// Moves every rolling update on as far as it can now: a healthy batch completes and the
    /// next is stopped for replacement; a crashed or late batch fails the update.
    pub(super) fn roll(&mut self) {
        let Some(stack) = self.stack.as_ref() else { return };
        if stack.run.is_some() || stack.teardown.is_some() || stack.rollouts.is_empty() {
            return;
        }
        let services: Vec<String> = stack.rollouts.keys().cloned().collect();
        for service in services {
            self.roll_one(&service);
        }
    }

    fn roll_one(&mut self, service: &str) {
        let now = self.now.instant;
        let stack = self.stack.as_mut().expect("checked by roll");
        let mut rollout = stack.rollouts.remove(service).expect("listed by roll");
        if rollout.failed {
            stack.rollouts.insert(service.to_string(), rollout);
            return;
        }
        // Where the batch stands.
        for (unit, since) in rollout.batch.iter_mut() {
            match stack.services.get(unit).map(|m| m.state) {
                Some(ServiceState::Ready) => {
                    since.get_or_insert(now);
                }
                Some(ServiceState::Failed | ServiceState::Blocked) if rollout.failure.is_none() => {
                    let why = stack.services[unit].reason.clone().unwrap_or_default();
                    rollout.failure = Some(format!("{unit} did not start on version {}: {why}", rollout.version));
                }
                _ => *since = None,
            }
        }
        let min_healthy = rollout.policy.min_healthy_time;
        if rollout.failure.is_none()
            && let Some(deadline) = rollout.batch_deadline
            && now >= deadline
        {
            let late: Vec<&str> = rollout
                .batch
                .iter()
                .filter(|(_, since)| since.is_none_or(|s| now.saturating_duration_since(s) < min_healthy))
                .map(|(u, _)| u.as_str())
                .collect();
            if !late.is_empty() {
                rollout.failure = Some(format!(
                    "{} not healthy for {} within healthy_deadline ({})",
                    late.join(", "),
                    humantime::format_duration(min_healthy),
                    humantime::format_duration(rollout.policy.healthy_deadline)
                ));
            }
        }
        if let Some(reason) = rollout.failure.clone() {
            return self.rollout_failed(rollout, reason);
        }
        let healthy =
            rollout.batch.values().all(|since| since.is_some_and(|s| now.saturating_duration_since(s) >= min_healthy));
        if !rollout.batch.is_empty() && !healthy {
            stack.rollouts.insert(service.to_string(), rollout);
            return;
        }
        let finished_batch = !rollout.batch.is_empty();
        rollout.done.extend(std::mem::take(&mut rollout.batch).into_keys());
        rollout.batch_deadline = None;
        if rollout.todo.is_empty() {
            tracing::info!(
                service,
                version = rollout.version,
                replicas = rollout.done.len(),
                "rolling update completed"
            );
            return self.publish(Event::RolloutCompleted(rollout.data()));
        }
        // The next batch: replicas still on the old version that run; one that no longer does
        // (crashed, stopped) is left to its own recovery, on the new definition.
        let reason = format!("replaced by version {} (rolling update)", rollout.version);
        let mut batch = Vec::new();
        while batch.len() < rollout.policy.max_parallel as usize {
            let Some(unit) = rollout.todo.pop_front() else { break };
            batch.push(unit);
        }
        for unit in &batch {
            rollout.batch.insert(unit.clone(), None);
        }
        rollout.batch_deadline = Some(now + rollout.policy.healthy_deadline);
        let data = rollout.data();
        stack.rollouts.insert(service.to_string(), rollout);
        tracing::info!(service, batch = ?batch, "rolling update: replacing a batch");
        if finished_batch {
            self.publish(Event::RolloutProgressed(data));
        }
        for unit in batch {
            self.replace_unit(&unit, &reason);
        }
    }

    /// Stops `unit` to start it on the stack's definition (`StopIntent::Replace`); one that does
    /// not run takes the new definition at once.
    fn replace_unit(&mut self, unit: &str, reason: &str) {
        let Some(m) = self.managed(unit) else { return };
        if m.state.running() {
            self.stop_process(unit, StopIntent::Replace(reason.to_string()));
        } else {
            self.take_new_definition(unit);
            self.enqueue(unit);
        }
    }

    /// `unit` takes the definition of the installed manifest, with a fresh restart budget.
    pub(super) fn take_new_definition(&mut self, unit: &str) {
        let Some(stack) = self.stack.as_mut() else { return };
        let Some(spec) = stack.manifest.services.get(unit).cloned() else { return };
        let m = stack.services.get_mut(unit).expect("a unit of the manifest");
        m.restarts = Restarts::new(spec.restart.clone());
        m.spec = spec;
    }

    /// The replaced replica of `name` has stopped: started again on the new version.
    pub(super) fn replaced(&mut self, name: &str, reason: String, exit: Option<orch_protocol::agent::Exit>) {
        self.take_new_definition(name);
        self.transition(name, ServiceState::Pending, Detail { exit, ..Detail::reason(reason) });
        self.enqueue(name);
    }

    fn rollout_failed(&mut self, mut rollout: Rollout, reason: String) {
        rollout.failed = true;
        tracing::warn!(
            service = rollout.service,
            version = rollout.version,
            revert_to = rollout.revert_to,
            reason,
            "rolling update failed"
        );
        self.publish(Event::RolloutFailed(rollout.data()));
        let revert_to = rollout.revert_to;
        let service = rollout.service.clone();
        let version = rollout.version;
        if let Some(stack) = self.stack.as_mut() {
            stack.rollouts.insert(service.clone(), rollout);
        }
        if let Some(to) = revert_to {
            let source = format!(
                "auto-revert to version {to}: the rolling update of {service} to version {version} failed ({reason})"
            );
            self.out.push(Effect::RevertManifest { version: to, source });
        }
    }
}
