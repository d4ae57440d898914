//! A managed service's output as one log: the answers of the agents of its units (each replica,
//! on whichever node runs it) merged in time order, each line naming its unit and node.

use orch_protocol::agent::{LogLine, Logs};
use orch_protocol::lifecycle::{ServiceLogLine, ServiceLogs, UnitLogs};

/// What the agent of one unit answered.
#[derive(Debug, Clone)]
pub struct UnitAnswer {
    pub unit: String,
    pub node: Option<String>,
    /// `Err`: why it has no lines (its agent did not answer, or it was never placed).
    pub logs: Result<Logs, String>,
}

/// The last `limit` lines of all the units' answers, oldest first. Lines of the same time keep
/// the order of `answers` and, within a unit, the order of its file (the sort is stable). A line
/// that does not read as a log line (cut by a full disk) is left out: it has no time to sort by.
pub fn merge(service: &str, answers: Vec<UnitAnswer>, limit: usize) -> ServiceLogs {
    let mut lines = Vec::new();
    let mut units = Vec::new();
    for answer in answers {
        let node = answer.node.clone().unwrap_or_default();
        match answer.logs {
            Ok(logs) => {
                lines.extend(logs.lines.iter().filter_map(|raw| LogLine::parse(raw)).map(|l| ServiceLogLine {
                    time: l.time,
                    unit: answer.unit.clone(),
                    node: node.clone(),
                    stream: l.stream,
                    text: l.text,
                }));
                units.push(UnitLogs {
                    unit: answer.unit,
                    node: answer.node,
                    truncated: logs.truncated,
                    scanned_bytes: logs.scanned_bytes,
                    error: None,
                });
            }
            Err(error) => units.push(UnitLogs {
                unit: answer.unit,
                node: answer.node,
                truncated: false,
                scanned_bytes: 0,
                error: Some(error),
            }),
        }
    }
    lines.sort_by_key(|l| l.time);
    let skip = lines.len().saturating_sub(limit);
    lines.drain(..skip);
    let truncated = units.iter().any(|u| u.truncated || (u.error.is_some() && u.node.is_some()));
    ServiceLogs { service: service.to_string(), lines, units, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(unit: &str, node: &str, lines: &[&str]) -> UnitAnswer {
        UnitAnswer {
            unit: unit.into(),
            node: Some(node.into()),
            logs: Ok(Logs {
                service: unit.into(),
                lines: lines.iter().map(|l| l.to_string()).collect(),
                truncated: false,
                scanned_bytes: 10,
            }),
        }
    }

    #[test]
    fn replicas_merge_in_time_order_keeping_the_last_lines() {
        let merged = merge(
            "web",
            vec![
                answer("web-0", "n1", &["2026-01-01T00:00:01.000Z stdout a1", "2026-01-01T00:00:03.000Z stderr a3"]),
                answer(
                    "web-1",
                    "n2",
                    &["2026-01-01T00:00:02.000Z stdout b2", "garbage", "2026-01-01T00:00:03.000Z stdout b3"],
                ),
            ],
            3,
        );
        let got: Vec<(&str, &str, &str)> =
            merged.lines.iter().map(|l| (l.unit.as_str(), l.node.as_str(), l.text.as_str())).collect();
        assert_eq!(got, [("web-1", "n2", "b2"), ("web-0", "n1", "a3"), ("web-1", "n2", "b3")], "stable at equal times");
        assert!(!merged.truncated);
        assert_eq!(merged.units.len(), 2);
    }

    #[test]
    fn a_unit_whose_agent_is_away_is_named_and_marks_the_answer_incomplete() {
        let away = UnitAnswer { unit: "web-1".into(), node: Some("n2".into()), logs: Err("no agent".into()) };
        let merged = merge("web", vec![answer("web-0", "n1", &["2026-01-01T00:00:01.000Z stdout a"]), away], 10);
        assert_eq!(merged.lines.len(), 1);
        assert!(merged.truncated);
        assert_eq!(merged.units[1].error.as_deref(), Some("no agent"));
        let never_placed = UnitAnswer { unit: "web-2".into(), node: None, logs: Err("not placed".into()) };
        assert!(!merge("web", vec![never_placed], 10).truncated, "nothing was missed");
    }
}
