//! `docker logs`: the container's json-file log, written by its shim into
//! the container's directory, read back with Docker's options (stdout,
//! stderr, since, until, tail, timestamps), and followed while the
//! container runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::record::parse_time;
use super::{Container, ContainerError, Result};
use crate::Engine;

/// How often a followed log is checked for more.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// What `docker logs` asked for.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// The last N lines only.
    pub tail: Option<usize>,
    pub follow: bool,
}

/// One piece of output: the stream (1 stdout, 2 stderr), when, the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: u8,
    pub time: String,
    pub data: Bytes,
}

#[derive(Deserialize)]
struct Line {
    log: String,
    stream: String,
    time: String,
}

/// Parses one json-file line; `None` for a line that is not one.
fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let l: Line = serde_json::from_slice(line).ok()?;
    let stream = if l.stream == "stderr" { 2 } else { 1 };
    Some(LogEntry {
        stream,
        time: l.time,
        data: Bytes::from(l.log),
    })
}

fn wanted(entry: &LogEntry, opts: &LogOptions) -> bool {
    let stream_ok = (entry.stream == 1 && opts.stdout) || (entry.stream == 2 && opts.stderr);
    if !stream_ok {
        return false;
    }
    if opts.since.is_none() && opts.until.is_none() {
        return true;
    }
    let Some(t) = parse_time(&entry.time) else {
        return true;
    };
    opts.since.is_none_or(|s| t >= s) && opts.until.is_none_or(|u| t <= u)
}

/// The log files, oldest first (`x.log.3`, `x.log.2`, `x.log.1`, `x.log`).
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if !p.exists() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// The container's log as a channel of entries.
pub fn read(
    engine: &Engine,
    c: &Arc<Container>,
    opts: LogOptions,
) -> Result<mpsc::Receiver<LogEntry>> {
    let record = c.record();
    if record.host_config.log_config.kind == "none" {
        return Err(ContainerError::LogsUnsupported);
    }
    let path = engine.paths.container_log(&c.id);
    let (tx, rx) = mpsc::channel(64);
    let c = c.clone();
    tokio::spawn(async move {
        if let Err(e) = pump(&path, &c, &opts, &tx).await {
            tracing::debug!(container = %c.id, error = %e, "read the log");
        }
    });
    Ok(rx)
}

async fn pump(
    path: &Path,
    c: &Container,
    opts: &LogOptions,
    tx: &mpsc::Sender<LogEntry>,
) -> std::io::Result<()> {
    // Whether the container ran when we began: a follow of a stopped one
    // ends at the end of the log.
    let mut entries = Vec::new();
    for file in log_files(path) {
        let bytes = match tokio::fs::read(&file).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        entries.extend(
            bytes
                .split(|&b| b == b'\n')
                .filter_map(parse_line)
                .filter(|e| wanted(e, opts)),
        );
    }
    let skip = match opts.tail {
        Some(n) => entries.len().saturating_sub(n),
        None => 0,
    };
    for entry in entries.into_iter().skip(skip) {
        if tx.send(entry).await.is_err() {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
    follow(path, c, opts, tx).await
}

/// Sends what is appended to the log until the container stops.
async fn follow(
    path: &Path,
    c: &Container,
    opts: &LogOptions,
    tx: &mpsc::Sender<LogEntry>,
) -> std::io::Result<()> {
    let mut offset = tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut pending: Vec<u8> = Vec::new();
    let mut rx = c.watch();
    loop {
        let running = c.status().is_running();
        let len = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if len < offset {
            // Rotated: the new file from its start.
            offset = 0;
            pending.clear();
        }
        if len > offset {
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = Vec::with_capacity((len - offset) as usize);
            file.take(len - offset).read_to_end(&mut buf).await?;
            offset += buf.len() as u64;
            pending.extend_from_slice(&buf);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if let Some(entry) = parse_line(&line[..line.len() - 1]).filter(|e| wanted(e, opts))
                {
                    if tx.send(entry).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if !running {
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(());
        }
        let _ = tokio::time::timeout(FOLLOW_POLL, rx.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_filters() {
        let e = parse_line(br#"{"log":"hi\n","stream":"stderr","time":"2024-01-01T00:00:00.5Z"}"#)
            .unwrap();
        assert_eq!(e.stream, 2);
        assert_eq!(&e.data[..], b"hi\n");
        let opts = LogOptions {
            stdout: true,
            stderr: false,
            ..Default::default()
        };
        assert!(!wanted(&e, &opts));
        let opts = LogOptions {
            stderr: true,
            since: parse_time("2024-01-01T00:00:01Z"),
            ..Default::default()
        };
        assert!(!wanted(&e, &opts));
        assert!(parse_line(b"garbage").is_none());
    }
}
