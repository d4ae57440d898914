//! `orchestrator events`: prints events from the events stream as they arrive, one JSON document
//! per line, through an ephemeral ordered consumer (nothing is acknowledged or changed).

use std::io::Write;
use std::time::Duration;

use orch_client::{Client, ConnectSettings, SubscribeOptions};

use crate::config::EventsArgs;

/// Events taken from the subscription at a time.
const BATCH: usize = 512;

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let mut settings = ConnectSettings::new(args.nats_url.as_str());
    settings.prefix = args.subject_prefix.clone();
    settings.name = Some("orchestrator events".into());
    let client = Client::connect(settings).await?;
    let deliver = if args.all { "all" } else { "new" };
    let options = SubscribeOptions::new(
        client.subjects(),
        args.filter,
        None,
        None,
        deliver,
        false,
        Duration::from_secs(30),
        BATCH,
    )?;
    let events = orch_client::events::open(&client, options).await?;
    eprintln!(
        "following {} on {} ({}); Ctrl-C stops",
        events.filter(),
        events.stream(),
        if args.all { "from the first event" } else { "new events only" }
    );
    let mut out = std::io::stdout();
    loop {
        let batch = match events.next(BATCH).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(()),
            // A message that is no CloudEvent is named and skipped; the stream goes on.
            Err(orch_client::Error::Invalid(problem)) => {
                eprintln!("skipped: {}", problem.message);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for event in batch {
            // A closed pipe (`orchestrator events | head`) ends the command quietly.
            if out.write_all(event.payload()).and_then(|()| out.write_all(b"\n")).is_err() {
                return Ok(());
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
    }
}
