//! The shim proper: creates the container, then runs one single-threaded
//! `poll(2)` loop over a signalfd (SIGCHLD: reap), the control socket, the
//! container's output and input descriptors and the client connections.
//!
//! This module is the event loop and the container's lifecycle: what the
//! loop watches, reaping, and recording and reporting exits. The layers it
//! drives are `conn` (connections: buffering, line framing, the attach
//! and events streams), `ops` (what each request does, and why one is
//! refused) and `stdio` (the container's output and input).
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

mod conn;
mod ops;
mod stdio;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{umask, Mode as FileMode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::logfile::{LogFile, LogFileError, Stream};
use crate::oom::{self, OomWatch};
use crate::options::Options;
use crate::process::{Key, Proc};
use crate::protocol::{
    ExitInfo, Response, ShimEvent, TraceLayer, TraceSpan, FRAME_HEADER_LEN, MAX_FRAME_LEN,
};
use crate::record;
use crate::runtime::{read_pid_file, take_runtime_steps, ProcessStdio, RuntimeCli, RuntimeError};
use crate::sys::{self, Watch};
use crate::time::{format_rfc3339, now_ns};
use conn::{exit_event, publish, Conn, Mode};
pub use ops::RequestError;

/// After a process is reaped, how long its output may stay open before its
/// exit is reported anyway (a leftover process may hold the pipes).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// After `delete`/`shutdown`, how long the shim flushes answers before it exits.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Output (or events) queued for an attached (or subscribed) client that
/// does not read: past this the client is disconnected rather than the shim
/// growing without bound.
const MAX_ATTACH_BACKLOG: usize = 8 << 20;
/// Output queued for a client attached to an exec'd process past which
/// the shim stops reading that process's output until the client catches
/// up: the process then blocks on its pipe, as under `docker exec` or a
/// CRI exec, instead of its output being cut. (The container's own
/// process is never held back by a client: its log and its life go on,
/// and a client that lets [`MAX_ATTACH_BACKLOG`] pile up is dropped.)
const EXEC_ATTACH_HIGH_WATER: usize = 1 << 20;
/// Input queued for a process that does not read: past this, attached
/// clients are not read from until the process catches up.
const MAX_STDIN_QUEUE: usize = 1 << 20;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Bytes read from one descriptor per turn.
const READ_CHUNK: usize = 32 * 1024;

// Files in the state directory: private to this crate, whose clients read
// them through `client::StateDir`.
pub(crate) const SHIM_PID_FILE: &str = "shim.pid";
pub(crate) const INIT_PID_FILE: &str = "init.pid";
pub(crate) const RUNTIME_LOG_FILE: &str = "runtime.log";
pub(crate) const SHIM_LOG_FILE: &str = "shim.log";
pub(crate) const CONSOLE_SOCKET: &str = "console.sock";
/// The runtime's step timings of a traced create or start, read back and
/// removed once the command exits.
pub(crate) const RUNTIME_TRACE_FILE: &str = "runtime-trace.json";

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

/// What the poll loop watches each descriptor for.
enum Token {
    Signals,
    Listener,
    Output(Key, Stream),
    Stdin(Key),
    Conn(u64),
    Oom,
}

/// `init`, or the exec id, for the shim's log.
fn process_name(key: &Key) -> &str {
    key.as_deref().unwrap_or("init")
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
    /// The container log; none with `--no-log`.
    log: Option<LogFile>,
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
    /// The steps of a traced create (`--trace`), until a `trace` request
    /// takes them.
    trace: Vec<TraceSpan>,
}

impl Shim {
    /// Prepares the shim (subreaper, signals, control socket, log) and
    /// creates the container. `opts` paths must be absolute.
    pub fn start(opts: Options) -> Result<Self, ShimError> {
        let began = opts.trace.then(now_ns);
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
        let log = match opts.no_log {
            true => None,
            false => Some(
                LogFile::open(&opts.log_path(), opts.log_max_size, opts.log_max_files)?
                    .with_format(opts.log_format),
            ),
        };
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
        let bundle = opts.bundle.to_string_lossy().into_owned();
        let init = Proc::new(None, terminal, None);
        let mut shim = Shim::assemble(opts, bundle, runtime, Some(listener), signals, log, init);
        if let Some(began) = began {
            shim.trace_span("shim set-up (signals, socket, log, stdio)", began);
            shim.trace_runtime(true);
        }
        let created = shim.create_container();
        if let Some(began) = began {
            shim.trace_runtime(false);
            shim.trace_span("shim start-up (set-up, container created)", began);
        }
        if let Err(e) = created {
            shim.remove_files();
            return Err(e);
        }
        Ok(shim)
    }

    /// A shim with no connections, exec'd processes or events yet.
    fn assemble(
        opts: Options,
        bundle: String,
        runtime: RuntimeCli,
        listener: Option<UnixListener>,
        signals: SignalFd,
        log: Option<LogFile>,
        init: Proc,
    ) -> Shim {
        Shim {
            bundle,
            runtime,
            listener,
            signals,
            log,
            log_failing: false,
            init,
            execs: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            paused: false,
            oom: None,
            exit_by: None,
            trace: Vec::new(),
            opts,
        }
    }

    /// Records a step of the shim's own, from `start_ns` until now.
    fn trace_span(&mut self, name: &str, start_ns: u64) {
        self.trace.push(TraceSpan {
            layer: TraceLayer::Shim,
            name: name.to_string(),
            start_ns,
            end_ns: now_ns(),
        });
    }

    /// Turns the runtime's step timings on for the commands that follow,
    /// or off, taking the steps it wrote.
    fn trace_runtime(&mut self, on: bool) {
        let file = self.opts.state_dir.join(RUNTIME_TRACE_FILE);
        if on {
            self.runtime.set_trace_file(Some(file));
        } else {
            self.runtime.set_trace_file(None);
            let steps = take_runtime_steps(&file);
            self.trace.extend(steps);
        }
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
        let began = self.opts.trace.then(now_ns);
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
        if let Some(began) = began {
            self.trace_span("berth-runtime create (spawn to exit)", began);
        }
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
            let held = self.held_back(&key);
            for out in proc.outputs.iter().filter(|_| !held) {
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

    /// Whether an exec'd process's output waits for a slow attached
    /// client (see [`EXEC_ATTACH_HIGH_WATER`]).
    fn held_back(&self, key: &Key) -> bool {
        key.is_some()
            && self
                .conns
                .values()
                .any(|c| c.attached_to(key) && !c.closing && c.wbuf.len() >= EXEC_ATTACH_HIGH_WATER)
    }

    fn maybe_finalize(&mut self, key: &Key) {
        let held = self.held_back(key);
        let Some(proc) = proc_in(&mut self.init, &mut self.execs, key) else {
            return;
        };
        if held && proc.drain_deadline.is_some() {
            // Its output is still being read, at the client's pace: the
            // drain's grace starts again once the client catches up.
            proc.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
            return;
        }
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
                    conn.queue(&Response::ok(&exit));
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

#[cfg(test)]
impl Shim {
    /// A shim whose container is created (its init has a pid, it was not
    /// started), with no runtime, control socket or container behind it:
    /// for tests of what needs no root.
    fn for_tests(dir: &Path) -> Shim {
        let opts = Options::new(
            dir.join("no-such-runtime"),
            dir.join("runtime"),
            dir,
            "c1",
            dir.join("shim.sock"),
            dir,
        );
        let signals = SignalFd::with_flags(
            &SigSet::empty(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .unwrap();
        let log = Some(LogFile::open(&opts.log_path(), None, 1).unwrap());
        let runtime = RuntimeCli::new(
            opts.runtime.clone(),
            opts.runtime_root.clone(),
            dir.join(RUNTIME_LOG_FILE),
        );
        let mut init = Proc::new(None, false, None);
        init.pid = Some(999_999);
        let bundle = dir.to_string_lossy().into_owned();
        Shim::assemble(opts, bundle, runtime, None, signals, log, init)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_comes_from_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_terminal(dir.path()),
            Err(ShimError::Config { .. })
        ));
        let config = dir.path().join("config.json");
        fs::write(&config, "{").unwrap();
        assert!(matches!(
            read_terminal(dir.path()),
            Err(ShimError::ConfigJson { .. })
        ));
        fs::write(&config, r#"{"process": {"terminal": true}}"#).unwrap();
        assert!(read_terminal(dir.path()).unwrap());
        fs::write(&config, r#"{"process": {}}"#).unwrap();
        assert!(!read_terminal(dir.path()).unwrap());
    }

    #[test]
    fn a_live_control_socket_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let first = bind_control(&path).unwrap();
        assert!(matches!(
            bind_control(&path),
            Err(ShimError::AlreadyServing(_))
        ));
        // A stale socket (nobody listens) is replaced.
        drop(first);
        let _second = bind_control(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_exit_is_recorded_and_answers_the_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(server);
        conn.mode = Mode::Control {
            waiting: Some(None),
        };
        shim.conns.insert(0, conn);
        shim.init.started = true;
        shim.init.reaped = Some((137, SystemTime::now()));
        shim.maybe_finalize(&None);
        let exit = shim.init.exit.clone().unwrap();
        assert_eq!(exit.exit_status, 137);
        let recorded = crate::client::StateDir::new(dir.path())
            .recorded_exit(None)
            .unwrap();
        assert_eq!(recorded, Some(exit.clone()));
        // The waiter got its answer and may send requests again.
        assert!(matches!(
            shim.conns[&0].mode,
            Mode::Control { waiting: None }
        ));
        drop(shim);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &client, &mut text).unwrap();
        let answer: Response = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(answer, Response::ok(&exit));
    }
}
