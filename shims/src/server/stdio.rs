//! The container's stdio: its output read into the log and onto the
//! attached connections, and the input queued for its stdin written out.

use std::time::SystemTime;

use nix::errno::Errno;
use tracing::{debug, warn};

use super::{proc_in, Shim, MAX_ATTACH_BACKLOG, READ_CHUNK};
use crate::logfile::Stream;
use crate::process::Key;
use crate::protocol::frame_header;

impl Shim {
    pub(super) fn read_output(&mut self, key: &Key, stream: Stream) {
        let mut buf = [0u8; READ_CHUNK];
        let Shim {
            init,
            execs,
            log,
            log_failing,
            conns,
            ..
        } = self;
        let Some(proc) = proc_in(init, execs, key) else {
            return;
        };
        for _ in 0..8 {
            let Some(idx) = proc.outputs.iter().position(|o| o.stream == stream) else {
                break;
            };
            let n = match nix::unistd::read(&proc.outputs[idx].fd, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                // EIO: a terminal whose other side is closed.
                Err(e) => {
                    if e != Errno::EIO {
                        warn!(error = %e, stream = stream.name(), "read output");
                    }
                    0
                }
            };
            let now = SystemTime::now();
            let mut write_log = |entry: &[u8]| {
                let Some(log) = log.as_mut() else {
                    return;
                };
                if let Err(e) = log.write_entry(stream, entry, now) {
                    if !*log_failing {
                        warn!(error = %e, "writing the container log failed");
                    }
                    *log_failing = true;
                }
            };
            if n == 0 {
                let mut out = proc.outputs.remove(idx);
                if proc.logged {
                    out.lines.flush(&mut write_log);
                }
                break;
            }
            let data = &buf[..n];
            if proc.logged {
                proc.outputs[idx].lines.push(data, &mut write_log);
            }
            for conn in conns.values_mut() {
                if !conn.attached_to(key) || conn.closing {
                    continue;
                }
                conn.wbuf
                    .extend_from_slice(&frame_header(stream.frame_id(), data.len()));
                conn.wbuf.extend_from_slice(data);
                if conn.wbuf.len() > MAX_ATTACH_BACKLOG {
                    warn!("an attached client does not read its output: disconnecting it");
                    conn.wbuf.clear();
                    conn.closing = true;
                }
            }
        }
        match log.as_mut().map_or(Ok(()), |log| log.flush()) {
            Ok(()) => *log_failing = false,
            Err(e) => {
                if !*log_failing {
                    warn!(error = %e, "writing the container log failed");
                }
                *log_failing = true;
            }
        }
        self.maybe_finalize(key);
    }

    pub(super) fn flush_stdin(&mut self, key: &Key) {
        let Some(proc) = proc_in(&mut self.init, &mut self.execs, key) else {
            return;
        };
        while !proc.stdin_queue.is_empty() {
            let Some(fd) = &proc.stdin else {
                // An exec'd process gets its pipe at its start: what is sent
                // before waits for it.
                if !proc.started && proc.reaped.is_none() {
                    return;
                }
                proc.stdin_queue.clear();
                break;
            };
            match nix::unistd::write(fd, &proc.stdin_queue) {
                Ok(n) => {
                    proc.stdin_queue.drain(..n);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    debug!(error = %e, "stdin closed by the process");
                    proc.stdin = None;
                    proc.stdin_queue.clear();
                }
            }
        }
        if proc.stdin_close && proc.stdin_queue.is_empty() && proc.started {
            proc.stdin = None;
        }
    }
}
