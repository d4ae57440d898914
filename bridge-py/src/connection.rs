//! `Connection`: one NATS connection to the orchestrator's server, shared by every thread of the
//! process that uses it. It sends requests (`<prefix>.req.…`), opens event streams on
//! `<PREFIX>_EVENTS`, and owns the acknowledger that sends the acks of durable events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{ConnectOptions, Subject};
use bytes::Bytes;
use orch_protocol::error::ErrorReply;
use orch_protocol::headers;
use orch_protocol::subjects::Subjects;
use pyo3::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::commands::Request;
use crate::convert::{JsonBytes, json_to_py};
use crate::error::{Error, Result};
use crate::events::{self, EventStream, SubscribeOptions};
use crate::runtime::{block_on, runtime, seconds};

/// How a connection authenticates and secures itself; mirrors `Client.connect`'s arguments.
#[derive(Debug, Clone, Default)]
pub struct ConnectSettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials: Option<String>,
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_required: bool,
    pub prefix: String,
    pub timeout: Duration,
    pub name: Option<String>,
}

/// What a durable event's acknowledgement does (JetStream ack protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Done with it: never delivered again.
    Ack,
    /// Deliver it again now.
    Nak,
    /// Never deliver it again, it cannot be handled (an unreadable event).
    Term,
}

impl AckKind {
    fn payload(self) -> Bytes {
        Bytes::from_static(match self {
            AckKind::Ack => b"+ACK",
            AckKind::Nak => b"-NAK",
            AckKind::Term => b"+TERM",
        })
    }
}

enum AckCommand {
    Send(Subject, AckKind),
    /// Reply once everything queued before has been written to the server.
    Flush(oneshot::Sender<()>),
}

/// Queue of acknowledgements, sent in order by one task. `ack()` from Python only queues (no wait,
/// no GIL release); closing a stream or the connection flushes the queue.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<AckCommand>,
}

impl Acker {
    fn start(client: async_nats::Client) -> Acker {
        let (tx, mut rx) = mpsc::unbounded_channel::<AckCommand>();
        runtime().spawn(async move {
            while let Some(command) = rx.recv().await {
                match command {
                    // A failed publish means the connection is gone: the server redelivers the
                    // event after its ack wait, so nothing is lost.
                    AckCommand::Send(subject, kind) => {
                        let _ = client.publish(subject, kind.payload()).await;
                    }
                    AckCommand::Flush(done) => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
                        let _ = done.send(());
                    }
                }
            }
        });
        Acker { tx }
    }

    pub fn send(&self, subject: Subject, kind: AckKind) {
        let _ = self.tx.send(AckCommand::Send(subject, kind));
    }

    /// Waits until every acknowledgement queued so far is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(AckCommand::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The state behind a `Connection`, shared with its event streams.
pub struct Inner {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub subjects: Subjects,
    pub timeout: Duration,
    pub acker: Acker,
    closed: AtomicBool,
}

impl Inner {
    async fn connect(settings: ConnectSettings) -> Result<Arc<Inner>> {
        let subjects = Subjects::new(&settings.prefix)?;
        let mut options = match &settings.credentials {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| Error::invalid("credentials", format!("cannot read the credentials file {path}: {e}")))?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if settings.user.is_some() || settings.password.is_some() {
            return Err(Error::invalid("user", "give both user and password, or neither"));
        }
        if let Some(token) = &settings.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &settings.tls_ca {
            options = options.add_root_certificates(ca.into());
        }
        match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.into(), key.into()),
            (None, None) => {}
            _ => return Err(Error::invalid("tls_cert", "give both tls_cert and tls_key, or neither")),
        }
        if settings.tls_required {
            options = options.require_tls(true);
        }
        if let Some(name) = &settings.name {
            options = options.name(name);
        }
        let options = options
            .connection_timeout(settings.timeout)
            .request_timeout(Some(settings.timeout))
            // Events arrive in bursts; a larger buffer per subscription keeps the consumer fed.
            .subscription_capacity(65_536);
        let client = options
            .connect(settings.url.as_str())
            .await
            .map_err(|e| Error::Connection(format!("cannot connect to NATS at {}: {e}", settings.url)))?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let acker = Acker::start(client.clone());
        Ok(Arc::new(Inner {
            client,
            jetstream,
            subjects,
            timeout: settings.timeout,
            acker,
            closed: AtomicBool::new(false),
        }))
    }

    pub fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Connection("the client is closed".into())) } else { Ok(()) }
    }

    /// Sends `request` and returns the reply's payload once it is known to be a success of the
    /// expected shape. Error replies (protocol.md §7.2) become [`Error::Remote`].
    pub async fn call(&self, request: Request, timeout: Option<Duration>) -> Result<Bytes> {
        self.ensure_open()?;
        let subject = self.subjects.request(&request.domain, &request.verb);
        let timeout = timeout.unwrap_or(self.timeout);
        let nats_request = async_nats::Request::new().payload(request.body.into()).timeout(Some(timeout));
        let reply = self.client.send_request(subject.clone(), nats_request).await.map_err(|e| match e.kind() {
            RequestErrorKind::TimedOut => Error::Timeout(format!(
                "no reply on {subject} within {:.3}s; the orchestrator may be overloaded or stuck",
                timeout.as_secs_f64()
            )),
            RequestErrorKind::NoResponders => Error::Connection(format!(
                "the orchestrator is not answering on {subject} (no responders): is it running, connected to this \
                 NATS server, and using the subject prefix \"{}\"?",
                self.subjects.prefix()
            )),
            RequestErrorKind::MaxPayloadExceeded => {
                Error::invalid("payload", format!("the request is larger than the NATS server's max_payload: {e}"))
            }
            _ => Error::Connection(format!("request on {subject} failed: {e}")),
        })?;
        let is_error = reply.headers.as_ref().is_some_and(|h| h.get(headers::SERVICE_ERROR_CODE).is_some());
        if is_error || reply.payload.starts_with(b"{\"error\"") {
            return Err(match serde_json::from_slice::<ErrorReply>(&reply.payload) {
                Ok(error) => Error::Remote(error.error),
                Err(_) => {
                    let code =
                        reply.headers.as_ref().and_then(|h| h.get(headers::SERVICE_ERROR_CODE)).map(|v| v.to_string());
                    let message =
                        reply.headers.as_ref().and_then(|h| h.get(headers::SERVICE_ERROR)).map(|v| v.to_string());
                    Error::Decode(format!(
                        "error reply on {subject} without a readable error object (status {}, {})",
                        code.unwrap_or_default(),
                        message.unwrap_or_default()
                    ))
                }
            });
        }
        request.reply.check(&subject, &reply.payload)?;
        Ok(reply.payload)
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.acker.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.drain()).await;
    }
}

/// A connection to the orchestrator over NATS. Made by `Connection.connect` (blocking) or
/// `Connection.connect_async` (awaitable); safe to use from several threads at once.
#[pyclass(frozen, module = "orch_bridge._core")]
pub struct Connection {
    inner: Arc<Inner>,
}

#[allow(clippy::too_many_arguments)]
fn settings_from(
    url: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    credentials: Option<String>,
    tls_ca: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_required: bool,
    prefix: String,
    timeout: f64,
    name: Option<String>,
) -> Result<ConnectSettings> {
    Ok(ConnectSettings {
        url,
        user,
        password,
        token,
        credentials,
        tls_ca,
        tls_cert,
        tls_key,
        tls_required,
        prefix,
        timeout: seconds("timeout", timeout)?,
        name,
    })
}

fn optional_seconds(field: &str, value: Option<f64>) -> Result<Option<Duration>> {
    value.map(|v| seconds(field, v)).transpose()
}

#[pymethods]
impl Connection {
    /// Connects (blocking, GIL released, interruptible).
    #[staticmethod]
    #[pyo3(signature = (url, user=None, password=None, token=None, credentials=None, tls_ca=None, tls_cert=None,
                        tls_key=None, tls_required=false, prefix="orch".to_string(), timeout=5.0, name=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        url: String,
        user: Option<String>,
        password: Option<String>,
        token: Option<String>,
        credentials: Option<String>,
        tls_ca: Option<String>,
        tls_cert: Option<String>,
        tls_key: Option<String>,
        tls_required: bool,
        prefix: String,
        timeout: f64,
        name: Option<String>,
    ) -> PyResult<Connection> {
        let settings = settings_from(
            url,
            user,
            password,
            token,
            credentials,
            tls_ca,
            tls_cert,
            tls_key,
            tls_required,
            prefix,
            timeout,
            name,
        )?;
        let inner = block_on(py, Inner::connect(settings))?;
        Ok(Connection { inner })
    }

    /// Connects; returns an awaitable of the `Connection`.
    #[staticmethod]
    #[pyo3(signature = (url, user=None, password=None, token=None, credentials=None, tls_ca=None, tls_cert=None,
                        tls_key=None, tls_required=false, prefix="orch".to_string(), timeout=5.0, name=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect_async<'py>(
        py: Python<'py>,
        url: String,
        user: Option<String>,
        password: Option<String>,
        token: Option<String>,
        credentials: Option<String>,
        tls_ca: Option<String>,
        tls_cert: Option<String>,
        tls_key: Option<String>,
        tls_required: bool,
        prefix: String,
        timeout: f64,
        name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let settings = settings_from(
            url,
            user,
            password,
            token,
            credentials,
            tls_ca,
            tls_cert,
            tls_key,
            tls_required,
            prefix,
            timeout,
            name,
        )?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let inner = Inner::connect(settings).await?;
            Ok(Connection { inner })
        })
    }

    /// The subject prefix, e.g. `orch`.
    #[getter]
    fn prefix(&self) -> String {
        self.inner.subjects.prefix().to_string()
    }

    /// The default request timeout in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.inner.timeout.as_secs_f64()
    }

    /// The events stream's name, e.g. `ORCH_EVENTS`.
    #[getter]
    fn events_stream(&self) -> String {
        self.inner.subjects.events_stream()
    }

    /// True once `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Sends a request and returns its reply as Python objects (blocking).
    #[pyo3(signature = (request, timeout=None))]
    fn call<'py>(&self, py: Python<'py>, request: &Request, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = optional_seconds("timeout", timeout)?;
        let inner = self.inner.clone();
        let request = request.clone();
        let payload = block_on(py, async move { inner.call(request, timeout).await })?;
        json_to_py(py, &payload)
    }

    /// Sends a request; returns an awaitable of its reply.
    #[pyo3(signature = (request, timeout=None))]
    fn call_async<'py>(&self, py: Python<'py>, request: &Request, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = optional_seconds("timeout", timeout)?;
        let inner = self.inner.clone();
        let request = request.clone();
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(JsonBytes(inner.call(request, timeout).await?)) },
        )
    }

    /// Opens an event stream (blocking while the consumer is created).
    #[pyo3(signature = (subject=None, durable=None, start_time_ns=None, deliver="new".to_string(), auto_ack=false,
                        ack_wait=30.0, batch=512))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &self,
        py: Python<'_>,
        subject: Option<String>,
        durable: Option<String>,
        start_time_ns: Option<i128>,
        deliver: String,
        auto_ack: bool,
        ack_wait: f64,
        batch: usize,
    ) -> PyResult<EventStream> {
        let options = SubscribeOptions::new(
            &self.inner.subjects,
            subject,
            durable,
            start_time_ns,
            &deliver,
            auto_ack,
            ack_wait,
            batch,
        )?;
        let inner = self.inner.clone();
        block_on(py, async move { events::open(inner, options).await })
    }

    /// Opens an event stream; returns an awaitable of the `EventStream`.
    #[pyo3(signature = (subject=None, durable=None, start_time_ns=None, deliver="new".to_string(), auto_ack=false,
                        ack_wait=30.0, batch=512))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe_async<'py>(
        &self,
        py: Python<'py>,
        subject: Option<String>,
        durable: Option<String>,
        start_time_ns: Option<i128>,
        deliver: String,
        auto_ack: bool,
        ack_wait: f64,
        batch: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = SubscribeOptions::new(
            &self.inner.subjects,
            subject,
            durable,
            start_time_ns,
            &deliver,
            auto_ack,
            ack_wait,
            batch,
        )?;
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(events::open(inner, options).await?) })
    }

    /// Deletes a durable consumer of the events stream; False if there was none (blocking).
    fn delete_durable(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        let inner = self.inner.clone();
        block_on(py, async move { events::delete_durable(inner, name).await })
    }

    /// Deletes a durable consumer; returns an awaitable of whether it existed.
    fn delete_durable_async<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(events::delete_durable(inner, name).await?) })
    }

    /// Flushes queued acknowledgements and closes the connection (blocking). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        block_on(py, async move {
            inner.close().await;
            Ok(())
        })
    }

    /// Flushes queued acknowledgements and closes the connection; returns an awaitable.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.close().await;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Connection(prefix={:?}, state={:?})",
            self.inner.subjects.prefix(),
            if self.closed() { "closed".to_string() } else { format!("{:?}", self.inner.client.connection_state()) }
        )
    }
}
