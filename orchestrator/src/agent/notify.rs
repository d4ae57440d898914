//! Readiness by notification: the agent's end of the systemd `sd_notify` protocol, which many
//! daemons already speak. The agent binds one unix datagram socket (`<log dir>/shims/notify.sock`,
//! see [`NotifySocket::bind`]) and gives its address as `NOTIFY_SOCKET` to the services that ask
//! for it; a service sends `READY=1` there (and `STATUS=...` lines) when it is ready.
//!
//! Who sent a message is what the kernel says (`SO_PASSCRED`: the sender's pid), never what the
//! message says: the sender's process group and session name the service (see
//! [`Supervisor::service_of`]), so a process can only speak for the service it belongs to, and
//! one that belongs to no service of this agent is ignored. Each message taken is published on
//! `<prefix>.agent.<node>.notify` ([`agent::Notified`]), and a `READY=1` is remembered by the
//! supervisor, which `status` shows: the report is a hint for promptness, `status` the truth.
//!
//! What a service can make the agent do is bounded: datagrams over [`DATAGRAM_MAX`] bytes are
//! dropped, and so are messages beyond a few a second per process and beyond a few hundred a
//! second in all ([`Budget`]); file descriptors sent along (`FDSTORE`, `BARRIER`) are closed at
//! once. Only `READY=1` and `STATUS=` are read; other keys are ignored.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_protocol::agent::{self, STATUS_MAX};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::shim::group_and_session;
use super::supervisor::Supervisor;
use crate::shutdown::Shutdown;

/// Largest datagram read; a larger one is dropped (a `READY=1` with a status fits many times over).
pub const DATAGRAM_MAX: usize = 4096;
/// The longest path a unix socket address holds: `sun_path` is 108 bytes, its NUL included.
const SUN_PATH_MAX: usize = 107;

/// Messages one process may send in a burst, and how many a second it gets back.
const PROCESS_BURST: f64 = 10.0;
const PROCESS_RATE: f64 = 5.0;
/// Messages the agent takes in a burst from all its services, and how many a second.
const TOTAL_BURST: f64 = 1000.0;
const TOTAL_RATE: f64 = 500.0;
/// Senders whose budget is remembered; beyond, those with a full budget are forgotten (a fresh
/// one is the same), and if that is not enough, all.
const SENDERS_KEPT: usize = 4096;

/// The agent's notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// Its address as `NOTIFY_SOCKET` gives it: a path, or `@name` for an abstract socket.
    address: String,
}

impl NotifySocket {
    /// Binds the notify socket of the agent whose run directory is `run_dir`, with `SO_PASSCRED`.
    /// The address is `<run_dir>/notify.sock`, or, when that path is too long for a unix socket
    /// address, `<temp dir>/orch-notify-<hash of run_dir>.sock`, else the abstract socket
    /// `@orch-notify-<hash>`: the same for every agent on that run directory, so the services an
    /// agent adopts still reach it. A file left by an agent before (a stale socket) is replaced.
    pub fn bind(run_dir: &Path) -> io::Result<NotifySocket> {
        std::fs::create_dir_all(run_dir)?;
        let run_dir = std::path::absolute(run_dir)?;
        let (socket, address) = match address_for(&run_dir) {
            Address::Path(path) => (bind_path(&path)?, path.display().to_string()),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                (std::os::unix::net::UnixDatagram::bind_addr(&addr)?, format!("@{name}"))
            }
        };
        pass_credentials(socket.as_raw_fd())?;
        socket.set_nonblocking(true)?;
        Ok(NotifySocket { socket: UnixDatagram::from_std(socket)?, address })
    }

    /// Removes the socket file of the agent on `run_dir` (`orchestrator agent --cleanup`, for a
    /// node no agent will serve again); an abstract socket has none.
    pub fn forget(run_dir: &Path) {
        let Ok(run_dir) = std::path::absolute(run_dir) else { return };
        if let Address::Path(path) = address_for(&run_dir) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// `NOTIFY_SOCKET` for the services.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next datagram, into `buf`.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let fd = self.socket.as_raw_fd();
        self.socket.async_io(Interest::READABLE, || recv_with_credentials(fd, buf)).await
    }
}

/// Where the notify socket of a run directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Path(PathBuf),
    Abstract(String),
}

fn address_for(run_dir: &Path) -> Address {
    let path = run_dir.join("notify.sock");
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return Address::Path(path);
    }
    let name = format!("orch-notify-{:016x}", fnv1a(run_dir.as_os_str().as_bytes()));
    let short = std::env::temp_dir().join(format!("{name}.sock"));
    if short.as_os_str().len() <= SUN_PATH_MAX {
        return Address::Path(short);
    }
    Address::Abstract(name)
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and versions (the standard
/// library's does not promise to), so an upgraded agent finds the same address.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Binds a socket at `path`, replacing a stale file there; only the agent's user may write to it.
fn bind_path(path: &Path) -> io::Result<std::os::unix::net::UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    let socket = match std::os::unix::net::UnixDatagram::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // Left by an agent before this one (the file outlives its socket).
            tracing::debug!(path = %path.display(), "replacing the notify socket an earlier agent left");
            std::fs::remove_file(path)?;
            std::os::unix::net::UnixDatagram::bind(path)?
        }
        bound => bound?,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket)
}

fn pass_credentials(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// One datagram as read: its length in the buffer, whether it was longer, and its sender's pid.
#[derive(Debug)]
struct Datagram {
    len: usize,
    truncated: bool,
    pid: Option<u32>,
}

/// Room for the sender's credentials and a few file descriptors, aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 16;

/// `recvmsg` with the sender's credentials; descriptors sent along are closed.
fn recv_with_credentials(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: a msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most the lengths given into `buf` and `control`.
    let read = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within msg_controllen;
    // the credentials and descriptors are read unaligned from where the kernel wrote them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
            if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS && len >= std::mem::size_of::<libc::ucred>() {
                let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                pid = u32::try_from(cred.pid).ok().filter(|&p| p > 0);
            } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // Descriptors are nothing the agent keeps (the kernel drops those that did not
                // fit); closing a barrier's tells its sender the messages before it were read.
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    libc::close(std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Datagram { len: read as usize, truncated: msg.msg_flags & libc::MSG_TRUNC != 0, pid })
}

/// What the agent reads of one `sd_notify` message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    /// It says `READY=1`.
    pub ready: bool,
    /// Its last `STATUS=` text: control characters replaced, at most [`STATUS_MAX`] characters.
    pub status: Option<String>,
}

impl Message {
    /// Reads the newline-separated `KEY=VALUE` lines of a message.
    pub fn parse(datagram: &[u8]) -> Message {
        let text = String::from_utf8_lossy(datagram);
        let mut message = Message::default();
        for line in text.split('\n') {
            match line.split_once('=') {
                Some(("READY", "1")) => message.ready = true,
                Some(("STATUS", status)) => {
                    let clean = status.chars().map(|c| if c.is_control() { ' ' } else { c }).take(STATUS_MAX);
                    message.status = Some(clean.collect());
                }
                _ => {}
            }
        }
        message
    }

    /// Nothing in it the agent uses.
    fn is_empty(&self) -> bool {
        !self.ready && self.status.is_none()
    }
}

/// A token bucket: `burst` messages at once, `rate` a second after.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    fn take(&mut self, burst: f64, rate: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, burst: f64, rate: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// How many messages the agent still takes: per sending process, and in all.
#[derive(Debug)]
pub struct Budget {
    senders: HashMap<u32, Bucket>,
    total: Bucket,
}

impl Budget {
    pub fn new(now: Instant) -> Budget {
        Budget { senders: HashMap::new(), total: Bucket::full(TOTAL_BURST, now) }
    }

    /// Takes one message of process `pid` at `now`, if the budgets allow it.
    pub fn allow(&mut self, pid: u32, now: Instant) -> bool {
        if self.senders.len() >= SENDERS_KEPT && !self.senders.contains_key(&pid) {
            self.senders.retain(|_, b| !b.is_full(PROCESS_BURST, PROCESS_RATE, now));
            if self.senders.len() >= SENDERS_KEPT {
                // Thousands of processes sending at once: each starts afresh, the total still holds.
                self.senders.clear();
            }
        }
        let sender = self.senders.entry(pid).or_insert_with(|| Bucket::full(PROCESS_BURST, now));
        sender.take(PROCESS_BURST, PROCESS_RATE, now) && self.total.take(TOTAL_BURST, TOTAL_RATE, now)
    }
}

/// Reads the notify socket until `shutdown`, publishing each message taken on `subject`.
pub async fn run(
    socket: NotifySocket,
    client: async_nats::Client,
    subject: String,
    node: String,
    supervisor: Arc<Supervisor>,
    mut shutdown: Shutdown,
) {
    tracing::info!(node = %node, socket = %socket.address(), "notify socket ready (NOTIFY_SOCKET of the services that ask)");
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut budget = Budget::new(Instant::now());
    loop {
        let datagram = tokio::select! {
            datagram = socket.recv(&mut buf) => datagram,
            _ = shutdown.requested() => break,
        };
        let datagram = match datagram {
            Ok(datagram) => datagram,
            Err(e) => {
                tracing::warn!(error = %e, "reading the notify socket failed");
                // Not a loop that spins on an error that stays.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(sender) = datagram.pid else {
            tracing::debug!("a notification without its sender's credentials; ignored");
            continue;
        };
        if datagram.truncated {
            tracing::debug!(sender, "a notification over {DATAGRAM_MAX} bytes; ignored");
            continue;
        }
        let message = Message::parse(&buf[..datagram.len]);
        if message.is_empty() {
            continue;
        }
        if !budget.allow(sender, Instant::now()) {
            tracing::debug!(sender, "too many notifications; dropped");
            continue;
        }
        let Some((service, pid)) = group_and_session(sender).and_then(|(g, s)| supervisor.service_of(g, s)) else {
            tracing::debug!(sender, "a notification from a process that is no service of this agent; ignored");
            continue;
        };
        let ready = if message.ready {
            if supervisor.mark_ready(&service, pid) {
                tracing::info!(node = %node, service = %service, pid, status = message.status.as_deref(), "service notified READY=1");
            }
            true
        } else {
            supervisor.is_ready(&service, pid)
        };
        let report =
            agent::Notified { node: node.clone(), service, pid, ready, status: message.status, at: chrono::Utc::now() };
        if let Err(e) = super::service::publish_report(&client, &subject, &report).await {
            tracing::warn!(error = %e, "could not publish a notification; status requests still show readiness");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ready_and_the_last_status_and_nothing_else() {
        let m = Message::parse(b"STATUS=loading\nREADY=1\nSTATUS=serving 3 clients\nMAINPID=1");
        assert_eq!(m, Message { ready: true, status: Some("serving 3 clients".into()) });
        assert_eq!(Message::parse(b"READY=0\nWATCHDOG=1\n"), Message::default());
        assert!(Message::parse(b"READY=0").is_empty());
        let noisy = Message::parse(format!("STATUS=a\tb\r{}", "x".repeat(1000)).as_bytes());
        let status = noisy.status.unwrap();
        assert!(status.starts_with("a b "), "{status:?}");
        assert_eq!(status.chars().count(), STATUS_MAX);
        assert!(Message::parse(b"\xff\nREADY=1").ready, "a bad line spoils only itself");
    }

    #[test]
    fn a_chatty_process_is_held_to_its_budget_and_others_keep_theirs() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let taken = (0..100).filter(|_| budget.allow(7, t0)).count();
        assert_eq!(taken, PROCESS_BURST as usize, "a burst, then nothing");
        assert!(budget.allow(8, t0), "another process has its own budget");
        assert!(!budget.allow(7, t0 + Duration::from_millis(100)), "less than one message's worth back");
        assert!(budget.allow(7, t0 + Duration::from_secs(1)), "some back a second later");
    }

    #[test]
    fn all_processes_together_are_held_to_the_total() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let taken = (0..5000u32).filter(|pid| budget.allow(*pid, t0)).count();
        assert_eq!(taken, TOTAL_BURST as usize);
        assert!(budget.senders.len() <= SENDERS_KEPT + 1, "the senders remembered are bounded");
        assert!(budget.allow(1, t0 + Duration::from_secs(1)), "the total refills");
    }

    #[test]
    fn the_address_is_the_run_directory_s_or_a_short_one_when_that_is_too_long() {
        assert_eq!(
            address_for(Path::new("/var/lib/orch/shims")),
            Address::Path("/var/lib/orch/shims/notify.sock".into())
        );
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        let short = address_for(&long);
        assert_eq!(short, address_for(&long), "the same for every agent on the directory");
        match short {
            Address::Path(path) => {
                assert!(path.as_os_str().len() <= SUN_PATH_MAX);
                assert!(path.file_name().unwrap().to_string_lossy().starts_with("orch-notify-"));
            }
            Address::Abstract(name) => assert!(name.starts_with("orch-notify-")),
        }
        assert_ne!(address_for(&long), address_for(&long.join("x")), "another directory, another address");
    }
}
