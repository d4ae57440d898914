//! The shim between the agent and a service's process (`orch-shim`, or the hidden `orchestrator
//! shim` where that program is missing). It leads the
//! process group the service runs in and exists so that nothing of a service outlives the agent:
//! the kernel tells the shim when the agent dies, even by SIGKILL (`PR_SET_PDEATHSIG`), and the
//! shim then kills the whole group. Without it only the service's first process would be killed,
//! not what that process started.
//!
//! The shim ignores the stop signals sent to the group (they are meant for the service), waits
//! for the service, and exits the way the service did, so the agent sees the service's own exit.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

/// The parent-death signal: a real-time signal, so it can never be mistaken for a stop signal.
fn parent_death_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn kill_group(_: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; 0 is the caller's own process group.
    unsafe { libc::kill(0, libc::SIGKILL) };
}

extern "C" fn ignore(_: libc::c_int) {}

/// Runs `program` with `args` and returns its exit; `parent` is the agent's pid.
pub fn run(parent: u32, program: &str, args: &[String]) -> ExitCode {
    // SAFETY: installing handlers and prctl have no memory effects on this single-threaded path.
    unsafe {
        // Handlers, not SIG_IGN: handlers are reset by exec, so the service gets the defaults.
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            libc::signal(signal, ignore as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
        libc::signal(parent_death_signal(), kill_group as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, parent_death_signal());
        if libc::getppid() as u32 != parent {
            // The agent died before the line above.
            libc::kill(0, libc::SIGKILL);
        }
    }
    let status = match std::process::Command::new(program).args(args).status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("could not start {program}: {e}");
            return ExitCode::from(127);
        }
    };
    if let Some(code) = status.code() {
        return ExitCode::from(code as u8);
    }
    // Ended by a signal: end the same way, so the agent reports the signal.
    let signal = status.signal().unwrap_or(libc::SIGKILL);
    // SAFETY: restoring the default disposition and raising have no memory effects.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    ExitCode::from(128 + signal as u8)
}

/// The shim the agent runs services under: `orch-shim` beside the running binary, else the
/// running binary itself (`orchestrator shim`).
pub fn default_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let small = exe.with_file_name("orch-shim");
    Some(if small.is_file() { small } else { exe })
}
