//! The durable command consumer. Pulls batches from the commands stream, submits them to the
//! registry writer, and acknowledges each message only after its outcome is committed in
//! PostgreSQL. A crash before the ack means a redelivery, which the processed-command ledger
//! answers without applying twice.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use orch_protocol::{Subjects, headers};
use tokio::sync::mpsc;

use super::{StreamPosition, decode_command, reply_message};
use crate::registry::Registry;
use crate::registry::writer::Pending;
use crate::shutdown::Shutdown;

pub struct CommandConsumer {
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub registry: Arc<Registry>,
    pub batch_max: usize,
    pub command_max_bytes: usize,
}

/// While a batch waits for storage, tell JetStream we are still working on it so it is not
/// redelivered (which would be harmless, but wasteful).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Pulled batches submitted and not yet acknowledged. Batches are whatever the pull had ready,
/// often a handful of messages, so this must be deep enough to keep a full writer batch queued;
/// the writer's own queue bounds the commands held in memory.
const ACKER_QUEUE: usize = 4096;

impl CommandConsumer {
    pub async fn run(self, mut shutdown: Shutdown) {
        let (acker, submitted) = mpsc::channel(ACKER_QUEUE);
        let acker_task = tokio::spawn(acknowledge(self.js.client(), submitted));
        let stream = self.subjects.commands_stream();
        let name = self.subjects.commands_consumer();
        let mut delay = Duration::from_millis(200);
        'reconnect: while !shutdown.is_requested() {
            let (consumer, stream_epoch) = match self.attach(&stream, &name).await {
                Ok(attached) => attached,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "commands consumer unavailable");
                    tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = shutdown.requested() => break }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.batch_max.max(1))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull commands; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            delay = Duration::from_millis(200);
            tracing::info!(stream = %stream, consumer = %name, "consuming commands");
            loop {
                let first = tokio::select! {
                    m = messages.next() => m,
                    _ = shutdown.requested() => break 'reconnect,
                };
                let mut batch = match first {
                    Some(Ok(m)) => vec![m],
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "commands pull interrupted; reconnecting");
                        continue 'reconnect;
                    }
                    None => continue 'reconnect,
                };
                while batch.len() < self.batch_max {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                self.submit(batch, stream_epoch, &acker).await;
            }
        }
        drop(acker);
        let _ = acker_task.await;
        tracing::info!("commands consumer stopped");
    }

    /// Recreates the durable consumer and returns it. On a work-queue stream the messages stay until
    /// acknowledged, so a fresh consumer delivers every unacknowledged command again, oldest
    /// first. Without this, commands delivered to a crashed process would only come back after
    /// the ack wait, behind newer ones, and be applied out of order.
    /// Also returns the stream's creation time, part of the ids of commands without a `Nats-Msg-Id`.
    async fn attach(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<(jetstream::consumer::PullConsumer, i128), anyhow::Error> {
        let stream_epoch = self.js.get_stream(stream).await?.cached_info().created.unix_timestamp_nanos();
        match self.js.delete_consumer_from_stream(name, stream).await {
            Ok(_) => {}
            Err(e)
                if matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {}
            Err(e) => return Err(e.into()),
        }
        let consumer = self.js.create_consumer_on_stream(crate::nats::desired_consumer(&self.subjects), stream).await?;
        Ok((consumer, stream_epoch))
    }

    /// Decodes a pulled batch and queues it for the writer; the acker answers it after commit.
    async fn submit(&self, batch: Vec<jetstream::Message>, stream_epoch: i128, acker: &mpsc::Sender<Submitted>) {
        let submissions = batch
            .iter()
            .map(|m| {
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                let position = StreamPosition { stream_epoch, seq };
                decode_command(
                    &self.subjects,
                    &m.subject,
                    m.headers.as_ref(),
                    &m.payload,
                    position,
                    self.command_max_bytes,
                )
            })
            .collect();
        let pending = self.registry.writer.enqueue_many(submissions).await;
        let _ = acker.send(Submitted { batch, pending }).await;
    }
}

/// A batch handed to the writer, waiting for its outcomes.
struct Submitted {
    batch: Vec<jetstream::Message>,
    pending: Vec<Pending>,
}

/// Acknowledges batches in the order they were submitted, each message only after its command
/// committed, and publishes outcomes to `Orch-Reply-To` subjects. Runs beside the puller so the
/// writer always has the next batch queued while one commits.
async fn acknowledge(client: async_nats::Client, mut submitted: mpsc::Receiver<Submitted>) {
    while let Some(Submitted { batch, pending }) = submitted.recv().await {
        let outcomes = {
            let wait = futures::future::join_all(pending.into_iter().map(Pending::outcome));
            tokio::pin!(wait);
            let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
            loop {
                tokio::select! {
                    outcomes = &mut wait => break outcomes,
                    _ = progress.tick() => {
                        for m in &batch {
                            let _ = m.ack_with(AckKind::Progress).await;
                        }
                    }
                }
            }
        };
        for (message, outcome) in batch.iter().zip(outcomes.iter().map(Some).chain(std::iter::repeat(None))) {
            match outcome {
                Some(Ok(outcome)) => {
                    if let Some(reply_to) = message.headers.as_ref().and_then(|h| h.get(headers::REPLY_TO)) {
                        let (headers, body) = reply_message(outcome);
                        if let Err(e) = client.publish_with_headers(reply_to.as_str().to_string(), headers, body).await
                        {
                            tracing::debug!(error = %e, "could not publish a command outcome");
                        }
                    }
                    if let Err(e) = message.ack().await {
                        // The command is committed; a lost ack only causes a redelivery that the
                        // ledger answers.
                        tracing::debug!(error = %e, "ack failed; the command will be redelivered and deduplicated");
                    }
                }
                // Not committed (shutting down): leave it for redelivery.
                Some(Err(_)) | None => {
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
            }
        }
    }
}
