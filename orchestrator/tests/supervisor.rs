//! The node agent's supervisor with the real shim (`orch-shim`): output captured, exits reported,
//! stop signal then grace then SIGKILL for the whole group, and services that outlive their
//! supervisor: a new one on the same directories adopts what runs (same pid, the log going on)
//! and reports what ended in between with the status the shim kept.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orch_testkit::{TempDir, eventually, process_alive as alive};
use orchestrator::agent::logs::{Rotation, tail};
use orchestrator::agent::{Exit, Exited, ProcessSpec, Supervisor, SupervisorError};
use tokio::sync::mpsc;

fn sh(service: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        service: service.into(),
        fingerprint: format!("fp-{service}"),
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        workdir: None,
        stop_signal: libc::SIGTERM,
        grace_period: Duration::from_secs(5),
        limits: Default::default(),
        notify: false,
        logs: Default::default(),
    }
}

/// A supervisor on `dir`'s logs and run directory, and what it reports.
fn supervisor(dir: &TempDir) -> (Supervisor, mpsc::UnboundedReceiver<Exited>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shim = env!("CARGO_BIN_EXE_orch-shim").into();
    (Supervisor::new(dir.path().to_path_buf(), dir.path().join("shims"), Rotation::default(), tx, shim), rx)
}

/// Kills whatever a test left running under its shims.
struct Cleanup<'a>(&'a TempDir);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        orchestrator::agent::supervisor::kill_all(&self.0.path().join("shims"));
    }
}

async fn next(events: &mut mpsc::UnboundedReceiver<Exited>) -> Exited {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an end reported").unwrap()
}

#[tokio::test]
async fn captures_output_and_reports_the_exit() {
    let dir = TempDir::new("supervisor");
    let _cleanup = Cleanup(&dir);
    let (sup, mut events) = supervisor(&dir);
    sup.start(&sh("greeter", "echo \"$GREETING\"; echo oops >&2; exit 3")).await.unwrap();
    let exited = next(&mut events).await;
    assert_eq!((exited.service.as_str(), exited.exit, exited.stopped), ("greeter", Exit::Code { code: 3 }, false));
    // The shim has written every line before it recorded the end.
    let lines = tail(dir.path(), "greeter", 10).unwrap();
    assert!(lines.iter().any(|l| l.ends_with("stdout hello")), "{lines:?}");
    assert!(lines.iter().any(|l| l.ends_with("stderr oops")), "{lines:?}");
    sup.reported(&exited);
    assert!(sup.start(&sh("greeter", "exit 0")).await.is_ok(), "can start again once it ended");
}

#[tokio::test]
async fn stop_signal_then_grace_then_sigkill_for_the_whole_group() {
    let dir = TempDir::new("supervisor");
    let _cleanup = Cleanup(&dir);
    let (sup, mut events) = supervisor(&dir);
    // Ends by itself on SIGTERM, once it says it is ready for it.
    sup.start(&sh("polite", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done")).await.unwrap();
    eventually(Duration::from_secs(10), "the trap set", || async {
        (!tail(dir.path(), "polite", 1).unwrap().is_empty()).then_some(())
    })
    .await;
    let exit = sup.stop("polite", libc::SIGTERM, Duration::from_secs(10)).await.unwrap();
    assert_eq!(exit, Exit::Code { code: 0 });
    assert!(next(&mut events).await.stopped, "a requested stop is not a crash");

    // Ignores SIGTERM and leaves a background child: both are killed after the grace period.
    sup.start(&sh("stubborn", "trap '' TERM; sleep 1000 & echo $! ; while true; do sleep 0.05; done")).await.unwrap();
    let log = eventually(Duration::from_secs(10), "the background pid", || async {
        tail(dir.path(), "stubborn", 5).unwrap().first().cloned()
    })
    .await;
    let sleeper: u32 = log.rsplit(' ').next().unwrap().parse().unwrap();
    let pid = sup.pid("stubborn").unwrap();
    let started = Instant::now();
    let exit = sup.stop("stubborn", libc::SIGTERM, Duration::from_millis(300)).await.unwrap();
    assert_eq!(exit, Exit::Signal { signal: libc::SIGKILL });
    assert!(started.elapsed() >= Duration::from_millis(300), "the grace period was given");
    eventually(Duration::from_secs(10), "the group gone", || async { (!alive(pid) && !alive(sleeper)).then_some(()) })
        .await;
    assert!(matches!(sup.stop("stubborn", libc::SIGTERM, Duration::ZERO).await, Err(SupervisorError::NotRunning(_))));
}

#[tokio::test]
async fn bad_command_and_double_start_are_errors() {
    let dir = TempDir::new("supervisor");
    let _cleanup = Cleanup(&dir);
    let (sup, _events) = supervisor(&dir);
    let mut missing = sh("ghost", "");
    missing.command = "/nonexistent/program".into();
    let err = sup.start(&missing).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/program"), "{err}");
    sup.start(&sh("once", "sleep 5")).await.unwrap();
    assert!(matches!(sup.start(&sh("once", "sleep 5")).await, Err(SupervisorError::AlreadyRunning(_))));
}

/// The agent goes away (its supervisor dropped, as when the orchestrator is killed or upgraded):
/// its services keep running and writing their logs; one ends meanwhile. The next supervisor
/// adopts the one still running (same pid), reports the other's end with its real exit code,
/// and can stop what it adopted. `stop_all` (`orchestrator agent --cleanup`) leaves nothing.
#[tokio::test]
async fn a_new_supervisor_adopts_what_runs_and_reports_what_ended_while_away() {
    let dir = TempDir::new("supervisor");
    let _cleanup = Cleanup(&dir);
    let gate = dir.path().join("end-now");
    let (first, _first_events) = supervisor(&dir);
    let counter = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done";
    let pid = first.start(&sh("counter", counter)).await.unwrap();
    let ending = format!("while [ ! -e {} ]; do sleep 0.05; done; exit 7", gate.display());
    let ending_pid = first.start(&sh("ending", &ending)).await.unwrap();
    drop(first);

    // No supervisor now: the service goes on and its log grows; the other one ends.
    let lines = |n| tail(dir.path(), "counter", n).unwrap();
    let before = lines(1);
    eventually(Duration::from_secs(10), "the log going on", || async { (lines(1) != before).then_some(()) }).await;
    std::fs::write(&gate, "").unwrap();
    eventually(Duration::from_secs(10), "the other service ended", || async { (!alive(ending_pid)).then_some(()) })
        .await;
    // Its shim records the end, then exits: only then is it over for an agent that comes back (a
    // shim still alive is adopted, and reports the end itself).
    let record = dir.path().join("shims").join("ending.state");
    eventually(Duration::from_secs(10), "the other service's shim gone", || async {
        let state =
            std::fs::read_to_string(&record).ok().and_then(|t| orchestrator::agent::shim::ShimState::decode(&t));
        state.is_some_and(|s| !s.shim_alive()).then_some(())
    })
    .await;

    let (second, mut events) = supervisor(&dir);
    assert_eq!(second.adopt(), vec![("counter".to_string(), pid)]);
    assert!(alive(pid), "nothing was restarted");
    let ended = next(&mut events).await;
    assert_eq!(
        (ended.service.as_str(), ended.pid, ended.exit, ended.stopped),
        ("ending", ending_pid, Exit::Code { code: 7 }, false)
    );
    second.reported(&ended);
    assert_eq!(second.running(), vec![("counter".to_string(), pid)]);
    // What the adopted process was started from is known (adoption compares it); the record of
    // the ended one went with its report.
    assert_eq!(second.fingerprint("counter").as_deref(), Some("fp-counter"));
    assert_eq!(second.fingerprint("ending"), None);

    // A third supervisor does not report that end again; the adopted one stops as any other.
    drop(second);
    let (third, mut events) = supervisor(&dir);
    assert_eq!(third.adopt(), vec![("counter".to_string(), pid)]);
    assert_eq!(third.stop_all().await, vec!["counter".to_string()]);
    let stopped = next(&mut events).await;
    assert_eq!(
        (stopped.service.as_str(), stopped.exit, stopped.stopped),
        ("counter", Exit::Signal { signal: 15 }, true)
    );
    assert!(events.try_recv().is_err(), "the end of `ending` was reported once");
    assert!(!alive(pid));
}
