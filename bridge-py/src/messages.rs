//! Plain (core NATS) subscriptions as Python sees them: `MessageStream`, for what is published
//! outside the events stream, such as the services' output on `<prefix>.log.<node>.<unit>`
//! (protocol.md §11). Core NATS keeps nothing: a subscriber receives only what is published while
//! it is subscribed. A pump task moves the messages of every subject into one channel; a
//! subscription the NATS server refuses (its user's permissions) ends the stream with `forbidden`,
//! which the next read raises.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use orch_client::Client;
use orch_protocol::{ErrorBody, ErrorCode};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tokio::sync::{Mutex, mpsc, watch};

use crate::connection::Denials;
use crate::error::{Error, Result};
use crate::runtime::{SIGNAL_POLL, runtime};

/// Messages held for Python before the pump waits (then the NATS client's own buffer fills, and
/// the server drops messages of a subscriber that is too slow, as core NATS does).
const BUFFERED: usize = 1024;
/// Most subjects of one stream.
const SUBJECTS_MAX: usize = 256;

/// One message: its subject and payload.
type Message = (String, Bytes);

struct Shared {
    messages: Mutex<mpsc::Receiver<Result<Message>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    subjects: Vec<String>,
}

impl Shared {
    /// The next message; `Ok(None)` once the stream has ended (closed, or the connection gone).
    async fn next(&self) -> Result<Option<Message>> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let received = self.messages.lock().await.recv().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        received.transpose()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // No receiver: the pump has ended already.
        let _ = self.stop.send(true);
    }
}

/// Checks the subjects of a subscription (the NATS client would accept an invalid one and the
/// server drop it silently).
fn check(subjects: &[String]) -> Result<()> {
    if subjects.is_empty() || subjects.len() > SUBJECTS_MAX {
        return Err(Error::invalid("subjects", format!("give 1-{SUBJECTS_MAX} subjects")));
    }
    for subject in subjects {
        let tokens_ok = subject.split('.').all(|t| !t.is_empty() && !t.chars().any(|c| c.is_whitespace()));
        if subject.is_empty() || !tokens_ok {
            return Err(Error::invalid("subjects", format!("{subject:?} is not a NATS subject")));
        }
    }
    Ok(())
}

fn forbidden(client: &Client, subject: &str, message: &str) -> Error {
    let user = client.sender().map_or_else(|| "this connection's user".to_string(), |u| format!("user {u:?}"));
    Error(orch_client::Error::Remote(
        ErrorBody {
            code: ErrorCode::Forbidden,
            message: format!(
                "the NATS server refused the subscription to {subject}: {user} may not subscribe to it ({message})"
            ),
            field: None,
        },
        None,
    ))
}

/// Subscribes to every subject, waits until the server has the subscriptions (so nothing
/// published after this returns is missed), and starts the pump.
pub(crate) async fn open(client: Client, denials: Denials, subjects: Vec<String>) -> Result<MessageStream> {
    check(&subjects)?;
    let nats = client.nats().clone();
    let refusals = denials.receiver(); // before subscribing: the refusal cannot come earlier
    let mut subscribers = Vec::with_capacity(subjects.len());
    for subject in &subjects {
        let subscriber = nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| Error::connection(format!("cannot subscribe to {subject}: {e}")))?;
        subscribers.push(subscriber);
    }
    nats.flush().await.map_err(|e| Error::connection(format!("cannot subscribe: {e}")))?;

    let (tx, rx) = mpsc::channel(BUFFERED);
    let (stop, mut stopped) = watch::channel(false);
    let mut merged = futures::stream::select_all(subscribers);
    let watched = subjects.clone();
    runtime().spawn(async move {
        let refused = Denials::refused_any(refusals, "subscription to", &watched);
        tokio::pin!(refused);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                (subject, message) = &mut refused => {
                    let _ = tx.send(Err(forbidden(&client, &subject, &message))).await;
                    break;
                }
                next = merged.next() => match next {
                    Some(m) => {
                        if tx.send(Ok((m.subject.to_string(), m.payload))).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        // Dropping the subscribers unsubscribes them.
    });
    let shared = Shared { messages: Mutex::new(rx), stop, closed: AtomicBool::new(false), subjects };
    Ok(MessageStream { shared: Arc::new(shared) })
}

fn to_py<'py>(py: Python<'py>, (subject, payload): Message) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(py, [subject.into_pyobject(py)?.into_any(), PyBytes::new(py, &payload).into_any()])?.into_any())
}

/// The converted result of an async read: `(subject, payload)`, or None once the stream has ended.
pub struct Received(Option<Message>);

impl<'py> IntoPyObject<'py> for Received {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            None => Ok(py.None().into_bound(py)),
            Some(message) => to_py(py, message),
        }
    }
}

/// A core NATS subscription to one or more subjects: `(subject, payload)` tuples as they are
/// published. Made by `Connection.subscribe_messages`.
#[pyclass(frozen, module = "orch_bridge._core")]
pub struct MessageStream {
    shared: Arc<Shared>,
}

/// Blocking: the next message, waiting (GIL released, signals checked) up to `timeout`.
/// `Ok(Some(None))`: nothing within `timeout`; `Ok(None)`: the stream has ended.
fn next_blocking(shared: &Arc<Shared>, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Option<Message>>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut wait = SIGNAL_POLL;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Some(None));
            }
            wait = wait.min(left);
        }
        let waiting = shared.clone();
        let got = py.detach(|| runtime().block_on(async { tokio::time::timeout(wait, waiting.next()).await }));
        match got {
            Ok(next) => return Ok(next.map_err(PyErr::from)?.map(Some)),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

fn optional_timeout(timeout: Option<f64>) -> Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(Error::invalid("timeout", format!("must be a number of seconds, 0 or more (got {t})"))),
    }
}

#[pymethods]
impl MessageStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next `(subject, payload)`; waits as long as it takes. Ends (StopIteration) once the
    /// stream is closed. Raises `PermissionDenied` if the server refused a subscription.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match next_blocking(&self.shared, py, None)? {
            Some(Some(message)) => to_py(py, message).map(Some),
            _ => Ok(None),
        }
    }

    /// The next `(subject, payload)`, or None if none arrives within `timeout` seconds (None:
    /// wait forever). Raises StopIteration once the stream is closed.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match next_blocking(&self.shared, py, optional_timeout(timeout)?)? {
            Some(Some(message)) => to_py(py, message).map(Some),
            Some(None) => Ok(None),
            None => Err(pyo3::exceptions::PyStopIteration::new_err("the message stream is closed")),
        }
    }

    /// Awaitable of the next `(subject, payload)`, or None once the stream has ended.
    fn next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(Received(shared.next().await?)) })
    }

    /// Unsubscribes; what was received and not read is dropped. Idempotent.
    fn close(&self) {
        self.shared.close();
    }

    /// Awaitable version of `close`.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.shared.close();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(()) })
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.shared.close();
        false
    }

    /// The subjects subscribed to.
    #[getter]
    fn subjects(&self) -> Vec<String> {
        self.shared.subjects.clone()
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn __repr__(&self) -> String {
        format!("MessageStream(subjects={:?}, closed={})", self.shared.subjects, self.closed())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_are_checked() {
        assert!(super::check(&["orch.log.*.web-0".into(), "orch.log.>".into()]).is_ok());
        for bad in [vec![], vec!["".to_string()], vec!["orch..log".into()], vec!["orch.log web".into()]] {
            assert_eq!(super::check(&bad).unwrap_err().field(), Some("subjects"), "{bad:?}");
        }
    }
}
