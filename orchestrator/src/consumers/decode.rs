//! Turns a NATS message (subject, headers, payload) into a registry submission or a read request.
//! Everything a client can get wrong is caught here and becomes a protocol error naming the field.

use bytes::Bytes;
use orch_protocol::error::parse_json;
use orch_protocol::health::{MaintenanceCommand, TtlCommand};
use orch_protocol::registry::{InstanceRef, Registration, validate_instance_id};
use orch_protocol::subjects::verbs;
use orch_protocol::{ErrorCode, ProtocolError, Subjects, headers, principal};
use serde::Deserialize;

use crate::registry::{Body, Command, Meta, Strategy, Submission, with_id};

/// The client's id of a message: its `Nats-Msg-Id`, if any.
fn msg_id(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    headers.and_then(|h| h.get(headers::MSG_ID)).map(|v| v.as_str().to_string()).filter(|v| !v.is_empty())
}

fn check_size(payload: &Bytes, max: usize) -> Result<(), ProtocolError> {
    if payload.len() > max {
        return Err(ProtocolError::new(
            ErrorCode::PayloadTooLarge,
            format!("payload is {} bytes; the limit is {max} bytes", payload.len()),
        ));
    }
    Ok(())
}

fn unknown(subject: &str, expected: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UnknownCommand,
        format!("{subject:?} is not a known subject; expected {expected} (see docs/protocol.md)"),
    )
}

/// The write commands, shared by the durable stream and request/reply.
fn write_command(domain: &str, verb: &str, payload: &[u8]) -> Option<Result<Command, ProtocolError>> {
    match (domain, verb) {
        (verbs::REGISTRY, verbs::REGISTER) => Some(parse_json::<Registration>(payload).and_then(|mut reg| {
            reg.normalize();
            reg.validate()?;
            Ok(Command::Register(with_id(reg)))
        })),
        (verbs::REGISTRY, verbs::DEREGISTER) => Some(parse_json::<InstanceRef>(payload).and_then(|r| {
            validate_instance_id("id", &r.id)?;
            Ok(Command::Deregister { id: r.id })
        })),
        (verbs::HEALTH, verbs::MAINTENANCE) => Some(parse_json::<MaintenanceCommand>(payload).and_then(|m| {
            m.validate()?;
            let reason = m.enabled.then_some(m.reason);
            Ok(match (m.id, m.service) {
                (Some(id), _) => Command::Maintenance { id, reason },
                (None, Some(service)) => Command::ServiceMaintenance { service, reason },
                (None, None) => unreachable!("validated"),
            })
        })),
        _ => None,
    }
}

/// Where a message sits in the commands stream: the stream's creation time (so sequence numbers
/// of a re-created stream never collide with old ones) and the message's sequence.
#[derive(Debug, Clone, Copy)]
pub struct StreamPosition {
    pub stream_epoch: i128,
    pub seq: u64,
}

/// A message from the commands stream. Never fails: what cannot be applied becomes
/// [`Body::Invalid`] and is dead-lettered by the writer. Its command id is its `Nats-Msg-Id`, or
/// else `seq:<stream sequence>` (stable across redeliveries).
pub fn decode_command(
    subjects: &Subjects,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &Bytes,
    position: StreamPosition,
    max_bytes: usize,
) -> Submission {
    let by = principal::nats_sender(subjects.sender(subject, "cmd"));
    let mut meta = match msg_id(headers) {
        Some(id) => Meta::new("js", Some(id), subject, payload.clone(), by),
        None => {
            let seq = Some(format!("seq:{}", position.seq));
            let mut meta = Meta::new("js", seq, subject, payload.clone(), by);
            meta.ledger_key = Some(format!("js-seq:{}:{}", position.stream_epoch, position.seq));
            meta
        }
    };
    meta.stream_seq = Some(position.seq);
    meta.durable = true;
    let command = check_size(payload, max_bytes).and_then(|()| {
        let (domain, verb) = subjects
            .parse_command(subject, "cmd")
            .ok_or_else(|| unknown(subject, &format!("{}.cmd.<domain>.<verb>", subjects.prefix())))?;
        write_command(domain, verb, payload)
            .unwrap_or_else(|| Err(unknown(subject, "registry.register, registry.deregister or health.maintenance")))
    });
    let body = match command {
        Ok(command) => Body::Command(command),
        Err(error) => Body::Invalid { error },
    };
    Submission { meta, body }
}

/// Payload of `registry.list`: the same filters as `GET /api/v1/services`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub health: Option<orch_protocol::registry::Health>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Payload of `registry.discover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
}

/// Payload of `health.service`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub name: String,
}

/// What a request asks for.
#[derive(Debug)]
pub enum Request {
    Write(Box<Submission>),
    Get(String),
    List(ListRequest),
    Discover(DiscoverRequest),
    Ttl(TtlCommand),
    SystemHealth,
    /// An operator ends self-preservation.
    EndSelfPreservation(orch_protocol::health::EndSelfPreservationRequest),
    ServiceHealth(String),
    Checks(String),
    Lifecycle(LifecycleRequest),
    Config(ConfigRequest),
    Priority(PriorityRequest),
    Workflow(WorkflowRequest),
    /// `orch.req.resource.nodes`: every node.
    Nodes,
    /// `orch.req.resource.node`: one node by name.
    Node(String),
}

/// A request about workflows (protocol.md §16.4).
#[derive(Debug)]
pub enum WorkflowRequest {
    /// Start an execution of the latest version of `workflow`.
    Run {
        workflow: String,
        inputs: Option<serde_json::Value>,
    },
    Get(uuid::Uuid),
    List {
        workflow: Option<String>,
        limit: i64,
    },
    Cancel(uuid::Uuid),
    /// A decision for an approval step.
    Signal {
        id: uuid::Uuid,
        step: String,
        decision: crate::workflow::api::Decision,
        comment: Option<String>,
    },
    Retry {
        id: uuid::Uuid,
        from: crate::workflow::api::RetryFrom,
    },
    Schedules,
    Queues,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    id: String,
    #[serde(default)]
    from: crate::workflow::api::RetryFrom,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    id: String,
    step: String,
    decision: crate::workflow::api::Decision,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    workflow: String,
    #[serde(default)]
    inputs: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionRef {
    id: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListBody {
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn workflow_request(verb: &str, payload: &Bytes) -> Result<WorkflowRequest, ProtocolError> {
    let parse_id = |id: &str| -> Result<uuid::Uuid, ProtocolError> {
        id.parse().map_err(|_| ProtocolError::invalid("id", format!("{id:?} is not an execution id (a UUID)")))
    };
    let execution_id = |payload: &Bytes| -> Result<uuid::Uuid, ProtocolError> {
        let r: ExecutionRef = parse_json(payload)?;
        parse_id(&r.id)
    };
    match verb {
        verbs::RUN => {
            let body: RunBody = parse_json(payload)?;
            orch_protocol::registry::validate_name("workflow", &body.workflow)?;
            Ok(WorkflowRequest::Run { workflow: body.workflow, inputs: body.inputs })
        }
        verbs::GET => Ok(WorkflowRequest::Get(execution_id(payload)?)),
        verbs::CANCEL => Ok(WorkflowRequest::Cancel(execution_id(payload)?)),
        verbs::SIGNAL => {
            let body: SignalBody = parse_json(payload)?;
            let id = parse_id(&body.id)?;
            Ok(WorkflowRequest::Signal { id, step: body.step, decision: body.decision, comment: body.comment })
        }
        verbs::RETRY => {
            let body: RetryBody = parse_json(payload)?;
            let id = parse_id(&body.id)?;
            Ok(WorkflowRequest::Retry { id, from: body.from })
        }
        verbs::SCHEDULES | verbs::QUEUES => {
            let _: EmptyRequest = parse_json(&empty_is_object(payload))?;
            Ok(if verb == verbs::SCHEDULES { WorkflowRequest::Schedules } else { WorkflowRequest::Queues })
        }
        verbs::LIST => {
            let payload = if payload.is_empty() { Bytes::from_static(b"{}") } else { payload.clone() };
            let body: ListBody = parse_json(&payload)?;
            if let Some(workflow) = &body.workflow {
                orch_protocol::registry::validate_name("workflow", workflow)?;
            }
            let limit = body.limit.unwrap_or(100);
            if !(1..=1000).contains(&limit) {
                return Err(ProtocolError::invalid("limit", "1-1000"));
            }
            Ok(WorkflowRequest::List { workflow: body.workflow, limit })
        }
        _ => Err(ProtocolError::new(
            ErrorCode::UnknownCommand,
            format!("workflow.{verb}: one of run, get, list, cancel, signal, retry, schedules, queues"),
        )),
    }
}

/// A request to the priority task.
#[derive(Debug)]
pub enum PriorityRequest {
    Set(orch_protocol::priority::SetRequest),
    Clear(orch_protocol::priority::ClearRequest),
    Get(orch_protocol::priority::GetRequest),
    List,
    Policy(orch_protocol::priority::PolicyRequest),
    Release(orch_protocol::priority::ReleaseRequest),
}

/// An empty payload read as `{}`.
fn empty_is_object(payload: &Bytes) -> Bytes {
    if payload.is_empty() { Bytes::from_static(b"{}") } else { payload.clone() }
}

/// A request without parameters: `{}` (or an empty payload).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyRequest {}

/// A request to the config store.
#[derive(Debug)]
pub enum ConfigRequest {
    Get(String),
    Put { key: String, value: serde_json::Value, revision: Option<u64> },
    Delete { key: String, revision: Option<u64> },
    List(String),
    History(String),
    Revert { key: String, to: u64 },
    Schemas,
    SchemaPut { prefix: String, schema: serde_json::Value },
    SchemaDelete(String),
}

fn config_request(verb: &str, payload: &Bytes) -> Result<ConfigRequest, ProtocolError> {
    use orch_protocol::config_store::{KeyRequest, ListRequest, PutRequest, RevertRequest, SchemaRequest};
    let key = |key: Option<String>| key.ok_or_else(|| ProtocolError::invalid("key", "required"));
    let prefix = |prefix: Option<String>| prefix.ok_or_else(|| ProtocolError::invalid("prefix", "required"));
    // Keys and values are checked by the store, the one place that writes them.
    match verb {
        verbs::GET => Ok(ConfigRequest::Get(parse_json::<KeyRequest>(payload)?.key)),
        verbs::HISTORY => Ok(ConfigRequest::History(parse_json::<KeyRequest>(payload)?.key)),
        verbs::PUT => {
            let r: PutRequest = parse_json(payload)?;
            Ok(ConfigRequest::Put { key: key(r.key)?, value: r.value, revision: r.revision })
        }
        verbs::DELETE => {
            let r: KeyRequest = parse_json(payload)?;
            Ok(ConfigRequest::Delete { key: r.key, revision: r.revision })
        }
        verbs::LIST => Ok(ConfigRequest::List(parse_json::<ListRequest>(&empty_is_object(payload))?.prefix)),
        verbs::REVERT => {
            let r: RevertRequest = parse_json(payload)?;
            Ok(ConfigRequest::Revert { key: key(r.key)?, to: r.to })
        }
        verbs::SCHEMAS => {
            let _: EmptyRequest = parse_json(&empty_is_object(payload))?;
            Ok(ConfigRequest::Schemas)
        }
        verbs::SCHEMA_PUT => {
            let r: SchemaRequest = parse_json(payload)?;
            let schema = r.schema.ok_or_else(|| ProtocolError::invalid("schema", "required"))?;
            Ok(ConfigRequest::SchemaPut { prefix: prefix(r.prefix)?, schema })
        }
        verbs::SCHEMA_DELETE => {
            let r: SchemaRequest = parse_json(payload)?;
            Ok(ConfigRequest::SchemaDelete(prefix(r.prefix)?))
        }
        other => Err(ProtocolError::new(
            ErrorCode::UnknownCommand,
            format!(
                "{other:?} is not a config request; use get, put, delete, list, history, revert, schemas, schema_put \
                 or schema_delete"
            ),
        )),
    }
}

/// A request to the lifecycle controller.
#[derive(Debug)]
pub enum LifecycleRequest {
    Status,
    Profile,
    Apply { manifest: Box<crate::lifecycle::Manifest>, text: String, source: String },
    Down,
    Restart(String),
    Versions(orch_protocol::history::VersionsRequest),
    Version(i64),
    Diff { from: i64, to: i64 },
    Rollback(i64),
    Logs(orch_protocol::lifecycle::ServiceLogsRequest),
}

/// A message on a request/reply subject.
pub fn decode_request(
    subjects: &Subjects,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &Bytes,
    max_bytes: usize,
) -> Result<Request, ProtocolError> {
    check_size(payload, max_bytes)?;
    let expected = || {
        format!(
            "{0}.req.registry.<register|deregister|get|list|discover> or \
             {0}.req.health.<ttl|maintenance|system|service|checks|end_self_preservation> or \
             {0}.req.lifecycle.<status|apply|down|restart|profile|logs|versions|version|diff|rollback> or \
             {0}.req.priority.<set|clear|get|list|policy|release> or \
             {0}.req.workflow.<run|get|list|cancel|signal|retry|schedules|queues> or \
             {0}.req.resource.<nodes|node> or \
             {0}.req.config.<get|put|delete|list|history|revert|schemas|schema_put|schema_delete>",
            subjects.prefix()
        )
    };
    let (domain, verb) = subjects.parse_command(subject, "req").ok_or_else(|| unknown(subject, &expected()))?;
    if let Some(command) = write_command(domain, verb, payload) {
        let by = principal::nats_sender(subjects.sender(subject, "req"));
        let meta = Meta::new("req", msg_id(headers), subject, payload.clone(), by);
        return Ok(Request::Write(Box::new(Submission { meta, body: Body::Command(command?) })));
    }
    match (domain, verb) {
        (verbs::REGISTRY, verbs::GET) => {
            let r: InstanceRef = parse_json(payload)?;
            validate_instance_id("id", &r.id)?;
            Ok(Request::Get(r.id))
        }
        (verbs::REGISTRY, verbs::LIST) => Ok(Request::List(parse_json(&empty_is_object(payload))?)),
        (verbs::REGISTRY, verbs::DISCOVER) => {
            let request: DiscoverRequest = parse_json(payload)?;
            orch_protocol::registry::validate_name("name", &request.name)?;
            Ok(Request::Discover(request))
        }
        (verbs::HEALTH, verbs::TTL) => {
            let ttl: TtlCommand = parse_json(payload)?;
            validate_instance_id("id", &ttl.id)?;
            orch_protocol::health::validate_check_id("check", &ttl.check)?;
            Ok(Request::Ttl(ttl))
        }
        (verbs::HEALTH, verbs::SYSTEM) => Ok(Request::SystemHealth),
        (verbs::HEALTH, verbs::END_SELF_PRESERVATION) => {
            let request: orch_protocol::health::EndSelfPreservationRequest = parse_json(&empty_is_object(payload))?;
            request.validate()?;
            Ok(Request::EndSelfPreservation(request))
        }
        (verbs::HEALTH, verbs::SERVICE) => {
            let request: ServiceRequest = parse_json(payload)?;
            orch_protocol::registry::validate_name("name", &request.name)?;
            Ok(Request::ServiceHealth(request.name))
        }
        (verbs::HEALTH, verbs::CHECKS) => {
            let r: InstanceRef = parse_json(payload)?;
            validate_instance_id("id", &r.id)?;
            Ok(Request::Checks(r.id))
        }
        (verbs::LIFECYCLE, verb) => lifecycle_request(verb, payload).map(Request::Lifecycle),
        (verbs::CONFIG, verb) => config_request(verb, payload).map(Request::Config),
        (verbs::PRIORITY, verbs::SET) => Ok(Request::Priority(PriorityRequest::Set(parse_json(payload)?))),
        (verbs::PRIORITY, verbs::CLEAR) => Ok(Request::Priority(PriorityRequest::Clear(parse_json(payload)?))),
        (verbs::PRIORITY, verbs::GET) => Ok(Request::Priority(PriorityRequest::Get(parse_json(payload)?))),
        (verbs::PRIORITY, verbs::LIST) => {
            let _: EmptyRequest = parse_json(&empty_is_object(payload))?;
            Ok(Request::Priority(PriorityRequest::List))
        }
        (verbs::PRIORITY, verbs::POLICY) => Ok(Request::Priority(PriorityRequest::Policy(parse_json(payload)?))),
        (verbs::PRIORITY, verbs::RELEASE) => Ok(Request::Priority(PriorityRequest::Release(parse_json(payload)?))),
        (
            verbs::WORKFLOW,
            verb @ (verbs::RUN
            | verbs::GET
            | verbs::LIST
            | verbs::CANCEL
            | verbs::SIGNAL
            | verbs::RETRY
            | verbs::SCHEDULES
            | verbs::QUEUES),
        ) => workflow_request(verb, payload).map(Request::Workflow),
        (verbs::RESOURCE, verbs::NODES) => {
            let _: EmptyRequest = parse_json(&empty_is_object(payload))?;
            Ok(Request::Nodes)
        }
        (verbs::RESOURCE, verbs::NODE) => {
            let r: orch_protocol::resources::NodeRef = parse_json(payload)?;
            orch_protocol::registry::validate_name("name", &r.name)?;
            Ok(Request::Node(r.name))
        }
        _ => Err(unknown(subject, &expected())),
    }
}

fn lifecycle_request(verb: &str, payload: &Bytes) -> Result<LifecycleRequest, ProtocolError> {
    use orch_protocol::history::{DiffRequest, RollbackRequest, VersionRef, validate_version};
    use orch_protocol::lifecycle::{ApplyRequest, ServiceRef};
    match verb {
        verbs::STATUS => Ok(LifecycleRequest::Status),
        verbs::PROFILE => Ok(LifecycleRequest::Profile),
        verbs::DOWN => Ok(LifecycleRequest::Down),
        verbs::RESTART => {
            let r: ServiceRef = parse_json(payload)?;
            orch_protocol::registry::validate_name("service", &r.service)?;
            Ok(LifecycleRequest::Restart(r.service))
        }
        verbs::LOGS => {
            let r: orch_protocol::lifecycle::ServiceLogsRequest = parse_json(payload)?;
            r.validate()?;
            Ok(LifecycleRequest::Logs(r))
        }
        verbs::APPLY => {
            let r: ApplyRequest = parse_json(payload)?;
            let manifest = crate::lifecycle::Manifest::parse(&r.manifest)
                .and_then(|m| crate::lifecycle::Graph::new(&m).map(|_| m))?;
            let source = r.source.unwrap_or_else(|| "nats".into());
            Ok(LifecycleRequest::Apply { manifest: Box::new(manifest), text: r.manifest, source })
        }
        verbs::VERSIONS => Ok(LifecycleRequest::Versions(parse_json(&empty_is_object(payload))?)),
        verbs::VERSION => {
            let r: VersionRef = parse_json(payload)?;
            validate_version("version", r.version)?;
            Ok(LifecycleRequest::Version(r.version))
        }
        verbs::DIFF => {
            let r: DiffRequest = parse_json(payload)?;
            validate_version("from", r.from)?;
            validate_version("to", r.to)?;
            Ok(LifecycleRequest::Diff { from: r.from, to: r.to })
        }
        verbs::ROLLBACK => {
            let r: RollbackRequest = parse_json(payload)?;
            validate_version("version", r.version)?;
            Ok(LifecycleRequest::Rollback(r.version))
        }
        other => Err(ProtocolError::new(
            ErrorCode::UnknownCommand,
            format!(
                "{other:?} is not a lifecycle request; use status, apply, down, restart, profile, logs, versions, \
                 version, diff or rollback"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects {
        Subjects::default()
    }

    fn pos(seq: u64) -> StreamPosition {
        StreamPosition { stream_epoch: 1000, seq }
    }

    #[track_caller]
    fn invalid(sub: Submission) -> ProtocolError {
        match sub.body {
            Body::Invalid { error } => error,
            Body::Command(c) => panic!("expected a rejection, got {c:?}"),
        }
    }

    #[test]
    fn valid_register_gets_an_id_and_a_command_id() {
        let payload = Bytes::from_static(br#"{"name":"web","address":"127.0.0.1","port":80}"#);
        let sub = decode_command(&subjects(), "orch.cmd.registry.register", None, &payload, pos(7), 1024);
        assert_eq!(sub.meta.command_id.as_deref(), Some("seq:7"));
        assert_eq!(sub.meta.ledger_key.as_deref(), Some("js-seq:1000:7"));
        let Body::Command(Command::Register(reg)) = sub.body else { panic!() };
        assert!(reg.id.is_some());
    }

    #[test]
    fn a_subject_that_names_its_sender_is_the_same_command_by_that_principal() {
        let payload = Bytes::from_static(br#"{"id":"x"}"#);
        let plain = decode_command(&subjects(), "orch.cmd.registry.deregister", None, &payload, pos(1), 1024);
        assert_eq!(plain.meta.principal, "nats");
        let named = decode_command(&subjects(), "orch.cmd.registry.deregister.service", None, &payload, pos(2), 1024);
        assert_eq!(named.meta.principal, "nats:service");
        assert!(matches!(named.body, Body::Command(Command::Deregister { .. })));
        let Request::Write(req) =
            decode_request(&subjects(), "orch.req.registry.deregister.operator", None, &payload, 1024).unwrap()
        else {
            panic!()
        };
        assert_eq!(req.meta.principal, "nats:operator");
        // A sender that is no user token names no command.
        let bad = decode_request(&subjects(), "orch.req.registry.get.a%b", None, &payload, 1024).unwrap_err();
        assert_eq!(bad.code(), ErrorCode::UnknownCommand);
    }

    #[test]
    fn msg_id_header_is_the_command_id() {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::MSG_ID, "abc");
        let payload = Bytes::from_static(br#"{"id":"x"}"#);
        let sub = decode_command(&subjects(), "orch.cmd.registry.deregister", Some(&h), &payload, pos(1), 1024);
        assert_eq!(sub.meta.command_id.as_deref(), Some("abc"));
        assert_eq!(sub.meta.ledger_key.as_deref(), Some("js:abc"));
        let req = decode_request(&subjects(), "orch.req.registry.deregister", Some(&h), &payload, 1024).unwrap();
        let Request::Write(req) = req else { panic!() };
        assert_eq!(req.meta.ledger_key.as_deref(), Some("req:abc"), "paths never share ledger keys");
    }

    #[test]
    fn bad_input_becomes_a_named_rejection() {
        let s = subjects();
        let e =
            invalid(decode_command(&s, "orch.cmd.registry.register", None, &Bytes::from_static(b"{"), pos(1), 1024));
        assert_eq!(e.code(), ErrorCode::MalformedPayload);
        let e = invalid(decode_command(
            &s,
            "orch.cmd.registry.register",
            None,
            &Bytes::from_static(br#"{"name":"web","address":"h","port":"80"}"#),
            pos(1),
            1024,
        ));
        assert_eq!(e.body().field.as_deref(), Some("port"));
        let e = invalid(decode_command(
            &s,
            "orch.cmd.registry.register",
            None,
            &Bytes::from_static(br#"{"name":"web","address":"h","port":0}"#),
            pos(1),
            1024,
        ));
        assert_eq!((e.code(), e.body().field.as_deref()), (ErrorCode::ValidationFailed, Some("port")));
        let e =
            invalid(decode_command(&s, "orch.cmd.registry.explode", None, &Bytes::from_static(b"{}"), pos(1), 1024));
        assert_eq!(e.code(), ErrorCode::UnknownCommand);
        let e = invalid(decode_command(&s, "orch.cmd.x", None, &Bytes::from_static(b"{}"), pos(1), 1024));
        assert_eq!(e.code(), ErrorCode::UnknownCommand);
        let e = invalid(decode_command(
            &s,
            "orch.cmd.registry.register",
            None,
            &Bytes::from(vec![b' '; 2000]),
            pos(1),
            1024,
        ));
        assert_eq!(e.code(), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn requests_decode_reads_and_writes() {
        let s = subjects();
        let list = decode_request(&s, "orch.req.registry.list", None, &Bytes::new(), 1024).unwrap();
        assert!(matches!(list, Request::List(_)));
        let get =
            decode_request(&s, "orch.req.registry.get", None, &Bytes::from_static(br#"{"id":"a"}"#), 1024).unwrap();
        assert!(matches!(get, Request::Get(id) if id == "a"));
        let err = decode_request(&s, "orch.req.registry.nope", None, &Bytes::new(), 1024).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownCommand);
    }
}
