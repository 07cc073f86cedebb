//! The processes a shim keeps: the container's init and its exec'd
//! processes, each with its stdio ends, its terminal and how it ended.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::{Instant, SystemTime};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use serde_json::Value;

use crate::logfile::{LineSplitter, Stream};
use crate::protocol::{ExitInfo, ProcessState, Status};
use crate::runtime::ProcessStdio;

/// Which process: `None` is the init, `Some(exec_id)` an exec'd one.
pub type Key = Option<String>;

/// The read end of one of a process's outputs.
pub struct Output {
    pub stream: Stream,
    pub fd: OwnedFd,
    /// Cuts the output into log entries (the init's only).
    pub lines: LineSplitter,
}

/// One process of the container.
pub struct Proc {
    pub exec_id: Option<String>,
    pub terminal: bool,
    /// An exec'd process's OCI `process` object (with `terminal` set).
    pub spec: Option<Value>,
    pub pid: Option<i32>,
    /// `start` (or `start_exec`) succeeded.
    pub started: bool,
    /// Output ends still open (end of file not seen yet).
    pub outputs: Vec<Output>,
    /// Where stdin goes: the pipe's write end, or a copy of the pty master.
    pub stdin: Option<OwnedFd>,
    /// Input received and not yet written.
    pub stdin_queue: Vec<u8>,
    /// Close stdin once the queue is written.
    pub stdin_close: bool,
    /// The pty master, for resizes.
    pub pty: Option<OwnedFd>,
    /// A size asked for before the terminal existed.
    pub winsize: Option<(u16, u16)>,
    /// Status and time when the shim reaped it.
    pub reaped: Option<(i32, SystemTime)>,
    /// After reaping: report the exit by then even if output is still open.
    pub drain_deadline: Option<Instant>,
    /// The exit as reported and recorded.
    pub exit: Option<ExitInfo>,
    /// Output goes to the container log (the init's does).
    pub logged: bool,
}

impl Proc {
    pub fn new(exec_id: Option<String>, terminal: bool, spec: Option<Value>) -> Self {
        Proc {
            logged: exec_id.is_none(),
            exec_id,
            terminal,
            spec,
            pid: None,
            started: false,
            outputs: Vec::new(),
            stdin: None,
            stdin_queue: Vec::new(),
            stdin_close: false,
            pty: None,
            winsize: None,
            reaped: None,
            drain_deadline: None,
            exit: None,
        }
    }

    /// Alive as far as the shim knows: has a pid and was not reaped.
    pub fn alive(&self) -> bool {
        self.pid.is_some() && self.reaped.is_none()
    }

    pub fn status(&self, container_paused: bool) -> Status {
        if self.exit.is_some() {
            Status::Stopped
        } else if !self.started {
            Status::Created
        } else if container_paused {
            Status::Paused
        } else {
            Status::Running
        }
    }

    pub fn state(&self, id: &str, bundle: &str, container_paused: bool) -> ProcessState {
        ProcessState {
            id: id.to_owned(),
            exec_id: self.exec_id.clone(),
            bundle: bundle.to_owned(),
            pid: self.pid,
            status: self.status(container_paused),
            terminal: self.terminal,
            exit_status: self.exit.as_ref().map(|e| e.exit_status),
            exited_at: self.exit.as_ref().map(|e| e.exited_at.clone()),
        }
    }

    /// Words for messages: `container c1` or `exec process e1`.
    pub fn describe(&self, id: &str) -> String {
        match &self.exec_id {
            None => format!("container {id}"),
            Some(exec_id) => format!("exec process {exec_id}"),
        }
    }

    /// Makes the pipes of a process without a terminal and keeps the shim's
    /// ends; returns the process's ends. Without `with_stdin` the process
    /// reads /dev/null.
    pub fn open_pipes(&mut self, with_stdin: bool) -> io::Result<ProcessStdio> {
        let stdin = if with_stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
            set_nonblocking(&w)?;
            self.stdin = Some(w);
            Stdio::from(r)
        } else {
            Stdio::null()
        };
        let mut ends = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
            set_nonblocking(&r)?;
            self.outputs.push(Output {
                stream,
                fd: r,
                lines: LineSplitter::default(),
            });
            ends.push(Stdio::from(w));
        }
        let stderr = ends.pop().unwrap_or_else(Stdio::null);
        let stdout = ends.pop().unwrap_or_else(Stdio::null);
        Ok(ProcessStdio {
            stdin,
            stdout,
            stderr,
        })
    }

    /// Takes the pty master received for this process: its output is read
    /// as stdout, its input written to it.
    pub fn attach_pty(&mut self, master: OwnedFd) -> io::Result<()> {
        set_nonblocking(&master)?;
        self.outputs.push(Output {
            stream: Stream::Stdout,
            fd: master.try_clone()?,
            lines: LineSplitter::default(),
        });
        self.stdin = Some(master.try_clone()?);
        if let Some((width, height)) = self.winsize.take() {
            crate::sys::set_winsize(master.as_fd(), width, height)?;
        }
        self.pty = Some(master);
        Ok(())
    }

    /// Asks for stdin to be closed once what is queued is written (a
    /// terminal gets an end-of-file character, ^D, first).
    pub fn request_close_stdin(&mut self) {
        if self.stdin_close {
            return;
        }
        if self.terminal && self.stdin.is_some() {
            self.stdin_queue.push(0x04);
        }
        self.stdin_close = true;
    }
}

pub fn set_nonblocking<F: AsFd>(fd: &F) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}
