//! The HTTP API against its own OpenAPI document, with requests generated from the document by
//! Schemathesis (pinned, from `ORCH_SCHEMATHESIS`): a real orchestrator, NATS and PostgreSQL with
//! an admin key, every operation, valid and invalid inputs, and sequences of calls.
//!
//! Checked on every answer: no `5xx`; the status, content type, headers and body as the document
//! says; invalid input refused; authentication not ignored. Left out: `positive_data_acceptance`,
//! which expects every request the document's schemas allow to be accepted. The document gives
//! the patterns of names and ids in paths and of `Idempotency-Key`, but not every rule of the
//! protocol (body fields' lengths and ranges, `min` not above `max`, a manifest's content);
//! protocol.md does, and the `400` naming the field is documented for each operation.
//!
//! Bounded and deterministic: deterministic generation (no random seed, no example database kept
//! between runs), one worker, and a fixed number of examples per operation.

mod common;

use std::process::Stdio;

use common::Stack;

/// Examples per operation and phase: enough to reach every operation with valid and invalid
/// data in about a minute on a 2-core machine.
const EXAMPLES: &str = "25";
const ADMIN: &str = "admin:schemathesis:api-fuzz-admin-token";

#[tokio::test]
async fn generated_requests_get_no_server_error_and_answers_as_documented() {
    let tool = std::env::var("ORCH_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!(
            "ORCH_SCHEMATHESIS is not set: run the tests through `make test` (scripts/deps.sh installs \
             schemathesis and scripts/test.sh sets it), or set it to the path of the `schemathesis` command"
        )
    });
    let stack = Stack::start_with(|s| s.http.auth.api_keys = vec![ADMIN.parse().unwrap()]).await;
    let url = format!("http://127.0.0.1:{}/api/v1/openapi.json", stack.http_port());
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api_fuzz/hooks.py");
    let reports = orch_testkit::TempDir::new("api-fuzz");
    let output = tokio::process::Command::new(&tool)
        .args(["run", &url, "--header", "Authorization: Bearer api-fuzz-admin-token"])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", EXAMPLES, "--generation-deterministic"])
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--no-color", "--report-dir"])
        .arg(reports.path())
        .env("SCHEMATHESIS_HOOKS", hooks)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} could not run: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Schemathesis found answers that break the document (exit {}):\n{text}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // It ran what it says it ran: every operation of the document but the document itself (which
    // Schemathesis leaves out as the schema it reads), and some test cases.
    let operations = stack_operations(&stack).await - 1;
    assert!(
        text.contains(&format!("Tested: {operations}")),
        "not every one of {operations} operations was tested:\n{text}"
    );
    assert!(text.contains(" passed"), "{text}");
}

/// The number of operations in the served document.
async fn stack_operations(stack: &Stack) -> usize {
    let (_, document) = common::http::call(stack, "GET", "/api/v1/openapi.json", None).await;
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let paths = document["paths"].as_object().unwrap().values();
    paths.map(|item| item.as_object().unwrap().keys().filter(|k| METHODS.contains(&k.as_str())).count()).sum()
}
