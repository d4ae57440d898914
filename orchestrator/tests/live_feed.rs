//! The live event feed `GET /api/v1/ws` against a real orchestrator, NATS and PostgreSQL: subject
//! filters, tokens, resuming after an event id, and a slow client dropped with a notice.

mod common;

use std::time::Duration;

use common::Stack;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

const VIEWER: &str = "viewer:feed-viewer:viewer-secret-0123456789";
const VIEWER_TOKEN: &str = "viewer-secret-0123456789";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn feed_url(stack: &Stack, query: &str) -> String {
    // `>` is not allowed in a URI: the filters travel percent-encoded, as a browser sends them.
    format!("ws://127.0.0.1:{}/api/v1/ws?{}", stack.http_port(), query.replace('>', "%3E"))
}

async fn connect(stack: &Stack, query: &str) -> Result<Socket, tungstenite::Error> {
    tokio_tungstenite::connect_async(feed_url(stack, query)).await.map(|(socket, _)| socket)
}

/// A client with a small, fixed receive buffer (which turns off the kernel's autotuning, up to
/// tens of MiB on some machines), so a client that stops reading is soon seen by the server.
async fn connect_small_buffer(stack: &Stack, query: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], stack.http_port()).into()).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    tokio_tungstenite::client_async(feed_url(stack, query), stream).await.expect("upgrade").0
}

/// The next JSON text frame, skipping pings; `None` once the server closed.
async fn next_frame(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("a frame in time")?;
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).expect("frames are JSON")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Publishes an event-shaped message with a fresh id straight onto the events stream.
async fn publish(stack: &Stack, subject: &str, pad: usize) -> String {
    let id = Uuid::now_v7().to_string();
    let event = json!({"specversion": "1.0", "id": id, "type": "io.orch.test.v1", "source": "test", "data": {"pad": "x".repeat(pad)}});
    common::publish_raw(&stack.js, subject, event.to_string().as_bytes(), Some(&id)).await;
    id
}

fn status_of(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn feed_filters_resumes_and_checks_tokens() {
    let stack = Stack::start_with(|s| s.http.auth.api_keys = vec![VIEWER.parse().unwrap()]).await;

    assert_eq!(status_of(connect(&stack, "").await.unwrap_err()), 401, "no token");
    assert_eq!(status_of(connect(&stack, "token=wrong-token-0123456789").await.unwrap_err()), 401);
    let bad = connect(&stack, &format!("token={VIEWER_TOKEN}&subjects=elsewhere.>")).await.unwrap_err();
    assert_eq!(status_of(bad), 400, "a filter outside the events subjects");

    let mut socket = connect(&stack, &format!("token={VIEWER_TOKEN}&subjects=orch.evt.test.>")).await.unwrap();
    let ready = next_frame(&mut socket).await.unwrap();
    assert_eq!(ready, json!({"type": "ready", "subjects": ["orch.evt.test.>"], "resumed": null}));

    let first = publish(&stack, "orch.evt.test.a", 0).await;
    publish(&stack, "orch.evt.other.a", 0).await;
    let second = publish(&stack, "orch.evt.test.b", 0).await;
    let third = publish(&stack, "orch.evt.test.c", 0).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let frame = next_frame(&mut socket).await.unwrap();
        assert_eq!(frame["type"], "event");
        assert!(frame["subject"].as_str().unwrap().starts_with("orch.evt.test."), "filtered: {frame}");
        seen.push((frame["event"]["id"].as_str().unwrap().to_string(), frame["seq"].as_u64().unwrap()));
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str(), third.as_str()]);
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "stream sequences rise: {seen:?}");
    socket.close(None).await.unwrap();

    // Resume after the second event: exactly the third follows.
    let mut socket =
        connect(&stack, &format!("token={VIEWER_TOKEN}&subjects=orch.evt.test.>&after={second}")).await.unwrap();
    assert_eq!(next_frame(&mut socket).await.unwrap()["resumed"], true);
    assert_eq!(next_frame(&mut socket).await.unwrap()["event"]["id"], third.as_str());

    // A new client can start with the recent past: the matching events among the last messages.
    let mut socket = connect(&stack, &format!("token={VIEWER_TOKEN}&subjects=orch.evt.test.>&replay=3")).await.unwrap();
    assert_eq!(next_frame(&mut socket).await.unwrap()["resumed"], Value::Null);
    // The stream's last 3 messages are other.a, test.b and test.c: the two that match come.
    assert_eq!(next_frame(&mut socket).await.unwrap()["event"]["id"], second.as_str());
    assert_eq!(next_frame(&mut socket).await.unwrap()["event"]["id"], third.as_str());

    // An id that was never published resumes from its time: everything since, nothing lost.
    let unknown = Uuid::now_v7();
    let fourth = publish(&stack, "orch.evt.test.d", 0).await;
    let mut socket =
        connect(&stack, &format!("token={VIEWER_TOKEN}&subjects=orch.evt.test.>&after={unknown}")).await.unwrap();
    assert_eq!(next_frame(&mut socket).await.unwrap()["resumed"], false);
    assert_eq!(next_frame(&mut socket).await.unwrap()["event"]["id"], fourth.as_str());
}

#[tokio::test]
async fn a_slow_client_is_dropped_with_a_notice_and_resumes_exactly() {
    let stack = Stack::start_with(|s| {
        s.http.feed.buffer = 8;
        s.http.feed.stall = Duration::from_millis(500);
    })
    .await;
    let mut slow = connect_small_buffer(&stack, "subjects=orch.evt.blob.>").await;
    assert_eq!(next_frame(&mut slow).await.unwrap()["type"], "ready");
    // A second client that reads is not disturbed by the first.
    let mut fast = connect(&stack, "subjects=orch.evt.blob.>").await.unwrap();
    assert_eq!(next_frame(&mut fast).await.unwrap()["type"], "ready");

    // Events of 64 KiB while the slow client reads nothing and the other reads as they come. How
    // many the socket buffers hold is the kernel's choice (the server's send buffer autotunes), so
    // the test publishes until the server reports the drop, with a bound far past any buffer.
    let (ids, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(frame) = next_frame(&mut fast).await {
            assert_eq!(frame["type"], "event", "{}", frame["type"]);
            if ids.send(frame["event"]["id"].as_str().unwrap().to_string()).is_err() {
                break;
            }
        }
    });
    let metrics = || async {
        let (_, text) = common::http::call_raw(&stack, "GET", "/metrics", None, "text/plain", &[]).await;
        text.as_str().expect("metrics are text").to_string()
    };
    let dropped = || async { metrics().await.lines().any(|l| l == "orch_ws_dropped_total 1") };
    const BATCH: usize = 16;
    const MOST: usize = 1024; // 64 MiB
    let mut published = Vec::new();
    while published.len() < MOST && !dropped().await {
        for _ in 0..BATCH {
            published.push(publish(&stack, "orch.evt.blob.x", 64 * 1024).await);
        }
    }
    // The drop comes once a send has waited for the stall (500 ms): a time, not a number of
    // events. A fast machine publishes the bound before it, so wait for it then.
    common::eventually(Duration::from_secs(30), "the slow client is dropped", || async {
        dropped().await.then_some(())
    })
    .await;
    let mut got = Vec::new();
    while got.len() < published.len() {
        got.push(received.recv().await.expect("the reading client keeps its feed"));
    }
    assert_eq!(got, published, "the reading client got every event in order");
    reader.abort();

    let mut last_event = None;
    let notice = loop {
        let frame = next_frame(&mut slow).await.expect("a notice before the close");
        match frame["type"].as_str() {
            Some("event") => last_event = frame["event"]["id"].as_str().map(String::from),
            Some("dropped") => break frame,
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(next_frame(&mut slow).await.is_none(), "the server closes after the notice");
    assert_eq!(notice["reason"], "slow_consumer");
    let resume_after = notice["resume_after"].as_str().expect("the last delivered id").to_string();
    assert_eq!(Some(&resume_after), last_event.as_ref(), "the notice names the last event delivered");
    let delivered = published.iter().position(|id| *id == resume_after).expect("a published id");
    assert!(delivered + 1 < published.len(), "the client was dropped before the end");

    let mut again = connect(&stack, &format!("subjects=orch.evt.blob.>&after={resume_after}")).await.unwrap();
    assert_eq!(next_frame(&mut again).await.unwrap()["resumed"], true);
    assert_eq!(next_frame(&mut again).await.unwrap()["event"]["id"], published[delivered + 1].as_str());

    assert!(metrics().await.lines().any(|l| l == "orch_ws_dropped_total 1"), "only the slow client was dropped");
}

/// A page of another origin cannot open the live feed through a visitor's browser; the API's own
/// origin can.
#[tokio::test]
async fn a_foreign_origin_cannot_open_the_feed() {
    use tungstenite::client::IntoClientRequest;
    let stack = Stack::start().await;
    let with_origin = |origin: &str| {
        let mut request = feed_url(&stack, "").into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(with_origin("https://attacker.example")).await.unwrap_err();
    assert_eq!(status_of(refused), 403);
    let own = format!("http://127.0.0.1:{}", stack.http_port());
    let (mut socket, _) =
        tokio_tungstenite::connect_async(with_origin(&own)).await.expect("the own origin opens the feed");
    socket.close(None).await.unwrap();
}

/// A plain GET of the feed (no WebSocket handshake) gets the API's JSON error naming `Upgrade`,
/// not a bare text answer.
#[tokio::test]
async fn a_request_without_the_websocket_handshake_gets_a_json_error() {
    let stack = Stack::start().await;
    let (status, reply) = common::http::call(&stack, "GET", "/api/v1/ws", None).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        (reply["error"]["code"].as_str(), reply["error"]["field"].as_str()),
        (Some("malformed_payload"), Some("Upgrade"))
    );
}
