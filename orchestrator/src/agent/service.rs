//! The agent on NATS: answers `start`, `stop`, `status` and `logs` on `<prefix>.agent.<node>.*`
//! and publishes every process end on `<prefix>.agent.<node>.exited` (its services' readiness
//! notifications go out from `super::notify`). Runs embedded in the
//! orchestrator or standalone (`orchestrator agent --node NAME`), connected only to NATS.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use orch_protocol::agent::{self, LogsRequest, StartRequest, StopRequest, verbs};
use orch_protocol::error::parse_json;
use orch_protocol::{ErrorCode, ProtocolError, Subjects};
use serde::Serialize;
use tokio::sync::mpsc;

use super::supervisor::{Exited, ProcessSpec, Supervisor, SupervisorError};
use crate::nats::error_message;
use crate::process::signal_number;
use crate::shutdown::Shutdown;

/// Runs until `shutdown` turns true; the processes go on running under their shims.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    node: String,
    supervisor: Arc<Supervisor>,
    mut exits: mpsc::UnboundedReceiver<Exited>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Until NATS answers, a stop is still heard: an agent that cannot reach NATS can be stopped.
    let subscribed = async {
        let requests = client.subscribe(subjects.agent_all(&node)).await?;
        client.flush().await?;
        anyhow::Ok(requests)
    };
    let mut requests = tokio::select! {
        requests = subscribed => requests?,
        _ = shutdown.requested() => {
            tracing::info!(node = %node, "agent stopped before NATS answered");
            return Ok(());
        }
    };
    tracing::info!(node = %node, subject = %subjects.agent_all(&node), "agent ready");
    let exited_subject = subjects.agent(&node, verbs::EXITED);
    loop {
        tokio::select! {
            // Ends first: the ends found at adoption are reported before any request is answered,
            // so a start of a service that ended while no agent ran follows its end report.
            biased;
            exit = exits.recv() => {
                let Some(e) = exit else { break };
                report_exit(&client, &exited_subject, &node, &supervisor, e).await;
            }
            message = requests.next() => {
                let Some(message) = message else { break };
                let Some(reply) = message.reply.clone() else { continue };
                let verb = message.subject.rsplit('.').next().unwrap_or_default().to_string();
                if verb == verbs::EXITED {
                    continue;
                }
                let (client, supervisor, node) = (client.clone(), supervisor.clone(), node.clone());
                tokio::spawn(async move {
                    let (headers, body) = match answer(&supervisor, &node, &verb, &message.payload).await {
                        Ok(body) => (async_nats::HeaderMap::new(), body),
                        Err(e) => error_message(e),
                    };
                    let _ = client.publish_with_headers(reply, headers, body).await;
                });
            }
            _ = shutdown.requested() => break,
        }
    }
    // The services go on under their shims; the next agent on this node adopts them.
    tracing::info!(
        node = %node,
        running = supervisor.running().len(),
        "agent stopping; its processes keep running for the next agent (`orchestrator agent --cleanup` stops them)"
    );
    let _ = requests.unsubscribe().await;
    Ok(())
}

/// Publishes how a process ended on `<prefix>.agent.<node>.exited`, then forgets its records.
async fn report_exit(client: &async_nats::Client, subject: &str, node: &str, supervisor: &Supervisor, e: Exited) {
    if e.oom_killed {
        tracing::warn!(node = %node, service = %e.service, pid = e.pid, exit = %e.exit, "process OOM-killed: it exceeded its memory limit");
    } else {
        tracing::info!(node = %node, service = %e.service, pid = e.pid, exit = %e.exit, stopped = e.stopped, "process ended");
    }
    let report = agent::Exited {
        node: node.to_string(),
        service: e.service.clone(),
        pid: e.pid,
        exit: e.exit,
        ran_for_ms: e.ran_for.as_millis() as u64,
        stopped: e.stopped,
        oom_killed: e.oom_killed,
    };
    if let Err(e) = publish_report(client, subject, &report).await {
        tracing::warn!(error = %e, "could not publish a process end; status requests still show it");
    }
    supervisor.reported(&e);
}

/// A reply or report as JSON (the agent's types always serialize).
pub(crate) fn json(value: &impl Serialize) -> Bytes {
    serde_json::to_vec(value).expect("an agent message serializes").into()
}

/// Publishes one of the agent's reports (a process's end, a notification, a node or pressure
/// report). A report lost here is made good by the next one or by a status request, so callers
/// only log the error.
pub(crate) fn publish_report(
    client: &async_nats::Client,
    subject: &str,
    report: &impl Serialize,
) -> impl std::future::Future<Output = Result<(), async_nats::client::PublishError>> + Send + 'static {
    // Serialized now: the future holds no borrow of the report.
    let (client, subject, body) = (client.clone(), subject.to_string(), json(report));
    async move { client.publish(subject, body).await }
}

fn signal(field: &str, name: &str) -> Result<i32, ProtocolError> {
    signal_number(name).ok_or_else(|| ProtocolError::invalid(field, format!("unknown signal {name:?}")))
}

fn supervisor_error(e: SupervisorError) -> ProtocolError {
    match e {
        SupervisorError::AlreadyRunning(_) => ProtocolError::field(ErrorCode::Conflict, "service", e.to_string()),
        SupervisorError::NotRunning(_) => ProtocolError::field(ErrorCode::NotFound, "service", e.to_string()),
        SupervisorError::Spawn { .. } => ProtocolError::field(ErrorCode::ValidationFailed, "command", e.to_string()),
        SupervisorError::Limits { .. } => ProtocolError::field(ErrorCode::Refused, "limits", e.to_string()),
        SupervisorError::Notify(_) => ProtocolError::field(ErrorCode::Refused, "notify", e.to_string()),
    }
}

async fn answer(supervisor: &Supervisor, node: &str, verb: &str, payload: &[u8]) -> Result<Bytes, ProtocolError> {
    match verb {
        verbs::START => {
            let r: StartRequest = parse_json(payload)?;
            r.validate()?;
            let spec = ProcessSpec {
                fingerprint: r.fingerprint(),
                service: r.service.clone(),
                command: r.command,
                args: r.args,
                env: r.env,
                workdir: r.workdir.map(Into::into),
                stop_signal: signal("stop_signal", &r.stop_signal)?,
                grace_period: r.grace_period,
                limits: r.limits,
                notify: r.notify,
                logs: r.logs,
            };
            let pid = supervisor.start(&spec).await.map_err(supervisor_error)?;
            Ok(json(&agent::Started { service: r.service, pid }))
        }
        verbs::STOP => {
            let r: StopRequest = parse_json(payload)?;
            let sig = signal("signal", &r.signal)?;
            let grace = r.grace_period.min(Duration::from_secs(3600));
            let exit = supervisor.stop(&r.service, sig, grace).await.map_err(supervisor_error)?;
            Ok(json(&agent::Stopped { service: r.service, exit }))
        }
        verbs::STATUS => {
            let running = supervisor
                .running()
                .into_iter()
                .map(|(service, pid)| agent::RunningProcess {
                    ready: supervisor.is_ready(&service, pid),
                    fingerprint: supervisor.fingerprint(&service),
                    service,
                    pid,
                })
                .collect();
            Ok(json(&agent::Status { node: node.to_string(), running }))
        }
        verbs::LOGS => {
            let r: LogsRequest = parse_json(payload)?;
            r.validate()?;
            let filter = super::search::LogFilter::of_request(&r)?;
            let (dir, service) = (supervisor.log_dir().to_path_buf(), r.service.clone());
            // A search reads up to its scan bound from disk: off the async threads.
            let found = tokio::task::spawn_blocking(move || {
                super::search::search(&dir, &service, &filter, r.lines, r.scan_bytes)
            })
            .await
            .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("reading the log: {e}")))?
            .map_err(|e| ProtocolError::new(ErrorCode::Internal, format!("reading the log: {e}")))?;
            Ok(json(&agent::Logs {
                service: r.service,
                lines: found.lines,
                truncated: found.truncated,
                scanned_bytes: found.scanned_bytes,
            }))
        }
        other => Err(ProtocolError::new(
            ErrorCode::UnknownCommand,
            format!("{other:?} is not an agent verb; use start, stop, status or logs"),
        )),
    }
}
