//! `orch.req.cluster.status` (and `…status.<user>`): the group as [`super::view`] has it. Every
//! replica answers (one queue group), the standbys too, so the question "who leads?" has an
//! answer while the leader is gone; one orchestrator alone answers it as well.

use futures::StreamExt;
use orch_protocol::subjects::verbs;
use orch_protocol::{ErrorCode, ProtocolError, Subjects};

use crate::consumers::QUEUE_GROUP;
use crate::nats::error_message;
use crate::shutdown::Shutdown;

/// Subscribes before it returns (so a request sent after it finds it), then answers until
/// `shutdown`.
pub async fn start(
    client: async_nats::Client,
    subjects: Subjects,
    pool: sqlx::PgPool,
    me: Option<String>,
    mut shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sub = client.queue_subscribe(subjects.requests_of(verbs::CLUSTER), QUEUE_GROUP.into()).await?;
    client.flush().await?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                m = sub.next() => match m { Some(m) => m, None => break },
                _ = shutdown.requested() => break,
            };
            let Some(reply_to) = message.reply.clone() else { continue };
            let (headers, body) = match answer(&subjects, &pool, me.as_deref(), &message).await {
                Ok(view) => (async_nats::HeaderMap::new(), serde_json::to_vec(&view).expect("view serializes").into()),
                Err(e) => error_message(e),
            };
            if let Err(e) = client.publish_with_headers(reply_to, headers, body).await {
                tracing::debug!(error = %e, "cluster status reply not sent");
            }
        }
    }))
}

async fn answer(
    subjects: &Subjects,
    pool: &sqlx::PgPool,
    me: Option<&str>,
    message: &async_nats::Message,
) -> Result<super::view::ClusterView, ProtocolError> {
    let base = subjects.request(verbs::CLUSTER, verbs::STATUS);
    let subject = message.subject.as_str();
    let sender_named = subject.strip_prefix(&base).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    if !sender_named {
        return Err(ProtocolError::new(
            ErrorCode::UnknownCommand,
            format!("{subject}: the cluster domain answers only `{base}` (or `{base}.<user>`)"),
        ));
    }
    let body = message.payload.trim_ascii();
    if !(body.is_empty()
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).is_ok_and(|m| m.is_empty()))
    {
        return Err(ProtocolError::invalid("payload", "cluster status takes no input: send nothing or {}"));
    }
    Ok(super::view::load(pool, me).await?)
}
