//! `orch-sleeper`: a stand-in service for tests and benchmarks of the lifecycle. It waits a
//! configured time (its start-up), then listens on its port and answers every connection with
//! `HTTP/1.1 200 OK`; optionally it stops answering, or exits, after a while. For tests of
//! limits it can first take memory, and burn CPU all along. With `--notify` it says itself that
//! it is ready, with the systemd `sd_notify` protocol, instead of listening.
//!
//! ```text
//! orch-sleeper [--ready-after 500ms] [--port N | $PORT] [--healthy-for 2s] [--exit-after 1s] [--exit-code 3]
//!              [--allocate MIB] [--burn] [--notify]
//! ```
//! It prints `ready <unix ms>` when it starts listening, and ignores nothing: SIGTERM ends it.
//! `--notify` sends `READY=1` and a `STATUS=` line to the unix datagram socket `$NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract socket) once its start-up time has passed, prints
//! `ready <unix ms> (notified)`, and then only waits.
//! `--allocate` takes MIB MiB of memory and writes to every page of it (so that it is really
//! used, not only reserved), prints `allocated <MIB> MiB` and keeps it. `--burn` spins one
//! thread in a loop that never sleeps (a whole core, where nothing limits it), from the start.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().unwrap_or_else(|_| usage(&format!("bad duration {text:?}")));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        _ => usage(&format!("bad duration unit in {text:?}; use ms or s")),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("orch-sleeper: {problem}");
    eprintln!(
        "usage: orch-sleeper [--ready-after DUR] [--port N] [--healthy-for DUR] [--exit-after DUR] [--exit-code N] \
         [--allocate MIB] [--burn] [--notify]"
    );
    std::process::exit(64);
}

fn main() {
    let mut ready_after = Duration::ZERO;
    let mut port: Option<u16> = std::env::var("PORT").ok().and_then(|p| p.parse().ok());
    let mut healthy_for: Option<Duration> = None;
    let mut exit_after: Option<Duration> = None;
    let mut exit_code = 0;
    let mut allocate: Option<usize> = None;
    let mut burn = false;
    let mut notify = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--ready-after" => ready_after = duration(&value()),
            "--port" => port = Some(value().parse().unwrap_or_else(|_| usage("bad port"))),
            "--healthy-for" => healthy_for = Some(duration(&value())),
            "--exit-after" => exit_after = Some(duration(&value())),
            "--exit-code" => exit_code = value().parse().unwrap_or_else(|_| usage("bad exit code")),
            "--allocate" => allocate = Some(value().parse().unwrap_or_else(|_| usage("bad MiB count"))),
            "--burn" => burn = true,
            "--notify" => notify = true,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let started = Instant::now();
    if let Some(after) = exit_after {
        std::thread::spawn(move || {
            std::thread::sleep(after.saturating_sub(started.elapsed()));
            println!("exiting with code {exit_code}");
            std::process::exit(exit_code);
        });
    }
    if burn {
        std::thread::spawn(spin);
        println!("burning");
    }
    if let Some(mib) = allocate {
        // Kept until the process ends.
        std::mem::forget(take_memory(mib));
        println!("allocated {mib} MiB");
    }
    std::thread::sleep(ready_after);
    if notify {
        let status = format!("STATUS=ready after {} ms", ready_after.as_millis());
        if let Err(e) = sd_notify(&format!("READY=1\n{status}")) {
            eprintln!("orch-sleeper: cannot notify its readiness: {e}");
            std::process::exit(3);
        }
        println!("ready {} (notified)", unix_ms());
        loop {
            std::thread::park();
        }
    }
    let Some(port) = port else {
        println!("ready {} (no port)", unix_ms());
        loop {
            std::thread::park();
        }
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("orch-sleeper: cannot listen on port {port}: {e}");
        std::process::exit(3);
    });
    println!("ready {}", unix_ms());
    let healthy_until = healthy_for.map(|d| Instant::now() + d);
    for stream in listener.incoming() {
        if healthy_until.is_some_and(|t| Instant::now() >= t) {
            println!("no longer healthy");
            drop(listener);
            loop {
                std::thread::park();
            }
        }
        if let Ok(mut stream) = stream {
            let mut buffer = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`, as `sd_notify(3)` does.
fn sd_notify(message: &str) -> std::io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let address = std::env::var("NOTIFY_SOCKET")
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotFound, "NOTIFY_SOCKET is not set"))?;
    let to = match address.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(&address)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &to)?;
    Ok(())
}

/// `mib` MiB, each page written: memory the kernel must really give.
fn take_memory(mib: usize) -> Vec<Vec<u8>> {
    const MIB: usize = 1024 * 1024;
    (0..mib)
        .map(|_| {
            let mut chunk = Vec::<u8>::with_capacity(MIB);
            chunk.resize(MIB, 1);
            std::hint::black_box(&mut chunk);
            chunk
        })
        .collect()
}

/// Busy forever: never sleeps, never yields.
fn spin() {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}
