//! NATS header names the protocol uses.

/// JetStream de-duplication id. On commands it is also the command id that makes handling
/// idempotent; on events it equals the CloudEvents `id`.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// On a command published to JetStream: a subject to which the orchestrator publishes the outcome
/// once the command is committed (or rejected). Lets a client get a reply without request/reply.
pub const REPLY_TO: &str = "Orch-Reply-To";

/// Set on error replies (ADR-32 convention): the HTTP-like status code, e.g. `400`.
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Set on error replies (ADR-32 convention): the human-readable message.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";

/// Set on error replies that a retry may cure, as HTTP's `Retry-After`: the seconds to wait.
/// `1` on `unavailable`; the guard's rate window on a priority change refused as `rate_limited`.
pub const RETRY_AFTER: &str = "Orch-Retry-After";

/// On dead-letter messages: the subject the rejected command was published to.
pub const DLQ_ORIGINAL_SUBJECT: &str = "Orch-Original-Subject";

/// On dead-letter messages: the machine-readable reason code.
pub const DLQ_REASON: &str = "Orch-Reason";
