//! Following a managed service's output: the agents publish each unit's new lines on
//! `<prefix>.log.<node>.<unit>` (see `crate::agent::follow`); a follower subscribes to those of
//! the service's units on any node and keeps the lines its filter takes. The subscriptions end
//! with the stream: a follower that goes away leaves nothing subscribed.

use futures::{Stream, StreamExt};
use orch_protocol::Subjects;
use orch_protocol::agent::LogBatch;
use orch_protocol::lifecycle::ServiceLogLine;

use crate::agent::search::LogFilter;

/// The lines of `units` published from now on that `filter` keeps. Subscribed (and flushed, so
/// the server knows) before it returns: a line written after it is seen.
pub async fn follow(
    nats: &async_nats::Client,
    subjects: &Subjects,
    units: impl IntoIterator<Item = String>,
    filter: LogFilter,
) -> Result<impl Stream<Item = ServiceLogLine> + Send + 'static, async_nats::Error> {
    let mut subscriptions = Vec::new();
    for unit in units {
        subscriptions.push(nats.subscribe(subjects.logs_of(&unit)).await?);
    }
    nats.flush().await?;
    let lines = futures::stream::select_all(subscriptions).flat_map(move |message| {
        // A batch that does not read (not an agent's) is dropped, not the stream.
        let lines = lines_of(&message.payload, &filter);
        futures::stream::iter(lines)
    });
    Ok(lines)
}

/// The lines of a published batch that `filter` keeps, each naming its unit and node.
pub fn lines_of(payload: &[u8], filter: &LogFilter) -> Vec<ServiceLogLine> {
    let Ok(batch) = serde_json::from_slice::<LogBatch>(payload) else { return Vec::new() };
    batch
        .lines
        .into_iter()
        .filter(|line| filter.matches(line))
        .map(|line| ServiceLogLine {
            time: line.time,
            unit: batch.service.clone(),
            node: batch.node.clone(),
            stream: line.stream,
            text: line.text,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_filtered_and_each_line_names_its_unit_and_node() {
        let payload = br#"{"node": "n2", "service": "web-1", "lines": [
            {"time": "2026-01-01T00:00:01Z", "stream": "stdout", "text": "GET /"},
            {"time": "2026-01-01T00:00:02Z", "stream": "stderr", "text": "GET /boom"}]}"#;
        let filter = LogFilter::new(None, None, None, Some("boom"), None).unwrap();
        let lines = lines_of(payload, &filter);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].unit.as_str(), lines[0].node.as_str(), lines[0].text.as_str()),
            ("web-1", "n2", "GET /boom")
        );
        assert!(lines_of(b"not json", &LogFilter::everything()).is_empty());
    }
}
