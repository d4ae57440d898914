//! The leadership lease of one replica, decided apart from its effects: the task around it claims
//! or renews the lease in PostgreSQL when told to ([`Action::Claim`]) and reports the answer; this
//! machine says when the replica became leader and when it must step down. Time is passed in.
//!
//! Safety does not rest on clocks: every write of the leader is fenced by its term in the database
//! (`storage::leadership::fence`). The local deadline only makes a leader that cannot renew stop
//! its work before a successor may be elected: it counts the lease from the moment the claim was
//! sent, which is no later than the database's `now()` that the lease is counted from.

use std::time::{Duration, Instant};

use crate::storage::leadership::{Claim, Holder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long a claim or renewal holds the lease.
    pub ttl: Duration,
    /// How often the leader renews, and a standby tries to claim.
    pub renew_every: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings { ttl: Duration::from_secs(5), renew_every: Duration::from_millis(500) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not the leader; the last holder seen, if any.
    Standby { leader: Option<Holder> },
    /// The leader of `term` until `valid_until` unless renewed.
    Leader { term: i64, valid_until: Instant },
}

/// What the task around the machine does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Claim (no term) or renew (the term held) the lease; `force` when the holder's database
    /// sessions are known to be gone.
    Claim { term: Option<i64>, force: bool },
    /// This replica leads `term` now: start the leader's work.
    Elected { term: i64 },
    /// This replica no longer leads `term`: stop the leader's work at once.
    SteppedDown { term: i64, reason: String },
}

pub struct Lease {
    settings: LeaseSettings,
    role: Role,
    /// When to claim or renew next.
    next_claim: Option<Instant>,
    /// A claim sent and not answered yet (only one at a time).
    asking: bool,
}

impl Lease {
    /// The lease of a replica whose claims the task makes under its name.
    pub fn new(settings: LeaseSettings) -> Lease {
        Lease { settings, role: Role::Standby { leader: None }, next_claim: None, asking: false }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn term(&self) -> Option<i64> {
        match self.role {
            Role::Leader { term, .. } => Some(term),
            Role::Standby { .. } => None,
        }
    }

    /// Time passes. `holder_gone`: the holder's database sessions are gone (its session lock
    /// could be taken), so a standby need not wait for the lease to expire.
    pub fn tick(&mut self, now: Instant, holder_gone: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if let Role::Leader { term, valid_until } = self.role
            && now >= valid_until
        {
            out.push(self.step_down(term, "the lease could not be renewed in time"));
        }
        let due = self.next_claim.is_none_or(|at| now >= at) || (holder_gone && self.term().is_none());
        if due && !self.asking {
            self.asking = true;
            self.next_claim = Some(now + self.settings.renew_every);
            out.push(Action::Claim { term: self.term(), force: holder_gone && self.term().is_none() });
        }
        out
    }

    /// The answer, at `now`, to the claim sent at `asked_at`: what the database did, or an error
    /// (PostgreSQL unavailable: a leader keeps leading until its deadline, no longer). An answer
    /// that comes after the lease it gave would have run out gives nothing.
    pub fn claimed(&mut self, asked_at: Instant, now: Instant, result: Result<Claim, String>) -> Vec<Action> {
        self.asking = false;
        let Ok(claim) = result else { return Vec::new() };
        if asked_at + self.settings.ttl <= now {
            return Vec::new();
        }
        let (holder, mine) = match claim {
            Claim::Claimed(holder) => (holder, true),
            Claim::HeldBy(holder) => (holder, false),
        };
        match (self.role.clone(), mine) {
            (Role::Leader { term, .. }, true) if holder.term == term => {
                self.role = Role::Leader { term, valid_until: asked_at + self.settings.ttl };
                Vec::new()
            }
            (Role::Leader { term, .. }, _) => {
                let reason = format!("replica {:?} holds the lease of term {}", holder.holder, holder.term);
                let mut out = vec![self.step_down(term, &reason)];
                if mine {
                    out.extend(self.elect(holder.term, asked_at));
                }
                out
            }
            (Role::Standby { .. }, true) => self.elect(holder.term, asked_at),
            (Role::Standby { .. }, false) => {
                self.role = Role::Standby { leader: Some(holder) };
                Vec::new()
            }
        }
    }

    /// The claim sent got no answer at all (the task gave up on it): another may be sent.
    pub fn unanswered(&mut self) {
        self.asking = false;
    }

    /// A write of the leader was fenced (another replica holds a newer term): step down at once.
    pub fn fenced(&mut self) -> Vec<Action> {
        match self.role {
            Role::Leader { term, .. } => vec![self.step_down(term, "a write was fenced by a newer term")],
            Role::Standby { .. } => Vec::new(),
        }
    }

    fn elect(&mut self, term: i64, asked_at: Instant) -> Vec<Action> {
        self.role = Role::Leader { term, valid_until: asked_at + self.settings.ttl };
        vec![Action::Elected { term }]
    }

    fn step_down(&mut self, term: i64, reason: &str) -> Action {
        self.role = Role::Standby { leader: None };
        Action::SteppedDown { term, reason: reason.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const TTL: Duration = Duration::from_secs(5);
    const EVERY: Duration = Duration::from_millis(500);

    fn lease() -> Lease {
        Lease::new(LeaseSettings { ttl: TTL, renew_every: EVERY })
    }

    fn holder(by: &str, term: i64) -> Holder {
        Holder { holder: by.into(), term, since: Utc::now(), expires_at: Utc::now() }
    }

    /// The claim of "a" succeeded with `term`.
    fn mine(term: i64) -> Result<Claim, String> {
        Ok(Claim::Claimed(holder("a", term)))
    }

    /// The lease is held by `by`, unchanged.
    fn held(by: &str, term: i64) -> Result<Claim, String> {
        Ok(Claim::HeldBy(holder(by, term)))
    }

    #[test]
    fn a_standby_claims_leads_renews_and_steps_down_when_it_cannot_renew() {
        let mut l = lease();
        let t0 = Instant::now();
        assert_eq!(l.tick(t0, false), [Action::Claim { term: None, force: false }]);
        assert!(l.tick(t0, false).is_empty(), "one claim at a time");
        assert_eq!(l.claimed(t0, t0, mine(7)), [Action::Elected { term: 7 }]);
        assert_eq!(l.role(), &Role::Leader { term: 7, valid_until: t0 + TTL });

        // Renewals keep it; the deadline counts from when the renewal was sent.
        let t1 = t0 + EVERY;
        assert_eq!(l.tick(t1, false), [Action::Claim { term: Some(7), force: false }]);
        assert!(l.claimed(t1, t1, mine(7)).is_empty());
        assert_eq!(l.role(), &Role::Leader { term: 7, valid_until: t1 + TTL });

        // PostgreSQL unavailable: it leads until the deadline, then steps down by itself.
        let t2 = t1 + EVERY;
        l.tick(t2, false);
        assert!(l.claimed(t2, t2, Err("unavailable".into())).is_empty());
        let late = t1 + TTL;
        let actions = l.tick(late, false);
        assert_eq!(
            actions[0],
            Action::SteppedDown { term: 7, reason: "the lease could not be renewed in time".into() }
        );
        assert_eq!(actions[1], Action::Claim { term: None, force: false });
    }

    #[test]
    fn a_leader_that_finds_another_holder_or_is_fenced_steps_down() {
        let mut l = lease();
        let t0 = Instant::now();
        l.tick(t0, false);
        l.claimed(t0, t0, mine(3));
        l.tick(t0 + EVERY, false);
        // Paused past its lease: another replica was elected meanwhile.
        let actions = l.claimed(t0 + EVERY, t0 + EVERY, held("b", 4));
        assert!(matches!(&actions[..], [Action::SteppedDown { term: 3, reason }] if reason.contains("\"b\"")));
        assert!(matches!(l.role(), Role::Standby { leader: None }));

        let mut l = lease();
        l.tick(t0, false);
        l.claimed(t0, t0, mine(5));
        assert!(matches!(&l.fenced()[..], [Action::SteppedDown { term: 5, .. }]));
        assert!(l.fenced().is_empty(), "a standby has nothing to step down from");
    }

    #[test]
    fn a_standby_follows_the_holder_and_claims_at_once_when_the_holder_is_gone() {
        let mut l = lease();
        let t0 = Instant::now();
        l.tick(t0, false);
        assert!(l.claimed(t0, t0, held("b", 2)).is_empty());
        assert!(matches!(l.role(), Role::Standby { leader: Some(h) } if h.holder == "b"));
        assert!(l.tick(t0 + EVERY / 2, false).is_empty(), "not due yet");
        // The holder's sessions are gone (it crashed): claimed at once, forced.
        assert_eq!(l.tick(t0 + EVERY / 2, true), [Action::Claim { term: None, force: true }]);
        assert_eq!(l.claimed(t0 + EVERY / 2, t0 + EVERY / 2, mine(3)), [Action::Elected { term: 3 }]);
    }

    #[test]
    fn a_lease_under_its_own_name_that_it_did_not_claim_or_a_late_answer_elects_nothing() {
        let mut l = lease();
        let t0 = Instant::now();
        l.tick(t0, false);
        // An earlier process of the same name still holds term 4: not this replica's lease.
        assert!(l.claimed(t0, t0, held("a", 4)).is_empty());
        assert!(matches!(l.role(), Role::Standby { .. }));
        // The answer to a claim arrives after the lease it gave would have run out.
        l.tick(t0 + EVERY, false);
        assert!(l.claimed(t0 + EVERY, t0 + EVERY + TTL, mine(5)).is_empty());
        assert!(matches!(l.role(), Role::Standby { .. }));
        // A claim the task gave up on lets the next one go.
        l.tick(t0 + 2 * EVERY, false);
        assert!(l.tick(t0 + 3 * EVERY, false).is_empty(), "still waiting for its answer");
        l.unanswered();
        assert_eq!(l.tick(t0 + 3 * EVERY, false), [Action::Claim { term: None, force: false }]);
    }
}
