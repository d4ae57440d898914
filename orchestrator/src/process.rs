//! Process groups: the unit in which the orchestrator runs and stops child processes (exec
//! checks, managed services), so nothing a child starts is left behind.

/// Sends `signal` to the process group led by `pid`. An error (the group is gone) is expected and
/// ignored.
pub fn signal_group(pid: u32, signal: i32) {
    if pid > 0 && pid <= i32::MAX as u32 {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-(pid as libc::pid_t), signal) };
    }
}
