//! Lifecycle of managed services: the manifest that declares them, the dependency graph, and the
//! start-up and shutdown orders (pure decisions; the agent runs the processes).

pub mod controller;
pub mod follow;
pub mod graph;
pub mod history;
pub mod logs;
pub mod manifest;
pub mod probes;
pub mod profile;
pub mod recorder;
pub mod restart;
pub mod shedding;
pub mod startup;

pub use controller::{Collaborators, ControlError, Controller, ControllerConfig};
pub use graph::Graph;
pub use manifest::{Manifest, ManifestError};

use std::time::Duration;

/// How the controller watches and drives managed services.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleSettings {
    /// How often a starting service's readiness check runs until it first passes (at most the
    /// check's own interval): short, so what depends on it starts moments after it is ready.
    pub startup_probe_interval: Duration,
    /// How often the processes the controller expects are compared with what each node's agent
    /// runs, so that a lost process-end report is noticed.
    pub reconcile_interval: Duration,
    pub shedding: shedding::ShedSettings,
    /// At most so many services preempted per window, whatever priorities say: a runaway
    /// priority source cannot empty the cluster.
    pub preemption: crate::resources::preemption::PreemptionBudget,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            startup_probe_interval: Duration::from_millis(5),
            reconcile_interval: Duration::from_secs(5),
            shedding: shedding::ShedSettings::default(),
            preemption: crate::resources::preemption::PreemptionBudget { max: 5, window: Duration::from_secs(600) },
        }
    }
}
