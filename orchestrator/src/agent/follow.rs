//! The agent's side of following: it watches the log files of its node (written by the shims)
//! and publishes each service's new lines in batches on `<prefix>.log.<node>.<service>`.
//!
//! Polling, every [`POLL`]: a shim writes whole lines, so a poll reads what was appended since the
//! last one and keeps an unfinished line for the next. A file that shrank or whose inode changed
//! was rotated: the rest of the old file (now `.log.1`) is read first, then the new one from its
//! start. A file already there when the agent starts is followed from its end (its lines were
//! published by an agent before, or are found by searching); one that appears later is new output
//! and is read from its start. A service that fills more than one file between two polls loses
//! the files in between from its followers (they are still found by searching).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_protocol::Subjects;
use orch_protocol::agent::{LOG_BATCH_LINES, LogBatch, LogLine};

use crate::shutdown::Shutdown;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// Most bytes read from one file at one poll: a service that writes fast is published over
/// several polls instead of holding the agent's memory.
const READ_MAX: u64 = 4 * 1024 * 1024;
/// Most bytes of line text in one batch (NATS's default payload limit is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// Where a followed file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// What to read of a log file at a poll, from where it was read up to and what it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// First seen: follow from `offset` (its end if it was there before the agent, else 0).
    Start { offset: u64 },
    /// The same file: read from `offset` to its end.
    Append { offset: u64 },
    /// It was rotated: read what is left of the old file (`.log.1`, if it still has the old
    /// inode) from `offset`, then the new file from its start.
    Rotated { old: Position },
}

/// Decides what to read of a file (pure: see the module's comment).
pub fn plan(known: Option<Position>, inode: u64, len: u64, at_start_up: bool) -> Plan {
    match known {
        None => Plan::Start { offset: if at_start_up { len } else { 0 } },
        Some(old) if old.inode != inode || len < old.offset => Plan::Rotated { old },
        Some(old) => Plan::Append { offset: old.offset },
    }
}

/// The files of one node's log directory being followed.
pub struct Follower {
    dir: PathBuf,
    node: String,
    files: HashMap<String, Followed>,
    started: bool,
}

struct Followed {
    at: Position,
    /// An unfinished line (its end not written yet).
    partial: Vec<u8>,
}

impl Follower {
    pub fn new(dir: PathBuf, node: String) -> Follower {
        Follower { dir, node, files: HashMap::new(), started: false }
    }

    /// Reads what every service's log gained since the last poll, as batches to publish.
    pub fn poll(&mut self) -> Vec<LogBatch> {
        let at_start_up = !std::mem::replace(&mut self.started, true);
        let mut batches = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return batches };
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(service) = name.strip_suffix(".log") else { continue };
            if !orch_protocol::registry::is_valid_name(service) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            seen.push(service.to_string());
            let path = entry.path();
            let followed = self.files.get_mut(service);
            let known = followed.as_ref().map(|f| f.at);
            let mut bytes = Vec::new();
            let mut partial = followed.map(|f| std::mem::take(&mut f.partial)).unwrap_or_default();
            let offset = match plan(known, meta.ino(), meta.len(), at_start_up) {
                Plan::Start { offset } | Plan::Append { offset } => offset,
                Plan::Rotated { old } => {
                    let rotated = PathBuf::from(format!("{}.1", path.display()));
                    if std::fs::metadata(&rotated).is_ok_and(|m| m.ino() == old.inode) {
                        read_from(&rotated, old.offset, u64::MAX, &mut bytes);
                    }
                    // What was left unfinished in the old file ends there.
                    bytes.splice(0..0, std::mem::take(&mut partial));
                    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
                        bytes.push(b'\n');
                    }
                    0
                }
            };
            let mut fresh = std::mem::take(&mut partial);
            let end = read_from(&path, offset, READ_MAX, &mut fresh);
            bytes.extend(fresh);
            // Keep what follows the last line break for the next poll.
            let cut = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let rest = bytes.split_off(cut);
            self.files.insert(
                service.to_string(),
                Followed { at: Position { inode: meta.ino(), offset: end }, partial: rest },
            );
            batches.extend(batch(&self.node, service, &bytes));
        }
        self.files.retain(|service, _| seen.contains(service));
        batches
    }
}

/// Appends to `out` at most `max` bytes of `path` from `offset`; returns the offset reached.
fn read_from(path: &Path, offset: u64, max: u64, out: &mut Vec<u8>) -> u64 {
    let Ok(mut file) = File::open(path) else { return offset };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let read = Read::by_ref(&mut file).take(max).read_to_end(out).unwrap_or(0);
    offset + read as u64
}

/// Whole lines (`bytes` ends with a line break, or is empty) as batches of bounded size. Lines
/// that do not read as log lines are left out.
pub fn batch(node: &str, service: &str, bytes: &[u8]) -> Vec<LogBatch> {
    let mut batches = Vec::new();
    let mut lines = Vec::new();
    let mut size = 0;
    for raw in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(line) = LogLine::parse(&String::from_utf8_lossy(raw)) else { continue };
        if !lines.is_empty() && (lines.len() >= LOG_BATCH_LINES || size + line.text.len() > BATCH_BYTES) {
            batches.push(LogBatch { node: node.into(), service: service.into(), lines: std::mem::take(&mut lines) });
            size = 0;
        }
        size += line.text.len();
        lines.push(line);
    }
    if !lines.is_empty() {
        batches.push(LogBatch { node: node.into(), service: service.into(), lines });
    }
    batches
}

/// Publishes the node's new output until `shutdown`. Core NATS: a batch nobody listens to is
/// dropped by the server, and one that cannot be sent is logged and dropped (the lines stay in
/// the files, for searches).
pub async fn run(client: async_nats::Client, subjects: Subjects, follower: Follower, mut shutdown: Shutdown) {
    let follower = std::sync::Arc::new(std::sync::Mutex::new(follower));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => break,
        }
        let polling = follower.clone();
        let Ok(batches) = tokio::task::spawn_blocking(move || polling.lock().expect("follower lock").poll()).await
        else {
            continue;
        };
        for batch in batches {
            let subject = subjects.log(&batch.node, &batch.service);
            if let Err(e) = super::service::publish_report(&client, &subject, &batch).await {
                tracing::warn!(error = %e, subject = %subject, "could not publish a service's output");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::logs::{RotatingLog, Rotation};
    use super::*;

    #[test]
    fn plans_follow_appends_and_rotations() {
        assert_eq!(plan(None, 7, 500, true), Plan::Start { offset: 500 }, "old output is not published again");
        assert_eq!(plan(None, 7, 500, false), Plan::Start { offset: 0 }, "a new file is new output");
        let at = Position { inode: 7, offset: 100 };
        assert_eq!(plan(Some(at), 7, 150, false), Plan::Append { offset: 100 });
        assert_eq!(plan(Some(at), 8, 150, false), Plan::Rotated { old: at }, "another file");
        assert_eq!(plan(Some(at), 7, 50, false), Plan::Rotated { old: at }, "it shrank");
    }

    fn texts(batches: &[LogBatch]) -> Vec<String> {
        batches.iter().flat_map(|b| b.lines.iter().map(|l| l.text.clone())).collect()
    }

    #[test]
    fn new_lines_are_read_once_across_rotations_and_unfinished_lines_wait() {
        let dir = orch_testkit::TempDir::new("follow");
        let mut log =
            RotatingLog::open(dir.path(), "web", Rotation { max_bytes: 400, keep: 2, max_age: None }).unwrap();
        log.line("stdout", "before the agent").unwrap();
        let mut follower = Follower::new(dir.path().to_path_buf(), "n1".into());
        assert!(follower.poll().is_empty(), "what was there before is not published");
        // One rotation between two polls (6 lines a file).
        for i in 0..8 {
            log.line("stdout", &format!("line {i:02} of some length to rotate")).unwrap();
        }
        assert!(dir.path().join("web.log.1").exists(), "it rotated");
        let got = texts(&follower.poll());
        let want: Vec<String> = (0..8).map(|i| format!("line {i:02} of some length to rotate")).collect();
        assert_eq!(got, want);
        // A line being written waits for its end.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join("web.log")).unwrap();
        file.write_all(b"2026-01-01T00:00:00.000Z stderr half").unwrap();
        assert!(follower.poll().is_empty());
        file.write_all(b" and done\n").unwrap();
        let batches = follower.poll();
        assert_eq!(texts(&batches), ["half and done"]);
        assert_eq!((batches[0].node.as_str(), batches[0].service.as_str()), ("n1", "web"));
        // A service that appears later is read from its start.
        let mut other = RotatingLog::open(dir.path(), "api", Rotation::default()).unwrap();
        other.line("stderr", "first words").unwrap();
        assert_eq!(texts(&follower.poll()), ["first words"]);
    }

    #[test]
    fn batches_are_bounded() {
        let text: String =
            (0..(LOG_BATCH_LINES + 3)).map(|i| format!("2026-01-01T00:00:00.000Z stdout n{i}\n")).collect();
        let batches = batch("n1", "web", text.as_bytes());
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].lines.len(), LOG_BATCH_LINES);
        assert_eq!(batches[1].lines.len(), 3);
    }
}
