//! `Connection`: one NATS connection to the orchestrator's server (an `orch_client::Client`),
//! shared by every thread of the process that uses it. The client sends the requests, opens the
//! event streams and acknowledges durable events; this module translates to Python, and turns a
//! request the NATS server refuses to carry (its user's permissions) into an immediate
//! `forbidden` error instead of a timeout ([`Denials`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;
use bytes::Bytes;
use orch_client::{Client, ConnectSettings};
use orch_protocol::{ErrorBody, ErrorCode};
use pyo3::prelude::*;
use tokio::sync::broadcast;

use crate::commands::Request;
use crate::convert::{JsonBytes, json_to_py};
use crate::error::{Error, Result};
use crate::events::{self, EventStream};
use crate::messages::{self, MessageStream};
use crate::runtime::{block_on, seconds};

/// The permission violations the NATS server reported on one connection.
///
/// NATS drops a message its user may not publish and tells the connection only asynchronously
/// (`-ERR 'Permissions Violation for Publish to "<subject>"'`), so a refused request would
/// otherwise wait out its whole timeout and look like a stuck orchestrator. Each request watches
/// for the violation naming its subject while it waits for the reply, and fails at once with
/// `forbidden` when it comes.
/// The same holds for a subscription the server refuses (`Permissions Violation for Subscription
/// to "<subject>"`): a core subscription ([`crate::messages`]) ends with `forbidden` when it comes.
#[derive(Clone)]
pub(crate) struct Denials(broadcast::Sender<Arc<str>>);

impl Denials {
    fn new() -> Denials {
        Denials(broadcast::channel(64).0)
    }

    /// The connection's event callback: passes permission violations on, ignores the rest.
    fn watch(&self, options: ConnectOptions) -> ConnectOptions {
        let tx = self.0.clone();
        options.event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) = event
                    && message.to_ascii_lowercase().starts_with("permissions violation")
                {
                    // No receiver: no request is waiting; nothing to tell.
                    let _ = tx.send(message.into());
                }
            }
        })
    }

    /// The violations reported from now on (take it before the publish or subscribe it watches).
    pub(crate) fn receiver(&self) -> broadcast::Receiver<Arc<str>> {
        self.0.subscribe()
    }

    /// Resolves with the server's message once it refuses a publish on `subject`; never
    /// otherwise.
    async fn refused(rx: broadcast::Receiver<Arc<str>>, subject: &str) -> Arc<str> {
        Denials::refused_any(rx, "publish to", &[subject.to_string()]).await.1
    }

    /// Resolves with the subject and the server's message once it refuses `what` (`publish to`,
    /// `subscription to`) of one of `subjects`; never otherwise.
    pub(crate) async fn refused_any(
        mut rx: broadcast::Receiver<Arc<str>>,
        what: &str,
        subjects: &[String],
    ) -> (String, Arc<str>) {
        let quoted: Vec<String> = subjects.iter().map(|s| format!("{what} \"{}\"", s.to_ascii_lowercase())).collect();
        loop {
            match rx.recv().await {
                Ok(message) => {
                    let lower = message.to_ascii_lowercase();
                    if let Some(at) = quoted.iter().position(|q| lower.contains(q)) {
                        return (subjects[at].clone(), message);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

/// `orch_client::Client::connect`, with the server's errors watched ([`Denials`]).
async fn connect(settings: ConnectSettings, denials: &Denials) -> Result<Client> {
    Ok(Client::connect_with(settings, |options| denials.watch(options)).await?)
}

/// Sends `request` and waits for its reply, or for the server's refusal to carry it.
async fn call(
    client: Client,
    denials: Denials,
    request: orch_client::Request,
    timeout: Option<Duration>,
) -> Result<Bytes> {
    let subject = client.subjects().request_as(&request.domain, &request.verb, client.sender());
    let watch = denials.receiver(); // before sending: the refusal cannot come earlier
    tokio::select! {
        reply = client.call(&request, timeout) => Ok(reply?),
        message = Denials::refused(watch, &subject) => {
            let user = client.sender().map_or_else(|| "this connection's user".to_string(), |u| format!("user {u:?}"));
            Err(Error(orch_client::Error::Remote(
                ErrorBody {
                    code: ErrorCode::Forbidden,
                    message: format!(
                        "the NATS server refused the request {}: {user} may not publish on {subject} ({message}); \
                         it needs a NATS user whose permissions allow it",
                        request.name()
                    ),
                    field: None,
                },
                None,
            )))
        }
    }
}

/// A connection to the orchestrator over NATS. Made by `Connection.connect` (blocking) or
/// `Connection.connect_async` (awaitable); safe to use from several threads at once.
#[pyclass(frozen, module = "orch_bridge._core")]
pub struct Connection {
    client: Client,
    denials: Denials,
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
        let denials = Denials::new();
        let watching = denials.clone();
        let client = block_on(py, async move { connect(settings, &watching).await })?;
        Ok(Connection { client, denials })
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
            let denials = Denials::new();
            let client = connect(settings, &denials).await?;
            Ok(Connection { client, denials })
        })
    }

    /// The subject prefix, e.g. `orch`.
    #[getter]
    fn prefix(&self) -> String {
        self.client.subjects().prefix().to_string()
    }

    /// The default request timeout in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.client.timeout().as_secs_f64()
    }

    /// The events stream's name, e.g. `ORCH_EVENTS`.
    #[getter]
    fn events_stream(&self) -> String {
        self.client.subjects().events_stream()
    }

    /// True once `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Sends a request and returns its reply as Python objects (blocking).
    #[pyo3(signature = (request, timeout=None))]
    fn call<'py>(&self, py: Python<'py>, request: &Request, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = optional_seconds("timeout", timeout)?;
        let (client, denials, request) = (self.client.clone(), self.denials.clone(), request.0.clone());
        let payload = block_on(py, call(client, denials, request, timeout))?;
        json_to_py(py, &payload)
    }

    /// Sends a request; returns an awaitable of its reply.
    #[pyo3(signature = (request, timeout=None))]
    fn call_async<'py>(&self, py: Python<'py>, request: &Request, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = optional_seconds("timeout", timeout)?;
        let (client, denials, request) = (self.client.clone(), self.denials.clone(), request.0.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(JsonBytes(call(client, denials, request, timeout).await?))
        })
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
        let options = events::options(
            self.client.subjects(),
            subject,
            durable,
            start_time_ns,
            &deliver,
            auto_ack,
            ack_wait,
            batch,
        )?;
        let client = self.client.clone();
        block_on(py, async move { events::open(client, options).await })
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
        let options = events::options(
            self.client.subjects(),
            subject,
            durable,
            start_time_ns,
            &deliver,
            auto_ack,
            ack_wait,
            batch,
        )?;
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(events::open(client, options).await?) })
    }

    /// Subscribes (core NATS, no stream) to `subjects`, blocking until the server has the
    /// subscriptions; returns the `MessageStream` of what is published on them from then on.
    fn subscribe_messages(&self, py: Python<'_>, subjects: Vec<String>) -> PyResult<MessageStream> {
        let (client, denials) = (self.client.clone(), self.denials.clone());
        block_on(py, async move { messages::open(client, denials, subjects).await })
    }

    /// Subscribes (core NATS) to `subjects`; returns an awaitable of the `MessageStream`.
    fn subscribe_messages_async<'py>(&self, py: Python<'py>, subjects: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let (client, denials) = (self.client.clone(), self.denials.clone());
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(messages::open(client, denials, subjects).await?) },
        )
    }

    /// Deletes a durable consumer of the events stream; False if there was none (blocking).
    fn delete_durable(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        let client = self.client.clone();
        block_on(py, async move { Ok(orch_client::events::delete_durable(&client, &name).await?) })
    }

    /// Deletes a durable consumer; returns an awaitable of whether it existed.
    fn delete_durable_async<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(orch_client::events::delete_durable(&client, &name).await.map_err(crate::error::Error::from)?)
        })
    }

    /// Flushes queued acknowledgements and closes the connection (blocking). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client.clone();
        block_on(py, async move {
            client.close().await;
            Ok(())
        })
    }

    /// Flushes queued acknowledgements and closes the connection; returns an awaitable.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            client.close().await;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Connection(prefix={:?}, state={:?})",
            self.client.subjects().prefix(),
            if self.closed() { "closed".to_string() } else { format!("{:?}", self.client.nats().connection_state()) }
        )
    }
}
