//! The event triggers' listener: on the leader, it reads the events stream in order from where
//! the triggers last stopped, counts each event that a trigger covers in that trigger's window
//! ([`super::trigger`], pure), and starts an execution when a window fires.
//!
//! For an event that counts, the execution (when the window fires) is stored first, with an id
//! derived from the event; then the window and the stream position, in one fenced transaction.
//! A crash between the two reads the event again and finds its execution there already: each
//! firing starts once. Events that no trigger counts only move the position, every
//! [`POSITION_EVERY`] or so (reading them again changes nothing).
//!
//! While no workflow has a trigger, nothing is read; when the first one ever appears, reading
//! starts at the end of the stream. A trigger counts only the events published after its
//! version was stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use orch_protocol::Subjects;
use serde_json::Value;

use super::api::{self, Start};
use super::executor::Workflows;
use super::machine::Millis;
use super::trigger::{self, EventTrigger};
use crate::shutdown::Shutdown;
use crate::storage::workflows;

/// How often the position is stored while events pass that no trigger counts.
const POSITION_EVERY: Duration = Duration::from_secs(2);
/// How long to wait before trying again when PostgreSQL or NATS does not answer.
const RETRY: Duration = Duration::from_secs(1);

/// A trigger of a workflow's latest version.
struct Trigger {
    workflow: String,
    index: i32,
    spec: EventTrigger,
    /// When its version was stored (ms): it counts the events published since.
    since: Millis,
}

pub async fn run(
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    subjects: Subjects,
    executor: Workflows,
    shutdown: Shutdown,
) {
    let mut listener = Listener { pool, nats, subjects, executor, windows: HashMap::new() };
    listener.run(shutdown).await;
}

struct Listener {
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    subjects: Subjects,
    executor: Workflows,
    /// Windows read or written by this leader, by (workflow, trigger index, group).
    windows: HashMap<(String, i32, String), Vec<Millis>>,
}

/// Why reading stopped.
enum Stop {
    Shutdown,
    /// Definitions changed: read the triggers again.
    Changed,
    /// NATS or PostgreSQL failed: start again after a pause.
    Failed(String),
}

impl Listener {
    async fn run(&mut self, mut shutdown: Shutdown) {
        let mut changed = self.executor.watch_definitions();
        loop {
            changed.mark_unchanged();
            let triggers = match self.triggers().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "the workflows' event triggers cannot be read; trying again");
                    tokio::select! {
                        _ = shutdown.requested() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            };
            // Windows of a replaced definition start empty (storage deleted them).
            self.windows.clear();
            let stop = if triggers.is_empty() {
                tokio::select! {
                    _ = shutdown.requested() => Stop::Shutdown,
                    _ = changed.changed() => Stop::Changed,
                }
            } else {
                tokio::select! {
                    _ = shutdown.requested() => Stop::Shutdown,
                    _ = changed.changed() => Stop::Changed,
                    stop = self.read(&triggers) => stop,
                }
            };
            match stop {
                Stop::Shutdown => return,
                Stop::Changed => {}
                Stop::Failed(e) => {
                    tracing::warn!(error = %e, "reading events for the workflows' triggers failed; starting again");
                    tokio::select! {
                        _ = shutdown.requested() => return,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }

    async fn triggers(&self) -> Result<Vec<Trigger>, crate::storage::StorageError> {
        let mut out = Vec::new();
        for row in workflows::event_triggers(&self.pool).await? {
            match serde_json::from_value::<EventTrigger>(row.spec.0) {
                Ok(spec) => out.push(Trigger {
                    workflow: row.workflow,
                    index: row.idx,
                    spec,
                    since: row.since.timestamp_millis(),
                }),
                Err(e) => {
                    tracing::error!(workflow = %row.workflow, trigger = row.idx, error = %e, "a stored event trigger cannot be read")
                }
            }
        }
        Ok(out)
    }

    /// Reads the events from the stored position on, until something fails.
    async fn read(&mut self, triggers: &[Trigger]) -> Stop {
        let js = async_nats::jetstream::new(self.nats.clone());
        let stream = match js.get_stream(self.subjects.events_stream()).await {
            Ok(s) => s,
            Err(e) => return Stop::Failed(format!("the events stream: {e}")),
        };
        let position = match workflows::event_position(&self.pool).await {
            Ok(Some(seq)) => seq as u64,
            Ok(None) => {
                // The first trigger ever: count from now on.
                let mut stream = stream.clone();
                let last = match stream.info().await {
                    Ok(info) => info.state.last_sequence,
                    Err(e) => return Stop::Failed(format!("the events stream: {e}")),
                };
                if let Err(e) = workflows::set_event_position(&self.pool, last as i64).await {
                    return Stop::Failed(e.to_string());
                }
                last
            }
            Err(e) => return Stop::Failed(e.to_string()),
        };
        let consumer = match stream
            .create_consumer(OrderedConfig {
                filter_subject: self.subjects.events_all(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: position + 1 },
                ..Default::default()
            })
            .await
        {
            Ok(c) => c,
            Err(e) => return Stop::Failed(format!("a consumer of the events stream: {e}")),
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => return Stop::Failed(format!("reading the events stream: {e}")),
        };
        let prefix = format!("{}.evt.", self.subjects.prefix());
        let (mut unsaved, mut saved_at) = (None::<u64>, Instant::now());
        loop {
            let next = tokio::time::timeout(POSITION_EVERY, messages.next()).await;
            let message = match next {
                Err(_) => None,
                Ok(None) => return Stop::Failed("the events stream ended".into()),
                Ok(Some(Err(e))) => return Stop::Failed(format!("reading the events stream: {e}")),
                Ok(Some(Ok(m))) => Some(m),
            };
            if let Some(message) = message {
                let seq = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(e) => return Stop::Failed(format!("an event without its stream position: {e}")),
                };
                let subject = message.subject.as_str().strip_prefix(&prefix).unwrap_or_default();
                let covering: Vec<&Trigger> = triggers.iter().filter(|t| t.spec.covers(subject)).collect();
                if covering.is_empty() {
                    unsaved = Some(seq);
                } else {
                    let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                        unsaved = Some(seq);
                        continue;
                    };
                    for trigger in covering {
                        if let Err(e) = self.count(trigger, &event, seq).await {
                            return Stop::Failed(e);
                        }
                    }
                    unsaved = None;
                    saved_at = Instant::now();
                }
            }
            if let Some(seq) = unsaved
                && saved_at.elapsed() >= POSITION_EVERY
            {
                if let Err(e) = workflows::set_event_position(&self.pool, seq as i64).await {
                    return Stop::Failed(e.to_string());
                }
                (unsaved, saved_at) = (None, Instant::now());
            }
        }
    }

    /// Counts `event` (at stream position `seq`) for `trigger`; starts its execution when the
    /// window fires. An error leaves the event to be read again.
    async fn count(&mut self, trigger: &Trigger, event: &Value, seq: u64) -> Result<(), String> {
        let at = event
            .get("time")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(|| chrono::Utc::now().timestamp_millis(), |t| t.timestamp_millis());
        let group = if at < trigger.since { None } else { trigger.spec.classify(event) };
        let Some(group) = group else {
            return workflows::set_event_position(&self.pool, seq as i64).await.map_err(|e| e.to_string());
        };
        let key = (trigger.workflow.clone(), trigger.index, group.clone());
        let mut window = match self.windows.get(&key) {
            Some(w) => w.clone(),
            None => workflows::event_window(&self.pool, &trigger.workflow, trigger.index, &group)
                .await
                .map_err(|e| e.to_string())?,
        };
        let counted = window.len() as u32 + 1;
        if trigger.spec.observe(&mut window, at) {
            self.fire(trigger, event, counted, &group).await?;
        }
        workflows::count_event(&self.pool, &trigger.workflow, trigger.index, &group, &window, seq as i64)
            .await
            .map_err(|e| e.to_string())?;
        self.windows.insert(key, window);
        Ok(())
    }

    /// Starts the execution of a firing (once: its id comes from the event).
    async fn fire(&self, trigger: &Trigger, event: &Value, count: u32, group: &str) -> Result<(), String> {
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or_default();
        let inputs = match trigger.spec.render_inputs(event, count, group) {
            Ok(inputs) => inputs,
            Err(e) => {
                tracing::warn!(workflow = %trigger.workflow, trigger = trigger.index, event = event_id, error = %e, "an event trigger's inputs cannot be rendered; the firing is dropped");
                return Ok(());
            }
        };
        let start = Start {
            id: trigger::execution_id(&trigger.workflow, trigger.index as usize, event_id),
            by: format!("event:{event_id}"),
            trigger: format!("event:{}", trigger.index),
            depth: 0,
        };
        let id = start.id;
        match api::queue(&self.pool, &self.executor, &trigger.workflow, Some(inputs), start).await {
            Ok(_) => {
                tracing::info!(workflow = %trigger.workflow, trigger = trigger.index, event = event_id, execution = %id, "an event trigger fired");
                Ok(())
            }
            Err(e) if e.0.code.status() < 500 => {
                tracing::warn!(workflow = %trigger.workflow, trigger = trigger.index, event = event_id, error = %e.0.message, "an event trigger's execution was refused; the firing is dropped");
                Ok(())
            }
            Err(e) => Err(e.0.message),
        }
    }
}
