//! Who made a change: the authenticated principal. The orchestrator sets it from how the caller
//! authenticated, never from a payload, and keeps it apart from the free-text `source` a caller
//! may claim. It is stored with every change and sent on every event as the CloudEvents extension
//! attribute `principal`.
//!
//! The forms:
//! - `key:<name>`: an HTTP caller with the API key named `<name>`;
//! - `jwt:<sub>`: an HTTP caller with a JWT, by its `sub` claim;
//! - `anonymous`: an HTTP caller while API authentication is off;
//! - `nats`: a client over NATS. NATS does not tell a subscriber which user published a message
//!   (within one account), so over NATS the principal is the transport; which users may publish
//!   each subject is the NATS permissions' business (docs/protocol.md §14);
//! - `agent:<node>`: a node agent, by the subject it reports on (its NATS user may publish only
//!   there);
//! - `orchestrator`: the orchestrator's own work (lease expiry, checks, restarts, expiries).

/// The orchestrator's own work.
pub const ORCHESTRATOR: &str = "orchestrator";
/// An HTTP caller while authentication is off.
pub const ANONYMOUS: &str = "anonymous";
/// A client over NATS.
pub const NATS: &str = "nats";
/// The CloudEvents extension attribute that carries the principal.
pub const EVENT_ATTRIBUTE: &str = "principal";

/// An HTTP caller with the API key `name`.
pub fn api_key(name: &str) -> String {
    format!("key:{name}")
}

/// An HTTP caller with a JWT whose `sub` is `subject`.
pub fn jwt(subject: &str) -> String {
    format!("jwt:{subject}")
}

/// The agent of `node`.
pub fn agent(node: &str) -> String {
    format!("agent:{node}")
}
