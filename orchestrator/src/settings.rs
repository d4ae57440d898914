//! Everything [`crate::start`] needs to know, as plain values grouped by the module that uses
//! them. The command line, `ORCH_*` variables and the config file become these in
//! [`crate::config`], the only place that knows about flags; tests and programs that embed the
//! orchestrator build them directly, from [`Settings::default`].

use crate::agent::AgentSettings;
use crate::health::HealthSettings;
use crate::http::HttpSettings;
use crate::lifecycle::LifecycleSettings;
use crate::nats::NatsSettings;
use crate::priority::Limits;
use crate::registry::RegistrySettings;
use crate::storage::DatabaseSettings;
use crate::workers::maintenance::Retention;

/// The orchestrator's settings. Each setting's documentation is on its module's struct; the
/// command line's `--help` says the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Subject prefix: subjects are `<prefix>.cmd.…`, `<prefix>.evt.…`, streams
    /// `<PREFIX>_COMMANDS` and so on.
    pub subject_prefix: String,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub registry: RegistrySettings,
    pub health: HealthSettings,
    pub lifecycle: LifecycleSettings,
    /// The guardrails of engine priority changes.
    pub priority: Limits,
    /// The embedded node agent; `None` runs none, and managed services then run only on nodes
    /// with a standalone agent.
    pub agent: Option<AgentSettings>,
    pub http: HttpSettings,
    pub retention: Retention,
    /// The replica this runs as (`serve --replica`, set by `cluster::replica::run`); `None`: one
    /// orchestrator alone.
    pub replica: Option<String>,
    /// The workflow executor's queues.
    pub workflow: crate::workflow::executor::ExecutorSettings,
    /// How the node inventory judges nodes.
    pub nodes: crate::resources::NodeSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            subject_prefix: orch_protocol::subjects::DEFAULT_PREFIX.into(),
            database: DatabaseSettings::default(),
            nats: NatsSettings::default(),
            registry: RegistrySettings::default(),
            health: HealthSettings::default(),
            lifecycle: LifecycleSettings::default(),
            priority: Limits::default(),
            agent: Some(AgentSettings::default()),
            http: HttpSettings::default(),
            retention: Retention::default(),
            replica: None,
            workflow: crate::workflow::executor::ExecutorSettings::default(),
            nodes: crate::resources::NodeSettings::default(),
        }
    }
}

/// A setting with a value its type allows but the orchestrator cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct InvalidSetting {
    /// Where it sits in [`Settings`], e.g. `registry.writer_shards`; the command line maps it to
    /// its flag (`config::flag_of`).
    pub setting: &'static str,
    pub message: String,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> Result<(), InvalidSetting> {
    Err(InvalidSetting { setting, message: message.into() })
}

impl Settings {
    /// Checks the rules a value's type cannot express; the error names the setting by its place
    /// in these structs.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let share = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let positive = |d: std::time::Duration| d >= std::time::Duration::from_millis(1);
        if let Err(e) = orch_protocol::Subjects::new(&self.subject_prefix) {
            return invalid("subject_prefix", e.to_string());
        }
        let registry = &self.registry;
        if !share(registry.sweep.threshold) {
            return invalid("registry.sweep.threshold", "must be between 0 and 1");
        }
        if registry.writer_shards == 0 || registry.writer_shards > 64 {
            return invalid("registry.writer_shards", "must be between 1 and 64");
        }
        if registry.batch_max == 0 {
            return invalid("registry.batch_max", "must be at least 1");
        }
        if registry.sweep.interval.is_zero() {
            return invalid("registry.sweep.interval", "must be positive");
        }
        let health = &self.health;
        if health.flap_threshold == 0 {
            return invalid("health.flap_threshold", "must be at least 1");
        }
        if health.concurrency == 0 {
            return invalid("health.concurrency", "must be at least 1");
        }
        let kept = &self.retention;
        for (setting, value) in [
            ("retention.dead_letters_max", kept.dead_letters_max),
            ("retention.priority_changes_max", kept.priority_changes_max),
            ("retention.manifests", kept.manifests),
            ("retention.startup_runs", kept.startup_runs),
        ] {
            if value < 1 {
                return invalid(setting, "must be at least 1");
            }
        }
        if self.http.limits.max_concurrent == 0 {
            return invalid("http.limits.max_concurrent", "must be at least 1");
        }
        for name in &health.critical_services {
            if !orch_protocol::names::is_valid_name(name) {
                return invalid("health.critical_services", format!("{name:?} is not a valid service name"));
            }
        }
        if let Some(agent) = &self.agent
            && !orch_protocol::names::is_valid_name(&agent.node)
        {
            return invalid(
                "agent.node",
                format!("{:?}: a node name is 1-63 of lower-case letters, digits, '-' or '_'", agent.node),
            );
        }
        if !share(self.priority.mass_share) {
            return invalid("priority.mass_share", "must be 0-1");
        }
        if self.priority.rate_limit == 0 {
            return invalid("priority.rate_limit", "must be at least 1");
        }
        if !positive(self.priority.rate_window) {
            return invalid("priority.rate_window", "must be at least 1ms");
        }
        if !positive(self.priority.mass_window) {
            return invalid("priority.mass_window", "must be at least 1ms");
        }
        let shedding = &self.lifecycle.shedding;
        if !share(shedding.cpu) {
            return invalid("lifecycle.shedding.cpu", "is a share: 0-1");
        }
        if !share(shedding.memory) {
            return invalid("lifecycle.shedding.memory", "is a share: 0-1");
        }
        if !positive(shedding.step) {
            return invalid("lifecycle.shedding.step", "must be at least 1ms");
        }
        if !positive(self.lifecycle.startup_probe_interval) {
            return invalid("lifecycle.startup_probe_interval", "must be at least 1ms");
        }
        if !positive(self.lifecycle.reconcile_interval) {
            return invalid("lifecycle.reconcile_interval", "must be at least 1ms");
        }
        let feed = &self.http.feed;
        if feed.buffer == 0 {
            return invalid("http.feed.buffer", "must be at least 1");
        }
        if feed.max_clients == 0 {
            return invalid("http.feed.max_clients", "must be at least 1");
        }
        if !positive(feed.stall) {
            return invalid("http.feed.stall", "must be at least 1ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_setting() {
        let mut settings = Settings::default();
        settings.registry.writer_shards = 0;
        assert_eq!(settings.validate().unwrap_err().setting, "registry.writer_shards");
        let mut settings = Settings::default();
        settings.agent.as_mut().unwrap().node = "Not A Node".into();
        assert_eq!(settings.validate().unwrap_err().setting, "agent.node");
        let mut settings = Settings::default();
        settings.lifecycle.shedding.cpu = 1.5;
        let error = settings.validate().unwrap_err();
        assert_eq!(error.to_string(), "lifecycle.shedding.cpu: is a share: 0-1");
    }
}
