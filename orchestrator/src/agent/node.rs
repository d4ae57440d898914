//! The node's heartbeat: at each interval the agent publishes on `<prefix>.agent.<node>.node`
//! what the node has (capacity, the share kept for the system), its labels, how limits are
//! enforced, what runs there with what it asked for, and how busy it is. The orchestrator's node
//! inventory is built from these reports alone; a node that stops sending them is `down`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orch_protocol::Subjects;
use orch_protocol::agent::verbs;
use orch_protocol::resources::{Allocation, Enforcement, NodeReport, Resources};

use super::pressure::Sampler;
use super::supervisor::Supervisor;
use crate::shutdown::Shutdown;

/// What the node says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// How often the node's report is published (the orchestrator marks a node down after
    /// `--node-down-after` without one).
    pub interval: Duration,
    /// What the node has; measured (all CPUs, all memory) where not given.
    pub capacity: CapacityOverride,
    /// Kept for the system and the agent: never placed on.
    pub reserved: Resources,
    /// Labels that placement constraints select on.
    pub labels: BTreeMap<String, String>,
}

/// A capacity given by the operator, per dimension (e.g. to give a share of a machine to the
/// orchestrator, or to run several simulated nodes on one machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityOverride {
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            interval: Duration::from_secs(2),
            capacity: CapacityOverride::default(),
            reserved: Resources::new(100, 256),
            labels: BTreeMap::new(),
        }
    }
}

/// This machine's CPUs (millicores: 1000 per CPU this process may run on) and memory (MiB, from
/// `/proc/meminfo`).
pub fn measured_capacity() -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total_mib(&m)).unwrap_or(0);
    Resources::new(cpus * 1000, memory)
}

fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}

impl NodeSettings {
    /// The capacity reported: the operator's where given, else measured.
    pub fn capacity(&self) -> Resources {
        let measured = measured_capacity();
        Resources::new(self.capacity.cpu.unwrap_or(measured.cpu), self.capacity.memory.unwrap_or(measured.memory))
    }
}

/// Reads labels from a file of `key = value` lines (`#` starts a comment), as `--labels-file`
/// takes them.
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = parse_label(line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        labels.insert(key, value);
    }
    Ok(labels)
}

/// `key=value` (or `key = value`, the value optionally in double quotes), checked.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?}: a label is KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    let labels = BTreeMap::from([(key.to_string(), value.to_string())]);
    orch_protocol::resources::validate_labels("label", &labels).map_err(|e| e.to_string())?;
    Ok((key.to_string(), value.to_string()))
}

/// Publishes the node's report every interval until `shutdown`.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    node: String,
    settings: NodeSettings,
    enforcement: Enforcement,
    supervisor: Arc<Supervisor>,
    mut shutdown: Shutdown,
) {
    let subject = subjects.agent(&node, verbs::NODE);
    let started: DateTime<Utc> = Utc::now();
    let capacity = settings.capacity();
    tracing::info!(node = %node, %capacity, reserved = %settings.reserved, labels = ?settings.labels, ?enforcement, "node reports every {}", humantime::format_duration(settings.interval));
    let mut sampler = Sampler::default();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.requested() => break,
        }
        let (cpu_used, memory_used) = sampler.sample().unwrap_or((0.0, 0.0));
        let allocations = supervisor
            .allocations()
            .into_iter()
            .map(|(service, pid, resources)| Allocation { service, pid, resources })
            .collect();
        let report = NodeReport {
            node: node.clone(),
            capacity,
            reserved: settings.reserved,
            labels: settings.labels.clone(),
            enforcement,
            allocations,
            cpu_used,
            memory_used,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_started: started,
            at: Utc::now(),
        };
        if let Err(e) = super::service::publish_report(&client, &subject, &report).await {
            tracing::debug!(error = %e, "node report not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_and_checked() {
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert_eq!(parse_label("disk = \"ssd\"").unwrap(), ("disk".into(), "ssd".into()));
        assert!(parse_label("zone").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_label("bad key=1").unwrap_err().contains("label.bad key"));
        let dir = std::env::temp_dir().join(format!("labels-{}", std::process::id()));
        std::fs::write(&dir, "# where it is\nzone = a\n\ndisk=ssd # fast\n").unwrap();
        let labels = read_labels(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["disk"], "ssd");
    }

    #[test]
    fn capacity_is_measured_unless_given() {
        let measured = measured_capacity();
        assert!(measured.cpu >= 1000 && measured.memory > 0, "{measured}");
        assert_eq!(mem_total_mib("MemTotal:  2048000 kB\n"), Some(2000));
        let settings =
            NodeSettings { capacity: CapacityOverride { cpu: Some(500), memory: None }, ..Default::default() };
        assert_eq!(settings.capacity(), Resources::new(500, measured.memory));
    }
}
