//! Load shedding: what to do with one node's pressure readings. While a reading is at or above a
//! threshold the node sheds one sheddable service per step, lowest priority first; once readings
//! have stayed below both thresholds for `restore_after`, it starts one shed service per step
//! again, highest priority first. One step at a time, so each step's effect shows in the
//! readings before the next. Pure: the controller feeds readings and carries out the steps.

use std::time::{Duration, Instant};

use crate::config::ShedArgs;

/// What the controller should do after a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Stop the lowest-priority running sheddable service of the node.
    Shed,
    /// Start the highest-priority shed service of the node again.
    Restore,
}

/// A reading's effect: a threshold crossing to announce (`Some(true)`: pressure began,
/// `Some(false)`: cleared) and the step to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    pub crossed: Option<bool>,
    pub step: Step,
}

/// One node's shedding state.
#[derive(Debug, Clone, Default)]
pub struct Node {
    high: bool,
    clear_since: Option<Instant>,
    last_step: Option<Instant>,
}

impl Node {
    /// Takes a reading. `can_shed`: a sheddable service of the node runs; `can_restore`: one
    /// was shed. A step it asks for is assumed taken.
    pub fn observe(
        &mut self,
        cpu: f64,
        memory: f64,
        now: Instant,
        args: &ShedArgs,
        can_shed: bool,
        can_restore: bool,
    ) -> Reaction {
        let high = cpu >= args.shed_cpu || memory >= args.shed_memory;
        let crossed = (high != self.high).then_some(high);
        self.high = high;
        if high {
            self.clear_since = None;
        } else if self.clear_since.is_none() {
            self.clear_since = Some(now);
        }
        let step_due = self.last_step.is_none_or(|t| now.duration_since(t) >= args.shed_step);
        let cleared_long = self.clear_since.is_some_and(|t| now.duration_since(t) >= args.shed_restore_after);
        let step = if high && can_shed && step_due {
            Step::Shed
        } else if !high && cleared_long && can_restore && step_due {
            Step::Restore
        } else {
            Step::Nothing
        };
        if step != Step::Nothing {
            self.last_step = Some(now);
        }
        Reaction { crossed, step }
    }

    /// How long the pressure has been clear, if it is.
    pub fn clear_for(&self, now: Instant) -> Option<Duration> {
        self.clear_since.map(|t| now.duration_since(t))
    }
}

/// The reason a reading gives, e.g. `memory 93% >= 90%`.
pub fn pressure_reason(cpu: f64, memory: f64, args: &ShedArgs) -> String {
    let pct = |v: f64| (v * 100.0).round();
    let mut parts = Vec::new();
    if cpu >= args.shed_cpu {
        parts.push(format!("cpu {}% >= {}%", pct(cpu), pct(args.shed_cpu)));
    }
    if memory >= args.shed_memory {
        parts.push(format!("memory {}% >= {}%", pct(memory), pct(args.shed_memory)));
    }
    if parts.is_empty() {
        format!("cpu {}% and memory {}% below the thresholds", pct(cpu), pct(memory))
    } else {
        parts.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ShedArgs {
        ShedArgs {
            shed_cpu: 0.9,
            shed_memory: 0.8,
            shed_step: Duration::from_secs(10),
            shed_restore_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn sheds_one_step_at_a_time_while_pressure_lasts() {
        let (mut node, t0, a) = (Node::default(), Instant::now(), args());
        let r = node.observe(0.5, 0.85, t0, &a, true, false);
        assert_eq!(r, Reaction { crossed: Some(true), step: Step::Shed });
        let r = node.observe(0.5, 0.85, t0 + Duration::from_secs(5), &a, true, true);
        assert_eq!(r, Reaction { crossed: None, step: Step::Nothing }, "within the step interval");
        let r = node.observe(0.95, 0.1, t0 + Duration::from_secs(10), &a, true, true);
        assert_eq!(r.step, Step::Shed, "cpu alone is pressure too");
        let r = node.observe(0.95, 0.1, t0 + Duration::from_secs(20), &a, false, true);
        assert_eq!(r.step, Step::Nothing, "nothing left to shed");
    }

    #[test]
    fn restores_after_the_pressure_stayed_clear() {
        let (mut node, t0, a) = (Node::default(), Instant::now(), args());
        node.observe(0.1, 0.9, t0, &a, true, false);
        let r = node.observe(0.1, 0.1, t0 + Duration::from_secs(1), &a, false, true);
        assert_eq!(r, Reaction { crossed: Some(false), step: Step::Nothing });
        let r = node.observe(0.1, 0.1, t0 + Duration::from_secs(20), &a, false, true);
        assert_eq!(r.step, Step::Nothing, "clear for 19s only");
        let r = node.observe(0.1, 0.1, t0 + Duration::from_secs(31), &a, false, true);
        assert_eq!(r.step, Step::Restore);
        let r = node.observe(0.1, 0.1, t0 + Duration::from_secs(35), &a, false, true);
        assert_eq!(r.step, Step::Nothing, "one step per interval");
        // Pressure again: the clear time starts over.
        node.observe(0.1, 0.9, t0 + Duration::from_secs(50), &a, false, true);
        let r = node.observe(0.1, 0.1, t0 + Duration::from_secs(60), &a, false, true);
        assert_eq!(r.step, Step::Nothing);
    }

    #[test]
    fn reasons_name_the_threshold() {
        assert_eq!(pressure_reason(0.5, 0.93, &args()), "memory 93% >= 80%");
        assert_eq!(pressure_reason(0.95, 0.93, &args()), "cpu 95% >= 90% and memory 93% >= 80%");
    }
}
