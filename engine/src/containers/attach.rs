//! Attaching to a container's stdio (`docker attach`, and `docker run`,
//! which attaches before it starts the container). A client that attaches
//! to a container that is not running waits for its start: the start
//! connects it to the new task before the process runs, so no output is
//! lost. Also the detach keys (ctrl-p ctrl-q by default).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::logs::{self, LogOptions};
use super::{AttachGuard, Container, ContainerError, Result};
use crate::backend::{AttachInput, Attached};
use crate::Engine;

/// What an attach asked for.
#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Replay the log first.
    pub logs: bool,
    /// Follow the live output.
    pub stream: bool,
    pub detach_keys: Option<String>,
}

/// An attached client's end.
pub struct Session {
    pub tty: bool,
    /// The process's stdin, when asked for and the container has one.
    pub input: Option<mpsc::Sender<AttachInput>>,
    /// Output: (stream 1 or 2, bytes), until the process has exited.
    pub output: mpsc::Receiver<(u8, Bytes)>,
    /// Close the container's stdin when the client closes its side.
    pub stdin_once: bool,
    pub detach_keys: Vec<u8>,
    pub guard: AttachGuard,
}

/// Clients waiting for a container's next start.
#[derive(Default)]
pub struct Pending {
    waiters: Mutex<Vec<(bool, oneshot::Sender<Attached>)>>,
}

impl Pending {
    fn add(&self, stdin: bool) -> oneshot::Receiver<Attached> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((stdin, tx));
        rx
    }

    /// Connects every waiting client to the container's new task; called by
    /// start between the task's creation and its start.
    pub async fn connect(&self, engine: &Engine, id: &str) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for (stdin, tx) in waiters {
            if tx.is_closed() {
                continue;
            }
            match engine.supervisor.attach(id, "", stdin).await {
                Ok(attached) => {
                    let _ = tx.send(attached);
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "attach a waiting client"),
            }
        }
    }
}

/// Attaches to a container.
pub async fn attach(engine: &Engine, c: &Arc<Container>, opts: AttachOptions) -> Result<Session> {
    let record = c.record();
    let detach_keys = parse_detach_keys(opts.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let guard = c.attach_guard();
    let (tx, rx) = mpsc::channel(64);
    if opts.logs {
        let log_opts = LogOptions {
            stdout: opts.stdout,
            stderr: opts.stderr,
            ..Default::default()
        };
        if let Ok(mut entries) = logs::read(engine, c, log_opts) {
            while let Some(entry) = entries.recv().await {
                let _ = tx.send((entry.stream, entry.data)).await;
            }
        }
    }
    let want_stdin = opts.stdin && record.config.open_stdin;
    let mut input = None;
    if opts.stream {
        let attached = if c.status().is_running() {
            Some(
                engine
                    .supervisor
                    .attach(&c.id, "", want_stdin)
                    .await
                    .map_err(ContainerError::backend(format!("attach to {}", c.id)))?,
            )
        } else {
            None
        };
        let (attached_tx, attached_rx) = oneshot::channel::<Attached>();
        match attached {
            Some(a) => {
                let _ = attached_tx.send(a);
            }
            None => {
                let rx = c.pending.add(want_stdin);
                tokio::spawn(async move {
                    if let Ok(a) = rx.await {
                        let _ = attached_tx.send(a);
                    }
                });
            }
        }
        let (input_tx, mut input_rx) = mpsc::channel::<AttachInput>(16);
        if want_stdin {
            input = Some(input_tx);
        }
        let (stdout, stderr) = (opts.stdout, opts.stderr);
        tokio::spawn(async move {
            let Ok(attached) = attached_rx.await else {
                return;
            };
            let Attached {
                input: process_input,
                mut output,
            } = attached;
            // Stdin: from the client to the process, for as long as both last.
            if let Some(process_input) = process_input {
                tokio::spawn(async move {
                    while let Some(data) = input_rx.recv().await {
                        if process_input.send(data).await.is_err() {
                            break;
                        }
                    }
                });
            }
            while let Some(item) = output.next().await {
                let Ok((stream, data)) = item else { break };
                let stream = if stream == 2 { 2 } else { 1 };
                if (stream == 1 && !stdout) || (stream == 2 && !stderr) {
                    continue;
                }
                if tx.send((stream, data)).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(Session {
        tty: record.config.tty,
        input,
        output: rx,
        stdin_once: record.config.stdin_once,
        detach_keys,
        guard,
    })
}

/// Docker's detach keys: `ctrl-p,ctrl-q`, `a,ctrl-@`, ...
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let invalid = || ContainerError::InvalidConfig(format!("Invalid detach keys ({s}) provided"));
    let mut out = Vec::new();
    for key in s.split(',') {
        let key = key.trim();
        if let Some(c) = key.strip_prefix("ctrl-") {
            let c = c.as_bytes();
            if c.len() != 1 {
                return Err(invalid());
            }
            let b = match c[0].to_ascii_lowercase() {
                b @ b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(invalid()),
            };
            out.push(b);
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(invalid());
        }
    }
    Ok(out)
}

/// Finds the detach keys in a client's input, across reads.
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

/// What a piece of input amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// Bytes for the process (maybe none yet, while a prefix of the keys
    /// is held back).
    Data(Vec<u8>),
    /// The keys were typed: the client detaches; the bytes before them go
    /// to the process.
    Detach(Vec<u8>),
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    pub fn scan(&mut self, input: &[u8]) -> Scanned {
        if self.keys.is_empty() {
            return Scanned::Data(input.to_vec());
        }
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return Scanned::Detach(out);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        Scanned::Data(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("a,ctrl-@").unwrap(), vec![b'a', 0]);
        assert!(parse_detach_keys("ctrl-pp").is_err());
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"ab\x10"), Scanned::Data(b"ab".to_vec()));
        assert_eq!(s.scan(b"c"), Scanned::Data(b"\x10c".to_vec()));
        assert_eq!(s.scan(b"x\x10"), Scanned::Data(b"x".to_vec()));
        assert_eq!(s.scan(b"\x11rest"), Scanned::Detach(vec![]));
    }
}
