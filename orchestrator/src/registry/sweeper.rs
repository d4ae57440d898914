//! The lease sweeper: expires instances whose lease ran out, and suspends expiry (and the health
//! tracker's deregistration of critical instances) when too many leases run out at once
//! (self-preservation: a network partition between services and the orchestrator looks exactly
//! like a mass failure).

use std::sync::Arc;
use std::time::Duration;

use orch_protocol::events::SelfPreservationData;
use orch_protocol::{ErrorCode, ProtocolError};
use tokio::sync::{mpsc, oneshot};

use super::Registry;
use super::state::Command;
use super::writer::{Body, Meta, Submission, internal};
use crate::shutdown::Shutdown;

/// An operator's request to end self-preservation now (see [`Registry::end_self_preservation`]).
pub struct EndRequest {
    pub principal: String,
    pub reason: Option<String>,
    pub reply: oneshot::Sender<Result<SelfPreservationData, ProtocolError>>,
}

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
    let mut ends = registry.take_end_requests();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(request) = next_end(&mut ends) => {
                let ended = end(&registry, &config, &mut self_preservation, request.principal, request.reason).await;
                let _ = request.reply.send(ended);
                continue;
            }
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
            reason: None,
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
        expire_overdue(&registry).await;
    }
}

/// The next operator's request, or never when another sweeper took the receiver.
async fn next_end(ends: &mut Option<mpsc::Receiver<EndRequest>>) -> Option<EndRequest> {
    match ends {
        Some(ends) => ends.recv().await,
        None => std::future::pending().await,
    }
}

/// Expires every live lease whose deadline passed.
async fn expire_overdue(registry: &Registry) {
    let sweep = registry.leases.sweep(true);
    for (id, last_heartbeat_at) in sweep.expiring {
        tracing::info!(instance = %id, "lease expired");
        registry.writer.submit_detached(internal(Command::Expire { id, last_heartbeat_at })).await;
    }
}

/// Ends self-preservation for `principal`: commits the exit with its event (by `principal`, so it
/// is audited before anything expires), then expires the overdue leases at once; left overdue,
/// they would make the next sweep enter it again.
async fn end(
    registry: &Registry,
    config: &SweepSettings,
    self_preservation: &mut bool,
    principal: String,
    reason: Option<String>,
) -> Result<SelfPreservationData, ProtocolError> {
    if !*self_preservation {
        return Err(ProtocolError::new(
            ErrorCode::Conflict,
            "self-preservation is not active; there is nothing to end",
        ));
    }
    let peek = registry.leases.sweep(false);
    let message = format!(
        "ended by {principal}{}: {} of {} live instances are overdue and expire now; expiry resumes",
        reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        peek.expiring.len(),
        peek.live,
    );
    let data = SelfPreservationData {
        expiring: peek.expiring.len(),
        live: peek.live,
        threshold: config.threshold,
        message: message.clone(),
        reason,
    };
    let command = Command::SelfPreservation { entered: false, data: data.clone() };
    let meta = Meta::new("req", None, "self_preservation.end", bytes::Bytes::new(), principal);
    registry.submit(Submission { meta, body: Body::Command(command) }).await?;
    *self_preservation = false;
    registry.set_self_preservation(false);
    tracing::warn!("self-preservation exited: {message}");
    expire_overdue(registry).await;
    Ok(data)
}
