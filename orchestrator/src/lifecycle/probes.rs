//! Readiness and liveness of managed services, probed by the controller itself with the health
//! checker's probes and thresholds: readiness runs fast while a service starts (so what depends
//! on it starts within moments), liveness at its own interval once it is ready.

use std::time::Duration;

use orch_protocol::health::CheckSpec;
use orch_protocol::registry::Health;

use crate::health::probe::{Prober, Target};
use crate::health::thresholds::Thresholds;

/// Where a managed service listens.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub service: String,
    pub instance_id: String,
    pub address: String,
    /// 0 when the service declares no port (only exec and nats checks make sense then).
    pub port: u32,
}

impl Endpoint {
    fn target(&self) -> Target<'_> {
        Target {
            service: &self.service,
            instance_id: &self.instance_id,
            address: &self.address,
            port: self.port,
            protocol: "http",
        }
    }
}

/// Runs the readiness check every `poll` (at most its own interval) until it passes once; gives
/// up after `deadline` with the last output.
pub async fn wait_ready(
    prober: &Prober,
    spec: &CheckSpec,
    endpoint: &Endpoint,
    poll: Duration,
    deadline: Duration,
) -> Result<(), String> {
    let poll = poll.min(spec.interval);
    let give_up = tokio::time::Instant::now() + deadline;
    let mut last = String::from("the readiness check has not run yet");
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout_at(give_up, prober.run(spec, &endpoint.target())).await;
        match result {
            Ok(r) if r.status == Health::Passing => return Ok(()),
            Ok(r) => last = r.output,
            Err(_) => {}
        }
        if tokio::time::Instant::now() + poll > give_up {
            return Err(last);
        }
        tokio::time::sleep_until(started + poll).await;
    }
}

/// Runs the liveness check at its interval, with its thresholds, and returns the output of the
/// run that made it critical.
pub async fn watch_liveness(prober: &Prober, spec: &CheckSpec, endpoint: &Endpoint) -> String {
    let mut thresholds = Thresholds::new(spec, Health::Passing);
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; the service was just found ready
    loop {
        ticks.tick().await;
        let result = prober.run(spec, &endpoint.target()).await;
        if thresholds.observe(result.status) == Health::Critical {
            return result.output;
        }
    }
}
