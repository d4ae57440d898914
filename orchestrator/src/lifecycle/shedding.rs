//! Load shedding: what to do with one node's pressure readings. While a reading is at or above a
//! threshold the node sheds one sheddable service per step, lowest priority first; once readings
//! have stayed below both thresholds for `restore_after`, it starts one shed service per step
//! again, highest priority first. One step at a time, so each step's effect shows in the
//! readings before the next. Pure: the controller feeds readings and carries out the steps.

use std::time::{Duration, Instant};

/// When a node sheds: its `sheddable` managed services are stopped, lowest priority first, one
/// per step, while its pressure is at or above a threshold; they start again, highest priority
/// first, once the pressure has stayed below both thresholds for `restore_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShedSettings {
    /// CPU busy share (0-1) at or above which a node sheds.
    pub cpu: f64,
    /// Memory used share (0-1) at or above which a node sheds.
    pub memory: f64,
    /// Time between two steps on a node while the pressure persists, so each step's effect shows
    /// in the next readings.
    pub step: Duration,
    /// How long the pressure must stay below the thresholds before shed services start again.
    pub restore_after: Duration,
}

impl Default for ShedSettings {
    fn default() -> Self {
        ShedSettings { cpu: 0.95, memory: 0.90, step: Duration::from_secs(10), restore_after: Duration::from_secs(60) }
    }
}

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
        thresholds: &ShedSettings,
        can_shed: bool,
        can_restore: bool,
    ) -> Reaction {
        let high = cpu >= thresholds.cpu || memory >= thresholds.memory;
        let crossed = (high != self.high).then_some(high);
        self.high = high;
        if high {
            self.clear_since = None;
        } else if self.clear_since.is_none() {
            self.clear_since = Some(now);
        }
        let step_due = self.last_step.is_none_or(|t| now.duration_since(t) >= thresholds.step);
        let cleared_long = self.clear_since.is_some_and(|t| now.duration_since(t) >= thresholds.restore_after);
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
pub fn pressure_reason(cpu: f64, memory: f64, thresholds: &ShedSettings) -> String {
    let pct = |v: f64| (v * 100.0).round();
    let mut parts = Vec::new();
    if cpu >= thresholds.cpu {
        parts.push(format!("cpu {}% >= {}%", pct(cpu), pct(thresholds.cpu)));
    }
    if memory >= thresholds.memory {
        parts.push(format!("memory {}% >= {}%", pct(memory), pct(thresholds.memory)));
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

    fn args() -> ShedSettings {
        ShedSettings { cpu: 0.9, memory: 0.8, step: Duration::from_secs(10), restore_after: Duration::from_secs(30) }
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
