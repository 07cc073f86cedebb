//! The operations: decoding a request line, doing what the request asks,
//! and why one is refused ([`RequestError`], whose [`RequestError::kind`]
//! goes on the wire with its message).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{debug, info};

use super::{Shim, CONSOLE_SOCKET};
use crate::options::valid_id;
use crate::process::{Key, Proc};
use crate::protocol::{
    Done, ErrorKind, ExitInfo, Pids, Request, Response, Started, Status, Traced, MAX_REQUEST_LEN,
};
use crate::record::RecordError;
use crate::runtime::{read_pid_file, ProcessStdio, RuntimeError};
use crate::sys;
use crate::time::{format_rfc3339, now_ns};

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
    #[error("the container has no log (started without one)")]
    NoLog,
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

impl RequestError {
    /// What kind of refusal this is, for the client to act on.
    pub fn kind(&self) -> ErrorKind {
        use RequestError::*;
        match self {
            Malformed(_) | NoOp | UnknownOp(_) | BadFields { .. } | TooLong => {
                ErrorKind::InvalidArgument
            }
            BadExecId(_) | BadResources | BadProcess(_) | BadSignal(_) => {
                ErrorKind::InvalidArgument
            }
            NoSuchExec(_) => ErrorKind::NotFound,
            ExecExists(_) => ErrorKind::AlreadyExists,
            // A signal to a process that is gone, and what the runtime
            // refuses ("container not running"), do not fit the state.
            WrongState { .. } | NoTerminal(_) | NoLog | Kill { .. } | Runtime(_) => {
                ErrorKind::FailedPrecondition
            }
            Resize(_) | RuntimeOutput { .. } | Io { .. } | Record(_) => ErrorKind::Internal,
        }
    }

    /// The refusal as it goes on the wire.
    pub fn response(&self) -> Response {
        Response::error(self.kind(), self.to_string())
    }
}

/// How a request is answered.
pub(super) enum Reply {
    /// At once.
    Answer(Response),
    /// When this process has exited.
    Wait(Key),
    /// At once, then the connection streams the process's stdio.
    Attach { key: Key, stdin: bool },
    /// At once, then the connection streams events.
    Events,
    /// At once, then the shim exits.
    Exit(Response),
}

impl Reply {
    pub(super) fn answer<T: Serialize>(answer: &T) -> Reply {
        Reply::Answer(Response::ok(answer))
    }

    /// The answer of a request that returns nothing.
    pub(super) fn done() -> Reply {
        Reply::answer(&Done {})
    }
}

/// Decodes one request line; what is wrong with it, if anything, as the
/// refusal names it (a missing `op` and an unknown one are told apart from
/// bad fields).
pub(super) fn decode_request(line: &[u8]) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_slice(line).map_err(RequestError::Malformed)?;
    let op = value
        .get("op")
        .and_then(Value::as_str)
        .ok_or(RequestError::NoOp)?;
    if !Request::OPS.contains(&op) {
        return Err(RequestError::UnknownOp(op.to_owned()));
    }
    let op = op.to_owned();
    serde_json::from_value(value).map_err(|source| RequestError::BadFields { op, source })
}

impl Shim {
    pub(super) fn handle_line(&mut self, line: &[u8]) -> Result<Reply, RequestError> {
        let request = decode_request(line)?;
        debug!(?request, "request");
        let began = std::time::Instant::now();
        let reply = self.handle(request);
        debug!(
            micros = began.elapsed().as_micros() as u64,
            ok = reply.is_ok(),
            "request done"
        );
        reply
    }

    pub(super) fn handle(&mut self, request: Request) -> Result<Reply, RequestError> {
        let id = self.opts.id.clone();
        match request {
            Request::State { exec_id } => {
                let proc = self.proc(exec_id.as_deref())?;
                let state = proc.state(&id, &self.bundle, self.paused);
                Ok(Reply::answer(&state))
            }
            Request::Start { trace } => self.start_init(trace),
            Request::Trace => Ok(Reply::answer(&Traced {
                spans: std::mem::take(&mut self.trace),
            })),
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
                Ok(Reply::done())
            }
            Request::CloseStdin { exec_id } => {
                let key: Key = exec_id;
                let proc = self.proc_mut(key.as_deref())?;
                proc.request_close_stdin();
                self.flush_stdin(&key);
                Ok(Reply::done())
            }
            Request::Pids => {
                let out = self.runtime.run(&["ps", "--format", "json", &id])?;
                let pids: Vec<i32> =
                    serde_json::from_slice(&out).map_err(|e| RequestError::RuntimeOutput {
                        command: "ps",
                        detail: e.to_string(),
                    })?;
                Ok(Reply::answer(&Pids { pids }))
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
                Ok(Reply::Answer(Response::Ok(stats)))
            }
            Request::Pause => {
                self.require_init(Status::Running, "cannot pause")?;
                self.runtime.run(&["pause", &id])?;
                self.paused = true;
                info!("container paused");
                Ok(Reply::done())
            }
            Request::Resume => {
                self.require_init(Status::Paused, "cannot resume")?;
                self.runtime.run(&["resume", &id])?;
                self.paused = false;
                info!("container resumed");
                Ok(Reply::done())
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
                Ok(Reply::done())
            }
            Request::Wait { exec_id } => {
                let proc = self.proc(exec_id.as_deref())?;
                match &proc.exit {
                    Some(exit) => Ok(Reply::answer(&exit)),
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
                Ok(Reply::answer(&exit))
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
                Ok(Reply::Exit(Response::ok(&exit)))
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
                Ok(Reply::Exit(Response::ok(&Done {})))
            }
            Request::Attach { exec_id, stdin } => {
                self.proc(exec_id.as_deref())?;
                Ok(Reply::Attach {
                    key: exec_id,
                    stdin,
                })
            }
            Request::Events => Ok(Reply::Events),
            Request::ReopenLog => {
                let Some(log) = self.log.as_mut() else {
                    return Err(RequestError::NoLog);
                };
                log.reopen().map_err(|e| RequestError::Io {
                    what: "reopen the container log".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                self.log_failing = false;
                info!(path = %log.path().display(), "container log reopened");
                Ok(Reply::done())
            }
        }
    }

    pub(super) fn proc(&self, exec_id: Option<&str>) -> Result<&Proc, RequestError> {
        match exec_id {
            None => Ok(&self.init),
            Some(exec_id) => self
                .execs
                .get(exec_id)
                .ok_or_else(|| RequestError::NoSuchExec(exec_id.to_owned())),
        }
    }

    pub(super) fn proc_mut(&mut self, exec_id: Option<&str>) -> Result<&mut Proc, RequestError> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(exec_id) => self
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| RequestError::NoSuchExec(exec_id.to_owned())),
        }
    }

    pub(super) fn require_init(&self, want: Status, why: &'static str) -> Result<(), RequestError> {
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

    pub(super) fn start_init(&mut self, trace: bool) -> Result<Reply, RequestError> {
        self.require_init(Status::Created, "cannot start")?;
        let began = trace.then(now_ns);
        if trace {
            // Steps of the create not taken are not this start's.
            self.trace.clear();
            self.trace_runtime(true);
        }
        let ran = self.runtime.run(&["start", &self.opts.id]);
        if let Some(began) = began {
            self.trace_runtime(false);
            self.trace_span("berth-runtime start (spawn to exit)", began);
        }
        ran?;
        self.init.started = true;
        let pid = self.init.pid.unwrap_or_default();
        info!(pid, "container started");
        // Input and a close of stdin that came before the start.
        self.flush_stdin(&None);
        let trace = std::mem::take(&mut self.trace);
        Ok(Reply::answer(&Started { pid, trace }))
    }

    pub(super) fn kill(
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
        Ok(Reply::done())
    }

    pub(super) fn check_can_exec(&self) -> Result<(), RequestError> {
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

    pub(super) fn exec(
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
        Ok(Reply::done())
    }

    pub(super) fn start_exec(&mut self, exec_id: String) -> Result<Reply, RequestError> {
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
        Ok(Reply::answer(&Started {
            pid,
            trace: Vec::new(),
        }))
    }

    /// `berth-runtime delete --force`, then collects the init (killed by it
    /// if it was alive) and records its exit.
    pub(super) fn destroy_container(&mut self) -> Result<(), RequestError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    fn refused(shim: &mut Shim, line: &str) -> (ErrorKind, String) {
        match shim.handle_line(line.as_bytes()) {
            Err(e) => (e.kind(), e.to_string()),
            Ok(_) => panic!("{line}: accepted"),
        }
    }

    fn answered(shim: &mut Shim, line: &str) -> Value {
        match shim.handle_line(line.as_bytes()) {
            Ok(Reply::Answer(Response::Ok(value))) => value,
            Ok(_) => panic!("{line}: not answered at once"),
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn bad_lines_are_invalid_arguments_named_for_what_is_wrong() {
        let cases = [
            ("{not json", "malformed request"),
            ("[1, 2]", "no \"op\""),
            (r#"{"signal": 9}"#, "no \"op\""),
            (r#"{"op": 7}"#, "no \"op\""),
            (r#"{"op": "fly"}"#, "unknown op \"fly\""),
            (
                r#"{"op": "kill"}"#,
                "bad kill request: missing field `signal`",
            ),
            (r#"{"op": "kill", "signal": "TERM"}"#, "bad kill request"),
            (
                r#"{"op": "resize", "width": -1, "height": 10}"#,
                "bad resize request",
            ),
        ];
        for (line, needle) in cases {
            let e = decode_request(line.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), InvalidArgument, "{line}");
            assert!(e.to_string().contains(needle), "{line}: {e}");
        }
        assert_eq!(decode_request(br#"{"op":"pids"}"#).unwrap(), Request::Pids);
        assert_eq!(RequestError::TooLong.kind(), InvalidArgument);
    }

    #[test]
    fn refusals_carry_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let cases = [
            (
                r#"{"op": "state", "exec_id": "nope"}"#,
                NotFound,
                "no such exec process \"nope\"",
            ),
            (r#"{"op": "wait", "exec_id": "nope"}"#, NotFound, "nope"),
            (
                r#"{"op": "start_exec", "exec_id": "nope"}"#,
                NotFound,
                "nope",
            ),
            (r#"{"op": "attach", "exec_id": "nope"}"#, NotFound, "nope"),
            (r#"{"op": "delete", "exec_id": "nope"}"#, NotFound, "nope"),
            (
                r#"{"op": "kill", "signal": 999}"#,
                InvalidArgument,
                "invalid signal 999",
            ),
            (
                r#"{"op": "resize", "width": 10, "height": 10}"#,
                FailedPrecondition,
                "has no terminal",
            ),
            (
                r#"{"op": "pause"}"#,
                FailedPrecondition,
                "is created: cannot pause",
            ),
            (r#"{"op": "resume"}"#, FailedPrecondition, "cannot resume"),
            (
                r#"{"op": "exec", "exec_id": "../x", "process": {"args": ["true"]}}"#,
                InvalidArgument,
                "invalid exec id",
            ),
            (
                r#"{"op": "exec", "exec_id": "e1", "process": {"args": []}}"#,
                InvalidArgument,
                "process.args",
            ),
            (
                r#"{"op": "exec", "exec_id": "e1", "process": "sh"}"#,
                InvalidArgument,
                "must be a JSON object",
            ),
            (
                r#"{"op": "update", "resources": [1]}"#,
                InvalidArgument,
                "resources must be a JSON object",
            ),
            (
                r#"{"op": "shutdown"}"#,
                FailedPrecondition,
                "cannot shut down while it runs",
            ),
        ];
        for (line, kind, needle) in cases {
            let (got, message) = refused(&mut shim, line);
            assert_eq!(got, kind, "{line}: {message}");
            assert!(
                message.contains(needle),
                "{line}: {message:?} lacks {needle:?}"
            );
        }
        // Nothing was changed by the refusals.
        assert!(shim.execs.is_empty());
        assert_eq!(shim.init.status(shim.paused), Status::Created);
    }

    #[test]
    fn exec_processes_are_registered_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        let exec = r#"{"op": "exec", "exec_id": "e1", "process": {"args": ["true"]}}"#;
        assert_eq!(answered(&mut shim, exec), json!({}));
        let (kind, message) = refused(&mut shim, exec);
        assert_eq!(kind, AlreadyExists, "{message}");
        assert!(message.contains("already exists"), "{message}");
        let state = answered(&mut shim, r#"{"op": "state", "exec_id": "e1"}"#);
        assert_eq!(state["status"], "created");
        assert_eq!(state["exec_id"], "e1");
        let spec = shim.execs["e1"].spec.clone().unwrap();
        assert_eq!(spec["terminal"], false);
        let (kind, message) = refused(&mut shim, r#"{"op": "delete", "exec_id": "e1"}"#);
        assert_eq!(kind, FailedPrecondition, "{message}");
        assert!(message.contains("has not exited"), "{message}");
        let (kind, message) = refused(&mut shim, r#"{"op": "kill", "signal": 9, "exec_id": "e1"}"#);
        assert_eq!(kind, FailedPrecondition, "{message}");
        // Once the container is stopped, nothing more is exec'd.
        shim.init.reaped = Some((0, SystemTime::now()));
        let (kind, message) = refused(
            &mut shim,
            r#"{"op": "exec", "exec_id": "e2", "process": {"args": ["true"]}}"#,
        );
        assert_eq!(kind, FailedPrecondition, "{message}");
        assert!(message.contains("is stopped: cannot exec"), "{message}");
    }

    #[test]
    fn waits_on_a_live_process_are_answered_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut shim = Shim::for_tests(dir.path());
        assert!(matches!(
            shim.handle_line(br#"{"op": "wait"}"#),
            Ok(Reply::Wait(None))
        ));
        shim.init.exit = Some(ExitInfo {
            exit_status: 3,
            exited_at: "2024-01-02T03:04:05.000000006Z".into(),
        });
        let exit = answered(&mut shim, r#"{"op": "wait"}"#);
        assert_eq!(exit["exit_status"], 3);
        assert!(matches!(
            shim.handle_line(br#"{"op": "events"}"#),
            Ok(Reply::Events)
        ));
        assert!(matches!(
            shim.handle_line(br#"{"op": "attach", "stdin": true}"#),
            Ok(Reply::Attach {
                key: None,
                stdin: true
            })
        ));
    }

    #[test]
    fn every_refusal_has_a_kind_on_the_wire() {
        let response = RequestError::NoSuchExec("x".into()).response();
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"error": "no such exec process \"x\"", "kind": "not_found"})
        );
        let io = RequestError::Io {
            what: "write x".into(),
            source: io::Error::other("disk full"),
        };
        assert_eq!(io.kind(), Internal);
    }
}
