//! Heartbeats on `orch.hb.<instance>`: core NATS, fire-and-forget, high volume. Each renews the
//! lease in memory; a heartbeat with a reply subject gets `{"status": "renewed"}` or a `not_found`
//! error telling the instance to register again.

use std::sync::Arc;

use futures::StreamExt;
use orch_protocol::{ErrorCode, ProtocolError, Subjects};

use crate::nats::error_message;
use crate::registry::{Beat, Registry};
use crate::shutdown::Shutdown;

pub async fn run(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    subjects: Subjects,
    registry: Arc<Registry>,
    mut shutdown: Shutdown,
) {
    tracing::info!(subject = %subjects.heartbeats_all(), "accepting heartbeats");
    loop {
        let message = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = shutdown.requested() => break,
        };
        let Some(id) = subjects.parse_heartbeat(&message.subject) else {
            continue;
        };
        let beat = registry.heartbeat(id);
        if let Some(reply) = message.reply {
            let (headers, body) = match beat {
                Beat::Unknown => error_message(ProtocolError::field(
                    ErrorCode::NotFound,
                    "id",
                    format!("no instance with id {id:?} is registered; register it again"),
                )),
                Beat::Renewed => (async_nats::HeaderMap::new(), bytes::Bytes::from_static(br#"{"status":"renewed"}"#)),
                Beat::NeedsRecovery => {
                    (async_nats::HeaderMap::new(), bytes::Bytes::from_static(br#"{"status":"recovering"}"#))
                }
            };
            let _ = client.publish_with_headers(reply, headers, body).await;
        }
    }
    let _ = sub.unsubscribe().await;
}
