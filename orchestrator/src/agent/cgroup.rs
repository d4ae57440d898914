//! One service's cgroup, as its shim makes, uses and removes it: the kernel enforces the
//! service's CPU and memory limits there and counts its OOM kills. Built into `orch-shim` too,
//! so it needs nothing but std and libc.
//!
//! A run of a service has the cgroup `<hierarchy>/orch/<node>/<service>-<run>` (`<run>`: 12 hex
//! digits drawn at random for each start): one directory on cgroup v2, one per hierarchy on v1
//! (cpu, memory, and cpuacct where it is mounted apart, for the usage counter). The agent makes
//! `<hierarchy>/orch/<node>` when it starts (`super::enforcement`); the shim makes the run's own
//! directory, writes the limits into it, and the service joins it between fork and exec, so it
//! runs there from its first instruction and so do its children. Once the service has ended,
//! the shim kills what is left in it, reads its OOM counter and removes it. The shim's record
//! names the directories, for an agent that finds the shim gone.
//!
//! Each run has a directory of its own, never one left by another: two agents that call
//! themselves by the same node name on one machine (every test's embedded agent is `local`)
//! must not share, let alone empty, each other's cgroups.
//!
//! Written on files rather than with a cgroup crate: see "Limits enforced by the kernel" in
//! docs/architecture.md.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CPU quota's period: a limit of `m` millicores is `m / 1000` of each period.
pub const PERIOD_US: u64 = 100_000;

/// How long the processes left in a cgroup get to be gone (after SIGKILL) before it is removed.
const EMPTYING: Duration = Duration::from_secs(2);

/// The cgroup interface: it decides the names of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    pub fn from_number(n: u64) -> Option<Version> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

/// A service's cgroup as the agent tells its shim: where, and which limits (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSpec {
    pub version: Version,
    /// The service's directory in each hierarchy (one on v2).
    pub dirs: Vec<PathBuf>,
    /// Millicores.
    pub cpu: Option<u64>,
    /// MiB.
    pub memory: Option<u64>,
}

/// One value for one of a cgroup's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub file: &'static str,
    pub value: String,
    /// Without it the limit does not hold; the others only make it tighter where the kernel has
    /// them (swap accounting may be compiled out or off).
    pub required: bool,
}

fn setting(file: &'static str, value: String, required: bool) -> Setting {
    Setting { file, value, required }
}

/// What to write for `cpu` millicores and `memory` MiB, in the order it must be written. Swap
/// is limited along with memory (to nothing more on v2, to the same total on v1, where swap and
/// memory are counted together), so that the limit holds where swap exists.
pub fn settings(version: Version, cpu: Option<u64>, memory: Option<u64>) -> Vec<Setting> {
    let mut out = Vec::new();
    let quota = cpu.map(|m| (m.saturating_mul(PERIOD_US) / 1000).max(1000));
    let bytes = memory.map(|mib| mib.saturating_mul(1024 * 1024));
    match version {
        Version::V2 => {
            if let Some(quota) = quota {
                out.push(setting("cpu.max", format!("{quota} {PERIOD_US}"), true));
            }
            if let Some(bytes) = bytes {
                out.push(setting("memory.max", bytes.to_string(), true));
                out.push(setting("memory.swap.max", "0".into(), false));
            }
        }
        Version::V1 => {
            if let Some(quota) = quota {
                out.push(setting("cpu.cfs_period_us", PERIOD_US.to_string(), true));
                out.push(setting("cpu.cfs_quota_us", quota.to_string(), true));
            }
            if let Some(bytes) = bytes {
                // memory before memory+swap: the kernel keeps the first at most the second.
                out.push(setting("memory.limit_in_bytes", bytes.to_string(), true));
                out.push(setting("memory.memsw.limit_in_bytes", bytes.to_string(), false));
                out.push(setting("memory.swappiness", "0".into(), false));
            }
        }
    }
    out
}

/// Whether a cgroup's OOM counters say the kernel killed one of its processes for its memory
/// limit. `memory_events` is v2's `memory.events`, `oom_control` v1's `memory.oom_control`
/// (its `oom_kill` line since Linux 4.13); before that, v1 says only how often the limit was hit
/// (`failcnt`), which counts as an OOM kill when the service died of SIGKILL.
pub fn oom_killed(
    memory_events: Option<&str>,
    oom_control: Option<&str>,
    failcnt: Option<u64>,
    signal: Option<i32>,
) -> bool {
    let counter =
        |text: &str| text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse::<u64>().ok());
    if let Some(kills) = memory_events.and_then(counter).or_else(|| oom_control.and_then(counter)) {
        return kills > 0;
    }
    failcnt.is_some_and(|n| n > 0) && signal == Some(libc::SIGKILL)
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("could not make the cgroup {}: {error}", path.display())]
    Create { path: PathBuf, error: std::io::Error },
    #[error("could not write {value:?} to {}: {error}", path.display())]
    Write { path: PathBuf, value: String, error: std::io::Error },
    #[error("no cgroup of {dirs} has {file}: its controller is not enabled there")]
    Missing { file: &'static str, dirs: String },
    #[error("the cgroup {} still holds processes after they were killed", path.display())]
    Busy { path: PathBuf },
}

/// A service's cgroup on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The cgroup in `dirs` (as a shim recorded it), to read and remove.
    pub fn at(dirs: Vec<PathBuf>) -> Cgroup {
        Cgroup { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Makes the run's cgroup with its limits; a directory that exists already is an error
    /// (it is another run's).
    pub fn create(spec: &CgroupSpec) -> Result<Cgroup, CgroupError> {
        let mut cgroup = Cgroup { dirs: Vec::new() };
        for dir in &spec.dirs {
            if let Err(error) = std::fs::create_dir(dir) {
                let _ = cgroup.remove();
                return Err(CgroupError::Create { path: dir.clone(), error });
            }
            cgroup.dirs.push(dir.clone());
        }
        if let Err(e) = cgroup.write(&settings(spec.version, spec.cpu, spec.memory)) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Writes each setting into the directory that has its file.
    fn write(&self, settings: &[Setting]) -> Result<(), CgroupError> {
        for s in settings {
            let Some(path) = self.file(s.file) else {
                if s.required {
                    let dirs = self.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                    return Err(CgroupError::Missing { file: s.file, dirs });
                }
                continue;
            };
            if let Err(error) = std::fs::write(&path, &s.value)
                && s.required
            {
                return Err(CgroupError::Write { path, value: s.value.clone(), error });
            }
        }
        Ok(())
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
    }

    /// The files a process writes `0` into to join the cgroup (see [`join`]).
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).expect("a path has no NUL byte"))
            .collect()
    }

    /// Whether the kernel OOM-killed a process of this cgroup; `signal` is what ended the
    /// service (for v1 kernels before 4.13, see [`oom_killed`]).
    pub fn oom_killed(&self, signal: Option<i32>) -> bool {
        let read = |name: &str| self.file(name).and_then(|p| std::fs::read_to_string(p).ok());
        let failcnt = read("memory.failcnt").and_then(|t| t.trim().parse().ok());
        oom_killed(read("memory.events").as_deref(), read("memory.oom_control").as_deref(), failcnt, signal)
    }

    /// Sends SIGKILL to every process in the cgroup (without waiting for them to end).
    pub fn kill(&self) {
        for dir in &self.dirs {
            kill_in(dir);
        }
    }

    /// Kills whatever still runs in the cgroup and removes it; a cgroup already gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut result = Ok(());
        for dir in &self.dirs {
            if let Err(e) = remove_dir(dir) {
                result = Err(e);
            }
        }
        result
    }
}

/// Joins the cgroups whose `cgroup.procs` files are `files` (`0` is the writing process). Runs
/// in the child between fork and exec, so it only makes system calls: no allocation, no lock.
pub fn join(files: &[CString]) -> std::io::Result<()> {
    for file in files {
        // SAFETY: open, write and close on a valid C string and a local buffer; async-signal-safe.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The pids in a cgroup (`cgroup.procs`), none when it is gone.
fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in `dir`, waits (a little) until they are gone, and removes it.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + EMPTYING;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return Err(CgroupError::Busy { path: dir.to_path_buf() }),
        }
        kill_in(dir);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL to every process in the cgroup `dir`.
fn kill_in(dir: &Path) {
    // v2 (Linux 5.14+) kills the whole cgroup at once, so nothing forks away meanwhile.
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in pids(dir) {
        // SAFETY: kill(2) has no memory effects; the pid is in our service's cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(version: Version, cpu: Option<u64>, memory: Option<u64>) -> Vec<(&'static str, String)> {
        settings(version, cpu, memory).into_iter().map(|s| (s.file, s.value)).collect()
    }

    #[test]
    fn limits_become_the_files_of_each_version() {
        assert_eq!(
            written(Version::V2, Some(250), Some(64)),
            [
                ("cpu.max", "25000 100000".to_string()),
                ("memory.max", "67108864".into()),
                ("memory.swap.max", "0".into())
            ]
        );
        assert_eq!(
            written(Version::V1, Some(1500), Some(32)),
            [
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "150000".into()),
                ("memory.limit_in_bytes", "33554432".into()),
                ("memory.memsw.limit_in_bytes", "33554432".into()),
                ("memory.swappiness", "0".into()),
            ]
        );
        assert!(settings(Version::V1, None, None).is_empty(), "no limit, nothing written");
        // The kernel's smallest quota is 1 ms.
        assert_eq!(written(Version::V2, Some(1), None), [("cpu.max", "1000 100000".to_string())]);
    }

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert!(oom_killed(Some(events), None, None, Some(libc::SIGKILL)));
        assert!(!oom_killed(Some("max 3\noom 0\noom_kill 0\n"), None, Some(3), Some(libc::SIGKILL)));
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert!(oom_killed(None, Some(control), None, Some(libc::SIGTERM)), "a child of it was killed");
        // Before Linux 4.13: hitting the limit and dying of SIGKILL.
        let old = "oom_kill_disable 0\nunder_oom 0\n";
        assert!(oom_killed(None, Some(old), Some(5), Some(libc::SIGKILL)));
        assert!(!oom_killed(None, Some(old), Some(5), Some(libc::SIGTERM)));
        assert!(!oom_killed(None, Some(old), Some(0), Some(libc::SIGKILL)));
        assert!(!oom_killed(None, None, None, Some(libc::SIGKILL)), "no memory controller, no OOM kill");
    }
}
