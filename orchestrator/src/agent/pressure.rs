//! Node pressure: the agent measures how busy its node is (CPU from `/proc/stat`, memory from
//! `/proc/meminfo`) and publishes it on `<prefix>.agent.<node>.pressure` at a fixed interval. The
//! lifecycle controller sheds sheddable services when a threshold is crossed.
//!
//! A drill or a test can feed readings from a file instead (the pressure-file setting, JSON
//! `{"cpu": 0.5, "memory": 0.95}`), so shedding is exercised without loading the machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::shutdown::Shutdown;
use orch_protocol::Subjects;
use orch_protocol::agent::{Pressure, verbs};

/// Where readings come from and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureSettings {
    /// How often the agent measures and reports its node's CPU and memory pressure.
    pub interval: Duration,
    /// Read pressure from this JSON file (`{"cpu": 0.2, "memory": 0.95}`, shares 0-1) instead of
    /// measuring it: for drills and tests of load shedding. Re-read at every interval.
    pub file: Option<PathBuf>,
}

impl Default for PressureSettings {
    fn default() -> Self {
        PressureSettings { interval: Duration::from_secs(1), file: None }
    }
}

/// Busy and total CPU time (jiffies) of all CPUs, from the first line of `/proc/stat`.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Used share of memory: 1 - MemAvailable / MemTotal.
fn memory_used(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    (total > 0.0).then(|| (1.0 - available / total).clamp(0.0, 1.0))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Reading {
    cpu: f64,
    memory: f64,
}

fn read_file(path: &Path) -> Result<(f64, f64), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let r: Reading = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let share = |v: f64| if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    Ok((share(r.cpu), share(r.memory)))
}

/// Measures from `/proc`: CPU busy share since the previous call.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    previous: Option<(u64, u64)>,
}

impl Sampler {
    pub(crate) fn sample(&mut self) -> Result<(f64, f64), String> {
        let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("reading /proc/stat: {e}"))?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("reading /proc/meminfo: {e}"))?;
        let now = cpu_times(&stat).ok_or("/proc/stat has no cpu line")?;
        let cpu = match self.previous.replace(now) {
            Some((busy, total)) if now.1 > total => (now.0.saturating_sub(busy)) as f64 / (now.1 - total) as f64,
            _ => 0.0,
        };
        let memory = memory_used(&meminfo).ok_or("/proc/meminfo has no MemTotal/MemAvailable")?;
        Ok((cpu.clamp(0.0, 1.0), memory))
    }
}

/// Publishes a reading every interval until `shutdown` turns true.
pub async fn run(
    client: async_nats::Client,
    subjects: Subjects,
    node: String,
    settings: PressureSettings,
    mut shutdown: Shutdown,
) {
    let subject = subjects.agent(&node, verbs::PRESSURE);
    let mut sampler = Sampler::default();
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.requested() => break,
        }
        let reading = match &settings.file {
            Some(path) => read_file(path),
            None => sampler.sample(),
        };
        let (cpu, memory) = match reading {
            Ok(r) => {
                failing = false;
                r
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot measure node pressure; no reports until it can");
                }
                failing = true;
                continue;
            }
        };
        let report = Pressure { node: node.clone(), cpu, memory, at: chrono::Utc::now() };
        if let Err(e) = super::service::publish_report(&client, &subject, &report).await {
            tracing::debug!(error = %e, "pressure report not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_times(stat), Some((200, 1000)));
        let meminfo = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_used(meminfo), Some(0.75));
        assert_eq!(memory_used("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn measures_this_machine() {
        let mut s = Sampler { previous: None };
        let (cpu, memory) = s.sample().expect("/proc is readable on Linux");
        assert_eq!(cpu, 0.0, "the first sample has no interval yet");
        assert!((0.0..=1.0).contains(&memory) && memory > 0.0);
        let (cpu, _) = s.sample().unwrap();
        assert!((0.0..=1.0).contains(&cpu));
    }
}
