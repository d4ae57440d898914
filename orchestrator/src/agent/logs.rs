//! Output of supervised processes: every line of stdout and stderr, with the time and the stream,
//! appended to `<dir>/<service>.log`, rotated to `.log.1`, `.log.2`… when it grows past its size
//! limit, the oldest dropped. The last lines are readable without loading whole files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// Size limit of one file and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, keep: 3 }
    }
}

/// The log of one service.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl RotatingLog {
    pub fn open(dir: &Path, service: &str, rotation: Rotation) -> io::Result<RotatingLog> {
        std::fs::create_dir_all(dir)?;
        let path = log_path(dir, service);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog { path, file, size, rotation })
    }

    /// Appends one line: `<RFC 3339 time> <stream> <text>`.
    pub fn line(&mut self, stream: &str, text: &str) -> io::Result<()> {
        let line = format!(
            "{} {stream} {}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            text.trim_end_matches(['\r', '\n'])
        );
        if self.size + line.len() as u64 > self.rotation.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let rotated = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
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
        Ok(())
    }
}

pub fn log_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.log"))
}

/// The last `n` lines of a service's log, oldest first, reading the rotated files as needed and
/// only the end of each.
pub fn tail(dir: &Path, service: &str, n: usize) -> io::Result<Vec<String>> {
    let current = log_path(dir, service);
    let mut files = vec![current.clone()];
    for i in 1.. {
        let rotated = PathBuf::from(format!("{}.{i}", current.display()));
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
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
        let mut log = RotatingLog::open(dir.path(), "web", Rotation { max_bytes: 2_000, keep: 2 }).unwrap();
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
    fn tail_of_a_missing_log_is_empty() {
        let dir = orch_testkit::TempDir::new("logs");
        assert!(tail(dir.path(), "nobody", 10).unwrap().is_empty());
    }
}
