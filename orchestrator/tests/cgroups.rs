//! Limits enforced by the kernel: each process runs in a cgroup of its own
//! (`<hierarchy>/orch/<node>/<service>-<run>`), joined before its first instruction, with the CPU
//! quota and memory ceiling it asked for; an OOM kill is reported as one, also when it happened
//! while no agent ran; the cgroup goes when the process ends; and a node without usable cgroups
//! refuses limits unless allowed to run without them. Real processes (`orch-sleeper`), this
//! machine's real cgroups, the real shim; nothing is mocked.
//!
//! They need root and writable cpu and memory controllers (v1 or v2). Where detection finds none,
//! each test says what it found and checks the refusal instead, which is then what holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_protocol::resources::{Enforcement, Limits};
use orch_testkit::{NatsServer, TempDir, eventually, process_alive as alive};
use orchestrator::agent::cgroup::{Cgroup, PERIOD_US};
use orchestrator::agent::enforcement::Cgroups;
use orchestrator::agent::logs::{Rotation, tail};
use orchestrator::agent::shim::{ShimState, state_path};
use orchestrator::agent::{DEFAULT_CGROUP_ROOT, Exit, Exited, ProcessSpec, Supervisor, SupervisorError};
use tokio::sync::mpsc;

const SLEEPER: &str = env!("CARGO_BIN_EXE_orch-sleeper");

fn spec(service: &str, command: &str, args: &[&str], limits: Limits) -> ProcessSpec {
    ProcessSpec {
        service: service.into(),
        fingerprint: String::new(),
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::new(),
        workdir: None,
        stop_signal: libc::SIGTERM,
        grace_period: Duration::from_secs(5),
        limits,
        notify: false,
        logs: Default::default(),
    }
}

fn sleeper(service: &str, args: &[&str], limits: Limits) -> ProcessSpec {
    spec(service, SLEEPER, args, limits)
}

/// A node name of this test alone: tests run at once, each in its own process.
fn node(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// This machine's cgroups, as an agent of `node` finds them (said on the test's output).
fn detect(node: &str) -> Cgroups {
    let cgroups = Cgroups::detect(Path::new(DEFAULT_CGROUP_ROOT), node, false);
    eprintln!("{node}: {}", cgroups.summary());
    cgroups
}

fn enforced(cgroups: &Cgroups) -> bool {
    matches!(cgroups.enforcement, Enforcement::CgroupV1 | Enforcement::CgroupV2)
}

/// A supervisor on `dir` placing its services by `cgroups`, and what it reports.
fn supervisor(dir: &TempDir, cgroups: Cgroups) -> (Supervisor, mpsc::UnboundedReceiver<Exited>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shim = env!("CARGO_BIN_EXE_orch-shim").into();
    let sup = Supervisor::new(dir.path().to_path_buf(), dir.path().join("shims"), Rotation::default(), tx, shim);
    (sup.with_cgroups(cgroups), rx)
}

/// Kills what a test left running and removes the cgroups of its node.
struct Cleanup<'a> {
    dir: &'a TempDir,
    nodes: Vec<PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        orchestrator::agent::supervisor::kill_all(&self.dir.path().join("shims"));
        for node in &self.nodes {
            let services = std::fs::read_dir(node).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            let _ = Cgroup::at(services.map(Iterator::collect).unwrap_or_default()).remove();
            let _ = std::fs::remove_dir(node);
            // `orch` itself, unless another node still has cgroups there.
            let _ = node.parent().map(std::fs::remove_dir);
        }
    }
}

async fn next(events: &mut mpsc::UnboundedReceiver<Exited>) -> Exited {
    tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("an end reported").unwrap()
}

/// Where the machine has no usable cgroups: the start is refused, naming what is missing.
#[track_caller]
fn assert_refused(result: Result<u32, SupervisorError>) {
    match result {
        Err(e @ SupervisorError::Limits { .. }) => {
            let message = e.to_string();
            assert!(message.contains("cannot enforce limits") && message.contains("--allow-unlimited"), "{message}");
        }
        other => panic!("a start with limits on a node without cgroups: {other:?}"),
    }
}

/// The service's cgroup as its shim recorded it.
fn recorded_cgroups(dir: &TempDir, service: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(state_path(&dir.path().join("shims"), service)).expect("the shim's record");
    ShimState::decode(&text).expect("a readable record").cgroups
}

/// The directory among `dirs` that has `file`.
fn with_file(dirs: &[PathBuf], file: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(file)).find(|p| p.exists())
}

/// `name value` lines (cpu.stat) as numbers.
fn counters(path: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?))))
        .collect()
}

#[tokio::test]
async fn a_process_over_its_memory_limit_is_oom_killed_and_reported() {
    let dir = TempDir::new("cgroups");
    let node = node("oom");
    let cgroups = detect(&node);
    let _cleanup = Cleanup { dir: &dir, nodes: cgroups.node_dirs().to_vec() };
    let on = enforced(&cgroups);
    let nodes = cgroups.node_dirs().to_vec();
    let (sup, mut events) = supervisor(&dir, cgroups);
    let limits = Limits { cpu: None, memory: Some(32) };
    let hog = sleeper("hog", &["--allocate", "200"], limits);
    if !on {
        return assert_refused(sup.start(&hog).await);
    }
    let pid = sup.start(&hog).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!(
        (exited.service.as_str(), exited.pid, exited.exit, exited.oom_killed),
        ("hog", pid, Exit::Signal { signal: libc::SIGKILL }, true),
        "{exited:?}"
    );
    let lines = tail(dir.path(), "hog", 10).unwrap();
    assert!(!lines.iter().any(|l| l.contains("allocated")), "it never got its 200 MiB: {lines:?}");
    assert_eq!(runs(&nodes), Vec::<PathBuf>::new(), "the cgroup goes with the process");
}

/// The cgroups of runs under the node's cgroups `nodes`.
fn runs(nodes: &[PathBuf]) -> Vec<PathBuf> {
    nodes
        .iter()
        .flat_map(|n| std::fs::read_dir(n).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()))
        .collect()
}

#[tokio::test]
async fn a_cpu_hog_limited_to_100_millicores_is_throttled() {
    let dir = TempDir::new("cgroups");
    let node = node("cpu");
    let cgroups = detect(&node);
    let _cleanup = Cleanup { dir: &dir, nodes: cgroups.node_dirs().to_vec() };
    let version = cgroups.enforcement;
    let (sup, mut events) = supervisor(&dir, cgroups);
    let hog = sleeper("spinner", &["--burn"], Limits { cpu: Some(100), memory: None });
    if !matches!(version, Enforcement::CgroupV1 | Enforcement::CgroupV2) {
        return assert_refused(sup.start(&hog).await);
    }
    sup.start(&hog).await.unwrap();
    let dirs = recorded_cgroups(&dir, "spinner");
    let v2 = version == Enforcement::CgroupV2;
    // The quota as written: 10 ms of each 100 ms period.
    if v2 {
        let max = std::fs::read_to_string(dirs[0].join("cpu.max")).unwrap();
        assert_eq!(max.trim(), format!("10000 {PERIOD_US}"));
    } else {
        let quota = std::fs::read_to_string(with_file(&dirs, "cpu.cfs_quota_us").unwrap()).unwrap();
        assert_eq!(quota.trim(), "10000");
    }
    let stat = with_file(&dirs, "cpu.stat").expect("cpu.stat");
    let throttled_time = if v2 { "throttled_usec" } else { "throttled_time" };
    // At least 20 periods (2 s) of a process that would take a whole core: throttled in them.
    let seen = eventually(Duration::from_secs(60), "20 periods of the hog, throttled", || async {
        let c = counters(&stat);
        (c.get("nr_periods").copied().unwrap_or(0) >= 20).then_some(c)
    })
    .await;
    eprintln!("cpu.stat: {seen:?}");
    assert!(seen["nr_throttled"] > 0 && seen[throttled_time] > 0, "throttled: {seen:?}");
    // Its use over the periods it ran, in ns, from the cgroup's own usage counter.
    let usage_ns = if v2 {
        counters(&stat)["usage_usec"] * 1000
    } else {
        match with_file(&dirs, "cpuacct.usage") {
            Some(usage) => std::fs::read_to_string(usage).unwrap().trim().parse::<u64>().unwrap(),
            None => {
                eprintln!("no cpuacct hierarchy here: the usage is not counted per cgroup");
                0
            }
        }
    };
    let periods = counters(&stat)["nr_periods"];
    let one_core_ns = periods * PERIOD_US * 1000;
    eprintln!("usage {usage_ns} ns over {periods} periods (one core: {one_core_ns} ns)");
    // 10% of a core is allowed; a fifth of the slack of a whole core is plenty for the kernel's
    // rounding, and far from the core it would take unthrottled.
    assert!(usage_ns < one_core_ns / 5, "usage {usage_ns} ns over {periods} periods is not throttled to 100m");

    sup.stop("spinner", libc::SIGTERM, Duration::from_secs(5)).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!((exited.exit, exited.stopped, exited.oom_killed), (Exit::Signal { signal: 15 }, true, false));
    assert!(dirs.iter().all(|d| !d.exists()), "the cgroup goes with the process: {dirs:?}");
}

#[tokio::test]
async fn a_process_without_limits_runs_in_its_own_cgroup_that_goes_when_it_ends() {
    let dir = TempDir::new("cgroups");
    let node = node("plain");
    let cgroups = detect(&node);
    let _cleanup = Cleanup { dir: &dir, nodes: cgroups.node_dirs().to_vec() };
    let version = cgroups.enforcement;
    let (sup, mut events) = supervisor(&dir, cgroups);
    // The shell's first command says where the shell runs: its cgroup from the start.
    let script = format!("cat /proc/self/cgroup; exec {SLEEPER} --allocate 64");
    let service = spec("free", "/bin/sh", &["-c", &script], Limits::default());
    let pid = sup.start(&service).await.unwrap();
    let lines = eventually(Duration::from_secs(30), "64 MiB allocated", || async {
        let lines = tail(dir.path(), "free", 50).unwrap();
        lines.iter().any(|l| l.ends_with("stdout allocated 64 MiB")).then_some(lines)
    })
    .await;
    let dirs = if matches!(version, Enforcement::CgroupV1 | Enforcement::CgroupV2) {
        let dirs = recorded_cgroups(&dir, "free");
        let ours = format!("/orch/{node}/free-");
        let placed: Vec<&String> = lines.iter().filter(|l| l.contains(&ours)).collect();
        assert!(!placed.is_empty(), "the shell ran in {ours} from its first command: {lines:?}");
        // No limit written: the kernel's defaults, unlimited.
        if version == Enforcement::CgroupV2 {
            assert_eq!(std::fs::read_to_string(dirs[0].join("memory.max")).unwrap().trim(), "max");
            assert!(std::fs::read_to_string(dirs[0].join("cpu.max")).unwrap().starts_with("max"));
        } else {
            let quota = std::fs::read_to_string(with_file(&dirs, "cpu.cfs_quota_us").unwrap()).unwrap();
            assert_eq!(quota.trim(), "-1");
            let memory = std::fs::read_to_string(with_file(&dirs, "memory.limit_in_bytes").unwrap()).unwrap();
            assert!(memory.trim().parse::<u64>().unwrap() > 1 << 50, "unlimited: {memory}");
        }
        let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == pid.to_string()), "{pid} in {procs}");
        dirs
    } else {
        eprintln!("no usable cgroups: a service without limits runs as a plain process");
        vec![]
    };
    sup.stop("free", libc::SIGTERM, Duration::from_secs(5)).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!((exited.exit, exited.oom_killed), (Exit::Signal { signal: 15 }, false));
    assert!(!alive(pid));
    assert!(dirs.iter().all(|d| !d.exists()), "the cgroup goes with the process: {dirs:?}");
}

/// An empty directory as the cgroup root: nothing usable. Limits are refused (the reply of the
/// agent over NATS names the field `limits` and what the machine lacks), a start without limits
/// runs as before, and with `--allow-unlimited` a start with limits runs without them.
#[tokio::test]
async fn without_usable_cgroups_limits_are_refused_unless_allowed() {
    let dir = TempDir::new("cgroups");
    let _cleanup = Cleanup { dir: &dir, nodes: vec![] };
    let empty = TempDir::new("cgroup-root");
    let limits = Limits { cpu: Some(500), memory: Some(64) };

    let cgroups = Cgroups::detect(empty.path(), "bare", false);
    assert_eq!(cgroups.enforcement, Enforcement::None, "{}", cgroups.summary());
    assert!(cgroups.summary().contains("no cgroup file system at"), "{}", cgroups.summary());
    let (sup, mut events) = supervisor(&dir, cgroups);
    assert_refused(sup.start(&sleeper("limited", &[], limits)).await);
    sup.start(&sleeper("plain", &["--exit-after", "0ms", "--exit-code", "4"], Limits::default())).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!((exited.service.as_str(), exited.exit), ("plain", Exit::Code { code: 4 }));
    sup.reported(&exited);

    let (sup, mut events) = supervisor(&dir, Cgroups::detect(empty.path(), "bare", true));
    assert_eq!(sup.enforcement(), Enforcement::Unlimited);
    sup.start(&sleeper("limited", &["--allocate", "100", "--exit-after", "0ms"], limits)).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!((exited.service.as_str(), exited.exit, exited.oom_killed), ("limited", Exit::Code { code: 0 }, false));

    // The same through a standalone agent: the refusal as a reply, and its flag.
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let request = serde_json::json!({"service": "limited", "command": SLEEPER, "limits": {"cpu": 500, "memory": 64}});
    let ask = |client: async_nats::Client, request: serde_json::Value| async move {
        let subject = orch_protocol::Subjects::default().agent("bare", "start");
        let reply = client.request(subject, request.to_string().into()).await.ok()?;
        let code = reply.headers.as_ref().and_then(|h| h.get(orch_protocol::headers::SERVICE_ERROR_CODE));
        let code = code.map(|v| v.as_str().to_string());
        Some((code, serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()))
    };
    for allow in [false, true] {
        let logs = TempDir::new("cgroups-agent");
        let _leftovers = Cleanup { dir: &logs, nodes: vec![] };
        let log = std::fs::File::create(dir.path().join(format!("agent-{allow}.log"))).unwrap();
        let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        agent.args(["agent", "--node", "bare", "--nats-url", &nats.url(), "--log", "info", "--log-format", "json"]);
        agent.arg("--log-dir").arg(logs.path()).arg("--cgroup-root").arg(empty.path()).stderr(log);
        if allow {
            agent.env("ORCH_ALLOW_UNLIMITED", "true");
        }
        let mut agent = KillOnDrop(agent.spawn().unwrap());
        let (code, reply) =
            eventually(Duration::from_secs(30), "the agent answers", || ask(client.clone(), request.clone())).await;
        let said = std::fs::read_to_string(dir.path().join(format!("agent-{allow}.log"))).unwrap();
        if allow {
            assert_eq!(code, None, "{reply}");
            assert!(said.contains("services that ask for limits run without them (--allow-unlimited)"), "{said}");
        } else {
            assert_eq!(code.as_deref(), Some("409"), "{reply}");
            assert_eq!(
                (&reply["error"]["code"], &reply["error"]["field"]),
                (&serde_json::json!("refused"), &serde_json::json!("limits"))
            );
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.contains("no cgroup file system at"), "{message}");
            assert!(said.contains("cgroups: none usable (no writable cpu or memory controller"), "{said}");
            assert!(said.contains("are refused (--allow-unlimited runs them without)"), "{said}");
        }
        agent.0.kill().unwrap();
        agent.0.wait().unwrap();
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The supervisor goes away (the agent killed or upgraded) while a limited service waits; the
/// service then takes more memory than its limit and is OOM-killed while no supervisor runs.
/// The next supervisor reports that end as an OOM kill, from what the shim recorded.
#[tokio::test]
async fn an_oom_kill_while_no_agent_runs_is_reported_by_the_next() {
    let dir = TempDir::new("cgroups");
    let node = node("adopt");
    let cgroups = detect(&node);
    let _cleanup = Cleanup { dir: &dir, nodes: cgroups.node_dirs().to_vec() };
    let on = enforced(&cgroups);
    let nodes = cgroups.node_dirs().to_vec();
    let (first, _first_events) = supervisor(&dir, cgroups.clone());
    let gate = dir.path().join("allocate-now");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; exec {SLEEPER} --allocate 200", gate.display());
    let service = spec("late-hog", "/bin/sh", &["-c", &script], Limits { cpu: None, memory: Some(32) });
    if !on {
        return assert_refused(first.start(&service).await);
    }
    let pid = first.start(&service).await.unwrap();
    assert_eq!(runs(&nodes), recorded_cgroups(&dir, "late-hog"), "recorded for the next agent");
    drop(first);

    std::fs::write(&gate, "").unwrap();
    eventually(Duration::from_secs(30), "the service killed", || async { (!alive(pid)).then_some(()) }).await;

    let (second, mut events) = supervisor(&dir, cgroups);
    // The shim may still be finishing its record: adopted, then its end is reported.
    let adopted = second.adopt();
    assert!(adopted.is_empty() || adopted == vec![("late-hog".to_string(), pid)], "{adopted:?}");
    let exited = next(&mut events).await;
    assert_eq!(
        (exited.service.as_str(), exited.pid, exited.exit, exited.oom_killed),
        ("late-hog", pid, Exit::Signal { signal: libc::SIGKILL }, true),
        "{exited:?}"
    );
    second.reported(&exited);
    assert_eq!(runs(&nodes), Vec::<PathBuf>::new(), "the cgroup went");
}
