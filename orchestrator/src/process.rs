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

/// Signals a service may name as its stop signal.
pub const STOP_SIGNALS: [(&str, i32); 7] = [
    ("SIGTERM", libc::SIGTERM),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGHUP", libc::SIGHUP),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGKILL", libc::SIGKILL),
];

/// The number of a signal name, with or without the `SIG` prefix.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    STOP_SIGNALS.iter().find(|(n, _)| *n == full).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_with_or_without_the_prefix() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigint"), Some(libc::SIGINT));
        assert_eq!(signal_number("SIGWHAT"), None);
    }
}
