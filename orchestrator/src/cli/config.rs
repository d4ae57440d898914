//! `orchestrator config …`: the config store over the HTTP API (protocol.md §18).

use anyhow::Context;
use orch_client::stack::StackClient;
use orch_protocol::config_store::ConfigChange;
use serde_json::Value;

use crate::config::{ApiArgs, ConfigCommand};

fn client(args: &ApiArgs) -> anyhow::Result<StackClient> {
    Ok(StackClient::new(&args.api_url, args.api_token.as_deref())?)
}

/// A value given on the command line: JSON when it parses, else text.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn shown(value: &Option<Value>) -> String {
    value.as_ref().map_or("(none)".to_string(), Value::to_string)
}

fn change_line(c: &ConfigChange) -> String {
    let reverted = c.reverted_to.map(|r| format!(" (to revision {r})")).unwrap_or_default();
    format!(
        "{:>6}  {:<6} {:<24} {}  {} -> {}{reverted}",
        c.revision,
        c.op.as_str(),
        c.principal,
        c.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        shown(&c.previous),
        shown(&c.value)
    )
}

pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Get { key, api } => {
            let entry = client(&api)?.config_get(&key).await?;
            println!("{}", entry.value);
            eprintln!("revision {} updated {}", entry.revision, entry.updated_at.to_rfc3339());
        }
        ConfigCommand::Put { key, value, revision, api } => {
            let change = client(&api)?.config_put(&key, value_of(&value), revision).await?;
            println!("{key} set: revision {} (was {})", change.revision, shown(&change.previous));
        }
        ConfigCommand::Delete { key, revision, api } => {
            let change = client(&api)?.config_delete(&key, revision).await?;
            println!(
                "{key} deleted (was {} at revision {})",
                shown(&change.previous),
                change.previous_revision.unwrap_or(0)
            );
        }
        ConfigCommand::List { prefix, api } => {
            let list = client(&api)?.config_list(&prefix).await?;
            for e in &list.entries {
                println!("{:<40} {:>6}  {}", e.key, e.revision, e.value);
            }
            if list.truncated {
                println!("(more keys: narrow the prefix)");
            }
        }
        ConfigCommand::History { key, api } => {
            let history = client(&api)?.config_history(&key).await?;
            println!("{:>6}  {:<6} {:<24} {:<20}  old -> new", "rev", "op", "by", "at");
            for c in &history.changes {
                println!("{}", change_line(c));
            }
        }
        ConfigCommand::Revert { key, to, api } => {
            let change = client(&api)?.config_revert(&key, to).await?;
            println!("{key} reverted to the value of revision {to}: revision {}", change.revision);
        }
        ConfigCommand::Schema { prefix, file, api } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let schema: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            let set = client(&api)?.config_set_schema(&prefix, schema).await?;
            println!("schema of {:?} set by {}", set.prefix, set.set_by);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse_else_text() {
        assert_eq!(value_of("42"), serde_json::json!(42));
        assert_eq!(value_of(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(value_of("postgres://x"), serde_json::json!("postgres://x"));
        assert_eq!(value_of(r#""quoted""#), serde_json::json!("quoted"));
    }
}
