//! Event triggers (`[[on_event]]`), the pure part: which events a trigger counts, and when its
//! count window fires. "A managed service crashed three times within 10 minutes" is a trigger on
//! `lifecycle.*.crashed` with `count = 3`, `within = "10m"` and `group_by = "event.subject"`
//! (one window per service). A window that reaches its count fires and starts empty again, so a
//! crash loop starts one execution per `count` crashes, not one per crash.
//!
//! Windows go by the events' own times, so reading the same events again (after a failover)
//! reaches the same decisions; the execution a firing starts has an id derived from the event
//! that completed the window, so the same firing is never started twice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::expr::{self, Expr, ExprError};
use super::machine::Millis;
use orch_protocol::health::duration;

fn one() -> u32 {
    1
}

/// `[[on_event]]` of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    /// The events' subject after `<prefix>.evt.`: `<domain>.<service>.<kind>`, with `*` for one
    /// token and a final `>` for the rest.
    pub subject: String,
    /// An expression over `event` (the CloudEvent) that an event must pass to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Events that fire it (1: each event).
    #[serde(default = "one")]
    pub count: u32,
    /// The window the `count` events must fall within (needed when `count` > 1).
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
    /// An expression over `event` whose value keys separate windows (e.g. `event.subject`: one
    /// window per service). Without it, one window counts every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// The inputs of the executions it starts; strings may hold `${{ … }}` over `event` (the
    /// event that completed the window), `trigger.count` and `trigger.group`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

/// The longest window a trigger may count over.
pub const MAX_WITHIN: Duration = Duration::from_secs(24 * 3600);
/// The most events a window may need.
pub const MAX_COUNT: u32 = 1000;

impl EventTrigger {
    /// Problems of the trigger, as (field, message); empty when it is valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let tokens: Vec<&str> = self.subject.split('.').collect();
        let token_ok = |(i, t): (usize, &&str)| {
            *t == "*"
                || (*t == ">" && i == tokens.len() - 1)
                || (!t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        };
        if tokens.iter().enumerate().any(|t| !token_ok(t)) {
            out.push((
                "subject",
                format!(
                    "{:?}: the subject after `<prefix>.evt.`, tokens of letters, digits, '-' or '_', `*`, or a final `>`",
                    self.subject
                ),
            ));
        }
        if self.count == 0 || self.count > MAX_COUNT {
            out.push(("count", format!("{} is not within 1-{MAX_COUNT}", self.count)));
        }
        match self.within {
            None if self.count > 1 => out.push(("within", "a count of more than 1 needs `within`".into())),
            Some(w) if w.is_zero() || w > MAX_WITHIN => out.push(("within", "more than 0 and at most 24h".into())),
            _ => {}
        }
        for (field, source) in [("filter", &self.filter), ("group_by", &self.group_by)] {
            if let Some(source) = source
                && let Err(e) = Expr::parse(source)
            {
                out.push((field, e.0));
            }
        }
        for value in self.inputs.values() {
            out.extend(expr::template_problems(value).into_iter().map(|m| ("inputs", m)));
        }
        out
    }

    /// Whether an event on `subject` (after `<prefix>.evt.`) is of this trigger.
    pub fn covers(&self, subject: &str) -> bool {
        crate::registry::check_targets::subject_matches(&self.subject, subject)
    }

    /// The window `event` counts in, or `None` when it does not pass the filter. An event the
    /// filter or the grouping cannot read (a field it names is missing) does not count.
    pub fn classify(&self, event: &Value) -> Option<String> {
        let scope = serde_json::json!({ "event": event });
        if let Some(filter) = &self.filter {
            let passes = Expr::parse(filter).and_then(|f| f.eval_bool(&scope)).unwrap_or(false);
            if !passes {
                return None;
            }
        }
        match &self.group_by {
            None => Some(String::new()),
            Some(source) => match Expr::parse(source).and_then(|e| e.eval(&scope)).ok()? {
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            },
        }
    }

    /// Counts an event at `at` in `window` (the times of the events counted so far, oldest
    /// first); true when the window fires, which empties it.
    pub fn observe(&self, window: &mut Vec<Millis>, at: Millis) -> bool {
        if let Some(within) = self.within {
            let since = at - within.as_millis() as Millis;
            window.retain(|t| *t > since);
        }
        window.push(at);
        if window.len() as u32 >= self.count.max(1) {
            window.clear();
            return true;
        }
        false
    }

    /// The inputs of a firing: `inputs` rendered over the event that completed the window.
    pub fn render_inputs(&self, event: &Value, count: u32, group: &str) -> Result<Value, ExprError> {
        let scope = serde_json::json!({ "event": event, "trigger": { "count": count, "group": group } });
        expr::render(&serde_json::to_value(&self.inputs).unwrap_or_default(), &scope)
    }
}

/// The id of the execution that trigger `index` of `workflow` starts for the event `event_id`:
/// the same whenever that event is read again.
pub fn execution_id(workflow: &str, index: usize, event_id: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("orch-workflow-event:{workflow}:{index}:{event_id}").as_bytes())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crashes(count: u32, within: &str) -> EventTrigger {
        EventTrigger {
            subject: "lifecycle.*.crashed".into(),
            filter: None,
            count,
            within: Some(humantime::parse_duration(within).unwrap()),
            group_by: Some("event.subject".into()),
            inputs: BTreeMap::from([("service".to_string(), json!("${{ event.subject }}"))]),
        }
    }

    #[test]
    fn three_crashes_within_the_window_fire_once_and_start_it_empty() {
        let trigger = crashes(3, "10m");
        let mut window = Vec::new();
        let minute = 60_000;
        assert!(!trigger.observe(&mut window, 0));
        assert!(!trigger.observe(&mut window, minute));
        assert!(trigger.observe(&mut window, 2 * minute), "the third within 10 minutes fires");
        assert!(window.is_empty());
        assert!(!trigger.observe(&mut window, 3 * minute), "a fourth starts a new count");
        assert!(!trigger.observe(&mut window, 4 * minute));
        assert!(trigger.observe(&mut window, 5 * minute));
    }

    #[test]
    fn events_older_than_the_window_no_longer_count() {
        let trigger = crashes(3, "10m");
        let mut window = Vec::new();
        let minute = 60_000;
        trigger.observe(&mut window, 0);
        trigger.observe(&mut window, 9 * minute);
        assert!(!trigger.observe(&mut window, 11 * minute), "the first is 11 minutes old: two in the window");
        assert_eq!(window, [9 * minute, 11 * minute]);
        assert!(trigger.observe(&mut window, 12 * minute));
    }

    #[test]
    fn a_count_of_one_fires_on_every_event() {
        let trigger = EventTrigger { count: 1, within: None, group_by: None, ..crashes(1, "1s") };
        let mut window = Vec::new();
        assert!(trigger.observe(&mut window, 5));
        assert!(trigger.observe(&mut window, 5));
    }

    #[test]
    fn the_filter_and_the_grouping_read_the_event() {
        let trigger = EventTrigger { filter: Some("event.data.exit_code != 0".into()), ..crashes(2, "1m") };
        let crashed = json!({ "subject": "web", "data": { "exit_code": 3 } });
        assert_eq!(trigger.classify(&crashed).as_deref(), Some("web"));
        assert_eq!(trigger.classify(&json!({ "subject": "web", "data": { "exit_code": 0 } })), None);
        assert_eq!(trigger.classify(&json!({ "subject": "web", "data": {} })), None, "unreadable: not counted");
        assert!(trigger.covers("lifecycle.web.crashed"));
        assert!(!trigger.covers("lifecycle.web.ready"));
        assert_eq!(trigger.render_inputs(&crashed, 2, "web").unwrap(), json!({ "service": "web" }));
    }

    #[test]
    fn bad_triggers_name_their_field() {
        let fields = |t: EventTrigger| t.problems().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert!(fields(crashes(3, "10m")).is_empty());
        assert_eq!(fields(EventTrigger { within: None, ..crashes(3, "1m") }), ["within"]);
        assert_eq!(fields(EventTrigger { count: 0, ..crashes(3, "1m") }), ["count"]);
        assert_eq!(fields(EventTrigger { subject: "a.>.b".into(), ..crashes(3, "1m") }), ["subject"]);
        assert_eq!(fields(EventTrigger { filter: Some("a ==".into()), ..crashes(3, "1m") }), ["filter"]);
        assert_eq!(fields(crashes(3, "2d")), ["within"]);
    }

    #[test]
    fn a_firing_has_the_same_id_whenever_its_event_is_read() {
        assert_eq!(execution_id("fix", 0, "e-1"), execution_id("fix", 0, "e-1"));
        assert_ne!(execution_id("fix", 0, "e-1"), execution_id("fix", 1, "e-1"));
        assert_ne!(execution_id("fix", 0, "e-1"), execution_id("fix", 0, "e-2"));
    }
}
