//! The lease sweeper: expires instances whose lease ran out, and suspends expiry (and the health
//! tracker's deregistration of critical instances) when too many leases run out at once
//! (self-preservation: a network partition between services and the orchestrator looks exactly
//! like a mass failure).

use std::sync::Arc;
use std::time::Duration;

use orch_protocol::events::SelfPreservationData;

use super::Registry;
use super::state::Command;
use super::writer::internal;
use crate::shutdown::Shutdown;

/// How often leases are checked, and when expiry is suspended.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSettings {
    /// How often leases are checked for expiry: a dead instance is noticed after its TTL plus up
    /// to this long.
    pub interval: Duration,
    /// Self-preservation: if more than this share of live instances expire in one sweep, expiry
    /// is suspended (a network problem is likelier than a mass failure) until heartbeats recover.
    pub threshold: f64,
    /// Self-preservation only applies with at least this many live instances.
    pub min_instances: usize,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings { interval: Duration::from_millis(100), threshold: 0.15, min_instances: 10 }
    }
}

/// Runs until `shutdown` turns true. `self_preservation` is the state persisted at the last stop.
pub async fn run(registry: Arc<Registry>, config: SweepSettings, mut self_preservation: bool, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    registry.set_self_preservation(self_preservation);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.requested() => return,
        }
        let peek = registry.leases.sweep(false);
        let share = if peek.live == 0 { 0.0 } else { peek.expiring.len() as f64 / peek.live as f64 };
        let mass_expiry = peek.live >= config.min_instances && share > config.threshold;
        let data = |message: String| SelfPreservationData {
            expiring: peek.expiring.len(),
            live: peek.live,
            threshold: config.threshold,
            message,
        };
        if mass_expiry {
            if !self_preservation {
                self_preservation = true;
                registry.set_self_preservation(true);
                let message = format!(
                    "{} of {} live instances ({:.1}%) missed their heartbeats in one sweep, more than {:.1}%: \
                     expiry and deregistration are suspended until heartbeats recover",
                    peek.expiring.len(),
                    peek.live,
                    share * 100.0,
                    config.threshold * 100.0
                );
                tracing::error!(
                    expiring = peek.expiring.len(),
                    live = peek.live,
                    "self-preservation entered: {message}"
                );
                let command = Command::SelfPreservation { entered: true, data: data(message) };
                registry.writer.submit_detached(internal(command)).await;
            }
            continue;
        }
        if self_preservation {
            self_preservation = false;
            registry.set_self_preservation(false);
            let message = format!(
                "heartbeats recovered: {} of {} live instances overdue; expiry resumes",
                peek.expiring.len(),
                peek.live
            );
            tracing::warn!("self-preservation exited: {message}");
            let command = Command::SelfPreservation { entered: false, data: data(message) };
            registry.writer.submit_detached(internal(command)).await;
        }
        let sweep = registry.leases.sweep(true);
        for (id, last_heartbeat_at) in sweep.expiring {
            tracing::info!(instance = %id, "lease expired");
            registry.writer.submit_detached(internal(Command::Expire { id, last_heartbeat_at })).await;
        }
    }
}
