//! The process supervisor of a node agent: starts each service's process under its shim (see
//! [`super::shim`]), which runs it in a process group of its own (and, where the node has
//! cgroups, a cgroup of its own with its limits) and keeps its log, reports how it ended (and
//! whether the kernel OOM-killed it), and stops it with its stop signal, a grace period, then
//! SIGKILL for the whole group.
//!
//! A service that asks for it gets `NOTIFY_SOCKET`, the agent's socket of the systemd `sd_notify`
//! protocol (see `super::notify`): the supervisor tells which service a process that writes there
//! belongs to ([`Supervisor::service_of`]) and remembers which ones said `READY=1`, in its run
//! directory too (`<service>.ready`), so that an agent that adopts a ready service knows it is.
//!
//! Services outlive the agent: a shim does not die with it. A new agent on the same run
//! directory adopts what runs there ([`Supervisor::adopt`]): same pid, its log going on, and an
//! end that happened while no agent ran reported with the status the shim kept. Nothing is left
//! without an owner: [`Supervisor::stop_all`] (`orchestrator agent --cleanup`) stops them all.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use orch_protocol::resources::{Enforcement, Limits};

use super::cgroup::Cgroup;
use super::enforcement::{Cgroups, Placement, run_name};
use super::logs::Rotation;
use super::shim::{ShimArgs, ShimExit, ShimState, exit_path, start_time, state_path, write_atomically};
use crate::process::signal_group;

/// What to run for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub service: String,
    /// What it is started from ([`orch_protocol::agent::StartRequest::fingerprint`]), kept beside
    /// it (`<service>.spec`) and reported by `status`; empty: none kept.
    pub fingerprint: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    /// How `orchestrator agent --cleanup` stops it.
    pub stop_signal: i32,
    pub grace_period: Duration,
    /// What the kernel holds it to (its cgroup); see [`Supervisor::with_cgroups`].
    pub limits: Limits,
    /// It gets `NOTIFY_SOCKET`: it says itself when it is ready (see [`Supervisor::with_notify_socket`]).
    pub notify: bool,
    /// How much of its output is kept, where it differs from the agent's settings.
    pub logs: orch_protocol::agent::LogRetention,
}

pub use orch_protocol::agent::Exit;

/// Reported when a supervised process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub service: String,
    pub pid: u32,
    pub exit: Exit,
    pub ran_for: Duration,
    /// The end was asked for (`stop`), not a crash.
    pub stopped: bool,
    /// The kernel OOM-killed it (or a process of its cgroup) for exceeding its memory limit.
    pub oom_killed: bool,
    /// The shim whose records name this end (pid, start time): they are removed once it is
    /// reported.
    shim: (u32, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0:?} is already running")]
    AlreadyRunning(String),
    #[error("{0:?} is not running")]
    NotRunning(String),
    #[error("could not start {service:?} ({command}): {error}")]
    Spawn { service: String, command: String, error: std::io::Error },
    #[error("{service:?} asks for limits: {reason}")]
    Limits { service: String, reason: String },
    #[error("{0:?} asks for readiness by notification, but this agent has no notify socket (see its log)")]
    Notify(String),
}

struct Handle {
    pid: u32,
    /// Its shim, which leads the service's session.
    shim: u32,
    /// What its cgroup enforces (nothing without cgroups).
    limits: orch_protocol::resources::Limits,
    stop_signal: i32,
    grace_period: Duration,
    exited: watch::Receiver<Option<Exit>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// Where the agent finds a service's shim when it ends.
enum Shim {
    /// Started by this agent: its child, waited for (and reaped) here.
    Child(tokio::process::Child),
    /// Started by an agent before this one: watched through a pidfd.
    Adopted(u32),
}

pub struct Supervisor {
    log_dir: PathBuf,
    /// The shims' records (`<service>.state`, `<service>.exit`).
    run_dir: PathBuf,
    rotation: Rotation,
    /// Shared with each process's waiting task, which removes its entry when the process ends.
    children: Arc<Mutex<HashMap<String, Handle>>>,
    /// Services being started (their shims not yet answered), with their shim's pid once it
    /// runs: a second start of one is refused, starts of different services go on at once.
    starting: Arc<Mutex<HashMap<String, Option<u32>>>>,
    /// The pid of each service whose process said `READY=1` (see `super::notify`).
    ready: Arc<Mutex<HashMap<String, u32>>>,
    /// What each service's process was started from (its `<service>.spec`, read once at
    /// adoption): `status` reports it for every process, so it is not read from disk each time.
    fingerprints: Arc<Mutex<HashMap<String, String>>>,
    /// `NOTIFY_SOCKET` for the services that ask for it; `None` when the agent has no socket.
    notify_socket: Option<String>,
    events: mpsc::UnboundedSender<Exited>,
    /// The program each service runs under (`orch-shim`, or `orchestrator shim`).
    shim: PathBuf,
    /// Where services get their cgroups, if anywhere.
    cgroups: Cgroups,
}

/// True when `program` names an executable file: a path, or a name found on `PATH`.
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// How a service ended.
struct End {
    exit: Exit,
    ran_for: Duration,
    oom_killed: bool,
}

/// How the service of a shim that has ended ended: as the shim recorded it, or, when the shim
/// itself was killed before it could, as killed (and what is left of the service goes too,
/// with its cgroup, once its OOM counter is read). The cgroup is this run's alone: a later run
/// of the service has another.
fn recorded_end(run_dir: &Path, service: &str, state: &ShimState) -> End {
    let recorded = std::fs::read_to_string(exit_path(run_dir, service)).ok().and_then(|t| ShimExit::decode(&t));
    let cgroup = Cgroup::at(state.cgroups.clone());
    let end = match recorded {
        Some(recorded) => End {
            exit: exit_of(recorded),
            ran_for: Duration::from_millis(recorded.ran_for_ms),
            oom_killed: recorded.oom_killed,
        },
        None => {
            if state.service_alive() {
                signal_group(state.pid, libc::SIGKILL);
            }
            cgroup.kill();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            End {
                exit: Exit::Signal { signal: libc::SIGKILL },
                ran_for: now.saturating_sub(Duration::from_millis(state.started_ms)),
                oom_killed: cgroup.oom_killed(Some(libc::SIGKILL)),
            }
        }
    };
    // Gone already when the shim ended as it should.
    if let Err(e) = cgroup.remove() {
        tracing::warn!(service, error = %e, "could not remove the cgroup of a service that ended");
    }
    end
}

/// Where the agent records that a service's process said `READY=1`: `pid=<pid>`.
fn spec_path(run_dir: &Path, service: &str) -> PathBuf {
    run_dir.join(format!("{service}.spec"))
}

/// The fingerprint recorded for `service`, if any (none: started by an agent from before them).
fn recorded_fingerprint(run_dir: &Path, service: &str) -> Option<String> {
    let text = std::fs::read_to_string(spec_path(run_dir, service)).ok()?;
    let fingerprint = text.trim().strip_prefix("fingerprint=")?;
    (!fingerprint.is_empty()).then(|| fingerprint.to_string())
}

fn ready_path(run_dir: &Path, service: &str) -> PathBuf {
    run_dir.join(format!("{service}.ready"))
}

/// The pid a service's readiness record names, if there is one.
fn recorded_ready(run_dir: &Path, service: &str) -> Option<u32> {
    std::fs::read_to_string(ready_path(run_dir, service)).ok()?.trim().strip_prefix("pid=")?.parse().ok()
}

fn exit_of(recorded: ShimExit) -> Exit {
    match (recorded.code, recorded.signal) {
        (Some(code), _) => Exit::Code { code },
        (None, Some(signal)) => Exit::Signal { signal },
        (None, None) => Exit::Code { code: -1 },
    }
}

/// A start under way, forgotten when it ends however it ends.
struct Starting {
    set: Arc<Mutex<HashMap<String, Option<u32>>>>,
    service: String,
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.set.lock().expect("supervisor lock").remove(&self.service);
    }
}

/// How long a shim gets to say that its service runs.
const HANDSHAKE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// A supervisor writing logs under `log_dir` and its shims' records under `run_dir`; every
    /// end of a process is sent to `events`.
    pub fn new(
        log_dir: PathBuf,
        run_dir: PathBuf,
        rotation: Rotation,
        events: mpsc::UnboundedSender<Exited>,
        shim: PathBuf,
    ) -> Supervisor {
        // Absolute: the shim runs in the service's working directory.
        let (log_dir, run_dir) =
            (std::path::absolute(&log_dir).unwrap_or(log_dir), std::path::absolute(&run_dir).unwrap_or(run_dir));
        Supervisor {
            log_dir,
            run_dir,
            rotation,
            children: Arc::default(),
            fingerprints: Arc::default(),
            starting: Arc::default(),
            ready: Arc::default(),
            notify_socket: None,
            events,
            shim,
            cgroups: Cgroups::unavailable(),
        }
    }

    /// Gives `NOTIFY_SOCKET=address` to the services that ask for it (`ProcessSpec::notify`);
    /// without, such starts are refused.
    pub fn with_notify_socket(mut self, address: String) -> Supervisor {
        self.notify_socket = Some(address);
        self
    }

    /// Runs each service in a cgroup of its own with its limits, as `cgroups` (found at the
    /// agent's start) allows; without, services that ask for limits are refused.
    pub fn with_cgroups(mut self, cgroups: Cgroups) -> Supervisor {
        self.cgroups = cgroups;
        self
    }

    /// How this supervisor enforces limits.
    pub fn enforcement(&self) -> Enforcement {
        self.cgroups.enforcement
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The pid of the service's process, if it runs.
    pub fn pid(&self, service: &str) -> Option<u32> {
        self.children.lock().expect("supervisor lock").get(service).map(|h| h.pid)
    }

    /// The service a process of group `group` in session `session` belongs to, and the service's
    /// pid: the service whose process leads that group (the service itself, or a process it
    /// started that stayed in its group), else the one whose shim leads that session (a process
    /// that made a group of its own). A service whose shim has not answered yet is known by its
    /// session only; its pid is then taken to be `group`.
    pub fn service_of(&self, group: u32, session: u32) -> Option<(String, u32)> {
        let children = self.children.lock().expect("supervisor lock");
        if let Some((service, h)) = children.iter().find(|(_, h)| h.pid == group) {
            return Some((service.clone(), h.pid));
        }
        if let Some((service, h)) = children.iter().find(|(_, h)| h.shim == session) {
            return Some((service.clone(), h.pid));
        }
        let starting = self.starting.lock().expect("supervisor lock");
        starting.iter().find(|(_, shim)| **shim == Some(session)).map(|(service, _)| (service.clone(), group))
    }

    /// Remembers that the process `pid` of `service` said `READY=1`, here and in the run
    /// directory (for the next agent); false when it was known already.
    pub fn mark_ready(&self, service: &str, pid: u32) -> bool {
        let known = self.ready.lock().expect("supervisor lock").insert(service.to_string(), pid) == Some(pid);
        if !known && let Err(e) = write_atomically(&ready_path(&self.run_dir, service), &format!("pid={pid}\n")) {
            tracing::warn!(service, error = %e, "could not record that the service is ready; an agent after this one will not know");
        }
        !known
    }

    /// The process `pid` of `service` said `READY=1`.
    /// The fingerprint of what the running `service` was started from, when it was kept.
    pub fn fingerprint(&self, service: &str) -> Option<String> {
        self.fingerprints.lock().expect("supervisor lock").get(service).cloned()
    }

    pub fn is_ready(&self, service: &str, pid: u32) -> bool {
        self.ready.lock().expect("supervisor lock").get(service) == Some(&pid)
    }

    /// Services running now, with their pids.
    pub fn running(&self) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> =
            self.children.lock().expect("supervisor lock").iter().map(|(s, h)| (s.clone(), h.pid)).collect();
        all.sort();
        all
    }

    /// Services running now with their pids and what each asked for.
    /// (The limits each process's cgroup enforces; nothing for a process without cgroups.)
    pub fn allocations(&self) -> Vec<(String, u32, orch_protocol::resources::Resources)> {
        let children = self.children.lock().expect("supervisor lock");
        let mut all: Vec<_> = children
            .iter()
            .map(|(s, h)| {
                let asked =
                    orch_protocol::resources::Resources::new(h.limits.cpu.unwrap_or(0), h.limits.memory.unwrap_or(0));
                (s.clone(), h.pid, asked)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Takes over what the run directory names: each service still running is watched again
    /// (same pid), and each end recorded while no agent ran is reported with its real status.
    /// Returns the services adopted.
    pub fn adopt(&self) -> Vec<(String, u32)> {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else { return Vec::new() };
        let mut adopted = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(service) = name.strip_suffix(".state") else { continue };
            let Some(state) = std::fs::read_to_string(entry.path()).ok().and_then(|t| ShimState::decode(&t)) else {
                tracing::warn!(file = %entry.path().display(), "a shim record that cannot be read; left alone");
                continue;
            };
            if state.shim_alive() {
                tracing::info!(service, pid = state.pid, shim = state.shim, "adopted a running service");
                adopted.push((service.to_string(), state.pid));
                if let Some(fingerprint) = recorded_fingerprint(&self.run_dir, service) {
                    self.fingerprints.lock().expect("supervisor lock").insert(service.to_string(), fingerprint);
                }
                if recorded_ready(&self.run_dir, service) == Some(state.pid) {
                    self.ready.lock().expect("supervisor lock").insert(service.to_string(), state.pid);
                }
                let grace = Duration::from_millis(state.grace_ms);
                self.watch(service.to_string(), &state, Shim::Adopted(state.shim), Some((state.stop_signal, grace)));
            } else {
                // Ended while no agent ran: reported now (before any request is taken) with what
                // the shim recorded.
                let end = recorded_end(&self.run_dir, service, &state);
                let shim = (state.shim, state.shim_start);
                let _ = self.events.send(Exited {
                    service: service.to_string(),
                    pid: state.pid,
                    exit: end.exit,
                    ran_for: end.ran_for,
                    stopped: false,
                    oom_killed: end.oom_killed,
                    shim,
                });
            }
        }
        adopted.sort();
        adopted
    }

    /// Starts the process of `spec` under its shim; returns its pid once it runs.
    pub async fn start(&self, spec: &ProcessSpec) -> Result<u32, SupervisorError> {
        let _starting = {
            let children = self.children.lock().expect("supervisor lock");
            let mut starting = self.starting.lock().expect("supervisor lock");
            if children.contains_key(&spec.service) || starting.contains_key(&spec.service) {
                return Err(SupervisorError::AlreadyRunning(spec.service.clone()));
            }
            starting.insert(spec.service.clone(), None);
            Starting { set: self.starting.clone(), service: spec.service.clone() }
        };
        let spawn_error = |error: std::io::Error| SupervisorError::Spawn {
            service: spec.service.clone(),
            command: spec.command.clone(),
            error,
        };
        let cgroup = match self.cgroups.place(&run_name(&spec.service), &spec.limits) {
            Ok(Placement::Cgroup(cgroup)) => Some(cgroup),
            Ok(Placement::Plain) => None,
            Ok(Placement::Unenforced) => {
                tracing::warn!(
                    service = %spec.service,
                    limits = ?spec.limits,
                    "this node has no usable cgroups: the service runs without the limits it asks for (--allow-unlimited)"
                );
                None
            }
            Err(reason) => return Err(SupervisorError::Limits { service: spec.service.clone(), reason }),
        };
        // Checked here because under the shim a missing program would only show as its answer.
        if !runnable(&spec.command) {
            return Err(spawn_error(std::io::Error::new(std::io::ErrorKind::NotFound, "no such executable program")));
        }
        let notify_socket = match (&self.notify_socket, spec.notify) {
            (Some(address), true) => Some(address),
            (None, true) => return Err(SupervisorError::Notify(spec.service.clone())),
            (_, false) => None,
        };
        // A readiness of an earlier run is not this one's.
        self.ready.lock().expect("supervisor lock").remove(&spec.service);
        let _ = std::fs::remove_file(ready_path(&self.run_dir, &spec.service));
        // Records of an earlier run that was reported are gone; a stale one must not be read as
        // this run's end.
        let _ = std::fs::remove_file(exit_path(&self.run_dir, &spec.service));
        // Before the process exists, so a process found running always has the record of what
        // it was started from (an agent that cannot write it starts nothing).
        std::fs::create_dir_all(&self.run_dir)
            .and_then(|()| {
                write_atomically(
                    &spec_path(&self.run_dir, &spec.service),
                    &format!("fingerprint={}\n", spec.fingerprint),
                )
            })
            .map_err(spawn_error)?;
        {
            let mut fingerprints = self.fingerprints.lock().expect("supervisor lock");
            if spec.fingerprint.is_empty() {
                fingerprints.remove(&spec.service);
            } else {
                fingerprints.insert(spec.service.clone(), spec.fingerprint.clone());
            }
        }
        let args = ShimArgs {
            run_dir: self.run_dir.clone(),
            log_dir: self.log_dir.clone(),
            service: spec.service.clone(),
            rotation: self.rotation.with(&spec.logs),
            stop_signal: spec.stop_signal,
            grace: spec.grace_period,
            cgroup,
            program: spec.command.clone(),
            args: spec.args.clone(),
        };
        let mut command = Command::new(&self.shim);
        // The agent's own NOTIFY_SOCKET (when systemd runs it) is not for its services: a service
        // has the agent's socket when it asks for it, or what its manifest sets.
        command.env_remove("NOTIFY_SOCKET");
        if let Some(address) = notify_socket {
            command.env("NOTIFY_SOCKET", address);
        }
        command
            .arg("shim")
            .args(args.to_args())
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(dir) = &spec.workdir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        // From now on what its processes send to the notify socket is known as theirs: the shim
        // leads their session (a fast service may notify before the shim has answered).
        if let Some(shim) = self.starting.lock().expect("supervisor lock").get_mut(&spec.service) {
            *shim = child.id();
        }
        let mut handshake = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(HANDSHAKE, handshake.read_line(&mut line)).await;
        let pid = match (read, line.trim().parse::<u32>()) {
            (Ok(Ok(_)), Ok(pid)) => pid,
            (Ok(_), _) => {
                let _ = child.wait().await;
                let said = line.trim().strip_prefix("error: ").unwrap_or(line.trim());
                let said = if said.is_empty() { "the shim ended without starting it" } else { said };
                return Err(spawn_error(std::io::Error::other(said.to_string())));
            }
            (Err(_), _) => {
                self.abandon(&spec.service, child).await;
                return Err(spawn_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the shim did not say within {HANDSHAKE:?} that it runs"),
                )));
            }
        };
        let recorded =
            std::fs::read_to_string(state_path(&self.run_dir, &spec.service)).ok().and_then(|t| ShimState::decode(&t));
        let Some(state) = recorded.filter(|state| state.pid == pid) else {
            self.abandon(&spec.service, child).await;
            return Err(spawn_error(std::io::Error::other("the shim left no record of the service")));
        };
        self.watch(spec.service.clone(), &state, Shim::Child(child), Some((spec.stop_signal, spec.grace_period)));
        tracing::info!(service = %spec.service, pid, command = %spec.command, "process started");
        Ok(pid)
    }

    /// Gives up a start that went wrong: nothing of it stays running.
    async fn abandon(&self, service: &str, mut shim: tokio::process::Child) {
        let state_file = state_path(&self.run_dir, service);
        if let Some(state) = std::fs::read_to_string(&state_file).ok().and_then(|t| ShimState::decode(&t)) {
            if state.service_alive() {
                signal_group(state.pid, libc::SIGKILL);
            }
            let _ = std::fs::remove_file(state_file);
        }
        let _ = shim.kill().await;
    }

    /// Waits for the shim of `service` to end, then reports how the service ended. With `running`
    /// (its stop signal and grace) the service is listed as running until then.
    fn watch(&self, service: String, state: &ShimState, shim: Shim, running: Option<(i32, Duration)>) {
        let (exited_tx, exited) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some((stop_signal, grace_period)) = running {
            self.children.lock().expect("supervisor lock").insert(
                service.clone(),
                Handle {
                    pid: state.pid,
                    shim: state.shim,
                    limits: state.limits,
                    stop_signal,
                    grace_period,
                    exited,
                    stopping: stopping.clone(),
                },
            );
        }
        let (events, children, ready, run_dir, state) =
            (self.events.clone(), self.children.clone(), self.ready.clone(), self.run_dir.clone(), state.clone());
        tokio::spawn(async move {
            match shim {
                Shim::Child(mut child) => {
                    let _ = child.wait().await;
                }
                Shim::Adopted(pid) => ended(pid, state.shim_start).await,
            }
            let End { exit, ran_for, oom_killed } = recorded_end(&run_dir, &service, &state);
            {
                let mut children = children.lock().expect("supervisor lock");
                if children.get(&service).is_some_and(|h| h.pid == state.pid) {
                    children.remove(&service);
                }
                let mut ready = ready.lock().expect("supervisor lock");
                if ready.get(&service) == Some(&state.pid) {
                    ready.remove(&service);
                }
            }
            let _ = exited_tx.send(Some(exit));
            let stopped = stopping.load(std::sync::atomic::Ordering::Relaxed);
            let shim = (state.shim, state.shim_start);
            let _ = events.send(Exited { service, pid: state.pid, exit, ran_for, stopped, oom_killed, shim });
        });
    }

    /// Forgets the records of an end once it is reported: a later agent does not report it again.
    pub fn reported(&self, exited: &Exited) {
        let state = state_path(&self.run_dir, &exited.service);
        let same_run = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| ShimState::decode(&t))
            .is_some_and(|s| (s.shim, s.shim_start) == exited.shim);
        if same_run {
            let _ = std::fs::remove_file(exit_path(&self.run_dir, &exited.service));
            let _ = std::fs::remove_file(ready_path(&self.run_dir, &exited.service));
            let _ = std::fs::remove_file(spec_path(&self.run_dir, &exited.service));
            let _ = std::fs::remove_file(state);
        }
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

    /// Stops every process with its own stop signal and grace period, all at once
    /// (`orchestrator agent --cleanup`).
    pub async fn stop_all(&self) -> Vec<String> {
        let all: Vec<(String, i32, Duration)> = self
            .children
            .lock()
            .expect("supervisor lock")
            .iter()
            .map(|(s, h)| (s.clone(), h.stop_signal, h.grace_period))
            .collect();
        futures::future::join_all(all.iter().map(|(service, signal, grace)| self.stop(service, *signal, *grace))).await;
        all.into_iter().map(|(service, _, _)| service).collect()
    }
}

/// Waits until process `pid` (started at `start`, in clock ticks) has ended, through a pidfd
/// (Linux 5.3 and later), else by looking at /proc every 200 ms.
async fn ended(pid: u32, start: u64) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open(2) has no memory effects; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if start_time(pid) != Some(start) {
            return; // the pid names another process now: ours has ended
        }
        // SAFETY: the AsyncFd owns the descriptor, so it stays open as long as it is registered.
        let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        if let Ok(fd) = registered
            && fd.readable().await.is_ok()
        {
            return;
        }
    }
    while start_time(pid) == Some(start) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills every service a run directory names, at once (tests, benchmarks): each service's
/// process group, then its shim, then what is left in its cgroup, which goes too.
/// `orchestrator agent --cleanup` stops them gracefully instead
/// (`agent::cleanup`).
pub fn kill_all(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(".state") {
            continue;
        }
        if let Some(state) = std::fs::read_to_string(entry.path()).ok().and_then(|t| ShimState::decode(&t)) {
            // Only what the record names for sure: the same boot, pids and start times.
            if state.service_alive() {
                signal_group(state.pid, libc::SIGKILL);
            }
            if state.shim_alive() {
                // SAFETY: kill(2) has no memory effects; the start time says it is our shim.
                unsafe { libc::kill(state.shim as libc::pid_t, libc::SIGKILL) };
            }
            // The shim cannot remove its cgroup now; what the record names is this run's.
            let _ = Cgroup::at(state.cgroups).remove();
        }
    }
}
