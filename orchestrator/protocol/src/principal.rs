//! Who made a change: the authenticated principal. The orchestrator sets it from how the caller
//! authenticated, never from a payload, and keeps it apart from the free-text `source` a caller
//! may claim. It is stored with every change and sent on every event as the CloudEvents extension
//! attribute `principal`.
//!
//! The forms:
//! - `key:<name>`: an HTTP caller with the API key named `<name>`;
//! - `jwt:<sub>`: an HTTP caller with a JWT, by its `sub` claim;
//! - `anonymous`: an HTTP caller while API authentication is off;
//! - `nats:<user>`: a client over NATS whose subject names its user (`orch.req.<domain>.<verb>.<user>`).
//!   NATS does not tell a subscriber which user published a message, but its permissions can
//!   bind a subject to a user: each user of `scripts/nats-auth.sh` may publish only subjects that
//!   end with its own name (docs/protocol.md §14.2);
//! - `nats`: a client over NATS on a plain subject (`orch.req.<domain>.<verb>`), which names
//!   nobody: a server without users, or users an operator allowed the plain subjects;
//! - `agent:<node>`: a node agent, by the subject it reports on (its NATS user may publish only
//!   there);
//! - `workflow:<name>`: a step of an execution of the workflow `<name>`;
//! - `orchestrator`: the orchestrator's own work (lease expiry, checks, restarts, expiries).

/// The orchestrator's own work.
pub const ORCHESTRATOR: &str = "orchestrator";
/// An HTTP caller while authentication is off.
pub const ANONYMOUS: &str = "anonymous";
/// A client over NATS.
pub const NATS: &str = "nats";
/// The CloudEvents extension attribute that carries the principal.
pub const EVENT_ATTRIBUTE: &str = "principal";

/// A NATS client whose subject names its user `user` (see the module's notes).
pub fn nats_user(user: &str) -> String {
    format!("nats:{user}")
}

/// The principal of a NATS message: `nats:<user>` when its subject names one, else `nats`.
pub fn nats_sender(user: Option<&str>) -> String {
    user.map_or_else(|| NATS.to_string(), nats_user)
}

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
