//! Events from `<PREFIX>_EVENTS` as Python sees them: `Event` objects over the client crate's
//! parsed events, and `EventStream` over its `Subscription`, which a pump task fills in batches.
//! Python takes events from the batch under the GIL without any thread hop; only when the batch
//! is used up does it wait, with the GIL released. An event's `data` stays JSON text until Python
//! first reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orch_client::events::{RawEvent, SubscribeOptions, Subscription};
use orch_client::{AckKind, Client};
use orch_protocol::subjects::Subjects;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::convert::{datetime_to_py, json_to_py};
use crate::error::{Error, Result};
use crate::runtime::{SIGNAL_POLL, runtime, seconds};

/// What `Connection.subscribe` asked for, checked (by the client crate, as the server would).
#[allow(clippy::too_many_arguments)]
pub fn options(
    subjects: &Subjects,
    subject: Option<String>,
    durable: Option<String>,
    start_time_ns: Option<i128>,
    deliver: &str,
    auto_ack: bool,
    ack_wait: f64,
    batch: usize,
) -> Result<SubscribeOptions> {
    let ack_wait = seconds("ack_wait", ack_wait)?;
    Ok(SubscribeOptions::new(subjects, subject, durable, start_time_ns, deliver, auto_ack, ack_wait, batch)?)
}

/// Opens the consumer and its stream object.
pub async fn open(client: Client, options: SubscribeOptions) -> Result<EventStream> {
    let subscription = orch_client::events::open(&client, options).await?;
    Ok(EventStream { shared: Arc::new(subscription) })
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
        self.raw.subject_token(index)
    }
}

#[pymethods]
impl Event {
    /// The event id (a UUIDv7 for the orchestrator's events); unique, so use it to deduplicate.
    #[getter]
    fn id(&self) -> &str {
        self.raw.id()
    }

    /// The CloudEvents `type`, e.g. `io.orch.priority.applied.v1`.
    #[getter]
    fn r#type(&self) -> &str {
        self.raw.ty()
    }

    /// The NATS subject it was published on, e.g. `orch.evt.priority.api.applied`.
    #[getter]
    fn subject(&self) -> &str {
        self.raw.subject()
    }

    /// The CloudEvents `source`, `/orchestrator` for the orchestrator's events.
    #[getter]
    fn source(&self) -> &str {
        self.raw.source()
    }

    /// The CloudEvents `subject` attribute (an instance id, a service name, ...), if any.
    #[getter]
    fn ce_subject(&self) -> Option<&str> {
        self.raw.ce_subject()
    }

    /// Who made the change, as authenticated: `key:<name>`, `jwt:<sub>`, `anonymous`, `nats` or
    /// `orchestrator` (protocol.md §6.1); None for an event without one.
    #[getter]
    fn principal(&self) -> Option<&str> {
        self.raw.principal()
    }

    /// The subject's domain token: `registry`, `health`, `lifecycle`, `priority`, `system`,
    /// `resource`, `cluster`, `workflow`.
    #[getter]
    fn domain(&self) -> Option<&str> {
        self.subject_token(2)
    }

    /// The subject's service token (`_system` for events of no single service; the node for
    /// `resource` events, the replica for `cluster` events, the workflow for `workflow` events).
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
        let Some(at) = self.raw.time() else { return Ok(py.None().into_bound(py)) };
        let value = self.time.get_or_try_init(py, || datetime_to_py(py, at).map(Bound::unbind))?;
        Ok(value.bind(py).clone())
    }

    /// The event's `data` (usually a dict), decoded on first access.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(data) = self.raw.data() else { return Ok(py.None().into_bound(py)) };
        let value = self.data.get_or_try_init(py, || json_to_py(py, data).map(Bound::unbind))?;
        Ok(value.bind(py).clone())
    }

    /// The whole message body: the CloudEvent as JSON bytes.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.raw.payload())
    }

    /// The event's sequence number in the events stream (0 if unknown).
    #[getter]
    fn stream_seq(&self) -> u64 {
        self.raw.stream_seq()
    }

    /// How many times the stream delivered this event (more than 1: a redelivery).
    #[getter]
    fn deliveries(&self) -> u64 {
        self.raw.deliveries()
    }

    /// True if the event comes from a durable stream and must be acknowledged.
    #[getter]
    fn ackable(&self) -> bool {
        self.raw.ackable().is_some()
    }

    /// Acknowledges the event (durable streams): it will not be delivered again. Returns at once;
    /// the ack is sent in the background, and closing the stream or the client waits until every
    /// ack is sent. Acking twice, or an event of a live stream, does nothing.
    fn ack(&self) {
        if let Some(ack) = self.raw.ackable()
            && !self.acked.swap(true, Ordering::AcqRel)
        {
            ack.send(AckKind::Ack);
        }
    }

    /// Asks for the event to be delivered again now (durable streams), e.g. after a failure to
    /// handle it. Does nothing once acknowledged, or for an event of a live stream.
    fn nak(&self) {
        if let Some(ack) = self.raw.ackable()
            && !self.acked.swap(true, Ordering::AcqRel)
        {
            ack.send(AckKind::Nak(None));
        }
    }

    /// The whole CloudEvent as a dict (decoded from `raw`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, self.raw.payload())
    }

    fn __repr__(&self) -> String {
        format!("Event(type={:?}, id={:?}, subject={:?})", self.raw.ty(), self.raw.id(), self.raw.subject())
    }
}

/// Blocking: up to `max` events, waiting (GIL released, signals checked) until at least one is
/// there or `timeout` passes (then an empty list).
fn next_blocking(
    shared: &Arc<Subscription>,
    py: Python<'_>,
    max: usize,
    timeout: Option<Duration>,
) -> PyResult<Option<Vec<RawEvent>>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        shared.fill_now();
        match shared.take(max).map_err(Error::from)? {
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
        let shared = shared.clone();
        py.detach(|| runtime().block_on(shared.fill(Some(wait))));
        py.check_signals()?;
    }
}

#[pyclass(frozen, module = "orch_bridge._core")]
pub struct EventStream {
    shared: Arc<Subscription>,
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
        match next_blocking(&self.shared, py, 1, None)? {
            Some(mut events) => events.pop().map(|raw| Py::new(py, Event::new(raw))).transpose(),
            None => Ok(None),
        }
    }

    /// The next event, or None if none arrives within `timeout` seconds (None: wait forever).
    /// Raises StopIteration once the stream is closed.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<Event>>> {
        match next_blocking(&self.shared, py, 1, optional_timeout(timeout)?)? {
            Some(mut events) => events.pop().map(|raw| Py::new(py, Event::new(raw))).transpose(),
            None => Err(pyo3::exceptions::PyStopIteration::new_err("the event stream is closed")),
        }
    }

    /// Up to `max` events: those ready, or waits for some up to `timeout` seconds (then []).
    /// Raises StopIteration once the stream is closed.
    #[pyo3(signature = (max=1024, timeout=None))]
    fn next_batch(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Vec<Py<Event>>> {
        match next_blocking(&self.shared, py, max.max(1), optional_timeout(timeout)?)? {
            Some(events) => into_events(py, events),
            None => Err(pyo3::exceptions::PyStopIteration::new_err("the event stream is closed")),
        }
    }

    /// The events ready now (maybe []), without waiting; None once the stream has ended.
    #[pyo3(signature = (max=1024))]
    fn poll_batch(&self, py: Python<'_>, max: usize) -> PyResult<Option<Vec<Py<Event>>>> {
        self.shared.fill_now();
        match self.shared.take(max.max(1)).map_err(Error::from)? {
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
            Ok(AsyncBatch(shared.next(max).await.map_err(Error::from)?))
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
        self.shared.stream()
    }

    /// The consumer's name: the durable name, or the server's name of the ordered consumer.
    #[getter]
    fn consumer(&self) -> &str {
        self.shared.consumer()
    }

    /// True for a durable (acknowledged) stream.
    #[getter]
    fn durable(&self) -> bool {
        self.shared.is_durable()
    }

    /// The subject filter.
    #[getter]
    fn subject(&self) -> &str {
        self.shared.filter()
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Events received and not yet handed to Python.
    #[getter]
    fn buffered(&self) -> usize {
        self.shared.buffered()
    }

    fn __repr__(&self) -> String {
        format!(
            "EventStream(subject={:?}, consumer={:?}, durable={}, closed={})",
            self.shared.filter(),
            self.shared.consumer(),
            self.shared.is_durable(),
            self.closed()
        )
    }
}
