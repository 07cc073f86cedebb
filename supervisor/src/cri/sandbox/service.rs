//! The sandbox calls of the RuntimeService: decode, call the sandbox
//! domain, encode; errors become gRPC codes by variant, as containerd
//! gives them.

use berth_proto::cri::v1 as cri;
use tonic::{Code, Status};

use super::{status, SandboxError};
use crate::containers::ContainerError;
use crate::cri::Cri;
use crate::tasks::TaskError;

/// The gRPC status of a sandbox error.
pub fn to_status(e: SandboxError) -> Status {
    let code = match &e {
        SandboxError::InvalidConfig(_) | SandboxError::Spec(_) => Code::InvalidArgument,
        SandboxError::NotFound(_) => Code::NotFound,
        SandboxError::NameReserved { .. } => Code::AlreadyExists,
        SandboxError::PauseImage { .. }
        | SandboxError::UnknownHandler(_)
        | SandboxError::Netns(_)
        | SandboxError::NetworkSetup { .. }
        | SandboxError::NetworkTeardown { .. }
        | SandboxError::Files { .. }
        | SandboxError::Shm { .. }
        | SandboxError::Store(_)
        | SandboxError::PodContainer(_) => Code::Unknown,
        SandboxError::Container(ContainerError::InvalidOverride { .. })
        | SandboxError::Container(ContainerError::InvalidSpec(_))
        | SandboxError::Task(TaskError::Invalid { .. }) => Code::InvalidArgument,
        SandboxError::Container(_) | SandboxError::Task(_) => Code::Unknown,
    };
    Status::new(code, e.to_string())
}

pub async fn run(
    cri: &Cri,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("sandbox config is missing"))?;
    let id = super::run(cri, config, &req.runtime_handler)
        .await
        .map_err(to_status)?;
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub async fn stop(
    cri: &Cri,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Status> {
    super::stop(cri, &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(cri::StopPodSandboxResponse {})
}

pub async fn remove(
    cri: &Cri,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Status> {
    super::remove(cri, &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(cri::RemovePodSandboxResponse {})
}

pub async fn status(
    cri: &Cri,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is empty"));
    }
    let view = status::get(cri, &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(cri::PodSandboxStatusResponse {
        status: Some(view.to_status()),
        info: if req.verbose {
            view.verbose_info()
        } else {
            Default::default()
        },
        containers_statuses: Vec::new(),
        timestamp: super::now_ns(),
    })
}

pub async fn list(
    cri: &Cri,
    req: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Status> {
    let views = status::list(cri, req.filter.as_ref())
        .await
        .map_err(to_status)?;
    Ok(cri::ListPodSandboxResponse {
        items: views.iter().map(status::SandboxView::to_item).collect(),
    })
}

pub async fn stats(
    cri: &Cri,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let stats = super::stats::get(cri, &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

pub async fn list_stats(
    cri: &Cri,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let stats = super::stats::list(cri, req.filter.as_ref())
        .await
        .map_err(to_status)?;
    Ok(cri::ListPodSandboxStatsResponse { stats })
}
