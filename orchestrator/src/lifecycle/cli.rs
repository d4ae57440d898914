//! The stack commands of the command line (`up`, `down`, `status`, `profile`): clients of the
//! HTTP API of a running orchestrator. `up` follows the start-up live: one redrawn status line on
//! a terminal, one line per transition otherwise.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Graph, Manifest};
use crate::config::{ApiArgs, UpArgs};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        crate::tls::install_crypto_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &args.api_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("--api-token must be visible ASCII")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build()?;
        Ok(Api { base: format!("{}/api/v1", args.api_url.trim_end_matches('/')), http })
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response =
            request.send().await.with_context(|| format!("{what}: is the orchestrator running at {}?", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("{what}: {status}: {message}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), &format!("GET {path}")).await
    }
}

/// `orchestrator up -f FILE`: applies the manifest and follows the start-up. Exit code 0 when
/// every service is ready (or completed), 1 when the run ended degraded or aborted.
pub async fn up(args: &UpArgs) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if let Err(e) = Manifest::parse(&text).and_then(|m| Graph::new(&m)) {
        bail!("{}: {e}", args.file.display());
    }
    let api = Api::new(&args.api)?;
    let source = format!("cli:{}", args.file.display());
    let query = serde_urlencoded::to_string([("source", source)])?;
    let request = api.http.put(format!("{}/stack?{query}", api.base)).body(text);
    let applied = api.send(request, "applying the manifest").await?;
    let run_id = applied["run_id"].as_str().unwrap_or_default().to_string();
    println!(
        "manifest version {} applied: {} services{}",
        applied["version"],
        applied["services"],
        match applied["replaced"].as_array() {
            Some(r) if !r.is_empty() => format!(", replacing {}", names(r)),
            _ => String::new(),
        }
    );
    if args.detach {
        return Ok(true);
    }
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let stack = api.get("/stack").await?;
        let mut by_state: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in stack["services"].as_array().into_iter().flatten() {
            let (name, state) = (s["name"].as_str().unwrap_or("?"), s["state"].as_str().unwrap_or("?"));
            by_state.entry(state.to_string()).or_default().push(name.to_string());
            if !terminal && seen.get(name).map(String::as_str) != Some(state) {
                let reason = s["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                println!("{:>8.2}s  {name:<24} {state}{reason}", started.elapsed().as_secs_f64());
            }
            seen.insert(name.to_string(), state.to_string());
        }
        if terminal {
            print!("\r\x1b[2K{}", progress_line(&by_state, seen.len()));
            let _ = std::io::stdout().flush();
        }
        let profile = api.get("/stack/profile").await.ok();
        if let Some(p) = profile.filter(|p| p["run_id"] == run_id.as_str() && p["finished"] == true) {
            if terminal {
                println!();
            }
            for (state, list) in &by_state {
                if matches!(state.as_str(), "failed" | "blocked" | "crashed") {
                    println!("{state}: {}", list.join(", "));
                }
            }
            print_profile(&p);
            return Ok(p["outcome"] == "ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(list: &[Value]) -> String {
    list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
}

fn progress_line(by_state: &BTreeMap<String, Vec<String>>, total: usize) -> String {
    let count = |s: &str| by_state.get(s).map_or(0, Vec::len);
    let done = count("ready") + count("completed");
    let mut line = format!("[{done}/{total} ready]");
    for state in ["starting", "started", "restarting"] {
        if let Some(list) = by_state.get(state) {
            let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
            let more = if list.len() > 5 { format!(" +{}", list.len() - 5) } else { String::new() };
            line.push_str(&format!(" {state}: {}{more};", shown.join(" ")));
        }
    }
    for state in ["pending", "blocked", "failed"] {
        if count(state) > 0 {
            line.push_str(&format!(" {state}: {};", count(state)));
        }
    }
    line
}

/// `orchestrator down`: stops every managed service in reverse dependency order.
pub async fn down(args: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let reply = api.send(api.http.delete(format!("{}/stack", api.base)), "taking the stack down").await?;
    println!("stopped {} running services", reply["stopped"]);
    Ok(())
}

/// `orchestrator status`: one line per managed service.
pub async fn status(args: &ApiArgs) -> anyhow::Result<()> {
    let stack = Api::new(args)?.get("/stack").await?;
    println!("manifest version {} (wanted {})", stack["version"], stack["desired"].as_str().unwrap_or("?"));
    println!("{:<24} {:<8} {:<11} {:>8} {:>8}  reason", "service", "node", "state", "pid", "restarts");
    for s in stack["services"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<8} {:<11} {:>8} {:>8}  {}",
            s["name"].as_str().unwrap_or("?"),
            s["node"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["pid"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s["restarts"].as_u64().unwrap_or(0),
            s["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `orchestrator profile`: the last start-up run, like `systemd-analyze critical-chain`.
pub async fn profile(args: &ApiArgs) -> anyhow::Result<()> {
    let profile = Api::new(args)?.get("/stack/profile").await?;
    print_profile(&profile);
    Ok(())
}

fn print_profile(p: &Value) {
    let ms = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "start-up {}{}: wall {:.1}ms, critical path {:.1}ms, parallel efficiency {:.1}%",
        p["run_id"].as_str().unwrap_or("?"),
        p["outcome"].as_str().map(|o| format!(" ({o})")).unwrap_or_else(|| " (in progress)".into()),
        ms(&p["wall_ms"]),
        ms(&p["critical_path_ms"]),
        ms(&p["efficiency"]) * 100.0
    );
    println!("critical chain (@ready since the start, +time from launch to ready):");
    for (depth, link) in p["chain"].as_array().into_iter().flatten().rev().enumerate() {
        println!(
            "{:indent$}{} @{:.1}ms +{:.1}ms",
            "",
            link["service"].as_str().unwrap_or("?"),
            ms(&link["ready_ms"]),
            ms(&link["took_ms"]),
            indent = depth.min(20)
        );
    }
    let bottlenecks = p["bottlenecks"].as_array().cloned().unwrap_or_default();
    if !bottlenecks.is_empty() {
        println!("bottlenecks:");
        for b in bottlenecks {
            println!(
                "  {:<24} {:>9.1}ms  {}",
                b["service"].as_str().unwrap_or("?"),
                ms(&b["took_ms"]),
                b["why"].as_str().unwrap_or("")
            );
        }
    }
}
