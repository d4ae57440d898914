//! The manifest of managed services: a TOML file saying what to run, in which order, how to check
//! it and how to recover it. Parsing reports TOML errors with their line; validation reports every
//! problem at once, each with its field path and the line of its service.
//!
//! `docs/manifest.md` documents every field; `examples/stack.toml` is a complete example.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use orch_protocol::health::{CheckKind, CheckSpec, duration};
use orch_protocol::registry::is_valid_name;
use serde::{Deserialize, Serialize};

use crate::problems::{Problem, line_of};
use crate::process::{STOP_SIGNALS, signal_number};

/// What a dependency waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The process was started.
    Started,
    /// It is ready: its readiness check passed, or it notified `READY=1` (`notify`).
    Healthy,
    /// It ran to completion with exit code 0 (a one-shot task, such as a migration).
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

/// A dependency: `db = "healthy"`, or `cache = { condition = "started", required = false }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependencyDecl {
    Condition(Condition),
    Full {
        condition: Condition,
        #[serde(default = "yes")]
        required: bool,
    },
}

/// A dependency after defaults: required ones block the dependent when they fail; optional ones
/// are waited for while they may still come, and skipped when they fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub condition: Condition,
    pub required: bool,
}

impl From<DependencyDecl> for Dependency {
    fn from(d: DependencyDecl) -> Self {
        match d {
            DependencyDecl::Condition(condition) => Dependency { condition, required: true },
            DependencyDecl::Full { condition, required } => Dependency { condition, required },
        }
    }
}

/// When a process that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    /// After a non-zero exit, a signal, or a critical liveness check.
    OnFailure,
    /// Whenever it ends.
    Always,
}

/// Restarts: the policy, the back-off between attempts, and the start-rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    #[serde(default = "on_failure")]
    pub policy: RestartPolicy,
    /// The first delay; it doubles with each attempt.
    #[serde(default = "one_second", with = "duration")]
    pub backoff: Duration,
    #[serde(default = "five_minutes", with = "duration")]
    pub backoff_max: Duration,
    /// The delay starts again from `backoff` once the service stayed healthy this long.
    #[serde(default = "ten_minutes", with = "duration")]
    pub backoff_reset: Duration,
    /// More starts than this within `start_limit_window` put the service in `failed`.
    #[serde(default = "five")]
    pub start_limit: u32,
    #[serde(default = "five_minutes", with = "duration")]
    pub start_limit_window: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: on_failure(),
            backoff: one_second(),
            backoff_max: five_minutes(),
            backoff_reset: ten_minutes(),
            start_limit: five(),
            start_limit_window: five_minutes(),
        }
    }
}

/// How a changed service is replaced while it runs (Nomad's `update` block): a batch of at most
/// `max_parallel` replicas at a time, each batch stopped, started on the new definition and
/// healthy (`ready`) for `min_healthy_time` before the next one begins. A batch not healthy within
/// `healthy_deadline`, or one that crashes, fails the update; with `auto_revert` the last good
/// manifest version is applied again (as a new version). Without an `update` block a changed
/// service is stopped and started again whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    #[serde(default = "one")]
    pub max_parallel: u32,
    #[serde(default = "ten_seconds", with = "duration")]
    pub min_healthy_time: Duration,
    #[serde(default = "five_minutes", with = "duration")]
    pub healthy_deadline: Duration,
    #[serde(default = "yes")]
    pub auto_revert: bool,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        UpdateSpec {
            max_parallel: one(),
            min_healthy_time: ten_seconds(),
            healthy_deadline: five_minutes(),
            auto_revert: true,
        }
    }
}

/// How much of a service's output its agent keeps (`logs = { max_bytes = "10MiB", keep = 3,
/// max_age = "7d" }`); a field left out takes the agent's setting. It applies from the next start
/// of the service: changing it restarts nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSpec {
    /// Size of one file: a number of bytes, or text with a unit (`"512KiB"`, `"10MiB"`, `"1GB"`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "byte_size")]
    pub max_bytes: Option<u64>,
    /// Rotated files kept beside the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
    /// Output older than this goes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "orch_protocol::health::duration::option")]
    pub max_age: Option<Duration>,
}

impl LogsSpec {
    pub fn retention(&self) -> orch_protocol::agent::LogRetention {
        orch_protocol::agent::LogRetention { max_bytes: self.max_bytes, keep: self.keep, max_age: self.max_age }
    }

    pub fn is_empty(&self) -> bool {
        *self == LogsSpec::default()
    }
}

/// Config store keys a service reads (`config = { env = { DB_URL = "web.db.url" }, on_change =
/// "restart" }`, protocol.md §18): each key's value is given to the process as an environment
/// variable at each start (a JSON string as its text, any other value as JSON), and a change of
/// one of them restarts the service (`on_change = "none"`: it reads the new value at its next
/// start). A key that is not set fails the start, which its restart policy retries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Environment variable -> config key.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub on_change: OnChange,
}

/// What a change of a key a service reads does to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Stop it and start it again with the new values (like a restart asked by an operator).
    #[default]
    Restart,
    /// Nothing now: the new value is read at its next start.
    None,
}

impl ConfigSpec {
    /// Whether a change of `key` concerns the service.
    pub fn reads(&self, key: &str) -> bool {
        self.env.values().any(|k| k == key)
    }
}

/// A size in bytes, written as a number or as text with a unit (B, KB, KiB, MB, MiB, GB, GiB).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size such as \"10MiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1_000_000,
        "MiB" => 1024 * 1024,
        "GB" => 1_000_000_000,
        "GiB" => 1024 * 1024 * 1024,
        other => return Err(format!("{other:?} is not a size unit: B, KB, KiB, MB, MiB, GB or GiB")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(size: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match size {
            Some(size) => s.serialize_u64(*size),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Written::deserialize(d)? {
            Written::Bytes(n) => Ok(Some(n)),
            Written::Text(text) => super::parse_byte_size(&text).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn yes() -> bool {
    true
}
fn on_failure() -> RestartPolicy {
    RestartPolicy::OnFailure
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn five() -> u32 {
    5
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn fifty() -> u8 {
    50
}
fn loopback() -> String {
    "127.0.0.1".to_string()
}
fn default_max_parallel() -> usize {
    16
}
fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Most replicas of one service.
pub const COUNT_MAX: u32 = 1000;
/// Largest CPU a service may ask for, as agents take limits: 1000 cores.
pub const CPU_MAX: u64 = orch_protocol::resources::Limits::CPU_MAX;
/// Smallest CPU limit: the kernel's smallest quota is 1 ms of a 100 ms period.
pub const CPU_MIN: u64 = orch_protocol::resources::Limits::CPU_MIN;
/// Largest memory a service may ask for: 16 TiB.
pub const MEMORY_MAX: u64 = 16 * 1024 * 1024;
/// Smallest memory limit: below it a process is killed before it has started.
pub const MEMORY_MIN: u64 = 4;

/// One managed service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The program, run without a shell.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent's own by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, DependencyDecl>,
    /// Services this one is bound to: when one of them is restarted, this one is restarted after it.
    #[serde(default)]
    pub binds_to: Vec<String>,
    /// A failure of a critical service stops the whole start-up.
    #[serde(default)]
    pub critical: bool,
    /// How long the service may take from start to ready before the attempt counts as failed.
    #[serde(default = "sixty_seconds", with = "duration")]
    pub startup_timeout: Duration,
    /// Decides `ready` (and the `healthy` condition); without one (and without `notify`), a
    /// started service is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<CheckSpec>,
    /// The service says itself when it is ready, with the systemd `sd_notify` protocol (like
    /// systemd's `Type=notify`): `ready` once it sends `READY=1` to `$NOTIFY_SOCKET`, within
    /// `startup_timeout`. It replaces the readiness check for reaching `ready`; a `readiness`
    /// check, if also given, stays the check of its registry instance.
    #[serde(default)]
    pub notify: bool,
    /// Critical means restart (by the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<CheckSpec>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "orch_protocol::agent::default_stop_signal")]
    pub stop_signal: String,
    /// Between the stop signal and SIGKILL.
    #[serde(default = "orch_protocol::agent::default_grace_period", with = "duration")]
    pub grace_period: Duration,
    /// 0-100: the service's baseline priority unless an operator set one through the priority
    /// API. Among services ready to start at the same moment, higher first; restarts are queued
    /// by it; under node pressure, sheddable services are shed lowest first.
    #[serde(default = "fifty")]
    pub priority: u8,
    /// May be stopped when its node is under CPU or memory pressure (lowest priority first), and
    /// is started again once the pressure has cleared for a while.
    #[serde(default)]
    pub sheddable: bool,
    /// The node whose agent runs it: a hard pin. Without one, the scheduler places it (each
    /// replica) on a node that is up, satisfies its `constraints` and has room for its
    /// `resources`, by its `placement` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What each replica asks of its node: `cpu` in millicores (1000 = one core), `memory` in
    /// MiB. The agent enforces them as limits (cgroups) and placement counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<orch_protocol::resources::Resources>,
    /// How many replicas run: each its own process and registry instance, named
    /// `<service>-0` … `<service>-<count - 1>` (one replica keeps the service's own name).
    /// Replica `i` listens on `port + i`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// Node labels each replica's node must have: `"zone == a"`, `"zone != a"`,
    /// `"disk in ssd, nvme"`, `"disk not in hdd"`, `"gpu"` (present), `"!gpu"` (absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<crate::resources::Constraint>,
    /// How the scheduler chooses among the nodes that fit: `spread` (replicas on as many nodes
    /// as possible, then the node with the most room; the default) or `binpack` (the fullest
    /// node that still fits).
    #[serde(default)]
    pub placement: crate::resources::Strategy,
    /// The quota group it counts against (`[quotas]`, set by admins): all the services of one
    /// group together may ask for no more CPU and memory than its quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How a change to it is rolled out while it runs; without one, it is stopped and started
    /// again whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// How much of its output is kept (see [`LogsSpec`]).
    #[serde(default, skip_serializing_if = "LogsSpec::is_empty")]
    pub logs: LogsSpec,
    /// Config store keys it reads (see [`ConfigSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,
    /// The service a replica belongs to (set when a manifest is read, never written in one).
    #[serde(skip)]
    pub replica_of: Option<String>,
    /// Where it listens: registered in the registry and the target of its checks.
    #[serde(default = "loopback")]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl ServiceSpec {
    /// Whether a process started from `other` is the one this entry would start: equal but for
    /// how many replicas there are, how changes are rolled out and how much output is kept
    /// (scaling, or changing the update strategy or the retention, replaces no running replica).
    pub fn same_process(&self, other: &ServiceSpec) -> bool {
        let strip = |s: &ServiceSpec| ServiceSpec { count: 1, update: None, logs: LogsSpec::default(), ..s.clone() };
        strip(self) == strip(other)
    }
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Most services starting at once.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: usize,
    /// When a critical service fails, stop what was started, in reverse order.
    #[serde(default = "yes")]
    pub stop_on_critical_failure: bool,
    pub services: BTreeMap<String, ServiceSpec>,
}

/// Everything wrong with a manifest.
pub type ManifestError = crate::problems::Problems;

impl Manifest {
    /// Parses and validates `text`. Every problem is reported, each with the line of its service.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_declared(text).map(Manifest::expanded)
    }

    /// [`Manifest::parse`] without expanding replicated services into their replicas: the
    /// services as declared (what a diff between versions compares).
    pub fn parse_declared(text: &str) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ManifestError::one("manifest", "manifest", line, e.message())
        })?;
        for spec in manifest.services.values_mut() {
            for (check, id) in [(&mut spec.readiness, "readiness"), (&mut spec.liveness, "liveness")] {
                if let Some(check) = check {
                    if check.id.is_empty() {
                        check.id = id.to_string();
                    }
                    check.normalize();
                }
            }
        }
        let problems = manifest.problems();
        if problems.is_empty() {
            Ok(manifest)
        } else {
            let problems = problems
                .into_iter()
                .map(|mut p| {
                    let service = p.field.strip_prefix("services.").and_then(|r| r.split('.').next());
                    p.line = service.and_then(|s| service_line(text, s));
                    p
                })
                .collect();
            Err(ManifestError { document: "manifest", problems })
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::one("manifest", "manifest", None, format!("{}: {e}", path.display())))?;
        Manifest::parse(&text)
    }

    /// The manifest with every replicated service (`count` > 1) replaced by its replicas,
    /// `<name>-0` … `<name>-<count - 1>`, each a service of its own with the same entry; a
    /// dependency on (or a binding to) a replicated service becomes one on each of its replicas.
    fn expanded(self) -> Manifest {
        let replicas = |name: &str, spec: &ServiceSpec| -> Vec<String> {
            if spec.count > 1 {
                (0..spec.count).map(|i| format!("{name}-{i}")).collect()
            } else {
                vec![name.to_string()]
            }
        };
        let units_of: BTreeMap<String, Vec<String>> =
            self.services.iter().map(|(name, spec)| (name.clone(), replicas(name, spec))).collect();
        let mut services = BTreeMap::new();
        for (name, spec) in &self.services {
            let mut unit = spec.clone();
            unit.depends_on = spec
                .depends_on
                .iter()
                .flat_map(|(dep, decl)| units_of[dep].iter().map(move |u| (u.clone(), *decl)))
                .collect();
            unit.binds_to = spec.binds_to.iter().flat_map(|b| units_of[b].iter().cloned()).collect();
            for (i, replica) in units_of[name].iter().enumerate() {
                let mut unit = unit.clone();
                if spec.count > 1 {
                    unit.replica_of = Some(name.clone());
                    // Replicas may share a node: each listens on a port of its own.
                    unit.port = spec.port.map(|p| p + i as u32);
                }
                services.insert(replica.clone(), unit);
            }
        }
        Manifest { services, ..self }
    }

    /// The service whose replica `unit` is (itself when it is not replicated).
    pub fn service_of<'a>(&'a self, unit: &'a str) -> &'a str {
        self.services.get(unit).and_then(|s| s.replica_of.as_deref()).unwrap_or(unit)
    }

    /// The units of a service: its replicas, or itself.
    pub fn units_of(&self, service: &str) -> Vec<String> {
        if self.services.get(service).is_some_and(|s| s.replica_of.is_none()) {
            return vec![service.to_string()];
        }
        self.services.iter().filter(|(_, s)| s.replica_of.as_deref() == Some(service)).map(|(n, _)| n.clone()).collect()
    }

    /// The dependencies of `service` with their defaults.
    pub fn dependencies(&self, service: &str) -> impl Iterator<Item = (&str, Dependency)> {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|s| s.depends_on.iter().map(|(name, d)| (name.as_str(), Dependency::from(*d))))
    }

    /// Every problem but cycles (the graph reports those).
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(Problem { field, line: None, message });
        if self.services.is_empty() {
            problem("services".into(), "the manifest declares no service".into());
        }
        if self.max_parallel == 0 {
            problem("max_parallel".into(), "must be at least 1".into());
        }
        for (name, spec) in &self.services {
            let at = |field: &str| format!("services.{name}.{field}");
            if !is_valid_name(name) {
                problem(
                    format!("services.{name}"),
                    "a service name is 1-63 of lower-case letters, digits, '-' or '_', starting and ending with a \
                     letter or digit"
                        .into(),
                );
            }
            if spec.command.trim().is_empty() {
                problem(at("command"), "must name a program".into());
            }
            for key in spec.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    problem(
                        at(&format!("env.{key}")),
                        "an environment name must be non-empty, without '=' or NUL".into(),
                    );
                }
            }
            for (variable, key) in spec.config.iter().flat_map(|c| c.env.iter()) {
                let field = at(&format!("config.env.{variable}"));
                if variable.is_empty() || variable.contains('=') || variable.contains('\0') {
                    problem(field.clone(), "an environment name must be non-empty, without '=' or NUL".into());
                }
                if spec.env.contains_key(variable) {
                    problem(field.clone(), format!("{variable} is also set in env; give it one source"));
                }
                if let Err(e) = orch_protocol::config_store::validate_key("key", key) {
                    problem(field, e.0.message);
                }
            }
            for (dep, decl) in &spec.depends_on {
                let field = at(&format!("depends_on.{dep}"));
                let Some(target) = self.services.get(dep) else {
                    problem(field, format!("no service named {dep:?} in the manifest"));
                    continue;
                };
                if dep == name {
                    problem(field, "a service cannot depend on itself".into());
                    continue;
                }
                let condition = Dependency::from(*decl).condition;
                if condition == Condition::Healthy && target.readiness.is_none() && !target.notify {
                    problem(
                        field.clone(),
                        format!(
                            "condition \"healthy\" needs a readiness check on {dep:?} (services.{dep}.readiness) or \
                             readiness by notification (services.{dep}.notify = true)"
                        ),
                    );
                }
                if condition == Condition::Completed && target.restart.policy == RestartPolicy::Always {
                    problem(field, format!("condition \"completed\": {dep:?} restarts always, so it never completes"));
                }
            }
            for (i, bound) in spec.binds_to.iter().enumerate() {
                let field = at(&format!("binds_to[{i}]"));
                if bound == name {
                    problem(field, "a service cannot bind to itself".into());
                } else if !self.services.contains_key(bound) {
                    problem(field, format!("no service named {bound:?} in the manifest"));
                }
            }
            if spec.priority > 100 {
                problem(at("priority"), format!("must be 0-100 (got {})", spec.priority));
            }
            if spec.startup_timeout < Duration::from_secs(1) || spec.startup_timeout > Duration::from_secs(24 * 3600) {
                problem(at("startup_timeout"), "must be between 1s and 24h".into());
            }
            if spec.grace_period > Duration::from_secs(3600) {
                problem(at("grace_period"), "must be at most 1h".into());
            }
            if signal_number(&spec.stop_signal).is_none() {
                let names: Vec<&str> = STOP_SIGNALS.iter().map(|(n, _)| *n).collect();
                problem(
                    at("stop_signal"),
                    format!("unknown signal {:?}; use one of {}", spec.stop_signal, names.join(", ")),
                );
            }
            if spec.count == 0 || spec.count > COUNT_MAX {
                problem(at("count"), format!("must be 1-{COUNT_MAX} (got {})", spec.count));
            } else if spec.count > 1 {
                let last = format!("{name}-{}", spec.count - 1);
                if !is_valid_name(&last) {
                    problem(
                        at("count"),
                        format!(
                            "the replicas' names ({name}-0 … {last}) must be valid service names: shorten the name"
                        ),
                    );
                }
                for i in 0..spec.count {
                    let replica = format!("{name}-{i}");
                    if self.services.contains_key(&replica) {
                        problem(at("count"), format!("replica {replica:?} would have the name of another service"));
                    }
                }
            }
            if let Some(r) = &spec.resources {
                if r.cpu > CPU_MAX {
                    problem(at("resources.cpu"), format!("at most {CPU_MAX} millicores (1000 cores)"));
                } else if r.cpu != 0 && r.cpu < CPU_MIN {
                    problem(at("resources.cpu"), format!("at least {CPU_MIN} millicores, or 0 for no CPU limit"));
                }
                if r.memory > MEMORY_MAX {
                    problem(at("resources.memory"), format!("at most {MEMORY_MAX} MiB (16 TiB)"));
                }
                if r.memory != 0 && r.memory < MEMORY_MIN {
                    problem(at("resources.memory"), format!("at least {MEMORY_MIN} MiB, or 0 for no memory limit"));
                }
                if r.is_zero() {
                    problem(
                        at("resources"),
                        "asks for nothing: give cpu (millicores) or memory (MiB), or leave resources out".into(),
                    );
                }
            }
            if let Some(group) = &spec.group
                && !is_valid_name(group)
            {
                problem(at("group"), "a group name is 1-63 of lower-case letters, digits, '-' or '_'".into());
            }
            if let Some(update) = &spec.update {
                if update.max_parallel == 0 {
                    problem(at("update.max_parallel"), "must be at least 1".into());
                }
                if update.healthy_deadline < Duration::from_secs(1)
                    || update.healthy_deadline > Duration::from_secs(24 * 3600)
                {
                    problem(at("update.healthy_deadline"), "must be between 1s and 24h".into());
                } else if update.min_healthy_time >= update.healthy_deadline {
                    problem(
                        at("update.min_healthy_time"),
                        format!(
                            "must be shorter than update.healthy_deadline ({})",
                            humantime::format_duration(update.healthy_deadline)
                        ),
                    );
                }
            }
            if let Err(e) = spec.logs.retention().validate("logs") {
                problem(at(e.0.field.as_deref().unwrap_or("logs")), e.0.message.clone());
            }
            if let Some(node) = &spec.node
                && !is_valid_name(node)
            {
                problem(at("node"), "a node name is 1-63 of lower-case letters, digits, '-' or '_'".into());
            }
            if let Some(port) = spec.port
                && !(1..=65_535).contains(&port)
            {
                problem(at("port"), "must be between 1 and 65535".into());
            } else if let Some(port) = spec.port
                && spec.count > 1
                && port + (spec.count - 1) > 65_535
            {
                problem(
                    at("port"),
                    format!("replica {} would listen on {}: above 65535", spec.count - 1, port + spec.count - 1),
                );
            }
            let r = &spec.restart;
            if r.backoff.is_zero() || r.backoff > r.backoff_max {
                problem(at("restart.backoff"), "must be positive and at most restart.backoff_max".into());
            }
            if r.start_limit == 0 || r.start_limit_window.is_zero() {
                problem(at("restart.start_limit"), "the start limit and its window must be positive".into());
            }
            for (check, field) in [(&spec.readiness, "readiness"), (&spec.liveness, "liveness")] {
                let Some(check) = check else { continue };
                if let Err(e) = check.validate(&at(field)) {
                    let body = e.body();
                    problem(body.field.clone().unwrap_or_else(|| at(field)), body.message.clone());
                }
                let needs_port = matches!(check.kind, CheckKind::Tcp)
                    || (check.kind == CheckKind::Http && check.url.as_deref().is_none_or(|u| u.starts_with('/')));
                if needs_port && spec.port.is_none() && check.port.is_none() {
                    problem(
                        at(field),
                        format!(
                            "a {} check on the service's own address needs services.{name}.port",
                            check.kind.as_str()
                        ),
                    );
                }
                if check.kind == CheckKind::Ttl {
                    problem(
                        at(&format!("{field}.kind")),
                        "a managed service's checks are run by the orchestrator: use http, tcp, nats or exec".into(),
                    );
                }
            }
        }
        problems
    }
}

/// The line of the `[services.<name>]` header (or the first `services.<name>.` key).
fn service_line(text: &str, name: &str) -> Option<usize> {
    let header = format!("[services.{name}");
    let dotted = format!("services.{name}.");
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            (l.starts_with(&header) && l[header.len()..].starts_with([']', '.'])) || l.starts_with(&dotted)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Graph;

    const STACK: &str = r#"
max_parallel = 4

[services.db]
command = "/usr/bin/db"
port = 5432
critical = true
priority = 90
readiness = { kind = "tcp", interval = "200ms" }

[services.migrate]
command = "/usr/bin/migrate"
restart = { policy = "never" }
depends_on = { db = "healthy" }

[services.api]
command = "/usr/bin/api"
args = ["--port", "8080"]
port = 8080
depends_on = { migrate = "completed", cache = { condition = "started", required = false } }
binds_to = ["db"]
liveness = { kind = "http", url = "/health", interval = "1s", failures_before_critical = 3 }

[services.cache]
command = "/usr/bin/cache"
"#;

    #[test]
    fn parses_with_defaults() {
        let m = Manifest::parse(STACK).unwrap();
        assert_eq!(m.max_parallel, 4);
        let api = &m.services["api"];
        assert_eq!(api.grace_period, Duration::from_secs(30));
        assert_eq!(api.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(api.restart.backoff, Duration::from_secs(1));
        assert_eq!(api.priority, 50);
        assert_eq!(api.liveness.as_ref().unwrap().id, "liveness");
        let deps: Vec<_> = m.dependencies("api").collect();
        assert_eq!(
            deps,
            vec![
                ("cache", Dependency { condition: Condition::Started, required: false }),
                ("migrate", Dependency { condition: Condition::Completed, required: true }),
            ]
        );
    }

    #[track_caller]
    fn problems(text: &str) -> Vec<Problem> {
        Manifest::parse(text).unwrap_err().problems
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let text = r#"
[services.a]
command = "x"
depends_on = { ghost = "started", a = "started" }

[services.b]
command = ""
priority = 101
stop_signal = "SIGNOPE"
depends_on = { a = "healthy" }
"#;
        let found = problems(text);
        let fields: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.field.as_str(), p.line)).collect();
        assert!(fields.contains(&("services.a.depends_on.ghost", Some(2))), "{found:?}");
        assert!(fields.contains(&("services.a.depends_on.a", Some(2))), "{found:?}");
        assert!(fields.contains(&("services.b.command", Some(6))), "{found:?}");
        assert!(fields.contains(&("services.b.priority", Some(6))), "{found:?}");
        assert!(fields.contains(&("services.b.stop_signal", Some(6))), "{found:?}");
        assert!(fields.contains(&("services.b.depends_on.a", Some(6))), "healthy needs readiness: {found:?}");
    }

    #[test]
    fn a_service_that_notifies_its_readiness_meets_the_healthy_condition() {
        let text = r#"
[services.daemon]
command = "x"
notify = true

[services.client]
command = "x"
depends_on = { daemon = "healthy" }
"#;
        let m = Manifest::parse(text).unwrap();
        assert!(m.services["daemon"].notify && !m.services["client"].notify);
        let without = text.replace("notify = true\n", "");
        let found = problems(&without);
        assert_eq!(found[0].field, "services.client.depends_on.daemon", "{found:?}");
        assert!(found[0].message.contains("services.daemon.notify"), "{found:?}");
    }

    #[test]
    fn toml_errors_carry_their_line() {
        let found = problems("[services.a]\ncommand = \"x\"\ngrace_period = 30\n");
        assert_eq!(found[0].line, Some(3), "{found:?}");
        let found = problems("[services.a]\ncommand = \"x\"\ncolour = \"red\"\n");
        assert!(found[0].message.contains("colour"), "{found:?}");
    }

    #[test]
    fn replicas_become_services_of_their_own_and_dependencies_follow_them() {
        let text = r#"
[services.db]
command = "/usr/bin/db"

[services.api]
command = "/usr/bin/api"
count = 3
resources = { cpu = 500, memory = 256 }
depends_on = { db = "started" }

[services.web]
command = "/usr/bin/web"
depends_on = { api = "started" }
binds_to = ["api"]
"#;
        let m = Manifest::parse(text).unwrap();
        let names: Vec<&str> = m.services.keys().map(String::as_str).collect();
        assert_eq!(names, ["api-0", "api-1", "api-2", "db", "web"]);
        let api1 = &m.services["api-1"];
        assert_eq!(api1.replica_of.as_deref(), Some("api"));
        assert_eq!(api1.resources, Some(orch_protocol::resources::Resources::new(500, 256)));
        assert_eq!(api1.depends_on.keys().collect::<Vec<_>>(), ["db"]);
        let web = &m.services["web"];
        assert_eq!(web.depends_on.keys().collect::<Vec<_>>(), ["api-0", "api-1", "api-2"], "one on each replica");
        assert_eq!(web.binds_to, ["api-0", "api-1", "api-2"]);
        assert_eq!(m.service_of("api-2"), "api");
        assert_eq!(m.service_of("db"), "db");
        assert_eq!(m.units_of("api"), ["api-0", "api-1", "api-2"]);
        assert_eq!(m.units_of("db"), ["db"]);
        assert!(m.units_of("ghost").is_empty());
        assert!(Graph::new(&m).is_ok());
        // Reading the same text again gives the same units: a stored version resumes as applied.
        assert_eq!(Manifest::parse(text).unwrap(), m);
    }

    #[test]
    fn counts_and_resources_are_checked() {
        let text = r#"
[services.a]
command = "x"
count = 0

[services.b]
command = "x"
count = 2
resources = { cpu = 2000000, memory = 2 }

[services.b-1]
command = "x"

[services.c]
command = "x"
resources = { cpu = 0 }

[services.d]
command = "x"
resources = { cpu = 100, disk = 5 }
"#;
        let found = problems(text);
        // An unknown field inside resources is a TOML error, reported alone with its line.
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("disk"), "{found:?}");
        let found = problems(&text.replace(", disk = 5", ""));
        let fields: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.field.as_str(), p.line)).collect();
        assert!(fields.contains(&("services.a.count", Some(2))), "{found:?}");
        assert!(fields.contains(&("services.b.count", Some(6))), "b-1 collides: {found:?}");
        assert!(fields.contains(&("services.b.resources.cpu", Some(6))), "{found:?}");
        assert!(fields.contains(&("services.b.resources.memory", Some(6))), "{found:?}");
        assert!(fields.contains(&("services.c.resources", Some(14))), "{found:?}");
        let long = format!("[services.{}]\ncommand = \"x\"\ncount = 10\n", "a".repeat(62));
        assert!(problems(&long)[0].message.contains("shorten"), "{:?}", problems(&long));
    }

    #[test]
    fn an_update_strategy_has_defaults_and_is_checked() {
        let m = Manifest::parse("[services.a]\ncommand = \"x\"\ncount = 2\nupdate = {}\n").unwrap();
        assert_eq!(m.services["a-0"].update, Some(UpdateSpec::default()));
        assert_eq!(
            UpdateSpec::default(),
            UpdateSpec {
                max_parallel: 1,
                min_healthy_time: Duration::from_secs(10),
                healthy_deadline: Duration::from_secs(300),
                auto_revert: true
            }
        );
        let text = r#"
[services.a]
command = "x"
update = { max_parallel = 0, min_healthy_time = "1m", healthy_deadline = "30s" }

[services.b]
command = "x"
update = { healthy_deadline = "2d" }
"#;
        let found = problems(text);
        let fields: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.field.as_str(), p.line)).collect();
        assert_eq!(
            fields,
            [
                ("services.a.update.max_parallel", Some(2)),
                ("services.a.update.min_healthy_time", Some(2)),
                ("services.b.update.healthy_deadline", Some(6)),
            ],
            "{found:?}"
        );
        assert!(found[1].message.contains("shorter than update.healthy_deadline (30s)"), "{found:?}");
    }

    #[test]
    fn log_retention_is_read_checked_and_restarts_nothing() {
        let text = "[services.a]\ncommand = \"x\"\nlogs = { max_bytes = \"10MiB\", keep = 5, max_age = \"7d\" }\n";
        let m = Manifest::parse(text).unwrap();
        let logs = m.services["a"].logs;
        assert_eq!(logs.max_bytes, Some(10 * 1024 * 1024));
        assert_eq!(logs.keep, Some(5));
        assert_eq!(logs.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        let plain = Manifest::parse("[services.a]\ncommand = \"x\"\n").unwrap();
        assert!(plain.services["a"].same_process(&m.services["a"]), "retention is not part of the process");
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("2 KB"), Ok(2000));
        assert!(parse_byte_size("10 parsecs").unwrap_err().contains("unit"));
        let bad = "[services.a]\ncommand = \"x\"\n\n[services.b]\ncommand = \"x\"\nlogs = { max_bytes = 10, keep = 1000, max_age = \"1s\" }\n";
        let found = problems(bad);
        let fields: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.field.as_str(), p.line)).collect();
        assert!(fields.contains(&("services.b.logs.max_bytes", Some(4))), "{found:?}");
        let unit = problems(&bad.replace("max_bytes = 10", "max_bytes = \"10 XB\""));
        assert!(unit[0].message.contains("XB"), "{unit:?}");
    }
}
