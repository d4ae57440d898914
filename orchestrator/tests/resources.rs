//! Services with resources and replicas, against real servers and processes: `count` runs each
//! replica as a process and registry instance of its own, under the service's name, each on its
//! own port; a dependency on the service waits for every replica; a restart of the service
//! restarts each replica.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::Stack;
use common::http::call;
use common::lifecycle::*;
use orch_testkit::eventually;
use serde_json::json;

/// `n` consecutive free TCP ports on loopback.
fn free_ports(n: u16) -> u16 {
    loop {
        let base = orch_testkit::free_port();
        if base.checked_add(n).is_some() && (1..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

#[tokio::test]
async fn replicas_run_as_processes_and_instances_of_their_own() {
    let stack = Stack::start().await;
    let _leftovers = common::KillServicesOf(stack.agent_logs.path().to_path_buf());
    let base = free_ports(3);
    let manifest = format!(
        "{}{}",
        sleeper("api", base, "50ms", "count = 3\nresources = { cpu = 100, memory = 64 }\npriority = 70"),
        sleeper("web", orch_testkit::free_port(), "0ms", "depends_on = { api = \"healthy\" }"),
    );
    let applied = apply(&stack, &manifest).await;
    assert_eq!(applied["services"], 4, "three replicas and web: {applied}");
    let view = wait_for(&stack, &[("api-0", "ready"), ("api-1", "ready"), ("api-2", "ready"), ("web", "ready")]).await;
    let pids: Vec<u32> = (0..3).map(|i| pid(&view, &format!("api-{i}"))).collect();
    assert!(pids[0] != pids[1] && pids[1] != pids[2], "{pids:?}");
    let api1 = service(&view, "api-1");
    assert_eq!(api1["replica_of"], "api", "{api1}");
    assert_eq!(api1["resources"], json!({"cpu": 100, "memory": 64}));
    assert_eq!(api1["priority"], 70);
    assert!(service(&view, "web").get("replica_of").is_none());

    // Web waited for every replica.
    let events = transitions(&stack).await;
    for i in 0..3 {
        assert!(at(&events, &format!("api-{i}"), "ready") < at(&events, "web", "starting"), "{:?}", summary(&events));
    }

    // Each replica is an instance of `api` on its own port, discovered under the service's name.
    let instances = eventually(Duration::from_secs(20), "three instances of api", || async {
        let (status, body) = call(&stack, "GET", "/api/v1/services?name=api", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        (items.len() == 3).then_some(items)
    })
    .await;
    let mut ports: Vec<u64> = instances.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    ports.sort();
    assert_eq!(ports, [base as u64, base as u64 + 1, base as u64 + 2]);
    let mut ids: Vec<&str> = instances.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["managed-api-0", "managed-api-1", "managed-api-2"]);

    // Restarting the service restarts each replica.
    let (status, body) = call(&stack, "POST", "/api/v1/stack/services/api/restart", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually(Duration::from_secs(30), "every replica runs a new process", || async {
        let view = stack_view(&stack).await;
        let ready = (0..3).all(|i| service(&view, &format!("api-{i}"))["state"] == "ready");
        let renewed = (0..3).all(|i| pid(&view, &format!("api-{i}")) != pids[i]);
        (ready && renewed).then_some(())
    })
    .await;
}
