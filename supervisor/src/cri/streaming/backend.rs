//! The streaming [`Backend`] over the supervisor's tasks: an exec is a
//! process added to the container's task (its OCI `process` is the
//! container's, with the command and terminal replaced, as containerd's
//! CRI does), attached through the shim before it starts; an attach is
//! the shim's attach to the task's init; a port-forward connects from a
//! thread that has entered the pod's network namespace. ExecSync is here
//! too.

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_shim::protocol::{STDERR, STDOUT};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Backend, BoxFuture, Outcome, StreamIo, TermSize};
use crate::containers::{self, ContainerError};
use crate::cri::NAMESPACE;
use crate::images::Images;
use crate::tasks::shim::{AttachInput, AttachOutput};
use crate::tasks::{TaskError, TaskStatus, Tasks};

/// Most output ExecSync keeps of each stream (more is dropped).
pub const EXEC_SYNC_MAX_OUTPUT: usize = 16 << 20;
/// How long a port-forward connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a timed-out ExecSync waits for its killed process.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("sandbox {0:?} is not running")]
    SandboxNotRunning(String),
    #[error("container {id:?} has a bad spec: {reason}")]
    Spec { id: String, reason: String },
    #[error("timeout {0:?} exceeded")]
    Timeout(Duration),
    #[error("read random bytes for an exec id: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// What ExecSync collected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A started exec'd process.
struct Running {
    exec_id: String,
    output: AttachOutput,
    input: AttachInput,
}

/// The backend over the supervisor's images (container records) and tasks.
pub struct TaskBackend {
    images: Arc<Images>,
    tasks: Arc<Tasks>,
}

fn exec_id() -> Result<String, ExecError> {
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ExecError::Random)?;
    Ok(format!("cri-exec-{}", hex::encode(bytes)))
}

/// The container's process with `cmd` and `tty` in place of its own.
pub fn exec_process(id: &str, spec: &str, cmd: &[String], tty: bool) -> Result<Vec<u8>, ExecError> {
    let bad = |reason: String| ExecError::Spec {
        id: id.to_string(),
        reason,
    };
    let spec: Value = serde_json::from_str(spec).map_err(|e| bad(e.to_string()))?;
    let mut process = spec
        .get("process")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| bad("no process".into()))?;
    if let Some(p) = process.as_object_mut() {
        p.insert("args".into(), Value::from(cmd.to_vec()));
        p.insert("terminal".into(), Value::Bool(tty));
        p.remove("consoleSize");
    }
    serde_json::to_vec(&process).map_err(|e| bad(e.to_string()))
}

/// Resolves when the client stops reading the output (or never, when it
/// asked for none).
async fn client_gone(
    stdout: &Option<mpsc::Sender<Vec<u8>>>,
    stderr: &Option<mpsc::Sender<Vec<u8>>>,
) {
    match (stdout, stderr) {
        (Some(o), Some(e)) => {
            tokio::select! {
                () = o.closed() => {}
                () = e.closed() => {}
            }
        }
        (Some(o), None) => o.closed().await,
        (None, Some(e)) => e.closed().await,
        (None, None) => std::future::pending().await,
    }
}

/// Copies a process's output to the client's channels until the process
/// is done with it; false when the client went away first.
async fn copy_output(
    output: &mut AttachOutput,
    stdout: &Option<mpsc::Sender<Vec<u8>>>,
    stderr: &Option<mpsc::Sender<Vec<u8>>>,
) -> bool {
    loop {
        let frame = tokio::select! {
            f = output.next() => f,
            () = client_gone(stdout, stderr) => return false,
        };
        let (stream, data) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => {
                tracing::debug!("exec output: {e}");
                return true;
            }
        };
        let to = match stream {
            STDOUT => stdout,
            STDERR => stderr,
            _ => continue,
        };
        if let Some(tx) = to {
            if tx.send(data).await.is_err() {
                return false;
            }
        }
    }
}

impl TaskBackend {
    pub fn new(images: Arc<Images>, tasks: Arc<Tasks>) -> TaskBackend {
        TaskBackend { images, tasks }
    }

    /// Checks that the container exists and its task runs.
    pub async fn check_running(&self, container_id: &str) -> Result<(), ExecError> {
        let images = Arc::clone(&self.images);
        let id = container_id.to_string();
        match tokio::task::spawn_blocking(move || containers::get(&images, NAMESPACE, &id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(ContainerError::NotFound(_))) | Err(_) => {
                return Err(ExecError::ContainerNotFound(container_id.to_string()))
            }
            Ok(Err(e)) => return Err(e.into()),
        }
        match self.tasks.get(NAMESPACE, container_id, None).await {
            Ok(info) if info.status == TaskStatus::Running => Ok(()),
            Ok(_) | Err(TaskError::NotFound(_)) => {
                Err(ExecError::NotRunning(container_id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds and starts a process running `cmd` in the container.
    async fn start_exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Running, ExecError> {
        let images = Arc::clone(&self.images);
        let id = container_id.to_string();
        let record = tokio::task::spawn_blocking(move || containers::get(&images, NAMESPACE, &id))
            .await
            .map_err(|_| ExecError::ContainerNotFound(container_id.to_string()))?
            .map_err(|e| match e {
                ContainerError::NotFound(_) => ExecError::ContainerNotFound(container_id.into()),
                e => e.into(),
            })?;
        let process = exec_process(container_id, &record.spec, cmd, tty)?;
        let exec_id = exec_id()?;
        let ns = NAMESPACE;
        self.tasks
            .exec(ns, container_id, &exec_id, &process, tty, stdin)
            .await?;
        let started = async {
            let (output, input) = self
                .tasks
                .attach(ns, container_id, Some(&exec_id), stdin || tty)
                .await?;
            self.tasks.start(ns, container_id, Some(&exec_id)).await?;
            Ok::<_, TaskError>((output, input))
        };
        match started.await {
            Ok((output, input)) => Ok(Running {
                exec_id,
                output,
                input,
            }),
            Err(e) => {
                let _ = self.tasks.delete_process(ns, container_id, &exec_id).await;
                Err(e.into())
            }
        }
    }

    /// Waits for an exec'd process and forgets it; its exit status.
    async fn reap(&self, container_id: &str, exec_id: &str) -> Result<i32, ExecError> {
        let exit = self
            .tasks
            .wait(NAMESPACE, container_id, Some(exec_id))
            .await?;
        let _ = self
            .tasks
            .delete_process(NAMESPACE, container_id, exec_id)
            .await;
        Ok(exit.status)
    }

    /// Runs `cmd` in the container and collects its output (at most
    /// [`EXEC_SYNC_MAX_OUTPUT`] of each stream) and exit code. Past
    /// `timeout` (when not zero) the process is killed and the answer is
    /// [`ExecError::Timeout`], as containerd's ExecSync does.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncOutput, ExecError> {
        self.check_running(container_id).await?;
        let Running {
            exec_id,
            mut output,
            input,
        } = self.start_exec(container_id, cmd, false, false).await?;
        drop(input);
        let collect = async {
            let mut out = ExecSyncOutput::default();
            while let Ok(Some((stream, data))) = output.next().await {
                let buf = match stream {
                    STDOUT => &mut out.stdout,
                    STDERR => &mut out.stderr,
                    _ => continue,
                };
                let room = EXEC_SYNC_MAX_OUTPUT.saturating_sub(buf.len());
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            out
        };
        let collected = if timeout.is_zero() {
            Some(collect.await)
        } else {
            tokio::time::timeout(timeout, collect).await.ok()
        };
        match collected {
            Some(mut out) => {
                out.exit_code = self.reap(container_id, &exec_id).await?;
                Ok(out)
            }
            None => {
                let _ = self
                    .tasks
                    .kill(
                        NAMESPACE,
                        container_id,
                        Some(&exec_id),
                        libc::SIGKILL as u32,
                        false,
                    )
                    .await;
                let _ = tokio::time::timeout(KILL_WAIT, self.reap(container_id, &exec_id)).await;
                Err(ExecError::Timeout(timeout))
            }
        }
    }

    /// Passes terminal sizes on to a process.
    fn follow_resizes(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        resize: Option<mpsc::Receiver<TermSize>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut resize = resize?;
        let tasks = Arc::clone(&self.tasks);
        let (id, exec_id) = (container_id.to_string(), exec_id.map(str::to_owned));
        Some(tokio::spawn(async move {
            while let Some(size) = resize.recv().await {
                let (w, h) = (u32::from(size.width), u32::from(size.height));
                if let Err(e) = tasks.resize(NAMESPACE, &id, exec_id.as_deref(), w, h).await {
                    tracing::debug!(container = %id, "resize: {e}");
                }
            }
        }))
    }

    async fn run_exec(&self, container_id: &str, cmd: &[String], io: StreamIo) -> Outcome {
        let StreamIo {
            stdin,
            stdout,
            stderr,
            resize,
            tty,
        } = io;
        if let Err(e) = self.check_running(container_id).await {
            return Outcome::Failed(e.to_string());
        }
        let running = match self
            .start_exec(container_id, cmd, tty, stdin.is_some())
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("failed to exec in container: {e}")),
        };
        let Running {
            exec_id,
            mut output,
            mut input,
        } = running;
        let feeder = stdin.map(|mut stdin| {
            tokio::spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if input.write(&data).await.is_err() {
                        return;
                    }
                }
                let _ = input.close().await;
            })
        });
        let resizer = self.follow_resizes(container_id, Some(&exec_id), resize);
        let done = copy_output(&mut output, &stdout, &stderr).await;
        for task in [feeder, resizer].into_iter().flatten() {
            task.abort();
        }
        if !done {
            // The client went away: the process runs on (as with
            // containerd); it is forgotten once it exits.
            let tasks = Arc::clone(&self.tasks);
            let (id, exec) = (container_id.to_string(), exec_id);
            tokio::spawn(async move {
                if tasks.wait(NAMESPACE, &id, Some(&exec)).await.is_ok() {
                    let _ = tasks.delete_process(NAMESPACE, &id, &exec).await;
                }
            });
            return Outcome::Failed("the client went away".into());
        }
        match self.reap(container_id, &exec_id).await {
            Ok(status) => Outcome::Exited(status),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    async fn run_attach(&self, container_id: &str, stdin_once: bool, io: StreamIo) -> Outcome {
        let StreamIo {
            stdin,
            stdout,
            stderr,
            resize,
            ..
        } = io;
        if let Err(e) = self.check_running(container_id).await {
            return Outcome::Failed(e.to_string());
        }
        let attached = match self
            .tasks
            .attach(NAMESPACE, container_id, None, stdin.is_some())
            .await
        {
            // A container without stdin still has output to attach to.
            Err(TaskError::Refused { .. }) if stdin.is_some() => {
                self.tasks
                    .attach(NAMESPACE, container_id, None, false)
                    .await
            }
            other => other,
        };
        let (mut output, mut input) = match attached {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("failed to attach to container: {e}")),
        };
        let feeder = stdin.map(|mut stdin| {
            tokio::spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if input.write(&data).await.is_err() {
                        return input;
                    }
                }
                if stdin_once {
                    let _ = input.close().await;
                }
                input
            })
        });
        let resizer = self.follow_resizes(container_id, None, resize);
        copy_output(&mut output, &stdout, &stderr).await;
        if let Some(task) = feeder {
            task.abort();
        }
        if let Some(task) = resizer {
            task.abort();
        }
        Outcome::Exited(0)
    }

    async fn connect_in_pod(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, String> {
        let info = self
            .tasks
            .get(NAMESPACE, sandbox_id, None)
            .await
            .map_err(|_| ExecError::SandboxNotRunning(sandbox_id.to_string()).to_string())?;
        if info.status != TaskStatus::Running || info.pid == 0 {
            return Err(ExecError::SandboxNotRunning(sandbox_id.to_string()).to_string());
        }
        let netns = format!("/proc/{}/ns/net", info.pid);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own enters the namespace, and ends with the
        // connection made: no other work ever runs in that namespace.
        let spawned = std::thread::Builder::new()
            .name("cri-port-forward".into())
            .spawn(move || {
                let _ = tx.send(connect_in_netns(&netns, port));
            });
        if let Err(e) = spawned {
            return Err(format!("start a thread: {e}"));
        }
        let stream = rx
            .await
            .map_err(|_| "the connecting thread died".to_string())??;
        tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
    }
}

/// Connects to `port` on the loopback of network namespace `netns`
/// (IPv4, then IPv6), from the calling thread, which stays in it.
fn connect_in_netns(netns: &str, port: u16) -> Result<std::net::TcpStream, String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter {netns}: {e}"))?;
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4)
    });
    let stream = stream.map_err(|e| format!("connect to localhost:{port}: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("set the socket non-blocking: {e}"))?;
    Ok(stream)
}

impl Backend for TaskBackend {
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: &'a [String],
        io: StreamIo,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run_exec(container_id, cmd, io))
    }

    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        stdin_once: bool,
        io: StreamIo,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run_attach(container_id, stdin_once, io))
    }

    fn connect<'a>(
        &'a self,
        sandbox_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, String>> {
        Box::pin(self.connect_in_pod(sandbox_id, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_processes_take_the_containers_process() {
        let spec = r#"{"ociVersion":"1.0.2","process":{"args":["sleep","1d"],"terminal":false,
            "consoleSize":{"height":1,"width":2},"env":["A=1"],"cwd":"/w","user":{"uid":5,"gid":6}}}"#;
        let p = exec_process("c1", spec, &["echo".into(), "hi".into()], true).unwrap();
        let p: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(p["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(p["terminal"], true);
        assert_eq!(p["env"], serde_json::json!(["A=1"]));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(p["user"]["uid"], 5);
        assert!(p.get("consoleSize").is_none());
        assert!(matches!(
            exec_process("c1", "{}", &[], false),
            Err(ExecError::Spec { .. })
        ));
        assert!(exec_id().unwrap().starts_with("cri-exec-"));
    }
}
