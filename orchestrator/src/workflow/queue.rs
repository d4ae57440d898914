//! Which queued executions start: per queue, highest priority first, within the queue's
//! concurrency limit. A waiting execution gains priority as it waits (aging), so a steady stream
//! of high priorities never starves a low one: after `(high - low) / aging_per_minute` minutes
//! the low one is ahead. Ties go to the oldest. Pure.

use std::collections::HashMap;

use uuid::Uuid;

use super::machine::Millis;

/// A queued execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub id: Uuid,
    pub queue: String,
    pub priority: i16,
    pub queued_at: Millis,
}

/// The priority of `w` at `now`, aging included.
pub fn effective_priority(w: &Waiting, aging_per_minute: f64, now: Millis) -> f64 {
    let minutes = (now - w.queued_at).max(0) as f64 / 60_000.0;
    f64::from(w.priority) + minutes * aging_per_minute
}

/// The executions to start now, in order: for each queue, as many as `limit` leaves room for
/// beside the `running` ones.
pub fn admit(
    waiting: &[Waiting],
    running: &HashMap<String, usize>,
    limit: usize,
    aging_per_minute: f64,
    now: Millis,
) -> Vec<Uuid> {
    let mut by_queue: HashMap<&str, Vec<&Waiting>> = HashMap::new();
    for w in waiting {
        by_queue.entry(w.queue.as_str()).or_default().push(w);
    }
    let mut queues: Vec<&str> = by_queue.keys().copied().collect();
    queues.sort_unstable();
    let mut chosen = Vec::new();
    for queue in queues {
        let mut candidates = by_queue.remove(queue).unwrap_or_default();
        candidates.sort_by(|a, b| {
            effective_priority(b, aging_per_minute, now)
                .total_cmp(&effective_priority(a, aging_per_minute, now))
                .then(a.queued_at.cmp(&b.queued_at))
                .then(a.id.cmp(&b.id))
        });
        let room = limit.saturating_sub(running.get(queue).copied().unwrap_or(0));
        chosen.extend(candidates.into_iter().take(room).map(|w| w.id));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u128, queue: &str, priority: i16, queued_at: Millis) -> Waiting {
        Waiting { id: Uuid::from_u128(n), queue: queue.into(), priority, queued_at }
    }

    #[test]
    fn higher_priority_first_then_the_oldest_within_each_queues_room() {
        let waiting = [w(1, "q", 10, 0), w(2, "q", 90, 5), w(3, "q", 90, 1), w(4, "other", 1, 0)];
        let running = HashMap::from([("q".to_string(), 1)]);
        let chosen = admit(&waiting, &running, 3, 0.0, 10);
        assert_eq!(chosen, [Uuid::from_u128(4), Uuid::from_u128(3), Uuid::from_u128(2)]);
    }

    #[test]
    fn a_full_queue_starts_nothing() {
        let running = HashMap::from([("q".to_string(), 2)]);
        assert!(admit(&[w(1, "q", 50, 0)], &running, 2, 1.0, 0).is_empty());
    }

    #[test]
    fn a_low_priority_that_waited_long_enough_goes_ahead_of_a_new_high_one() {
        let old_low = w(1, "q", 10, 0);
        let new_high = w(2, "q", 50, 60 * 60_000);
        // After an hour at one point a minute, the low one is at 70.
        let chosen = admit(&[old_low, new_high], &HashMap::new(), 1, 1.0, 60 * 60_000);
        assert_eq!(chosen, [Uuid::from_u128(1)]);
        // Without aging it would wait behind every higher one.
        let chosen = admit(&[w(1, "q", 10, 0), w(2, "q", 50, 60 * 60_000)], &HashMap::new(), 1, 0.0, 60 * 60_000);
        assert_eq!(chosen, [Uuid::from_u128(2)]);
    }
}
