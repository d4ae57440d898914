//! The node agent: supervises the processes of managed services on one node, takes its requests
//! over NATS, reports how each process ended, and which said they are ready (`sd_notify`), and
//! publishes its services' output as it is written (`follow`).

pub mod cgroup;
pub mod client;
pub mod enforcement;
pub mod follow;
pub mod logs;
pub mod node;
pub mod notify;
pub mod pressure;
pub mod search;
pub mod service;
pub mod shim;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::shutdown::Shutdown;
use orch_protocol::Subjects;
use orch_protocol::resources::Enforcement;
use tokio::sync::mpsc;

pub use supervisor::{Exit, Exited, ProcessSpec, Supervisor, SupervisorError};

/// One node's agent: the node it serves, where it keeps its services' output, the shim it runs
/// them under, how it enforces their limits and how it reports the node's pressure.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// This node's name: the agent answers on `<prefix>.agent.<node>.*`.
    pub node: String,
    /// Where each service's output is kept (`<service>.log`, rotated).
    pub log_dir: PathBuf,
    pub rotation: logs::Rotation,
    /// The program each service runs under (`orch-shim`, or `orchestrator shim`); by default
    /// `orch-shim` beside the running binary, else the running binary itself.
    pub shim: Option<PathBuf>,
    pub pressure: pressure::PressureSettings,
    /// What the node reports about itself at each heartbeat.
    pub node_report: node::NodeSettings,
    /// Where the cgroup file systems are mounted: each run of a service has the cgroup
    /// `orch/<node>/<service>-<run>` below it (per hierarchy on v1), with its limits.
    pub cgroup_root: PathBuf,
    /// Without usable cgroups, run the services that ask for limits without them (a warning
    /// each) instead of refusing them.
    pub allow_unlimited: bool,
}

/// Where Linux mounts the cgroup file systems.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            node: "local".into(),
            log_dir: PathBuf::from("agent-logs"),
            rotation: logs::Rotation::default(),
            shim: None,
            pressure: pressure::PressureSettings::default(),
            node_report: node::NodeSettings::default(),
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            allow_unlimited: false,
        }
    }
}

impl AgentSettings {
    /// Where the shims keep their records (`<service>.state`, `<service>.exit`): the agent that
    /// starts next on this directory adopts what they name.
    pub fn run_dir(&self) -> PathBuf {
        self.log_dir.join("shims")
    }

    /// How this node enforces limits: looked for under the cgroup root, the node's cgroups made.
    pub fn cgroups(&self) -> enforcement::Cgroups {
        enforcement::Cgroups::detect(&self.cgroup_root, &self.node, self.allow_unlimited)
    }

    fn supervisor(&self, exits: mpsc::UnboundedSender<Exited>) -> anyhow::Result<Supervisor> {
        let shim = self.shim.clone().or_else(shim::default_path).context("no shim program found for the services")?;
        Ok(Supervisor::new(self.log_dir.clone(), self.run_dir(), self.rotation, exits, shim))
    }
}

/// Runs an agent until `shutdown`: its requests and process-end reports on NATS and its pressure
/// reports. First it adopts what an agent before it left running (and reports what ended in
/// between). When it returns, its processes keep running under their shims for the next agent.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    settings: AgentSettings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let cgroups = settings.cgroups();
    match cgroups.enforcement {
        Enforcement::CgroupV2 | Enforcement::CgroupV1 => {
            tracing::info!(node = %settings.node, enforcement = ?cgroups.enforcement, "{}", cgroups.summary())
        }
        Enforcement::Unlimited | Enforcement::None => {
            tracing::warn!(node = %settings.node, enforcement = ?cgroups.enforcement, "{}", cgroups.summary())
        }
    }
    let enforcement = cgroups.enforcement;
    let mut supervisor = settings.supervisor(exits_tx)?.with_cgroups(cgroups);
    // Bound before any service starts (or is adopted): their NOTIFY_SOCKET names it.
    let notify = match notify::NotifySocket::bind(&settings.run_dir()) {
        Ok(socket) => {
            supervisor = supervisor.with_notify_socket(socket.address().to_string());
            Some(socket)
        }
        Err(e) => {
            tracing::warn!(node = %settings.node, error = %e, "no notify socket: services that notify their readiness are refused");
            None
        }
    };
    let supervisor = Arc::new(supervisor);
    let adopted = supervisor.adopt();
    if !adopted.is_empty() {
        tracing::info!(node = %settings.node, count = adopted.len(), services = ?adopted, "adopted the services that were running");
    }
    let pressure = tokio::spawn(pressure::run(
        client.clone(),
        subjects.clone(),
        settings.node.clone(),
        settings.pressure,
        shutdown.clone(),
    ));
    let heartbeat = tokio::spawn(node::run(
        client.clone(),
        subjects.clone(),
        settings.node.clone(),
        settings.node_report.clone(),
        enforcement,
        supervisor.clone(),
        shutdown.clone(),
    ));
    let notifications = notify.map(|socket| {
        tokio::spawn(notify::run(
            socket,
            client.clone(),
            subjects.agent(&settings.node, orch_protocol::agent::verbs::NOTIFY),
            settings.node.clone(),
            supervisor.clone(),
            shutdown.clone(),
        ))
    });
    let output = tokio::spawn(follow::run(
        client.clone(),
        subjects.clone(),
        follow::Follower::new(supervisor.log_dir().to_path_buf(), settings.node.clone()),
        shutdown.clone(),
    ));
    let result = service::run(client, subjects, settings.node, supervisor, exits, shutdown).await;
    let _ = output.await;
    let _ = pressure.await;
    let _ = heartbeat.await;
    if let Some(notifications) = notifications {
        let _ = notifications.await;
    }
    result
}

/// Stops every service the agent of `settings` runs (adopting them first), each with its stop
/// signal and grace period, and forgets their records and cgroups: `orchestrator agent
/// --cleanup`, for a node that no agent will serve again. Returns the services stopped.
pub async fn cleanup(settings: &AgentSettings) -> anyhow::Result<Vec<String>> {
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let supervisor = settings.supervisor(exits_tx)?;
    supervisor.adopt();
    let stopped = supervisor.stop_all().await;
    // Every record goes: each service stopped now reports its end once (its stop was answered
    // just before), and the ends found unreported were queued by `adopt`.
    let mut waiting: std::collections::BTreeSet<&String> = stopped.iter().collect();
    while !waiting.is_empty() {
        let Some(exited) = exits.recv().await else { break };
        waiting.remove(&exited.service);
        supervisor.reported(&exited);
    }
    while let Ok(exited) = exits.try_recv() {
        supervisor.reported(&exited);
    }
    // Their cgroups went with them (removed by each shim, or by `recorded_end` for a shim that
    // was gone); the node's own go now, and so does the notify socket's file.
    enforcement::forget_node(&settings.cgroup_root, &settings.node);
    notify::NotifySocket::forget(&settings.run_dir());
    Ok(stopped)
}
