//! The stack commands of the command line (`up`, `down`, `status`, `profile`): clients of the
//! HTTP API of a running orchestrator, through `orch-client`. `up` follows the start-up live: one
//! redrawn status line on a terminal, one line per transition otherwise.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orch_client::stack::StackClient;
use orch_protocol::history::{Change, ManifestDiff};
use orch_protocol::lifecycle::ServiceState;
use orch_protocol::stack::{RunProfile, StackApplied, StackView};

use crate::config::{ApiArgs, HistoryCommand, UpArgs};
use crate::lifecycle::{Graph, Manifest};

fn client(args: &ApiArgs) -> anyhow::Result<StackClient> {
    Ok(StackClient::new(&args.api_url, args.api_token.as_deref())?)
}

/// Prints the transitions of `stack` not printed yet (one line each, for logs and pipes).
struct Transitions {
    started: Instant,
    seen: BTreeMap<String, ServiceState>,
}

impl Transitions {
    fn print_new(&mut self, stack: &StackView) {
        for s in &stack.services {
            if self.seen.get(&s.name) != Some(&s.state) {
                let reason = s.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
                println!("{:>8.2}s  {:<24} {}{reason}", self.started.elapsed().as_secs_f64(), s.name, s.state.as_str());
                self.seen.insert(s.name.clone(), s.state);
            }
        }
    }
}

/// `orchestrator up -f FILE`: applies the manifest and follows the start-up. Exit code 0 when
/// every service is ready (or completed), 1 when the run ended degraded or aborted.
pub async fn up(args: &UpArgs) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if let Err(e) = Manifest::parse(&text).and_then(|m| Graph::new(&m)) {
        bail!("{}: {e}", args.file.display());
    }
    let api = client(&args.api)?;
    let source = format!("cli:{}", args.file.display());
    let applied = api.apply(text, &source).await.context("applying the manifest")?;
    follow_applied(&api, &applied, args.detach).await
}

/// Prints what an apply (or a rollback) accepted and, unless `detach`, follows its start-up and
/// rolling updates to the end; whether everything came up.
async fn follow_applied(api: &StackClient, applied: &StackApplied, detach: bool) -> anyhow::Result<bool> {
    let replacing = if applied.replaced.is_empty() {
        String::new()
    } else {
        format!(", replacing {}", applied.replaced.join(", "))
    };
    println!("manifest version {} applied: {} services{replacing}", applied.version, applied.services);
    if !applied.rolling.is_empty() {
        println!("rolling update of {} (a batch at a time, once the stack is up)", applied.rolling.join(", "));
    }
    if detach {
        return Ok(true);
    }
    let terminal = std::io::stdout().is_terminal();
    let mut transitions = Transitions { started: Instant::now(), seen: BTreeMap::new() };
    loop {
        let stack = api.stack().await?;
        if terminal {
            print!("\r\x1b[2K{}", progress_line(&stack));
            let _ = std::io::stdout().flush();
        } else {
            transitions.print_new(&stack);
        }
        let profile = api.profile().await.ok();
        if let Some(p) = profile.filter(|p| p.run_id == applied.run_id && p.finished) {
            // The run finished after the stack above was read: read it again, so the last
            // transitions (the final `ready` among them) are shown too.
            let stack = api.stack().await?;
            if terminal {
                println!("\r\x1b[2K{}", progress_line(&stack));
            } else {
                transitions.print_new(&stack);
            }
            for (state, list) in by_state(&stack) {
                if matches!(state, ServiceState::Failed | ServiceState::Blocked | ServiceState::Crashed) {
                    println!("{}: {}", state.as_str(), list.join(", "));
                }
            }
            print_profile(&p);
            let ready = p.outcome.as_deref() == Some("ready");
            if applied.rolling.is_empty() {
                return Ok(ready);
            }
            return Ok(follow_rollouts(api, applied.version).await? && ready);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows the rolling updates of `version` until they complete or fail, printing each step;
/// whether they completed.
async fn follow_rollouts(api: &StackClient, version: i64) -> anyhow::Result<bool> {
    let mut last = String::new();
    loop {
        let stack = api.stack().await?;
        if stack.version != version {
            // A newer version: an auto-revert after a failed update, or someone else's apply.
            println!(
                "manifest version {} is applied now: the rolling update of version {version} failed or was superseded (orchestrator events rollout_failed)",
                stack.version
            );
            return Ok(false);
        }
        let rollouts: Vec<_> = stack.rollouts.iter().filter(|r| r.version == version).collect();
        let line = rollouts.iter().map(|r| rollout_line(r)).collect::<Vec<_>>().join("; ");
        if line != last && !line.is_empty() {
            println!("{line}");
            last = line;
        }
        if let Some(failed) = rollouts.iter().find(|r| r.reason.is_some()) {
            println!("rolling update of {} failed: {}", failed.service, failed.reason.as_deref().unwrap_or_default());
            return Ok(false);
        }
        if rollouts.is_empty() {
            println!("rolling update of version {version} completed");
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One rolling update in a line: `api to v3: 1/3 replaced, replacing api-1 (reverts to v2)`.
fn rollout_line(r: &orch_protocol::stack::RolloutData) -> String {
    let total = r.replaced.len() + r.batch.len() + r.remaining.len();
    let batch = if r.batch.is_empty() { String::new() } else { format!(", replacing {}", r.batch.join(" ")) };
    let revert = match r.revert_to {
        Some(v) => format!(" (reverts to v{v} on failure)"),
        None => " (no revert)".into(),
    };
    format!("{} v{} -> v{}: {}/{total} replaced{batch}{revert}", r.service, r.from_version, r.version, r.replaced.len())
}

fn by_state(stack: &StackView) -> BTreeMap<ServiceState, Vec<&str>> {
    let mut by_state: BTreeMap<ServiceState, Vec<&str>> = BTreeMap::new();
    for s in &stack.services {
        by_state.entry(s.state).or_default().push(&s.name);
    }
    by_state
}

fn progress_line(stack: &StackView) -> String {
    let by_state = by_state(stack);
    let count = |s: ServiceState| by_state.get(&s).map_or(0, Vec::len);
    let done = count(ServiceState::Ready) + count(ServiceState::Completed);
    let mut line = format!("[{done}/{} ready]", stack.services.len());
    for state in [ServiceState::Starting, ServiceState::Started, ServiceState::Restarting] {
        if let Some(list) = by_state.get(&state) {
            let shown = list.iter().take(5).copied().collect::<Vec<_>>().join(" ");
            let more = if list.len() > 5 { format!(" +{}", list.len() - 5) } else { String::new() };
            line.push_str(&format!(" {}: {shown}{more};", state.as_str()));
        }
    }
    for state in [ServiceState::Pending, ServiceState::Blocked, ServiceState::Failed] {
        if count(state) > 0 {
            line.push_str(&format!(" {}: {};", state.as_str(), count(state)));
        }
    }
    line
}

/// `orchestrator down`: stops every managed service in reverse dependency order.
pub async fn down(args: &ApiArgs) -> anyhow::Result<()> {
    let stopped = client(args)?.down().await.context("taking the stack down")?;
    println!("stopped {} running services", stopped.stopped);
    Ok(())
}

/// `orchestrator status`: one line per managed service.
pub async fn status(args: &ApiArgs) -> anyhow::Result<()> {
    let stack = client(args)?.stack().await?;
    println!("manifest version {} (wanted {})", stack.version, stack.desired.as_str());
    println!("{:<24} {:<8} {:<11} {:>8} {:>8}  reason", "service", "node", "state", "pid", "restarts");
    for s in &stack.services {
        println!(
            "{:<24} {:<8} {:<11} {:>8} {:>8}  {}",
            s.name,
            s.node.as_deref().unwrap_or("-"),
            s.state.as_str(),
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.restarts,
            s.reason.as_deref().unwrap_or("")
        );
    }
    for r in &stack.rollouts {
        match &r.reason {
            Some(why) => println!("rolling update failed: {}: {why}", rollout_line(r)),
            None => println!("rolling update: {}", rollout_line(r)),
        }
    }
    Ok(())
}

/// `orchestrator cluster`: the group of replicas and its leader.
pub async fn cluster(args: &ApiArgs) -> anyhow::Result<()> {
    let view = client(args)?.cluster().await?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    if view["mode"] == "single" {
        println!("one orchestrator alone (no replicas: run `serve --replica NAME` for a group)");
        return Ok(());
    }
    match view["leader"].as_object() {
        Some(leader) => println!(
            "leader {} (term {}) since {}; answered by {}",
            text(&leader["replica"]),
            leader["term"],
            text(&leader["since"]),
            text(&view["answered_by"])
        ),
        None => println!("no leader: a failover is under way; answered by {}", text(&view["answered_by"])),
    }
    println!("{:<20} {:<8} {:<32} {:<10} last seen", "replica", "role", "http", "version");
    for r in view["replicas"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<8} {:<32} {:<10} {}",
            text(&r["name"]),
            text(&r["role"]),
            text(&r["http_url"]),
            text(&r["version"]),
            text(&r["seen_at"])
        );
    }
    Ok(())
}

/// `orchestrator profile`: the last start-up run, like `systemd-analyze critical-chain`.
pub async fn profile(args: &ApiArgs) -> anyhow::Result<()> {
    print_profile(&client(args)?.profile().await?);
    Ok(())
}

fn print_profile(p: &RunProfile) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "start-up {}{}: wall {:.1}ms, critical path {:.1}ms, parallel efficiency {:.1}%",
        p.run_id,
        p.outcome.as_ref().map(|o| format!(" ({o})")).unwrap_or_else(|| " (in progress)".into()),
        ms(p.profile.wall),
        ms(p.profile.critical_path),
        p.profile.efficiency * 100.0
    );
    println!("critical chain (@ready since the start, +time from launch to ready):");
    for (depth, link) in p.profile.chain.iter().rev().enumerate() {
        println!(
            "{:indent$}{} @{:.1}ms +{:.1}ms",
            "",
            link.service,
            ms(link.ready),
            ms(link.took),
            indent = depth.min(20)
        );
    }
    if !p.profile.bottlenecks.is_empty() {
        println!("bottlenecks:");
        for b in &p.profile.bottlenecks {
            println!("  {:<24} {:>9.1}ms  {}", b.service, ms(b.took), b.why);
        }
    }
}

/// `orchestrator history …`: the stored manifest versions, one's text, a diff, a rollback.
pub async fn history(command: HistoryCommand) -> anyhow::Result<bool> {
    match command {
        HistoryCommand::List { limit, before, api } => {
            let page = client(&api)?.versions(Some(limit), before).await?;
            println!("{:>8}  {:<25} {:<24} source", "version", "applied at", "by");
            for v in &page.versions {
                println!(
                    "{:>8}  {:<25} {:<24} {}{}",
                    v.version,
                    v.applied_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    v.principal.as_deref().unwrap_or("-"),
                    v.source,
                    if v.current { "  (current)" } else { "" }
                );
            }
            if let Some(before) = page.next_before {
                println!("older versions: --before {before}");
            }
        }
        HistoryCommand::Show { version, api } => print!("{}", client(&api)?.version(version).await?.manifest),
        HistoryCommand::Diff { from, to, api } => print!("{}", diff_text(&client(&api)?.diff(from, to).await?)),
        HistoryCommand::Rollback { version, detach, api } => {
            let api = client(&api)?;
            let applied = api.rollback(version).await.with_context(|| format!("rolling back to version {version}"))?;
            println!("rolled back to version {version}");
            return follow_applied(&api, &applied, detach).await;
        }
    }
    Ok(true)
}

/// A diff as text: `+ service`, `- service`, `~ service` with `  field: old -> new` lines.
fn diff_text(diff: &ManifestDiff) -> String {
    let value = |v: &Option<serde_json::Value>| v.as_ref().map_or("(unset)".to_string(), |v| v.to_string());
    let mut out = format!("version {} -> {}\n", diff.from, diff.to);
    if diff.is_empty() {
        out.push_str("no difference\n");
    }
    for f in &diff.stack {
        out.push_str(&format!("~ {}: {} -> {}\n", f.field, value(&f.from), value(&f.to)));
    }
    for s in &diff.services {
        let mark = match s.change {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        };
        out.push_str(&format!("{mark} {}\n", s.service));
        for f in &s.fields {
            out.push_str(&format!("    {}: {} -> {}\n", f.field, value(&f.from), value(&f.to)));
        }
    }
    out
}

/// `orchestrator self-preservation end`: ends self-preservation, saying why.
pub async fn end_self_preservation(reason: Option<String>, api: &ApiArgs) -> anyhow::Result<()> {
    let ended = client(api)?.end_self_preservation(reason.as_deref()).await?;
    println!("{}", ended["message"].as_str().unwrap_or("self-preservation ended"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use orch_protocol::history::{FieldChange, ServiceChange};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_diff_reads_service_by_service() {
        let diff = ManifestDiff {
            from: 1,
            to: 2,
            stack: vec![FieldChange { field: "max_parallel".into(), from: Some(json!(4)), to: Some(json!(8)) }],
            services: vec![
                ServiceChange { service: "cache".into(), change: Change::Added, fields: vec![] },
                ServiceChange {
                    service: "web".into(),
                    change: Change::Changed,
                    fields: vec![FieldChange { field: "env.LOG".into(), from: None, to: Some(json!("debug")) }],
                },
            ],
        };
        assert_eq!(
            diff_text(&diff),
            "version 1 -> 2\n~ max_parallel: 4 -> 8\n+ cache\n~ web\n    env.LOG: (unset) -> \"debug\"\n"
        );
    }
}
