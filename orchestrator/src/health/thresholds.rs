//! Thresholds of one check, free of I/O: turns the stream of run results into a status that only
//! changes after enough consecutive failures or successes, so one lost packet never flips a check.
//!
//! A `warning` result counts as a failure that can never make the check worse than warning.

use orch_protocol::health::CheckSpec;
use orch_protocol::registry::Health;

#[derive(Debug, Clone)]
pub struct Thresholds {
    failures_before_critical: u32,
    failures_before_warning: u32,
    successes_before_passing: u32,
    failures: u32,
    successes: u32,
    /// The status after the last result.
    status: Health,
}

impl Thresholds {
    /// Counters for `spec`, starting from the committed `status`.
    pub fn new(spec: &CheckSpec, status: Health) -> Thresholds {
        Thresholds {
            failures_before_critical: spec.failures_before_critical.max(1),
            failures_before_warning: spec.failures_before_warning,
            successes_before_passing: spec.successes_before_passing.max(1),
            failures: 0,
            successes: 0,
            status,
        }
    }

    pub fn status(&self) -> Health {
        self.status
    }

    /// Takes one run's result and returns the status after it.
    pub fn observe(&mut self, result: Health) -> Health {
        match result {
            Health::Passing => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.status != Health::Passing && self.successes >= self.successes_before_passing {
                    self.status = Health::Passing;
                }
            }
            Health::Warning | Health::Critical => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                let warn_at = match self.failures_before_warning {
                    0 => None,
                    n => Some(n),
                };
                let mut next = self.status;
                if result == Health::Critical && self.failures >= self.failures_before_critical {
                    next = Health::Critical;
                } else if result == Health::Warning && self.failures >= self.failures_before_critical {
                    // A warning result reaches warning at the critical threshold at the latest.
                    next = next.max(Health::Warning);
                } else if warn_at.is_some_and(|n| self.failures >= n) {
                    next = next.max(Health::Warning);
                }
                // A critical check that now only warns improves to warning.
                if result == Health::Warning && self.status == Health::Critical && self.failures >= 1 {
                    next = Health::Warning;
                }
                self.status = next;
            }
        }
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_protocol::health::CheckKind;

    fn spec(fbc: u32, fbw: u32, sbp: u32) -> CheckSpec {
        CheckSpec {
            failures_before_critical: fbc,
            failures_before_warning: fbw,
            successes_before_passing: sbp,
            ..CheckSpec::new(CheckKind::Http)
        }
    }

    fn run(t: &mut Thresholds, results: &[Health]) -> Vec<Health> {
        results.iter().map(|r| t.observe(*r)).collect()
    }

    use Health::{Critical as C, Passing as P, Warning as W};

    #[test]
    fn defaults_follow_every_result() {
        let mut t = Thresholds::new(&spec(1, 0, 1), P);
        assert_eq!(run(&mut t, &[C, P, W, P]), vec![C, P, W, P]);
    }

    #[test]
    fn critical_only_after_enough_failures() {
        let mut t = Thresholds::new(&spec(3, 0, 1), P);
        assert_eq!(run(&mut t, &[C, C, P, C, C, C]), vec![P, P, P, P, P, C]);
    }

    #[test]
    fn warning_stage_before_critical() {
        let mut t = Thresholds::new(&spec(3, 1, 1), P);
        assert_eq!(run(&mut t, &[C, C, C]), vec![W, W, C]);
    }

    #[test]
    fn passing_only_after_enough_successes() {
        let mut t = Thresholds::new(&spec(1, 0, 2), C);
        assert_eq!(run(&mut t, &[P, C, P, P]), vec![C, C, C, P]);
    }

    #[test]
    fn warning_results_never_make_it_critical() {
        let mut t = Thresholds::new(&spec(2, 0, 1), P);
        assert_eq!(run(&mut t, &[W, W, W]), vec![P, W, W]);
        let mut t = Thresholds::new(&spec(1, 0, 1), C);
        assert_eq!(run(&mut t, &[W]), vec![W], "a critical check that only warns improves");
    }
}
