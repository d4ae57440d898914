//! [`Client`]: one NATS connection to the orchestrator's server. It sends requests
//! (`<prefix>.req.…`, protocol.md §2) and checks their replies, opens event streams on
//! `<PREFIX>_EVENTS` ([`crate::events`]), and owns the [`Acker`] that acknowledges durable events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::jetstream::AckKind;
use async_nats::{ConnectOptions, Subject};
use bytes::Bytes;
use orch_protocol::error::ErrorReply;
use orch_protocol::headers;
use orch_protocol::subjects::Subjects;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::requests::{Request, decode};

/// How a connection authenticates and secures itself.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials: Option<String>,
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_required: bool,
    /// The orchestrator's subject prefix, `orch` by default.
    pub prefix: String,
    /// Connection and default request timeout.
    pub timeout: Duration,
    /// The connection's name as the NATS server shows it.
    pub name: Option<String>,
}

impl ConnectSettings {
    /// Plain settings for `url`: no authentication, prefix `orch`, 5 s timeout.
    pub fn new(url: impl Into<String>) -> ConnectSettings {
        ConnectSettings {
            url: url.into(),
            user: None,
            password: None,
            token: None,
            credentials: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            prefix: orch_protocol::subjects::DEFAULT_PREFIX.to_string(),
            timeout: Duration::from_secs(5),
            name: None,
        }
    }
}

/// The credentials written in a NATS URL (the first server's): `(user, Some(password))` for
/// `nats://user:password@host`, `(token, None)` for `nats://token@host`. Percent-encoding is
/// decoded.
pub fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let first = url.split(',').next()?;
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let (userinfo, _) = rest.rsplit_once('@')?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    match userinfo.split_once(':') {
        Some((user, password)) => Some((decode(user), Some(decode(password)))),
        None => Some((decode(userinfo), None)),
    }
}

/// `url` without the credentials of any server in it, as async-nats is given it.
pub fn without_credentials(url: &str) -> String {
    rewrite_userinfo(url, "")
}

/// The servers of `url` (one URL, or several comma-separated: the members of a cluster), each
/// without credentials, for async-nats, which reads a string as one URL.
pub fn servers(url: &str) -> Vec<String> {
    without_credentials(url).split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// `url` (one server URL or several, comma-separated) with any credentials replaced by `***`,
/// for logs and errors: `nats://app:secret@host:4222` becomes `nats://***@host:4222`.
pub fn redacted_url(url: &str) -> String {
    rewrite_userinfo(url, "***@")
}

fn rewrite_userinfo(url: &str, with: &str) -> String {
    url.split(',')
        .map(|server| {
            let (scheme, rest) = server.split_once("://").map_or(("", server), |(s, r)| (s, r));
            let rest = match rest.rsplit_once('@') {
                Some((_, host)) => format!("{with}{host}"),
                None => rest.to_string(),
            };
            if scheme.is_empty() { rest } else { format!("{scheme}://{rest}") }
        })
        .collect::<Vec<_>>()
        .join(",")
}

enum AckCommand {
    Send(Subject, AckKind),
    /// Reply once everything queued before has been written to the server.
    Flush(oneshot::Sender<()>),
}

/// Queue of acknowledgements, sent in order by one task: queuing an ack never waits, and closing
/// a stream or the connection flushes the queue. The payloads are async-nats' own ([`AckKind`]).
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<AckCommand>,
}

impl Acker {
    fn start(client: async_nats::Client) -> Acker {
        let (tx, mut rx) = mpsc::unbounded_channel::<AckCommand>();
        tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                match command {
                    // A failed publish means the connection is gone: the server redelivers the
                    // event after its ack wait, so nothing is lost.
                    AckCommand::Send(subject, kind) => {
                        let _ = client.publish(subject, Bytes::from(kind)).await;
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

    /// Queues the acknowledgement `kind` of the message whose reply subject is `subject`.
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

/// A connection to the orchestrator over NATS; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

struct Inner {
    nats: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    subjects: Subjects,
    /// The NATS user this connection authenticated as, named at the end of each request's
    /// subject (`orch.req.<domain>.<verb>.<user>`) so that the orchestrator records who asked;
    /// the NATS permissions of `scripts/nats-auth.sh` allow each user only its own name there.
    sender: Option<String>,
    timeout: Duration,
    acker: Acker,
    closed: AtomicBool,
}

impl Client {
    /// Connects with `settings`. Must run within a tokio runtime (the acker is a task on it).
    pub async fn connect(settings: ConnectSettings) -> Result<Client> {
        Client::connect_with(settings, |options| options).await
    }

    /// [`Client::connect`], with `customize` applied to the connection's options last (e.g. an
    /// event callback that watches the server's errors).
    pub async fn connect_with(
        settings: ConnectSettings,
        customize: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> Result<Client> {
        let subjects = Subjects::new(&settings.prefix)?;
        let mut options = match &settings.credentials {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| Error::invalid("credentials", format!("cannot read the credentials file {path}: {e}")))?,
            None => ConnectOptions::new(),
        };
        // async-nats ignores credentials written in the URL; they are taken here, so
        // `nats://user:password@host` (or `nats://token@host`) works as every NATS client expects.
        let in_url = url_credentials(&settings.url);
        let (user, password, token) = match (&settings.user, &settings.password, &settings.token, in_url) {
            (None, None, None, Some((user, Some(password)))) => (Some(user), Some(password), None),
            (None, None, None, Some((token, None))) => (None, None, Some(token)),
            _ => (settings.user.clone(), settings.password.clone(), settings.token.clone()),
        };
        if let (Some(user), Some(password)) = (&user, &password) {
            options = options.user_and_password(user.clone(), password.clone());
        } else if user.is_some() || password.is_some() {
            return Err(Error::invalid("user", "give both user and password, or neither"));
        }
        if let Some(token) = &token {
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
        let options = customize(
            options
                .connection_timeout(settings.timeout)
                .request_timeout(Some(settings.timeout))
                // Events arrive in bursts; a larger buffer per subscription keeps the consumer fed.
                .subscription_capacity(65_536),
        );
        let nats = options.connect(servers(&settings.url).as_slice()).await.map_err(|e| {
            Error::Connection(format!("cannot connect to NATS at {}: {e}", redacted_url(&settings.url)))
        })?;
        // A user name that cannot be a subject token is not named: its requests use the plain subjects.
        let sender = user.filter(|u| password.is_some() && orch_protocol::subjects::is_user_token(u));
        Ok(Client::from_nats_as(nats, subjects, settings.timeout, sender))
    }

    /// The NATS user named as the sender of requests, if any.
    pub fn sender(&self) -> Option<&str> {
        self.0.sender.as_deref()
    }

    /// The subject of `request`: naming the sender when there is one.
    fn subject_of(&self, request: &Request) -> String {
        self.0.subjects.request_as(&request.domain, &request.verb, self.0.sender.as_deref())
    }

    /// A client over a connection made elsewhere (tests and benchmarks that hold one already).
    pub fn from_nats(nats: async_nats::Client, subjects: Subjects, timeout: Duration) -> Client {
        Client::from_nats_as(nats, subjects, timeout, None)
    }

    /// [`Client::from_nats`], naming `sender` (the connection's NATS user) as the sender of its
    /// requests (see [`Client::sender`]).
    pub fn from_nats_as(
        nats: async_nats::Client,
        subjects: Subjects,
        timeout: Duration,
        sender: Option<String>,
    ) -> Client {
        let jetstream = async_nats::jetstream::new(nats.clone());
        let acker = Acker::start(nats.clone());
        Client(Arc::new(Inner { nats, jetstream, subjects, sender, timeout, acker, closed: AtomicBool::new(false) }))
    }

    pub fn subjects(&self) -> &Subjects {
        &self.0.subjects
    }

    /// The default request timeout.
    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.0.nats
    }

    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.0.jetstream
    }

    pub fn acker(&self) -> &Acker {
        &self.0.acker
    }

    /// True once [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.is_closed() { Err(Error::Connection("the client is closed".into())) } else { Ok(()) }
    }

    /// Sends `request` and returns the reply's payload once it is known to be a success of the
    /// expected shape. Error replies (protocol.md §7.2) become [`Error::Remote`].
    pub async fn call(&self, request: &Request, timeout: Option<Duration>) -> Result<Bytes> {
        self.ensure_open()?;
        let subject = self.subject_of(request);
        let timeout = timeout.unwrap_or(self.0.timeout);
        let nats_request = async_nats::Request::new().payload(Bytes::from(request.body.clone())).timeout(Some(timeout));
        let reply = self.0.nats.send_request(subject.clone(), nats_request).await.map_err(|e| match e.kind() {
            RequestErrorKind::TimedOut => Error::Timeout(format!(
                "no reply on {subject} within {:.3}s; the orchestrator may be overloaded or stuck",
                timeout.as_secs_f64()
            )),
            RequestErrorKind::NoResponders => Error::Connection(format!(
                "the orchestrator is not answering on {subject} (no responders): is it running, connected to this \
                 NATS server, and using the subject prefix \"{}\"?",
                self.0.subjects.prefix()
            )),
            RequestErrorKind::MaxPayloadExceeded => {
                Error::invalid("payload", format!("the request is larger than the NATS server's max_payload: {e}"))
            }
            _ => Error::Connection(format!("request on {subject} failed: {e}")),
        })?;
        error_reply(&subject, &reply)?;
        request.reply.check(&subject, &reply.payload)?;
        Ok(reply.payload)
    }

    /// [`Client::call`], with the reply decoded as `T`.
    pub async fn call_as<T: DeserializeOwned>(&self, request: &Request, timeout: Option<Duration>) -> Result<T> {
        let payload = self.call(request, timeout).await?;
        decode(&self.subject_of(request), &payload)
    }

    /// Flushes queued acknowledgements and drains the connection. Idempotent.
    pub async fn close(&self) {
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.0.acker.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.nats.drain()).await;
    }
}

/// An error reply (a `Nats-Service-Error-Code` header or an `{"error": ...}` body) as
/// [`Error::Remote`]; anything else is a success.
pub fn error_reply(subject: &str, reply: &async_nats::Message) -> Result<()> {
    let is_error = reply.headers.as_ref().is_some_and(|h| h.get(headers::SERVICE_ERROR_CODE).is_some());
    if !is_error && !reply.payload.starts_with(b"{\"error\"") {
        return Ok(());
    }
    Err(match serde_json::from_slice::<ErrorReply>(&reply.payload) {
        Ok(error) => {
            let hint = reply.headers.as_ref().and_then(|h| h.get(headers::RETRY_AFTER)).map(|v| v.as_str());
            Error::Remote(error.error, Error::parse_retry_after(hint))
        }
        Err(_) => {
            let header = |name: &str| reply.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.to_string());
            Error::Decode(format!(
                "error reply on {subject} without a readable error object (status {}, {})",
                header(headers::SERVICE_ERROR_CODE).unwrap_or_default(),
                header(headers::SERVICE_ERROR).unwrap_or_default()
            ))
        }
    })
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_used_and_never_shown() {
        assert_eq!(url_credentials("nats://app:s%40cret@h:4222"), Some(("app".into(), Some("s@cret".into()))));
        assert_eq!(url_credentials("nats://tok@h:4222,nats://g:4223"), Some(("tok".into(), None)));
        assert_eq!(url_credentials("nats://h:4222"), None);
        assert_eq!(without_credentials("nats://a:b@h:1,tls://c@g:2"), "nats://h:1,tls://g:2");
        assert_eq!(servers("nats://a:b@h:1, tls://c@g:2,"), ["nats://h:1", "tls://g:2"], "each member of a cluster");
        assert_eq!(redacted_url("nats://a:b@h:1,tls://c@g:2"), "nats://***@h:1,tls://***@g:2");
        assert_eq!(redacted_url("u:p@h:4222"), "***@h:4222");
        assert_eq!(redacted_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
