//! Output of supervised processes: every line of stdout and stderr, with the time and the stream,
//! appended to `<dir>/<service>.log`, rotated to `.log.1`, `.log.2`… when it grows past its size
//! limit or its first line passes its age limit, the oldest dropped (and every rotated file whose
//! newest line passed the age limit). The last lines are readable without loading whole files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Longest line kept from a service's output: a longer one is kept in pieces of this size, so a
/// process that writes without line breaks cannot hold the agent's memory.
pub const LINE_MAX: usize = 16 * 1024;

/// The next line of a service's output (without its line break), or `None` at the end. Output
/// that is not UTF-8 is kept, with U+FFFD for what cannot be read, never an error that would stop
/// the reading (and leave the process blocked on a full pipe); lines are cut at [`LINE_MAX`].
pub fn read_line<R: std::io::BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<String>> {
    buf.clear();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(buf).into_owned()));
        }
        let window = &available[..available.len().min(LINE_MAX - buf.len())];
        if let Some(end) = window.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&window[..end]);
            reader.consume(end + 1);
            return Ok(Some(String::from_utf8_lossy(buf).into_owned()));
        }
        let taken = window.len();
        buf.extend_from_slice(window);
        reader.consume(taken);
        if buf.len() >= LINE_MAX {
            return Ok(Some(String::from_utf8_lossy(buf).into_owned()));
        }
    }
}

/// Size limit of one file, how many rotated files are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
    /// Output older than this goes: the current file rotates once its first line is older, a
    /// rotated file is removed once its newest line is. `None`: kept whatever its age.
    pub max_age: Option<Duration>,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, keep: 3, max_age: None }
    }
}

impl Rotation {
    /// These settings with what a service's start asks for instead.
    pub fn with(self, service: &orch_protocol::agent::LogRetention) -> Rotation {
        Rotation {
            max_bytes: service.max_bytes.unwrap_or(self.max_bytes),
            keep: service.keep.unwrap_or(self.keep),
            max_age: service.max_age.or(self.max_age),
        }
    }
}

/// Whether the current file rotates before a line of `line_len` bytes is written to it at `now`:
/// it would pass its size limit, or its first line (written at `first`) passed the age limit. An
/// empty file never rotates (a line longer than the limit is still kept).
pub fn should_rotate(
    rotation: &Rotation,
    size: u64,
    line_len: u64,
    first: Option<SystemTime>,
    now: SystemTime,
) -> bool {
    let too_big = size + line_len > rotation.max_bytes;
    let too_old = match (rotation.max_age, first) {
        (Some(max_age), Some(first)) => now.duration_since(first).is_ok_and(|age| age >= max_age),
        _ => false,
    };
    size > 0 && (too_big || too_old)
}

/// The rotated files (with the time each was last written) that passed the age limit at `now`.
pub fn expired(rotation: &Rotation, rotated: &[(PathBuf, SystemTime)], now: SystemTime) -> Vec<PathBuf> {
    let Some(max_age) = rotation.max_age else { return Vec::new() };
    rotated
        .iter()
        .filter(|(_, written)| now.duration_since(*written).is_ok_and(|age| age >= max_age))
        .map(|(path, _)| path.clone())
        .collect()
}

/// The log of one service.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    /// When the first line of the current file was written (`None` while it is empty).
    first: Option<SystemTime>,
    rotation: Rotation,
}

impl RotatingLog {
    pub fn open(dir: &Path, service: &str, rotation: Rotation) -> io::Result<RotatingLog> {
        std::fs::create_dir_all(dir)?;
        let path = log_path(dir, service);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let first = if size > 0 { first_line_time(&path).or_else(|| Some(SystemTime::now())) } else { None };
        Ok(RotatingLog { path, file, size, first, rotation })
    }

    /// Appends one line: `<RFC 3339 time> <stream> <text>`.
    pub fn line(&mut self, stream: &str, text: &str) -> io::Result<()> {
        let now = SystemTime::now();
        let line = format!(
            "{} {stream} {}\n",
            chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            text.trim_end_matches(['\r', '\n'])
        );
        if should_rotate(&self.rotation, self.size, line.len() as u64, self.first, now) {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        self.first.get_or_insert(now);
        Ok(())
    }

    /// Applies the age limit at `now` to a log that may not be written to for a while: the
    /// current file rotates if its first line is too old, and the rotated files that are too old
    /// go. The shim calls it from time to time, so a quiet service's old output goes too.
    pub fn enforce_age(&mut self, now: SystemTime) -> io::Result<()> {
        if self.rotation.max_age.is_none() {
            return Ok(());
        }
        if should_rotate(&self.rotation, self.size, 0, self.first, now) {
            self.rotate()?;
        }
        let rotated: Vec<(PathBuf, SystemTime)> = (1..=self.rotation.keep)
            .map(|n| self.rotated(n))
            .filter_map(|path| std::fs::metadata(&path).and_then(|m| m.modified()).ok().map(|t| (path, t)))
            .collect();
        for path in expired(&self.rotation, &rotated, now) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.path.display()))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let rotated = |n: usize| self.rotated(n);
        let _ = std::fs::remove_file(rotated(self.rotation.keep));
        for n in (1..self.rotation.keep).rev() {
            let _ = std::fs::rename(rotated(n), rotated(n + 1));
        }
        if self.rotation.keep > 0 {
            std::fs::rename(&self.path, rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        self.first = None;
        Ok(())
    }
}

/// When the first line of the log at `path` was written, from its time stamp.
fn first_line_time(path: &Path) -> Option<SystemTime> {
    let mut start = [0u8; 64];
    let n = File::open(path).and_then(|mut f| f.read(&mut start)).ok()?;
    let text = String::from_utf8_lossy(&start[..n]);
    let time = text.split(' ').next()?;
    chrono::DateTime::parse_from_rfc3339(time).ok().map(SystemTime::from)
}

pub fn log_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.log"))
}

/// The files of a service's output, newest first: `<service>.log`, `.log.1`, `.log.2`…
pub fn retained_files(dir: &Path, service: &str) -> Vec<PathBuf> {
    let current = log_path(dir, service);
    let mut files = vec![current.clone()];
    for i in 1.. {
        let rotated = PathBuf::from(format!("{}.{i}", current.display()));
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
    files
}

/// The last `n` lines of a service's log, oldest first, reading the rotated files as needed and
/// only the end of each.
pub fn tail(dir: &Path, service: &str, n: usize) -> io::Result<Vec<String>> {
    let files = retained_files(dir, service);
    let mut lines: Vec<String> = Vec::new();
    for path in files {
        if lines.len() >= n {
            break;
        }
        let Ok(mut file) = File::open(&path) else { continue };
        let mut older = last_lines(&mut file, n - lines.len())?;
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines)
}

/// The last `n` lines of `file`, reading backwards from its end in blocks.
fn last_lines(file: &mut File, n: usize) -> io::Result<Vec<String>> {
    let len = file.metadata()?.len();
    let mut start = len;
    let block = 64 * 1024;
    // Move back until the part read holds more than n line breaks (or the whole file is read).
    loop {
        start = start.saturating_sub(block);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        if start == 0 || buf.iter().filter(|b| **b == b'\n').count() > n {
            // Bytes that are not UTF-8 show as U+FFFD instead of hiding every line.
            let mut lines: Vec<String> =
                buf.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect();
            if buf.is_empty() || buf.last() == Some(&b'\n') {
                lines.pop();
            }
            if start > 0 && !lines.is_empty() {
                lines.remove(0); // probably cut in the middle
            }
            let skip = lines.len().saturating_sub(n);
            return Ok(lines.split_off(skip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_that_is_not_utf8_or_has_no_line_breaks_is_kept_in_bounded_lines() {
        let mut output = b"plain\n\xff\xfebinary\n".to_vec();
        output.extend(std::iter::repeat_n(b'x', LINE_MAX + 10));
        output.extend_from_slice(b"\nlast without a break");
        let mut reader = std::io::BufReader::with_capacity(1000, &output[..]);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buf).unwrap() {
            lines.push(line);
        }
        assert_eq!(lines[0], "plain");
        assert_eq!(lines[1], "\u{fffd}\u{fffd}binary");
        assert_eq!(lines[2].len(), LINE_MAX, "a long line is cut");
        assert_eq!(lines[3], "x".repeat(10));
        assert_eq!(lines[4], "last without a break");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn rotates_and_tails_across_files() {
        let dir = orch_testkit::TempDir::new("logs");
        let mut log =
            RotatingLog::open(dir.path(), "web", Rotation { max_bytes: 2_000, keep: 2, max_age: None }).unwrap();
        for i in 0..200 {
            log.line("stdout", &format!("line {i}")).unwrap();
        }
        assert!(dir.path().join("web.log.1").exists());
        assert!(dir.path().join("web.log.2").exists());
        assert!(!dir.path().join("web.log.3").exists(), "only two rotated files are kept");
        let last = tail(dir.path(), "web", 50).unwrap();
        assert_eq!(last.len(), 50);
        assert!(last[0].ends_with("stdout line 150"), "{:?}", last[0]);
        assert!(last[49].ends_with("stdout line 199"));
        let size = std::fs::metadata(dir.path().join("web.log")).unwrap().len();
        assert!(size <= 2_000);
    }

    #[test]
    fn a_file_rotates_when_it_would_grow_too_big_or_its_first_line_is_too_old() {
        let rotation = Rotation { max_bytes: 100, keep: 2, max_age: Some(Duration::from_secs(60)) };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!should_rotate(&rotation, 0, 500, None, t0), "an empty file takes even a long line");
        assert!(!should_rotate(&rotation, 50, 50, Some(t0), at(59)));
        assert!(should_rotate(&rotation, 50, 51, Some(t0), at(1)), "past the size");
        assert!(should_rotate(&rotation, 10, 1, Some(t0), at(60)), "the first line is a minute old");
        assert!(!should_rotate(&Rotation { max_age: None, ..rotation }, 10, 1, Some(t0), at(1_000_000)));
        // A clock set back does not rotate.
        assert!(!should_rotate(&rotation, 10, 1, Some(at(100)), t0));
    }

    #[test]
    fn rotated_files_go_once_their_newest_line_is_too_old() {
        let rotation = Rotation { max_bytes: 100, keep: 3, max_age: Some(Duration::from_secs(3600)) };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let files = vec![
            (PathBuf::from("web.log.1"), t0 + Duration::from_secs(3000)),
            (PathBuf::from("web.log.2"), t0 + Duration::from_secs(100)),
            (PathBuf::from("web.log.3"), t0),
        ];
        let now = t0 + Duration::from_secs(3700);
        assert_eq!(expired(&rotation, &files, now), [PathBuf::from("web.log.2"), PathBuf::from("web.log.3")]);
        assert!(expired(&Rotation { max_age: None, ..rotation }, &files, now).is_empty());
    }

    #[test]
    fn age_is_enforced_on_a_quiet_log() {
        let dir = orch_testkit::TempDir::new("logs");
        let rotation = Rotation { max_bytes: 1_000_000, keep: 2, max_age: Some(Duration::from_secs(60)) };
        let mut log = RotatingLog::open(dir.path(), "quiet", rotation).unwrap();
        log.line("stdout", "old news").unwrap();
        log.enforce_age(SystemTime::now()).unwrap();
        assert!(!dir.path().join("quiet.log.1").exists(), "young output stays");
        // Two minutes later the first line is too old: the file rotates, and the rotated file,
        // whose newest line is just as old, goes.
        let later = SystemTime::now() + Duration::from_secs(120);
        log.enforce_age(later).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("quiet.log")).unwrap().len(), 0, "the current file rotated");
        assert!(!dir.path().join("quiet.log.1").exists(), "and its old output went");
        // A log opened again knows when its first line was written.
        log.line("stdout", "new").unwrap();
        let reopened = RotatingLog::open(dir.path(), "quiet", rotation).unwrap();
        let first = reopened.first.unwrap();
        assert!(SystemTime::now().duration_since(first).unwrap() < Duration::from_secs(60), "from the line's time");
    }

    #[test]
    fn tail_of_a_missing_log_is_empty() {
        let dir = orch_testkit::TempDir::new("logs");
        assert!(tail(dir.path(), "nobody", 10).unwrap().is_empty());
    }
}
