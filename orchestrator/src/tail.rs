//! `orchestrator events`: prints events from the events stream as they arrive, one JSON document
//! per line, through an ephemeral ordered consumer (nothing is acknowledged or changed).

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use orch_protocol::Subjects;

use crate::config::EventsArgs;

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let subjects = Subjects::new(&args.subject_prefix)?;
    let client = async_nats::connect(args.nats_url.as_str()).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(subjects.events_stream()).await?;
    let filter = args.filter.unwrap_or_else(|| subjects.events_all());
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: if args.all { DeliverPolicy::All } else { DeliverPolicy::New },
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "following {} on {} ({}); Ctrl-C stops",
        filter,
        subjects.events_stream(),
        if args.all { "from the first event" } else { "new events only" }
    );
    let mut messages = consumer.messages().await?;
    let mut out = std::io::stdout();
    while let Some(message) = messages.next().await {
        let message = message?;
        use std::io::Write;
        // A closed pipe (`orchestrator events | head`) ends the command quietly.
        if writeln!(out, "{}", String::from_utf8_lossy(&message.payload)).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}
