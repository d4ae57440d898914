//! Health checks on the wire: what a client declares (a [`CheckSpec`]), the state the orchestrator
//! keeps for each check ([`Check`]), TTL updates, maintenance, and the aggregated health of services
//! and of the whole system. Validation lives here so every client can check input before sending it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Health of a check or an instance. The lease alone gives `passing` or `critical`; checks can
/// also report `warning`. Ordered from best to worst, so the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        match s {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }
}

/// Limits and defaults of checks. Documented in `docs/protocol.md`; change both together.
pub mod limits {
    use std::time::Duration;

    pub const CHECKS_MAX: usize = 16;
    pub const CHECK_ID_MAX: usize = 64;
    pub const URL_MAX: usize = 2048;
    pub const HEADERS_MAX: usize = 32;
    pub const EXPECT_BODY_MAX: usize = 1024;
    pub const ARGS_MAX: usize = 64;
    pub const ARG_MAX: usize = 4096;
    /// Outputs (response bodies, command output, TTL notes) are kept up to this many bytes.
    pub const OUTPUT_MAX: usize = 4096;
    pub const THRESHOLD_MAX: u32 = 100;
    pub const INTERVAL_MIN: Duration = Duration::from_millis(100);
    pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
    pub const TIMEOUT_MIN: Duration = Duration::from_millis(10);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const REASON_MAX: usize = 512;
}

/// The id of the check that stands for the heartbeat lease. Every instance has it; it cannot be
/// declared, replaced or removed.
pub const LEASE_CHECK: &str = "lease";

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Passive: the service reports `passing` / `warning` / `critical` itself before `ttl` runs
    /// out; silence turns it critical.
    Ttl,
    /// `GET` (or `method`) on a URL: 2xx passing, 429 warning, anything else or a timeout critical.
    Http,
    /// A TCP connection to `address:port` opens within the timeout.
    Tcp,
    /// A NATS request to `subject` is answered within the timeout (by default the instance's
    /// ADR-32 ping subject `$SRV.PING.<name>.<id>`).
    Nats,
    /// Runs `command`: exit 0 passing, 1 warning, anything else critical. Off unless enabled in
    /// the orchestrator's configuration.
    Exec,
    /// The heartbeat lease (the check with id `lease`); never declared by clients.
    Lease,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Ttl => "ttl",
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Nats => "nats",
            CheckKind::Exec => "exec",
            CheckKind::Lease => "lease",
        }
    }
}

/// A duration on the wire: a string such as `"500ms"`, `"10s"` or `"1m 30s"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration such as \"500ms\", \"10s\" or \"1m\": {e}"))
        })
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

fn default_interval() -> Duration {
    limits::DEFAULT_INTERVAL
}
fn one() -> u32 {
    1
}
fn critical() -> Health {
    Health::Critical
}
fn is_zero(d: &Duration) -> bool {
    d.is_zero()
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// A check as declared at registration or added later. One flat object: `kind` says which of the
/// kind-specific fields apply, and a field of another kind is refused, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Unique within the instance: 1-64 of `a-z 0-9 - _`. Defaults to the kind (`http`, `tcp`, …).
    #[serde(default)]
    pub id: String,
    pub kind: CheckKind,
    /// How often the check runs (active kinds).
    #[cfg_attr(feature = "openapi", schema(value_type = String, default = "10s", example = "10s"))]
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// How long one run may take before it counts as critical: 2s, or the interval if shorter.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "2s"))]
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Wait this long after registration before the first run.
    #[cfg_attr(feature = "openapi", schema(value_type = String, default = "0s", example = "5s"))]
    #[serde(default, with = "duration", skip_serializing_if = "is_zero")]
    pub initial_delay: Duration,
    /// Consecutive failing runs before the check turns critical.
    #[serde(default = "one")]
    pub failures_before_critical: u32,
    /// Consecutive failing runs before the check turns warning; 0 (the default) skips the warning
    /// stage. Below `failures_before_critical` to have any effect.
    #[serde(default)]
    pub failures_before_warning: u32,
    /// Consecutive passing runs before a failing check turns passing again.
    #[serde(default = "one")]
    pub successes_before_passing: u32,
    /// The state before the first result: `critical` by default, so an instance is not advertised
    /// before its checks have passed.
    #[serde(default = "critical")]
    pub initial_status: Health,

    /// `ttl`: the service must report within this long.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,

    /// `http`: the full URL, or a path (starting with `/`) on the instance's address and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `http`: the method; `GET` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `http`: request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `http`: the response body must contain this text, or the check is critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// `http`: accept any TLS certificate (self-signed test services).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,

    /// `tcp`: host to connect to; the instance's address by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `tcp`: port to connect to; the instance's port by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,

    /// `nats`: the subject to request; `$SRV.PING.<service>.<instance id>` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,

    /// `exec`: program and arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl CheckSpec {
    /// A spec of `kind` with every default, for building checks in code.
    pub fn new(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            id: kind.as_str().to_string(),
            kind,
            interval: default_interval(),
            timeout: None,
            initial_delay: Duration::ZERO,
            failures_before_critical: 1,
            failures_before_warning: 0,
            successes_before_passing: 1,
            initial_status: Health::Critical,
            ttl: None,
            url: None,
            method: None,
            headers: BTreeMap::new(),
            expect_body: None,
            tls_skip_verify: false,
            address: None,
            port: None,
            subject: None,
            command: Vec::new(),
        }
    }

    /// The effective timeout of one run.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(limits::DEFAULT_TIMEOUT.min(self.interval))
    }

    /// Fills the defaults that depend on other fields (the id from the kind).
    pub fn normalize(&mut self) {
        if self.id.is_empty() {
            self.id = self.kind.as_str().to_string();
        }
        if let Some(method) = &mut self.method {
            method.make_ascii_uppercase();
        }
    }

    /// Checks every rule; `field` is where the spec sits in the payload, e.g. `checks[0]`.
    pub fn validate(&self, field: &str) -> Result<(), ProtocolError> {
        let f = |name: &str| format!("{field}.{name}");
        validate_check_id(&f("id"), &self.id)?;
        if self.kind == CheckKind::Lease || self.id == LEASE_CHECK {
            return Err(ProtocolError::invalid(
                if self.kind == CheckKind::Lease { f("kind") } else { f("id") },
                "the lease check is built in (it follows heartbeats and ttl_seconds); declare a ttl check instead",
            ));
        }
        if !(limits::INTERVAL_MIN..=limits::INTERVAL_MAX).contains(&self.interval) {
            return Err(ProtocolError::invalid(f("interval"), "must be between 100ms and 24h"));
        }
        if self.timeout() < limits::TIMEOUT_MIN || self.timeout() > self.interval {
            return Err(ProtocolError::invalid(f("timeout"), "must be at least 10ms and at most the interval"));
        }
        if self.initial_delay > limits::INTERVAL_MAX {
            return Err(ProtocolError::invalid(f("initial_delay"), "must be at most 24h"));
        }
        for (name, value) in [
            ("failures_before_critical", self.failures_before_critical),
            ("successes_before_passing", self.successes_before_passing),
        ] {
            if !(1..=limits::THRESHOLD_MAX).contains(&value) {
                return Err(ProtocolError::invalid(f(name), format!("must be 1-{}", limits::THRESHOLD_MAX)));
            }
        }
        if self.failures_before_warning > limits::THRESHOLD_MAX {
            return Err(ProtocolError::invalid(
                f("failures_before_warning"),
                format!("must be 0-{}", limits::THRESHOLD_MAX),
            ));
        }
        // Fields of other kinds are refused, so a check never silently ignores what was asked.
        let kind = self.kind.as_str();
        let misplaced = |name: &str, present: bool, owner: &str| -> Result<(), ProtocolError> {
            if present && kind != owner {
                return Err(ProtocolError::invalid(f(name), format!("applies to {owner} checks, not {kind}")));
            }
            Ok(())
        };
        misplaced("ttl", self.ttl.is_some(), "ttl")?;
        misplaced("url", self.url.is_some(), "http")?;
        misplaced("method", self.method.is_some(), "http")?;
        misplaced("headers", !self.headers.is_empty(), "http")?;
        misplaced("expect_body", self.expect_body.is_some(), "http")?;
        misplaced("tls_skip_verify", self.tls_skip_verify, "http")?;
        misplaced("subject", self.subject.is_some(), "nats")?;
        misplaced("command", !self.command.is_empty(), "exec")?;
        if (self.address.is_some() || self.port.is_some()) && self.kind != CheckKind::Tcp {
            let name = if self.address.is_some() { "address" } else { "port" };
            return Err(ProtocolError::invalid(f(name), format!("applies to tcp checks, not {kind}")));
        }
        match self.kind {
            CheckKind::Ttl => match self.ttl {
                None => return Err(ProtocolError::invalid(f("ttl"), "a ttl check needs a ttl, e.g. \"30s\"")),
                Some(ttl) if !(limits::INTERVAL_MIN..=limits::INTERVAL_MAX).contains(&ttl) => {
                    return Err(ProtocolError::invalid(f("ttl"), "must be between 100ms and 24h"));
                }
                Some(_) => {}
            },
            CheckKind::Http => self.validate_http(field)?,
            CheckKind::Tcp => {
                if let Some(port) = self.port
                    && !(1..=65_535).contains(&port)
                {
                    return Err(ProtocolError::invalid(f("port"), "must be between 1 and 65535"));
                }
                if let Some(address) = &self.address
                    && (address.is_empty() || address.len() > 253 || address.chars().any(|c| c.is_whitespace()))
                {
                    return Err(ProtocolError::invalid(f("address"), "must be a host name or an IP address"));
                }
            }
            CheckKind::Nats => {
                if let Some(subject) = &self.subject {
                    let ok = !subject.is_empty()
                        && subject.len() <= 256
                        && subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">")
                        && !subject.chars().any(|c| c.is_whitespace());
                    if !ok {
                        return Err(ProtocolError::invalid(
                            f("subject"),
                            "must be a NATS subject without wildcards or empty tokens",
                        ));
                    }
                }
            }
            CheckKind::Exec => {
                if self.command.is_empty() || self.command[0].is_empty() {
                    return Err(ProtocolError::invalid(
                        f("command"),
                        "an exec check needs a program, e.g. [\"/bin/true\"]",
                    ));
                }
                if self.command.len() > limits::ARGS_MAX || self.command.iter().any(|a| a.len() > limits::ARG_MAX) {
                    return Err(ProtocolError::invalid(
                        f("command"),
                        format!("at most {} arguments of {} bytes", limits::ARGS_MAX, limits::ARG_MAX),
                    ));
                }
                if self.command.iter().any(|a| a.contains('\0')) {
                    return Err(ProtocolError::invalid(f("command"), "must not contain NUL characters"));
                }
            }
            CheckKind::Lease => unreachable!("refused above"),
        }
        Ok(())
    }

    fn validate_http(&self, field: &str) -> Result<(), ProtocolError> {
        let f = |name: &str| format!("{field}.{name}");
        let url = self.url.as_deref().unwrap_or("/");
        let ok = url.len() <= limits::URL_MAX
            && !url.chars().any(|c| c.is_whitespace() || c.is_control())
            && (url.starts_with('/') || url.starts_with("http://") || url.starts_with("https://"));
        if !ok {
            return Err(ProtocolError::invalid(
                f("url"),
                "must be an http:// or https:// URL, or a path starting with '/' on the instance's address",
            ));
        }
        let method_ok = ["GET", "HEAD", "POST", "PUT", "OPTIONS"].contains(&self.method.as_deref().unwrap_or("GET"));
        if !method_ok {
            return Err(ProtocolError::invalid(f("method"), "must be GET, HEAD, POST, PUT or OPTIONS"));
        }
        if self.headers.len() > limits::HEADERS_MAX {
            return Err(ProtocolError::invalid(f("headers"), format!("at most {} headers", limits::HEADERS_MAX)));
        }
        for (name, value) in &self.headers {
            let name_ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !name_ok || value.chars().any(|c| c.is_control()) {
                return Err(ProtocolError::invalid(
                    format!("{field}.headers.{name}"),
                    "must be a valid header name with a value free of control characters",
                ));
            }
        }
        if let Some(text) = &self.expect_body
            && (text.is_empty() || text.len() > limits::EXPECT_BODY_MAX)
        {
            return Err(ProtocolError::invalid(
                f("expect_body"),
                format!("must be 1-{} bytes", limits::EXPECT_BODY_MAX),
            ));
        }
        Ok(())
    }
}

/// True for a check id: 1-64 of `a-z 0-9 - _`.
pub fn is_valid_check_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::CHECK_ID_MAX
        && id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// Refuses anything but a check id, naming `field`.
pub fn validate_check_id(field: &str, id: &str) -> Result<(), ProtocolError> {
    if is_valid_check_id(id) {
        return Ok(());
    }
    Err(ProtocolError::invalid(
        field,
        format!("must be 1-{} characters of lower-case letters, digits, '-' or '_' (got {id:?})", limits::CHECK_ID_MAX),
    ))
}

/// Validates a list of declared checks: each valid, ids unique, at most [`limits::CHECKS_MAX`].
pub fn validate_checks(field: &str, checks: &[CheckSpec]) -> Result<(), ProtocolError> {
    if checks.len() > limits::CHECKS_MAX {
        return Err(ProtocolError::invalid(field, format!("at most {} checks", limits::CHECKS_MAX)));
    }
    for (i, check) in checks.iter().enumerate() {
        check.validate(&format!("{field}[{i}]"))?;
        if checks[..i].iter().any(|c| c.id == check.id) {
            return Err(ProtocolError::invalid(
                format!("{field}[{i}].id"),
                format!("check id {:?} is used twice; give each check its own id", check.id),
            ));
        }
    }
    Ok(())
}

/// Cuts `text` to at most [`limits::OUTPUT_MAX`] bytes, on a character boundary.
pub fn cap_output(mut text: String) -> String {
    if text.len() > limits::OUTPUT_MAX {
        let mut end = limits::OUTPUT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// What a sensitive header's value is shown as.
pub const REDACTED: &str = "<redacted>";

/// True for a header that carries a credential (`Authorization`, cookies, tokens, keys,
/// secrets, passwords): its value is never shown in views, events or logs.
pub fn is_sensitive_header(name: &str) -> bool {
    // Without allocating: every shown check asks this of each of its headers.
    let name = name.as_bytes();
    ["authorization", "cookie", "token", "secret", "password", "passwd", "api-key", "apikey", "api_key", "auth"]
        .iter()
        .any(|word| name.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes())))
}

impl CheckSpec {
    /// The values of its sensitive headers, by header name (empty for most checks).
    pub fn sensitive_headers(&self) -> BTreeMap<String, String> {
        self.headers.iter().filter(|(name, _)| is_sensitive_header(name)).map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// The spec as shown: sensitive header values replaced by [`REDACTED`].
    pub fn redacted(&self) -> CheckSpec {
        let mut shown = self.clone();
        for (name, value) in shown.headers.iter_mut() {
            if is_sensitive_header(name) {
                *value = REDACTED.to_string();
            }
        }
        shown
    }
}

/// A check as shown never carries a sensitive header's value: views, events and replies show
/// [`REDACTED`]. (The registry's storage keeps the values apart, so checks still send them.)
fn serialize_redacted<S: serde::Serializer>(spec: &CheckSpec, serializer: S) -> Result<S::Ok, S::Error> {
    if spec.headers.keys().any(|name| is_sensitive_header(name)) {
        spec.redacted().serialize(serializer)
    } else {
        spec.serialize(serializer)
    }
}

/// A check of an instance and its committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Check {
    #[serde(serialize_with = "serialize_redacted")]
    pub spec: CheckSpec,
    pub status: Health,
    /// The output of the run (or TTL update) that set the status, at most 4 KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// When the check took its status.
    pub since: DateTime<Utc>,
}

/// Why an instance or a service is in maintenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Maintenance {
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// Payload to turn maintenance on: `{"reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    #[serde(default)]
    pub reason: String,
}

impl MaintenanceRequest {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        validate_reason(&self.reason)
    }
}

/// A reason given by an operator: at most [`limits::REASON_MAX`] characters, no control characters.
fn validate_reason(reason: &str) -> Result<(), ProtocolError> {
    if reason.chars().count() > limits::REASON_MAX || reason.chars().any(|c| c.is_control()) {
        return Err(ProtocolError::invalid(
            "reason",
            format!("must be at most {} characters without control characters", limits::REASON_MAX),
        ));
    }
    Ok(())
}

/// Body of `POST /api/v1/health/self-preservation/end` and payload of
/// `<prefix>.req.health.end_self_preservation`: an operator ends self-preservation (a deliberate
/// mass shutdown otherwise keeps it on), saying why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndSelfPreservationRequest {
    /// Why (recorded in the `self_preservation_exited` event), at most 512 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EndSelfPreservationRequest {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.reason.as_deref().map_or(Ok(()), validate_reason)
    }
}

/// Payload of `health.maintenance` over NATS: maintenance of one instance (`id`) or of a whole
/// service (`service`), on (`enabled: true`, with a reason) or off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceCommand {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
}

impl MaintenanceCommand {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match (&self.id, &self.service) {
            (Some(id), None) => crate::names::validate_instance_id("id", id)?,
            (None, Some(service)) => crate::names::validate_name("service", service)?,
            _ => return Err(ProtocolError::invalid("id", "give exactly one of \"id\" (an instance) or \"service\"")),
        }
        MaintenanceRequest { reason: self.reason.clone() }.validate()
    }
}

/// Payload of `health.ttl` over NATS: a TTL update of check `check` of instance `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlCommand {
    pub id: String,
    pub check: String,
    pub status: Health,
    #[serde(default)]
    pub output: String,
}

/// Payload of a TTL update over HTTP: `{"status": "passing", "output": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TtlUpdate {
    pub status: Health,
    #[serde(default)]
    pub output: String,
}

/// Aggregated state of a service or of the whole system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Healthy,
    Degraded,
    Critical,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Healthy => "healthy",
            Aggregate::Degraded => "degraded",
            Aggregate::Critical => "critical",
        }
    }

    /// The HTTP status of a health endpoint in this state: 200, 429 or 503.
    pub fn http_status(self) -> u16 {
        match self {
            Aggregate::Healthy => 200,
            Aggregate::Degraded => 429,
            Aggregate::Critical => 503,
        }
    }
}

/// How many instances of a service are in each state. Instances in maintenance are counted apart
/// and take no part in the aggregate; a flapping instance counts as `warning` whatever its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    pub passing: u32,
    pub warning: u32,
    pub critical: u32,
    pub maintenance: u32,
    pub flapping: u32,
}

impl Counts {
    /// Instances taking part in the aggregate.
    pub fn active(&self) -> u32 {
        self.passing + self.warning + self.critical
    }

    /// healthy: every active instance passing; critical: none passing or warning; else degraded.
    /// A service with no active instance is critical (nothing can serve it).
    pub fn aggregate(&self) -> Aggregate {
        if self.active() > 0 && self.passing == self.active() {
            Aggregate::Healthy
        } else if self.passing + self.warning == 0 {
            Aggregate::Critical
        } else {
            Aggregate::Degraded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_as_shown_never_carries_a_credential() {
        let mut spec = CheckSpec::new(CheckKind::Http);
        spec.headers.insert("Authorization".into(), "Bearer s3cret".into());
        spec.headers.insert("X-Api-Key".into(), "k3y".into());
        spec.headers.insert("X-Probe".into(), "1".into());
        let check =
            Check { spec: spec.clone(), status: Health::Passing, output: String::new(), since: chrono::Utc::now() };
        let shown = serde_json::to_string(&check).unwrap();
        assert!(!shown.contains("s3cret") && !shown.contains("k3y"), "{shown}");
        assert!(shown.contains(REDACTED) && shown.contains("\"X-Probe\":\"1\""), "{shown}");
        assert_eq!(spec.sensitive_headers().len(), 2);
        // A registration sends its headers as given: only the stored check is shown redacted.
        assert!(serde_json::to_string(&spec).unwrap().contains("s3cret"));
    }
    use crate::error::parse_json;

    fn spec(json: &str) -> CheckSpec {
        let mut s: CheckSpec = parse_json(json.as_bytes()).unwrap();
        s.normalize();
        s
    }

    #[track_caller]
    fn rejects(json: &str, field: &str) {
        let err = spec(json).validate("checks[0]").unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some(field), "{err}");
    }

    #[test]
    fn defaults_and_round_trip() {
        let s = spec(r#"{"kind": "http", "url": "/health", "interval": "1s"}"#);
        assert_eq!(s.id, "http");
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.timeout(), Duration::from_secs(1), "capped by the interval");
        assert_eq!(s.initial_status, Health::Critical);
        s.validate("checks[0]").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""interval":"1s""#), "{json}");
        assert_eq!(serde_json::from_str::<CheckSpec>(&json).unwrap(), s);
    }

    #[test]
    fn each_rule_names_its_field() {
        rejects(r#"{"kind": "ttl"}"#, "checks[0].ttl");
        rejects(r#"{"kind": "http", "ttl": "1s"}"#, "checks[0].ttl");
        rejects(r#"{"kind": "tcp", "url": "/x"}"#, "checks[0].url");
        rejects(r#"{"kind": "http", "url": "ftp://x"}"#, "checks[0].url");
        rejects(r#"{"kind": "http", "method": "DELETE"}"#, "checks[0].method");
        rejects(r#"{"kind": "http", "interval": "1s", "timeout": "2s"}"#, "checks[0].timeout");
        rejects(r#"{"kind": "http", "interval": "1ms"}"#, "checks[0].interval");
        rejects(r#"{"kind": "exec"}"#, "checks[0].command");
        rejects(r#"{"kind": "nats", "subject": "a.*"}"#, "checks[0].subject");
        rejects(r#"{"kind": "tcp", "port": 0}"#, "checks[0].port");
        rejects(r#"{"kind": "http", "port": 80}"#, "checks[0].port");
        rejects(r#"{"kind": "lease"}"#, "checks[0].kind");
        rejects(r#"{"kind": "ttl", "ttl": "5s", "id": "lease"}"#, "checks[0].id");
        rejects(r#"{"kind": "tcp", "id": "Bad"}"#, "checks[0].id");
        rejects(r#"{"kind": "tcp", "failures_before_critical": 0}"#, "checks[0].failures_before_critical");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let err = parse_json::<CheckSpec>(br#"{"kind": "http", "interval": "soon"}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("interval"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let checks = vec![spec(r#"{"kind": "tcp"}"#), spec(r#"{"kind": "tcp"}"#)];
        let err = validate_checks("checks", &checks).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("checks[1].id"));
    }

    #[test]
    fn aggregate_rules() {
        let c = |passing, warning, critical| Counts { passing, warning, critical, ..Default::default() };
        assert_eq!(c(3, 0, 0).aggregate(), Aggregate::Healthy);
        assert_eq!(c(2, 1, 0).aggregate(), Aggregate::Degraded);
        assert_eq!(c(1, 0, 5).aggregate(), Aggregate::Degraded);
        assert_eq!(c(0, 1, 5).aggregate(), Aggregate::Degraded);
        assert_eq!(c(0, 0, 5).aggregate(), Aggregate::Critical);
        assert_eq!(c(0, 0, 0).aggregate(), Aggregate::Critical);
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        let s = cap_output("é".repeat(3000));
        assert!(s.len() <= limits::OUTPUT_MAX && s.is_char_boundary(s.len()));
    }
}
