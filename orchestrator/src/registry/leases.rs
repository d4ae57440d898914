//! Leases in memory. Heartbeats are high-volume, so they only touch this table; PostgreSQL hears
//! about a lease when it matters: it expired, or it recovered.
//!
//! After a restart every live instance gets a fresh full TTL, so an instance that kept beating
//! while the orchestrator was down is never expired by mistake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Beating, or inside its TTL.
    Live,
    /// The sweeper asked to expire it; the commit is pending.
    Expiring,
    /// Committed as critical.
    Critical,
    /// A heartbeat arrived while critical; the recovery commit is pending.
    Recovering,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    last_beat: Option<DateTime<Utc>>,
    state: State,
}

/// What a heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Renewed,
    /// The instance was critical: the caller must submit a `Recover` command.
    NeedsRecovery,
    Unknown,
}

/// What the sweeper should do now.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Live leases whose deadline passed, with their last heartbeat.
    pub expiring: Vec<(String, Option<DateTime<Utc>>)>,
    /// Leases live before this sweep (those expiring included).
    pub live: usize,
}

#[derive(Default)]
pub struct Leases {
    inner: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// Adds the instances found in PostgreSQL at start-up: id, TTL, and whether the lease is
    /// critical.
    pub fn load(&self, rows: impl IntoIterator<Item = (String, Duration, bool)>) {
        let now = Instant::now();
        let mut map = self.inner.lock().expect("lease table lock");
        for (id, ttl, critical) in rows {
            let state = if critical { State::Critical } else { State::Live };
            map.insert(id, Lease { ttl, deadline: now + ttl, last_beat: None, state });
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("lease table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A heartbeat for `id`.
    pub fn beat(&self, id: &str) -> Beat {
        let mut map = self.inner.lock().expect("lease table lock");
        let Some(lease) = map.get_mut(id) else {
            return Beat::Unknown;
        };
        lease.deadline = Instant::now() + lease.ttl;
        lease.last_beat = Some(Utc::now());
        match lease.state {
            State::Live | State::Expiring | State::Recovering => Beat::Renewed,
            State::Critical => {
                lease.state = State::Recovering;
                Beat::NeedsRecovery
            }
        }
    }

    /// The last heartbeat seen since start-up, and when the lease runs out if it is live.
    pub fn view(&self, id: &str) -> Option<LeaseView> {
        let map = self.inner.lock().expect("lease table lock");
        let lease = map.get(id)?;
        let now = Instant::now();
        // The deadline in wall-clock time, in the past for an overdue lease.
        let deadline = if lease.deadline >= now {
            Utc::now() + chrono::Duration::from_std(lease.deadline - now).unwrap_or_default()
        } else {
            Utc::now() - chrono::Duration::from_std(now - lease.deadline).unwrap_or_default()
        };
        Some(LeaseView {
            last_heartbeat_at: lease.last_beat,
            expires_at: matches!(lease.state, State::Live).then_some(deadline),
        })
    }

    /// Finds leases to expire and marks them in flight so the next sweep does not ask again.
    /// When `expire` is false (self-preservation) nothing is marked.
    pub fn sweep(&self, expire: bool) -> Sweep {
        let now = Instant::now();
        let mut map = self.inner.lock().expect("lease table lock");
        let mut sweep = Sweep::default();
        for (id, lease) in map.iter_mut() {
            if lease.state == State::Live {
                sweep.live += 1;
                if lease.deadline <= now {
                    sweep.expiring.push((id.clone(), lease.last_beat));
                    if expire {
                        lease.state = State::Expiring;
                    }
                }
            }
        }
        sweep
    }

    /// A submitted expiry did not commit; put the lease back so a later sweep retries.
    pub fn release(&self, id: &str) {
        let mut map = self.inner.lock().expect("lease table lock");
        if let Some(lease) = map.get_mut(id)
            && lease.state == State::Expiring
        {
            lease.state = State::Live;
        }
    }

    /// A registration committed. A new instance gets a full TTL; an existing one keeps its lease
    /// and health, with the new TTL applied from its last renewal.
    pub fn registered(&self, id: &str, ttl: Duration, created: bool) {
        let mut map = self.inner.lock().expect("lease table lock");
        match map.get_mut(id) {
            Some(lease) if !created => {
                if lease.ttl != ttl {
                    lease.deadline = lease.deadline - lease.ttl + ttl;
                    lease.ttl = ttl;
                }
            }
            _ => {
                map.insert(
                    id.to_string(),
                    Lease { ttl, deadline: Instant::now() + ttl, last_beat: None, state: State::Live },
                );
            }
        }
    }

    /// An expiry committed. Returns true when a heartbeat arrived in the meantime, so the caller
    /// submits a recovery right away.
    pub fn expired(&self, id: &str) -> bool {
        let mut map = self.inner.lock().expect("lease table lock");
        let Some(lease) = map.get_mut(id) else {
            return false;
        };
        let beat_meanwhile = lease.deadline > Instant::now();
        lease.state = if beat_meanwhile { State::Recovering } else { State::Critical };
        beat_meanwhile
    }

    /// A recovery committed.
    pub fn recovered(&self, id: &str) {
        let mut map = self.inner.lock().expect("lease table lock");
        if let Some(lease) = map.get_mut(id) {
            lease.state = State::Live;
        }
    }

    pub fn removed(&self, id: &str) {
        self.inner.lock().expect("lease table lock").remove(id);
    }
}

/// Lease information shown with an instance.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct LeaseView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_renew_and_unknown_is_reported() {
        let leases = Leases::default();
        leases.registered("a", Duration::from_secs(30), true);
        assert_eq!(leases.beat("a"), Beat::Renewed);
        assert_eq!(leases.beat("b"), Beat::Unknown);
    }

    #[test]
    fn overdue_lease_is_swept_once() {
        let leases = Leases::default();
        leases.registered("a", Duration::ZERO, true);
        let s = leases.sweep(true);
        assert_eq!(s.expiring.len(), 1);
        assert_eq!(s.live, 1);
        assert!(leases.sweep(true).expiring.is_empty(), "in flight, not asked twice");
        leases.release("a");
        assert_eq!(leases.sweep(true).expiring.len(), 1, "released, asked again");
    }

    #[test]
    fn self_preservation_sweep_marks_nothing() {
        let leases = Leases::default();
        leases.registered("a", Duration::ZERO, true);
        assert_eq!(leases.sweep(false).expiring.len(), 1);
        assert_eq!(leases.sweep(false).expiring.len(), 1);
    }

    #[test]
    fn beat_on_critical_asks_for_recovery_once() {
        let leases = Leases::default();
        leases.registered("a", Duration::ZERO, true);
        leases.sweep(true);
        assert!(!leases.expired("a"));
        assert_eq!(leases.beat("a"), Beat::NeedsRecovery);
        assert_eq!(leases.beat("a"), Beat::Renewed);
        leases.recovered("a");
        assert_eq!(leases.beat("a"), Beat::Renewed);
    }

    #[test]
    fn beat_while_expiry_in_flight_triggers_recovery_after_commit() {
        let leases = Leases::default();
        leases.registered("a", Duration::from_millis(1), true);
        std::thread::sleep(Duration::from_millis(5));
        leases.sweep(true);
        leases.registered("a", Duration::from_secs(30), false);
        leases.beat("a");
        assert!(leases.expired("a"), "the beat came in while the expiry was committing");
    }

    #[test]
    fn loaded_critical_lease_recovers_on_beat() {
        let leases = Leases::default();
        leases.load([("a".to_string(), Duration::from_secs(30), true)]);
        assert_eq!(leases.sweep(true).live, 0);
        assert_eq!(leases.beat("a"), Beat::NeedsRecovery);
    }
}
