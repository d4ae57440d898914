//! Cron schedules of a workflow (`[[schedule]]`): the pattern (seconds optional) in a time zone,
//! what to do when a firing comes while the last one still runs (`overlap`), and what to do with
//! firings missed while no leader ran (`catch_up`). Which firings are due is decided here, pure;
//! the scheduler ([`super::scheduler`]) commits them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::CronParser;
use orch_protocol::health::duration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most missed firings looked at after a downtime (older ones are dropped).
pub const MAX_CATCH_UP: usize = 1000;

/// A firing due while an execution of the same schedule still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start it anyway.
    Allow,
    /// Do not start it (the default, as a crontab line that checks a lock would).
    #[default]
    Skip,
    /// Cancel the running one, then start it.
    Replace,
    /// Start it once the running one ends: the schedule's executions run one at a time, in the
    /// order of their firings.
    Queue,
}

/// Firings missed while no leader ran (a firing more than `tolerance` late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Drop them; the schedule goes on from now.
    Skip,
    /// Run the latest of them once (the default).
    #[default]
    Once,
    /// Run every one of them that is within `catch_up_within` of now, in order.
    All,
}

fn utc() -> String {
    "UTC".into()
}
fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// `[[schedule]]` of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A cron pattern: 5 fields, or 6 with seconds first (`*/10 * * * * *`).
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`); the pattern is read in it.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// With `catch_up = "all"`: how far back missed firings are still run.
    #[serde(default = "hour", with = "duration")]
    pub catch_up_within: Duration,
    /// The inputs of the executions it starts.
    #[serde(default)]
    pub inputs: BTreeMap<String, serde_json::Value>,
}

/// A schedule ready to compute firings.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses the pattern and the time zone; the error says which is wrong.
    pub fn new(spec: ScheduleSpec) -> Result<Schedule, (&'static str, String)> {
        let cron = CronParser::new()
            .parse(&spec.cron)
            .map_err(|e| ("cron", format!("{:?} is not a cron pattern: {e}", spec.cron)))?;
        let tz: Tz = spec.timezone.parse().map_err(|_| {
            ("timezone", format!("{:?} is not a time zone name such as \"Europe/Berlin\"", spec.timezone))
        })?;
        Ok(Schedule { spec, cron, tz })
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after.with_timezone(&self.tz), false).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// What a scheduler does with a schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The firing times to start executions for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Firing times dropped (missed, by the catch-up policy).
    pub dropped: usize,
    /// The schedule's next firing after `now`.
    pub next: Option<DateTime<Utc>>,
}

/// The firings of `schedule` due at `now`, its next one being `next_fire_at`. A firing at most
/// `tolerance` late is on time; later ones were missed and follow the catch-up policy.
pub fn due(schedule: &Schedule, next_fire_at: DateTime<Utc>, now: DateTime<Utc>, tolerance: Duration) -> Due {
    let mut times = Vec::new();
    let mut at = Some(next_fire_at);
    while let Some(t) = at {
        if t > now || times.len() >= MAX_CATCH_UP {
            break;
        }
        times.push(t);
        at = schedule.next_after(t);
    }
    let next =
        if times.len() >= MAX_CATCH_UP { schedule.next_after(now) } else { at.or_else(|| schedule.next_after(now)) };
    let late = |t: &DateTime<Utc>| (now - *t).to_std().unwrap_or_default();
    let (on_time, missed): (Vec<_>, Vec<_>) = times.into_iter().partition(|t| late(t) <= tolerance);
    let kept_missed: Vec<DateTime<Utc>> = match schedule.spec.catch_up {
        CatchUp::Skip => Vec::new(),
        // The latest missed one, unless one on time runs anyway.
        CatchUp::Once => {
            if on_time.is_empty() {
                missed.last().copied().into_iter().collect()
            } else {
                Vec::new()
            }
        }
        CatchUp::All => missed.iter().copied().filter(|t| late(t) <= schedule.spec.catch_up_within).collect(),
    };
    let dropped = missed.len() - kept_missed.len();
    let mut fire = kept_missed;
    fire.extend(on_time);
    Due { fire, dropped, next }
}

/// The id of the execution a firing starts: the same for the same workflow, schedule and time,
/// so a firing committed twice (it cannot be, under the fence) would still start one execution.
pub fn execution_id(workflow: &str, schedule: usize, fire_at: DateTime<Utc>) -> Uuid {
    let name = format!("{workflow}:cron:{schedule}:{}", fire_at.timestamp_millis());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn schedule(cron: &str, catch_up: CatchUp) -> Schedule {
        Schedule::new(ScheduleSpec {
            cron: cron.into(),
            timezone: "UTC".into(),
            overlap: Overlap::Skip,
            catch_up,
            catch_up_within: Duration::from_secs(3600),
            inputs: BTreeMap::new(),
        })
        .unwrap()
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, s).unwrap()
    }

    const TOLERANCE: Duration = Duration::from_secs(5);

    #[test]
    fn patterns_with_and_without_seconds_and_time_zones() {
        let every_ten_seconds = schedule("*/10 * * * * *", CatchUp::Once);
        assert_eq!(every_ten_seconds.next_after(t(10, 0, 3)), Some(t(10, 0, 10)));
        let hourly = schedule("0 * * * *", CatchUp::Once);
        assert_eq!(hourly.next_after(t(10, 0, 3)), Some(t(11, 0, 0)));
        let berlin = Schedule::new(ScheduleSpec { timezone: "Europe/Berlin".into(), ..hourly.spec.clone() }).unwrap();
        let nine_in_berlin = Schedule::new(ScheduleSpec { cron: "0 9 * * *".into(), ..berlin.spec.clone() }).unwrap();
        // 09:00 in Berlin in December is 08:00 UTC.
        assert_eq!(nine_in_berlin.next_after(t(0, 0, 0)), Some(t(8, 0, 0)));
        assert_eq!(
            Schedule::new(ScheduleSpec { cron: "61 * * * *".into(), ..hourly.spec.clone() }).unwrap_err().0,
            "cron"
        );
        assert_eq!(
            Schedule::new(ScheduleSpec { timezone: "Mars/Olympus".into(), ..hourly.spec }).unwrap_err().0,
            "timezone"
        );
    }

    #[test]
    fn a_firing_on_time_runs_once_and_the_next_follows() {
        let s = schedule("* * * * * *", CatchUp::Once);
        let due = due(&s, t(10, 0, 1), t(10, 0, 1), TOLERANCE);
        assert_eq!(due.fire, [t(10, 0, 1)]);
        assert_eq!(due.next, Some(t(10, 0, 2)));
        let early = super::due(&s, t(10, 0, 2), t(10, 0, 1), TOLERANCE);
        assert!(early.fire.is_empty(), "nothing before its time");
        assert_eq!(early.next, Some(t(10, 0, 2)));
    }

    #[test]
    fn a_short_delay_loses_no_firing() {
        // The scheduler looked 3 s late (under the tolerance): each second runs, none twice.
        let s = schedule("* * * * * *", CatchUp::Skip);
        let due = due(&s, t(10, 0, 1), t(10, 0, 4), TOLERANCE);
        assert_eq!(due.fire, [t(10, 0, 1), t(10, 0, 2), t(10, 0, 3), t(10, 0, 4)]);
        assert_eq!((due.dropped, due.next), (0, Some(t(10, 0, 5))));
    }

    #[test]
    fn missed_firings_follow_the_catch_up_policy() {
        // Down from 10:00 to 10:05: the minutely firings of 10:01-10:05 were missed.
        let (next, now) = (t(10, 1, 0), t(10, 5, 30));
        let skip = due(&schedule("* * * * *", CatchUp::Skip), next, now, TOLERANCE);
        assert_eq!((skip.fire.len(), skip.dropped, skip.next), (0, 5, Some(t(10, 6, 0))));
        let once = due(&schedule("* * * * *", CatchUp::Once), next, now, TOLERANCE);
        assert_eq!((once.fire, once.dropped), (vec![t(10, 5, 0)], 4));
        let all = due(&schedule("* * * * *", CatchUp::All), next, now, TOLERANCE);
        assert_eq!(all.fire, [t(10, 1, 0), t(10, 2, 0), t(10, 3, 0), t(10, 4, 0), t(10, 5, 0)]);
        let mut within = schedule("* * * * *", CatchUp::All);
        within.spec.catch_up_within = Duration::from_secs(150);
        let recent = due(&within, next, now, TOLERANCE);
        assert_eq!((recent.fire, recent.dropped), (vec![t(10, 3, 0), t(10, 4, 0), t(10, 5, 0)], 2));
    }

    #[test]
    fn a_firing_has_one_execution_id() {
        assert_eq!(execution_id("w", 0, t(10, 0, 0)), execution_id("w", 0, t(10, 0, 0)));
        assert_ne!(execution_id("w", 0, t(10, 0, 0)), execution_id("w", 0, t(10, 0, 1)));
        assert_ne!(execution_id("w", 0, t(10, 0, 0)), execution_id("w", 1, t(10, 0, 0)));
    }
}
