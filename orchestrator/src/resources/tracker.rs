//! The node tracker: the leader's executor of the [`Inventory`]. It reads every agent's heartbeat
//! on `<prefix>.agent.*.node`, marks silent nodes down once a second, stores each change with its
//! event in one transaction, and keeps a snapshot of the inventory for readers (HTTP, NATS, the
//! scheduler), at most one tick old.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use orch_protocol::Subjects;
use orch_protocol::agent::verbs;
use orch_protocol::events;
use orch_protocol::principal::ORCHESTRATOR;
use orch_protocol::resources::{NodeInfo, NodeReport};
use tokio::sync::{Notify, watch};

use super::inventory::{At, Change, Inventory};
use crate::shutdown::Shutdown;
use crate::storage::{self, batch::OutboxRow};

/// How the tracker judges nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSettings {
    /// A node whose agent has been silent longer than this is `down`.
    pub down_after: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings { down_after: Duration::from_secs(10) }
    }
}

/// How often silent nodes are looked for (and the snapshot refreshed).
const TICK: Duration = Duration::from_secs(1);

/// The inventory as readers see it.
#[derive(Clone)]
pub struct Nodes {
    view: watch::Receiver<Arc<Vec<NodeInfo>>>,
}

impl Nodes {
    /// Every node, by name.
    pub fn list(&self) -> Arc<Vec<NodeInfo>> {
        self.view.borrow().clone()
    }

    pub fn get(&self, name: &str) -> Option<NodeInfo> {
        self.view.borrow().iter().find(|n| n.name == name).cloned()
    }

    /// Changes of the snapshot, for those that act on them.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<NodeInfo>>> {
        self.view.clone()
    }
}

/// Loads the stored nodes, subscribes to the agents' heartbeats and starts the tracker.
pub async fn start(
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    subjects: Subjects,
    settings: NodeSettings,
    outbox_written: Arc<Notify>,
    shutdown: Shutdown,
) -> anyhow::Result<(Nodes, tokio::task::JoinHandle<()>)> {
    let stored = storage::retry("loading nodes", || storage::nodes::all(&pool)).await?;
    let mut inventory = Inventory::new(settings.down_after);
    inventory.resume(stored, At::now());
    let (view_tx, view) = watch::channel(Arc::new(inventory.list()));
    let reports = nats.subscribe(subjects.agents_report(verbs::NODE)).await?;
    let tracker = Tracker { pool, nats: nats.clone(), subjects, inventory, view: view_tx, outbox_written };
    Ok((Nodes { view }, tokio::spawn(tracker.run(reports, shutdown))))
}

struct Tracker {
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    subjects: Subjects,
    inventory: Inventory,
    view: watch::Sender<Arc<Vec<NodeInfo>>>,
    outbox_written: Arc<Notify>,
}

impl Tracker {
    async fn run(mut self, mut reports: async_nats::Subscriber, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changes = tokio::select! {
                _ = shutdown.requested() => return,
                _ = tick.tick() => {
                    // Cut off from NATS, the orchestrator hears no agent: that is no news of the
                    // nodes, and their silence counts again from the reconnection.
                    if self.nats.connection_state() != async_nats::connection::State::Connected {
                        self.inventory.excuse_silence(At::now());
                    }
                    let changes = self.inventory.sweep(At::now());
                    self.publish_view();
                    changes
                }
                message = reports.next() => {
                    let Some(message) = message else { return };
                    match self.read(&message) {
                        Some(report) => self.inventory.observe(report, At::now()).into_iter().collect(),
                        None => Vec::new(),
                    }
                }
            };
            if !changes.is_empty() {
                self.publish_view();
                self.store(changes).await;
            }
        }
    }

    /// A report, when it is readable and speaks for the node of its subject.
    fn read(&self, message: &async_nats::Message) -> Option<NodeReport> {
        let node = self.subjects.parse_agent_report(&message.subject, verbs::NODE)?;
        match serde_json::from_slice::<NodeReport>(&message.payload) {
            Ok(mut report) => {
                if report.node != node {
                    tracing::warn!(subject = %message.subject, claimed = %report.node, "a node report names another node than its subject; the subject's is kept");
                    report.node = node.to_string();
                }
                Some(report)
            }
            Err(e) => {
                tracing::warn!(error = %e, subject = %message.subject, "unreadable node report");
                None
            }
        }
    }

    fn publish_view(&self) {
        self.view.send_replace(Arc::new(self.inventory.list()));
    }

    async fn store(&self, changes: Vec<Change>) {
        let mut events = Vec::new();
        for change in &changes {
            if let Some((kind, data)) = &change.event {
                tracing::info!(node = %data.node, reason = %data.reason, "node {}", kind.name().trim_start_matches("node_"));
                let encoded = events::encode(
                    &self.subjects,
                    *kind,
                    &data.node,
                    &data.node,
                    ORCHESTRATOR,
                    chrono::Utc::now(),
                    data,
                );
                events.push(OutboxRow::from(encoded));
            }
        }
        let nodes: Vec<_> = changes.into_iter().map(|c| c.node).collect();
        let write = || storage::nodes::record(&self.pool, &nodes, &events);
        match storage::retry("recording nodes", write).await {
            Ok(()) => self.outbox_written.notify_one(),
            Err(e) => tracing::error!(error = %e, nodes = nodes.len(), "node changes not recorded"),
        }
    }
}
