//! The node agent's protocol: requests on `<prefix>.agent.<node>.<verb>` (core NATS request/reply),
//! the report of every process end on `<prefix>.agent.<node>.exited` and of every readiness
//! notification (the systemd `sd_notify` protocol) on `<prefix>.agent.<node>.notify`. Reports are
//! hints for promptness; `status` is the truth a controller reconciles with after missing some.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::resources::Limits;

/// Verbs of the agent's subjects.
pub mod verbs {
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const STATUS: &str = "status";
    pub const LOGS: &str = "logs";
    pub const EXITED: &str = "exited";
    pub const PRESSURE: &str = "pressure";
    /// A service's `sd_notify` message: readiness and status ([`super::Notified`]).
    pub const NOTIFY: &str = "notify";
    /// The node's heartbeat: capacity, labels and allocations ([`crate::resources::NodeReport`]).
    pub const NODE: &str = "node";
}

/// The default stop signal of a process (also a managed service's default).
pub fn default_stop_signal() -> String {
    "SIGTERM".to_string()
}
/// The default grace period between the stop signal and SIGKILL (also a managed service's).
pub fn default_grace_period() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn hundred() -> usize {
    100
}
fn is_false(value: &bool) -> bool {
    !value
}

/// `start`: run a service's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub service: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Used when the agent itself stops (its own shutdown).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    #[serde(default = "default_grace_period", with = "crate::health::duration")]
    pub grace_period: std::time::Duration,
    /// CPU and memory limits the kernel enforces on the process (its cgroup). An agent that
    /// cannot enforce them refuses the start, unless it runs with `--allow-unlimited`.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// The process says when it is ready with the systemd `sd_notify` protocol: the agent gives it
    /// `NOTIFY_SOCKET` and reports its `READY=1` on `<prefix>.agent.<node>.notify`. Left out when
    /// false, so that agents from before it still take every other start.
    #[serde(default, skip_serializing_if = "is_false")]
    pub notify: bool,
}

/// Reply to `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub service: String,
    pub pid: u32,
}

/// `stop`: the stop signal to the process group, the grace period, then SIGKILL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    pub service: String,
    #[serde(default = "default_stop_signal")]
    pub signal: String,
    #[serde(default = "default_grace_period", with = "crate::health::duration")]
    pub grace_period: std::time::Duration,
}

/// How a process ended: `{"by": "code", "code": 0}` or `{"by": "signal", "signal": 9}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Exit {
    Code { code: i32 },
    Signal { signal: i32 },
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code { code: 0 }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code { code } => write!(f, "exit code {code}"),
            Exit::Signal { signal } => write!(f, "signal {signal}"),
        }
    }
}

/// Reply to `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub service: String,
    pub exit: Exit,
}

/// One running process in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningProcess {
    pub service: String,
    pub pid: u32,
    /// The [`StartRequest::fingerprint`] it was started from. Agents from before fingerprints,
    /// and processes started by them, leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The process (or one of its process group or session) sent `READY=1` on the agent's notify
    /// socket. Agents from before notifications leave it out: false.
    #[serde(default)]
    pub ready: bool,
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub running: Vec<RunningProcess>,
}

/// `logs`: the last lines of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    pub service: String,
    #[serde(default = "hundred")]
    pub lines: usize,
}

/// Reply to `logs`: `<RFC 3339 time> <stdout|stderr> <text>` per line, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Logs {
    pub service: String,
    pub lines: Vec<String>,
}

/// Published on `<prefix>.agent.<node>.exited` when a process ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    pub node: String,
    pub service: String,
    pub pid: u32,
    pub exit: Exit,
    pub ran_for_ms: u64,
    /// The end was asked for (`stop`), not a crash.
    pub stopped: bool,
    /// The kernel killed the process (or one of its own) for exceeding its memory limit.
    /// Reports of agents before limits existed leave it out: false.
    #[serde(default)]
    pub oom_killed: bool,
}

/// Published on `<prefix>.agent.<node>.pressure` at the agent's pressure interval: how busy the
/// node is. Shares are 0-1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub node: String,
    /// Busy share of all CPUs since the previous report.
    pub cpu: f64,
    /// Used share of memory: 1 - MemAvailable / MemTotal.
    pub memory: f64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Published on `<prefix>.agent.<node>.notify` for each `sd_notify` message the agent takes from
/// one of its services (at most a few a second per process: the agent drops the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    pub node: String,
    pub service: String,
    /// The service's pid (the leader of its process group), whichever of its processes sent it.
    pub pid: u32,
    /// The process has said `READY=1`, in this message or an earlier one.
    pub ready: bool,
    /// Its last `STATUS=` text, if this message had one (at most [`STATUS_MAX`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Longest `STATUS=` text a notify report carries, in characters; longer ones are cut.
pub const STATUS_MAX: usize = 256;

/// Most lines one `logs` request returns.
pub const LOG_LINES_MAX: usize = 10_000;

impl StartRequest {
    /// What the process is started from, as a stable digest (16 hex digits, FNV-1a 64 of a
    /// canonical JSON array): equal for two requests that start the same program the same way,
    /// whichever manifest version asked. Command, arguments, environment (without
    /// `ORCH_MANIFEST_VERSION`, which every version changes), working directory, limits and
    /// `notify` count; how it is stopped does not. The agent keeps it beside the process and
    /// reports it in `status`, so an orchestrator that finds a service still running (adoption)
    /// can tell whether it runs what it would start now (protocol.md §11).
    pub fn fingerprint(&self) -> String {
        let mut env = self.env.clone();
        env.remove("ORCH_MANIFEST_VERSION");
        let canonical =
            serde_json::json!([self.command, self.args, env, self.workdir, self.limits, self.notify]).to_string();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in canonical.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    pub fn validate(&self) -> Result<(), ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        if self.command.trim().is_empty() {
            return Err(ProtocolError::invalid("command", "must name a program"));
        }
        self.limits.validate("limits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_from_before_limits_still_read() {
        let start: StartRequest = serde_json::from_str(r#"{"service": "web", "command": "/bin/true"}"#).unwrap();
        assert!(start.limits.is_empty());
        let written = serde_json::to_value(&start).unwrap();
        assert!(written.get("limits").is_none(), "no limits, no field: {written}");
        let exited: Exited = serde_json::from_str(
            r#"{"node": "n", "service": "web", "pid": 1, "exit": {"by": "code", "code": 0}, "ran_for_ms": 1, "stopped": false}"#,
        )
        .unwrap();
        assert!(!exited.oom_killed);
    }

    #[test]
    fn a_fingerprint_tells_what_a_process_runs_whichever_version_asked() {
        let start: StartRequest =
            serde_json::from_str(r#"{"service": "web", "command": "/bin/web", "args": ["--v1"], "env": {"A": "1", "ORCH_MANIFEST_VERSION": "3"}}"#)
                .unwrap();
        let fingerprint = start.fingerprint();
        // As protocol.md §11 says a client in another language computes it.
        let canonical = r#"["/bin/web",["--v1"],{"A":"1"},null,{},false]"#;
        let fnv =
            canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        assert_eq!(fingerprint, format!("{fnv:016x}"));
        let mut later = start.clone();
        later.env.insert("ORCH_MANIFEST_VERSION".into(), "4".into());
        later.grace_period = std::time::Duration::from_secs(1);
        assert_eq!(later.fingerprint(), fingerprint, "a later version of the same definition, or another grace period");
        let changed = StartRequest { args: vec!["--v2".into()], ..start.clone() };
        assert_ne!(changed.fingerprint(), fingerprint);
        let env = StartRequest { env: BTreeMap::from([("A".into(), "2".into())]), ..start };
        assert_ne!(env.fingerprint(), fingerprint);
        let running: RunningProcess = serde_json::from_str(r#"{"service": "web", "pid": 7}"#).unwrap();
        assert_eq!(running.fingerprint, None, "from an agent before fingerprints");
    }

    #[test]
    fn payloads_from_before_notifications_still_read() {
        let start: StartRequest = serde_json::from_str(r#"{"service": "web", "command": "/bin/true"}"#).unwrap();
        assert!(!start.notify);
        assert!(serde_json::to_value(&start).unwrap().get("notify").is_none(), "an older agent still takes it");
        let asked = StartRequest { notify: true, ..start };
        assert_eq!(serde_json::to_value(&asked).unwrap()["notify"], true);
        let status: Status =
            serde_json::from_str(r#"{"node": "n", "running": [{"service": "web", "pid": 7}]}"#).unwrap();
        assert_eq!(status.running, [RunningProcess { service: "web".into(), pid: 7, ready: false, fingerprint: None }]);
        let report: Notified = serde_json::from_str(
            r#"{"node": "n", "service": "web", "pid": 7, "ready": true, "at": "2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!((report.ready, report.status), (true, None));
    }

    #[test]
    fn limits_travel_and_are_checked() {
        let start: StartRequest =
            serde_json::from_str(r#"{"service": "web", "command": "/bin/true", "limits": {"cpu": 250, "memory": 64}}"#)
                .unwrap();
        assert_eq!(start.limits, Limits { cpu: Some(250), memory: Some(64) });
        assert_eq!(serde_json::to_value(&start).unwrap()["limits"], serde_json::json!({"cpu": 250, "memory": 64}));
        let mut tiny = start.clone();
        tiny.limits.cpu = Some(5);
        let err = tiny.validate().unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("limits.cpu"), "{err}");
        let mut none = start;
        none.limits.memory = Some(0);
        assert_eq!(none.validate().unwrap_err().0.field.as_deref(), Some("limits.memory"));
    }
}
