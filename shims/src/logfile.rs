//! The container's output log, in Docker's `json-file` format: one JSON
//! object per line, `{"log":"hello\n","stream":"stdout","time":"…"}`. A line
//! longer than [`MAX_LINE`] is written in pieces; every piece but the last
//! lacks the trailing newline (Docker's partial messages). With a maximum
//! size the file rotates: `log.json` becomes `log.json.1`, which becomes
//! `log.json.2`, and so on, keeping `max_files` files in all (one means the
//! file is truncated instead).
//!
//! In the CRI format ([`LogFormat::Cri`], what kubelet reads) each entry is
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>`: `F` for a whole line
//! (its newline, and a carriage return before it, dropped), `P` for a
//! piece of a longer one or an unterminated last line, as containerd
//! writes them. kubelet rotates such a file itself and asks for it to be
//! reopened ([`LogFile::reopen`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::time::format_rfc3339;

/// Longest piece of a line written as one entry (Docker's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("open log file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("write log file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("rotate log file {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

/// Which output a log entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stdcopy frame stream number.
    pub fn frame_id(self) -> u8 {
        match self {
            Stream::Stdout => crate::protocol::STDOUT,
            Stream::Stderr => crate::protocol::STDERR,
        }
    }
}

/// How entries are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Docker's `json-file` lines.
    #[default]
    Json,
    /// The CRI's text lines.
    Cri,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Cri => "cri",
        }
    }

    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "json" => Some(LogFormat::Json),
            "cri" => Some(LogFormat::Cri),
            _ => None,
        }
    }
}

/// One entry in the CRI format: a whole line is `F` without its line
/// end, anything else a `P`iece.
pub fn cri_entry(stream: Stream, text: &[u8], time: SystemTime) -> Vec<u8> {
    let (tag, body) = match text.strip_suffix(b"\n") {
        Some(line) => ("F", line.strip_suffix(b"\r").unwrap_or(line)),
        None => ("P", text),
    };
    let mut line = format!("{} {} {tag} ", format_rfc3339(time), stream.name()).into_bytes();
    line.extend_from_slice(body);
    line.push(b'\n');
    line
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// Entries are collected and written together, past this size at once.
const BATCH: usize = 64 * 1024;

/// Size-bounded, rotating JSON-lines log. Entries are batched: call
/// [`LogFile::flush`] when a burst of output has been handled.
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// Size of the file with `pending` written.
    size: u64,
    pending: Vec<u8>,
    max_size: Option<u64>,
    max_files: u32,
    format: LogFormat,
}

impl LogFile {
    /// Opens (appending) or creates the log. `max_files` below 1 counts as 1.
    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32) -> Result<Self, LogFileError> {
        let open_err = |source| LogFileError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = open_append(path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            pending: Vec::new(),
            max_size: max_size.filter(|m| *m > 0),
            max_files: max_files.max(1),
            format: LogFormat::Json,
        })
    }

    /// The same log, its entries written in `format`.
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Writes what is collected and opens the path again, creating it: the
    /// file was moved away (kubelet rotated it).
    pub fn reopen(&mut self) -> Result<(), LogFileError> {
        self.flush()?;
        let err = |source| LogFileError::Open {
            path: self.path.clone(),
            source,
        };
        let file = open_append(&self.path).map_err(err)?;
        self.size = file.metadata().map_err(err)?.len();
        self.file = file;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one entry; `text` is one line (with its newline) or a piece.
    pub fn write_entry(
        &mut self,
        stream: Stream,
        text: &[u8],
        time: SystemTime,
    ) -> Result<(), LogFileError> {
        let line = match self.format {
            LogFormat::Cri => cri_entry(stream, text, time),
            LogFormat::Json => {
                let log = String::from_utf8_lossy(text);
                let time = format_rfc3339(time);
                let entry = Entry {
                    log: &log,
                    stream: stream.name(),
                    time: &time,
                };
                let mut line = serde_json::to_vec(&entry).map_err(|e| LogFileError::Write {
                    path: self.path.clone(),
                    source: io::Error::other(e),
                })?;
                line.push(b'\n');
                line
            }
        };
        if let Some(max) = self.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.pending.extend_from_slice(&line);
        self.size += line.len() as u64;
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the entries collected so far.
    pub fn flush(&mut self) -> Result<(), LogFileError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        // Entries that could not be written are dropped, not retried
        // forever (a full disk); the size follows what is on disk.
        if result.is_err() {
            self.size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        self.pending.clear();
        result.map_err(|source| LogFileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Shifts `log.json.N` up by one (dropping the oldest) and starts an
    /// empty `log.json`.
    fn rotate(&mut self) -> Result<(), LogFileError> {
        self.flush()?;
        let err = |source| LogFileError::Rotate {
            path: self.path.clone(),
            source,
        };
        if self.max_files == 1 {
            self.file.set_len(0).map_err(err)?;
            self.size = 0;
            return Ok(());
        }
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let oldest = numbered(self.max_files - 1);
        match fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        for n in (1..self.max_files - 1).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
        }
        fs::rename(&self.path, numbered(1)).map_err(err)?;
        self.file = open_append(&self.path).map_err(err)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Cuts a stream of output into log entries: whole lines, and pieces of at
/// most [`MAX_LINE`] bytes of longer ones.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds output; calls `emit` for each complete entry.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    if self.pending.is_empty() {
                        emit(&bytes[..=nl]);
                    } else {
                        self.pending.extend_from_slice(&bytes[..=nl]);
                        emit(&self.pending);
                        self.pending.clear();
                    }
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() >= MAX_LINE {
                        let cut = utf8_cut(&self.pending);
                        emit(&self.pending[..cut]);
                        self.pending.drain(..cut);
                    }
                }
            }
        }
    }

    /// Emits what is left (a last line without a newline).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Where to cut a full buffer so a UTF-8 character is not split: before a
/// trailing incomplete sequence of up to 3 bytes, if there is one.
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return len,
        };
        return if need > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            s.push(chunk, |e| out.push(e.to_vec()));
        }
        s.flush(|e| out.push(e.to_vec()));
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let out = split(&[b"a\nb", b"c\n\nd"]);
        assert_eq!(
            out,
            vec![
                b"a\n".to_vec(),
                b"bc\n".to_vec(),
                b"\n".to_vec(),
                b"d".to_vec()
            ]
        );
    }

    #[test]
    fn long_lines_come_in_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split(&[&input[..100], &input[100..]]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1].len(), MAX_LINE);
        assert_eq!(out[2], b"xxxxxxxxxx\n");
    }

    #[test]
    fn pieces_do_not_split_characters() {
        let mut input = vec![b'x'; MAX_LINE - 1];
        input.extend_from_slice("é\n".as_bytes());
        let out = split(&[&input]);
        assert_eq!(out[0].len(), MAX_LINE - 1);
        assert_eq!(out[1], "é\n".as_bytes());
    }

    #[test]
    fn entries_are_docker_json_lines_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = LogFile::open(&path, Some(200), 3).unwrap();
        for i in 0..20 {
            log.write_entry(
                Stream::Stderr,
                format!("line {i}\n").as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
        }
        log.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["stream"], "stderr");
        assert!(first["log"].as_str().unwrap().starts_with("line "));
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        for name in ["log.json", "log.json.1", "log.json.2"] {
            let size = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(size > 0 && size <= 200, "{name} is {size} bytes");
        }
        assert!(!dir.path().join("log.json.3").exists());
        let last = fs::read_to_string(&path).unwrap();
        assert!(last.contains("line 19\\n"), "{last}");
    }

    #[test]
    fn cri_entries_mark_full_and_partial_lines() {
        let t = crate::time::parse_rfc3339("2026-12-02T08:00:00.000000001Z").unwrap();
        assert_eq!(
            cri_entry(Stream::Stdout, b"hello\n", t),
            b"2026-12-02T08:00:00.000000001Z stdout F hello\n"
        );
        assert_eq!(
            cri_entry(Stream::Stderr, b"dos\r\n", t),
            b"2026-12-02T08:00:00.000000001Z stderr F dos\n"
        );
        assert_eq!(
            cri_entry(Stream::Stdout, b"piece", t),
            b"2026-12-02T08:00:00.000000001Z stdout P piece\n"
        );
        assert_eq!(
            cri_entry(Stream::Stdout, b"\n", t),
            b"2026-12-02T08:00:00.000000001Z stdout F \n"
        );
    }

    #[test]
    fn cri_logs_split_long_lines_and_reopen_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogFile::open(&path, None, 1)
            .unwrap()
            .with_format(LogFormat::Cri);
        let mut splitter = LineSplitter::default();
        let mut input = vec![b'y'; MAX_LINE + 5];
        input.extend_from_slice(b"\nshort\n");
        let mut entries = Vec::new();
        splitter.push(&input, |e| entries.push(e.to_vec()));
        for e in &entries {
            log.write_entry(Stream::Stdout, e, SystemTime::now())
                .unwrap();
        }
        log.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "F", "F"]);
        assert!(text.lines().nth(1).unwrap().ends_with(" F yyyyy"));
        assert!(text.ends_with(" stdout F short\n"));
        // kubelet moves the file away and asks for a new one.
        fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        log.reopen().unwrap();
        log.write_entry(Stream::Stderr, b"after\n", SystemTime::now())
            .unwrap();
        log.flush().unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .ends_with(" stderr F after\n"));
        assert_eq!(LogFormat::parse("cri"), Some(LogFormat::Cri));
        assert_eq!(
            LogFormat::parse(LogFormat::Json.name()),
            Some(LogFormat::Json)
        );
        assert_eq!(LogFormat::parse("text"), None);
    }

    #[test]
    fn one_file_means_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = LogFile::open(&path, Some(100), 1).unwrap();
        for _ in 0..10 {
            log.write_entry(Stream::Stdout, b"some output\n", SystemTime::now())
                .unwrap();
        }
        log.flush().unwrap();
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        assert!(!dir.path().join("log.json.1").exists());
    }
}
