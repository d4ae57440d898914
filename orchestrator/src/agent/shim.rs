//! The shim between the agent and a service's process (`orch-shim`, or the hidden `orchestrator
//! shim` where that program is missing). It is what lets a service outlive its agent and the
//! orchestrator that embeds it (killed, stopped, or replaced by a new binary):
//!
//! - it runs in a session of its own, so neither the agent's death (even by SIGKILL) nor a
//!   terminal's signals reach it, and it ignores the stop signals an operator might send it;
//! - it starts the service in a process group of its own, the unit the agent signals, and, where
//!   the node has cgroups, in a cgroup of its own with the service's CPU and memory limits (see
//!   `super::cgroup`), joined before the service's first instruction;
//! - it writes the service's stdout and stderr to the service's rotating log itself, so the log
//!   goes on while no agent runs;
//! - it records the service in `<run-dir>/<service>.state`, and how it ended in
//!   `<run-dir>/<service>.exit`, which stays until an agent has reported it;
//! - once the service has ended it kills whatever the service left in its group (and in its
//!   cgroup), records whether the kernel OOM-killed it, removes the cgroup, then exits.
//!
//! An agent that starts later adopts every service its run directory names (see `supervisor`).
//! Nothing of a service is left without a shim: `orchestrator agent --cleanup` stops them all.
//!
//! ```text
//! <shim> shim --run-dir DIR --log-dir DIR --service NAME --log-max-bytes N --log-keep N
//!             [--log-max-age SECONDS] --stop-signal N --grace-ms N
//!             [--cgroup-version 1|2 --cgroup DIR... [--cpu MILLICORES] [--memory MIB]]
//!             -- PROGRAM [ARGS...]
//! ```
//!
//! Once the service runs, the shim writes its pid on standard output (one line), or `error: ...`
//! when it could not be started, and closes it.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cgroup::{Cgroup, CgroupSpec, Version};
use super::logs::{RotatingLog, Rotation, read_line};

/// What the agent tells the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub service: String,
    pub rotation: Rotation,
    /// Recorded in the state file, for `orchestrator agent --cleanup`.
    pub stop_signal: i32,
    pub grace: Duration,
    /// The service's cgroup and limits; `None` where the node has no cgroups.
    pub cgroup: Option<CgroupSpec>,
    pub program: String,
    pub args: Vec<String>,
}

impl ShimArgs {
    /// The arguments that [`ShimArgs::parse`] reads back (after the `shim` word).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![
            "--run-dir".to_string(),
            self.run_dir.display().to_string(),
            "--log-dir".into(),
            self.log_dir.display().to_string(),
            "--service".into(),
            self.service.clone(),
            "--log-max-bytes".into(),
            self.rotation.max_bytes.to_string(),
            "--log-keep".into(),
            self.rotation.keep.to_string(),
        ];
        if let Some(max_age) = self.rotation.max_age {
            out.extend(["--log-max-age".to_string(), max_age.as_secs().max(1).to_string()]);
        }
        out.extend([
            "--stop-signal".to_string(),
            self.stop_signal.to_string(),
            "--grace-ms".into(),
            self.grace.as_millis().to_string(),
        ]);
        if let Some(cgroup) = &self.cgroup {
            out.extend(["--cgroup-version".to_string(), cgroup.version.number().to_string()]);
            for dir in &cgroup.dirs {
                out.extend(["--cgroup".to_string(), dir.display().to_string()]);
            }
            for (flag, value) in [("--cpu", cgroup.cpu), ("--memory", cgroup.memory)] {
                if let Some(value) = value {
                    out.extend([flag.to_string(), value.to_string()]);
                }
            }
        }
        out.extend(["--".to_string(), self.program.clone()]);
        out.extend(self.args.iter().cloned());
        out
    }

    /// Reads the arguments of [`ShimArgs::to_args`].
    pub fn parse(args: &[String]) -> Result<ShimArgs, String> {
        let dashes = args.iter().position(|a| a == "--").ok_or("missing `-- PROGRAM`")?;
        let (options, command) = (&args[..dashes], &args[dashes + 1..]);
        let program = command.first().ok_or("missing PROGRAM after `--`")?.clone();
        let value = |name: &str| -> Result<&str, String> {
            let at = options.iter().position(|a| a == name).ok_or_else(|| format!("missing {name}"))?;
            options.get(at + 1).map(String::as_str).ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str| -> Result<u64, String> {
            value(name)?.parse::<u64>().map_err(|_| format!("{name}: not a whole number"))
        };
        let optional = |name: &str| options.iter().any(|a| a == name).then(|| number(name)).transpose();
        let cgroup = match optional("--cgroup-version")? {
            None => None,
            Some(n) => {
                let version = Version::from_number(n).ok_or("--cgroup-version: 1 or 2")?;
                let dirs: Vec<PathBuf> = options
                    .windows(2)
                    .filter(|pair| pair[0] == "--cgroup")
                    .map(|pair| PathBuf::from(&pair[1]))
                    .collect();
                if dirs.is_empty() {
                    return Err("--cgroup-version needs --cgroup DIR".into());
                }
                Some(CgroupSpec { version, dirs, cpu: optional("--cpu")?, memory: optional("--memory")? })
            }
        };
        Ok(ShimArgs {
            run_dir: value("--run-dir")?.into(),
            log_dir: value("--log-dir")?.into(),
            service: value("--service")?.to_string(),
            rotation: Rotation {
                max_bytes: number("--log-max-bytes")?,
                keep: number("--log-keep")? as usize,
                // Shims started before the age limit leave it out.
                max_age: optional("--log-max-age")?.map(Duration::from_secs),
            },
            stop_signal: number("--stop-signal")? as i32,
            grace: Duration::from_millis(number("--grace-ms")?),
            cgroup,
            program,
            args: command[1..].to_vec(),
        })
    }
}

/// A service as its shim recorded it in `<run-dir>/<service>.state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimState {
    /// The boot the processes below belong to (`/proc/sys/kernel/random/boot_id`): after a
    /// reboot, none of them is ours whatever their pids.
    pub boot: String,
    pub shim: u32,
    /// The shim's start time (clock ticks since boot, from /proc): a pid alone may be reused.
    pub shim_start: u64,
    /// The service's pid, which leads its process group, and its start time.
    pub pid: u32,
    pub pid_start: u64,
    pub started_ms: u64,
    pub stop_signal: i32,
    pub grace_ms: u64,
    /// The service's cgroup, one directory per hierarchy (none without cgroups): an agent that
    /// finds the shim gone reads its OOM counter and removes it.
    pub cgroups: Vec<PathBuf>,
    /// The limits its cgroup enforces: what the node reports as its allocation.
    pub limits: orch_protocol::resources::Limits,
}

impl ShimState {
    pub fn encode(&self) -> String {
        let mut text = format!(
            "boot={} shim={} shim_start={} pid={} pid_start={} started_ms={} stop_signal={} grace_ms={}",
            self.boot,
            self.shim,
            self.shim_start,
            self.pid,
            self.pid_start,
            self.started_ms,
            self.stop_signal,
            self.grace_ms
        );
        for dir in &self.cgroups {
            text.push_str(" cgroup=");
            text.push_str(&escape(&dir.display().to_string()));
        }
        if let Some(cpu) = self.limits.cpu {
            text.push_str(&format!(" cpu={cpu}"));
        }
        if let Some(memory) = self.limits.memory {
            text.push_str(&format!(" memory={memory}"));
        }
        text.push('\n');
        text
    }

    pub fn decode(text: &str) -> Option<ShimState> {
        let raw = |name: &str| -> Option<&str> {
            text.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let field = |name: &str| -> Option<u64> { raw(name)?.parse().ok() };
        Some(ShimState {
            boot: raw("boot")?.to_string(),
            shim: field("shim")? as u32,
            shim_start: field("shim_start")?,
            pid: field("pid")? as u32,
            pid_start: field("pid_start")?,
            started_ms: field("started_ms")?,
            stop_signal: field("stop_signal")? as i32,
            grace_ms: field("grace_ms")?,
            // Records of shims before cgroups have none.
            cgroups: text
                .split_whitespace()
                .filter_map(|kv| kv.strip_prefix("cgroup="))
                .map(|dir| PathBuf::from(unescape(dir)))
                .collect(),
            limits: orch_protocol::resources::Limits { cpu: field("cpu"), memory: field("memory") },
        })
    }

    /// The shim named runs now (this boot, same pid and start time).
    pub fn shim_alive(&self) -> bool {
        self.boot == boot_id() && start_time(self.shim) == Some(self.shim_start)
    }

    /// The service's first process runs now and still leads its group: signalling the group
    /// reaches this service, not a process that took a reused pid.
    pub fn service_alive(&self) -> bool {
        self.boot == boot_id()
            && stat(self.pid).is_some_and(|s| !s.zombie && s.start == self.pid_start && s.group == self.pid)
    }
}

/// `text` without whitespace, for a record whose fields are separated by it: `%` and whitespace
/// become `%XX`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c.is_whitespace() {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| text.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This boot's id; empty where the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// How a service ended, as its shim recorded it in `<run-dir>/<service>.exit`: `code` is the exit
/// code, or `None` with `signal` the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub ran_for_ms: u64,
    /// The kernel OOM-killed a process of the service's cgroup.
    pub oom_killed: bool,
}

impl ShimExit {
    pub fn encode(&self) -> String {
        let end = match (self.code, self.signal) {
            (Some(code), _) => format!("code={code}"),
            (None, signal) => format!("signal={}", signal.unwrap_or(libc::SIGKILL)),
        };
        format!("{end} ran_for_ms={} oom_killed={}\n", self.ran_for_ms, u8::from(self.oom_killed))
    }

    pub fn decode(text: &str) -> Option<ShimExit> {
        let field = |name: &str| -> Option<i64> {
            text.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        let ran_for_ms = field("ran_for_ms")? as u64;
        // Records of shims before cgroups leave it out.
        let oom_killed = field("oom_killed") == Some(1);
        match (field("code"), field("signal")) {
            (Some(code), _) => Some(ShimExit { code: Some(code as i32), signal: None, ran_for_ms, oom_killed }),
            (None, Some(signal)) => Some(ShimExit { code: None, signal: Some(signal as i32), ran_for_ms, oom_killed }),
            (None, None) => None,
        }
    }
}

pub fn state_path(run_dir: &Path, service: &str) -> PathBuf {
    run_dir.join(format!("{service}.state"))
}

pub fn exit_path(run_dir: &Path, service: &str) -> PathBuf {
    run_dir.join(format!("{service}.exit"))
}

/// Writes `text` to `path` all at once (a reader never sees half of it).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or
/// `None` when it does not run (a zombie counts as ended).
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).filter(|s| !s.zombie).map(|s| s.start)
}

/// What /proc/PID/stat says of a process, a zombie included.
struct Stat {
    zombie: bool,
    /// Its process group (field 5).
    group: u32,
    /// Its session (field 6).
    session: u32,
    /// Clock ticks since boot (field 22).
    start: u64,
}

/// The process group and the session of process `pid`. A service leads its own group, and its
/// shim leads the session: what a process of a service sends is traced back to it by them. A
/// zombie still says them (a helper that notified and exited at once, not yet reaped).
pub fn group_and_session(pid: u32) -> Option<(u32, u32)> {
    stat(pid).map(|s| (s.group, s.session))
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        zombie: fields.first() == Some(&"Z"),
        group: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

extern "C" fn ignore(_: libc::c_int) {}

/// Runs the shim with `args` (after the `shim` word) and returns its exit code.
pub fn main(args: &[String]) -> ExitCode {
    match ShimArgs::parse(args) {
        Ok(args) => run(args),
        Err(e) => {
            eprintln!("orch-shim: {e}");
            eprintln!(
                "usage: orch-shim [shim] --run-dir DIR --log-dir DIR --service NAME --log-max-bytes N --log-keep N \
                 --stop-signal N --grace-ms N -- PROGRAM [ARGS...]"
            );
            ExitCode::from(64)
        }
    }
}

fn run(args: ShimArgs) -> ExitCode {
    // SAFETY: setsid and installing handlers have no memory effects on this single-threaded path.
    unsafe {
        // Nothing the agent had open reaches the service (a descriptor opened without CLOEXEC).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_uint);
        // A session of its own: out of the agent's process group and away from its terminal.
        libc::setsid();
        // Handlers, not SIG_IGN: handlers are reset by exec, so the service gets the defaults.
        for signal in
            [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPIPE]
        {
            libc::signal(signal, ignore as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
    let mut handshake = std::io::stdout();
    let fail = |handshake: &mut std::io::Stdout, what: String| {
        let _ = writeln!(handshake, "error: {what}");
        ExitCode::from(127)
    };
    let log = match RotatingLog::open(&args.log_dir, &args.service, args.rotation) {
        Ok(log) => Arc::new(Mutex::new(log)),
        Err(e) => return fail(&mut handshake, format!("could not open the log of {:?}: {e}", args.service)),
    };
    if let Err(e) = std::fs::create_dir_all(&args.run_dir) {
        return fail(&mut handshake, format!("could not create {}: {e}", args.run_dir.display()));
    }
    // Made before the service, which joins it before its first instruction: what it allocates
    // or forks is limited and counted from the start.
    let cgroup = match args.cgroup.as_ref().map(Cgroup::create).transpose() {
        Ok(cgroup) => cgroup,
        Err(e) => return fail(&mut handshake, e.to_string()),
    };
    let remove_cgroup = || {
        if let Some(cgroup) = &cgroup {
            let _ = cgroup.remove();
        }
    };
    let started = Instant::now();
    let mut command = Command::new(&args.program);
    command.args(&args.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    if let Some(cgroup) = &cgroup {
        let files = cgroup.procs_files();
        // SAFETY: `join` only makes system calls (no allocation, no lock), as the child of a fork
        // must until it execs.
        unsafe { command.pre_exec(move || super::cgroup::join(&files)) };
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            remove_cgroup();
            let place = if cgroup.is_some() { " in its cgroup" } else { "" };
            return fail(&mut handshake, format!("could not start {}{place}: {e}", args.program));
        }
    };
    let pid = child.id();
    // The service may have ended already (a zombie until reaped below): its start time still is.
    let (Some(shim_start), Some(pid_start)) = (start_time(std::process::id()), stat(pid).map(|s| s.start)) else {
        // Without start times a later agent could not tell these processes from others.
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = child.wait();
        remove_cgroup();
        return fail(&mut handshake, "could not read the start time of the processes from /proc".into());
    };
    let state = ShimState {
        boot: boot_id(),
        shim: std::process::id(),
        shim_start,
        pid,
        pid_start,
        started_ms: now_ms(),
        stop_signal: args.stop_signal,
        grace_ms: args.grace.as_millis() as u64,
        cgroups: cgroup.as_ref().map(|c| c.dirs().to_vec()).unwrap_or_default(),
        limits: args
            .cgroup
            .as_ref()
            .map(|c| orch_protocol::resources::Limits { cpu: c.cpu, memory: c.memory })
            .unwrap_or_default(),
    };
    let _ = std::fs::remove_file(exit_path(&args.run_dir, &args.service));
    if let Err(e) = write_atomically(&state_path(&args.run_dir, &args.service), &state.encode()) {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = child.wait();
        remove_cgroup();
        return fail(&mut handshake, format!("could not record the service: {e}"));
    }
    let _ = writeln!(handshake, "{pid}");
    let _ = handshake.flush();
    detach_standard_streams();

    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let pipes: [(&'static str, Option<Box<dyn std::io::Read + Send>>); 2] = [
        ("stdout", child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
        ("stderr", child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
    ];
    // Old output goes even while the service writes nothing (each line also checks).
    if let Some(max_age) = args.rotation.max_age {
        let log = log.clone();
        let every = (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(every);
                let _ = log.lock().map(|mut log| log.enforce_age(SystemTime::now()));
            }
        });
    }
    let mut readers = 0;
    for (stream, pipe) in pipes {
        let Some(pipe) = pipe else { continue };
        let (log, done_tx) = (log.clone(), done_tx.clone());
        readers += 1;
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
                // A full disk loses lines, never the service: keep reading so it is not blocked.
                let _ = log.lock().map(|mut log| log.line(stream, &line));
            }
            let _ = done_tx.send(());
        });
    }
    // Seen ended but not reaped yet, so its pid (the group's id) cannot be reused meanwhile:
    // whatever the run left behind in its group goes with it, then it is reaped.
    // SAFETY: waitid and kill have no memory effects; `info` is a plain struct written by waitid.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        while libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) != 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
    let status = child.wait();
    // What left the group is still in the cgroup: it goes too.
    if let Some(cgroup) = &cgroup {
        cgroup.kill();
    }
    // The last lines are in the log before the end is reported, unless something that left the
    // group (and runs without a cgroup) still holds the pipes.
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            break;
        }
    }
    let ran_for_ms = started.elapsed().as_millis() as u64;
    let (code, signal) = match status {
        Ok(status) => (status.code(), status.signal()),
        Err(_) => (Some(-1), None),
    };
    // Read before the cgroup goes, and recorded, so that an agent that was away reports it too.
    let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_killed(signal));
    remove_cgroup();
    let exit = ShimExit { code, signal, ran_for_ms, oom_killed };
    let _ = write_atomically(&exit_path(&args.run_dir, &args.service), &exit.encode());
    ExitCode::SUCCESS
}

/// Standard output and error to /dev/null: the agent that read the handshake may be gone.
fn detach_standard_streams() {
    // SAFETY: open and dup2 have no memory effects; the descriptors are the process's own.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}

/// The shim the agent runs services under: `orch-shim` beside the running binary, else the
/// running binary itself (`orchestrator shim`).
pub fn default_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let small = exe.with_file_name("orch-shim");
    Some(if small.is_file() { small } else { exe })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_state_and_exit_read_back_what_was_written() {
        let args = ShimArgs {
            run_dir: "/run/orch".into(),
            log_dir: "/var/log/orch".into(),
            service: "web".into(),
            rotation: Rotation { max_bytes: 1000, keep: 2, max_age: Some(Duration::from_secs(3600)) },
            stop_signal: libc::SIGINT,
            grace: Duration::from_millis(2500),
            cgroup: None,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo -- hi".into()],
        };
        assert_eq!(ShimArgs::parse(&args.to_args()), Ok(args.clone()));
        let limited = ShimArgs {
            cgroup: Some(CgroupSpec {
                version: Version::V1,
                dirs: vec!["/sys/fs/cgroup/cpu/orch/n1/web".into(), "/sys/fs/cgroup/memory/orch/n1/web".into()],
                cpu: Some(250),
                memory: None,
            }),
            ..args
        };
        assert_eq!(ShimArgs::parse(&limited.to_args()), Ok(limited));
        assert!(ShimArgs::parse(&["--service".into(), "web".into()]).unwrap_err().contains("PROGRAM"));

        let state = ShimState {
            boot: "b-1".into(),
            shim: 10,
            shim_start: 20,
            pid: 11,
            pid_start: 21,
            started_ms: 30,
            stop_signal: 15,
            grace_ms: 5000,
            cgroups: vec!["/sys/fs/cgroup/orch/n1/web".into(), "/tmp/a dir/100%".into()],
            limits: orch_protocol::resources::Limits { cpu: Some(250), memory: Some(64) },
        };
        assert_eq!(ShimState::decode(&state.encode()), Some(state.clone()));
        // A record written before cgroups.
        let old = "boot=b-1 shim=10 shim_start=20 pid=11 pid_start=21 started_ms=30 stop_signal=15 grace_ms=5000\n";
        assert_eq!(ShimState::decode(old), Some(ShimState { cgroups: vec![], limits: Default::default(), ..state }));
        assert_eq!(ShimState::decode("shim=1"), None);
        for exit in [
            ShimExit { code: Some(3), signal: None, ran_for_ms: 7, oom_killed: false },
            ShimExit { code: None, signal: Some(9), ran_for_ms: 8, oom_killed: true },
        ] {
            assert_eq!(ShimExit::decode(&exit.encode()), Some(exit));
        }
        let old = ShimExit::decode("signal=9 ran_for_ms=8\n").unwrap();
        assert!(!old.oom_killed, "a record written before cgroups");
    }
}
