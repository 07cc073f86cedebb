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
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::protocol::{TraceLayer, TraceSpan};
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
    #[error("runtime {command} did not finish within {timeout:?}: killed it")]
    Timeout { command: String, timeout: Duration },
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

/// Longest a runtime command may take (hooks included) before the shim
/// kills it: the shim serves nobody while it waits.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable naming the file berth-runtime appends its step
/// timings to (JSON lines `{"name":…,"start_ns":…,"end_ns":…}`, on
/// `CLOCK_MONOTONIC`). Set only for a traced create or start; other
/// runtimes ignore it.
pub const RUNTIME_TRACE_ENV: &str = "BERTH_RUNTIME_TRACE";

/// The runtime binary with its global flags.
#[derive(Clone, Debug)]
pub struct RuntimeCli {
    binary: PathBuf,
    root: PathBuf,
    log: PathBuf,
    timeout: Duration,
    /// Where the runtime writes its step timings, while tracing.
    trace_file: Option<PathBuf>,
}

impl RuntimeCli {
    pub fn new(binary: PathBuf, root: PathBuf, log: PathBuf) -> Self {
        RuntimeCli {
            binary,
            root,
            log,
            timeout: COMMAND_TIMEOUT,
            trace_file: None,
        }
    }

    /// Has the commands that follow write their step timings to `file`
    /// ([`RUNTIME_TRACE_ENV`]), or not (`None`).
    pub fn set_trace_file(&mut self, file: Option<PathBuf>) {
        self.trace_file = file;
    }

    /// The same runtime with another deadline for its commands.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn wait_error(&self, command: &str) -> impl Fn(io::Error) -> RuntimeError + '_ {
        let command = command.to_owned();
        move |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: command.clone(),
            source,
        }
    }

    /// Kills a command that overran its deadline.
    fn time_out(&self, command: &str, child: &mut Child) -> RuntimeError {
        let _ = child.kill();
        let _ = child.wait();
        RuntimeError::Timeout {
            command: command.to_owned(),
            timeout: self.timeout,
        }
    }

    /// Reads the child's piped stdout and stderr to their ends and waits for
    /// it, all within the deadline.
    fn collect(
        &self,
        command: &str,
        child: &mut Child,
        deadline: Instant,
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), RuntimeError> {
        let wait_err = self.wait_error(command);
        let mut pipes: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
        if let Some(out) = child.stdout.take() {
            pipes.push((OwnedFd::from(out), Vec::new()));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push((OwnedFd::from(err), Vec::new()));
        }
        let mut open = vec![true; pipes.len()];
        let mut buf = [0u8; 8192];
        while open.iter().any(|o| *o) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.time_out(command, child));
            }
            let mut watches: Vec<sys::Watch> = pipes
                .iter()
                .zip(&open)
                .filter(|(_, o)| **o)
                .map(|((fd, _), _)| sys::Watch::new(fd.as_raw_fd(), true, false))
                .collect();
            let ms = i32::try_from(left.as_millis().min(100) + 1).unwrap_or(100);
            sys::poll(&mut watches, ms).map_err(&wait_err)?;
            for (i, (fd, data)) in pipes.iter_mut().enumerate() {
                let ready = watches.iter().any(|w| w.fd == fd.as_raw_fd() && w.readable);
                if !open[i] || !ready {
                    continue;
                }
                match nix::unistd::read(&*fd, &mut buf) {
                    Ok(0) => open[i] = false,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(e) => return Err(wait_err(e.into())),
                }
            }
        }
        let status = self.wait_until(command, child, deadline, None)?;
        let mut outputs = pipes.into_iter().map(|(_, data)| data);
        let stdout = outputs.next().unwrap_or_default();
        let stderr = outputs.next().unwrap_or_default();
        Ok((status, stdout, stderr))
    }

    /// Waits for the child to exit within the deadline; meanwhile, when
    /// `console` is given, receives the pty master sent on it.
    fn wait_until(
        &self,
        command: &str,
        child: &mut Child,
        deadline: Instant,
        mut console: Option<(&UnixListener, &mut Option<OwnedFd>)>,
    ) -> Result<ExitStatus, RuntimeError> {
        let wait_err = self.wait_error(command);
        let mut pause = Duration::from_micros(200);
        // Woken by the child's exit itself where the kernel can; SIGCHLD is
        // the poll loop's (it reaps the container's processes), so it cannot
        // be waited for here.
        let pidfd = sys::pidfd_open(child.id());
        loop {
            if let Some((listener, pty)) = console.as_mut() {
                if pty.is_none() {
                    **pty = accept_pty(listener).map_err(|source| RuntimeError::Protocol {
                        command: command.to_owned(),
                        what: format!("receive the terminal on the console socket: {source}"),
                    })?;
                }
            }
            if let Some(status) = child.try_wait().map_err(&wait_err)? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.time_out(command, child));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let left_ms = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
            match (&console, &pidfd) {
                (Some((listener, None)), pidfd) => {
                    let mut w = vec![sys::Watch::new(listener.as_raw_fd(), true, false)];
                    if let Some(fd) = pidfd {
                        w.push(sys::Watch::new(fd.as_raw_fd(), true, false));
                    }
                    let ms = if pidfd.is_some() { left_ms } else { 2 };
                    let _ = sys::poll(&mut w, ms);
                }
                (_, Some(fd)) => {
                    let mut w = [sys::Watch::new(fd.as_raw_fd(), true, false)];
                    let _ = sys::poll(&mut w, left_ms);
                }
                (_, None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
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
        if let Some(file) = &self.trace_file {
            cmd.env(RUNTIME_TRACE_ENV, file);
        }
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
        let began = Instant::now();
        let mut child = self.spawn(command, &mut cmd)?;
        let deadline = Instant::now() + self.timeout;
        let (status, stdout, stderr) = self.collect(command, &mut child, deadline)?;
        log_duration(command, began);
        if !status.success() {
            return Err(self.failure(command, offset, &stderr, status));
        }
        Ok(stdout)
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
        let began = Instant::now();
        let spawned = self.spawn(command, &mut cmd);
        // The Command holds the shim's copies of the process's pipe ends:
        // drop them, or the shim would never see end of file on its output.
        drop(cmd);
        let result = spawned.and_then(|mut child| {
            let deadline = Instant::now() + self.timeout;
            let mut pty = None;
            let status = self.wait_until(
                command,
                &mut child,
                deadline,
                listener.as_ref().map(|l| (l, &mut pty)),
            )?;
            if !status.success() {
                return Err(self.failure(command, offset, &[], status));
            }
            if let (Some(listener), None) = (&listener, &pty) {
                // The runtime connected just before it exited.
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
        log_duration(command, began);
        if let Some(path) = console {
            let _ = fs::remove_file(path);
        }
        result
    }
}

/// The steps the runtime wrote to a trace file, which is removed. Lines
/// that do not parse are skipped: a trace is never worth a failure.
pub fn take_runtime_steps(file: &Path) -> Vec<TraceSpan> {
    #[derive(serde::Deserialize)]
    struct Step {
        name: String,
        start_ns: u64,
        end_ns: u64,
    }
    let text = fs::read_to_string(file).unwrap_or_default();
    let _ = fs::remove_file(file);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Step>(l).ok())
        .map(|s| TraceSpan {
            layer: TraceLayer::Runtime,
            name: s.name,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        })
        .collect()
}

/// How long a runtime command took, from spawn to exit (the benchmark's
/// per-phase timing reads it from the shim's log).
fn log_duration(command: &str, began: Instant) {
    tracing::debug!(
        command,
        micros = began.elapsed().as_micros() as u64,
        "runtime command"
    );
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

#[cfg(test)]
mod tests {

    use super::*;

    /// A stand-in runtime: a shell script that sees the real arguments
    /// (`--root R --log L --log-format json COMMAND ...`).
    fn fake_runtime(dir: &Path, body: &str) -> RuntimeCli {
        let path = dir.join("fake-runtime");
        // Written by a child: a file this process held open for writing
        // could be inherited by another test thread's fork and make our
        // exec of it fail with ETXTBSY.
        let script = format!("#!/bin/sh\nlog=\"$4\"; shift 6\n{body}\n");
        let written = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
                "sh",
            ])
            .arg(&script)
            .arg(&path)
            .status()
            .unwrap();
        assert!(written.success(), "write {}", path.display());
        RuntimeCli::new(path, dir.join("root"), dir.join("runtime.log"))
    }

    #[test]
    fn a_traced_command_names_the_trace_file_and_its_steps_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = fake_runtime(
            dir.path(),
            r#"if [ -n "$BERTH_RUNTIME_TRACE" ]; then
echo '{"name":"pivot_root","start_ns":10,"end_ns":20}' >> "$BERTH_RUNTIME_TRACE"
echo 'not json' >> "$BERTH_RUNTIME_TRACE"; fi"#,
        );
        let file = dir.path().join("trace.json");
        rt.run(&["start", "c1"]).unwrap();
        assert!(!file.exists(), "untraced: no variable, no file");
        rt.set_trace_file(Some(file.clone()));
        rt.run(&["start", "c1"]).unwrap();
        let steps = take_runtime_steps(&file);
        assert_eq!(
            steps,
            vec![TraceSpan {
                layer: TraceLayer::Runtime,
                name: "pivot_root".into(),
                start_ns: 10,
                end_ns: 20,
            }]
        );
        assert!(!file.exists());
        assert!(take_runtime_steps(&file).is_empty());
    }

    #[test]
    fn returns_stdout_of_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let rt = fake_runtime(dir.path(), r#"echo "[1,2]"; echo "ps of $1" >&2"#);
        assert_eq!(rt.run(&["ps", "c1"]).unwrap(), b"[1,2]\n");
    }

    #[test]
    fn a_failure_carries_the_logged_message() {
        let dir = tempfile::tempdir().unwrap();
        let rt = fake_runtime(
            dir.path(),
            r#"echo '{"level":"warning","msg":"ignored","time":"t"}' >> "$log"
echo '{"level":"error","msg":"container c1 does not exist","time":"t"}' >> "$log"
echo "berth-runtime: container c1 does not exist" >&2; exit 1"#,
        );
        let err = rt.run(&["kill", "c1", "9"]).unwrap_err();
        assert_eq!(err.message(), "container c1 does not exist");
        assert_eq!(err.to_string(), "runtime kill: container c1 does not exist");
        // Only what this command logged counts.
        let rt = fake_runtime(dir.path(), "echo 'plain words' >&2; exit 3");
        assert_eq!(
            rt.run(&["start", "c1"]).unwrap_err().message(),
            "plain words"
        );
        let rt = fake_runtime(dir.path(), "exit 3");
        assert!(rt
            .run(&["start", "c1"])
            .unwrap_err()
            .message()
            .contains("exit status: 3"));
    }

    #[test]
    fn a_hung_command_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let rt =
            fake_runtime(dir.path(), "exec sleep 100").with_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let err = rt.run(&["pause", "c1"]).unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let rt =
            fake_runtime(dir.path(), "exec sleep 100").with_timeout(Duration::from_millis(200));
        let err = rt
            .create(
                dir.path(),
                "c1",
                &dir.path().join("pid"),
                None,
                ProcessStdio::null(),
            )
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    }

    #[test]
    fn create_that_sends_no_terminal_fails() {
        let dir = tempfile::tempdir().unwrap();
        // Succeeds without connecting to the console socket.
        let rt = fake_runtime(dir.path(), "exit 0");
        let socket = dir.path().join("console.sock");
        let err = rt
            .create(
                dir.path(),
                "c1",
                &dir.path().join("pid"),
                Some(&socket),
                ProcessStdio::null(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("sent no terminal"), "{err}");
        assert!(!socket.exists(), "console socket left behind");
    }

    #[test]
    fn reads_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        fs::write(&path, "1234").unwrap();
        assert_eq!(read_pid_file(&path).unwrap(), 1234);
        fs::write(&path, "-1").unwrap();
        assert!(read_pid_file(&path).is_err());
    }
}
