//! A command load for the crash and outage tests: registrations, then updates, then
//! deregistrations, each with a unique `Nats-Msg-Id`, re-published until JetStream acknowledges
//! it (a client that never gives up, as a real one would), and the checks that every command was
//! applied exactly once with exactly one event per state change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use orch_protocol::Subjects;
use serde_json::Value;

#[derive(Clone, Copy)]
pub struct Load {
    pub registers: usize,
    pub updates: usize,
    pub deregisters: usize,
    /// Pause between chunks of 200, so the load spans the failures a test injects.
    pub pace: Duration,
}

impl Load {
    pub fn total(&self) -> usize {
        self.registers + self.updates + self.deregisters
    }

    /// The commands in publishing order: (msg id, subject verb, payload).
    pub fn commands(&self) -> Vec<(String, &'static str, String)> {
        let mut out = Vec::with_capacity(self.total());
        for i in 0..self.registers {
            out.push((format!("reg-{i}"), "register", registration(i, 8080)));
        }
        // Updates touch the instances after the deregistered ones.
        for i in self.deregisters..self.deregisters + self.updates {
            out.push((format!("upd-{i}"), "register", registration(i, 9000)));
        }
        for i in 0..self.deregisters {
            out.push((format!("dereg-{i}"), "deregister", format!(r#"{{"id":"i-{i}"}}"#)));
        }
        out
    }

    /// Publishes in the background; the handle yields the number of retries.
    pub fn spawn_publish(self, js: &jetstream::Context, subjects: &Subjects) -> tokio::task::JoinHandle<usize> {
        let (js, subjects) = (js.clone(), subjects.clone());
        tokio::spawn(async move { self.publish(&js, &subjects).await })
    }

    /// Publishes everything, pipelining up to 200 un-acknowledged messages, and retries each until
    /// it has a PubAck (through NATS restarts). Returns the number of retries.
    ///
    /// The acknowledgements of a chunk are awaited together, each within `ACK_WAIT`: a server
    /// killed while a chunk is in flight costs one wait, not one per message (awaited one after
    /// another, 200 lost acknowledgements once took 200 times as long, past the test's limit).
    /// A load that cannot get through for `GIVE_UP` fails the test with what is left, rather
    /// than hang it.
    pub async fn publish(&self, js: &jetstream::Context, subjects: &Subjects) -> usize {
        const ACK_WAIT: Duration = Duration::from_secs(5);
        const GIVE_UP: Duration = Duration::from_secs(120);
        let mut retries = 0;
        let commands = self.commands();
        for chunk in commands.chunks(200) {
            let mut pending: Vec<&(String, &str, String)> = chunk.iter().collect();
            let mut last_progress = tokio::time::Instant::now();
            while !pending.is_empty() {
                // Sent one after another, in the chunk's order.
                let mut acks = Vec::with_capacity(pending.len());
                for (id, verb, payload) in &pending {
                    let publish = jetstream::message::PublishMessage::build()
                        .payload(payload.clone().into())
                        .message_id(id.as_str());
                    acks.push(js.send_publish(subjects.command("registry", verb), publish).await);
                }
                let acknowledged = futures::future::join_all(acks.into_iter().map(|ack| async move {
                    match ack {
                        Ok(future) => tokio::time::timeout(ACK_WAIT, future).await.is_ok_and(|r| r.is_ok()),
                        Err(_) => false,
                    }
                }))
                .await;
                let failed: Vec<_> =
                    pending.iter().zip(acknowledged).filter(|(_, ok)| !ok).map(|(command, _)| *command).collect();
                if failed.len() < pending.len() {
                    last_progress = tokio::time::Instant::now();
                }
                assert!(
                    last_progress.elapsed() < GIVE_UP,
                    "no PubAck for {} commands (first {}) in {GIVE_UP:?}",
                    failed.len(),
                    failed[0].0
                );
                if !failed.is_empty() {
                    retries += failed.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // Order matters only between a registration and its later update or
                // deregistration, which are in later chunks; a retried chunk is re-sent whole
                // in its original order before the next chunk starts.
                pending = failed;
            }
            tokio::time::sleep(self.pace).await;
        }
        retries
    }

    /// Checks PostgreSQL and the events stream after everything was processed.
    pub async fn verify(&self, pool: &sqlx::PgPool, all_events: &[Value]) {
        // Besides one registry event per change, the load makes only aggregate health events
        // (the service `load` and the system going healthy); no instance changes health. The
        // embedded agent's node joins the inventory (`node_joined`), and comes back `node_up`
        // after an outage long enough to silence it.
        let (events, others): (Vec<Value>, Vec<Value>) =
            all_events.iter().cloned().partition(|e| e["type"].as_str().unwrap().starts_with("io.orch.registry."));
        for e in &others {
            let ty = e["type"].as_str().unwrap();
            assert!(
                ty == "io.orch.health.service_changed.v1"
                    || ty == "io.orch.health.system_changed.v1"
                    || ty.starts_with("io.orch.resource.node_"),
                "unexpected event {e}"
            );
        }
        let events = events.as_slice();
        let processed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_commands").fetch_one(pool).await.unwrap();
        assert_eq!(processed as usize, self.total(), "every command is in the ledger exactly once");
        let instances: i64 = sqlx::query_scalar("SELECT count(*) FROM instances").fetch_one(pool).await.unwrap();
        assert_eq!(instances as usize, self.registers - self.deregisters, "deregistered ones are gone");
        let updated: i64 =
            sqlx::query_scalar("SELECT count(*) FROM instances WHERE port = 9000").fetch_one(pool).await.unwrap();
        assert_eq!(updated as usize, self.updates, "every update applied");
        let wrong_revision: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM instances WHERE revision <> CASE WHEN port = 9000 THEN 2 ELSE 1 END",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(wrong_revision, 0, "no change was applied twice (revisions count changes)");

        let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "no event was published twice");
        let mut per_kind: HashMap<(String, String), usize> = HashMap::new();
        for e in events {
            *per_kind
                .entry((e["type"].as_str().unwrap().to_string(), e["subject"].as_str().unwrap().to_string()))
                .or_default() += 1;
        }
        assert!(per_kind.values().all(|&n| n == 1), "at most one event per kind and instance");
        let count = |ty: &str| events.iter().filter(|e| e["type"] == ty).count();
        assert_eq!(count("io.orch.registry.registered.v1"), self.registers);
        assert_eq!(count("io.orch.registry.updated.v1"), self.updates);
        assert_eq!(count("io.orch.registry.deregistered.v1"), self.deregisters);
        assert_eq!(events.len(), self.total(), "exactly one event per state change and nothing else");
    }
}

fn registration(i: usize, port: u16) -> String {
    format!(r#"{{"id":"i-{i}","name":"load","address":"127.0.0.1","port":{port},"ttl_seconds":3600}}"#)
}

/// Waits until the commands stream and the outbox are empty.
pub async fn wait_drained(js: &jetstream::Context, subjects: &Subjects, pool: &sqlx::PgPool, timeout: Duration) {
    super::eventually(timeout, "commands applied and outbox published", || async {
        let mut stream = js.get_stream(subjects.commands_stream()).await.ok()?;
        let waiting = stream.info().await.ok()?.state.messages;
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await.ok()?;
        (waiting == 0 && outbox == 0).then_some(())
    })
    .await
}
