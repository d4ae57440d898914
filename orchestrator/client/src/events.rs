//! Events from `<PREFIX>_EVENTS` (protocol.md §6): the consumers that fetch them (ordered and
//! ephemeral, or durable with explicit acknowledgements), the parsed CloudEvent envelope, and
//! [`Subscription`], which hands them over in batches.
//!
//! A pump task per subscription receives messages, parses each CloudEvent envelope, and sends
//! batches over a bounded channel; the taker reads them from a local queue without a task hop
//! until the queue is used up. An event's `data` stays JSON text until the taker reads it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::pull::{self, MessagesError, MessagesErrorKind, OrderedError};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use orch_protocol::subjects::Subjects;
use orch_protocol::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{Acker, Client};
use crate::error::{Error, Result};

/// Batches the pump may have in flight per subscription (each up to `batch` events).
const CHANNEL_BATCHES: usize = 8;
/// Most events a durable consumer has delivered and not yet acknowledged.
const MAX_ACK_PENDING: i64 = 8192;
/// Consecutive consumer errors (without a message in between) after which a stream gives up.
const MAX_CONSECUTIVE_ERRORS: usize = 20;

/// What `Connection.subscribe` asked for, checked.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub filter: String,
    pub durable: Option<String>,
    pub deliver: DeliverPolicy,
    pub auto_ack: bool,
    pub ack_wait: Duration,
    pub batch: usize,
}

impl SubscribeOptions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        subjects: &Subjects,
        subject: Option<String>,
        durable: Option<String>,
        start_time_ns: Option<i128>,
        deliver: &str,
        auto_ack: bool,
        ack_wait: Duration,
        batch: usize,
    ) -> Result<SubscribeOptions> {
        let filter = subject.unwrap_or_else(|| subjects.events_all());
        check_filter(subjects, &filter)?;
        if let Some(name) = &durable {
            check_durable_name(name)?;
        }
        let deliver = match (start_time_ns, deliver) {
            (Some(ns), _) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(ns)
                    .map_err(|e| Error::invalid("start_time", format!("out of range: {e}")))?,
            },
            (None, "new") => DeliverPolicy::New,
            (None, "all") => DeliverPolicy::All,
            (None, other) => {
                return Err(Error::invalid("deliver", format!("must be \"new\" or \"all\" (got {other:?})")));
            }
        };
        if auto_ack && durable.is_none() {
            return Err(Error::invalid("auto_ack", "only durable streams are acknowledged; give durable=NAME"));
        }
        if !(1..=10_000).contains(&batch) {
            return Err(Error::invalid("batch", format!("must be 1-10000 (got {batch})")));
        }
        Ok(SubscribeOptions { filter, durable, deliver, auto_ack, ack_wait, batch })
    }
}

/// A filter must lie within `<prefix>.evt.>`, the subjects of the events stream.
fn check_filter(subjects: &Subjects, filter: &str) -> Result<()> {
    let events = format!("{}.evt.", subjects.prefix());
    let Some(rest) = filter.strip_prefix(&events) else {
        return Err(Error::invalid(
            "subject",
            format!("{filter:?} is not an events subject; use {} or a subject under it", subjects.events_all()),
        ));
    };
    let tokens: Vec<&str> = rest.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        let bad = token.is_empty()
            || token.chars().any(char::is_whitespace)
            || (token.contains('>') && (*token != ">" || i + 1 != tokens.len()))
            || (token.contains('*') && *token != "*");
        if bad {
            return Err(Error::invalid(
                "subject",
                format!(
                    "{filter:?} is not a valid subject filter (token {token:?}); e.g. {}.evt.health.>",
                    subjects.prefix()
                ),
            ));
        }
    }
    Ok(())
}

/// JetStream consumer names: no `.`, `*`, `>`, white space or path separators.
fn check_durable_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("durable", format!("{name:?} must be 1-200 characters of letters, digits, '-' or '_'")))
    }
}

/// Where to send the acknowledgement of a durable event.
#[derive(Clone)]
pub struct Ackable {
    reply: Subject,
    acker: Acker,
}

impl Ackable {
    /// Queues the acknowledgement (async-nats' [`AckKind`]); it never waits.
    pub fn send(&self, kind: AckKind) {
        self.acker.send(self.reply.clone(), kind);
    }
}

/// An event as parsed by the pump: the envelope's attributes, the payload it came in, and where
/// its `data` lies within the payload.
pub struct RawEvent {
    payload: Bytes,
    subject: Subject,
    reply: Option<Subject>,
    attributes: Attributes,
    ack: Option<Ackable>,
}

impl RawEvent {
    /// The event id (a UUIDv7 for the orchestrator's events); unique, so use it to deduplicate.
    pub fn id(&self) -> &str {
        &self.attributes.id
    }

    /// The CloudEvents `type`, e.g. `io.orch.priority.applied.v1`.
    pub fn ty(&self) -> &str {
        &self.attributes.ty
    }

    /// The CloudEvents `source`.
    pub fn source(&self) -> &str {
        &self.attributes.source
    }

    /// The CloudEvents `subject` attribute (an instance id, a service name, ...), if any.
    pub fn ce_subject(&self) -> Option<&str> {
        self.attributes.ce_subject.as_deref()
    }

    /// Who made the change, as authenticated (the extension attribute `principal`, protocol.md
    /// §6.1): `key:<name>`, `jwt:<sub>`, `anonymous`, `nats` or `orchestrator`.
    pub fn principal(&self) -> Option<&str> {
        self.attributes.principal.as_deref()
    }

    /// The NATS subject it was published on, e.g. `orch.evt.priority.api.applied`.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// Token `index` of the NATS subject: 2 is the domain, 3 the service, 4 the kind.
    pub fn subject_token(&self, index: usize) -> Option<&str> {
        self.subject.as_str().split('.').nth(index)
    }

    pub fn time(&self) -> Option<&DateTime<Utc>> {
        self.attributes.time.as_ref()
    }

    /// The `data` member as JSON text, if any.
    pub fn data(&self) -> Option<&[u8]> {
        self.attributes.data.as_ref().map(|range| &self.payload[range.clone()])
    }

    /// The whole CloudEvent as received.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The stream sequence (0 when unknown).
    pub fn stream_seq(&self) -> u64 {
        self.reply.as_deref().and_then(ack_numbers).map(|(seq, _)| seq).unwrap_or(0)
    }

    /// How often it was delivered (1 the first time; 0 when unknown).
    pub fn deliveries(&self) -> u64 {
        self.reply.as_deref().and_then(ack_numbers).map(|(_, n)| n).unwrap_or(0)
    }

    /// Where to acknowledge it: `Some` for events of a durable subscription.
    pub fn ackable(&self) -> Option<&Ackable> {
        self.ack.as_ref()
    }
}

/// The CloudEvents attributes the client reads; other extensions are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default, borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    principal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// One thing the pump hands over: an event, or a message that is no CloudEvent.
pub enum Item {
    Event(RawEvent),
    Unreadable(Error, Option<Ackable>),
}

/// Parses a message's payload as a structured-mode CloudEvent (protocol.md §6).
pub fn parse(message: async_nats::Message, acker: Option<&Acker>) -> Item {
    let ack = match (&message.reply, acker) {
        (Some(reply), Some(acker)) => Some(Ackable { reply: reply.clone(), acker: acker.clone() }),
        _ => None,
    };
    match parse_envelope(&message.payload) {
        Ok(attributes) => Item::Event(RawEvent {
            payload: message.payload,
            subject: message.subject,
            reply: message.reply,
            attributes,
            ack,
        }),
        Err(problem) => {
            let seq = message.reply.as_deref().and_then(ack_numbers).map(|(seq, _)| seq).unwrap_or(0);
            let error = Error::Invalid(ErrorBody {
                code: ErrorCode::MalformedPayload,
                message: format!(
                    "the message on {} (stream sequence {seq}) is not a CloudEvent: {problem}",
                    message.subject
                ),
                field: None,
            });
            Item::Unreadable(error, ack)
        }
    }
}

/// The attributes of a parsed event; `data` is where the data lies in the payload.
#[derive(Debug)]
struct Attributes {
    id: Box<str>,
    ty: Box<str>,
    source: Box<str>,
    ce_subject: Option<Box<str>>,
    principal: Option<Box<str>>,
    time: Option<DateTime<Utc>>,
    data: Option<Range<usize>>,
}

fn parse_envelope(payload: &[u8]) -> std::result::Result<Attributes, String> {
    let envelope: Envelope<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if envelope.specversion != "1.0" {
        return Err(format!("specversion {:?} is not 1.0", envelope.specversion));
    }
    let time = match envelope.time {
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map_err(|e| format!("time {text:?} is not an RFC 3339 timestamp: {e}"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    // The raw value borrows from `payload`, so its offset within it is where the data lies.
    let data = envelope.data.map(|raw| {
        let start = raw.get().as_ptr() as usize - payload.as_ptr() as usize;
        start..start + raw.get().len()
    });
    Ok(Attributes {
        id: envelope.id.into(),
        ty: envelope.ty.into(),
        source: envelope.source.into(),
        ce_subject: envelope.subject.map(Into::into),
        principal: envelope.principal.map(Into::into),
        time,
        data,
    })
}

/// `(stream sequence, deliveries)` from a JetStream ack subject: `$JS.ACK.<stream>.<consumer>.
/// <delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the v2 form with a domain and account hash first.
fn ack_numbers(reply: &str) -> Option<(u64, u64)> {
    let tokens: Vec<&str> = reply.split('.').collect();
    if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let at = if tokens.len() == 9 { 4 } else { 6 };
    Some((tokens.get(at + 1)?.parse().ok()?, tokens.get(at)?.parse().ok()?))
}

/// Whether a consumer error means the stream cannot go on.
trait Fault: std::fmt::Display {
    fn terminal(&self) -> bool;
}

impl Fault for OrderedError {
    /// The ordered consumer re-creates itself after a gap, a lost heartbeat or a deletion.
    fn terminal(&self) -> bool {
        false
    }
}

impl Fault for MessagesError {
    fn terminal(&self) -> bool {
        matches!(
            self.kind(),
            MessagesErrorKind::ConsumerDeleted
                | MessagesErrorKind::PushBasedConsumer
                | MessagesErrorKind::RequestLimitExceeded
        )
    }
}

/// Moves messages from the consumer to the taker, parsed, in batches of what is ready (at most
/// `batch`). Ends when the consumer does, or when nobody receives any more.
async fn pump<S, E>(
    messages: S,
    tx: mpsc::Sender<Vec<Item>>,
    acker: Option<Acker>,
    batch: usize,
    end: Arc<Mutex<Option<Error>>>,
) where
    S: Stream<Item = std::result::Result<async_nats::jetstream::Message, E>> + Send + Unpin,
    E: Fault,
{
    let mut chunks = messages.ready_chunks(batch);
    let mut errors = 0;
    while let Some(chunk) = chunks.next().await {
        let mut items = Vec::with_capacity(chunk.len());
        for result in chunk {
            match result {
                Ok(message) => {
                    errors = 0;
                    items.push(parse(message.message, acker.as_ref()));
                }
                Err(fault) => {
                    errors += 1;
                    if fault.terminal() || errors >= MAX_CONSECUTIVE_ERRORS {
                        *end.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Error::Connection(format!("the event stream stopped: {fault}")));
                        if !items.is_empty() {
                            let _ = tx.send(items).await;
                        }
                        return;
                    }
                }
            }
        }
        if !items.is_empty() && tx.send(items).await.is_err() {
            return;
        }
    }
}

/// Events taken from the channel but not yet taken, and what was handed over.
#[derive(Default)]
struct Ready {
    items: VecDeque<Item>,
    /// Taken under `auto_ack`: acknowledged when the taker asks for more.
    unacked: Vec<Ackable>,
    /// The pump has finished and the channel is empty.
    ended: bool,
}

/// The state of one stream, shared by whoever takes from it.
pub struct Subscription {
    ready: Mutex<Ready>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<Item>>>,
    end: Arc<Mutex<Option<Error>>>,
    pump: Mutex<Option<JoinHandle<()>>>,
    client: Client,
    stream: String,
    consumer: String,
    durable: bool,
    filter: String,
    auto_ack: bool,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Subscription {
    fn push(&self, batch: Option<Vec<Item>>) {
        let mut ready = lock(&self.ready);
        match batch {
            Some(items) => ready.items.extend(items),
            None => ready.ended = true,
        }
    }

    /// Moves a batch from the channel without waiting, if one is there.
    pub fn fill_now(&self) {
        if let Ok(mut rx) = self.rx.try_lock() {
            match rx.try_recv() {
                Ok(batch) => self.push(Some(batch)),
                Err(mpsc::error::TryRecvError::Disconnected) => self.push(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
    }

    /// Waits up to `wait` for the next batch.
    pub async fn fill(&self, wait: Option<Duration>) {
        let mut rx = self.rx.lock().await;
        if !lock(&self.ready).items.is_empty() {
            return; // another caller filled it meanwhile
        }
        let received = match wait {
            Some(wait) => match tokio::time::timeout(wait, rx.recv()).await {
                Ok(received) => received,
                Err(_elapsed) => return,
            },
            None => rx.recv().await,
        };
        self.push(received);
    }

    /// Takes up to `max` ready events. `Ok(None)`: the stream has ended. Under `auto_ack`, what was
    /// handed over before is acknowledged first. An unreadable message is raised on its own.
    pub fn take(&self, max: usize) -> Result<Option<Vec<RawEvent>>> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut ready = lock(&self.ready);
        for ack in ready.unacked.drain(..) {
            ack.send(AckKind::Ack);
        }
        let mut out = Vec::with_capacity(max.min(ready.items.len()));
        while out.len() < max {
            match ready.items.pop_front() {
                Some(Item::Event(event)) => {
                    if self.auto_ack
                        && let Some(ack) = &event.ack
                    {
                        ready.unacked.push(ack.clone());
                    }
                    out.push(event);
                }
                Some(Item::Unreadable(error, ack)) => {
                    if !out.is_empty() {
                        ready.items.push_front(Item::Unreadable(error, ack));
                        break;
                    }
                    // Redelivery cannot make it readable.
                    if let Some(ack) = ack {
                        ack.send(AckKind::Term);
                    }
                    return Err(error);
                }
                None => break,
            }
        }
        if out.is_empty() && ready.ended {
            if let Some(error) = lock(&self.end).take() {
                return Err(error);
            }
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Waits for the next batch of at most `max` events: `None` once the subscription has ended
    /// or was closed, an error when it stopped on one.
    pub async fn next(&self, max: usize) -> Result<Option<Vec<RawEvent>>> {
        loop {
            self.fill_now();
            match self.take(max.max(1))? {
                Some(events) if events.is_empty() => self.fill(None).await,
                taken => return Ok(taken),
            }
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer's name: the durable name, or the one the server gave an ephemeral consumer.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The subject filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Events received and not yet taken.
    pub fn buffered(&self) -> usize {
        lock(&self.ready).items.len()
    }

    /// Stops the pump, hands back what was never taken (durable: redelivered at once), settles
    /// what it saw under `auto_ack`, and flushes the acknowledgements.
    pub async fn close(&self, ack_delivered: bool) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let pump = lock(&self.pump).take();
        if let Some(pump) = pump {
            pump.abort();
            let _ = pump.await;
        }
        {
            let mut rx = self.rx.lock().await;
            rx.close();
            while let Ok(batch) = rx.try_recv() {
                self.push(Some(batch));
            }
        }
        let (items, unacked) = {
            let mut ready = lock(&self.ready);
            (std::mem::take(&mut ready.items), std::mem::take(&mut ready.unacked))
        };
        for ack in unacked {
            ack.send(if ack_delivered { AckKind::Ack } else { AckKind::Nak(None) });
        }
        for item in items {
            match item {
                Item::Event(RawEvent { ack: Some(ack), .. }) => ack.send(AckKind::Nak(None)),
                Item::Unreadable(_, Some(ack)) => ack.send(AckKind::Term),
                _ => {}
            }
        }
        if !self.durable {
            // The server would drop the ephemeral consumer after a while; tidier to do it now.
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(1), self.client.jetstream().get_stream_no_info(&self.stream))
                    .await
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.delete_consumer(&self.consumer)).await;
            }
        }
        self.client.acker().flush().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(pump) = lock(&self.pump).take() {
            pump.abort();
        }
    }
}

/// Opens a stream: an ordered consumer (live, or from a time), or the named durable consumer.
pub async fn open(client: &Client, options: SubscribeOptions) -> Result<Subscription> {
    client.ensure_open()?;
    let stream_name = client.subjects().events_stream();
    let stream = client.jetstream().get_stream(&stream_name).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(j) if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND => {
            Error::NotFound(format!(
                "the events stream {stream_name} does not exist; has an orchestrator with subject prefix \"{}\" run on this NATS server?",
                client.subjects().prefix()
            ))
        }
        _ => Error::Connection(format!("cannot read the events stream {stream_name}: {e}")),
    })?;
    let consumer_error = |e: async_nats::jetstream::stream::ConsumerError| match e.kind() {
        ConsumerErrorKind::TimedOut => Error::Timeout(format!("creating a consumer on {stream_name} timed out")),
        _ => Error::Connection(format!("cannot create a consumer on {stream_name}: {e}")),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let end = Arc::new(Mutex::new(None));
    let (consumer, pump) = match &options.durable {
        None => {
            let config = pull::OrderedConfig {
                filter_subject: options.filter.clone(),
                deliver_policy: options.deliver,
                ..Default::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(consumer_error)?;
            let name = consumer.cached_info().name.clone();
            let messages = consumer
                .messages()
                .await
                .map_err(|e| Error::Connection(format!("cannot receive from {stream_name}: {e}")))?;
            (name, tokio::spawn(pump(messages, tx, None, options.batch, end.clone())))
        }
        Some(durable) => {
            let config = pull::Config {
                durable_name: Some(durable.clone()),
                description: Some("orch-client event stream".into()),
                filter_subject: options.filter.clone(),
                deliver_policy: options.deliver,
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            };
            let consumer = stream.get_or_create_consumer(durable, config).await.map_err(consumer_error)?;
            let existing = &consumer.cached_info().config;
            let filters: Vec<&str> = std::iter::once(existing.filter_subject.as_str())
                .filter(|f| !f.is_empty())
                .chain(existing.filter_subjects.iter().map(String::as_str))
                .collect();
            if filters != [options.filter.as_str()] || existing.ack_policy != AckPolicy::Explicit {
                return Err(Error::Conflict(format!(
                    "the durable consumer {durable:?} exists with filter {filters:?} and ack policy {:?}; \
                     use another name, or delete it (delete_durable) to start again with {:?}",
                    existing.ack_policy, options.filter
                )));
            }
            let messages = consumer
                .stream()
                .max_messages_per_batch(options.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| Error::Connection(format!("cannot receive from {durable} on {stream_name}: {e}")))?;
            let acker = client.acker().clone();
            (durable.clone(), tokio::spawn(pump(messages, tx, Some(acker), options.batch, end.clone())))
        }
    };
    Ok(Subscription {
        ready: Mutex::new(Ready::default()),
        rx: tokio::sync::Mutex::new(rx),
        end,
        pump: Mutex::new(Some(pump)),
        client: client.clone(),
        stream: stream_name,
        consumer,
        durable: options.durable.is_some(),
        filter: options.filter,
        auto_ack: options.auto_ack,
        closed: AtomicBool::new(false),
    })
}

/// Deletes a durable consumer of the events stream. `Ok(false)` if it did not exist.
pub async fn delete_durable(client: &Client, name: &str) -> Result<bool> {
    client.ensure_open()?;
    check_durable_name(name)?;
    let stream_name = client.subjects().events_stream();
    let stream = client
        .jetstream()
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| Error::Connection(format!("cannot reach the events stream {stream_name}: {e}")))?;
    match stream.delete_consumer(name).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            ConsumerErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
                    || j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(Error::Connection(format!("cannot delete the consumer {name:?} on {stream_name}: {e}"))),
        },
    }
}

/// Events of one consumer, in stream order. Iterate it (blocking, GIL released while waiting), or
/// take batches; the asyncio client wraps the `*_async` methods. Close it (or use `with`) to hand
/// back unread durable events at once and flush acknowledgements.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_data_as_text_until_asked() {
        let payload = br#"{"specversion":"1.0","id":"01a","type":"io.orch.priority.applied.v1","source":"/orchestrator","subject":"api","principal":"key:ops","time":"2026-11-23T05:59:03.894789885Z","datacontenttype":"application/json","data":{"a":[1,2]}}"#;
        let Attributes { id, ty, source, ce_subject, principal, time, data } = parse_envelope(payload).unwrap();
        assert_eq!((&*id, &*ty, &*source), ("01a", "io.orch.priority.applied.v1", "/orchestrator"));
        assert_eq!(ce_subject.as_deref(), Some("api"));
        assert_eq!(principal.as_deref(), Some("key:ops"));
        assert_eq!(time.unwrap().timestamp_subsec_nanos(), 894_789_885);
        assert_eq!(&payload[data.unwrap()], br#"{"a":[1,2]}"#);
    }

    #[test]
    fn envelope_problems_are_named() {
        assert!(parse_envelope(b"{").unwrap_err().contains("EOF"));
        let no_type = br#"{"specversion":"1.0","id":"1","source":"s"}"#;
        assert!(parse_envelope(no_type).unwrap_err().contains("type"));
        let bad_time = br#"{"specversion":"1.0","id":"1","type":"t","source":"s","time":"soon"}"#;
        assert!(parse_envelope(bad_time).unwrap_err().contains("soon"));
        let escaped = br#"{"specversion":"1.0","id":"a\"b","type":"t","source":"s"}"#;
        assert_eq!(&*parse_envelope(escaped).unwrap().id, "a\"b");
    }

    #[test]
    fn filters_stay_within_the_events_subjects() {
        let s = Subjects::new("orch").unwrap();
        assert!(check_filter(&s, "orch.evt.>").is_ok());
        assert!(check_filter(&s, "orch.evt.health.*.instance_changed").is_ok());
        for bad in
            ["orch.cmd.>", "other.evt.>", "orch.evt.", "orch.evt.a..b", "orch.evt.>.x", "orch.evt.a b", "orch.evt.a*"]
        {
            let e = check_filter(&s, bad).unwrap_err();
            assert_eq!((e.code(), e.field()), ("validation_failed", Some("subject")), "{bad}");
        }
    }

    #[test]
    fn ack_subjects_give_sequence_and_deliveries() {
        assert_eq!(ack_numbers("$JS.ACK.ORCH_EVENTS.c.2.77.5.1700000000000000000.3"), Some((77, 2)));
        assert_eq!(ack_numbers("$JS.ACK.dom.hash.ORCH_EVENTS.c.1.78.6.1700000000000000000.0.tok"), Some((78, 1)));
        assert_eq!(ack_numbers("_INBOX.x"), None);
    }

    #[test]
    fn durable_names_are_checked() {
        assert!(check_durable_name("attention-engine_1").is_ok());
        assert!(check_durable_name("a.b").is_err());
        assert!(check_durable_name("").is_err());
    }
}
