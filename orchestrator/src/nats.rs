//! NATS connection and JetStream provisioning. Streams and the durable consumer are created at
//! start-up if missing; drift in settings that can change in place is reconciled, drift in
//! settings that cannot (retention, storage) is reported and left alone. A stream that holds data
//! is never deleted.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use orch_protocol::error::ErrorReply;
use orch_protocol::{ErrorBody, ProtocolError, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("NATS credentials: {0}")]
    Credentials(String),
    #[error("JetStream request failed while provisioning {what}: {message}")]
    Provision { what: String, message: String },
}

/// How the orchestrator reaches NATS, and the streams it provisions there.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// The name this connection shows in the server's monitoring.
    pub name: String,
    pub credentials: Credentials,
    pub tls: TlsSettings,
    pub streams: StreamSettings,
}

/// The one way the orchestrator authenticates to NATS. Its `Debug` never shows a secret.
#[derive(Clone, PartialEq, Default)]
pub enum Credentials {
    /// No authentication (a development server).
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A file holding an NKey seed (`SU...`).
    NKeyFile(PathBuf),
    /// A credentials file (JWT and NKey seed, as `nsc` writes it).
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::UserPassword { user, .. } => {
                f.debug_struct("UserPassword").field("user", user).field("password", &"***").finish()
            }
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::NKeyFile(path) => f.debug_tuple("NKeyFile").field(path).finish(),
            Credentials::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

/// TLS towards NATS; combines with any [`Credentials`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// CA certificate (PEM) to verify the server with.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to NATS without TLS.
    pub required: bool,
}

/// Settings of the streams the orchestrator provisions.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Replicas of every stream (1 on a single server; 3 on a NATS cluster).
    pub replicas: usize,
    /// How long events are kept on the events stream.
    pub events_max_age: Duration,
    /// How long rejected commands are kept on the dead-letter stream.
    pub dead_letter_max_age: Duration,
    /// A re-publish with the same `Nats-Msg-Id` within this window is dropped by the server.
    pub duplicate_window: Duration,
    /// Most commands waiting on the commands stream; beyond it publishers get an error rather than
    /// older commands being dropped.
    pub commands_max_messages: i64,
    /// Most bytes each stream keeps: beyond them the events and dead-letter streams drop their
    /// oldest messages, and the commands stream refuses new ones.
    pub commands_max_bytes: i64,
    pub events_max_bytes: i64,
    pub dead_letter_max_bytes: i64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            name: "orchestrator".into(),
            credentials: Credentials::None,
            tls: TlsSettings::default(),
            streams: StreamSettings::default(),
        }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            commands_max_messages: 1_000_000,
            commands_max_bytes: 1 << 30,
            events_max_bytes: 1 << 30,
            dead_letter_max_bytes: 256 << 20,
        }
    }
}

/// The connection options of the credentials and TLS settings.
async fn authenticated(settings: &NatsSettings) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut options = match &settings.credentials {
        // async-nats ignores credentials written in the URL: they are taken from it here.
        Credentials::None => match orch_client::url_credentials(&settings.url) {
            Some((user, Some(password))) => async_nats::ConnectOptions::with_user_and_password(user, password),
            Some((token, None)) => async_nats::ConnectOptions::with_token(token),
            None => async_nats::ConnectOptions::new(),
        },
        Credentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        Credentials::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        Credentials::NKeyFile(path) => {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| NatsError::Credentials(format!("nkey file {}: {e}", path.display())))?;
            async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
        }
        Credentials::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsError::Credentials(format!("credentials file {}: {e}", path.display())))?,
    };
    if let Some(ca) = &settings.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &settings.tls.client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if settings.tls.required {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// The headers and body of a reply: `value` as JSON, with the ADR-32 error headers
/// (`Nats-Service-Error-Code`, `Nats-Service-Error`) when it is an error; `unavailable` adds
/// `Orch-Retry-After: 1`, as its HTTP answer adds `Retry-After`.
pub fn reply(value: &impl serde::Serialize, error: Option<&ErrorBody>) -> (async_nats::HeaderMap, bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(error) = error {
        headers.insert(orch_protocol::headers::SERVICE_ERROR_CODE, error.code.status().to_string().as_str());
        headers.insert(orch_protocol::headers::SERVICE_ERROR, error.message.replace(['\r', '\n'], " ").as_str());
        if error.code == orch_protocol::ErrorCode::Unavailable {
            headers.insert(orch_protocol::headers::RETRY_AFTER, "1");
        }
    }
    (headers, serde_json::to_vec(value).expect("a reply serializes").into())
}

/// The reply to a refused request: `{"error": …}` with the error headers.
pub fn error_message(error: ProtocolError) -> (async_nats::HeaderMap, bytes::Bytes) {
    let reply_body = ErrorReply { error: error.0 };
    reply(&reply_body, Some(&reply_body.error))
}

/// Connects with unlimited reconnects: an outage of NATS stalls the orchestrator but never
/// stops it. Connection state changes are logged.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    let url = settings.url.clone();
    authenticated(settings)
        .await?
        .name(&settings.name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Heartbeats arrive in bursts; a deep buffer avoids slow-consumer drops.
        .subscription_capacity(1 << 20)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "NATS subscription fell behind; messages were dropped")
                }
                other => tracing::info!(event = %other, "NATS event"),
            }
        })
        .connect(orch_client::servers(&url).as_slice())
        .await
        .map_err(|source| NatsError::Connect { url: redacted_url(&url), source })
}

pub use orch_client::redacted_url;

/// The stream configurations the orchestrator wants.
pub fn desired_streams(streams: &StreamSettings, subjects: &Subjects) -> Vec<stream::Config> {
    vec![
        stream::Config {
            name: subjects.commands_stream(),
            description: Some("Orchestrator commands, removed once applied".into()),
            subjects: vec![subjects.commands_all()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            // Full means publishers get an error; nothing accepted is silently dropped.
            discard: stream::DiscardPolicy::New,
            max_messages: streams.commands_max_messages,
            max_bytes: streams.commands_max_bytes,
            duplicate_window: streams.duplicate_window,
            num_replicas: streams.replicas,
            ..Default::default()
        },
        stream::Config {
            name: subjects.events_stream(),
            description: Some("Orchestrator events (CloudEvents 1.0, structured JSON)".into()),
            subjects: vec![subjects.events_all()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: streams.events_max_age,
            max_bytes: streams.events_max_bytes,
            duplicate_window: streams.duplicate_window,
            num_replicas: streams.replicas,
            allow_direct: true,
            ..Default::default()
        },
        stream::Config {
            name: subjects.dead_letter_stream(),
            description: Some("Commands the orchestrator rejected, with the reason in headers".into()),
            subjects: vec![subjects.dead_letters_all()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: streams.dead_letter_max_age,
            max_bytes: streams.dead_letter_max_bytes,
            duplicate_window: streams.duplicate_window,
            num_replicas: streams.replicas,
            ..Default::default()
        },
    ]
}

/// The orchestrator's durable consumer on the commands stream.
pub fn desired_consumer(subjects: &Subjects) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects.commands_consumer()),
        description: Some("The orchestrator's command processor".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        // Redelivery is unlimited: bad input is dead-lettered and acknowledged, so only commands
        // waiting for an unavailable database are redelivered, and those must not be lost.
        max_deliver: -1,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

/// Differences between an existing stream's settings and the wanted ones, as
/// `(setting, current, wanted, changeable in place)`.
pub fn drift(current: &stream::Config, wanted: &stream::Config) -> Vec<(&'static str, String, String, bool)> {
    let mut out = Vec::new();
    let mut check = |name, a: String, b: String, mutable| {
        if a != b {
            out.push((name, a, b, mutable));
        }
    };
    check("subjects", format!("{:?}", current.subjects), format!("{:?}", wanted.subjects), true);
    check("retention", format!("{:?}", current.retention), format!("{:?}", wanted.retention), false);
    check("storage", format!("{:?}", current.storage), format!("{:?}", wanted.storage), false);
    check("discard", format!("{:?}", current.discard), format!("{:?}", wanted.discard), true);
    // The server reports "no limit" as -1 where the client's default says 0: the same setting.
    let limit = |v: i64| if v <= 0 { -1 } else { v };
    check("max_messages", limit(current.max_messages).to_string(), limit(wanted.max_messages).to_string(), true);
    check("max_bytes", limit(current.max_bytes).to_string(), limit(wanted.max_bytes).to_string(), true);
    check("max_age", format!("{:?}", current.max_age), format!("{:?}", wanted.max_age), true);
    check(
        "duplicate_window",
        format!("{:?}", current.duplicate_window),
        format!("{:?}", wanted.duplicate_window),
        true,
    );
    // 0 replicas asks for the server's default, one.
    let replicas = |n: usize| n.max(1);
    check("num_replicas", replicas(current.num_replicas).to_string(), replicas(wanted.num_replicas).to_string(), true);
    out
}

fn provision_error(what: &str, e: impl std::fmt::Display) -> NatsError {
    let mut message = e.to_string();
    // JetStream's error 10047: the stream's max_bytes does not fit in what the server has left of
    // its file store (by default 75% of the disk space free when it started).
    if message.contains("10047") {
        message.push_str(
            "; the server's JetStream store cannot reserve this stream's max_bytes: free disk space, \
             raise the server's jetstream max_file_store, or lower --commands-max-bytes, \
             --events-max-bytes or --dead-letter-max-bytes",
        );
    }
    NatsError::Provision { what: what.to_string(), message }
}

/// Creates or reconciles one stream.
pub async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), NatsError> {
    let name = wanted.name.clone();
    let mut existing = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(wanted).await.map_err(|e| provision_error(&name, e))?;
            tracing::info!(stream = %name, "stream created");
            return Ok(());
        }
        Err(e) => return Err(provision_error(&name, e)),
    };
    let info = existing.info().await.map_err(|e| provision_error(&name, e))?.clone();
    let differences = drift(&info.config, &wanted);
    if differences.is_empty() {
        tracing::info!(stream = %name, messages = info.state.messages, "stream ready");
        return Ok(());
    }
    let mut updated = info.config.clone();
    for (setting, current, want, mutable) in &differences {
        if *mutable {
            tracing::warn!(stream = %name, setting, current = %current, wanted = %want, "stream setting drifted; updating in place");
        } else {
            tracing::error!(stream = %name, setting, current = %current, wanted = %want, messages = info.state.messages,
                "stream setting drifted and cannot change in place; the stream is left as it is (it is never deleted). \
                 To apply it, drain or back up the stream and recreate it by hand");
        }
    }
    updated.subjects = wanted.subjects;
    updated.discard = wanted.discard;
    updated.max_messages = wanted.max_messages;
    updated.max_bytes = wanted.max_bytes;
    updated.max_age = wanted.max_age;
    updated.duplicate_window = wanted.duplicate_window;
    updated.num_replicas = wanted.num_replicas;
    if differences.iter().any(|d| d.3)
        && let Err(e) = js.update_stream(&updated).await
    {
        tracing::error!(stream = %name, error = %e, "could not update the stream's settings; continuing with the current ones");
    }
    Ok(())
}

/// Provisions every stream and the consumer, retrying while NATS is unreachable.
pub async fn provision(
    js: &jetstream::Context,
    streams: &StreamSettings,
    subjects: &Subjects,
) -> Result<(), NatsError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match provision_once(js, streams, subjects).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "JetStream provisioning failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn provision_once(
    js: &jetstream::Context,
    streams: &StreamSettings,
    subjects: &Subjects,
) -> Result<(), NatsError> {
    for wanted in desired_streams(streams, subjects) {
        ensure_stream(js, wanted).await?;
    }
    let stream = subjects.commands_stream();
    let wanted = desired_consumer(subjects);
    js.create_consumer_on_stream(wanted, &stream).await.map_err(|e| provision_error("the commands consumer", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_reply_says_when_to_retry_and_others_do_not() {
        use orch_protocol::headers::{RETRY_AFTER, SERVICE_ERROR_CODE};
        let (headers, body) = error_message(ProtocolError::new(orch_protocol::ErrorCode::Unavailable, "busy"));
        assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "503");
        assert_eq!(headers.get(RETRY_AFTER).unwrap().as_str(), "1");
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["error"]["code"], "unavailable");
        let (headers, _) = error_message(ProtocolError::invalid("name", "must not be empty"));
        assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "400");
        assert!(headers.get(RETRY_AFTER).is_none());
    }

    #[test]
    fn credentials_never_show_in_logs_or_debug() {
        assert_eq!(redacted_url("nats://app:secret@h:4222"), "nats://***@h:4222");
        assert_eq!(redacted_url("nats://tok@h:4222,tls://u:p@g:4223"), "nats://***@h:4222,tls://***@g:4223");
        assert_eq!(redacted_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted_url("u:p@h:4222"), "***@h:4222");
        let shown = format!(
            "{:?} {:?}",
            Credentials::UserPassword { user: "app".into(), password: "secret".into() },
            Credentials::Token("tok-secret".into())
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn no_limit_is_no_drift_however_it_is_written() {
        let wanted = stream::Config { name: "S".into(), subjects: vec!["s.>".into()], ..Default::default() };
        let as_reported = stream::Config { max_messages: -1, num_replicas: 1, ..wanted.clone() };
        assert!(drift(&as_reported, &wanted).is_empty(), "{:?}", drift(&as_reported, &wanted));
        let limited = stream::Config { max_messages: 10, ..wanted.clone() };
        let found = drift(&as_reported, &limited);
        assert_eq!(found, vec![("max_messages", "-1".to_string(), "10".to_string(), true)]);
    }

    #[test]
    fn a_stream_that_does_not_fit_the_store_says_what_to_change() {
        let reported = "jetstream error: insufficient storage resources available (code 500, error code 10047)";
        let error = provision_error("ORCH_DLQ", reported).to_string();
        assert!(error.starts_with("JetStream request failed while provisioning ORCH_DLQ: jetstream error"), "{error}");
        assert!(error.contains("max_file_store") && error.contains("--dead-letter-max-bytes"), "{error}");
        let other = provision_error("ORCH_DLQ", "timed out").to_string();
        assert!(!other.contains("max_file_store"), "{other}");
    }
}
