//! Restart decisions of one managed service, free of I/O: the policy, the back-off (starting at
//! `backoff`, doubling, capped at `backoff_max`, back to the start after `backoff_reset` healthy),
//! and the start-rate limit that puts a service in `failed` after too many starts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::manifest::{Restart, RestartPolicy};

/// What to do after the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again after this delay (the `attempt`-th restart in a row).
    Restart { after: Duration, attempt: u32 },
    /// The policy does not restart it.
    Leave,
    /// Too many starts: the service is `failed`, with the reason.
    GiveUp(String),
}

#[derive(Debug, Clone)]
pub struct Restarts {
    policy: Restart,
    /// Start times inside the rate-limit window.
    starts: VecDeque<Instant>,
    /// Restarts in a row since the service was last healthy long enough.
    attempt: u32,
    healthy_since: Option<Instant>,
}

impl Restarts {
    pub fn new(policy: Restart) -> Restarts {
        Restarts { policy, starts: VecDeque::new(), attempt: 0, healthy_since: None }
    }

    /// The process was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.starts.push_back(now);
        self.healthy_since = None;
    }

    /// The service became healthy (ready) at `now`.
    pub fn healthy(&mut self, now: Instant) {
        self.healthy_since.get_or_insert(now);
    }

    /// It is no longer healthy (its liveness check went critical).
    pub fn unhealthy(&mut self) {
        self.healthy_since = None;
    }

    /// The process ended at `now`; `failure` is a non-zero exit, a signal or a critical liveness
    /// check.
    pub fn ended(&mut self, failure: bool, now: Instant) -> AfterExit {
        let restart = match self.policy.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failure,
            RestartPolicy::Always => true,
        };
        if self.healthy_since.is_some_and(|since| now.saturating_duration_since(since) >= self.policy.backoff_reset) {
            self.attempt = 0;
        }
        self.healthy_since = None;
        if !restart {
            return AfterExit::Leave;
        }
        while self.starts.front().is_some_and(|t| now.saturating_duration_since(*t) > self.policy.start_limit_window) {
            self.starts.pop_front();
        }
        // The restart would be one more start inside the window.
        if self.starts.len() as u32 >= self.policy.start_limit {
            return AfterExit::GiveUp(format!(
                "started {} times within {}; the limit is {} (restart.start_limit)",
                self.starts.len(),
                humantime::format_duration(self.policy.start_limit_window),
                self.policy.start_limit
            ));
        }
        self.attempt += 1;
        let factor = 2u32.saturating_pow(self.attempt - 1);
        let after = self.policy.backoff.saturating_mul(factor).min(self.policy.backoff_max);
        AfterExit::Restart { after, attempt: self.attempt }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(policy: RestartPolicy) -> Restart {
        Restart { policy, start_limit: 100, ..Restart::default() }
    }

    fn delays(r: &mut Restarts, n: usize, t0: Instant) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let now = t0 + Duration::from_secs(i as u64);
                r.started(now);
                match r.ended(true, now) {
                    AfterExit::Restart { after, .. } => after.as_secs(),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut r = Restarts::new(policy(RestartPolicy::OnFailure));
        assert_eq!(delays(&mut r, 11, Instant::now()), [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn backoff_resets_after_being_healthy_long_enough() {
        let t0 = Instant::now();
        let mut r = Restarts::new(policy(RestartPolicy::Always));
        delays(&mut r, 3, t0);
        let later = t0 + Duration::from_secs(100);
        r.started(later);
        r.healthy(later);
        let short = r.ended(true, later + Duration::from_secs(60));
        assert_eq!(short, AfterExit::Restart { after: Duration::from_secs(8), attempt: 4 }, "healthy too briefly");
        let much_later = later + Duration::from_secs(1000);
        r.started(much_later);
        r.healthy(much_later);
        let reset = r.ended(true, much_later + Duration::from_secs(601));
        assert_eq!(reset, AfterExit::Restart { after: Duration::from_secs(1), attempt: 1 });
    }

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut never = Restarts::new(policy(RestartPolicy::Never));
        assert_eq!(never.ended(true, now), AfterExit::Leave);
        let mut on_failure = Restarts::new(policy(RestartPolicy::OnFailure));
        assert_eq!(on_failure.ended(false, now), AfterExit::Leave, "a clean exit is left alone");
        let mut always = Restarts::new(policy(RestartPolicy::Always));
        assert!(matches!(always.ended(false, now), AfterExit::Restart { .. }));
    }

    #[test]
    fn too_many_starts_give_up() {
        let t0 = Instant::now();
        let mut r = Restarts::new(Restart { start_limit: 3, ..Restart::default() });
        for i in 0..2 {
            r.started(t0 + Duration::from_secs(i));
            assert!(matches!(r.ended(true, t0 + Duration::from_secs(i)), AfterExit::Restart { .. }));
        }
        r.started(t0 + Duration::from_secs(2));
        let AfterExit::GiveUp(reason) = r.ended(true, t0 + Duration::from_secs(2)) else { panic!() };
        assert!(reason.contains("started 3 times within 5m"), "{reason}");
        // Starts older than the window no longer count.
        let mut r = Restarts::new(Restart { start_limit: 2, ..Restart::default() });
        r.started(t0);
        r.started(t0 + Duration::from_secs(1));
        assert!(matches!(r.ended(true, t0 + Duration::from_secs(400)), AfterExit::Restart { .. }));
    }
}
