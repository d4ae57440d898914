//! `GET /api/v1/ws`: the live event feed over a WebSocket, for dashboards and scripts.
//!
//! Each client reads the events stream through its own ordered JetStream consumer, filtered by
//! the subjects it asked for, so a client never holds back the orchestrator or another client.
//! Between the consumer and the socket sits a queue of `--ws-buffer` events. A client whose queue
//! stays full for `--ws-stall` is slow: it is sent a `dropped` notice naming the last event it
//! got, and disconnected. It resumes with `?after=<that id>`, which continues exactly after that
//! event while it is on the stream. (A client catching up on a backlog keeps freeing room, so it
//! is never taken for a slow one however long the backlog.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream::Stream};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use orch_protocol::{ErrorCode, Subjects};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::shutdown::Shutdown;

pub const PATH: &str = "/api/v1/ws";

/// Most subject filters one client may give.
const MAX_FILTERS: usize = 16;
/// Most messages read to find the event a client resumes after, and how long at most: beyond
/// either, the feed restarts at the event's time (repeats, nothing missed).
const SEEK_MAX: u64 = 100_000;
const SEEK_DEADLINE: Duration = Duration::from_secs(10);

/// Most recent events a client may ask to see first (`replay`).
pub const MAX_REPLAY: u64 = 10_000;
/// A send that takes longer than this means the client stopped reading: it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the goodbye (a notice, the close frame and the client's Close in answer) may take.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for one stored event while looking for the resume point.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// Events published this long before a resume id's own time are searched too: the clocks of the
/// orchestrator that made the id and of the NATS server that stamped the message may differ.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// WebSocket close code 1013, "try again later": sent with the slow-consumer notice.
const CLOSE_TRY_AGAIN: u16 = 1013;
/// WebSocket close code 1001, "going away": the orchestrator is shutting down.
const CLOSE_GOING_AWAY: u16 = 1001;

/// Limits of the live feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSettings {
    /// Events queued for one client.
    pub buffer: usize,
    /// A client whose queue stays full this long is slow: it is sent a notice with the id to
    /// resume after, and disconnected.
    pub stall: Duration,
    /// Most clients at once; more are refused with 503.
    pub max_clients: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings { buffer: 1024, stall: Duration::from_secs(5), max_clients: 256 }
    }
}

/// The feed's settings and the clients' slots, shared by every connection.
#[derive(Clone)]
pub struct Feed {
    pub buffer: usize,
    /// How long a full queue may stay full before its client is dropped.
    pub stall: Duration,
    slots: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl Feed {
    pub fn new(settings: &FeedSettings, shutdown: Shutdown) -> Self {
        Feed {
            buffer: settings.buffer,
            stall: settings.stall,
            slots: Arc::new(Semaphore::new(settings.max_clients)),
            shutdown,
        }
    }
}

/// What a client asked for.
#[derive(Debug, PartialEq)]
struct Query {
    subjects: Vec<String>,
    after: Option<Uuid>,
    /// Start with the matching events among the stream's last `replay` messages.
    replay: u64,
}

/// Parses `?subjects=a,b&after=<event id>&replay=<n>&token=...` (the token is the auth layer's).
fn parse_query(query: Option<&str>, names: &Subjects) -> Result<Query, ApiError> {
    let mut subjects = Vec::new();
    let mut after = None;
    let mut replay = 0;
    for (key, value) in super::extract::query_pairs(query)? {
        match key.as_str() {
            "subjects" => subjects.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from)),
            "after" => {
                let id = Uuid::parse_str(&value).ok().filter(|id| id.get_version_num() == 7).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "after", "must be the id of an event (a UUIDv7)")
                })?;
                after = Some(id);
            }
            "replay" => {
                replay = value.parse().ok().filter(|n| *n <= MAX_REPLAY).ok_or_else(|| {
                    ApiError::field(ErrorCode::ValidationFailed, "replay", format!("must be 0-{MAX_REPLAY}"))
                })?;
            }
            "token" => {}
            other => return Err(super::extract::unknown_parameter(other, "subjects, after, replay or token")),
        }
    }
    let all = names.events_all();
    let root = all.trim_end_matches('>');
    if subjects.is_empty() {
        subjects.push(all.clone());
    }
    if subjects.len() > MAX_FILTERS {
        return Err(ApiError::field(ErrorCode::ValidationFailed, "subjects", format!("at most {MAX_FILTERS} filters")));
    }
    for subject in &subjects {
        if !subject.starts_with(root) || subject.len() == root.len() || !is_filter(subject) {
            return Err(ApiError::field(
                ErrorCode::ValidationFailed,
                "subjects",
                format!(
                    "{subject:?} is not a subject filter under {all} (tokens separated by '.', '*' for one token, '>' last)"
                ),
            ));
        }
    }
    if after.is_some() && replay > 0 {
        return Err(ApiError::field(ErrorCode::ValidationFailed, "replay", "give either after or replay, not both"));
    }
    subjects.sort();
    subjects.dedup();
    Ok(Query { subjects, after, replay })
}

/// A NATS subject filter: non-empty tokens without spaces, wildcards only as whole tokens.
fn is_filter(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    subject.len() <= 256
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                && (!t.contains('*') || *t == "*")
                && (!t.contains('>') || (*t == ">" && i == tokens.len() - 1))
        })
}

/// The frames the server sends, as JSON text.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame<'a> {
    /// The subscription is live; `resumed` says whether `after` was found (null without `after`).
    Ready {
        subjects: &'a [String],
        resumed: Option<bool>,
    },
    Event {
        seq: u64,
        subject: &'a str,
        event: &'a RawValue,
    },
    /// The client fell behind: it reconnects with `after=resume_after`.
    Dropped {
        reason: &'static str,
        message: String,
        resume_after: Option<String>,
    },
    /// The feed failed (NATS unavailable); reconnecting with `after` resumes it.
    Error {
        message: String,
        resume_after: Option<String>,
    },
}

fn text(frame: &Frame) -> Utf8Bytes {
    serde_json::to_string(frame).expect("frames serialize").into()
}

/// The `id` of a CloudEvent, read without parsing the rest.
#[derive(Deserialize)]
struct EventId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

type Messages = pull::Ordered;

/// The live event feed; its frames are described in docs/protocol.md §14.3.
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "live_feed",
    tag = super::openapi::tags::SYSTEM,
    params(
        ("subjects" = Option<String>, Query, description = "Comma-separated NATS subject filters under `<prefix>.evt.` \
            (`*` one token, `>` last); default every event"),
        ("after" = Option<String>, Query, description = "Id of the event (a UUIDv7) to resume after"),
        ("replay" = Option<u64>, Query, description = "Start with the events, among the stream's last `replay` \
            messages (0-10000), that match the filters; not with `after`"),
        ("token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers on a \
            WebSocket"),
    ),
    responses(
        (status = 101, description = "WebSocket upgrade; then JSON text frames of type `ready`, `event`, `dropped` or \
            `error` (docs/protocol.md §14.3)"),
        super::openapi::BadRequest,
        super::openapi::Unavailable,
    )
)]
pub async fn feed(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let query = parse_query(query.as_deref(), &state.subjects)?;
    // A plain GET, or a WebSocket handshake that is not one, gets the API's JSON error too.
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::field(
            ErrorCode::MalformedPayload,
            "Upgrade",
            format!("the live feed is a WebSocket; open it with a WebSocket handshake: {}", rejection.body_text()),
        )
    })?;
    let permit = state.feed.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(ErrorCode::Unavailable, "too many live-feed clients (--ws-max-clients); retry later")
    })?;
    let js = jetstream::new(state.nats.clone());
    let stream = js.get_stream(state.subjects.events_stream()).await.map_err(nats_unavailable)?;
    let (messages, resumed) = match query.after {
        None => (subscribe(&stream, &query.subjects, recent(&stream, query.replay).await?).await?, None),
        Some(after) => {
            let (messages, found) = resume(&stream, &query.subjects, after).await?;
            (messages, Some(found))
        }
    };
    let feed = state.feed.clone();
    let metrics = state.metrics.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        metrics.ws_clients.inc();
        serve(
            socket,
            feed,
            messages,
            Session { subjects: query.subjects, resumed, permit },
            metrics.ws_dropped.clone(),
        )
        .await;
        metrics.ws_clients.dec();
    }))
}

fn nats_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "live feed: NATS unavailable");
    ApiError::new(ErrorCode::Unavailable, "NATS is unavailable; retry later")
}

async fn subscribe(stream: &Stream, subjects: &[String], deliver_policy: DeliverPolicy) -> Result<Messages, ApiError> {
    let config = pull::OrderedConfig { filter_subjects: subjects.to_vec(), deliver_policy, ..Default::default() };
    let consumer = stream.create_consumer(config).await.map_err(nats_unavailable)?;
    consumer.messages().await.map_err(nats_unavailable)
}

/// Where a feed without `after` starts: at the stream's last `replay` messages (of which those
/// matching the filters are sent), or with the next event when `replay` is 0 or the stream empty.
async fn recent(stream: &Stream, replay: u64) -> Result<DeliverPolicy, ApiError> {
    if replay == 0 {
        return Ok(DeliverPolicy::New);
    }
    let last = stream.clone().info().await.map_err(nats_unavailable)?.state.last_sequence;
    Ok(match last {
        0 => DeliverPolicy::New,
        last => DeliverPolicy::ByStartSequence { start_sequence: last.saturating_sub(replay - 1).max(1) },
    })
}

/// Positions a consumer just after event `after`. The event is looked for among the messages
/// stamped from its id's time (less the clock skew) up to those on the stream now. Found, the
/// feed continues exactly after it; not found (expired, or never published on these subjects),
/// it restarts at the id's time, so nothing after it is missed at the price of repeats.
async fn resume(stream: &Stream, subjects: &[String], after: Uuid) -> Result<(Messages, bool), ApiError> {
    let (secs, nanos) = after.get_timestamp().expect("a v7 id has a timestamp").to_unix();
    let made = chrono::DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default();
    let from = made - chrono::Duration::from_std(CLOCK_SKEW).expect("small");
    let start = |at: chrono::DateTime<chrono::Utc>| -> Result<DeliverPolicy, ApiError> {
        let nanos = at.timestamp_nanos_opt().unwrap_or(0).max(0) as i128;
        let start_time = async_nats::datetime::from_nanos(nanos)
            .map_err(|_| ApiError::field(ErrorCode::ValidationFailed, "after", "the id's time is out of range"))?;
        Ok(DeliverPolicy::ByStartTime { start_time })
    };
    let config =
        pull::OrderedConfig { filter_subjects: subjects.to_vec(), deliver_policy: start(from)?, ..Default::default() };
    let mut consumer = stream.create_consumer(config).await.map_err(nats_unavailable)?;
    // Bounded work per caller: an id from long ago would otherwise have the whole stream read.
    // Past the bound the feed restarts at the id's time, as for an id not found.
    let stored = consumer.info().await.map_err(nats_unavailable)?.num_pending.min(SEEK_MAX);
    let mut messages = consumer.messages().await.map_err(nats_unavailable)?;
    let wanted = after.to_string();
    let deadline = tokio::time::Instant::now() + SEEK_DEADLINE;
    for _ in 0..stored {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let message = match tokio::time::timeout(SEEK_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(nats_unavailable(e)),
            Ok(None) | Err(_) => return Err(nats_unavailable("the events stream did not answer")),
        };
        if serde_json::from_slice::<EventId>(&message.payload).is_ok_and(|e| e.id == wanted) {
            return Ok((messages, true));
        }
    }
    Ok((subscribe(stream, subjects, start(made)?).await?, false))
}

struct Session {
    subjects: Vec<String>,
    resumed: Option<bool>,
    /// Held while the client is connected: a slot of `--ws-max-clients`.
    #[allow(dead_code)]
    permit: OwnedSemaphorePermit,
}

/// An event ready to send, with its id for the resume point.
struct Outgoing {
    id: Option<String>,
    text: Utf8Bytes,
}

/// Moves events from the consumer into the client's queue. When the queue stays full for `stall`
/// it flags the overflow and stops: waiting longer would only hold this client's own consumer, but
/// a client that far behind is better told so and resumed.
async fn pump(
    mut messages: Messages,
    queue: mpsc::Sender<Outgoing>,
    stall: Duration,
    overflow: Arc<AtomicBool>,
    dropped: Counter,
) -> Option<String> {
    while let Some(next) = messages.next().await {
        let message = match next {
            Ok(message) => message,
            Err(e) => return Some(format!("reading the events stream failed: {e}")),
        };
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let id = serde_json::from_slice::<EventId>(&message.payload).ok().map(|e| e.id.into_owned());
        let event: &RawValue = match serde_json::from_slice(&message.payload) {
            Ok(raw) => raw,
            Err(_) => {
                tracing::warn!(subject = %message.subject, seq, "live feed: an event that is not JSON was skipped");
                continue;
            }
        };
        let text = text(&Frame::Event { seq, subject: message.subject.as_str(), event });
        match tokio::time::timeout(stall, queue.send(Outgoing { id, text })).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return None,
            Err(_stalled) => {
                // Counted now: the notice itself waits until the client reads again.
                dropped.inc();
                overflow.store(true, Ordering::Release);
                return None;
            }
        }
    }
    Some("the events stream ended".into())
}

/// Sends the feed until the client leaves, falls behind or the orchestrator stops.
async fn serve(socket: WebSocket, feed: Feed, messages: Messages, session: Session, dropped: Counter) {
    let (mut sink, mut incoming) = socket.split();
    let ready = text(&Frame::Ready { subjects: &session.subjects, resumed: session.resumed });
    if sink.send(Message::Text(ready)).await.is_err() {
        return;
    }
    let (queue, mut outgoing) = mpsc::channel(feed.buffer);
    let overflow = Arc::new(AtomicBool::new(false));
    let mut pump = tokio::spawn(pump(messages, queue, feed.stall, overflow.clone(), dropped));
    let mut shutdown = feed.shutdown.clone();
    let stopping = async move {
        // The guard `wait_for` returns is dropped here, before anything else is awaited.
        shutdown.requested().await;
    };
    tokio::pin!(stopping);
    let mut last_id: Option<String> = None;
    let mut delivered = 0u64;
    let goodbye = loop {
        tokio::select! {
            next = outgoing.recv() => {
                let Some(event) = next.filter(|_| !overflow.load(Ordering::Acquire)) else {
                    if overflow.load(Ordering::Acquire) {
                        break Some(slow_consumer_notice(feed.buffer, feed.stall, &last_id));
                    }
                    let why = (&mut pump).await.ok().flatten().unwrap_or_else(|| "the feed stopped".into());
                    break Some((text(&Frame::Error { message: why, resume_after: last_id.clone() }), CLOSE_TRY_AGAIN, "feed failed"));
                };
                match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(event.text))).await {
                    Ok(Ok(())) => {
                        delivered += 1;
                        if event.id.is_some() {
                            last_id = event.id;
                        }
                    }
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        tracing::info!(delivered, "live feed: a client stopped reading; disconnected");
                        break None;
                    }
                }
            }
            message = incoming.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                Some(Ok(_)) => {}
            },
            _ = &mut stopping => {
                break Some((Utf8Bytes::default(), CLOSE_GOING_AWAY, "orchestrator shutting down"));
            }
        }
    };
    pump.abort();
    if let Some((notice, code, reason)) = goodbye {
        let farewell = async {
            if !notice.is_empty() {
                sink.send(Message::Text(notice)).await?;
            }
            sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await?;
            // The closing handshake (RFC 6455 §7.1.1): the server closes the TCP connection only
            // after the client's Close frame. Closing earlier, while the client's Close is on its
            // way, makes the kernel answer it with a reset, and a reset may discard the notice
            // before the client has read it.
            while let Some(Ok(message)) = incoming.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
            Ok::<_, axum::Error>(())
        };
        let _ = tokio::time::timeout(NOTICE_TIMEOUT, farewell).await;
    }
}

fn slow_consumer_notice(buffer: usize, stall: Duration, last_id: &Option<String>) -> (Utf8Bytes, u16, &'static str) {
    tracing::info!(buffer, resume_after = ?last_id, "live feed: a slow client was dropped");
    let message = format!(
        "the client left {buffer} events unread for {}; it was disconnected: reconnect with after=<resume_after> to continue",
        humantime::format_duration(stall)
    );
    (
        text(&Frame::Dropped { reason: "slow_consumer", message, resume_after: last_id.clone() }),
        CLOSE_TRY_AGAIN,
        "slow consumer",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 10_000, failure_persistence: None, ..proptest::prelude::ProptestConfig::default()
        })]

        /// The feed's query parameters from any client: a query or a refusal naming the parameter.
        #[test]
        fn any_query_is_read_or_refused_naming_the_parameter(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "subjects=", "after=", "replay=", "token=", "other=", "&", "=", "orch.evt.>", "orch.evt.*.x",
                    "orch.>", ">", "*", "a..b", "%3E", "%00", "%ZZ", ",", "01a2", "00000000-0000-0000-0000-000000000000",
                    "-1", "18446744073709551616", "100000", " ", "é",
                ]),
                0..12,
            )
        ) {
            let query = parts.concat();
            if let Err(e) = parse_query(Some(&query), &Subjects::default()) {
                proptest::prop_assert!(!e.0.message.trim().is_empty());
            }
        }
    }

    #[test]
    fn query_defaults_to_every_event() {
        let names = Subjects::default();
        let q = parse_query(None, &names).unwrap();
        assert_eq!(q, Query { subjects: vec!["orch.evt.>".into()], after: None, replay: 0 });
    }

    #[test]
    fn query_checks_filters_and_ids() {
        let names = Subjects::default();
        let q = parse_query(Some("subjects=orch.evt.health.>,orch.evt.*.x&token=t"), &names).unwrap();
        assert_eq!(q.subjects, vec!["orch.evt.*.x", "orch.evt.health.>"]);
        let field = |q: &str| parse_query(Some(q), &names).unwrap_err().0.field;
        assert_eq!(field("subjects=other.>").as_deref(), Some("subjects"));
        assert_eq!(field("subjects=orch.evt.>.x").as_deref(), Some("subjects"));
        assert_eq!(field("subjects=orch.evt.a*").as_deref(), Some("subjects"));
        assert_eq!(field("subjects=orch.evt.").as_deref(), Some("subjects"));
        assert_eq!(field("after=nope").as_deref(), Some("after"));
        assert_eq!(field(&format!("after={}", Uuid::new_v4())).as_deref(), Some("after"));
        assert_eq!(field("colour=red").as_deref(), Some("colour"));
        assert_eq!(field("replay=10001").as_deref(), Some("replay"));
        assert_eq!(field(&format!("replay=5&after={}", Uuid::now_v7())).as_deref(), Some("replay"));
        assert_eq!(parse_query(Some("replay=200"), &names).unwrap().replay, 200);
        let id = Uuid::now_v7();
        assert_eq!(parse_query(Some(&format!("after={id}")), &names).unwrap().after, Some(id));
    }
}
