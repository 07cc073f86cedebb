//! The CRI's streaming calls: ExecSync runs to the end here; Exec, Attach
//! and PortForward are checked (as kubelet's streaming server and
//! containerd check them) and answered with a URL of the streaming server.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::v1 as cri;
use tonic::Status;

use super::backend::{ExecError, TaskBackend};
use super::{Pending, Server, StdioOptions, StreamingError};
use crate::cri::store::CriTable;
use crate::cri::{Cri, NAMESPACE};
use crate::images::Images;
use crate::tasks::{TaskError, TaskStatus, Tasks};

/// What the streaming calls share: the server and the backend it runs on.
pub struct Streaming {
    pub server: Arc<Server>,
    pub backend: Arc<TaskBackend>,
    pub tasks: Arc<Tasks>,
}

impl Streaming {
    /// Binds the streaming server on `address` over the supervisor's
    /// tasks; the listener is for [`Server::serve`].
    pub async fn bind(
        address: std::net::SocketAddr,
        images: &Arc<Images>,
        tasks: &Arc<Tasks>,
    ) -> anyhow::Result<(Arc<Streaming>, tokio::net::TcpListener)> {
        let backend = Arc::new(TaskBackend::new(Arc::clone(images), Arc::clone(tasks)));
        let (server, listener) = Server::bind(address, Arc::clone(&backend) as _).await?;
        Ok((
            Arc::new(Streaming {
                server,
                backend,
                tasks: Arc::clone(tasks),
            }),
            listener,
        ))
    }
}

fn exec_status(e: ExecError) -> Status {
    match e {
        ExecError::ContainerNotFound(id) => Status::not_found(format!(
            "an error occurred when try to find container {id:?}: not found"
        )),
        ExecError::Timeout(t) => Status::deadline_exceeded(format!(
            "failed to exec in container: timeout {}s exceeded: context deadline exceeded",
            t.as_secs_f64()
        )),
        ExecError::Task(TaskError::NotFound(id)) => {
            Status::not_found(format!("task of container {id:?} not found"))
        }
        ExecError::Task(e @ TaskError::Invalid { .. }) => Status::invalid_argument(e.to_string()),
        e @ (ExecError::NotRunning(_) | ExecError::SandboxNotRunning(_)) => {
            Status::failed_precondition(e.to_string())
        }
        e => Status::unknown(format!("failed to exec in container: {e}")),
    }
}

fn url_status(e: StreamingError) -> Status {
    match e {
        StreamingError::TooManyPending => Status::resource_exhausted(e.to_string()),
        StreamingError::Random(_) => Status::internal(e.to_string()),
    }
}

/// The full id a caller's id (or unique prefix) stands for in the CRI's
/// records; the id itself when no record has it.
fn resolve(cri: &Cri, table: CriTable, id: &str) -> String {
    cri.store
        .resolve(table, id)
        .ok()
        .flatten()
        .unwrap_or_else(|| id.to_string())
}

/// Whether the container's config closes its stdin after one attach.
fn stdin_once(cri: &Cri, id: &str) -> bool {
    cri.store
        .container(id)
        .ok()
        .flatten()
        .and_then(|r| r.config(id).ok())
        .is_some_and(|c| c.stdin_once)
}

fn check_cmd(container_id: &str, cmd: &[String]) -> Result<(), Status> {
    if container_id.is_empty() {
        return Err(Status::invalid_argument("container id is empty"));
    }
    if cmd.is_empty() {
        return Err(Status::invalid_argument("cmd is empty"));
    }
    Ok(())
}

pub async fn exec_sync(
    cri: &Cri,
    mut req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    check_cmd(&req.container_id, &req.cmd)?;
    req.container_id = resolve(cri, CriTable::Containers, &req.container_id);
    let streaming = &cri.streaming;
    let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
    let out = streaming
        .backend
        .exec_sync(&req.container_id, &req.cmd, timeout)
        .await
        .map_err(exec_status)?;
    Ok(cri::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

fn stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<StdioOptions, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    Ok(StdioOptions {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

pub async fn exec(cri: &Cri, mut req: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
    check_cmd(&req.container_id, &req.cmd)?;
    req.container_id = resolve(cri, CriTable::Containers, &req.container_id);
    let streaming = &cri.streaming;
    let opts = stdio(req.stdin, req.stdout, req.stderr, req.tty)?;
    streaming
        .backend
        .check_running(&req.container_id)
        .await
        .map_err(exec_status)?;
    let url = streaming
        .server
        .url_for(Pending::Exec {
            container_id: req.container_id,
            cmd: req.cmd,
            opts,
        })
        .map_err(url_status)?;
    Ok(cri::ExecResponse { url })
}

/// Attach; with the container's config's `stdin_once`, the process's
/// stdin is closed when the client closes its own.
pub async fn attach(cri: &Cri, mut req: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
    if req.container_id.is_empty() {
        return Err(Status::invalid_argument("container id is empty"));
    }
    req.container_id = resolve(cri, CriTable::Containers, &req.container_id);
    let stdin_once = stdin_once(cri, &req.container_id);
    let streaming = &cri.streaming;
    let opts = stdio(req.stdin, req.stdout, req.stderr, req.tty)?;
    streaming
        .backend
        .check_running(&req.container_id)
        .await
        .map_err(exec_status)?;
    let url = streaming
        .server
        .url_for(Pending::Attach {
            container_id: req.container_id,
            opts,
            stdin_once,
        })
        .map_err(url_status)?;
    Ok(cri::AttachResponse { url })
}

pub async fn port_forward(
    cri: &Cri,
    req: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod sandbox id is empty"));
    }
    let id = resolve(cri, CriTable::Sandboxes, &req.pod_sandbox_id);
    let streaming = &cri.streaming;
    if let Some(port) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!(
            "invalid port {port}: give a number from 1 to 65535"
        )));
    }
    match streaming.tasks.get(NAMESPACE, &id, None).await {
        Ok(info) if info.status == TaskStatus::Running => {}
        Ok(_) => {
            return Err(Status::failed_precondition(
                "sandbox container is not running",
            ))
        }
        Err(TaskError::NotFound(_)) => {
            return Err(Status::not_found(format!(
                "failed to find sandbox {id:?}: not found"
            )))
        }
        Err(e) => return Err(Status::unknown(e.to_string())),
    }
    let url = streaming
        .server
        .url_for(Pending::PortForward { sandbox_id: id })
        .map_err(url_status)?;
    Ok(cri::PortForwardResponse { url })
}
