//! What the agents report: process ends (of the current process only), and the periodic
//! comparison of what should run with what each node's agent runs.

use std::time::Duration;

use orch_protocol::agent::RunningProcess;
use orch_protocol::lifecycle::ServiceState::*;

use super::*;
use crate::agent::client::AgentError;

const TWO_NODES: &str = r#"
[services.a]
command = "a"
port = 7001
[services.b]
command = "b"
[services.remote]
command = "remote"
node = "edge"
"#;

/// The `AskStatus` effects among `effects`, by node.
fn asked(effects: &[Effect]) -> BTreeMap<&str, &[Asked]> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::AskStatus { node, asked } => Some((node.as_str(), asked.as_slice())),
            _ => None,
        })
        .collect()
}

#[test]
fn ticks_renew_leases_and_now_and_then_ask_the_agents_what_runs() {
    let mut h = Harness::ready(TWO_NODES);
    let e = h.send(Input::Tick);
    assert!(matches!(&e[..], [Effect::Heartbeat { instance }] if instance == "managed-a"), "only a is registered");
    h.advance(RECONCILE);
    let e = h.send(Input::Tick);
    let by_node = asked(&e);
    let local: Vec<&str> = by_node[NODE].iter().map(|a| a.service.as_str()).collect();
    assert_eq!(local, ["a", "b"]);
    assert_eq!(
        by_node["edge"],
        [Asked { service: "remote".into(), generation: h.generation("remote"), pid: h.pid("remote") }]
    );
    h.advance(Duration::from_secs(1));
    assert!(asked(&h.send(Input::Tick)).is_empty(), "not again before the interval");
}

#[test]
fn a_process_its_agent_no_longer_runs_has_ended_without_a_report() {
    let mut h = Harness::ready(TWO_NODES);
    h.advance(RECONCILE);
    let e = h.send(Input::Tick);
    let local = asked(&e)[NODE].to_vec();
    let status = agent::Status {
        node: NODE.into(),
        running: vec![RunningProcess { service: "a".into(), pid: h.pid("a"), ready: false, fingerprint: None }],
    };
    let e = h.send(Input::Status { node: NODE.into(), result: Ok(status), asked: local });
    assert_eq!(states_of(&e, "b"), [Crashed, Restarting]);
    assert_eq!(reason(&e, "b", Crashed), "the process is gone (its agent no longer runs it)");
    assert!(states_of(&e, "a").is_empty(), "a runs as it should");
}

#[test]
fn a_status_about_an_earlier_process_or_from_an_unreachable_agent_changes_nothing() {
    let mut h = Harness::ready(TWO_NODES);
    h.advance(RECONCILE);
    let e = h.send(Input::Tick);
    let local = asked(&e)[NODE].to_vec();
    // b was restarted since it was asked about.
    h.exited("b", 1);
    h.advance(Duration::from_secs(1));
    let e = h.restart_due("b");
    h.settle(e);
    let nothing = agent::Status { node: NODE.into(), running: Vec::new() };
    let e = h.send(Input::Status { node: NODE.into(), result: Ok(nothing), asked: local.clone() });
    assert!(states_of(&e, "b").is_empty(), "the new process of b was not asked about");
    assert_eq!(states_of(&e, "a"), [Crashed, Restarting], "a was, and is gone");
    let e = h.send(Input::Status { node: NODE.into(), result: Err(AgentError::Timeout(NODE.into())), asked: local });
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn an_end_report_counts_only_for_the_current_process_on_its_node() {
    let mut h = Harness::ready(TWO_NODES);
    let exit = Exit::Code { code: 1 };
    let report = |node: &str, pid: u32| agent::Exited {
        node: node.into(),
        service: "b".into(),
        pid,
        exit,
        ran_for_ms: 1,
        stopped: false,
        oom_killed: false,
    };
    assert!(h.send(Input::Exited(report("edge", h.pid("b")))).is_empty(), "another node's process");
    assert!(h.send(Input::Exited(report(NODE, h.pid("b") + 100))).is_empty(), "another process");
    let e = h.send(Input::Exited(report(NODE, h.pid("b"))));
    assert_eq!(states_of(&e, "b"), [Crashed, Restarting]);
    assert_eq!(h.service("b").pid, None);
}

#[test]
fn a_process_being_stopped_is_finished_by_its_stop_reply_not_its_end_report() {
    let mut h = Harness::ready(TWO_NODES);
    let request = h.request();
    h.send(Input::Restart { request, service: "b".into() });
    let e = h.exited("b", 143);
    assert!(e.is_empty(), "{e:?}");
    let e = h.stopped("b");
    assert_eq!(states_of(&e, "b"), [Stopped, Starting]);
}
