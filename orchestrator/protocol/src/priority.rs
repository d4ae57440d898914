//! Service priorities: the requests that set them, what the orchestrator answers, and the data of
//! the priority events (`<prefix>.evt.priority.<service>.<outcome>`), one event per change,
//! whether it was applied, clamped, held or refused.
//!
//! A priority is 0-100 (higher matters more), default [`DEFAULT_PRIORITY`]. Operators set a
//! baseline, bounds and a pin ([`PolicyRequest`]); an engine adjusts within them ([`SetRequest`],
//! [`ClearRequest`]), guarded by a per-service rate limit and a mass-change hold.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProtocolError;

/// The priority of a service nobody set one for (and no manifest names one).
pub const DEFAULT_PRIORITY: u8 = 50;
/// The highest priority.
pub const MAX_PRIORITY: u8 = 100;
/// Longest reason kept; longer reasons are refused.
pub const MAX_REASON_LEN: usize = 1024;
/// Longest `source`.
pub const MAX_SOURCE_LEN: usize = 128;
/// Longest adjustment lifetime: 30 days.
pub const MAX_TTL_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// `orch.req.priority.set`: an engine adjusts a service's priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    pub service: String,
    /// Wanted priority, 0-100. Clamped to the service's bounds.
    pub value: i64,
    /// Who asks, e.g. `engine:attention`. Required, 1-128 characters.
    pub source: String,
    /// Why, in words an operator can read. Required, up to 1024 characters.
    pub reason: String,
    /// After this many seconds the adjustment lapses and the baseline applies again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<f64>,
}

/// `orch.req.priority.clear`: an engine withdraws its adjustment; the baseline applies again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    pub service: String,
    pub source: String,
    #[serde(default)]
    pub reason: String,
}

/// `orch.req.priority.get`: one service's priority and its most recent changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    pub service: String,
    /// Changes to return, newest first: 0-1000, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
}

/// `orch.req.priority.policy` (operators): baseline, bounds and pin of a service. Fields left out
/// keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// A pinned service keeps its baseline: engine changes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    pub source: String,
    #[serde(default)]
    pub reason: String,
}

/// `orch.req.priority.release` (operators): ends a mass-change hold. With `apply` (the default)
/// the held changes are applied, the latest per service; without, they are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub source: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default = "yes")]
    pub apply: bool,
}

fn yes() -> bool {
    true
}

/// Where a service's baseline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// Nobody set one: [`DEFAULT_PRIORITY`].
    Default,
    /// The `priority` of the service in the applied manifest.
    Manifest,
    /// An operator set it.
    Operator,
}

/// An engine's adjustment in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Adjustment {
    /// The value asked for, before clamping.
    pub requested: u8,
    /// Who set it, as authenticated (see `principal`); empty for one stored before principals
    /// were recorded.
    #[serde(default)]
    pub principal: String,
    pub source: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A service's priority: what applies and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriorityView {
    pub service: String,
    /// The priority in force: the baseline if pinned or unadjusted, else the adjustment clamped to
    /// the bounds.
    pub effective: u8,
    pub baseline: u8,
    pub baseline_source: BaselineSource,
    pub min: u8,
    pub max: u8,
    pub pinned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<Adjustment>,
    /// Time of the last change of anything above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = PriorityAction))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Set,
    Clear,
    Policy,
    /// An adjustment reached its expiry.
    Expire,
    /// An operator released a hold; the change is a held one.
    Release,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Set => "set",
            Action::Clear => "clear",
            Action::Policy => "policy",
            Action::Expire => "expire",
            Action::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [Action::Set, Action::Clear, Action::Policy, Action::Expire, Action::Release]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// What became of a change. Each outcome is also the kind of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = PriorityOutcome))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied as asked.
    Applied,
    /// Applied, but limited to the service's bounds.
    Clamped,
    /// Kept back by a mass-change hold; applied if an operator releases the hold.
    Held,
    /// Not applied: the service is pinned, or the change exceeds the rate limit.
    Refused,
    /// An adjustment lapsed at its expiry.
    Expired,
    /// A held change dropped: the hold ended without being released, or was released without
    /// applying, or a later change for the same service replaced it.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Outcome::Applied, Outcome::Clamped, Outcome::Held, Outcome::Refused, Outcome::Expired, Outcome::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Clamped => "clamped",
            Outcome::Held => "held",
            Outcome::Refused => "refused",
            Outcome::Expired => "expired",
            Outcome::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Why a change was refused or held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Guardrail {
    /// The service is pinned by an operator.
    Pinned,
    /// The service had too many changes within the rate window.
    RateLimited,
    /// Too many services changed within the mass-change window.
    MassChange,
}

impl Guardrail {
    pub fn as_str(self) -> &'static str {
        match self {
            Guardrail::Pinned => "pinned",
            Guardrail::RateLimited => "rate_limited",
            Guardrail::MassChange => "mass_change",
        }
    }
}

/// One change of a service's priority, as recorded in the audit history, sent as the event
/// `io.orch.priority.<outcome>.v1` and returned to whoever asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = PriorityChange))]
pub struct Change {
    /// Id of the change; also the id of its event.
    pub id: Uuid,
    pub service: String,
    pub action: Action,
    pub outcome: Outcome,
    /// The value asked for (`set`, or the baseline of a `policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u8>,
    /// Effective priority before and after.
    pub previous: u8,
    pub effective: u8,
    /// Who asked, as authenticated: `key:<name>`, `jwt:<sub>`, `anonymous`, `nats:<user>`, `nats` or
    /// `orchestrator` (see `principal`). `source` is what the caller said of itself. Empty for a
    /// change recorded before principals were.
    #[serde(default)]
    pub principal: String,
    pub source: String,
    #[serde(default)]
    pub reason: String,
    /// For `refused` and `held`: which guardrail, and what it said (a clamp says how in `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<Guardrail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// For a `refused` or `held` record that stands for several requests: how many. The first
    /// refusal of a service by a guardrail (or its first held change) within the rate window is
    /// recorded alone; the ones after it in that window are counted and recorded as one change,
    /// with this count, when it ends (a held count also when the hold ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub at: DateTime<Utc>,
}

/// Reply to `set` and `clear`: the change and the priority after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeReply {
    pub change: Change,
    pub priority: PriorityView,
}

/// Reply to `get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetReply {
    pub priority: PriorityView,
    /// Newest first.
    pub history: Vec<Change>,
}

/// The mass-change guard's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardView {
    /// Engine changes are being held.
    pub holding: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When the hold ends by itself (held changes are then dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Services with a held change.
    pub held: Vec<String>,
    /// Distinct services the engine changed within the current window, and the most it may.
    pub changed_in_window: usize,
    pub limit: usize,
}

/// Reply to `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListReply {
    pub priorities: Vec<PriorityView>,
    pub guard: GuardView,
}

/// Reply to `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseReply {
    /// Changes applied (or dropped, without `apply`).
    pub changes: Vec<Change>,
    pub guard: GuardView,
}

/// Data of the system events `priority_hold_started` and `priority_hold_ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldData {
    pub message: String,
    /// Distinct services the engine changed within the window, and the limit.
    pub changed_in_window: usize,
    pub limit: usize,
    pub window_seconds: u64,
    /// For `ended`: `released by <source>` (an operator), or `the window passed without a release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// Checks a priority value from the wire: 0-100.
pub fn priority_value(field: &str, value: i64) -> Result<u8, ProtocolError> {
    if (0..=MAX_PRIORITY as i64).contains(&value) {
        Ok(value as u8)
    } else {
        Err(ProtocolError::invalid(field, format!("must be 0-{MAX_PRIORITY} (got {value})")))
    }
}

/// Checks `source` and `reason` of any priority request.
pub fn check_words(source: &str, reason: &str, reason_required: bool) -> Result<(), ProtocolError> {
    if source.trim().is_empty() || source.len() > MAX_SOURCE_LEN {
        return Err(ProtocolError::invalid(
            "source",
            format!("must be 1-{MAX_SOURCE_LEN} characters, e.g. \"engine:attention\""),
        ));
    }
    if reason_required && reason.trim().is_empty() {
        return Err(ProtocolError::invalid("reason", "must say why the priority changes"));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(ProtocolError::invalid("reason", format!("must be at most {MAX_REASON_LEN} bytes")));
    }
    Ok(())
}

/// Changes a `get` returns when it does not say, and the most it may ask for.
pub const HISTORY_DEFAULT: u32 = 50;
pub const MAX_HISTORY: u32 = 1000;

impl ClearRequest {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        check_words(&self.source, &self.reason, false)
    }
}

impl GetRequest {
    /// How many changes to return, checked.
    pub fn validate(&self) -> Result<u32, ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        let limit = self.history.unwrap_or(HISTORY_DEFAULT);
        if limit > MAX_HISTORY {
            return Err(ProtocolError::invalid("history", format!("must be 0-{MAX_HISTORY}")));
        }
        Ok(limit)
    }
}

impl ReleaseRequest {
    pub fn validate(&self) -> Result<(), ProtocolError> {
        check_words(&self.source, &self.reason, false)
    }
}

impl PolicyRequest {
    /// The checks that need no current state: name, words, and each value 0-100. [`Policy::merge`]
    /// adds those against the current policy (bounds ordered, baseline within them).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        check_words(&self.source, &self.reason, false)?;
        for (field, value) in [("baseline", self.baseline), ("min", self.min), ("max", self.max)] {
            if let Some(v) = value {
                priority_value(field, v)?;
            }
        }
        Ok(())
    }
}

impl SetRequest {
    /// The value and lifetime, checked.
    pub fn validate(&self) -> Result<(u8, Option<std::time::Duration>), ProtocolError> {
        crate::registry::validate_name("service", &self.service)?;
        let value = priority_value("value", self.value)?;
        check_words(&self.source, &self.reason, true)?;
        let ttl = match self.ttl_seconds {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TTL_SECONDS => Some(std::time::Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(ProtocolError::invalid(
                    "ttl_seconds",
                    format!("must be more than 0 and at most {MAX_TTL_SECONDS} (30 days), got {t}"),
                ));
            }
        };
        Ok((value, ttl))
    }
}

/// A policy, checked: bounds ordered and the baseline within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub baseline: Option<u8>,
    pub min: u8,
    pub max: u8,
    pub pinned: bool,
}

impl Policy {
    /// Merges `request` into the current policy and checks the result.
    pub fn merge(current: Policy, request: &PolicyRequest) -> Result<Policy, ProtocolError> {
        request.validate()?;
        let field = |name: &str, v: Option<i64>| v.map(|v| priority_value(name, v)).transpose();
        let policy = Policy {
            baseline: field("baseline", request.baseline)?.or(current.baseline),
            min: field("min", request.min)?.unwrap_or(current.min),
            max: field("max", request.max)?.unwrap_or(current.max),
            pinned: request.pinned.unwrap_or(current.pinned),
        };
        if policy.min > policy.max {
            return Err(ProtocolError::invalid(
                "min",
                format!("must not exceed max ({} > {})", policy.min, policy.max),
            ));
        }
        if let Some(b) = policy.baseline.filter(|b| !(policy.min..=policy.max).contains(b)) {
            return Err(ProtocolError::invalid(
                "baseline",
                format!("must lie within the bounds {}-{} (got {b})", policy.min, policy.max),
            ));
        }
        Ok(policy)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy { baseline: None, min: 0, max: MAX_PRIORITY, pinned: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: i64) -> SetRequest {
        SetRequest { service: "api".into(), value, source: "engine".into(), reason: "load".into(), ttl_seconds: None }
    }

    #[test]
    fn set_checks_value_source_reason_and_ttl() {
        assert_eq!(set(80).validate().unwrap(), (80, None));
        assert_eq!(set(101).validate().unwrap_err().body().field.as_deref(), Some("value"));
        assert_eq!(set(-1).validate().unwrap_err().body().field.as_deref(), Some("value"));
        let no_reason = SetRequest { reason: " ".into(), ..set(1) };
        assert_eq!(no_reason.validate().unwrap_err().body().field.as_deref(), Some("reason"));
        let no_source = SetRequest { source: String::new(), ..set(1) };
        assert_eq!(no_source.validate().unwrap_err().body().field.as_deref(), Some("source"));
        let bad_ttl = SetRequest { ttl_seconds: Some(0.0), ..set(1) };
        assert_eq!(bad_ttl.validate().unwrap_err().body().field.as_deref(), Some("ttl_seconds"));
        let bad_name = SetRequest { service: "a b".into(), ..set(1) };
        assert_eq!(bad_name.validate().unwrap_err().body().field.as_deref(), Some("service"));
    }

    #[test]
    fn policy_merges_and_keeps_the_baseline_within_bounds() {
        let request = |baseline, min, max| PolicyRequest {
            service: "api".into(),
            baseline,
            min,
            max,
            pinned: None,
            source: "op".into(),
            reason: String::new(),
        };
        let p = Policy::merge(Policy::default(), &request(Some(70), Some(20), None)).unwrap();
        assert_eq!(p, Policy { baseline: Some(70), min: 20, max: 100, pinned: false });
        let p = Policy::merge(p, &request(None, None, Some(80))).unwrap();
        assert_eq!((p.baseline, p.min, p.max), (Some(70), 20, 80));
        let e = Policy::merge(p, &request(None, Some(90), None)).unwrap_err();
        assert_eq!(e.body().field.as_deref(), Some("min"));
        let e = Policy::merge(p, &request(Some(10), None, None)).unwrap_err();
        assert_eq!(e.body().field.as_deref(), Some("baseline"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = crate::error::parse_json::<SetRequest>(br#"{"service":"a","value":1,"source":"s","reason":"r","x":1}"#)
            .unwrap_err();
        assert!(e.body().message.contains("unknown field `x`"), "{e}");
    }
}
