//! `orchestrator nodes [NAME]` and `orchestrator quota …`: the node inventory and the quotas
//! through the HTTP API.

use orch_client::stack::StackClient;
use orch_protocol::resources::{NodeInfo, Resources};

use crate::config::{ApiArgs, NodesArgs, QuotaCommand};

fn client(api: &ApiArgs) -> anyhow::Result<StackClient> {
    Ok(StackClient::new(&api.api_url, api.api_token.as_deref())?)
}

pub async fn quota(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::List { api } => {
            let list = client(&api)?.quotas().await?;
            if list.quotas.is_empty() {
                println!("no quota is set (`orchestrator quota set GROUP --cpu N --memory N`)");
            }
            println!("{:<20} {:>17} {:>17}  set by", "group", "quota", "used");
            for q in list.quotas {
                println!("{:<20} {:>17} {:>17}  {} at {}", q.name, short(q.quota), short(q.used), q.set_by, q.set_at);
            }
        }
        QuotaCommand::Set { group, cpu, memory, api } => {
            let q = client(&api)?.set_quota(&group, cpu, memory).await?;
            println!("quota of {} set to {}", q.name, q.quota);
        }
        QuotaCommand::Clear { group, api } => {
            client(&api)?.clear_quota(&group).await?;
            println!("quota of {group} removed");
        }
    }
    Ok(())
}

pub async fn run(args: &NodesArgs) -> anyhow::Result<()> {
    let client = client(&args.api)?;
    match &args.name {
        None => {
            let list = client.nodes().await?;
            if list.nodes.is_empty() {
                println!("no node has reported yet (agents report every --node-heartbeat)");
                return Ok(());
            }
            println!(
                "{:<20} {:<6} {:>17} {:>17} {:>17} {:>9} labels",
                "node", "status", "allocatable", "allocated", "free", "services"
            );
            for n in &list.nodes {
                println!(
                    "{:<20} {:<6} {:>17} {:>17} {:>17} {:>9} {}",
                    n.name,
                    n.status.as_str(),
                    short(n.allocatable),
                    short(n.allocated),
                    short(n.free),
                    n.allocations.len(),
                    labels(n)
                );
            }
        }
        Some(name) => {
            let n = client.node(name).await?;
            println!("node {} is {} since {} (last report {})", n.name, n.status.as_str(), n.since, n.last_seen);
            println!("  capacity     {}", n.capacity);
            println!("  reserved     {}", n.reserved);
            println!("  allocatable  {}", n.allocatable);
            println!("  allocated    {}", n.allocated);
            println!("  free         {}", n.free);
            println!("  used         cpu {:.0}%, memory {:.0}%", n.cpu_used * 100.0, n.memory_used * 100.0);
            println!("  limits       {:?}", n.enforcement);
            println!("  labels       {}", labels(&n));
            println!("  agent        {} since {}", n.agent_version, n.agent_started);
            for a in &n.allocations {
                println!("  runs         {} (pid {}): {}", a.service, a.pid, a.resources);
            }
        }
    }
    Ok(())
}

/// `1900m/3840Mi`: millicores and MiB.
fn short(r: Resources) -> String {
    format!("{}m/{}Mi", r.cpu, r.memory)
}

fn labels(n: &NodeInfo) -> String {
    if n.labels.is_empty() {
        return "-".into();
    }
    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
