//! `orchestrator logs SERVICE [-f]`: a managed service's output over the HTTP API, searched
//! (`GET /stack/services/{name}/logs`) and followed (`…/logs/follow`), one line each:
//! `<time> <unit>@<node> <stream> <text>`.

use std::collections::HashSet;

use futures::StreamExt;
use orch_client::stack::StackClient;
use orch_protocol::lifecycle::ServiceLogLine;

use crate::config::LogsArgs;

/// How a line is printed.
pub fn format_line(line: &ServiceLogLine) -> String {
    format!(
        "{} {}@{} {} {}",
        line.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        line.unit,
        line.node,
        line.stream.as_str(),
        line.text
    )
}

/// The query parameters of `args`: the filters, and for the search its bounds too.
fn query(args: &LogsArgs, search: bool) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if search {
        query.push(("limit", args.lines.to_string()));
        query.extend(args.since.clone().map(|v| ("since", v)));
        query.extend(args.until.clone().map(|v| ("until", v)));
    }
    query.extend(args.stream.clone().map(|v| ("stream", v)));
    query.extend(args.grep.clone().map(|v| ("q", v)));
    query.extend(args.regex.clone().map(|v| ("regex", v)));
    query
}

pub async fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let client = StackClient::new(&args.api.api_url, args.api.api_token.as_deref())?;
    // Following begins before the search, so no line falls between them; the lines both see are
    // printed once.
    let followed = if args.follow { Some(client.follow_logs(&args.service, &query(args, false)).await?) } else { None };
    let found = client.logs(&args.service, &query(args, true)).await?;
    for unit in found.units.iter().filter(|u| u.error.is_some()) {
        eprintln!("{}: {}", unit.unit, unit.error.as_deref().unwrap_or_default());
    }
    if found.units.iter().any(|u| u.truncated) {
        eprintln!("(the search stopped at its scan bound: older lines may match too)");
    }
    let printed: HashSet<String> = found.lines.iter().map(format_line).collect();
    for line in &found.lines {
        println!("{}", format_line(line));
    }
    let Some(followed) = followed else { return Ok(()) };
    let mut followed = std::pin::pin!(followed);
    while let Some(line) = followed.next().await {
        let line = format_line(&line?);
        if !printed.contains(&line) {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_unit_node_and_stream() {
        let line = ServiceLogLine {
            time: "2026-01-01T10:00:00.5Z".parse().unwrap(),
            unit: "web-1".into(),
            node: "n2".into(),
            stream: orch_protocol::agent::LogStream::Stderr,
            text: "boom".into(),
        };
        assert_eq!(format_line(&line), "2026-01-01T10:00:00.500Z web-1@n2 stderr boom");
    }
}
