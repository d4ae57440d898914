//! Generated inputs for every decoder that takes network input: the registry, health, lifecycle
//! and priority requests and commands (registrations with their check specs included), and
//! manifests. Payloads are JSON built from the protocol's own field names and awkward values
//! (wrong types, huge and negative numbers, subject wildcards, control characters, deep nesting),
//! often on top of a valid payload, so they reach the validation behind the parser. Each case
//! must end in a value or a clear error (a message, and for a validation error the field); a
//! panic fails the test. The case counts bound the time taken in `make test`.

use bytes::Bytes;
use orch_protocol::Subjects;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::decode::{StreamPosition, decode_command, decode_request};
use crate::registry::Body;

const FIELDS: &[&str] = &[
    "id",
    "name",
    "address",
    "port",
    "version",
    "protocol",
    "tags",
    "metadata",
    "dependencies",
    "weight",
    "ttl_seconds",
    "checks",
    "kind",
    "url",
    "method",
    "headers",
    "expect_body",
    "tls_skip_verify",
    "interval",
    "timeout",
    "initial_delay",
    "failures_before_critical",
    "failures_before_warning",
    "successes_before_passing",
    "initial_status",
    "ttl",
    "subject",
    "command",
    "service",
    "instance_id",
    "check",
    "status",
    "output",
    "reason",
    "until",
    "value",
    "source",
    "baseline",
    "min",
    "max",
    "pinned",
    "lines",
    "strategy",
    "limit",
    "health",
    "manifest",
    "after",
    "tag",
];

fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_string),
        prop::sample::select(vec![
            "",
            " ",
            "web",
            "web-1",
            "a.b",
            "*",
            ">",
            "orch.>",
            "$JS.API.STREAM.DELETE.ORCH_EVENTS",
            "10s",
            "0s",
            "-1s",
            "999999999999h",
            "1ms",
            "passing",
            "critical",
            "warning",
            "http",
            "tcp",
            "nats",
            "exec",
            "ttl",
            "lease",
            "/health",
            "http://169.254.169.254/",
            "ftp://x",
            "127.0.0.1",
            "::1",
            "\u{0}",
            "line\nbreak",
            "é",
            "🙂",
            "up",
            "down",
        ])
        .prop_map(str::to_string),
        "\\PC{0,40}",
        (1usize..3).prop_map(|n| "x".repeat(n * 5_000)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 80, 65_535, 65_536, 100, 101, i64::MIN, i64::MAX]).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        prop::sample::select(vec![0.5f64, -0.0, 1e308, -1e308, 2.5]).prop_map(Value::from),
        awkward_string().prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// A valid payload of each kind, for generated values to be laid over.
fn seeds() -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(
        r#"[
        {"id": "web-1", "name": "web", "address": "127.0.0.1", "port": 8080, "ttl_seconds": 30,
         "checks": [{"kind": "http", "url": "/health", "interval": "5s", "headers": {"x-probe": "1"}},
                    {"kind": "tcp"}, {"kind": "nats"}, {"kind": "ttl", "id": "jobs", "ttl": "1m"}]},
        {"id": "web-1"},
        {"id": "web-1", "check": "jobs", "status": "passing", "output": "ok"},
        {"service": "web", "reason": "deploy", "until": "2030-01-01T00:00:00Z"},
        {"service": "web", "value": 70, "reason": "load", "source": "engine", "ttl": "5m"},
        {"service": "web", "baseline": 50, "min": 10, "max": 90, "pinned": false},
        {"name": "web", "lines": 10},
        {}
    ]"#,
    )
    .expect("the seeds are JSON")
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A valid payload with some fields replaced or added.
        (prop::sample::select(seeds()), prop::collection::vec((prop::sample::select(FIELDS), json()), 1..4)).prop_map(
            |(seed, changes)| {
                let mut object: Map<String, Value> = seed.as_object().cloned().unwrap_or_default();
                for (field, value) in changes {
                    object.insert(field.to_string(), value);
                }
                serde_json::to_vec(&Value::Object(object)).unwrap()
            }
        ),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

const REQUESTS: &[(&str, &str)] = &[
    ("registry", "register"),
    ("registry", "deregister"),
    ("registry", "get"),
    ("registry", "list"),
    ("registry", "discover"),
    ("health", "ttl"),
    ("health", "maintenance"),
    ("health", "system"),
    ("health", "service"),
    ("health", "checks"),
    ("lifecycle", "status"),
    ("lifecycle", "apply"),
    ("lifecycle", "down"),
    ("lifecycle", "restart"),
    ("lifecycle", "profile"),
    ("priority", "set"),
    ("priority", "clear"),
    ("priority", "get"),
    ("priority", "list"),
    ("priority", "policy"),
    ("priority", "release"),
    ("registry", "nothing"),
];

/// Cases per property: enough to reach every validation rule, bounded for `make test`.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() }
}

fn assert_clear(error: &orch_protocol::ErrorBody) {
    assert!(!error.message.trim().is_empty(), "an error without a message: {error:?}");
    if error.code == orch_protocol::ErrorCode::ValidationFailed {
        assert!(error.field.as_deref().is_some_and(|f| !f.is_empty()), "a validation error names its field: {error:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_end_in_a_value_or_a_clear_error(
        (domain, verb) in prop::sample::select(REQUESTS),
        payload in payload(),
    ) {
        let subjects = Subjects::default();
        let subject = subjects.request(domain, verb);
        if let Err(e) = decode_request(&subjects, &subject, None, &Bytes::from(payload), 64 * 1024) {
            assert_clear(e.body());
        }
    }

    #[test]
    fn durable_commands_end_in_a_command_or_a_dead_letter_with_a_reason(
        (domain, verb) in prop::sample::select(REQUESTS),
        payload in payload(),
    ) {
        let subjects = Subjects::default();
        let subject = subjects.command(domain, verb);
        let position = StreamPosition { stream_epoch: 1, seq: 1 };
        let submission = decode_command(&subjects, &subject, None, &Bytes::from(payload), position, 64 * 1024);
        if let Body::Invalid { error } = &submission.body {
            assert_clear(error.body());
        }
    }
}

fn manifest_text() -> impl Strategy<Value = String> {
    let lines = prop::sample::select(vec![
        "[services.web]",
        "[services.db]",
        "[services.\"bad name\"]",
        "command = \"/bin/sleep\"",
        "command = \"\"",
        "args = [\"60\"]",
        "args = 5",
        "port = 8080",
        "port = 70000",
        "port = -1",
        "depends_on = [\"db\"]",
        "depends_on = [\"web\"]",
        "depends_on = [\"nowhere\"]",
        "depends_on = { db = \"ready\" }",
        "readiness = { kind = \"tcp\", interval = \"1s\" }",
        "readiness = { kind = \"http\", url = \"/health\" }",
        "readiness = { kind = \"lease\" }",
        "liveness = { kind = \"exec\", command = [\"/bin/true\"] }",
        "restart = \"always\"",
        "restart = \"sometimes\"",
        "grace_period = \"5s\"",
        "grace_period = \"-5s\"",
        "priority = 101",
        "priority = 50",
        "sheddable = true",
        "node = \"Node.X\"",
        "env = { A = \"1\" }",
        "critical = true",
        "= broken",
        "[[services]]",
        "",
    ]);
    prop::collection::vec(lines, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifests_parse_or_name_every_problem(text in manifest_text()) {
        if let Err(e) = crate::lifecycle::Manifest::parse(&text) {
            prop_assert!(!e.problems.is_empty());
            for problem in &e.problems {
                prop_assert!(!problem.field.is_empty() && !problem.message.trim().is_empty(), "{problem:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// An agent's reports, as any publisher on its subject may send them: a report, or a refusal
    /// the controller logs; a report with extreme readings still yields a reason to show.
    #[test]
    fn agent_reports_decode_or_are_refused(payload in payload()) {
        let _ = serde_json::from_slice::<orch_protocol::agent::Exited>(&payload);
        if let Ok(report) = serde_json::from_slice::<orch_protocol::agent::Pressure>(&payload) {
            let reason = crate::lifecycle::shedding::pressure_reason(
                report.cpu,
                report.memory,
                &crate::lifecycle::shedding::ShedSettings::default(),
            );
            prop_assert!(reason.len() < 1_000);
        }
    }
}
