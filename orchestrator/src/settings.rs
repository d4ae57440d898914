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
        }
    }
}

impl Settings {
    /// Checks the rules a value's type cannot express. Each error names the setting as the
    /// command line and the config file do.
    pub fn validate(&self) -> Result<(), String> {
        let share = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let positive = |d: std::time::Duration| d >= std::time::Duration::from_millis(1);
        orch_protocol::Subjects::new(&self.subject_prefix).map_err(|e| format!("--subject-prefix: {e}"))?;
        let registry = &self.registry;
        if !share(registry.sweep.threshold) {
            return Err("--self-preservation-threshold must be between 0 and 1".into());
        }
        if registry.writer_shards == 0 || registry.writer_shards > 64 {
            return Err("--writer-shards must be between 1 and 64".into());
        }
        if registry.batch_max == 0 {
            return Err("--batch-max must be at least 1".into());
        }
        if registry.sweep.interval.is_zero() {
            return Err("--sweep-interval must be positive".into());
        }
        let health = &self.health;
        if health.flap_threshold == 0 {
            return Err("--flap-threshold must be at least 1".into());
        }
        if health.concurrency == 0 {
            return Err("--health-concurrency must be at least 1".into());
        }
        for name in &health.critical_services {
            if !orch_protocol::registry::is_valid_name(name) {
                return Err(format!("--critical-services: {name:?} is not a valid service name"));
            }
        }
        if let Some(agent) = &self.agent
            && !orch_protocol::registry::is_valid_name(&agent.node)
        {
            return Err(format!(
                "--node {:?}: a node name is 1-63 of lower-case letters, digits, '-' or '_'",
                agent.node
            ));
        }
        if !share(self.priority.mass_share) {
            return Err("--priority-mass-share must be 0-1".into());
        }
        if self.priority.rate_limit == 0 {
            return Err("--priority-rate-limit must be at least 1".into());
        }
        if !positive(self.priority.rate_window) || !positive(self.priority.mass_window) {
            return Err("--priority-rate-window and --priority-mass-window must be at least 1ms".into());
        }
        let shedding = &self.lifecycle.shedding;
        if !share(shedding.cpu) || !share(shedding.memory) {
            return Err("--shed-cpu and --shed-memory are shares: 0-1".into());
        }
        if !positive(shedding.step) {
            return Err("--shed-step must be at least 1ms".into());
        }
        if !positive(self.lifecycle.startup_probe_interval) {
            return Err("--startup-probe-interval must be at least 1ms".into());
        }
        if !positive(self.lifecycle.reconcile_interval) {
            return Err("--reconcile-interval must be at least 1ms".into());
        }
        let feed = &self.http.feed;
        if feed.buffer == 0 || feed.max_clients == 0 {
            return Err("--ws-buffer and --ws-max-clients must be at least 1".into());
        }
        if !positive(feed.stall) {
            return Err("--ws-stall must be at least 1ms".into());
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
        assert!(settings.validate().unwrap_err().contains("--writer-shards"));
        let mut settings = Settings::default();
        settings.agent.as_mut().unwrap().node = "Not A Node".into();
        assert!(settings.validate().unwrap_err().contains("--node"));
        let mut settings = Settings::default();
        settings.lifecycle.shedding.cpu = 1.5;
        assert!(settings.validate().unwrap_err().contains("--shed-cpu"));
    }
}
