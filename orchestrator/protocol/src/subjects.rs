//! Subject and stream names: the one place they are spelled. Every name derives from a prefix
//! (default `orch`), so several orchestrators, or several test runs, can share one NATS server.

use crate::error::ProtocolError;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "orch";

/// Command domains and verbs that exist. A command on any other subject is rejected.
pub mod verbs {
    pub const REGISTRY: &str = "registry";
    pub const REGISTER: &str = "register";
    pub const DEREGISTER: &str = "deregister";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const GET: &str = "get";
    pub const LIST: &str = "list";
    pub const DISCOVER: &str = "discover";
    pub const HEALTH: &str = "health";
    pub const TTL: &str = "ttl";
    pub const MAINTENANCE: &str = "maintenance";
    pub const SYSTEM: &str = "system";
    pub const SERVICE: &str = "service";
    pub const CHECKS: &str = "checks";
    pub const LIFECYCLE: &str = "lifecycle";
    pub const STATUS: &str = "status";
    pub const APPLY: &str = "apply";
    pub const DOWN: &str = "down";
    pub const RESTART: &str = "restart";
    pub const PROFILE: &str = "profile";
    /// Manifest history (`orch.req.lifecycle.versions|version|diff|rollback`).
    pub const VERSIONS: &str = "versions";
    pub const VERSION: &str = "version";
    pub const DIFF: &str = "diff";
    pub const ROLLBACK: &str = "rollback";
    /// An operator ends self-preservation (`orch.req.health.end_self_preservation`).
    pub const END_SELF_PRESERVATION: &str = "end_self_preservation";
    /// The config store (`orch.req.config.<get|put|delete|list|history|revert|schemas|schema_put|
    /// schema_delete>`).
    pub const CONFIG: &str = "config";
    pub const PUT: &str = "put";
    pub const DELETE: &str = "delete";
    pub const HISTORY: &str = "history";
    pub const REVERT: &str = "revert";
    pub const SCHEMAS: &str = "schemas";
    pub const SCHEMA_PUT: &str = "schema_put";
    pub const SCHEMA_DELETE: &str = "schema_delete";
    /// A managed service's output, searched (`orch.req.lifecycle.logs`).
    pub const LOGS: &str = "logs";
    pub const PRIORITY: &str = "priority";
    /// The group of replicas (`orch.req.cluster.status`), answered by every replica.
    pub const CLUSTER: &str = "cluster";
    pub const WORKFLOW: &str = "workflow";
    pub const RUN: &str = "run";
    pub const CANCEL: &str = "cancel";
    pub const SIGNAL: &str = "signal";
    pub const RETRY: &str = "retry";
    pub const SCHEDULES: &str = "schedules";
    pub const QUEUES: &str = "queues";
    pub const SET: &str = "set";
    pub const CLEAR: &str = "clear";
    pub const POLICY: &str = "policy";
    pub const RELEASE: &str = "release";
    /// Resources: the node inventory (`orch.req.resource.nodes|node`).
    pub const RESOURCE: &str = "resource";
    pub const NODES: &str = "nodes";
    pub const NODE: &str = "node";
}

/// The domains answered over request/reply (`orch.req.<domain>.<verb>`).
pub const REQUEST_DOMAINS: [&str; 7] = [
    verbs::REGISTRY,
    verbs::HEALTH,
    verbs::LIFECYCLE,
    verbs::PRIORITY,
    verbs::WORKFLOW,
    verbs::RESOURCE,
    verbs::CONFIG,
];

/// Whether `user` can name a sender in a subject: 1-64 letters, digits, `-` or `_` (a NATS user
/// name of other characters cannot, and its client sends the plain subjects).
pub fn is_user_token(user: &str) -> bool {
    (1..=64).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub const INVALID_TOKEN: &str = "_invalid";

/// `token` if it is a safe subject token (letters, digits, `-`, `_`), else [`INVALID_TOKEN`].
fn safe_token(token: &str) -> &str {
    if crate::names::is_valid_instance_id(token) { token } else { INVALID_TOKEN }
}

/// Names derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects { prefix: DEFAULT_PREFIX.to_string() }
    }
}

impl Subjects {
    /// A prefix is one subject token and also part of stream names: letters, digits, `_` and `-`.
    pub fn new(prefix: &str) -> Result<Self, ProtocolError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Subjects { prefix: prefix.to_string() })
        } else {
            Err(ProtocolError::invalid(
                "prefix",
                "the subject prefix must be 1-32 characters of letters, digits, '_' or '-'",
            ))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream(&self, suffix: &str) -> String {
        format!("{}_{}", self.prefix.to_ascii_uppercase().replace('-', "_"), suffix)
    }

    /// Stream of durable commands (`ORCH_COMMANDS`), work-queue retention.
    pub fn commands_stream(&self) -> String {
        self.stream("COMMANDS")
    }

    /// Stream of events (`ORCH_EVENTS`).
    pub fn events_stream(&self) -> String {
        self.stream("EVENTS")
    }

    /// Stream of rejected commands (`ORCH_DLQ`).
    pub fn dead_letter_stream(&self) -> String {
        self.stream("DLQ")
    }

    /// The orchestrator's durable consumer on the commands stream.
    pub fn commands_consumer(&self) -> String {
        "orchestrator".to_string()
    }

    /// `orch.cmd.>`: everything the commands stream captures.
    pub fn commands_all(&self) -> String {
        format!("{}.cmd.>", self.prefix)
    }

    /// `orch.cmd.<domain>.<verb>`
    pub fn command(&self, domain: &str, verb: &str) -> String {
        format!("{}.cmd.{domain}.{verb}", self.prefix)
    }

    /// `orch.req.<domain>.>`: the request/reply subjects of one domain.
    pub fn requests_of(&self, domain: &str) -> String {
        format!("{}.req.{domain}.>", self.prefix)
    }

    /// `orch.req.<domain>.<verb>`
    pub fn request(&self, domain: &str, verb: &str) -> String {
        format!("{}.req.{domain}.{verb}", self.prefix)
    }

    /// `orch.req.<domain>.<verb>.<user>` when `user` is given (the sender's NATS user, see
    /// [`Subjects::sender`]), else `orch.req.<domain>.<verb>`.
    pub fn request_as(&self, domain: &str, verb: &str, user: Option<&str>) -> String {
        match user {
            Some(user) => format!("{}.req.{domain}.{verb}.{user}", self.prefix),
            None => self.request(domain, verb),
        }
    }

    /// `orch.evt.>`: everything the events stream captures.
    pub fn events_all(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// `orch.evt.<domain>.<service>.<kind>`. A `service` that is not a safe subject token (letters,
    /// digits, `-`, `_`: every validated name is) becomes [`INVALID_TOKEN`], so an event is never
    /// made on a subject JetStream refuses or that escapes its domain; its data keeps the value.
    pub fn event(&self, domain: &str, service: &str, kind: &str) -> String {
        let service = if crate::names::is_valid_instance_id(service) { service } else { INVALID_TOKEN };
        format!("{}.evt.{domain}.{service}.{kind}", self.prefix)
    }

    /// `orch.agent.<node>.<verb>`: requests to (and reports of) the agent of a node.
    pub fn agent(&self, node: &str, verb: &str) -> String {
        format!("{}.agent.{node}.{verb}", self.prefix)
    }

    /// `orch.agent.<node>.*`: everything the agent of a node answers.
    pub fn agent_all(&self, node: &str) -> String {
        format!("{}.agent.{node}.*", self.prefix)
    }

    /// `orch.agent.*.<verb>`: one kind of report from the agents of all nodes.
    pub fn agents_report(&self, verb: &str) -> String {
        format!("{}.agent.*.{verb}", self.prefix)
    }

    /// `orch.log.<node>.<service>`: the output of a service (as the agent of `node` names it, a
    /// replica by its own name) as it is written ([`crate::agent::LogBatch`], core NATS). A name
    /// that is not a safe subject token becomes [`INVALID_TOKEN`].
    pub fn log(&self, node: &str, service: &str) -> String {
        format!("{}.log.{}.{}", self.prefix, safe_token(node), safe_token(service))
    }

    /// `orch.log.*.<service>`: the output of a service on whichever node runs it.
    pub fn logs_of(&self, service: &str) -> String {
        format!("{}.log.*.{}", self.prefix, safe_token(service))
    }

    /// `orch.log.>`: the output of every service on every node.
    pub fn logs_all(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    /// `orch.hb.*`: heartbeats, one token for the instance id.
    pub fn heartbeats_all(&self) -> String {
        format!("{}.hb.*", self.prefix)
    }

    /// `orch.hb.<instance>`
    pub fn heartbeat(&self, instance: &str) -> String {
        format!("{}.hb.{instance}", self.prefix)
    }

    /// `orch.dlq.>`: everything the dead-letter stream captures.
    pub fn dead_letters_all(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `orch.dlq.<rest of the original subject after the prefix>`, e.g. `orch.dlq.cmd.registry.register`.
    /// A subject that does not start with the prefix keeps all its tokens.
    pub fn dead_letter_for(&self, original: &str) -> String {
        let rest = original.strip_prefix(&self.prefix).and_then(|r| r.strip_prefix('.')).unwrap_or(original);
        format!("{}.dlq.{rest}", self.prefix)
    }

    /// Splits `orch.cmd.<domain>.<verb>` (or `orch.req.…`) into `(domain, verb)`.
    /// `kind` is `cmd` or `req`. Returns `None` when the subject has another shape. A subject
    /// that names its sender (`….<verb>.<user>`, [`Subjects::sender`]) has the same command.
    pub fn parse_command<'a>(&self, subject: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
        self.parse_addressed(subject, kind).map(|(domain, verb, _)| (domain, verb))
    }

    /// The NATS user a command or request subject names as its sender, `orch.req.<domain>.<verb>.<user>`
    /// (`None` for the plain form). NATS permissions make the name true: each shipped user may
    /// publish only subjects that end with its own name (docs/protocol.md §14.2).
    pub fn sender<'a>(&self, subject: &'a str, kind: &str) -> Option<&'a str> {
        self.parse_addressed(subject, kind).and_then(|(_, _, user)| user)
    }

    fn parse_addressed<'a>(&self, subject: &'a str, kind: &str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let (domain, verb, user) = (parts.next()?, parts.next()?, parts.next());
        if parts.next().is_some() || domain.is_empty() || verb.is_empty() {
            return None;
        }
        if user.is_some_and(|u| !is_user_token(u)) {
            return None;
        }
        Some((domain, verb, user))
    }

    /// The node of an agent's report subject `orch.agent.<node>.<verb>`, when it is a valid name.
    pub fn parse_agent_report<'a>(&self, subject: &'a str, verb: &str) -> Option<&'a str> {
        let node =
            subject.strip_prefix(&self.prefix)?.strip_prefix(".agent.")?.strip_suffix(verb)?.strip_suffix('.')?;
        crate::names::is_valid_name(node).then_some(node)
    }

    /// The instance id of a heartbeat subject `orch.hb.<instance>`.
    pub fn parse_heartbeat<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let id = subject.strip_prefix(&self.prefix)?.strip_prefix(".hb.")?;
        (!id.is_empty() && !id.contains('.')).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_report_speaks_for_the_node_of_its_subject() {
        let s = Subjects::default();
        assert_eq!(s.parse_agent_report("orch.agent.node-1.pressure", "pressure"), Some("node-1"));
        assert_eq!(s.parse_agent_report("orch.agent.Node_X.pressure", "pressure"), None, "not a valid name");
        assert_eq!(s.parse_agent_report("orch.agent.a.b.pressure", "pressure"), None);
        assert_eq!(s.parse_agent_report("orch.agent.n.exited", "pressure"), None);
        assert_eq!(s.parse_agent_report("other.agent.n.pressure", "pressure"), None);
    }

    #[test]
    fn an_event_never_gets_an_unsafe_subject_token() {
        let s = Subjects::default();
        assert_eq!(s.event("resource", "node-1", "pressure_high"), "orch.evt.resource.node-1.pressure_high");
        assert_eq!(s.event("system", "_system", "x"), "orch.evt.system._system.x");
        for bad in ["", "a b", "a.b", "*", ">", "n\r\n", "x\u{0}"] {
            assert_eq!(
                s.event("resource", bad, "pressure_high"),
                "orch.evt.resource._invalid.pressure_high",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_follow_the_prefix() {
        let s = Subjects::new("orch").unwrap();
        assert_eq!(s.commands_stream(), "ORCH_COMMANDS");
        assert_eq!(s.command("registry", "register"), "orch.cmd.registry.register");
        assert_eq!(s.event("registry", "web", "registered"), "orch.evt.registry.web.registered");
        assert_eq!(s.dead_letter_for("orch.cmd.registry.bogus"), "orch.dlq.cmd.registry.bogus");
        let t = Subjects::new("t-1").unwrap();
        assert_eq!(t.events_stream(), "T_1_EVENTS");
        assert_eq!(s.log("n2", "web-0"), "orch.log.n2.web-0");
        assert_eq!(s.logs_of("web-0"), "orch.log.*.web-0");
        assert_eq!(s.log("n2", "a.b"), "orch.log.n2._invalid", "never a subject of more tokens");
        assert_eq!(s.logs_all(), "orch.log.>");
    }

    #[test]
    fn parses_command_subjects() {
        let s = Subjects::default();
        assert_eq!(s.parse_command("orch.cmd.registry.register", "cmd"), Some(("registry", "register")));
        assert_eq!(s.parse_command("orch.cmd.registry", "cmd"), None);
        assert_eq!(s.parse_command("orch.cmd.registry.a.b.c", "cmd"), None);
        // A sender named at the end: the same command.
        assert_eq!(s.parse_command("orch.cmd.registry.register.engine", "cmd"), Some(("registry", "register")));
        assert_eq!(s.sender("orch.req.priority.set.engine", "req"), Some("engine"));
        assert_eq!(s.sender("orch.req.priority.set", "req"), None);
        assert_eq!(s.parse_command("orch.req.priority.set.a*b", "req"), None, "not a user token");
        assert_eq!(s.request_as("priority", "set", Some("engine")), "orch.req.priority.set.engine");
        assert_eq!(s.parse_command("other.cmd.registry.register", "cmd"), None);
        assert_eq!(s.parse_heartbeat("orch.hb.web-1"), Some("web-1"));
        assert_eq!(s.parse_heartbeat("orch.hb."), None);
    }

    #[test]
    fn rejects_bad_prefix() {
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
        assert!(Subjects::new("a>").is_err());
    }
}
