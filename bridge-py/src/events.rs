//! Events from `<PREFIX>_EVENTS`: the consumers that fetch them, the `Event` objects Python sees,
//! and `EventStream`, which hands them over in batches.
//!
//! A pump task per stream receives messages on the runtime, parses each CloudEvent envelope there
//! (no GIL), and sends batches over a bounded channel. Python takes events from the batch under
//! the GIL without any thread hop; only when the batch is used up does it wait, with the GIL
//! released. An event's `data` stays JSON text until Python first reads it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::consumer::pull::{self, MessagesError, MessagesErrorKind, OrderedError};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use orch_protocol::subjects::Subjects;
use orch_protocol::{ErrorBody, ErrorCode};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{AckKind, Acker, Inner};
use crate::convert::{datetime_to_py, json_to_py};
use crate::error::{Error, Result};
use crate::runtime::{SIGNAL_POLL, runtime, seconds};

/// Batches the pump may have in flight to Python per stream (each up to `batch` events).
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
        ack_wait: f64,
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
        Ok(SubscribeOptions { filter, durable, deliver, auto_ack, ack_wait: seconds("ack_wait", ack_wait)?, batch })
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
    fn send(&self, kind: AckKind) {
        self.acker.send(self.reply.clone(), kind);
    }
}

/// An event as parsed by the pump: the envelope's attributes, the payload it came in, and where
/// its `data` lies within the payload.
pub struct RawEvent {
    payload: Bytes,
    subject: Subject,
    reply: Option<Subject>,
    id: Box<str>,
    ty: Box<str>,
    source: Box<str>,
    ce_subject: Option<Box<str>>,
    time: Option<DateTime<Utc>>,
    data: Option<Range<usize>>,
    ack: Option<Ackable>,
}

/// The CloudEvents attributes the bridge reads; others (extensions) are ignored.
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
        Ok((id, ty, source, ce_subject, time, data)) => Item::Event(RawEvent {
            payload: message.payload,
            subject: message.subject,
            reply: message.reply,
            id,
            ty,
            source,
            ce_subject,
            time,
            data,
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

type Parsed = (Box<str>, Box<str>, Box<str>, Option<Box<str>>, Option<DateTime<Utc>>, Option<Range<usize>>);

fn parse_envelope(payload: &[u8]) -> std::result::Result<Parsed, String> {
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
    Ok((envelope.id.into(), envelope.ty.into(), envelope.source.into(), envelope.subject.map(Into::into), time, data))
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

/// One CloudEvent from the orchestrator. Attributes are read when it arrives; `data` is decoded
/// on first access and kept.
#[pyclass(frozen, module = "orch_bridge._core")]
pub struct Event {
    raw: RawEvent,
    data: PyOnceLock<Py<PyAny>>,
    time: PyOnceLock<Py<PyAny>>,
    acked: AtomicBool,
}

impl Event {
    fn new(raw: RawEvent) -> Event {
        Event { raw, data: PyOnceLock::new(), time: PyOnceLock::new(), acked: AtomicBool::new(false) }
    }

    fn subject_token(&self, index: usize) -> Option<&str> {
        self.raw.subject.as_str().split('.').nth(index)
    }
}

#[pymethods]
impl Event {
    /// The event id (a UUIDv7 for the orchestrator's events); unique, so use it to deduplicate.
    #[getter]
    fn id(&self) -> &str {
        &self.raw.id
    }

    /// The CloudEvents `type`, e.g. `io.orch.priority.applied.v1`.
    #[getter]
    fn r#type(&self) -> &str {
        &self.raw.ty
    }

    /// The NATS subject it was published on, e.g. `orch.evt.priority.api.applied`.
    #[getter]
    fn subject(&self) -> &str {
        self.raw.subject.as_str()
    }

    /// The CloudEvents `source`, `/orchestrator` for the orchestrator's events.
    #[getter]
    fn source(&self) -> &str {
        &self.raw.source
    }

    /// The CloudEvents `subject` attribute (an instance id, a service name, ...), if any.
    #[getter]
    fn ce_subject(&self) -> Option<&str> {
        self.raw.ce_subject.as_deref()
    }

    /// The subject's domain token: `registry`, `health`, `lifecycle`, `priority`, `system`, ...
    #[getter]
    fn domain(&self) -> Option<&str> {
        self.subject_token(2)
    }

    /// The subject's service token (`_system` for events of no single service).
    #[getter]
    fn service(&self) -> Option<&str> {
        self.subject_token(3)
    }

    /// The subject's last token: the kind of event, e.g. `crashed` or `applied`.
    #[getter]
    fn kind(&self) -> Option<&str> {
        self.subject_token(4)
    }

    /// When the change happened: an aware `datetime` in UTC (microseconds), or None.
    #[getter]
    fn time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(at) = &self.raw.time else { return Ok(py.None().into_bound(py)) };
        let value = self.time.get_or_try_init(py, || datetime_to_py(py, at).map(Bound::unbind))?;
        Ok(value.bind(py).clone())
    }

    /// The event's `data` (usually a dict), decoded on first access.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(range) = &self.raw.data else { return Ok(py.None().into_bound(py)) };
        let value =
            self.data.get_or_try_init(py, || json_to_py(py, &self.raw.payload[range.clone()]).map(Bound::unbind))?;
        Ok(value.bind(py).clone())
    }

    /// The whole message body: the CloudEvent as JSON bytes.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.raw.payload)
    }

    /// The event's sequence number in the events stream (0 if unknown).
    #[getter]
    fn stream_seq(&self) -> u64 {
        self.raw.reply.as_deref().and_then(ack_numbers).map(|(seq, _)| seq).unwrap_or(0)
    }

    /// How many times the stream delivered this event (more than 1: a redelivery).
    #[getter]
    fn deliveries(&self) -> u64 {
        self.raw.reply.as_deref().and_then(ack_numbers).map(|(_, n)| n).unwrap_or(0)
    }

    /// True if the event comes from a durable stream and must be acknowledged.
    #[getter]
    fn ackable(&self) -> bool {
        self.raw.ack.is_some()
    }

    /// Acknowledges the event (durable streams): it will not be delivered again. Returns at once;
    /// the ack is sent in the background, and closing the stream or the client waits until every
    /// ack is sent. Acking twice, or an event of a live stream, does nothing.
    fn ack(&self) {
        if let Some(ack) = &self.raw.ack
            && !self.acked.swap(true, Ordering::AcqRel)
        {
            ack.send(AckKind::Ack);
        }
    }

    /// Asks for the event to be delivered again now (durable streams), e.g. after a failure to
    /// handle it. Does nothing once acknowledged, or for an event of a live stream.
    fn nak(&self) {
        if let Some(ack) = &self.raw.ack
            && !self.acked.swap(true, Ordering::AcqRel)
        {
            ack.send(AckKind::Nak);
        }
    }

    /// The whole CloudEvent as a dict (decoded from `raw`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.raw.payload)
    }

    fn __repr__(&self) -> String {
        format!("Event(type={:?}, id={:?}, subject={:?})", &*self.raw.ty, &*self.raw.id, self.raw.subject.as_str())
    }
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

/// Moves messages from the consumer to Python, parsed, in batches of what is ready (at most
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

/// Events taken from the channel but not yet handed to Python, and what was handed over.
#[derive(Default)]
struct Ready {
    items: VecDeque<Item>,
    /// Handed to Python under `auto_ack`: acknowledged when Python asks for more.
    unacked: Vec<Ackable>,
    /// The pump has finished and the channel is empty.
    ended: bool,
}

/// The state of one stream, shared by the Python object and the futures of its async methods.
struct Shared {
    ready: Mutex<Ready>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<Item>>>,
    end: Arc<Mutex<Option<Error>>>,
    pump: Mutex<Option<JoinHandle<()>>>,
    inner: Arc<Inner>,
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

impl Shared {
    fn push(&self, batch: Option<Vec<Item>>) {
        let mut ready = lock(&self.ready);
        match batch {
            Some(items) => ready.items.extend(items),
            None => ready.ended = true,
        }
    }

    /// Moves a batch from the channel without waiting, if one is there.
    fn fill_now(&self) {
        if let Ok(mut rx) = self.rx.try_lock() {
            match rx.try_recv() {
                Ok(batch) => self.push(Some(batch)),
                Err(mpsc::error::TryRecvError::Disconnected) => self.push(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
    }

    /// Waits up to `wait` for the next batch.
    async fn fill(&self, wait: Option<Duration>) {
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
    fn take(&self, max: usize) -> Result<Option<Vec<RawEvent>>> {
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

    /// Blocking: up to `max` events, waiting (GIL released, signals checked) until at least one
    /// is there or `timeout` passes (then an empty list).
    fn next_blocking(
        self: &Arc<Self>,
        py: Python<'_>,
        max: usize,
        timeout: Option<Duration>,
    ) -> PyResult<Option<Vec<RawEvent>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.fill_now();
            match self.take(max)? {
                Some(events) if events.is_empty() => {}
                taken => return Ok(taken),
            }
            let mut wait = SIGNAL_POLL;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Some(Vec::new()));
                }
                wait = wait.min(left);
            }
            let shared = self.clone();
            py.detach(|| runtime().block_on(shared.fill(Some(wait))));
            py.check_signals()?;
        }
    }

    /// Stops the pump, hands back what Python never saw (durable: redelivered at once), settles
    /// what it saw under `auto_ack`, and flushes the acknowledgements.
    async fn close(&self, ack_delivered: bool) {
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
            ack.send(if ack_delivered { AckKind::Ack } else { AckKind::Nak });
        }
        for item in items {
            match item {
                Item::Event(RawEvent { ack: Some(ack), .. }) => ack.send(AckKind::Nak),
                Item::Unreadable(_, Some(ack)) => ack.send(AckKind::Term),
                _ => {}
            }
        }
        if !self.durable {
            // The server would drop the ephemeral consumer after a while; tidier to do it now.
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(1), self.inner.jetstream.get_stream_no_info(&self.stream))
                    .await
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.delete_consumer(&self.consumer)).await;
            }
        }
        self.inner.acker.flush().await;
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(pump) = lock(&self.pump).take() {
            pump.abort();
        }
    }
}

/// Opens a stream: an ordered consumer (live, or from a time), or the named durable consumer.
pub async fn open(inner: Arc<Inner>, options: SubscribeOptions) -> Result<EventStream> {
    inner.ensure_open()?;
    let stream_name = inner.subjects.events_stream();
    let stream = inner.jetstream.get_stream(&stream_name).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(j) if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND => {
            Error::NotFound(format!(
                "the events stream {stream_name} does not exist; has an orchestrator with subject prefix \"{}\" run on this NATS server?",
                inner.subjects.prefix()
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
                description: Some("orch_bridge event stream".into()),
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
                     use another name, or delete it (Client.delete_durable) to start again with {:?}",
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
            let acker = inner.acker.clone();
            (durable.clone(), tokio::spawn(pump(messages, tx, Some(acker), options.batch, end.clone())))
        }
    };
    let shared = Shared {
        ready: Mutex::new(Ready::default()),
        rx: tokio::sync::Mutex::new(rx),
        end,
        pump: Mutex::new(Some(pump)),
        inner,
        stream: stream_name,
        consumer,
        durable: options.durable.is_some(),
        filter: options.filter,
        auto_ack: options.auto_ack,
        closed: AtomicBool::new(false),
    };
    Ok(EventStream { shared: Arc::new(shared) })
}

/// Deletes a durable consumer of the events stream. `Ok(false)` if it did not exist.
pub async fn delete_durable(inner: Arc<Inner>, name: String) -> Result<bool> {
    inner.ensure_open()?;
    check_durable_name(&name)?;
    let stream_name = inner.subjects.events_stream();
    let stream = inner
        .jetstream
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| Error::Connection(format!("cannot reach the events stream {stream_name}: {e}")))?;
    match stream.delete_consumer(&name).await {
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
#[pyclass(frozen, module = "orch_bridge._core")]
pub struct EventStream {
    shared: Arc<Shared>,
}

fn into_events(py: Python<'_>, events: Vec<RawEvent>) -> PyResult<Vec<Py<Event>>> {
    events.into_iter().map(|raw| Py::new(py, Event::new(raw))).collect()
}

fn optional_timeout(timeout: Option<f64>) -> Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(Error::invalid("timeout", format!("must be a number of seconds, 0 or more (got {t})"))),
    }
}

/// The converted result of an async batch: a list of events, or None once the stream has ended.
pub struct AsyncBatch(Option<Vec<RawEvent>>);

impl<'py> IntoPyObject<'py> for AsyncBatch {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            None => Ok(py.None().into_bound(py)),
            Some(events) => Ok(into_events(py, events)?.into_pyobject(py)?.into_any()),
        }
    }
}

#[pymethods]
impl EventStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next event; waits as long as it takes. Ends (StopIteration) once the stream is closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Event>>> {
        match self.shared.next_blocking(py, 1, None)? {
            Some(mut events) => events.pop().map(|raw| Py::new(py, Event::new(raw))).transpose(),
            None => Ok(None),
        }
    }

    /// The next event, or None if none arrives within `timeout` seconds (None: wait forever).
    /// Raises StopIteration once the stream is closed.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<Event>>> {
        match self.shared.next_blocking(py, 1, optional_timeout(timeout)?)? {
            Some(mut events) => events.pop().map(|raw| Py::new(py, Event::new(raw))).transpose(),
            None => Err(pyo3::exceptions::PyStopIteration::new_err("the event stream is closed")),
        }
    }

    /// Up to `max` events: those ready, or waits for some up to `timeout` seconds (then []).
    /// Raises StopIteration once the stream is closed.
    #[pyo3(signature = (max=1024, timeout=None))]
    fn next_batch(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Vec<Py<Event>>> {
        match self.shared.next_blocking(py, max.max(1), optional_timeout(timeout)?)? {
            Some(events) => into_events(py, events),
            None => Err(pyo3::exceptions::PyStopIteration::new_err("the event stream is closed")),
        }
    }

    /// The events ready now (maybe []), without waiting; None once the stream has ended.
    #[pyo3(signature = (max=1024))]
    fn poll_batch(&self, py: Python<'_>, max: usize) -> PyResult<Option<Vec<Py<Event>>>> {
        self.shared.fill_now();
        match self.shared.take(max.max(1))? {
            Some(events) => Ok(Some(into_events(py, events)?)),
            None => Ok(None),
        }
    }

    /// Awaitable of the next non-empty batch (up to `max` events), or None once the stream has
    /// ended.
    #[pyo3(signature = (max=1024))]
    fn next_batch_async<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            loop {
                shared.fill_now();
                match shared.take(max.max(1))? {
                    Some(events) if events.is_empty() => shared.fill(None).await,
                    taken => return Ok(AsyncBatch(taken)),
                }
            }
        })
    }

    /// Closes the stream (blocking): stops receiving, hands unread durable events back for
    /// redelivery, and flushes acknowledgements. With `ack_delivered` (and `auto_ack`), the events
    /// already handed over are acknowledged; otherwise they are redelivered. Idempotent.
    #[pyo3(signature = (ack_delivered=false))]
    fn close(&self, py: Python<'_>, ack_delivered: bool) -> PyResult<()> {
        let shared = self.shared.clone();
        crate::runtime::block_on(py, async move {
            shared.close(ack_delivered).await;
            Ok(())
        })
    }

    /// Awaitable version of `close`.
    #[pyo3(signature = (ack_delivered=false))]
    fn close_async<'py>(&self, py: Python<'py>, ack_delivered: bool) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            shared.close(ack_delivered).await;
            Ok(())
        })
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes; under `auto_ack`, acknowledges what was handed over unless an exception is leaving
    /// the `with` block.
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py, exc_type.is_none_or(|t| t.is_none()))?;
        Ok(false)
    }

    /// The stream name, e.g. `ORCH_EVENTS`.
    #[getter]
    fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The consumer's name: the durable name, or the server's name of the ordered consumer.
    #[getter]
    fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    /// True for a durable (acknowledged) stream.
    #[getter]
    fn durable(&self) -> bool {
        self.shared.durable
    }

    /// The subject filter.
    #[getter]
    fn subject(&self) -> &str {
        &self.shared.filter
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Events received and not yet handed to Python.
    #[getter]
    fn buffered(&self) -> usize {
        lock(&self.shared.ready).items.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "EventStream(subject={:?}, consumer={:?}, durable={}, closed={})",
            self.shared.filter,
            self.shared.consumer,
            self.shared.durable,
            self.closed()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_data_as_text_until_asked() {
        let payload = br#"{"specversion":"1.0","id":"01a","type":"io.orch.priority.applied.v1","source":"/orchestrator","subject":"api","time":"2026-11-23T05:59:03.894789885Z","datacontenttype":"application/json","data":{"a":[1,2]}}"#;
        let (id, ty, source, ce_subject, time, data) = parse_envelope(payload).unwrap();
        assert_eq!((&*id, &*ty, &*source), ("01a", "io.orch.priority.applied.v1", "/orchestrator"));
        assert_eq!(ce_subject.as_deref(), Some("api"));
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
        assert_eq!(&*parse_envelope(escaped).unwrap().0, "a\"b");
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
