//! The registry side of managed services: a ready service with a port is registered as instance
//! `managed-<service>` (`managed-<service>-<i>` for each replica, all under the service's name),
//! its readiness check staying on it so discovery follows readiness, its lease renewed while it
//! runs, and deregistered when it stops or crashes.

use std::sync::Arc;

use orch_protocol::registry::Registration;
use tokio::sync::mpsc;

use crate::lifecycle::manifest::ServiceSpec;
use crate::registry::{Command, Registry, writer};

/// What the controller asks the registry, in order (a deregistration never overtakes the
/// registration it undoes).
pub(super) enum RegistryOp {
    Register(Box<Registration>),
    Deregister(String),
    Heartbeat(String),
}

pub(super) fn spawn_registrar(registry: Arc<Registry>) -> mpsc::UnboundedSender<RegistryOp> {
    let (tx, mut rx) = mpsc::unbounded_channel::<RegistryOp>();
    tokio::spawn(async move {
        while let Some(op) = rx.recv().await {
            let (command, what) = match op {
                RegistryOp::Heartbeat(id) => {
                    registry.heartbeat(&id);
                    continue;
                }
                RegistryOp::Register(r) => (Command::Register(*r), "registering"),
                RegistryOp::Deregister(id) => (Command::Deregister { id }, "deregistering"),
            };
            if let Err(e) = registry.writer.submit(writer::internal(command)).await {
                tracing::warn!(error = %e, "{what} a managed service's instance failed");
            }
        }
    });
    tx
}

/// The registry instance id of a managed service or of one of its replicas.
pub fn instance_id(service: &str) -> String {
    format!("managed-{service}")
}

/// The registry instance of a ready managed service: its readiness check stays on it, so
/// discovery follows readiness.
pub(super) fn registration(name: &str, spec: &ServiceSpec, node: &str, port: u32, version: i64) -> Registration {
    Registration {
        id: Some(instance_id(name)),
        name: spec.replica_of.clone().unwrap_or_else(|| name.to_string()),
        version: format!("manifest-{version}"),
        address: spec.address.clone(),
        port,
        protocol: "http".into(),
        tags: vec!["managed".into()],
        metadata: [("node".to_string(), node.to_string())].into(),
        dependencies: spec.depends_on.keys().cloned().collect(),
        weight: orch_protocol::registry::limits::DEFAULT_WEIGHT,
        ttl_seconds: orch_protocol::registry::limits::DEFAULT_TTL,
        checks: spec.readiness.iter().cloned().collect(),
    }
}
