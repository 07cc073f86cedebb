//! The shim proper: creates the container, then runs one single-threaded
//! `poll(2)` loop over a signalfd (SIGCHLD: reap), the control socket, the
//! container's output and input descriptors and the client connections.
//!
//! Runtime commands (`start`, `exec`, `kill`, …) run synchronously inside
//! the loop: they take milliseconds, the kernel buffers the container's
//! output meanwhile, and no child can be reaped by the loop while the shim
//! waits for a runtime command (the loop is not running then).
//!
//! Connections that asked for `events` get each exit as it is recorded, and
//! an `oom` event each time the kernel's OOM killer acts in the container's
//! memory cgroup (see [`crate::oom`]), whose watch is one more descriptor
//! of the loop.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{umask, Mode as FileMode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::logfile::{LogFile, LogFileError, Stream};
use crate::oom::{self, OomWatch};
use crate::options::{valid_id, Options};
use crate::process::{Key, Proc};
use crate::protocol::{
    frame_header, parse_frame_header, ExitInfo, Pids, Request, Response, ShimEvent, Started,
    Status, FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_REQUEST_LEN, STDIN,
};
use crate::record::{self, RecordError};
use crate::runtime::{read_pid_file, ProcessStdio, RuntimeCli, RuntimeError};
use crate::sys::{self, Watch};
use crate::time::format_rfc3339;

/// After a process is reaped, how long its output may stay open before its
/// exit is reported anyway (a leftover process may hold the pipes).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// After `delete`/`shutdown`, how long the shim flushes answers before it exits.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Output (or events) queued for an attached (or subscribed) client that
/// does not read: past this the client is disconnected rather than the shim
/// growing without bound.
const MAX_ATTACH_BACKLOG: usize = 8 << 20;
/// Input queued for a process that does not read: past this, attached
/// clients are not read from until the process catches up.
const MAX_STDIN_QUEUE: usize = 1 << 20;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Bytes read from one descriptor per turn.
const READ_CHUNK: usize = 32 * 1024;

/// Files in the state directory.
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const INIT_PID_FILE: &str = "init.pid";
pub const RUNTIME_LOG_FILE: &str = "runtime.log";
pub const SHIM_LOG_FILE: &str = "shim.log";
const CONSOLE_SOCKET: &str = "console.sock";

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("become child subreaper: {0}")]
    Subreaper(nix::Error),
    #[error("block signals: {0}")]
    Signals(nix::Error),
    #[error("read {path}: {source}")]
    Config { path: PathBuf, source: io::Error },
    #[error("parse {path}: {source}")]
    ConfigJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("a shim is already serving {0}")]
    AlreadyServing(PathBuf),
    #[error("listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    StateFile { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Log(#[from] LogFileError),
    #[error("make the container's stdio: {0}")]
    Stdio(io::Error),
    #[error("create container {id}: {source}")]
    Create { id: String, source: RuntimeError },
    #[error("read the init's pid: {0}")]
    PidFile(io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(serde_json::Error),
    #[error("request has no \"op\" (one of {ops})", ops = Request::OPS.join(", "))]
    NoOp,
    #[error("unknown op {0:?} (one of {ops})", ops = Request::OPS.join(", "))]
    UnknownOp(String),
    #[error("bad {op} request: {source}")]
    BadFields {
        op: String,
        source: serde_json::Error,
    },
    #[error("request longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    #[error("no such exec process {0:?}")]
    NoSuchExec(String),
    #[error("exec process {0:?} already exists")]
    ExecExists(String),
    #[error("invalid exec id {0:?}: use letters, digits, '_', '-' and '.'")]
    BadExecId(String),
    #[error("resources must be a JSON object (OCI linux.resources)")]
    BadResources,
    #[error("invalid process: {0}")]
    BadProcess(&'static str),
    #[error("{what} is {status}: {why}")]
    WrongState {
        what: String,
        status: Status,
        why: &'static str,
    },
    #[error("{0} has no terminal")]
    NoTerminal(String),
    #[error("resize the terminal: {0}")]
    Resize(io::Error),
    #[error("invalid signal {0}")]
    BadSignal(i32),
    #[error("signal {what}: {source}")]
    Kill { what: String, source: nix::Error },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("unexpected output from the runtime's {command}: {detail}")]
    RuntimeOutput {
        command: &'static str,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// What a connection is doing.
enum Mode {
    /// Requests and responses; `waiting` while a `wait` is unanswered.
    Control { waiting: Option<Key> },
    /// The framed byte stream of one process.
    Attach { key: Key, stdin: bool },
    /// A stream of event lines; what the client sends is dropped.
    Events,
}

struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    mode: Mode,
    /// The client sent end of file (it may still read).
    eof: bool,
    /// Close once `wbuf` is written; read nothing more.
    closing: bool,
}

impl Conn {
    fn queue(&mut self, response: &Response) {
        // A Response of serde_json values always serializes.
        if let Ok(mut line) = serde_json::to_vec(response) {
            line.push(b'\n');
            self.wbuf.extend_from_slice(&line);
        }
    }

    fn attached_to(&self, key: &Key) -> bool {
        matches!(&self.mode, Mode::Attach { key: k, .. } if k == key)
    }

    fn queue_event(&mut self, event: &ShimEvent) {
        // A ShimEvent of strings and numbers always serializes.
        if let Ok(mut line) = serde_json::to_vec(event) {
            line.push(b'\n');
            self.wbuf.extend_from_slice(&line);
        }
    }
}

/// Sends `event` to every subscribed connection; one that has let too much
/// pile up is disconnected.
fn publish(conns: &mut HashMap<u64, Conn>, event: &ShimEvent) {
    for conn in conns.values_mut() {
        if !matches!(conn.mode, Mode::Events) || conn.closing {
            continue;
        }
        conn.queue_event(event);
        if conn.wbuf.len() > MAX_ATTACH_BACKLOG {
            warn!("an events client does not read its events: disconnecting it");
            conn.wbuf.clear();
            conn.closing = true;
        }
    }
}

/// The exit event of a process that has exited.
fn exit_event(proc: &Proc) -> Option<ShimEvent> {
    let exit = proc.exit.as_ref()?;
    Some(ShimEvent::Exit {
        exec_id: proc.exec_id.clone(),
        pid: proc.pid.unwrap_or(0),
        exit_status: exit.exit_status,
        exited_at: exit.exited_at.clone(),
    })
}

/// The exits already recorded, oldest first: what a new subscriber is
/// sent before live events.
fn past_exits(init: &Proc, execs: &HashMap<String, Proc>) -> Vec<ShimEvent> {
    let mut exited: Vec<&Proc> = std::iter::once(init)
        .chain(execs.values())
        .filter(|p| p.exit.is_some())
        .collect();
    // RFC 3339 times of one format and zone sort as strings.
    exited.sort_by(|a, b| {
        let at = |p: &Proc| p.exit.as_ref().map(|e| e.exited_at.clone());
        (at(a), &a.exec_id).cmp(&(at(b), &b.exec_id))
    });
    exited.into_iter().filter_map(exit_event).collect()
}

/// What the poll loop watches each descriptor for.
enum Token {
    Signals,
    Listener,
    Output(Key, Stream),
    Stdin(Key),
    Conn(u64),
    Oom,
}

/// How a request is answered.
enum Reply {
    Answer(Value),
    /// Answer when this process has exited.
    Wait(Key),
    Attach {
        key: Key,
        stdin: bool,
    },
    /// Answer, then stream events.
    Events,
    /// Answer, then exit.
    Exit(Value),
}

/// `init`, or the exec id, for the shim's log.
fn process_name(key: &Key) -> &str {
    key.as_deref().unwrap_or("init")
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The init or the exec'd process named by `key`.
fn proc_in<'a>(
    init: &'a mut Proc,
    execs: &'a mut HashMap<String, Proc>,
    key: &Key,
) -> Option<&'a mut Proc> {
    match key {
        None => Some(init),
        Some(exec_id) => execs.get_mut(exec_id),
    }
}

pub struct Shim {
    opts: Options,
    bundle: String,
    runtime: RuntimeCli,
    listener: Option<UnixListener>,
    signals: SignalFd,
    log: LogFile,
    log_failing: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    paused: bool,
    /// The container's memory cgroup, watched for OOM kills (none if it
    /// has no memory cgroup or the watch could not be set).
    oom: Option<OomWatch>,
    /// Set by delete and shutdown: flush the answers, then exit by then.
    exit_by: Option<Instant>,
}

impl Shim {
    /// Prepares the shim (subreaper, signals, control socket, log) and
    /// creates the container. `opts` paths must be absolute.
    pub fn start(opts: Options) -> Result<Self, ShimError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(ShimError::Subreaper)?;
        let mut mask = SigSet::empty();
        for signal in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(signal);
        }
        mask.thread_block().map_err(ShimError::Signals)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(ShimError::Signals)?;
        let terminal = read_terminal(&opts.bundle)?;
        let log = LogFile::open(&opts.log_path(), opts.log_max_size, opts.log_max_files)?;
        // Bound before the pid file is written: a second shim for the same
        // socket fails here and leaves the first one's files alone.
        let listener = bind_control(&opts.socket)?;
        let shim_pid = opts.state_dir.join(SHIM_PID_FILE);
        if let Err(source) = fs::write(&shim_pid, format!("{}\n", std::process::id())) {
            let _ = fs::remove_file(&opts.socket);
            return Err(ShimError::StateFile {
                path: shim_pid,
                source,
            });
        }
        let runtime = RuntimeCli::new(
            opts.runtime.clone(),
            opts.runtime_root.clone(),
            opts.state_dir.join(RUNTIME_LOG_FILE),
        );
        let mut shim = Shim {
            bundle: opts.bundle.to_string_lossy().into_owned(),
            runtime,
            listener: Some(listener),
            signals,
            log,
            log_failing: false,
            init: Proc::new(None, terminal, None),
            execs: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            paused: false,
            oom: None,
            exit_by: None,
            opts,
        };
        if let Err(e) = shim.create_container() {
            shim.remove_files();
            return Err(e);
        }
        Ok(shim)
    }

    fn create_container(&mut self) -> Result<(), ShimError> {
        let dir = &self.opts.state_dir;
        let pid_file = dir.join(INIT_PID_FILE);
        let (stdio, console) = if self.init.terminal {
            (ProcessStdio::null(), Some(dir.join(CONSOLE_SOCKET)))
        } else {
            let stdio = self
                .init
                .open_pipes(!self.opts.no_stdin)
                .map_err(ShimError::Stdio)?;
            (stdio, None)
        };
        let pty = self
            .runtime
            .create(
                &self.opts.bundle,
                &self.opts.id,
                &pid_file,
                console.as_deref(),
                stdio,
            )
            .map_err(|source| ShimError::Create {
                id: self.opts.id.clone(),
                source,
            })?;
        if let Some(master) = pty {
            self.init.attach_pty(master).map_err(ShimError::Stdio)?;
        }
        let pid = read_pid_file(&pid_file).map_err(ShimError::PidFile)?;
        self.init.pid = Some(pid);
        info!(pid, terminal = self.init.terminal, "container created");
        self.watch_oom(pid);
        Ok(())
    }

    /// Watches the memory cgroup of the init (`pid`) for OOM kills. The
    /// container does without if that fails.
    fn watch_oom(&mut self, pid: i32) {
        let cgroup = match oom::locate(pid) {
            Ok(Some(cgroup)) => cgroup,
            Ok(None) => {
                debug!(pid, "no memory cgroup: OOM kills are not watched");
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot find the memory cgroup: OOM kills are not watched");
                return;
            }
        };
        match OomWatch::open(cgroup) {
            Ok(watch) => {
                debug!(cgroup = %watch.cgroup().display(), "watching for OOM kills");
                self.oom = Some(watch);
            }
            Err(e) => warn!(error = %e, "OOM kills are not watched"),
        }
    }

    /// Reports the OOM kills since the last look, without blocking.
    fn check_oom(&mut self) {
        let Some(watch) = &mut self.oom else {
            return;
        };
        let found = watch.check();
        for _ in 0..found.kills {
            info!("oom");
            publish(&mut self.conns, &ShimEvent::Oom);
        }
        if found.gone {
            debug!("the memory cgroup is gone: OOM kills are no longer watched");
            self.oom = None;
        }
    }

    /// Serves until `delete` or `shutdown`; returns the exit code.
    pub fn run(mut self) -> i32 {
        loop {
            if let Some(by) = self.exit_by {
                if Instant::now() >= by || self.conns.values().all(|c| c.wbuf.is_empty()) {
                    break;
                }
            }
            // Connections told to close whose answers are all written.
            self.conns.retain(|_, c| !(c.closing && c.wbuf.is_empty()));
            let (mut watches, tokens) = self.watches();
            if let Err(e) = sys::poll(&mut watches, self.poll_timeout()) {
                warn!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            for (watch, token) in watches.iter().zip(tokens) {
                if !(watch.readable || watch.writable) {
                    continue;
                }
                match token {
                    Token::Signals => self.on_signals(),
                    Token::Listener => self.accept(),
                    Token::Output(key, stream) => self.read_output(&key, stream),
                    Token::Stdin(key) => self.flush_stdin(&key),
                    Token::Oom => self.check_oom(),
                    Token::Conn(id) => {
                        if watch.writable {
                            self.flush_conn(id);
                        }
                        if watch.readable {
                            self.read_conn(id);
                        }
                    }
                }
            }
            self.check_deadlines();
        }
        self.remove_files();
        info!("shim exiting");
        0
    }

    fn remove_files(&mut self) {
        if self.listener.take().is_some() {
            let _ = fs::remove_file(&self.opts.socket);
        }
        let _ = fs::remove_file(self.opts.state_dir.join(SHIM_PID_FILE));
    }

    fn procs(&self) -> impl Iterator<Item = (Key, &Proc)> {
        std::iter::once((None, &self.init)).chain(
            self.execs
                .iter()
                .map(|(exec_id, p)| (Some(exec_id.clone()), p)),
        )
    }

    fn watches(&self) -> (Vec<Watch>, Vec<Token>) {
        let mut watches = vec![Watch::new(self.signals.as_fd().as_raw_fd(), true, false)];
        let mut tokens = vec![Token::Signals];
        if let Some(listener) = &self.listener {
            watches.push(Watch::new(listener.as_raw_fd(), true, false));
            tokens.push(Token::Listener);
        }
        if let Some(oom) = &self.oom {
            watches.push(Watch::new(oom.fd().as_raw_fd(), true, false));
            tokens.push(Token::Oom);
        }
        for (key, proc) in self.procs() {
            for out in &proc.outputs {
                watches.push(Watch::new(out.fd.as_raw_fd(), true, false));
                tokens.push(Token::Output(key.clone(), out.stream));
            }
            if let (Some(fd), false) = (&proc.stdin, proc.stdin_queue.is_empty()) {
                watches.push(Watch::new(fd.as_raw_fd(), false, true));
                tokens.push(Token::Stdin(key));
            }
        }
        for (id, conn) in &self.conns {
            // A whole frame of the largest size must fit (a request line
            // past MAX_REQUEST_LEN is refused once read).
            let read = !conn.eof
                && !conn.closing
                && conn.rbuf.len() < FRAME_HEADER_LEN + MAX_FRAME_LEN
                && match &conn.mode {
                    Mode::Control { .. } | Mode::Events => true,
                    Mode::Attach { key, .. } => self
                        .procs()
                        .find(|(k, _)| k == key)
                        .is_none_or(|(_, p)| p.stdin_queue.len() < MAX_STDIN_QUEUE),
                };
            let write = !conn.wbuf.is_empty();
            if read || write {
                watches.push(Watch::new(conn.stream.as_raw_fd(), read, write));
                tokens.push(Token::Conn(*id));
            }
        }
        (watches, tokens)
    }

    fn poll_timeout(&self) -> i32 {
        let deadlines = self
            .procs()
            .filter_map(|(_, p)| p.drain_deadline)
            .chain(self.exit_by);
        match deadlines.min() {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up so the deadline has passed when poll returns.
                i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
            }
        }
    }

    // -----------------------------------------------------------------
    // Children

    fn on_signals(&mut self) {
        let mut child = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    if info.ssi_signo == Signal::SIGCHLD as u32 {
                        child = true;
                    } else {
                        info!(signal = info.ssi_signo, "ignoring signal");
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "read signalfd");
                    break;
                }
            }
        }
        if child {
            self.reap();
        }
    }

    /// Collects every exited child.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.on_exit(pid.as_raw(), 128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => {
                    warn!(error = %e, "waitpid");
                    break;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: i32, status: i32) {
        let key: Key = if self.init.pid == Some(pid) && self.init.reaped.is_none() {
            None
        } else {
            match self
                .execs
                .iter()
                .find(|(_, p)| p.pid == Some(pid) && p.reaped.is_none())
            {
                Some((exec_id, _)) => Some(exec_id.clone()),
                None => {
                    debug!(pid, status, "reaped a process of the container");
                    return;
                }
            }
        };
        let Some(proc) = proc_in(&mut self.init, &mut self.execs, &key) else {
            return;
        };
        proc.reaped = Some((status, SystemTime::now()));
        proc.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
        let streams: Vec<Stream> = proc.outputs.iter().map(|o| o.stream).collect();
        if key.is_none() {
            self.paused = false;
        }
        debug!(pid, status, process = process_name(&key), "reaped");
        for stream in streams {
            self.read_output(&key, stream);
        }
        self.maybe_finalize(&key);
    }

    fn maybe_finalize(&mut self, key: &Key) {
        let Some(proc) = proc_in(&mut self.init, &mut self.execs, key) else {
            return;
        };
        let due = proc.drain_deadline.is_some_and(|d| Instant::now() >= d);
        if proc.reaped.is_some() && proc.exit.is_none() && (proc.outputs.is_empty() || due) {
            self.finalize(key);
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .procs()
            .filter(|(_, p)| p.drain_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k)
            .collect();
        for key in due {
            self.maybe_finalize(&key);
        }
    }

    /// Records the exit durably, then reports it: answers the waiters, ends
    /// the attached streams and sends the exit event.
    fn finalize(&mut self, key: &Key) {
        if key.is_none() {
            // An OOM kill that ended the init is reported before its exit.
            self.check_oom();
        }
        let state_dir = self.opts.state_dir.clone();
        let Some(proc) = proc_in(&mut self.init, &mut self.execs, key) else {
            return;
        };
        let Some((status, at)) = proc.reaped else {
            return;
        };
        if proc.exit.is_some() {
            return;
        }
        let exit = ExitInfo {
            exit_status: status,
            exited_at: format_rfc3339(at),
        };
        let path = record::exit_file(&state_dir, proc.exec_id.as_deref());
        if let Err(e) = record::write_exit(&path, &exit) {
            warn!(error = %e, "recording the exit failed");
        }
        proc.exit = Some(exit.clone());
        proc.stdin = None;
        proc.stdin_queue.clear();
        proc.drain_deadline = None;
        // Nothing to resize any more; output still open keeps its own copy.
        proc.pty = None;
        info!(process = process_name(key), status, "process exited");
        if let Some(event) = exit_event(proc) {
            publish(&mut self.conns, &event);
        }
        let mut waiting = Vec::new();
        for (id, conn) in self.conns.iter_mut() {
            match &conn.mode {
                Mode::Control { waiting: Some(k) } if k == key => {
                    conn.queue(&Response::Ok(to_value(&exit)));
                    conn.mode = Mode::Control { waiting: None };
                    waiting.push(*id);
                }
                Mode::Attach { key: k, .. } if k == key => conn.closing = true,
                _ => {}
            }
        }
        for id in waiting {
            self.process_requests(id);
        }
    }

    // -----------------------------------------------------------------
    // The container's stdio

    fn read_output(&mut self, key: &Key, stream: Stream) {
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
        match log.flush() {
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

    fn flush_stdin(&mut self, key: &Key) {
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

    // -----------------------------------------------------------------
    // Connections

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        warn!("too many connections: refusing one");
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!(error = %e, "set a connection non-blocking");
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            mode: Mode::Control { waiting: None },
                            eof: false,
                            closing: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accept");
                    break;
                }
            }
        }
    }

    fn read_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; READ_CHUNK];
        match conn.stream.read(&mut buf) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.rbuf.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(e) => {
                debug!(error = %e, "connection failed");
                self.conns.remove(&id);
                return;
            }
        }
        match conn.mode {
            Mode::Control { .. } => self.process_requests(id),
            Mode::Attach { .. } => self.process_frames(id),
            Mode::Events => {
                conn.rbuf.clear();
                if conn.eof {
                    conn.closing = true;
                }
            }
        }
        self.flush_conn(id);
    }

    fn flush_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        while !conn.wbuf.is_empty() {
            match conn.stream.write(&conn.wbuf) {
                Ok(0) => {
                    self.conns.remove(&id);
                    return;
                }
                Ok(n) => {
                    conn.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "client went away");
                    self.conns.remove(&id);
                    return;
                }
            }
        }
        if conn.wbuf.is_empty() && conn.closing {
            self.conns.remove(&id);
        }
    }

    /// Handles the complete request lines a control connection has sent,
    /// in order, until one has to wait.
    fn process_requests(&mut self, id: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.closing || !matches!(conn.mode, Mode::Control { waiting: None }) {
                break;
            }
            let line: Vec<u8> = match conn.rbuf.iter().position(|b| *b == b'\n') {
                Some(nl) => conn.rbuf.drain(..=nl).collect(),
                None if conn.rbuf.len() > MAX_REQUEST_LEN => {
                    conn.queue(&Response::Error(RequestError::TooLong.to_string()));
                    conn.rbuf.clear();
                    conn.closing = true;
                    break;
                }
                // A last request without a newline still counts.
                None if conn.eof && !conn.rbuf.iter().all(u8::is_ascii_whitespace) => {
                    std::mem::take(&mut conn.rbuf)
                }
                None => {
                    if conn.eof {
                        conn.closing = true;
                    }
                    break;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let reply = self.handle_line(&line);
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match reply {
                Ok(Reply::Answer(value)) => conn.queue(&Response::Ok(value)),
                Err(e) => {
                    debug!(error = %e, "request refused");
                    conn.queue(&Response::Error(e.to_string()));
                }
                Ok(Reply::Wait(key)) => conn.mode = Mode::Control { waiting: Some(key) },
                Ok(Reply::Attach { key, stdin }) => {
                    conn.queue(&Response::Ok(json!({})));
                    let ended = proc_in(&mut self.init, &mut self.execs, &key)
                        .is_none_or(|p| p.exit.is_some());
                    conn.mode = Mode::Attach { key, stdin };
                    if ended {
                        conn.closing = true;
                    }
                    self.process_frames(id);
                    break;
                }
                Ok(Reply::Events) => {
                    conn.queue(&Response::Ok(json!({})));
                    conn.mode = Mode::Events;
                    conn.rbuf.clear();
                    if conn.eof {
                        conn.closing = true;
                    }
                    for event in past_exits(&self.init, &self.execs) {
                        conn.queue_event(&event);
                    }
                    break;
                }
                Ok(Reply::Exit(value)) => {
                    conn.queue(&Response::Ok(value));
                    conn.closing = true;
                    self.begin_exit();
                    break;
                }
            }
        }
        self.flush_conn(id);
    }

    /// Handles the stdin frames an attached client has sent.
    fn process_frames(&mut self, id: u64) {
        let Shim {
            init, execs, conns, ..
        } = self;
        let Some(conn) = conns.get_mut(&id) else {
            return;
        };
        let Mode::Attach { key, stdin } = &conn.mode else {
            return;
        };
        let mut proc = proc_in(init, execs, key);
        while conn.rbuf.len() >= FRAME_HEADER_LEN {
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(&conn.rbuf[..FRAME_HEADER_LEN]);
            let (stream, len) = parse_frame_header(&header);
            if len > MAX_FRAME_LEN {
                debug!(
                    len,
                    "attached client sent an oversized frame: disconnecting it"
                );
                conn.closing = true;
                conn.rbuf.clear();
                break;
            }
            if conn.rbuf.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame: Vec<u8> = conn.rbuf.drain(..FRAME_HEADER_LEN + len).collect();
            let (true, STDIN, Some(proc)) = (*stdin, stream, proc.as_deref_mut()) else {
                continue;
            };
            if len == 0 {
                proc.request_close_stdin();
            } else if !proc.stdin_close && proc.exit.is_none() {
                proc.stdin_queue
                    .extend_from_slice(&frame[FRAME_HEADER_LEN..]);
            }
        }
        let key = key.clone();
        self.flush_stdin(&key);
    }

    fn begin_exit(&mut self) {
        self.exit_by = Some(Instant::now() + EXIT_GRACE);
        // No new clients: the socket disappears now.
        if self.listener.take().is_some() {
            let _ = fs::remove_file(&self.opts.socket);
        }
    }

    // -----------------------------------------------------------------
    // Requests

    fn handle_line(&mut self, line: &[u8]) -> Result<Reply, RequestError> {
        let value: Value = serde_json::from_slice(line).map_err(RequestError::Malformed)?;
        let op = value
            .get("op")
            .and_then(Value::as_str)
            .ok_or(RequestError::NoOp)?;
        if !Request::OPS.contains(&op) {
            return Err(RequestError::UnknownOp(op.to_owned()));
        }
        let op = op.to_owned();
        let request: Request = serde_json::from_value(value)
            .map_err(|source| RequestError::BadFields { op, source })?;
        debug!(?request, "request");
        self.handle(request)
    }

    fn handle(&mut self, request: Request) -> Result<Reply, RequestError> {
        let id = self.opts.id.clone();
        match request {
            Request::State { exec_id } => {
                let proc = self.proc(exec_id.as_deref())?;
                let state = proc.state(&id, &self.bundle, self.paused);
                Ok(Reply::Answer(to_value(&state)))
            }
            Request::Start => self.start_init(),
            Request::Kill {
                signal,
                all,
                exec_id,
            } => self.kill(signal, all, exec_id.as_deref()),
            Request::Exec {
                exec_id,
                process,
                terminal,
            } => self.exec(exec_id, process, terminal),
            Request::StartExec { exec_id } => self.start_exec(exec_id),
            Request::Resize {
                exec_id,
                width,
                height,
            } => {
                let proc = self.proc_mut(exec_id.as_deref())?;
                let what = proc.describe(&id);
                if !proc.terminal {
                    return Err(RequestError::NoTerminal(what));
                }
                match &proc.pty {
                    Some(master) => sys::set_winsize(master.as_fd(), width, height)
                        .map_err(RequestError::Resize)?,
                    None => proc.winsize = Some((width, height)),
                }
                Ok(Reply::Answer(json!({})))
            }
            Request::CloseStdin { exec_id } => {
                let key: Key = exec_id;
                let proc = self.proc_mut(key.as_deref())?;
                proc.request_close_stdin();
                self.flush_stdin(&key);
                Ok(Reply::Answer(json!({})))
            }
            Request::Pids => {
                let out = self.runtime.run(&["ps", "--format", "json", &id])?;
                let pids: Vec<i32> =
                    serde_json::from_slice(&out).map_err(|e| RequestError::RuntimeOutput {
                        command: "ps",
                        detail: e.to_string(),
                    })?;
                Ok(Reply::Answer(to_value(&Pids { pids })))
            }
            Request::Stats => {
                let out = self.runtime.run(&["events", "--stats", &id])?;
                let text = String::from_utf8_lossy(&out);
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                let stats = last
                    .and_then(|l| serde_json::from_str::<Value>(l).ok())
                    .ok_or_else(|| RequestError::RuntimeOutput {
                        command: "events --stats",
                        detail: format!("not JSON: {text:?}"),
                    })?;
                Ok(Reply::Answer(stats))
            }
            Request::Pause => {
                self.require_init(Status::Running, "cannot pause")?;
                self.runtime.run(&["pause", &id])?;
                self.paused = true;
                info!("container paused");
                Ok(Reply::Answer(json!({})))
            }
            Request::Resume => {
                self.require_init(Status::Paused, "cannot resume")?;
                self.runtime.run(&["resume", &id])?;
                self.paused = false;
                info!("container resumed");
                Ok(Reply::Answer(json!({})))
            }
            Request::Update { resources } => {
                if !resources.is_object() {
                    return Err(RequestError::BadResources);
                }
                if !self.init.alive() {
                    return Err(RequestError::WrongState {
                        what: format!("container {id}"),
                        status: Status::Stopped,
                        why: "cannot update",
                    });
                }
                let path = self.opts.state_dir.join("update-resources.json");
                let data = serde_json::to_vec(&resources).unwrap_or_default();
                fs::write(&path, data).map_err(|source| RequestError::Io {
                    what: format!("write {}", path.display()),
                    source,
                })?;
                let file = path.to_string_lossy().into_owned();
                let result = self.runtime.run(&["update", "--resources", &file, &id]);
                let _ = fs::remove_file(&path);
                result?;
                info!("resources updated");
                Ok(Reply::Answer(json!({})))
            }
            Request::Wait { exec_id } => {
                let proc = self.proc(exec_id.as_deref())?;
                match &proc.exit {
                    Some(exit) => Ok(Reply::Answer(to_value(exit))),
                    None => Ok(Reply::Wait(exec_id)),
                }
            }
            Request::Delete {
                exec_id: Some(exec_id),
            } => {
                let proc = self.proc(Some(&exec_id))?;
                let Some(exit) = proc.exit.clone() else {
                    return Err(RequestError::WrongState {
                        what: proc.describe(&id),
                        status: proc.status(self.paused),
                        why: "cannot delete a process that has not exited",
                    });
                };
                self.execs.remove(&exec_id);
                Ok(Reply::Answer(to_value(&exit)))
            }
            Request::Delete { exec_id: None } => {
                let status = self.init.status(self.paused);
                if self.init.started && self.init.alive() {
                    return Err(RequestError::WrongState {
                        what: format!("container {id}"),
                        status,
                        why: "cannot delete: kill it first",
                    });
                }
                self.destroy_container()?;
                let exit = self.init.exit.clone().unwrap_or(ExitInfo {
                    exit_status: 255,
                    exited_at: format_rfc3339(SystemTime::now()),
                });
                Ok(Reply::Exit(to_value(&exit)))
            }
            Request::Shutdown { force } => {
                if self.init.alive() && !force {
                    return Err(RequestError::WrongState {
                        what: format!("container {id}"),
                        status: self.init.status(self.paused),
                        why: "cannot shut down while it runs (delete it, or shut down with force)",
                    });
                }
                self.destroy_container()?;
                Ok(Reply::Exit(json!({})))
            }
            Request::Attach { exec_id, stdin } => {
                self.proc(exec_id.as_deref())?;
                Ok(Reply::Attach {
                    key: exec_id,
                    stdin,
                })
            }
            Request::Events => Ok(Reply::Events),
        }
    }

    fn proc(&self, exec_id: Option<&str>) -> Result<&Proc, RequestError> {
        match exec_id {
            None => Ok(&self.init),
            Some(exec_id) => self
                .execs
                .get(exec_id)
                .ok_or_else(|| RequestError::NoSuchExec(exec_id.to_owned())),
        }
    }

    fn proc_mut(&mut self, exec_id: Option<&str>) -> Result<&mut Proc, RequestError> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(exec_id) => self
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| RequestError::NoSuchExec(exec_id.to_owned())),
        }
    }

    fn require_init(&self, want: Status, why: &'static str) -> Result<(), RequestError> {
        let status = self.init.status(self.paused);
        if status == want && self.init.alive() {
            return Ok(());
        }
        Err(RequestError::WrongState {
            what: format!("container {}", self.opts.id),
            status: if self.init.alive() {
                status
            } else {
                Status::Stopped
            },
            why,
        })
    }

    fn start_init(&mut self) -> Result<Reply, RequestError> {
        self.require_init(Status::Created, "cannot start")?;
        self.runtime.run(&["start", &self.opts.id])?;
        self.init.started = true;
        let pid = self.init.pid.unwrap_or_default();
        info!(pid, "container started");
        // Input and a close of stdin that came before the start.
        self.flush_stdin(&None);
        Ok(Reply::Answer(to_value(&Started { pid })))
    }

    fn kill(
        &mut self,
        signal: i32,
        all: bool,
        exec_id: Option<&str>,
    ) -> Result<Reply, RequestError> {
        let sig = Signal::try_from(signal).map_err(|_| RequestError::BadSignal(signal))?;
        let proc = self.proc(exec_id)?;
        let what = proc.describe(&self.opts.id);
        if !proc.alive() {
            let status = proc.status(self.paused);
            return Err(RequestError::WrongState {
                what,
                status: if proc.exit.is_some() || proc.reaped.is_some() {
                    Status::Stopped
                } else {
                    status
                },
                why: "not running",
            });
        }
        match (exec_id, proc.pid) {
            (None, _) => {
                let number = signal.to_string();
                let mut args = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.extend([self.opts.id.as_str(), number.as_str()]);
                self.runtime.run(&args)?;
            }
            // The shim reaps its children, so the pid is this process's
            // until the shim collects it: no re-use race.
            (Some(_), Some(pid)) => kill(Pid::from_raw(pid), sig)
                .map_err(|source| RequestError::Kill { what, source })?,
            (Some(_), None) => {}
        }
        info!(signal, all, exec_id, "signalled");
        Ok(Reply::Answer(json!({})))
    }

    fn check_can_exec(&self) -> Result<(), RequestError> {
        let status = self.init.status(self.paused);
        match status {
            Status::Created | Status::Running if self.init.alive() => Ok(()),
            Status::Paused => Err(RequestError::WrongState {
                what: format!("container {}", self.opts.id),
                status,
                why: "cannot exec",
            }),
            _ => Err(RequestError::WrongState {
                what: format!("container {}", self.opts.id),
                status: Status::Stopped,
                why: "cannot exec",
            }),
        }
    }

    fn exec(
        &mut self,
        exec_id: String,
        mut process: Value,
        terminal: bool,
    ) -> Result<Reply, RequestError> {
        if !valid_id(&exec_id) || exec_id.len() > 128 {
            return Err(RequestError::BadExecId(exec_id));
        }
        if self.execs.contains_key(&exec_id) {
            return Err(RequestError::ExecExists(exec_id));
        }
        self.check_can_exec()?;
        let Some(object) = process.as_object_mut() else {
            return Err(RequestError::BadProcess("process must be a JSON object"));
        };
        let args_ok = object
            .get("args")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
        if !args_ok {
            return Err(RequestError::BadProcess(
                "process.args must be a non-empty array of strings",
            ));
        }
        object.insert("terminal".into(), Value::Bool(terminal));
        let proc = Proc::new(Some(exec_id.clone()), terminal, Some(process));
        self.execs.insert(exec_id, proc);
        Ok(Reply::Answer(json!({})))
    }

    fn start_exec(&mut self, exec_id: String) -> Result<Reply, RequestError> {
        self.check_can_exec()?;
        let dir = self.opts.state_dir.clone();
        let id = self.opts.id.clone();
        let proc = self
            .execs
            .get_mut(&exec_id)
            .ok_or_else(|| RequestError::NoSuchExec(exec_id.clone()))?;
        if proc.started || proc.reaped.is_some() {
            return Err(RequestError::WrongState {
                what: proc.describe(&id),
                status: proc.status(self.paused),
                why: "cannot start it again",
            });
        }
        let process_file = dir.join(format!("exec-{exec_id}.process.json"));
        let pid_file = dir.join(format!("exec-{exec_id}.pid"));
        // A size asked for before the start must hold when the process
        // starts: the runtime applies consoleSize before it execs.
        if let (Some((width, height)), Some(spec)) = (proc.winsize, proc.spec.as_mut()) {
            spec["consoleSize"] = json!({"height": height, "width": width});
        }
        let spec = serde_json::to_vec(&proc.spec).unwrap_or_default();
        fs::write(&process_file, spec).map_err(|source| RequestError::Io {
            what: format!("write {}", process_file.display()),
            source,
        })?;
        let close_stdin = std::mem::take(&mut proc.stdin_close);
        let stdio_err = |source| RequestError::Io {
            what: "make the process's stdio".into(),
            source,
        };
        let (stdio, console) = if proc.terminal {
            (ProcessStdio::null(), Some(dir.join(CONSOLE_SOCKET)))
        } else {
            (proc.open_pipes(true).map_err(stdio_err)?, None)
        };
        let result = self
            .runtime
            .exec(&id, &process_file, &pid_file, console.as_deref(), stdio);
        let _ = fs::remove_file(&process_file);
        let pty = match result {
            Ok(pty) => pty,
            Err(e) => {
                let _ = fs::remove_file(&pid_file);
                // It never ran: report it as exited the way a shell would,
                // 127 for a missing program, else 126.
                let message = e.message();
                let status = if message.contains("no such file") || message.contains("not found") {
                    127
                } else {
                    126
                };
                proc.outputs.clear();
                proc.stdin = None;
                proc.reaped = Some((status, SystemTime::now()));
                let key = Some(exec_id);
                self.finalize(&key);
                return Err(e.into());
            }
        };
        if let Some(master) = pty {
            proc.attach_pty(master).map_err(stdio_err)?;
        }
        let pid = read_pid_file(&pid_file).map_err(|source| RequestError::Io {
            what: "read the exec'd process's pid".into(),
            source,
        })?;
        let _ = fs::remove_file(&pid_file);
        proc.pid = Some(pid);
        proc.started = true;
        if close_stdin {
            proc.request_close_stdin();
        }
        info!(exec_id, pid, "exec'd process started");
        let key = Some(exec_id);
        self.flush_stdin(&key);
        Ok(Reply::Answer(to_value(&Started { pid })))
    }

    /// `berth-runtime delete --force`, then collects the init (killed by it
    /// if it was alive) and records its exit.
    fn destroy_container(&mut self) -> Result<(), RequestError> {
        match self.runtime.run(&["delete", "--force", &self.opts.id]) {
            Ok(_) => {}
            Err(e) if e.message().contains("does not exist") => {}
            Err(e) => return Err(e.into()),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.init.alive() && Instant::now() < deadline {
            self.reap();
            if self.init.alive() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.reap();
        let reaped: Vec<Key> = self
            .procs()
            .filter(|(_, p)| p.reaped.is_some() && p.exit.is_none())
            .map(|(k, _)| k)
            .collect();
        for key in reaped {
            self.finalize(&key);
        }
        info!("container deleted");
        Ok(())
    }
}

/// Whether the bundle's config asks for a terminal.
fn read_terminal(bundle: &Path) -> Result<bool, ShimError> {
    let path = bundle.join("config.json");
    let data = fs::read(&path).map_err(|source| ShimError::Config {
        path: path.clone(),
        source,
    })?;
    let config: Value =
        serde_json::from_slice(&data).map_err(|source| ShimError::ConfigJson { path, source })?;
    Ok(config
        .pointer("/process/terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

/// Listens on the control socket, mode 0600. A stale socket file (nobody
/// listening) is replaced; a live one is an error.
fn bind_control(path: &Path) -> Result<UnixListener, ShimError> {
    let listen_err = |source| ShimError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(ShimError::AlreadyServing(path.to_path_buf()));
        }
        fs::remove_file(path).map_err(listen_err)?;
    }
    // The shim has one thread, so the umask change is seen by nothing else.
    let old = umask(FileMode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    Ok(listener)
}
