//! The priority domain's requests (`orch.req.priority.>`), which an AI engine may flood, answered
//! on a thread of their own: its own NATS connection, its own single-threaded runtime, and a lower
//! CPU priority (nice [`NICE`]). Under contention the kernel then runs the registry's threads
//! first, and a runaway engine gets what CPU is left instead of taking its share from the
//! registry's callers (BENCHMARKS.md, "the runaway engine").
//!
//! What the lane decides goes to the priority task on the main runtime, over channels. The lane
//! never touches PostgreSQL itself: a connection opened from its thread would be driven by that
//! thread alone (see `Priorities::get`).

use anyhow::Context as _;
use orch_protocol::Subjects;
use orch_protocol::subjects::verbs;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::requests::{self, Backends, Concurrency};
use crate::nats::{self, NatsSettings};
use crate::shutdown::Shutdown;

/// The lane thread's nice value: a weight about a tenth of a normal thread's.
const NICE: i32 = 10;

/// Starts the lane once its subscription is confirmed by the server. The handle ends when the
/// lane has stopped (at `shutdown`), having answered what it took.
pub async fn start(
    settings: NatsSettings,
    subjects: Subjects,
    backends: Backends,
    max_bytes: usize,
    shutdown: Shutdown,
) -> anyhow::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<()>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("priority-lane".into())
        .spawn(move || {
            lower_cpu_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context("starting the priority lane's runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                let setup = async {
                    let client = nats::connect(&settings).await?;
                    let subject = subjects.requests_of(verbs::PRIORITY);
                    let sub = client.queue_subscribe(subject, super::QUEUE_GROUP.into()).await?;
                    // A round trip: once answered, the subscription is registered.
                    async_nats::jetstream::new(client.clone())
                        .query_account()
                        .await
                        .context("confirming the priority lane's subscription with the NATS server")?;
                    anyhow::Ok((client, sub))
                };
                match setup.await {
                    Err(e) => drop(ready_tx.send(Err(e))),
                    Ok((client, sub)) => {
                        let _ = ready_tx.send(Ok(()));
                        let domain = verbs::PRIORITY;
                        requests::run(
                            domain,
                            Concurrency::InLoop,
                            client,
                            sub,
                            subjects,
                            backends,
                            max_bytes,
                            shutdown,
                        )
                        .await;
                    }
                }
            });
            let _ = done_tx.send(());
        })
        .context("starting the priority lane's thread")?;
    ready_rx.await.context("the priority lane's thread ended at start")??;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

/// Lowers the calling thread's CPU priority (Linux: nice is per thread). Raising a nice value
/// needs no privilege; if it fails anyway the lane runs at normal priority, which is only slower
/// to contain.
fn lower_cpu_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the priority lane's CPU priority");
    }
}
