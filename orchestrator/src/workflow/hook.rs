//! Webhook triggers (`[[webhook]]`), the pure part: a hook's declaration, the check of a
//! delivery's signature and time, and the execution a delivery starts.
//!
//! A delivery is `POST /api/v1/hooks/{name}` with the headers
//! `X-Orch-Timestamp: <unix seconds>` and
//! `X-Orch-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the hook's secret>`.
//! The signature covers the time, so a captured delivery cannot be sent again later with a new
//! time; one sent again within the replay window starts nothing new (its execution's id comes
//! from the signature) and is answered with the execution it started.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_protocol::health::duration;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::expr::{self, ExprError};

/// The header with the delivery's time, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "X-Orch-Timestamp";
/// The header with the delivery's signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Orch-Signature";
/// Shortest secret a hook takes.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret a hook takes.
pub const MAX_SECRET_LEN: usize = 512;
/// The longest replay window a hook may have.
pub const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(3600);

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

/// `[[webhook]]` of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// The hook's name: `POST /api/v1/hooks/<name>`; unique among all workflows.
    pub name: String,
    /// The inputs of the executions it starts; strings may hold `${{ … }}` over `body` (the
    /// delivery's JSON body).
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// How far a delivery's time may be from the orchestrator's clock (either way).
    #[serde(default = "five_minutes", with = "duration")]
    pub replay_window: Duration,
}

impl WebhookSpec {
    /// Problems of the hook, as (field, message); empty when it is valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !orch_protocol::names::is_valid_name(&self.name) {
            out.push((
                "name",
                format!(
                    "{:?}: 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit",
                    self.name
                ),
            ));
        }
        if self.replay_window.is_zero() || self.replay_window > MAX_REPLAY_WINDOW {
            out.push(("replay_window", "more than 0 and at most 1h".into()));
        }
        for value in self.inputs.values() {
            out.extend(expr::template_problems(value).into_iter().map(|m| ("inputs", m)));
        }
        out
    }

    /// The inputs of a delivery: `inputs` rendered over its body.
    pub fn render_inputs(&self, body: &Value) -> Result<Value, ExprError> {
        expr::render(&serde_json::to_value(&self.inputs).unwrap_or_default(), &serde_json::json!({ "body": body }))
    }
}

/// Why a delivery is refused, with the header it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub header: &'static str,
    pub message: String,
}

fn refuse(header: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { header, message: message.into() }
}

/// Checks a delivery: its time within `window` of `now` (seconds), and its signature of
/// `<timestamp>.<body>` under `secret` (compared in constant time).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<(), Refusal> {
    let timestamp =
        timestamp.ok_or_else(|| refuse(TIMESTAMP_HEADER, "missing: the delivery's time, in Unix seconds"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| refuse(TIMESTAMP_HEADER, format!("{timestamp:?} is not a time in Unix seconds")))?;
    if (now - at).unsigned_abs() > window.as_secs() {
        return Err(refuse(
            TIMESTAMP_HEADER,
            format!(
                "{at} is more than {}s from the orchestrator's time ({now}): outside the replay window",
                window.as_secs()
            ),
        ));
    }
    let signature = signature.ok_or_else(|| refuse(SIGNATURE_HEADER, "missing: sha256=<hex HMAC-SHA256>"))?;
    let hex = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| refuse(SIGNATURE_HEADER, "expected sha256=<hex HMAC-SHA256>"))?;
    let tag = decode_hex(hex).ok_or_else(|| refuse(SIGNATURE_HEADER, "the signature is not hexadecimal"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, &signed(timestamp.trim(), body), &tag)
        .map_err(|_| refuse(SIGNATURE_HEADER, "the signature does not match the body, the time and the hook's secret"))
}

/// What a signature covers.
fn signed(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(timestamp.len() + 1 + body.len());
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// The signature header's value for `body` at `timestamp` (for senders and tests).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &signed(timestamp, body));
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The execution a delivery starts: the same for the same signed delivery.
pub fn execution_id(hook: &str, signature: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("orch-workflow-hook:{hook}:{}", signature.trim()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";
    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_delivery_within_the_window_passes() {
        let body = br#"{"ref":"main"}"#;
        let signature = sign(SECRET, "1000", body);
        assert_eq!(verify(SECRET, Some("1000"), Some(&signature), body, 1100, WINDOW), Ok(()));
        assert_eq!(verify(SECRET, Some("1000"), Some(&signature), body, 900, WINDOW), Ok(()), "a clock ahead");
    }

    #[test]
    fn a_changed_body_time_or_secret_is_refused_naming_the_header() {
        let body = br#"{"ref":"main"}"#;
        let signature = sign(SECRET, "1000", body);
        let header = |r: Result<(), Refusal>| r.unwrap_err().header;
        assert_eq!(
            header(verify(SECRET, Some("1000"), Some(&signature), br#"{"ref":"evil"}"#, 1000, WINDOW)),
            SIGNATURE_HEADER
        );
        assert_eq!(header(verify(SECRET, Some("1001"), Some(&signature), body, 1000, WINDOW)), SIGNATURE_HEADER);
        assert_eq!(
            header(verify(b"another-secret-of-16", Some("1000"), Some(&signature), body, 1000, WINDOW)),
            SIGNATURE_HEADER
        );
        assert_eq!(
            header(verify(SECRET, Some("1000"), Some(&signature), body, 1301, WINDOW)),
            TIMESTAMP_HEADER,
            "too old"
        );
        assert_eq!(header(verify(SECRET, None, Some(&signature), body, 1000, WINDOW)), TIMESTAMP_HEADER);
        assert_eq!(header(verify(SECRET, Some("soon"), Some(&signature), body, 1000, WINDOW)), TIMESTAMP_HEADER);
        assert_eq!(header(verify(SECRET, Some("1000"), None, body, 1000, WINDOW)), SIGNATURE_HEADER);
        assert_eq!(header(verify(SECRET, Some("1000"), Some("md5=00"), body, 1000, WINDOW)), SIGNATURE_HEADER);
        assert_eq!(header(verify(SECRET, Some("1000"), Some("sha256=zz"), body, 1000, WINDOW)), SIGNATURE_HEADER);
    }

    #[test]
    fn the_same_delivery_starts_the_same_execution() {
        let signature = sign(SECRET, "1000", b"{}");
        assert_eq!(execution_id("deploy", &signature), execution_id("deploy", &signature));
        assert_ne!(execution_id("deploy", &signature), execution_id("deploy", &sign(SECRET, "1001", b"{}")));
    }

    #[test]
    fn inputs_read_the_body() {
        let spec = WebhookSpec {
            name: "deploy".into(),
            inputs: BTreeMap::from([("sha".to_string(), serde_json::json!("${{ body.after }}"))]),
            replay_window: WINDOW,
        };
        assert!(spec.problems().is_empty());
        let inputs = spec.render_inputs(&serde_json::json!({ "after": "abc123" })).unwrap();
        assert_eq!(inputs, serde_json::json!({ "sha": "abc123" }));
        let bad = WebhookSpec { name: "Bad Name".into(), replay_window: Duration::ZERO, ..spec };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["name", "replay_window"]);
    }
}
