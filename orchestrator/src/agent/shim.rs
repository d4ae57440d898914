//! The shim between the agent and a service's process (`orch-shim`, or the hidden `orchestrator
//! shim` where that program is missing). It is what lets a service outlive its agent and the
//! orchestrator that embeds it (killed, stopped, or replaced by a new binary):
//!
//! - it runs in a session of its own, so neither the agent's death (even by SIGKILL) nor a
//!   terminal's signals reach it, and it ignores the stop signals an operator might send it;
//! - it starts the service in a process group of its own, the unit the agent signals;
//! - it writes the service's stdout and stderr to the service's rotating log itself, so the log
//!   goes on while no agent runs;
//! - it records the service in `<run-dir>/<service>.state`, and how it ended in
//!   `<run-dir>/<service>.exit`, which stays until an agent has reported it;
//! - once the service has ended it kills whatever the service left in its group, then exits.
//!
//! An agent that starts later adopts every service its run directory names (see `supervisor`).
//! Nothing of a service is left without a shim: `orchestrator agent --cleanup` stops them all.
//!
//! ```text
//! <shim> shim --run-dir DIR --log-dir DIR --service NAME --log-max-bytes N --log-keep N
//!             --stop-signal N --grace-ms N -- PROGRAM [ARGS...]
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
            "--stop-signal".into(),
            self.stop_signal.to_string(),
            "--grace-ms".into(),
            self.grace.as_millis().to_string(),
            "--".into(),
            self.program.clone(),
        ];
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
        Ok(ShimArgs {
            run_dir: value("--run-dir")?.into(),
            log_dir: value("--log-dir")?.into(),
            service: value("--service")?.to_string(),
            rotation: Rotation { max_bytes: number("--log-max-bytes")?, keep: number("--log-keep")? as usize },
            stop_signal: number("--stop-signal")? as i32,
            grace: Duration::from_millis(number("--grace-ms")?),
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
}

impl ShimState {
    pub fn encode(&self) -> String {
        format!(
            "boot={} shim={} shim_start={} pid={} pid_start={} started_ms={} stop_signal={} grace_ms={}\n",
            self.boot,
            self.shim,
            self.shim_start,
            self.pid,
            self.pid_start,
            self.started_ms,
            self.stop_signal,
            self.grace_ms
        )
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
}

impl ShimExit {
    pub fn encode(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("code={code} ran_for_ms={}\n", self.ran_for_ms),
            (None, signal) => format!("signal={} ran_for_ms={}\n", signal.unwrap_or(libc::SIGKILL), self.ran_for_ms),
        }
    }

    pub fn decode(text: &str) -> Option<ShimExit> {
        let field = |name: &str| -> Option<i64> {
            text.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        let ran_for_ms = field("ran_for_ms")? as u64;
        match (field("code"), field("signal")) {
            (Some(code), _) => Some(ShimExit { code: Some(code as i32), signal: None, ran_for_ms }),
            (None, Some(signal)) => Some(ShimExit { code: None, signal: Some(signal as i32), ran_for_ms }),
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
    /// Clock ticks since boot (field 22).
    start: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        zombie: fields.first() == Some(&"Z"),
        group: fields.get(2)?.parse().ok()?,
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
    let started = Instant::now();
    let mut child = match Command::new(&args.program)
        .args(&args.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return fail(&mut handshake, format!("could not start {}: {e}", args.program)),
    };
    let pid = child.id();
    // The service may have ended already (a zombie until reaped below): its start time still is.
    let (Some(shim_start), Some(pid_start)) = (start_time(std::process::id()), stat(pid).map(|s| s.start)) else {
        // Without start times a later agent could not tell these processes from others.
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = child.wait();
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
    };
    let _ = std::fs::remove_file(exit_path(&args.run_dir, &args.service));
    if let Err(e) = write_atomically(&state_path(&args.run_dir, &args.service), &state.encode()) {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = child.wait();
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
    // The last lines are in the log before the end is reported, unless something that left the
    // group still holds the pipes.
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            break;
        }
    }
    let ran_for_ms = started.elapsed().as_millis() as u64;
    let exit = match status {
        Ok(status) => ShimExit { code: status.code(), signal: status.signal(), ran_for_ms },
        Err(_) => ShimExit { code: Some(-1), signal: None, ran_for_ms },
    };
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
            rotation: Rotation { max_bytes: 1000, keep: 2 },
            stop_signal: libc::SIGINT,
            grace: Duration::from_millis(2500),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo -- hi".into()],
        };
        assert_eq!(ShimArgs::parse(&args.to_args()), Ok(args));
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
        };
        assert_eq!(ShimState::decode(&state.encode()), Some(state));
        assert_eq!(ShimState::decode("shim=1"), None);
        for exit in [
            ShimExit { code: Some(3), signal: None, ran_for_ms: 7 },
            ShimExit { code: None, signal: Some(9), ran_for_ms: 8 },
        ] {
            assert_eq!(ShimExit::decode(&exit.encode()), Some(exit));
        }
    }
}
