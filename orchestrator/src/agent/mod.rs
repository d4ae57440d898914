//! The node agent: supervises the processes of managed services on one node, takes its requests
//! over NATS, and reports how each process ended.

pub mod client;
pub mod logs;
pub mod pressure;
pub mod service;
pub mod shim;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use crate::shutdown::Shutdown;
use orch_protocol::Subjects;
use tokio::sync::mpsc;

pub use supervisor::{Exit, Exited, ProcessSpec, Supervisor, SupervisorError};

/// One node's agent: the node it serves, where it keeps its services' output, the shim it runs
/// them under and how it reports the node's pressure.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// This node's name: the agent answers on `<prefix>.agent.<node>.*`.
    pub node: String,
    /// Where each service's output is kept (`<service>.log`, rotated).
    pub log_dir: PathBuf,
    pub rotation: logs::Rotation,
    /// The `orchestrator` binary each service runs under (`orchestrator shim`), which kills the
    /// service's process group when the agent dies; without one, services run directly.
    pub shim: Option<PathBuf>,
    pub pressure: pressure::PressureSettings,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            node: "local".into(),
            log_dir: PathBuf::from("agent-logs"),
            rotation: logs::Rotation::default(),
            shim: None,
            pressure: pressure::PressureSettings::default(),
        }
    }
}

/// Runs an agent until `shutdown`: its requests and process-end reports on NATS and its pressure
/// reports. Its processes are stopped, each with its stop signal and grace, before it returns.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    settings: AgentSettings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let supervisor = Arc::new(Supervisor::new(settings.log_dir, settings.rotation, exits_tx, settings.shim));
    let pressure = tokio::spawn(pressure::run(
        client.clone(),
        subjects.clone(),
        settings.node.clone(),
        settings.pressure,
        shutdown.clone(),
    ));
    let result = service::run(client, subjects, settings.node, supervisor, exits, shutdown).await;
    let _ = pressure.await;
    result
}
