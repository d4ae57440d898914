//! The process supervisor of a node agent: starts each service's process in a process group of
//! its own, captures its stdout and stderr into a rotating log, reports how it ended, and stops it
//! with its stop signal, a grace period, then SIGKILL for the whole group.
//!
//! Children never outlive the agent: each is started with `PR_SET_PDEATHSIG = SIGKILL`, so the
//! kernel kills it when the agent dies, even by SIGKILL, and whatever a run leaves behind in its
//! process group is killed when the run ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::logs::{RotatingLog, Rotation};
use crate::process::signal_group;

/// What to run for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub service: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    /// How the agent stops it when the agent itself stops.
    pub stop_signal: i32,
    pub grace_period: Duration,
}

pub use orch_protocol::agent::Exit;

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code { code },
        (None, Some(signal)) => Exit::Signal { signal },
        (None, None) => Exit::Code { code: -1 },
    }
}

/// Reported when a supervised process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub service: String,
    pub pid: u32,
    pub exit: Exit,
    pub ran_for: Duration,
    /// The end was asked for (`stop`), not a crash.
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0:?} is already running")]
    AlreadyRunning(String),
    #[error("{0:?} is not running")]
    NotRunning(String),
    #[error("could not start {service:?} ({command}): {error}")]
    Spawn { service: String, command: String, error: std::io::Error },
    #[error("could not open the log of {service:?}: {error}")]
    Log { service: String, error: std::io::Error },
}

struct Handle {
    pid: u32,
    stop_signal: i32,
    grace_period: Duration,
    exited: watch::Receiver<Option<Exit>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Supervisor {
    log_dir: PathBuf,
    rotation: Rotation,
    /// Shared with each process's waiting task, which removes its entry when the process ends.
    children: Arc<Mutex<HashMap<String, Handle>>>,
    events: mpsc::UnboundedSender<Exited>,
    /// The `orchestrator` binary, to run each service under `orchestrator shim` (see
    /// [`super::shim`]); without it the service is run directly and only its first process is
    /// sure to die with the agent.
    shim: Option<PathBuf>,
}

/// True when `program` names an executable file: a path, or a name found on `PATH`.
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

impl Supervisor {
    /// A supervisor writing logs under `log_dir`; every end of a process is sent to `events`.
    pub fn new(
        log_dir: PathBuf,
        rotation: Rotation,
        events: mpsc::UnboundedSender<Exited>,
        shim: Option<PathBuf>,
    ) -> Supervisor {
        Supervisor { log_dir, rotation, children: Arc::default(), events, shim }
    }

    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// The pid of the service's process, if it runs.
    pub fn pid(&self, service: &str) -> Option<u32> {
        self.children.lock().expect("supervisor lock").get(service).map(|h| h.pid)
    }

    /// Services running now, with their pids.
    pub fn running(&self) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> =
            self.children.lock().expect("supervisor lock").iter().map(|(s, h)| (s.clone(), h.pid)).collect();
        all.sort();
        all
    }

    /// Starts the process of `spec`; returns its pid.
    pub fn start(&self, spec: &ProcessSpec) -> Result<u32, SupervisorError> {
        let mut children = self.children.lock().expect("supervisor lock");
        if children.contains_key(&spec.service) {
            return Err(SupervisorError::AlreadyRunning(spec.service.clone()));
        }
        // Checked here because under the shim a missing program would only show as an exit code.
        if !runnable(&spec.command) {
            return Err(SupervisorError::Spawn {
                service: spec.service.clone(),
                command: spec.command.clone(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such executable program"),
            });
        }
        let log = RotatingLog::open(&self.log_dir, &spec.service, self.rotation)
            .map_err(|error| SupervisorError::Log { service: spec.service.clone(), error })?;
        let log = Arc::new(Mutex::new(log));
        let agent = std::process::id();
        let mut command = match &self.shim {
            Some(shim) => {
                let mut c = Command::new(shim);
                c.args(["shim", "--parent", &agent.to_string(), "--", &spec.command]).args(&spec.args);
                c
            }
            None => {
                let mut c = Command::new(&spec.command);
                c.args(&spec.args);
                c
            }
        };
        command.envs(&spec.env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        if let Some(dir) = &spec.workdir {
            command.current_dir(dir);
        }
        // Under the shim, the shim arranges its own parent-death signal; without a `pre_exec` the
        // standard library can start it with posix_spawn (vfork) instead of a full fork of the
        // agent. Without a shim, the service itself gets the parent-death signal.
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        if self.shim.is_none() {
            unsafe {
                command.pre_exec(move || {
                    // Killed by the kernel when the agent dies, whatever kills it.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    // The agent may have died before the line above: then do not start at all.
                    if libc::getppid() as u32 != agent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|error| SupervisorError::Spawn {
            service: spec.service.clone(),
            command: spec.command.clone(),
            error,
        })?;
        let pid = child.id().unwrap_or(0);
        for (stream, pipe) in [
            ("stdout", child.stdout.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)),
            ("stderr", child.stderr.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)),
        ] {
            let Some(pipe) = pipe else { continue };
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                while let Ok(Some(line)) = super::logs::next_line(&mut reader, &mut buf).await {
                    if let Err(e) = log.lock().expect("log lock").line(stream, &line) {
                        tracing::warn!(error = %e, "writing a service log failed");
                    }
                }
            });
        }
        let (exited_tx, exited) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        children.insert(
            spec.service.clone(),
            Handle {
                pid,
                stop_signal: spec.stop_signal,
                grace_period: spec.grace_period,
                exited,
                stopping: stopping.clone(),
            },
        );
        drop(children);
        let started = Instant::now();
        let service = spec.service.clone();
        let events = self.events.clone();
        let children = self.children.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => exit_of(status),
                Err(e) => {
                    tracing::error!(service = %service, error = %e, "waiting for a process failed");
                    Exit::Code { code: -1 }
                }
            };
            // Whatever the run left behind in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            {
                let mut children = children.lock().expect("supervisor lock");
                if children.get(&service).is_some_and(|h| h.pid == pid) {
                    children.remove(&service);
                }
            }
            let _ = exited_tx.send(Some(exit));
            let stopped = stopping.load(std::sync::atomic::Ordering::Relaxed);
            let _ = events.send(Exited { service, pid, exit, ran_for: started.elapsed(), stopped });
        });
        tracing::info!(service = %spec.service, pid, command = %spec.command, "process started");
        Ok(pid)
    }

    /// Stops a service: `signal` to its process group, up to `grace` to end, then SIGKILL.
    /// Returns how it ended.
    pub async fn stop(&self, service: &str, signal: i32, grace: Duration) -> Result<Exit, SupervisorError> {
        let (pid, mut exited) = {
            let children = self.children.lock().expect("supervisor lock");
            let handle = children.get(service).ok_or_else(|| SupervisorError::NotRunning(service.to_string()))?;
            handle.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
            (handle.pid, handle.exited.clone())
        };
        signal_group(pid, signal);
        let ended = tokio::time::timeout(grace, exited.wait_for(Option::is_some)).await.is_ok();
        if !ended {
            tracing::warn!(service, pid, grace = ?grace, "did not stop within its grace period; killing");
            signal_group(pid, libc::SIGKILL);
        }
        let exit =
            exited.wait_for(Option::is_some).await.map(|e| e.expect("checked")).unwrap_or(Exit::Code { code: -1 });
        Ok(exit)
    }

    /// Stops every process with its own stop signal and grace period, all at once (the agent
    /// stops).
    pub async fn stop_all(&self) {
        let all: Vec<(String, i32, Duration)> = self
            .children
            .lock()
            .expect("supervisor lock")
            .iter()
            .map(|(s, h)| (s.clone(), h.stop_signal, h.grace_period))
            .collect();
        futures::future::join_all(all.iter().map(|(service, signal, grace)| self.stop(service, *signal, *grace))).await;
    }

    /// Kills every process at once (the agent is going away).
    pub fn kill_all(&self) {
        for (_, handle) in self.children.lock().expect("supervisor lock").drain() {
            signal_group(handle.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(service: &str, script: &str) -> ProcessSpec {
        ProcessSpec {
            service: service.into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            workdir: None,
            stop_signal: libc::SIGTERM,
            grace_period: Duration::from_secs(5),
        }
    }

    fn supervisor() -> (Supervisor, mpsc::UnboundedReceiver<Exited>, orch_testkit::TempDir) {
        let dir = orch_testkit::TempDir::new("supervisor");
        let (tx, rx) = mpsc::unbounded_channel();
        (Supervisor::new(dir.path().to_path_buf(), Rotation::default(), tx, None), rx, dir)
    }

    use orch_testkit::process_alive as alive;

    #[tokio::test]
    async fn captures_output_and_reports_the_exit() {
        let (sup, mut events, dir) = supervisor();
        sup.start(&sh("greeter", "echo \"$GREETING\"; echo oops >&2; exit 3")).unwrap();
        let exited = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        assert_eq!((exited.service.as_str(), exited.exit, exited.stopped), ("greeter", Exit::Code { code: 3 }, false));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = super::super::logs::tail(dir.path(), "greeter", 10).unwrap();
        assert!(lines.iter().any(|l| l.ends_with("stdout hello")), "{lines:?}");
        assert!(lines.iter().any(|l| l.ends_with("stderr oops")), "{lines:?}");
        assert!(sup.start(&sh("greeter", "exit 0")).is_ok(), "can start again once it ended");
    }

    #[tokio::test]
    async fn stop_signal_then_grace_then_sigkill_for_the_whole_group() {
        let (sup, mut events, _dir) = supervisor();
        // Ends by itself on SIGTERM.
        sup.start(&sh("polite", "trap 'exit 0' TERM; while true; do sleep 0.05; done")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = sup.stop("polite", libc::SIGTERM, Duration::from_secs(10)).await.unwrap();
        assert_eq!(exit, Exit::Code { code: 0 });
        let e = events.recv().await.unwrap();
        assert!(e.stopped, "a requested stop is not a crash");

        // Ignores SIGTERM and leaves a background child: both are killed after the grace period.
        sup.start(&sh("stubborn", "trap '' TERM; sleep 1000 & echo $! ; while true; do sleep 0.05; done")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = sup.pid("stubborn").unwrap();
        let started = Instant::now();
        let exit = sup.stop("stubborn", libc::SIGTERM, Duration::from_millis(300)).await.unwrap();
        assert_eq!(exit, Exit::Signal { signal: libc::SIGKILL });
        assert!(started.elapsed() >= Duration::from_millis(300), "the grace period was given");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!alive(pid));
        let log = super::super::logs::tail(sup.log_dir(), "stubborn", 5).unwrap();
        let sleeper: u32 = log[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(!alive(sleeper), "the background child went with its group");
        assert!(matches!(
            sup.stop("stubborn", libc::SIGTERM, Duration::ZERO).await,
            Err(SupervisorError::NotRunning(_))
        ));
    }

    #[tokio::test]
    async fn bad_command_and_double_start_are_errors() {
        let (sup, _events, _dir) = supervisor();
        let mut missing = sh("ghost", "");
        missing.command = "/nonexistent/program".into();
        let err = sup.start(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/program"), "{err}");
        sup.start(&sh("once", "sleep 5")).unwrap();
        assert!(matches!(sup.start(&sh("once", "sleep 5")), Err(SupervisorError::AlreadyRunning(_))));
        sup.kill_all();
    }
}
