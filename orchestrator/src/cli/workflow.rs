//! `orchestrator workflow …`: store, run and follow workflows through the HTTP API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use orch_client::stack::StackClient;
use serde_json::Value;

use crate::config::{ApiArgs, WorkflowCommand};

/// How often a followed execution is read.
const POLL: Duration = Duration::from_millis(250);

fn client(args: &ApiArgs) -> anyhow::Result<StackClient> {
    Ok(StackClient::new(&args.api_url, args.api_token.as_deref())?)
}

/// Runs the command; `Ok(false)` when a followed execution did not succeed.
pub async fn run(command: WorkflowCommand) -> anyhow::Result<bool> {
    match command {
        WorkflowCommand::Put { file, api } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let definition = crate::workflow::Definition::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
            let stored = client(&api)?.put_workflow(&definition.workflow.name, text).await?;
            if stored["created"] == true {
                println!("stored {} version {}", stored["name"].as_str().unwrap_or("?"), stored["version"]);
            } else {
                println!("unchanged: {} version {}", stored["name"].as_str().unwrap_or("?"), stored["version"]);
            }
            Ok(true)
        }
        WorkflowCommand::Run { name, inputs, detach, api } => {
            let mut given = serde_json::Map::new();
            for input in inputs {
                let (key, value) = input.split_once('=').with_context(|| format!("--input {input:?}: NAME=VALUE"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
                given.insert(key.to_string(), value);
            }
            let client = client(&api)?;
            let started = client.run_workflow(&name, Value::Object(given)).await?;
            let id = started["id"].as_str().context("the answer names no execution")?.to_string();
            println!("execution {id} of {name} queued");
            if detach {
                return Ok(true);
            }
            follow(&client, &id).await
        }
        WorkflowCommand::Get { id, api } => {
            print_execution(&client(&api)?.execution(&id).await?);
            Ok(true)
        }
        WorkflowCommand::List { workflow, api } => {
            let list = client(&api)?.executions(workflow.as_deref()).await?;
            println!("{:<38} {:<20} {:<12} {:<10} created", "execution", "workflow", "status", "trigger");
            for e in list.as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<20} {:<12} {:<10} {}",
                    text(&e["id"]),
                    text(&e["workflow"]),
                    text(&e["status"]),
                    text(&e["trigger"]),
                    text(&e["created_at"])
                );
            }
            Ok(true)
        }
        WorkflowCommand::Cancel { id, api } => {
            let view = client(&api)?.cancel_execution(&id).await?;
            println!("execution {id}: {}", text(&view["status"]));
            Ok(true)
        }
        WorkflowCommand::Retry { id, from_start, detach, api } => {
            let client = client(&api)?;
            let started = client.retry_execution(&id, if from_start { "start" } else { "failed" }).await?;
            let new = started["id"].as_str().context("the answer names no execution")?.to_string();
            println!("execution {new} retries {id}");
            if detach {
                return Ok(true);
            }
            follow(&client, &new).await
        }
        WorkflowCommand::Approve { id, step, comment, api } => decide(&api, &id, &step, "approve", comment).await,
        WorkflowCommand::Reject { id, step, comment, api } => decide(&api, &id, &step, "reject", comment).await,
        WorkflowCommand::Schedules { api } => {
            let list = client(&api)?.schedules().await?;
            println!(
                "{:<20} {:>5} {:<20} {:<14} {:<8} {:<6} next firing",
                "workflow", "index", "cron", "timezone", "overlap", "catch-up"
            );
            for s in list.as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:>5} {:<20} {:<14} {:<8} {:<6} {}",
                    text(&s["workflow"]),
                    s["index"],
                    text(&s["cron"]),
                    text(&s["timezone"]),
                    text(&s["overlap"]),
                    text(&s["catch_up"]),
                    text(&s["next_fire_at"])
                );
            }
            Ok(true)
        }
        WorkflowCommand::Hooks { api } => {
            let list = client(&api)?.hooks().await?;
            println!("{:<24} {:<20} {:>8} {:<7} secret set", "webhook", "workflow", "window s", "secret");
            for h in list.as_array().into_iter().flatten() {
                let set = match (h["secret_set_by"].as_str(), h["secret_set_at"].as_str()) {
                    (Some(by), Some(at)) => format!("by {by} at {at}"),
                    _ => "-".into(),
                };
                println!(
                    "{:<24} {:<20} {:>8} {:<7} {set}",
                    text(&h["name"]),
                    text(&h["workflow"]),
                    h["replay_window_seconds"],
                    if h["has_secret"] == true { "yes" } else { "no" },
                );
            }
            Ok(true)
        }
        WorkflowCommand::HookSecret { name, api } => {
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret).context("reading the secret from standard input")?;
            let view = client(&api)?.set_hook_secret(&name, secret.trim()).await?;
            println!("webhook {name}: secret set by {}", text(&view["secret_set_by"]));
            Ok(true)
        }
        WorkflowCommand::Queues { api } => {
            let list = client(&api)?.queues().await?;
            println!(
                "{:<20} {:>8} {:>8} {:>10} {:>7} {:>10} {:>12} {:>12}",
                "queue", "waiting", "running", "succeeded", "failed", "cancelled", "wait p50 ms", "wait p99 ms"
            );
            let ms = |v: &Value| v.as_f64().map_or_else(|| "-".to_string(), |ms| format!("{ms:.0}"));
            for q in list.as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:>8} {:>8} {:>10} {:>7} {:>10} {:>12} {:>12}",
                    text(&q["queue"]),
                    q["waiting"],
                    q["running"],
                    q["succeeded"],
                    q["failed"],
                    q["cancelled"],
                    ms(&q["wait_p50_ms"]),
                    ms(&q["wait_p99_ms"])
                );
            }
            Ok(true)
        }
    }
}

/// Sends a decision to an approval step and prints where the execution stands.
async fn decide(api: &ApiArgs, id: &str, step: &str, decision: &str, comment: Option<String>) -> anyhow::Result<bool> {
    let view = client(api)?.signal_execution(id, step, decision, comment.as_deref()).await?;
    let state = &view["steps"][step];
    println!(
        "execution {id}: step {step} {} ({decision}); execution {}",
        text(&state["status"]),
        text(&view["status"])
    );
    Ok(true)
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Prints each step's change until the execution ends; true when it succeeded.
async fn follow(client: &StackClient, id: &str) -> anyhow::Result<bool> {
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    loop {
        let view = client.execution(id).await?;
        for (step, state) in view["steps"].as_object().into_iter().flatten() {
            let now = (text(&state["status"]), state["attempt"].as_u64().unwrap_or(0));
            if seen.get(step) != Some(&now) {
                let error = state["error"]["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
                println!("  {step:<24} {:<10} attempt {}{error}", now.0, now.1);
                seen.insert(step.clone(), now);
            }
        }
        let status = text(&view["status"]);
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            let reason = view["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
            println!("execution {id} {status}{reason}");
            return Ok(status == "succeeded");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_execution(view: &Value) {
    println!(
        "execution {} of {} (version {}): {}{}",
        text(&view["id"]),
        text(&view["workflow"]),
        view["version"],
        text(&view["status"]),
        view["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
    );
    for (step, state) in view["steps"].as_object().into_iter().flatten() {
        println!("  {step:<24} {:<10} attempt {}", text(&state["status"]), state["attempt"]);
    }
}
