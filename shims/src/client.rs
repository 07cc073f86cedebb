//! A synchronous client of the shim's control socket (see
//! [`crate::protocol`]), for the supervisor and for tests, and
//! [`StateDir`]: what a client may learn from a shim's state directory
//! (its pid, the init's pid, a recorded exit) without knowing its files.
//!
//! ```no_run
//! use berth_shim::client::{spawn_shim, Client};
//! use berth_shim::options::Options;
//!
//! let opts = Options::new("/usr/bin/berth-runtime", "/run/berth/runtime",
//!     "/bundles/c1", "c1", "/run/berth/shims/default/c1/shim.sock",
//!     "/run/berth/shims/default/c1");
//! let mut shim = spawn_shim("/usr/bin/berth-shim".as_ref(), &opts)?;
//! shim.start()?;
//! let exit = shim.wait(None)?;
//! println!("exited with {}", exit.exit_status);
//! shim.delete()?;
//! # Ok::<(), berth_shim::client::ClientError>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::options::Options;
use crate::protocol::{
    frame_header, parse_frame_header, ExitInfo, Pids, ProcessState, Refusal, Request, Response,
    ShimEvent, Started, FRAME_HEADER_LEN, MAX_FRAME_LEN, STDIN,
};
use crate::record;
pub use crate::record::RecordError;
use crate::server::{INIT_PID_FILE, SHIM_PID_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to shim socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talk to the shim: {0}")]
    Io(#[from] io::Error),
    #[error("the shim closed the connection")]
    Closed,
    #[error("bad response from the shim: {0}")]
    BadResponse(String),
    /// The shim refused the request: why, and its message.
    #[error("{0}")]
    Shim(Refusal),
    #[error("run {binary}: {source}")]
    Spawn { binary: PathBuf, source: io::Error },
    #[error("the shim did not start: {0}")]
    Start(String),
}

/// Starts a shim (`binary`, normally `berth-shim`) with `opts` and connects
/// to it. Returns once the shim listens and has created the container (its
/// init waits for [`Client::start`]), or with the shim's reason for failing.
///
/// The shim is not a child of the caller once this returns: it is reparented
/// to init, or to the nearest child subreaper, which then reaps it.
pub fn spawn_shim(binary: &Path, opts: &Options) -> Result<Client, ClientError> {
    let out = Command::new(binary)
        .args(opts.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ClientError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let text = text.trim();
        let text = text.strip_prefix("berth-shim: ").unwrap_or(text);
        return Err(ClientError::Start(if text.is_empty() {
            format!("{} exited with {}", binary.display(), out.status)
        } else {
            text.to_owned()
        }));
    }
    Client::connect(&opts.socket)
}

/// One connection to a shim; requests are answered in order.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Limits how long a call waits for its answer (`None`: no limit, the
    /// default; `wait` blocks until the process exits).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(timeout)?;
        self.writer.set_write_timeout(timeout)?;
        Ok(())
    }

    /// Sends one raw line (a newline is added) and reads one response:
    /// for tests of what the shim does with bad input.
    pub fn call_raw(&mut self, line: &[u8]) -> Result<Response, ClientError> {
        let mut data = line.to_vec();
        data.push(b'\n');
        self.writer.write_all(&data)?;
        self.read_response()
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| ClientError::BadResponse(format!("{e}: {line:?}")))
    }

    /// Sends a request; the `ok` value, or the shim's error.
    pub fn call(&mut self, request: &Request) -> Result<Value, ClientError> {
        let line =
            serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        match self.call_raw(&line)? {
            Response::Ok(value) => Ok(value),
            Response::Error(refusal) => Err(ClientError::Shim(refusal)),
        }
    }

    fn call_as<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let value = self.call(request)?;
        serde_json::from_value(value.clone())
            .map_err(|e| ClientError::BadResponse(format!("{e}: {value}")))
    }

    /// The container's state, or an exec'd process's.
    pub fn state(&mut self, exec_id: Option<&str>) -> Result<ProcessState, ClientError> {
        self.call_as(&Request::State {
            exec_id: exec_id.map(str::to_owned),
        })
    }

    /// Starts the container's process; its pid.
    pub fn start(&mut self) -> Result<i32, ClientError> {
        Ok(self
            .call_as::<Started>(&Request::Start { trace: false })?
            .pid)
    }

    /// Signals the init (with `all`, every process of the container).
    pub fn kill(&mut self, signal: i32, all: bool) -> Result<(), ClientError> {
        self.call(&Request::Kill {
            signal,
            all,
            exec_id: None,
        })
        .map(drop)
    }

    /// Signals an exec'd process.
    pub fn kill_exec(&mut self, exec_id: &str, signal: i32) -> Result<(), ClientError> {
        self.call(&Request::Kill {
            signal,
            all: false,
            exec_id: Some(exec_id.to_owned()),
        })
        .map(drop)
    }

    /// Registers a process (an OCI `process` object) to run in the container.
    pub fn exec(
        &mut self,
        exec_id: &str,
        process: Value,
        terminal: bool,
    ) -> Result<(), ClientError> {
        self.call(&Request::Exec {
            exec_id: exec_id.to_owned(),
            process,
            terminal,
        })
        .map(drop)
    }

    /// Runs a registered process; its pid.
    pub fn start_exec(&mut self, exec_id: &str) -> Result<i32, ClientError> {
        Ok(self
            .call_as::<Started>(&Request::StartExec {
                exec_id: exec_id.to_owned(),
            })?
            .pid)
    }

    pub fn resize(
        &mut self,
        exec_id: Option<&str>,
        width: u16,
        height: u16,
    ) -> Result<(), ClientError> {
        self.call(&Request::Resize {
            exec_id: exec_id.map(str::to_owned),
            width,
            height,
        })
        .map(drop)
    }

    pub fn close_stdin(&mut self, exec_id: Option<&str>) -> Result<(), ClientError> {
        self.call(&Request::CloseStdin {
            exec_id: exec_id.map(str::to_owned),
        })
        .map(drop)
    }

    /// The container's processes (host pids).
    pub fn pids(&mut self) -> Result<Vec<i32>, ClientError> {
        Ok(self.call_as::<Pids>(&Request::Pids)?.pids)
    }

    /// The container's cgroup statistics, as the runtime reports them.
    pub fn stats(&mut self) -> Result<Value, ClientError> {
        self.call(&Request::Stats)
    }

    pub fn pause(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Pause).map(drop)
    }

    pub fn resume(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Resume).map(drop)
    }

    /// Changes the container's resource limits (OCI `linux.resources`).
    pub fn update(&mut self, resources: Value) -> Result<(), ClientError> {
        self.call(&Request::Update { resources }).map(drop)
    }

    /// Blocks until the process has exited (returns at once if it has).
    pub fn wait(&mut self, exec_id: Option<&str>) -> Result<ExitInfo, ClientError> {
        self.call_as(&Request::Wait {
            exec_id: exec_id.map(str::to_owned),
        })
    }

    /// Deletes the stopped container; the shim exits after answering.
    pub fn delete(&mut self) -> Result<ExitInfo, ClientError> {
        self.call_as(&Request::Delete { exec_id: None })
    }

    /// Forgets an exited exec'd process.
    pub fn delete_exec(&mut self, exec_id: &str) -> Result<ExitInfo, ClientError> {
        self.call_as(&Request::Delete {
            exec_id: Some(exec_id.to_owned()),
        })
    }

    /// Makes the shim exit (with `force`, killing a live container first).
    pub fn shutdown(&mut self, force: bool) -> Result<(), ClientError> {
        self.call(&Request::Shutdown { force }).map(drop)
    }

    /// Turns this connection into the process's framed output stream (and
    /// its stdin, with `stdin`).
    pub fn attach(mut self, exec_id: Option<&str>, stdin: bool) -> Result<Attach, ClientError> {
        self.call(&Request::Attach {
            exec_id: exec_id.map(str::to_owned),
            stdin,
        })?;
        Ok(Attach {
            reader: self.reader,
            writer: self.writer,
        })
    }

    /// Turns this connection into the shim's event stream: the exits that
    /// already happened first, then events as they happen.
    pub fn events(mut self) -> Result<Events, ClientError> {
        self.call(&Request::Events)?;
        Ok(Events {
            reader: self.reader,
            _writer: self.writer,
        })
    }
}

/// The shim's event stream (see [`crate::protocol`]).
pub struct Events {
    reader: BufReader<UnixStream>,
    /// Kept so the shim does not see end of file, which would end the
    /// stream.
    _writer: UnixStream,
}

impl Events {
    /// The next event; `None` once the shim has closed the stream (it
    /// exited). Blocks until there is one, or for the read timeout, which
    /// is the connection's (see [`Client::set_timeout`] and
    /// [`Events::set_read_timeout`]).
    #[allow(
        clippy::should_implement_trait,
        reason = "not an Iterator: the stream can fail, and a timeout is not its end"
    )]
    pub fn next(&mut self) -> Result<Option<ShimEvent>, ClientError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::BadResponse(format!("{e}: {line:?}")))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }
}

/// An attached process: read its output frames, write its stdin.
pub struct Attach {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Attach {
    /// The next frame, `(stream, bytes)`; `None` once the shim has ended
    /// the stream (the process exited and its output is drained).
    pub fn read_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match self.reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (stream, len) = parse_frame_header(&header);
        if len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes"),
            ));
        }
        let mut data = vec![0u8; len];
        self.reader.read_exact(&mut data)?;
        Ok(Some((stream, data)))
    }

    /// Reads frames until the end of the stream; (stdout, stderr).
    pub fn read_to_end(&mut self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some((stream, data)) = self.read_frame()? {
            match stream {
                crate::protocol::STDERR => err.extend_from_slice(&data),
                _ => out.extend_from_slice(&data),
            }
        }
        Ok((out, err))
    }

    /// Sends input for the process's stdin.
    pub fn write_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_FRAME_LEN) {
            let mut frame = frame_header(STDIN, chunk.len()).to_vec();
            frame.extend_from_slice(chunk);
            self.writer.write_all(&frame)?;
        }
        Ok(())
    }

    /// Closes the process's stdin (once the input sent before is written).
    pub fn close_stdin(&mut self) -> io::Result<()> {
        self.writer.write_all(&frame_header(STDIN, 0))
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.writer.set_read_timeout(timeout)
    }

    /// The buffered reader and the writer of the raw stream (bytes the
    /// reader has buffered belong to the stream).
    pub fn into_parts(self) -> (BufReader<UnixStream>, UnixStream) {
        (self.reader, self.writer)
    }
}

/// A shim's state directory (`Options::state_dir`) as its clients may read
/// it, for a shim that does not answer or is gone: which files hold what
/// stays the shim's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The pid the shim recorded for itself; `None` before it serves and
    /// after it exited cleanly.
    pub fn shim_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join(SHIM_PID_FILE))
    }

    /// The host pid of the container's init, as the runtime reported it at
    /// create; `None` if the container was never created.
    pub fn init_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join(INIT_PID_FILE))
    }

    /// Whether the shim runs: the process its pid names is alive and is a
    /// berth-shim (not a process that reused the pid). A shim that does not
    /// answer is not dead unless this says so: cleaning up after a live
    /// shim would kill its container.
    pub fn shim_running(&self) -> bool {
        let Some(pid) = self.shim_pid() else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        !zombie
            && cmdline
                .split(|b| *b == 0)
                .next()
                .is_some_and(|arg0| arg0.ends_with(b"berth-shim"))
    }

    /// How the init (`None`) or an exec'd process ended, as the shim
    /// recorded it durably; `Ok(None)` if it has not recorded an exit.
    pub fn recorded_exit(&self, exec_id: Option<&str>) -> Result<Option<ExitInfo>, RecordError> {
        record::read_exit(&record::exit_file(&self.dir, exec_id))
    }

    /// The longest socket path the shim makes in the directory (the
    /// control socket a client chooses must not be longer either): unix
    /// socket paths are limited to 107 bytes.
    pub fn longest_socket(&self) -> PathBuf {
        self.dir.join(crate::server::CONSOLE_SOCKET)
    }
}

/// A positive pid from a pid file.
fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|pid: &i32| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_tells_pids_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.path(), dir.path());
        assert_eq!((state.shim_pid(), state.init_pid()), (None, None));
        assert!(!state.shim_running());
        assert_eq!(state.recorded_exit(None).unwrap(), None);
        std::fs::write(dir.path().join(SHIM_PID_FILE), "42\n").unwrap();
        std::fs::write(dir.path().join(INIT_PID_FILE), "43").unwrap();
        assert_eq!((state.shim_pid(), state.init_pid()), (Some(42), Some(43)));
        std::fs::write(dir.path().join(INIT_PID_FILE), "-1").unwrap();
        assert_eq!(state.init_pid(), None);
        // This test's own process is alive but is no shim.
        std::fs::write(
            dir.path().join(SHIM_PID_FILE),
            std::process::id().to_string(),
        )
        .unwrap();
        assert!(!state.shim_running());
        // A live process named berth-shim runs; once dead (a zombie, not
        // yet reaped) it does not.
        use std::os::unix::process::CommandExt;
        let mut shim = std::process::Command::new("sleep")
            .arg0("/usr/bin/berth-shim")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join(SHIM_PID_FILE), shim.id().to_string()).unwrap();
        let named = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !state.shim_running() && std::time::Instant::now() < named {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(state.shim_running());
        shim.kill().unwrap();
        let dead = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while state.shim_running() && std::time::Instant::now() < dead {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!state.shim_running());
        shim.wait().unwrap();
        let exit = ExitInfo {
            exit_status: 3,
            exited_at: "2024-01-02T03:04:05.000000006Z".into(),
        };
        record::write_exit(&record::exit_file(dir.path(), Some("e1")), &exit).unwrap();
        assert_eq!(state.recorded_exit(None).unwrap(), None);
        assert_eq!(state.recorded_exit(Some("e1")).unwrap(), Some(exit));
        assert!(state.longest_socket().starts_with(dir.path()));
    }
}
