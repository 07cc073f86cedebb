//! Running the OCI runtime through runc's command-line contract.
//!
//! Every command gets the global `--root`, and `--log FILE --log-format
//! json`: a failing command's message is read back from that log (its
//! stdout and stderr may be the container's).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("run {binary} {command}: {source}")]
    Spawn {
        binary: PathBuf,
        command: String,
        source: io::Error,
    },
    #[error("runtime {command}: {message}")]
    Failed { command: String, message: String },
    #[error("runtime {command}: console socket {path}: {source}")]
    Console {
        command: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("runtime {command}: {what}")]
    Protocol { command: String, what: String },
}

impl RuntimeError {
    /// The runtime's own words when it failed, else the whole message.
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Where a created or exec'd process's stdio comes from.
pub struct ProcessStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ProcessStdio {
    pub fn null() -> Self {
        ProcessStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// The runtime binary with its global flags.
#[derive(Clone, Debug)]
pub struct RuntimeCli {
    binary: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl RuntimeCli {
    pub fn new(binary: PathBuf, root: PathBuf, log: PathBuf) -> Self {
        RuntimeCli { binary, root, log }
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        cmd
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The last error the runtime logged after `offset`, or its stderr, or
    /// its exit status.
    fn failure(
        &self,
        command: &str,
        offset: u64,
        stderr: &[u8],
        status: ExitStatus,
    ) -> RuntimeError {
        let logged = fs::read(&self.log).ok().and_then(|all| {
            let new = all.get(offset as usize..)?;
            String::from_utf8_lossy(new)
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["level"] == "error")
                .and_then(|e| e["msg"].as_str().map(str::to_owned))
        });
        let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
        let message = logged
            .or_else(|| (!stderr.is_empty()).then_some(stderr))
            .unwrap_or_else(|| format!("exited with {status}"));
        RuntimeError::Failed {
            command: command.to_owned(),
            message,
        }
    }

    fn spawn(&self, command: &str, cmd: &mut Command) -> Result<Child, RuntimeError> {
        cmd.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: command.to_owned(),
            source,
        })
    }

    /// Runs a command that does not start container processes (start, kill,
    /// delete, pause, resume, ps, events); returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>, RuntimeError> {
        let command = args.first().copied().unwrap_or_default();
        let offset = self.log_len();
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.spawn(command, &mut cmd)?;
        let out = child
            .wait_with_output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command: command.to_owned(),
                source,
            })?;
        if !out.status.success() {
            return Err(self.failure(command, offset, &out.stderr, out.status));
        }
        Ok(out.stdout)
    }

    /// `create --bundle B --pid-file P [--console-socket S] ID`, the init's
    /// stdio being `stdio`. Returns the pty master when `console` is given.
    pub fn create(
        &self,
        bundle: &Path,
        id: &str,
        pid_file: &Path,
        console: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<Option<OwnedFd>, RuntimeError> {
        let mut args: Vec<&OsStr> = vec![
            "create".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
        ];
        if let Some(socket) = console {
            args.extend(["--console-socket".as_ref(), socket.as_os_str()]);
        }
        args.push(id.as_ref());
        self.run_process("create", self.command(&args), console, stdio)
    }

    /// `exec --detach --process F --pid-file P [--console-socket S] ID`.
    pub fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<Option<OwnedFd>, RuntimeError> {
        let mut args: Vec<&OsStr> = vec![
            "exec".as_ref(),
            "--detach".as_ref(),
            "--process".as_ref(),
            process_file.as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
        ];
        if let Some(socket) = console {
            args.extend(["--console-socket".as_ref(), socket.as_os_str()]);
        }
        args.push(id.as_ref());
        self.run_process("exec", self.command(&args), console, stdio)
    }

    /// Runs `create` or `exec`, receiving the pty master on the console
    /// socket meanwhile (the runtime sends it before it returns).
    fn run_process(
        &self,
        command: &str,
        mut cmd: Command,
        console: Option<&Path>,
        stdio: ProcessStdio,
    ) -> Result<Option<OwnedFd>, RuntimeError> {
        let console_err = |path: &Path, source| RuntimeError::Console {
            command: command.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        let listener = match console {
            Some(path) => Some(bind_console(path).map_err(|e| console_err(path, e))?),
            None => None,
        };
        let offset = self.log_len();
        cmd.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let spawned = self.spawn(command, &mut cmd);
        // The Command holds the shim's copies of the process's pipe ends:
        // drop them, or the shim would never see end of file on its output.
        drop(cmd);
        let result = spawned.and_then(|mut child| {
            let mut pty = None;
            let wait_err = |source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                command: command.to_owned(),
                source,
            };
            let status = loop {
                let Some(listener) = listener.as_ref().filter(|_| pty.is_none()) else {
                    break child.wait().map_err(wait_err)?;
                };
                pty = accept_pty(listener).map_err(|e| console_err(console_path(console), e))?;
                if let Some(status) = child.try_wait().map_err(wait_err)? {
                    break status;
                }
                if pty.is_none() {
                    let mut w = [sys::Watch::new(listener.as_raw_fd(), true, false)];
                    let _ = sys::poll(&mut w, 5);
                }
            };
            if !status.success() {
                return Err(self.failure(command, offset, &[], status));
            }
            if let (Some(listener), None) = (&listener, &pty) {
                pty = accept_pty(listener).map_err(|e| console_err(console_path(console), e))?;
                if pty.is_none() {
                    return Err(RuntimeError::Protocol {
                        command: command.to_owned(),
                        what: "the runtime sent no terminal on the console socket".into(),
                    });
                }
            }
            Ok(pty)
        });
        if let Some(path) = console {
            let _ = fs::remove_file(path);
        }
        result
    }
}

fn console_path(console: Option<&Path>) -> &Path {
    console.unwrap_or(Path::new(""))
}

/// Listens on a fresh console socket (a stale file is replaced).
fn bind_console(path: &Path) -> io::Result<UnixListener> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts one connection, if there is one, and receives a descriptor on it.
fn accept_pty(listener: &UnixListener) -> io::Result<Option<OwnedFd>> {
    let stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    recv_fd(&stream).map(Some)
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn recv_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in the
                // shim (SCM_RIGHTS); nothing else owns it.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Extra descriptors, if a peer sent more than one, are closed here.
    received.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried no descriptor",
        )
    })
}

/// Reads a pid file written by the runtime.
pub fn read_pid_file(path: &Path) -> io::Result<i32> {
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a pid: {text:?}", path.display()),
            )
        })
}
