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
    /// How much of the process's output the agent keeps, where it differs from the agent's own
    /// settings. Left out when empty, so that agents from before it still take the start; not
    /// part of [`StartRequest::fingerprint`]: keeping more or less output does not change what
    /// runs, so a new retention applies at the process's next start, never restarts it.
    #[serde(default, skip_serializing_if = "LogRetention::is_empty")]
    pub logs: LogRetention,
}

/// How much output of one service is kept: the current file rotates once it would pass
/// `max_bytes` or once its first line is older than `max_age`; `keep` rotated files stay, those
/// older than `max_age` go. A field left out takes the agent's setting (`max_age`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRetention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::health::duration::option")]
    pub max_age: Option<std::time::Duration>,
}

impl LogRetention {
    /// Smallest size of one file: below it a file would rotate at every few lines.
    pub const MAX_BYTES_MIN: u64 = 4096;
    /// Most rotated files kept.
    pub const KEEP_MAX: usize = 100;
    /// Shortest age kept.
    pub const MAX_AGE_MIN: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn is_empty(&self) -> bool {
        *self == LogRetention::default()
    }

    /// Checks the bounds; `field` names the retention in errors (`logs`).
    pub fn validate(&self, field: &str) -> Result<(), ProtocolError> {
        if self.max_bytes.is_some_and(|b| b < Self::MAX_BYTES_MIN) {
            return Err(ProtocolError::invalid(
                format!("{field}.max_bytes"),
                format!("at least {} bytes", Self::MAX_BYTES_MIN),
            ));
        }
        if self.keep.is_some_and(|k| k > Self::KEEP_MAX) {
            return Err(ProtocolError::invalid(format!("{field}.keep"), format!("at most {}", Self::KEEP_MAX)));
        }
        if self.max_age.is_some_and(|a| a < Self::MAX_AGE_MIN) {
            return Err(ProtocolError::invalid(format!("{field}.max_age"), "at least 1m"));
        }
        Ok(())
    }
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

/// `logs`: the last `lines` lines of a service's output, or, with any of the optional fields, the
/// last `lines` lines that match them all. The agent reads its retained files from the newest line
/// backwards and stops after `scan_bytes` bytes, so a search of a large log stays bounded; the
/// reply says when it stopped early. Requests from before the search fields stay valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    pub service: String,
    /// Most lines returned (at most [`LOG_LINES_MAX`]).
    #[serde(default = "hundred")]
    pub lines: usize,
    /// Only lines written at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only lines written before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<LogStream>,
    /// Only lines whose text contains this (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Only lines whose text matches this regular expression (Rust `regex` syntax, at most
    /// [`LOG_REGEX_MAX`] characters); not with `contains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Most bytes of log read for the answer (default [`LOG_SCAN_DEFAULT`], at most
    /// [`LOG_SCAN_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_bytes: Option<u64>,
}

impl LogsRequest {
    /// The last `lines` lines of `service`, as before searches existed.
    pub fn last(service: impl Into<String>, lines: usize) -> LogsRequest {
        LogsRequest {
            service: service.into(),
            lines,
            since: None,
            until: None,
            stream: None,
            contains: None,
            regex: None,
            scan_bytes: None,
        }
    }

    /// Checks what the agent cannot check by reading (the regex compiles where it is used).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        if self.lines == 0 || self.lines > LOG_LINES_MAX {
            return Err(ProtocolError::invalid("lines", format!("must be 1-{LOG_LINES_MAX}")));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Err(ProtocolError::invalid("until", "must be later than since"));
        }
        if self.contains.is_some() && self.regex.is_some() {
            return Err(ProtocolError::invalid("regex", "give contains or regex, not both"));
        }
        if self.regex.as_ref().is_some_and(|r| r.len() > LOG_REGEX_MAX) {
            return Err(ProtocolError::invalid("regex", format!("at most {LOG_REGEX_MAX} characters")));
        }
        if self.scan_bytes.is_some_and(|b| b == 0 || b > LOG_SCAN_MAX) {
            return Err(ProtocolError::invalid("scan_bytes", format!("must be 1-{LOG_SCAN_MAX}")));
        }
        Ok(())
    }
}

/// Which output of the process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            _ => Err("must be stdout or stderr".into()),
        }
    }
}

/// One line of a service's output: when it was written, from which stream, and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub time: chrono::DateTime<chrono::Utc>,
    pub stream: LogStream,
    pub text: String,
}

impl LogLine {
    /// Reads a line as the agent keeps it: `<RFC 3339 time> <stdout|stderr> <text>`. `None` for
    /// anything else (a line cut by a full disk).
    pub fn parse(line: &str) -> Option<LogLine> {
        let (time, rest) = line.split_once(' ')?;
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(LogLine {
            time: chrono::DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&chrono::Utc),
            stream: stream.parse().ok()?,
            text: text.to_string(),
        })
    }
}

/// Reply to `logs`: `<RFC 3339 time> <stdout|stderr> <text>` per line, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Logs {
    pub service: String,
    pub lines: Vec<String>,
    /// The scan stopped at `scan_bytes` before the retained output (or the time range) was read
    /// through: older matching lines may exist. Agents from before searches leave it out.
    #[serde(default)]
    pub truncated: bool,
    /// Bytes of log read for this answer.
    #[serde(default)]
    pub scanned_bytes: u64,
}

/// Published by an agent on `<prefix>.log.<node>.<service>` as a service writes output: the new
/// lines, oldest first, at most [`LOG_BATCH_LINES`] of them. Core NATS: a subscriber that is not
/// there misses them (searching with `logs` finds them later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    pub node: String,
    /// The service as the agent knows it: a replica's own name (`web-0`).
    pub service: String,
    pub lines: Vec<LogLine>,
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
/// Bytes of log a `logs` request reads when it does not say.
pub const LOG_SCAN_DEFAULT: u64 = 64 * 1024 * 1024;
/// Most bytes of log one `logs` request may read.
pub const LOG_SCAN_MAX: u64 = 1024 * 1024 * 1024;
/// Longest regular expression of a `logs` request, in bytes.
pub const LOG_REGEX_MAX: usize = 1024;
/// Most lines in one [`LogBatch`].
pub const LOG_BATCH_LINES: usize = 500;

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
        self.limits.validate("limits")?;
        self.logs.validate("logs")
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
