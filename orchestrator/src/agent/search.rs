//! Searching what is retained of a service's output: its files are read from the newest line
//! backwards, in blocks, until enough lines matched, the time range is passed, or the scan bound is
//! reached. Which lines match is [`LogFilter`], shared with following (the orchestrator filters
//! the lines it streams the same way).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use chrono::{DateTime, Utc};
use orch_protocol::ProtocolError;
use orch_protocol::agent::{LOG_SCAN_DEFAULT, LogLine, LogStream, LogsRequest};

use super::logs::retained_files;

/// Most bytes a compiled regular expression may take: a request cannot make the agent build a
/// huge automaton.
const REGEX_SIZE_MAX: usize = 1024 * 1024;

/// What a line's text must hold.
#[derive(Debug, Clone)]
pub enum TextMatch {
    Any,
    Contains(String),
    Regex(regex::Regex),
}

/// Which lines a search or a follower keeps.
#[derive(Debug, Clone)]
pub struct LogFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub stream: Option<LogStream>,
    pub text: TextMatch,
}

impl LogFilter {
    /// Every line.
    pub fn everything() -> LogFilter {
        LogFilter { since: None, until: None, stream: None, text: TextMatch::Any }
    }

    /// The filter of a request; a regular expression that does not compile is an error naming
    /// `regex`.
    pub fn new(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        stream: Option<LogStream>,
        contains: Option<&str>,
        regex: Option<&str>,
    ) -> Result<LogFilter, ProtocolError> {
        let text = match (contains, regex) {
            (Some(_), Some(_)) => return Err(ProtocolError::invalid("regex", "give contains or regex, not both")),
            (Some(text), None) => TextMatch::Contains(text.to_string()),
            (None, Some(pattern)) => TextMatch::Regex(
                regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_MAX)
                    .build()
                    .map_err(|e| ProtocolError::invalid("regex", format!("not a regular expression: {e}")))?,
            ),
            (None, None) => TextMatch::Any,
        };
        Ok(LogFilter { since, until, stream, text })
    }

    pub fn of_request(r: &LogsRequest) -> Result<LogFilter, ProtocolError> {
        LogFilter::new(r.since, r.until, r.stream, r.contains.as_deref(), r.regex.as_deref())
    }

    pub fn is_everything(&self) -> bool {
        self.since.is_none() && self.until.is_none() && self.stream.is_none() && matches!(self.text, TextMatch::Any)
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|since| line.time >= since)
            && self.until.is_none_or(|until| line.time < until)
            && self.stream.is_none_or(|stream| line.stream == stream)
            && match &self.text {
                TextMatch::Any => true,
                TextMatch::Contains(text) => line.text.contains(text.as_str()),
                TextMatch::Regex(re) => re.is_match(&line.text),
            }
    }

    /// What to do with a raw line of a file read backwards: keep it, skip it, or stop (it is
    /// older than `since`, and so is everything before it). A line that does not read as a log
    /// line (cut by a full disk) is only kept when everything is.
    pub fn judge(&self, raw: &str) -> Verdict {
        let Some(line) = LogLine::parse(raw) else {
            return if self.is_everything() { Verdict::Keep } else { Verdict::Skip };
        };
        if self.since.is_some_and(|since| line.time < since) {
            return Verdict::Stop;
        }
        if self.matches(&line) { Verdict::Keep } else { Verdict::Skip }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Skip,
    Stop,
}

/// What a search found: lines oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    pub lines: Vec<String>,
    /// The scan bound was reached with output left unread.
    pub truncated: bool,
    pub scanned_bytes: u64,
}

/// The last `limit` lines of `service`'s retained output that `filter` keeps, oldest first,
/// reading at most `scan_bytes` bytes (default [`LOG_SCAN_DEFAULT`]).
pub fn search(
    dir: &Path,
    service: &str,
    filter: &LogFilter,
    limit: usize,
    scan_bytes: Option<u64>,
) -> io::Result<Found> {
    let bound = scan_bytes.unwrap_or(LOG_SCAN_DEFAULT);
    let mut found = Found::default();
    let files = retained_files(dir, service);
    'files: for (i, path) in files.iter().enumerate() {
        let Ok(file) = File::open(path) else { continue };
        let mut lines = Backwards::new(file, bound - found.scanned_bytes)?;
        let stop = loop {
            let Some(raw) = lines.next()? else { break false };
            let text = String::from_utf8_lossy(&raw);
            match filter.judge(&text) {
                Verdict::Keep => {
                    found.lines.push(text.into_owned());
                    if found.lines.len() >= limit {
                        break true;
                    }
                }
                Verdict::Skip => {}
                Verdict::Stop => break true,
            }
        };
        found.scanned_bytes += lines.read;
        if stop {
            break 'files;
        }
        if lines.cut {
            found.truncated = true;
            break 'files;
        }
        if found.scanned_bytes >= bound {
            found.truncated = i + 1 < files.len();
            break;
        }
    }
    found.lines.reverse();
    Ok(found)
}

/// The lines of a file from its last to its first, read in blocks from the end.
struct Backwards {
    file: File,
    /// Where the part not read yet ends.
    pos: u64,
    /// The start of the part read, which is the end of a line that began before it.
    carry: Vec<u8>,
    /// Whole lines read and not given yet, in file order.
    pending: Vec<Vec<u8>>,
    /// Bytes read so far, and most that may be.
    read: u64,
    budget: u64,
    /// The budget ran out before the start of the file.
    cut: bool,
    first_block: bool,
}

const BLOCK: u64 = 64 * 1024;
/// Longest piece kept of a line without line breaks (the shim cuts lines far shorter).
const CARRY_MAX: usize = 256 * 1024;

impl Backwards {
    fn new(file: File, budget: u64) -> io::Result<Backwards> {
        let pos = file.metadata()?.len();
        Ok(Backwards {
            file,
            pos,
            carry: Vec::new(),
            pending: Vec::new(),
            read: 0,
            budget,
            cut: false,
            first_block: true,
        })
    }

    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.pending.pop() {
                return Ok(Some(line));
            }
            if self.pos == 0 {
                return Ok((!self.carry.is_empty()).then(|| std::mem::take(&mut self.carry)));
            }
            if self.read >= self.budget {
                // The carry is the end of a line whose start was not read: not given.
                self.cut = true;
                return Ok(None);
            }
            let start = self.pos.saturating_sub(BLOCK.min(self.budget - self.read));
            self.file.seek(SeekFrom::Start(start))?;
            let mut block = Vec::with_capacity((self.pos - start) as usize);
            Read::by_ref(&mut self.file).take(self.pos - start).read_to_end(&mut block)?;
            self.read += block.len() as u64;
            self.pos = start;
            block.append(&mut self.carry);
            let mut parts: Vec<Vec<u8>> = block.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            if std::mem::take(&mut self.first_block) && parts.last().is_some_and(Vec::is_empty) {
                parts.pop(); // after the file's last line break
            }
            let mut carry = parts.remove(0);
            carry.truncate(CARRY_MAX);
            self.carry = carry;
            self.pending = parts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::logs::{RotatingLog, Rotation, log_path};
    use super::*;

    fn write(dir: &Path, service: &str, lines: &[&str]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(log_path(dir, service), text).unwrap();
    }

    fn line(time: &str, stream: &str, text: &str) -> String {
        format!("2026-01-01T00:00:{time}.000Z {stream} {text}")
    }

    #[test]
    fn a_filter_keeps_lines_by_time_stream_and_text() {
        let parsed = |t: &str, s: &str, x: &str| LogLine::parse(&line(t, s, x)).unwrap();
        let at = |t: &str| Some(format!("2026-01-01T00:00:{t}Z").parse().unwrap());
        let filter = LogFilter::new(at("10"), at("20"), Some(LogStream::Stderr), Some("boom"), None).unwrap();
        assert!(filter.matches(&parsed("10", "stderr", "a boom")));
        assert!(!filter.matches(&parsed("20", "stderr", "boom")), "until is excluded");
        assert!(!filter.matches(&parsed("15", "stdout", "boom")));
        assert!(!filter.matches(&parsed("15", "stderr", "Boom")), "text is case-sensitive");
        assert_eq!(filter.judge(&line("09", "stderr", "boom")), Verdict::Stop, "older than since");
        assert_eq!(filter.judge("not a log line"), Verdict::Skip);
        assert_eq!(LogFilter::everything().judge("not a log line"), Verdict::Keep);
        let re = LogFilter::new(None, None, None, None, Some(r"^req \d+ (GET|PUT)$")).unwrap();
        assert!(re.matches(&parsed("01", "stdout", "req 12 PUT")));
        assert!(!re.matches(&parsed("01", "stdout", "req x PUT")));
        let err = LogFilter::new(None, None, None, None, Some("(unclosed")).unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("regex"));
        let err = LogFilter::new(None, None, None, Some("a"), Some("b")).unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("regex"));
    }

    #[test]
    fn a_search_returns_the_last_matching_lines_oldest_first_across_rotated_files() {
        let dir = orch_testkit::TempDir::new("search");
        let mut log =
            RotatingLog::open(dir.path(), "web", Rotation { max_bytes: 2_000, keep: 5, max_age: None }).unwrap();
        for i in 0..300 {
            log.line(if i % 3 == 0 { "stderr" } else { "stdout" }, &format!("request {i}")).unwrap();
        }
        assert!(dir.path().join("web.log.2").exists());
        let errors = LogFilter::new(None, None, Some(LogStream::Stderr), None, None).unwrap();
        let found = search(dir.path(), "web", &errors, 5, None).unwrap();
        let texts: Vec<&str> = found.lines.iter().map(|l| l.split_once(" stderr ").unwrap().1).collect();
        assert_eq!(texts, ["request 285", "request 288", "request 291", "request 294", "request 297"]);
        assert!(!found.truncated);
        let re = LogFilter::new(None, None, None, None, Some(r"^request 2[0-9]{2}$")).unwrap();
        let all = search(dir.path(), "web", &re, 10_000, None).unwrap();
        assert!(all.lines.first().unwrap().ends_with("request 200"), "{:?}", all.lines.first());
        assert_eq!(all.lines.len(), 100);
        assert!(!all.truncated, "everything retained was read");
    }

    #[test]
    fn a_search_stops_at_its_scan_bound_and_says_so() {
        let dir = orch_testkit::TempDir::new("search");
        let lines: Vec<String> = (0..10_000).map(|i| line("01", "stdout", &format!("line {i}"))).collect();
        write(dir.path(), "big", &lines.iter().map(String::as_str).collect::<Vec<_>>());
        let found = search(
            dir.path(),
            "big",
            &LogFilter::new(None, None, None, Some("line 5"), None).unwrap(),
            100,
            Some(BLOCK),
        )
        .unwrap();
        assert!(found.truncated);
        assert_eq!(found.scanned_bytes, BLOCK);
        assert!(found.lines.iter().all(|l| l.contains("line 5")));
        // A plain tail reads only what it needs.
        let tail = search(dir.path(), "big", &LogFilter::everything(), 3, None).unwrap();
        assert!(tail.lines[2].ends_with("line 9999") && tail.lines[0].ends_with("line 9997"), "{:?}", tail.lines);
        assert!(!tail.truncated);
        assert!(search(dir.path(), "nobody", &LogFilter::everything(), 3, None).unwrap().lines.is_empty());
    }

    #[test]
    fn a_search_stops_reading_at_lines_older_than_since() {
        let dir = orch_testkit::TempDir::new("search");
        let lines: Vec<String> = (10..60).map(|s| line(&s.to_string(), "stdout", &format!("at {s}"))).collect();
        write(dir.path(), "timed", &lines.iter().map(String::as_str).collect::<Vec<_>>());
        let since = Some("2026-01-01T00:00:50Z".parse().unwrap());
        let until = Some("2026-01-01T00:00:55Z".parse().unwrap());
        let found =
            search(dir.path(), "timed", &LogFilter::new(since, until, None, None, None).unwrap(), 100, None).unwrap();
        let texts: Vec<&str> = found.lines.iter().map(|l| l.rsplit_once(' ').unwrap().1).collect();
        assert_eq!(texts, ["50", "51", "52", "53", "54"]);
    }
}
